"""The robustness sweeps read one perturbation table and the backbones' `layer_attention` (issue 14) without changing a
number: cache keys byte for byte as before (so existing report caches stay valid) except for the perturbations whose
results changed meaning (`revision`), the old saliency extraction, the report's sections and the metrics of
`recognition.diagnostics` against the formulas they replaced; masks and deletion units of a one-person clip leave its
padded person alone."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from recognition import diagnostics as dg
from recognition.models import MODELS
from recognition.models.action import build_action_model
from recognition.perturb import PERTURBATIONS
from recognition.preprocess import PreprocessOptions, preprocess_clip
from recognition.report import SECTIONS, SWEEPS, ReportConfig
from recognition.robustness import (
    Perturbation,
    ResultCache,
    _model_space_batch,
    describe,
    eval_key,
    token_saliency,
)
from tests.helpers import make_record
from tests.recognition.test_backbones import hooked_spatial_attention, randomize_

P = Perturbation
# Cache file names (the sha256 of the key) written before the table existed, for seeds 0 and 3 and noise_per_person
# True / False, in the order (0, True), (0, False), (3, True), (3, False), with the stub run and data of `_key`.
OLD_CACHE_FILES = [
    (P("clean"), "clean", ["9c1572a54e2f05ea95011a2359b43ab2"] * 4),
    (
        P("gaussian", 0.005),
        "gaussian σ=0.005",
        [
            "b923aa9f5136a6b2270c1226be1ebf0b",
            "1a5aedda8309ea745b781dd6fd493029",
            "27f813a3b16de91ad97aa8958a7041b4",
            "a6b30d15bca2e6fc144857e5f8dd0f46",
        ],
    ),
    (P("gaussian", 0), "gaussian σ=0", ["9c1572a54e2f05ea95011a2359b43ab2"] * 4),
    (
        P("spatial", 0.01),
        "spatial σ=0.01",
        ["3a6b2e68ba378380b4c19fbf641d068a"] * 2 + ["39b2ad578a3d2fae50da8b495108ced4"] * 2,
    ),
    (P("shift", 3), "shift k=3", ["7fec0a2e5c00eee130e55415f27782b7"] * 2 + ["3a45f6f2ed03fadfa3eb7cfda6605b9b"] * 2),
    (P("shift", 0), "shift k=0", ["9c1572a54e2f05ea95011a2359b43ab2"] * 4),
    # revision 1 (real persons only; deletion/insertion also record each step's prediction): new files, so a cache
    # written before is not read for them; the old names were d8359e2c..., 3360aa3f.../ee76cc11..., bd5e55a0...,
    # 5561c512..., 951f0837...
    (P("mask_targeted", 2), "mask_targeted k=2", ["d419ea08164744ab079475e93a9b191a"] * 4),
    (
        P("mask_random", 5),
        "mask_random k=5",
        ["360221a0de8ce48e5cc988573501f1f1"] * 2 + ["510d690d363b2b0ed0e4bc72630d7964"] * 2,
    ),
    (P("deletion", layer=-1, steps=4), "deletion (saliency -1, 4 steps)", ["df020e86c3c69b6b87c79662cae2096c"] * 4),
    (
        P("insertion", layer="random", steps=8),
        "insertion (saliency random, 8 steps)",
        ["dc50beb3910d5bff1e6093b2c649fbd8"] * 4,
    ),
    (P("deletion", layer=0, steps=16), "deletion (saliency 0, 16 steps)", ["1003040d22d353962e97f28334705581"] * 4),
]
# One key in full, as written beside its npz.
OLD_GAUSSIAN_KEY = (
    '{"checkpoint": "' + "c" * 64 + '", "clips": "7e18f737311b2dc3b2f269dd78396b0351f14fb66efa879f768cb23181883c78", '
    '"data": "' + "d" * 64 + '", "device": "cpu", "noise_per_person": false, "perturbation": {"kind": "gaussian", '
    '"value": 0.005}, "preprocess": {"clip_len": 16}, "seed": 3, "split": "xsub_val", "version": 1}'
)


@dataclasses.dataclass(frozen=True)
class _Opts:
    clip_len: int = 16


def _key(pert: Perturbation, seed: int, npp: bool) -> dict:
    """eval_key of a stub run and data, after the canonicalisation `evaluate_many` does."""
    run = SimpleNamespace(digest="c" * 64, cfg=SimpleNamespace(data=_Opts()), device=torch.device("cpu"))
    data = SimpleNamespace(digest="d" * 64, split="xsub_val")
    return eval_key(run, data, ["a", "b"], pert.canonical(), seed, noise_per_person=npp)


def test_old_cache_keys_cover_every_kind_of_before():
    old = {"clean", "gaussian", "spatial", "shift", "mask_targeted", "mask_random", "deletion", "insertion"}
    assert {p.kind for p, _, _ in OLD_CACHE_FILES} == old and old <= set(PERTURBATIONS)
    assert json.dumps(_key(P("gaussian", 0.005), 3, False), sort_keys=True) == OLD_GAUSSIAN_KEY


@pytest.mark.parametrize("pert, label, files", OLD_CACHE_FILES, ids=lambda v: str(v)[:40])
def test_cache_keys_and_labels_are_the_old_ones(pert, label, files, tmp_path):
    cache = ResultCache(tmp_path)
    got = [cache.path(_key(pert, seed, npp)).stem for seed in (0, 3) for npp in (True, False)]
    assert got == files
    assert describe(pert) == label


@pytest.mark.parametrize("kind", sorted(PERTURBATIONS))
def test_perturbation_reads_its_spec(kind):
    spec = PERTURBATIONS[kind]
    pert = P(kind, spec.example or 0.0, steps=3)
    assert pert.space == spec.space and set(pert.params()) == {"kind", *spec.params}
    if spec.identity is not None:
        assert P(kind, spec.identity).canonical() == P("clean")
    assert pert.canonical() is pert  # the example value perturbs
    with pytest.raises(ValueError, match="unknown perturbation"):
        P(kind + "_nope")


def old_token_saliency(model, x: torch.Tensor, layers: list[int]) -> dict[int, np.ndarray]:
    """`robustness.token_saliency` before issue 14: DSTFormer's `blocks_st` by hooks; other backbones the last layer."""
    N, M, T, V, C = x.shape
    depth = len(getattr(model.backbone, "blocks_st", [None]))
    layers = sorted({layer % depth for layer in layers})
    out = {}
    if depth - 1 in layers:
        out[depth - 1] = model(x, return_attention=True).activation.float().cpu().numpy()
    inner = [layer for layer in layers if layer != depth - 1]
    if inner:
        store = hooked_spatial_attention(model.backbone, x.reshape(N * M, T, V, C), inner)
        for layer in inner:
            out[layer] = model.backbone.token_activation(store[layer]).reshape(N, M, T, V).float().cpu().numpy()
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_token_saliency_is_the_old_extraction(name):
    torch.manual_seed(0)
    depth = {"depth": 3} if name == "dstformer" else {}
    model = build_action_model(backbone=name, preset="tiny", num_classes=4, hidden_dim=16, maxlen=16, **depth).eval()
    randomize_(model.backbone)
    run = SimpleNamespace(model=model, device=torch.device("cpu"))
    x = torch.randn(3, 2, 8, 17, 3)
    layers = [0, 1, -1]
    with torch.no_grad():
        new, old = token_saliency(run, x, layers), old_token_saliency(model, x, layers)
    assert sorted(new) == sorted(old) == ([0, 1, 2] if name == "dstformer" else [0])
    for layer in old:
        assert new[layer].shape == (3, 2, 8, 17)
        np.testing.assert_array_equal(new[layer], old[layer])


def test_report_sections_come_from_the_table():
    old = ("accuracy", "gaussian_noise", "spatial_noise", "shifted_joints", "masking", "deletion_insertion")
    assert SECTIONS[: len(old)] == old
    assert SWEEPS["shifted_joints"] == ("shift", "shift_held")  # the seed's Figure 5: both readings
    fields = {f.name for f in dataclasses.fields(ReportConfig)}
    for section, kinds in SWEEPS.items():
        grids = {PERTURBATIONS[k].sweep.grid for k in kinds}
        assert len(grids) == 1 and grids <= fields, section
        for kind in kinds:
            spec = PERTURBATIONS[kind]
            assert spec.sweep.section == section and (len(kinds) == 1) == (spec.sweep.variant == ""), kind
            assert spec.seeded and spec.identity is not None  # a sweep is over seeds, with the identity as clean


def test_topk_accuracy_is_the_formulas_it_replaced():
    rng = np.random.default_rng(0)
    logits = rng.integers(0, 4, size=(200, 7)).astype(np.float32)  # many ties
    labels = rng.integers(0, 7, size=200)
    old_top1 = float(100.0 * np.mean(logits.argmax(1) == labels))  # report._top1, evaluate.accuracy_report
    old_top5 = float(100.0 * np.mean((np.argsort(-logits, axis=1)[:, :5] == labels[:, None]).any(1)))
    assert dg.topk_accuracy(logits, labels, 1) == old_top1 and dg.topk_accuracy(logits, labels, 5) == old_top5
    assert dg.topk_accuracy(logits[:, :3], labels % 3, 5) == 100.0  # k beyond C: every class
    assert dg.topk_accuracy(np.zeros((0, 7)), np.zeros(0, dtype=int), 5) == 0.0
    with pytest.raises(ValueError, match="k must be"):
        dg.topk_accuracy(logits, labels, 0)
    conf = np.zeros((7, 7), dtype=np.int64)
    np.add.at(conf, (labels, logits.argmax(1)), 1)  # evaluate.accuracy_report's matrix
    np.testing.assert_array_equal(dg.confusion_matrix(labels, logits.argmax(1), 7), conf)
    old_per_class = [float(100.0 * conf[i, i] / conf[i].sum()) if conf[i].sum() else None for i in range(7)]
    new_per_class = [None if np.isnan(a) else float(a) for a in dg.class_accuracy(conf)]
    assert new_per_class == old_per_class


class _Recorder:
    """The action model, recording every input it is given (what `_model_space_batch` feeds it)."""

    def __init__(self, model) -> None:
        self.model, self.backbone, self.inputs = model, model.backbone, []

    def __call__(self, x):
        self.inputs.append(x.clone())
        return self.model(x)


def _one_and_two_person_batch() -> torch.Tensor:
    """Model input [2, M=2, T=16, V, 3] of a one-person clip (its slot 1 padded) and a two-person clip."""
    opts = PreprocessOptions(clip_len=16)
    clips = [
        preprocess_clip(r["keypoint"], r["keypoint_score"], r["img_shape"], train=False, opts=opts, rng=None)
        for r in (make_record(M=1, T=20, seed=4), make_record(M=2, T=20, seed=5))
    ]
    x = torch.from_numpy(np.stack(clips))
    assert not x[0, 1, ..., 2].any() and x[0, 1, ..., :2].any()  # the padded slot: conf 0, moved off 0 by crop_scale
    return x


def test_one_person_clip_padded_person_never_enters_a_mask_or_a_unit():
    """docs/method.md §8(d)(e): masks and deletion units cover real persons only. The padded slot of a one-person clip
    is fed unchanged at every step, and its curve is that of its one person's tokens scored alone, in any batch."""
    torch.manual_seed(0)
    model = build_action_model(backbone="dstformer", preset="tiny", num_classes=4, hidden_dim=16, maxlen=16).eval()
    randomize_(model.backbone)
    run = SimpleNamespace(model=_Recorder(model), device=torch.device("cpu"))
    x, steps = _one_and_two_person_batch(), 4
    todo = [
        (P("deletion", layer=-1, steps=steps), 0),
        (P("insertion", layer=-1, steps=steps), 0),
        (P("mask_targeted", 17), None),
        (P("mask_random", 5), 0),
    ]
    with torch.no_grad():
        both = _model_space_batch(run, x, np.array([0, 1]), todo)
        for inp in run.model.inputs:
            np.testing.assert_array_equal(inp[0, 1].numpy(), x[0, 1].numpy())  # the padded slot, as it was
        assert any(not inp[0, 0].any() for inp in run.model.inputs)  # while the real person was deleted
        alone = _model_space_batch(run, x[:1], np.array([0]), todo)
        for item in todo:
            for name, a in alone[item].items():
                np.testing.assert_allclose(both[item][name][:1], a, atol=1e-6, err_msg=f"{item} {name}")
        # the deletion curve by hand: the one person's T·V tokens, most attended first, round(i/n·T·V) zeroed
        T, V = x.shape[2:4]
        sal = token_saliency(run, x[:1], [-1])[model.backbone.attention_layers - 1][0, 0].reshape(-1)  # [T·V]
        order = np.argsort(-sal, kind="stable")
        clean = model(x[:1]).logits
        pred = int(clean.argmax(1))
        for step in range(steps + 1):
            xi = x[:1].clone().reshape(1, 2, T * V, 3)
            xi[0, 0, order[: int(np.rint(T * V * step / steps))]] = 0
            logits = model(xi.reshape(1, 2, T, V, 3)).logits
            want = float(logits.softmax(1)[0, pred])
            assert alone[todo[0]]["curve"][0, step] == pytest.approx(want, abs=1e-6)
            assert alone[todo[0]]["pred"][0, step] == int(logits.argmax(1))
        masked = model(torch.cat([torch.zeros_like(x[:1, :1]), x[:1, 1:]], dim=1)).logits  # k = 17: person 0 zeroed
        np.testing.assert_allclose(alone[todo[2]]["logits"], masked.numpy(), atol=1e-6)
