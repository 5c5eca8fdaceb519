"""Foreign checkpoints (MotionBERT / MaskCLR layouts, no run config of ours) are evaluated with the preprocessing of
the code that wrote them: the official test-time switches F3 and F4 (docs/method.md §10), stated in metrics.json;
`--preprocessing fixed|faithful` overrides, for any checkpoint."""

from __future__ import annotations

import json

import numpy as np
import torch

from pipeline.schema import write_index
from recognition.evaluate import eval_config, run_evaluate
from recognition.preprocess import PreprocessOptions, describe_preprocessing, faithful_options, fixed_options
from tests.helpers import make_index
from tests.recognition.reference_motionbert import reference_action_logits
from tests.recognition.reference_preprocess import reference_test_clip
from tests.recognition.test_train_eval import _official_action_file


def _reference_logits(index: dict, frame_dirs, state) -> np.ndarray:
    by_name = {a["frame_dir"]: a for a in index["annotations"]}
    x = np.stack(
        [
            reference_test_clip(by_name[n]["keypoint"], by_name[n]["keypoint_score"], by_name[n]["img_shape"], 24)
            for n in frame_dirs
        ]
    )
    return reference_action_logits(state, torch.from_numpy(x).float(), num_heads=8).numpy()


def test_an_official_checkpoint_is_evaluated_as_motionbert_tests_it_with_no_flag(tmp_path):
    index = make_index(8, num_classes=3, T=30, seed=5)  # two-person clips, uneven confidences: F3 and F4 matter
    data = tmp_path / "idx.pkl"
    write_index(index, data)
    ck, state = _official_action_file(tmp_path, num_classes=3)
    metrics = run_evaluate(checkpoint=ck, data=data, split="xsub_val", out=tmp_path / "auto", device="cpu")
    pred = np.load(tmp_path / "auto/predictions.npz")
    ref = _reference_logits(index, pred["frame_dir"], state)
    np.testing.assert_allclose(pred["logits"], ref, atol=1e-4, rtol=0)
    assert metrics["preprocessing"] == "faithful"
    assert json.loads((tmp_path / "auto/metrics.json").read_text())["preprocessing"] == "faithful"
    # forced fixed preprocessing: our pipeline, other inputs, other logits, and said so
    fixed = run_evaluate(
        checkpoint=ck, data=data, split="xsub_val", out=tmp_path / "fixed", device="cpu", preprocessing="fixed"
    )
    assert fixed["preprocessing"] == "fixed"
    other = np.load(tmp_path / "fixed/predictions.npz")["logits"]
    assert np.abs(other - ref).max() > 1e-3


def test_our_checkpoints_keep_their_run_config_unless_forced():
    ours = {"run_config": {"data": {"clip_len": 16}}, "model_config": {"maxlen": 16}}
    foreign = {"model_config": {"maxlen": 24}}
    assert describe_preprocessing(eval_config(ours, faithful=None).data) == "fixed"
    assert describe_preprocessing(eval_config(ours, faithful=None, preprocessing="faithful").data) == "faithful"
    assert describe_preprocessing(eval_config(foreign, faithful=None).data) == "faithful"
    assert describe_preprocessing(eval_config(foreign, faithful=None, preprocessing="fixed").data) == "fixed"
    assert eval_config(foreign, faithful=None).data.clip_len == 24
    assert describe_preprocessing(eval_config(foreign, faithful=False).data) == "fixed"  # --no-faithful is honoured
    assert describe_preprocessing(PreprocessOptions(conf_order="coco")) == "mixed (official: conf_order)"
    assert describe_preprocessing(fixed_options(faithful_options())) == "fixed"
