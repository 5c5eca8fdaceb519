"""The device rule both stages follow, without importing torch (the caller passes what it sees).

    auto            cuda if a GPU is visible, else cpu
    cpu             cpu
    cuda, cuda:N    that GPU; an error naming what to do when none is visible, or N is out of range

Each stage turns the name into its own object (`torch.device`, a device string for an estimator).
"""

from __future__ import annotations

import re

_CUDA = re.compile(r"^cuda(?::(\d+))?$")


class DeviceError(RuntimeError):
    """A device name that cannot be used here; the message says what to use instead."""


def choose_device(name: str, *, gpus: int) -> str:
    """The device a run uses for `name`, given the number of visible GPUs.

    Raises:
        DeviceError: an unknown name, cuda without a GPU, or cuda:N past the visible GPUs.
    """
    if name == "auto":
        return "cuda" if gpus > 0 else "cpu"
    if name == "cpu":
        return name
    m = _CUDA.match(name)
    if not m:
        raise DeviceError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N")
    if gpus == 0:
        raise DeviceError("DEVICE=cuda but no CUDA GPU is visible; use DEVICE=cpu (or auto)")
    if m.group(1) is not None and int(m.group(1)) >= gpus:
        raise DeviceError(f"device {name}: only {gpus} GPU(s) visible (cuda:0 to cuda:{gpus - 1})")
    return name
