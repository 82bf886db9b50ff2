"""hopstack: multi-hop question answering with retrieval, as YAML pipelines of Haystack components run in batch."""

import os

# Haystack sends usage telemetry from Pipeline.run unless told not to. hopstack runs on machines that
# are often offline and never phones home: telemetry is off unless the user set the variable himself.
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    """``hopstack.__version__``, read from the installed package's metadata on first use (importing
    importlib.metadata costs a tenth of the CLI's start-up, which ``hopstack --version`` should not pay twice)."""
    if name != "__version__":
        raise AttributeError(f"module 'hopstack' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("hopstack")
    except PackageNotFoundError:  # running from a source tree that was never installed
        value = "0.0.0+source"
    globals()["__version__"] = value
    return value
