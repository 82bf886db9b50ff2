"""hopstack: multi-hop question answering with retrieval, as YAML pipelines of Haystack components run in batch."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hopstack")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
