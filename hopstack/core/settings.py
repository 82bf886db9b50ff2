"""hopstack's environment settings, each read in one place.

=========================  ==============================================================================
variable                   meaning
=========================  ==============================================================================
``HOPSTACK_HOME``          root of hopstack's files (default ``~/.cache/hopstack``): ``models/``, ``cache/``,
                           ``indexes/``, ``runs/``
``HOPSTACK_CACHE``         ``off`` (or 0, false, no) turns the call cache and the node cache off
``HOPSTACK_CACHE_MAX_MB``  the size limit of each cache file in MB (default 10240); past it the least
                           recently used entries are evicted (``hopstack serve`` sets 1024 unless given)
``HOPSTACK_INDEX``         the index a retriever reads when its ``index`` parameter is unset
``HOPSTACK_DATA``          where benchmark dataset names are looked up
``HOPSTACK_MULTIHOP_RAG``  a local MultiHop-RAG folder for ``hopstack demo``
=========================  ==============================================================================
"""

import os
from pathlib import Path

from hopstack.errors import HopstackInputError

HOME_ENV_VAR = "HOPSTACK_HOME"
CACHE_ENV_VAR = "HOPSTACK_CACHE"
CACHE_LIMIT_ENV_VAR = "HOPSTACK_CACHE_MAX_MB"
DEFAULT_CACHE_LIMIT_MB = 10240
SERVICE_CACHE_LIMIT_MB = 1024  # `hopstack serve`'s default: every question a client sends adds entries
INDEX_ENV_VAR = "HOPSTACK_INDEX"
DATA_ENV_VAR = "HOPSTACK_DATA"
MULTIHOP_RAG_ENV_VAR = "HOPSTACK_MULTIHOP_RAG"

_OFF = ("off", "0", "false", "no")


def hopstack_home() -> Path:
    """``$HOPSTACK_HOME``, else ``~/.cache/hopstack``."""
    root = os.environ.get(HOME_ENV_VAR)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "hopstack"


def models_home() -> Path:
    """Where reassembled model files are kept: ``$HOPSTACK_HOME/models``."""
    return hopstack_home() / "models"


def cache_home() -> Path:
    """Where the call cache and the node cache live: ``$HOPSTACK_HOME/cache``."""
    return hopstack_home() / "cache"


def cache_enabled(requested: bool | None = None) -> bool:
    """Whether a cache is on: ``requested`` when it says so, else False when ``$HOPSTACK_CACHE`` is off
    (off, 0, false or no) and True otherwise.

    A component's ``cache: false`` is passed here as ``requested=False`` and turns the cache off for that
    component alone; ``cache: true`` (its default) defers to ``$HOPSTACK_CACHE``.
    """
    if requested is False:
        return False
    return os.environ.get(CACHE_ENV_VAR, "on").lower() not in _OFF


def cache_limit_bytes() -> int:
    """The size limit of one cache file: ``$HOPSTACK_CACHE_MAX_MB`` megabytes, else 10 GiB."""
    value = os.environ.get(CACHE_LIMIT_ENV_VAR, "").strip() or str(DEFAULT_CACHE_LIMIT_MB)
    try:
        megabytes = float(value)
    except ValueError:
        megabytes = float("nan")
    if not megabytes > 0 or megabytes == float("inf"):
        raise HopstackInputError(f"${CACHE_LIMIT_ENV_VAR} must be a positive number of megabytes, got {value!r}")
    return int(megabytes * 1024 * 1024)


def default_index() -> str | None:
    """``$HOPSTACK_INDEX``, or None."""
    return os.environ.get(INDEX_ENV_VAR) or None


def data_home() -> Path | None:
    """``$HOPSTACK_DATA``, or None."""
    value = os.environ.get(DATA_ENV_VAR)
    return Path(value).expanduser() if value else None


def multihop_rag_home() -> Path | None:
    """``$HOPSTACK_MULTIHOP_RAG``, or None."""
    value = os.environ.get(MULTIHOP_RAG_ENV_VAR)
    return Path(value) if value else None
