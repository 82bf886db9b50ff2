"""hopstack: multi-hop question answering with retrieval, as YAML pipelines of Haystack components run in batch."""

import os
from importlib.metadata import PackageNotFoundError, version

# Haystack sends usage telemetry from Pipeline.run unless told not to. hopstack runs on machines that
# are often offline and never phones home: telemetry is off unless the user set the variable himself.
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

try:
    __version__ = version("hopstack")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
