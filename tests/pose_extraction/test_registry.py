"""Every registered estimator, built through the one settings path, satisfies `PoseEstimator`:
the attributes stage 1 reads and one `estimate` signature (a new entry is tested with no edit here)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from pose_extraction.estimators import (
    ESTIMATORS,
    EstimatorError,
    PoseEstimator,
    build_estimator,
    check_estimator,
    get_estimator_class,
    load_settings,
)


def _class_or_skip(name: str) -> type:
    try:
        return get_estimator_class(name)
    except ImportError as exc:  # openpifpaf / mediapipe live in their own environments
        pytest.skip(f"{name}: {exc}")


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_registered_class_declares_the_contract(name):
    cls = _class_or_skip(name)
    assert cls.name == name
    assert isinstance(cls.needs_boxes, bool) and isinstance(cls.needs_weights, bool)
    assert cls.max_persons is None or (isinstance(cls.max_persons, int) and cls.max_persons >= 1)
    params = inspect.signature(cls.estimate).parameters
    assert (
        list(params)[:3] == ["self", "frames", "boxes"] and params["start_index"].kind is inspect.Parameter.KEYWORD_ONLY
    )
    ctor = inspect.signature(cls.__init__).parameters
    assert {"weights", "device"} <= set(ctor) and all(
        p.kind is inspect.Parameter.KEYWORD_ONLY for n, p in ctor.items() if n != "self"
    )


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_registered_estimator_builds_and_estimates(name):
    cls = _class_or_skip(name)
    try:
        est = build_estimator(name, weights=None, device="cpu", settings=load_settings(name))
    except ImportError as exc:
        pytest.skip(f"{name}: {exc}")
    assert isinstance(est, PoseEstimator)
    check_estimator(est, name)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(2)]
    boxes = [np.array([[10, 5, 60, 90]], np.float32), np.zeros((0, 4), np.float32)] if cls.needs_boxes else None
    out = est.estimate(frames, boxes, start_index=0)
    assert len(out) == 2
    for i, (kp, sc) in enumerate(out):
        k = kp.shape[0]
        assert kp.shape == (k, 17, 2) and sc.shape == (k, 17) and kp.dtype == np.float32 and sc.dtype == np.float32
        if cls.needs_boxes:
            assert k == len(boxes[i])
        if cls.max_persons is not None:
            assert k <= cls.max_persons


def test_contract_check_names_what_is_missing():
    class Broken:
        name = "broken"
        needs_boxes = "yes"
        needs_weights = False
        weights = ""
        version = "1"

        def estimate(self, frames, boxes=None):
            return []

    with pytest.raises(EstimatorError, match=r"needs_boxes, max_persons, estimate\(\.\.\., start_index=\)"):
        check_estimator(Broken(), "broken")


def test_cli_batch_size_applies_only_when_given():
    """One settings path: the settings file's batch_size holds unless the config sets one."""
    from pipeline.config import load_config
    from pose_extraction.build import build_estimator_from
    from pose_extraction.extract import PoseConfig

    cfg = load_config(PoseConfig, None, ["estimator=standin"])
    assert cfg.batch_size is None and cfg.flip_test is None
    assert build_estimator_from(cfg).name == "standin"
    hrnet = get_estimator_class("hrnet")
    settings = {**load_settings("hrnet"), "batch_size": 5}
    assert build_estimator("hrnet", weights=None, settings=settings).batch_size == 5
    assert build_estimator("hrnet", weights=None, settings=settings, batch_size=7).batch_size == 7
    assert hrnet.needs_boxes


def test_device_under_torchrun_is_the_ranks_gpu(monkeypatch):
    """Each torchrun rank extracts on cuda:LOCAL_RANK ("auto" and "cuda"); an explicit cuda:N is kept."""
    import torch

    from pipeline.devices import DeviceError
    from pose_extraction.build import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device("auto") == "cuda:3" and resolve_device("cuda") == "cuda:3"
    assert resolve_device("cuda:1") == "cuda:1" and resolve_device("cpu") == "cpu"
    monkeypatch.setenv("LOCAL_RANK", "5")
    with pytest.raises(DeviceError, match="only 4 GPU"):
        resolve_device("auto")
    monkeypatch.delenv("LOCAL_RANK")
    assert resolve_device("auto") == "cuda"
