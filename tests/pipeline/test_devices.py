"""The device rule of both stages (pipeline/devices.py)."""

from __future__ import annotations

import pytest

from pipeline.devices import DeviceError, choose_device


def test_choose_device():
    assert choose_device("auto", gpus=0) == "cpu" and choose_device("auto", gpus=2) == "cuda"
    assert choose_device("cpu", gpus=2) == "cpu" and choose_device("cuda:1", gpus=2) == "cuda:1"
    with pytest.raises(DeviceError, match="no CUDA GPU is visible; use DEVICE=cpu"):
        choose_device("cuda", gpus=0)
    with pytest.raises(DeviceError, match="only 2 GPU"):
        choose_device("cuda:2", gpus=2)
    with pytest.raises(DeviceError, match="valid: auto, cpu, cuda, cuda:N"):
        choose_device("gpu", gpus=1)
