"""Connecting to Ray, the engine behind ``--ray`` on ``hopstack index``, ``eval``, ``compare`` and ``serve``
(docs/concepts/scale-out.md).

hopstack writes no scheduler of its own: :func:`connect` joins a running Ray cluster (``auto``, a
``HOST:PORT`` of its head node, or a ``ray://HOST:PORT`` client URL) or starts a local Ray instance
(``local``), and the work is spread with Ray Data, Ray actors and Ray Serve. Ray's usage statistics are
off unless the user set ``RAY_USAGE_STATS_ENABLED`` themselves. Every node must see the index folders,
models and node cache at the paths the driver names (a shared filesystem, or the same copy on each node);
workers start in the driver's working directory, so relative paths mean what they mean to the driver.
"""

import os
import re
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from hopstack.errors import HopstackInputError

LOCAL = "local"
RAY_EXTRA = "pip install 'hopstack[ray]'"
CONNECT_TIMEOUT_S = 10.0
# environment variables a worker on another node needs to see hopstack's settings as the driver does
FORWARDED_ENV_PREFIXES = ("HOPSTACK_", "HF_", "TRANSFORMERS_", "SENTENCE_TRANSFORMERS_", "HAYSTACK_", "OMP_")


@dataclass(frozen=True)
class RaySettings:
    """Where and how wide ``--ray`` runs: the cluster ``address`` (:func:`connect`), how many actors share the
    work (None: one per CPU the cluster offers, at ``cpus_per_actor`` each), what each actor reserves, and the
    questions in one shard of an evaluation (None: :class:`~hopstack.graphs.ray_runner.RayRunner` decides)."""

    address: str = LOCAL
    actors: int | None = None
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    shard_size: int | None = None

    def actor_count(self) -> int:
        """The number of actors: ``actors`` when set, else as many as the cluster's CPUs (or GPUs, when each
        actor takes some) allow, at least one."""
        if self.actors:
            return self.actors
        if self.gpus_per_actor <= 0 and self.cpus_per_actor <= 0:
            raise HopstackInputError("actors that reserve no CPU need their number: give --ray-actors N")
        import ray

        resources = ray.cluster_resources()
        if self.gpus_per_actor > 0:
            return max(1, int(resources.get("GPU", 0) // self.gpus_per_actor))
        return max(1, int(resources.get("CPU", 1) // self.cpus_per_actor))

    def actor_options(self) -> dict[str, Any]:
        """The resources one actor reserves (``ray.remote``'s ``num_cpus``/``num_gpus``)."""
        return {"num_cpus": self.cpus_per_actor, "num_gpus": self.gpus_per_actor}


def import_ray() -> Any:
    """The ``ray`` module, or a clear error naming the extra to install."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # Ray's future default; silences its warning
    try:
        import ray
    except ImportError as exc:
        raise HopstackInputError(f"--ray needs Ray, which is not installed: {RAY_EXTRA}") from exc
    return ray


def is_address(text: str) -> bool:
    """Whether ``text`` reads as a Ray address: ``auto``, ``local``, empty, ``ray://...`` or ``HOST:PORT``."""
    return text in ("auto", LOCAL, "") or text.startswith("ray://") or re.fullmatch(r"[\w.\-]+:\d+", text) is not None


def _head_endpoint(address: str) -> tuple[str, int] | None:
    """The ``(host, port)`` an address names, or None for ``auto``."""
    if address == "auto":
        return None
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    if parts.scheme != "ray" or not parts.hostname:
        raise HopstackInputError(f"Ray address {address!r}: expected 'auto', HOST:PORT or ray://HOST:PORT (or local)")
    try:
        port = parts.port
    except ValueError as exc:
        raise HopstackInputError(f"Ray address {address!r}: {exc}") from exc
    if port is None:
        raise HopstackInputError(f"Ray address {address!r} names no port (the head's GCS port, 6379 by default)")
    return parts.hostname, port


def _check_reachable(address: str, timeout_s: float) -> None:
    endpoint = _head_endpoint(address)
    if endpoint is None:
        return
    try:
        with socket.create_connection(endpoint, timeout=timeout_s):
            pass
    except OSError as exc:
        raise HopstackInputError(
            f"Ray cluster at {address} is unreachable ({exc}); start one with `ray start --head` or check the address"
        ) from exc


def worker_environment() -> dict[str, str]:
    """The driver's hopstack, Hugging Face and Haystack settings, for the workers' ``runtime_env``."""
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}


def connect(address: str = LOCAL, timeout_s: float = CONNECT_TIMEOUT_S) -> Any:
    """Join the Ray cluster at ``address`` (or start a local instance for ``local``/empty) unless this process
    already has; returns the ``ray`` module. An unreachable address fails within ``timeout_s`` (plus Ray's own
    handshake) with a message that names it."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    address = (address or LOCAL).strip()
    options: dict[str, Any] = {
        "logging_level": "ERROR",
        "log_to_driver": False,
        "runtime_env": {"env_vars": worker_environment()},
    }
    if address == LOCAL:
        ray.init(address="local", include_dashboard=False, **options)  # a new instance, not a running one
        return ray
    _check_reachable(address, timeout_s)
    try:
        ray.init(address=address, **options)
    except (ConnectionError, TimeoutError, RuntimeError) as exc:
        raise HopstackInputError(f"Ray cluster at {address}: could not connect ({exc})") from exc
    return ray
