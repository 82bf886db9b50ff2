"""Device selection shared by every model-bearing component (docs/concepts/devices.md)."""

import re

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+|mps)$")


def resolve_device(device: str = "auto") -> str:
    """Map ``auto | cpu | cuda | cuda:N | mps`` to a concrete torch device string.

    ``auto`` picks ``cuda`` when torch sees a GPU, else ``cpu``. An explicit ``cuda`` request on a
    machine without one is refused rather than silently run on the CPU.
    """
    if not isinstance(device, str) or not _DEVICE_PATTERN.match(device):
        raise ValueError(f"device must be one of auto, cpu, cuda, cuda:N, mps; got {device!r}")
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but torch sees no CUDA GPU")
    return device
