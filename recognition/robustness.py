"""Robustness sweeps of docs/method.md §8 with a result cache: (run, data, perturbation, seed) -> logits or curves.

Every evaluation result is stored under `CACHE_DIR/<key hash>.npz` (arrays) beside `<key hash>.json` (the key, for
people). The key is (CACHE_VERSION, the checkpoint's and the data file's sha256, the split and its clip list, the
perturbation and its parameters (and its spec's `revision` when > 0), the seed, the preprocessing options and the
device type), so a re-run recomputes only what changed. File hashes are memoised in `CACHE_DIR/files.json` by (path,
mtime, size). Bump `CACHE_VERSION` when the meaning of every cached result changes, a spec's `revision` when that of
one perturbation does.

The perturbations are the table `recognition.perturb.PERTURBATIONS`; this module only reads it. Screen-space ones
(Gaussian and spatial noise) act inside the preprocessing (one data pass per perturbation and seed); the clean pass and
the model-space ones (shifted joints, targeted/random masking, RISE deletion/insertion) are all computed in a single
data pass that shares the clean input; their masks and deletion units cover the real persons only
(`perturb.real_persons`). Random draws are a pure function of (seed, clip position, perturbation) (the
spec's `rng`): Gaussian noise uses the generator `default_rng([seed, i])` of `SkeletonDataset`, so seed = the run's
seed reproduces `python -m recognition evaluate --noise-sigma`. Saliency comes from the backbone's `layer_attention`
(`recognition.models.Backbone`). Every forward runs in float32, on every device (docs/method.md §8(j)).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline import store
from pipeline.atomic import atomic_write_bytes, atomic_write_text, write_text_if_changed
from pipeline.config import to_dict
from pipeline.progress import progress
from recognition import perturb
from recognition.checkpoint import build_model_from_checkpoint, read_checkpoint
from recognition.config import TrainConfig
from recognition.data import SkeletonDataset, label_names_of, split_frame_dirs
from recognition.evaluate import eval_config
from recognition.perturb import PERTURBATIONS, PerturbationSpec
from recognition.preprocess import preprocess_clip

log = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass(frozen=True)
class Perturbation:
    """One evaluation condition: a perturbation of `PERTURBATIONS` with its parameters (the spec's `params`).

    Attributes:
        kind: a name of `PERTURBATIONS`.
        value: sigma (gaussian, spatial) or k (shift, mask_targeted, mask_random); unused otherwise.
        layer: saliency source of deletion/insertion: a layer index (-1 = last; Python-style negatives) or "random".
        steps: number of deletion/insertion steps n (the curve has n + 1 points).
    """

    kind: str
    value: float = 0.0
    layer: int | str = -1
    steps: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", float(self.value))  # k = 3 and 3.0 are one condition, one cache key
        if self.kind not in PERTURBATIONS:
            raise ValueError(f"unknown perturbation {self.kind!r}; valid: {tuple(PERTURBATIONS)}")
        if "steps" in self.spec.params and self.steps < 1:
            raise ValueError(f"{self.kind} needs steps >= 1, got {self.steps}")

    @property
    def spec(self) -> PerturbationSpec:
        return PERTURBATIONS[self.kind]

    @property
    def space(self) -> str:
        return self.spec.space

    def canonical(self) -> Perturbation:
        """A perturbation at its identity value (sigma = 0, k = 0) is the clean evaluation."""
        identity = self.spec.identity
        if identity is not None and self.value == identity:
            return Perturbation("clean")
        return self

    def params(self) -> dict:
        """The condition's part of the cache key: the kind and the spec's parameters."""
        return {"kind": self.kind, **{name: getattr(self, name) for name in self.spec.params}}

    def saliency_source(self) -> int | str:
        """The clean-pass attention a saliency-driven perturbation ranks tokens by: its `layer`, else the last layer."""
        return self.layer if "layer" in self.spec.params else -1


class ResultCache:
    """npz results keyed by a JSON-able dict; writes are atomic, reads never write."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.hits = self.misses = 0

    def path(self, key: dict) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        return self.root / f"{digest}.npz"

    def get(self, key: dict) -> dict[str, np.ndarray] | None:
        p = self.path(key)
        if not p.is_file():
            self.misses += 1
            return None
        self.hits += 1
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def put(self, key: dict, arrays: dict[str, np.ndarray]) -> None:
        p = self.path(key)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(p, buf.getvalue())
        write_text_if_changed(p.with_suffix(".json"), json.dumps(key, indent=1, sort_keys=True) + "\n")

    def file_digest(self, path: str | Path) -> str:
        """sha256 of a file, memoised in `files.json` by (absolute path, mtime_ns, size)."""
        p = Path(path).resolve()
        st = p.stat()
        memo_path = self.root / "files.json"
        memo = json.loads(memo_path.read_text()) if memo_path.is_file() else {}
        hit = memo.get(str(p))
        if hit and hit[0] == st.st_mtime_ns and hit[1] == st.st_size:
            return hit[2]
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        memo[str(p)] = [st.st_mtime_ns, st.st_size, h.hexdigest()]
        atomic_write_text(memo_path, json.dumps(memo, indent=1, sort_keys=True) + "\n")
        return h.hexdigest()


class RunContext:
    """A trained run: checkpoint path, its resolved config and label names; the model is built on first use."""

    def __init__(self, checkpoint: str | Path, *, name: str, device: torch.device, cache: ResultCache) -> None:
        self.checkpoint, self.name, self.device, self.cache = Path(checkpoint), name, device, cache
        ck = read_checkpoint(self.checkpoint)
        self.run_config: dict | None = ck.get("run_config")
        self.cfg: TrainConfig = eval_config(ck, faithful=None)
        self.label_names: list[str] | None = ck.get("label_names")
        self.num_classes: int = ck["model_config"]["num_classes"]
        self.split: str | None = ck.get("split")
        self.digest = cache.file_digest(self.checkpoint)

    @functools.cached_property
    def model(self):
        model, _ = build_model_from_checkpoint(self.checkpoint)
        return model.to(self.device).eval()


class DataContext:
    """A dataset index and the clips evaluated from it; the file is read on first use."""

    def __init__(self, path: str | Path, *, split: str, cache: ResultCache) -> None:
        self.path, self.split = Path(path), split
        self.digest = cache.file_digest(store.content_file(self.path))

    @functools.cached_property
    def index(self) -> store.Dataset:
        return store.open_dataset(self.path)

    @property
    def name(self) -> str:
        return self.path.stem


def eval_key(
    run: RunContext,
    data: DataContext,
    frame_dirs: list[str],
    pert: Perturbation,
    seed: int | None,
    *,
    noise_per_person: bool,
) -> dict:
    """The cache key of one evaluation (see the module docstring)."""
    return {
        "version": CACHE_VERSION,
        "checkpoint": run.digest,
        "data": data.digest,
        "split": data.split,
        "clips": hashlib.sha256("\n".join(frame_dirs).encode()).hexdigest(),
        "perturbation": {**pert.params(), **({"revision": pert.spec.revision} if pert.spec.revision else {})},
        "seed": seed if pert.spec.seeded else None,
        "noise_per_person": noise_per_person if pert.spec.noise_mode else None,
        "preprocess": to_dict(run.cfg.data),
        "device": run.device.type,
    }


class EvalClips(Dataset):
    """Test clips of a SkeletonDataset -> (x [2, T, 17, 3], label, position), with an optional screen perturbation."""

    def __init__(self, base: SkeletonDataset, pert: Perturbation, seed: int, *, noise_per_person: bool) -> None:
        assert not base.train and base.noise_sigma == 0
        self.base, self.pert, self.seed, self.noise_per_person = base, pert, seed, noise_per_person

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        b, spec, value = self.base, self.pert.spec, self.pert.value
        kp, score, shape = b.keypoints[i], b.scores[i], b.img_shapes[i]
        sigma, rng = 0.0, None
        per_person = self.noise_per_person if spec.noise_mode else True
        if spec.space == "screen":
            r = spec.rng(self.seed, i)
            if spec.via_preprocess:  # exactly SkeletonDataset's noisy test path with this seed
                sigma, rng = value, r
            else:
                kp = perturb.perturb_pixels(kp, shape, lambda xy: spec.apply(xy, value, r, per_person=per_person))
        x = preprocess_clip(
            kp,
            score,
            shape,
            train=False,
            opts=b.opts,
            rng=rng,
            noise_sigma=sigma,
            noise_per_person=per_person,
            clip_name=b.names[i],
        )
        return torch.from_numpy(x), b.labels[i], i


def make_base_dataset(run: RunContext, data: DataContext, frame_dirs: list[str]) -> SkeletonDataset:
    return SkeletonDataset(
        annotations=data.index["annotations"],
        frame_dirs=frame_dirs,
        train=False,
        opts=run.cfg.data,
        seed=run.cfg.seed,
        num_classes=run.num_classes,
        skip_bad=run.cfg.optim.skip_bad,
    )


@torch.no_grad()
def _forward(run: RunContext, x: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [N, C] float32 cpu, features [N, H] float32 cpu) of a batch, plain (fused attention) path."""
    x = torch.as_tensor(x).to(run.device)
    out = run.model(x)  # float32 on every device (docs/method.md §7.4)
    return out.logits.float().cpu(), out.features.float().cpu()


@torch.no_grad()
def token_saliency(run: RunContext, x: torch.Tensor, layers: list[int]) -> dict[int, np.ndarray]:
    """Attention received per token [N, M, T, V] (docs/method.md §5.1) in each of `layers` of x [N, M, T, V, 3].

    From the backbone's `layer_attention`; layer indices are taken modulo its `attention_layers` (-1 = the last), and
    the result is keyed by the normalised index.
    """
    N, M, T, V, C = x.shape
    backbone = run.model.backbone
    layers = sorted({layer % backbone.attention_layers for layer in layers})
    x = x.to(run.device).reshape(N * M, T, V, C)  # [N, M, T, V, C] -> [B, T, V, C]
    attn = backbone.layer_attention(x, layers)  # float32 on every device
    act = [backbone.token_activation(a).reshape(N, M, T, V) for a in attn]  # [B, T, V] -> [N, M, T, V]
    return {layer: a.float().cpu().numpy() for layer, a in zip(layers, act)}


def _softmax_at(logits: torch.Tensor, cls: np.ndarray) -> np.ndarray:
    """Softmax probability of class cls[n] for each row of logits [N, C] -> [N]."""
    return logits.softmax(dim=1)[torch.arange(len(cls)), torch.as_tensor(cls)].numpy()


def _model_space_batch(
    run: RunContext, x: torch.Tensor, pos: np.ndarray, todo: list[tuple[Perturbation, int | None]]
) -> dict:
    """Results of the model-space perturbations `todo` on one clean batch x [N, M, T, V, 3] at clip positions pos."""
    logits, feats = _forward(run, x)
    pred = logits.argmax(1).numpy()
    depth = run.model.backbone.attention_layers
    sources = {p.saliency_source() for p, _ in todo if p.spec.saliency}
    layers = {src % depth for src in sources if src != "random"}
    sal = token_saliency(run, x, sorted(layers)) if layers else {}
    xn = x.numpy()
    units = np.broadcast_to(perturb.real_persons(xn)[:, :, None, None], xn.shape[:4])  # [N, M, T, V] RISE units
    out: dict = {}
    for pert, seed in todo:
        spec, src = pert.spec, pert.saliency_source()
        if spec.apply is None:  # the clean pass
            out[(pert, seed)] = {"logits": logits.numpy(), "features": feats.numpy()}
        elif spec.curve:
            if src == "random":
                s = np.stack([spec.rng(seed, i).random(xn.shape[1:4]) for i in pos])  # [N, M, T, V]
            else:
                s = sal[src % depth]
            ranks, count = perturb.token_ranks(s, units)
            curve = np.empty((len(pos), pert.steps + 1), dtype=np.float32)  # p(clean prediction) after each step
            preds = np.empty((len(pos), pert.steps + 1), dtype=np.int64)  # the prediction after each step
            for step in range(pert.steps + 1):
                first = perturb.first_units_mask(ranks, count, step, pert.steps)  # [N, M, T, V]
                xs = spec.apply(xn, first, units)
                step_logits = logits if np.array_equal(xs, xn) else _forward(run, xs)[0]  # a curve's clean end
                curve[:, step], preds[:, step] = _softmax_at(step_logits, pred), step_logits.argmax(1).numpy()
            out[(pert, seed)] = {"curve": curve, "pred": preds, "clean_pred": pred}
        else:
            clips = [
                spec.apply(xn[j], pert.value, spec.rng(seed, i), sal[src % depth][j] if spec.saliency else None)
                for j, i in enumerate(pos)
            ]  # N x [M, T, V, 3]
            out[(pert, seed)] = {"logits": _forward(run, np.stack(clips))[0].numpy()}
    return out


def evaluate_many(
    run: RunContext,
    data: DataContext,
    items: list[tuple[Perturbation, int]],
    *,
    frame_dirs: list[str] | None = None,
    batch_size: int = 32,
    noise_per_person: bool | None = None,
) -> dict[tuple[Perturbation, int], dict]:
    """Results of (perturbation, seed) items for `run` on `data`, from the cache or computed (then cached).

    Args:
        frame_dirs: the clips (default: the data's split).
        noise_per_person: Gaussian noise per person (None: the run's own setting, switch F6).

    Returns:
        {(perturbation, seed): arrays} for every requested item, keyed as requested. Arrays: "labels" [N] and
        "frame_dir" [N] always; "logits" [N, C] (clean, noise, shift, masking), "features" [N, H] (clean);
        deletion/insertion: "curve" [N, steps + 1] (softmax probability of the clean-predicted class after each
        step), "pred" [N, steps + 1] (the predicted class after each step, for the accuracy curve) and
        "clean_pred" [N].
    """
    if frame_dirs is None:
        frame_dirs = split_frame_dirs(data.index, data.split)
    npp = run.cfg.noise_per_person if noise_per_person is None else noise_per_person
    cache = run.cache
    canon = {item: (item[0].canonical(), item[1] if item[0].canonical().spec.seeded else None) for item in items}
    keys = {c: eval_key(run, data, frame_dirs, c[0], c[1], noise_per_person=npp) for c in set(canon.values())}
    found = {c: cache.get(k) for c, k in keys.items()}
    missing = [c for c, r in found.items() if r is None]
    if missing:
        log.info(
            "%s on %s: computing %d of %d evaluations (%d cached)",
            run.name,
            data.name,
            len(missing),
            len(found),
            len(found) - len(missing),
        )
        base = make_base_dataset(run, data, frame_dirs)
        meta = {"labels": np.asarray(base.labels, dtype=np.int64), "frame_dir": np.asarray(base.names)}
        model_todo = sorted((c for c in missing if c[0].space == "model"), key=_order)
        if model_todo:
            parts = _run_model_space(run, base, model_todo, batch_size)
            for c in model_todo:
                found[c] = {**parts[c], **meta}
                cache.put(keys[c], found[c])
        for c in sorted((c for c in missing if c[0].space == "screen"), key=_order):
            ds = EvalClips(base, c[0], c[1], noise_per_person=npp)
            loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=run.cfg.optim.num_workers)
            logits = [
                _forward(run, x)[0] for x, _, _ in progress(loader, desc=f"{run.name} {describe(c[0])} seed {c[1]}")
            ]
            found[c] = {"logits": torch.cat(logits).numpy(), **meta}
            cache.put(keys[c], found[c])
    return {item: found[canon[item]] for item in items}


def _order(c: tuple[Perturbation, int | None]) -> tuple:
    return (c[0].kind, str(c[0].value), str(c[0].layer), c[0].steps, -1 if c[1] is None else c[1])


def _run_model_space(run: RunContext, base: SkeletonDataset, todo: list, batch_size: int) -> dict:
    ds = EvalClips(base, Perturbation("clean"), 0, noise_per_person=True)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=run.cfg.optim.num_workers)
    chunks: dict = {c: {} for c in todo}
    for x, _, pos in progress(loader, desc=f"{run.name}: {len(todo)} model-space evaluations"):
        for c, arrays in _model_space_batch(run, x, pos.numpy(), todo).items():
            for name, a in arrays.items():
                chunks[c].setdefault(name, []).append(a)
    return {c: {name: np.concatenate(parts) for name, parts in arrays.items()} for c, arrays in chunks.items()}


def attention_maps(run: RunContext, data: DataContext, frame_dirs: list[str], *, layer: int = -1) -> dict:
    """Clean-pass attention received per token [n, M, T, V] and logits [n, C] of a few clips (cached)."""
    key = {
        "version": CACHE_VERSION,
        "checkpoint": run.digest,
        "data": data.digest,
        "attention_of": list(frame_dirs),
        "layer": layer,
        "preprocess": to_dict(run.cfg.data),
        "device": run.device.type,
    }
    hit = run.cache.get(key)
    if hit is not None:
        return hit
    base = make_base_dataset(run, data, list(frame_dirs))
    x = torch.stack([base[i][0] for i in range(len(base))])  # [n, M, T, V, 3]
    act = token_saliency(run, x, [layer])
    result = {
        "activation": act[layer % run.model.backbone.attention_layers],
        "logits": _forward(run, x)[0].numpy(),
        "labels": np.asarray(base.labels, dtype=np.int64),
        "frame_dir": np.asarray(base.names),
    }
    run.cache.put(key, result)
    return result


def label_names_for(run: RunContext, data: DataContext) -> list[str]:
    """Class names: the checkpoint's, else the index's."""
    return list(run.label_names) if run.label_names else label_names_of(data.index)


def describe(pert: Perturbation) -> str:
    """A short human label from the spec's `label`, e.g. 'gaussian σ=0.005'."""
    fields = dict(kind=pert.kind, value=pert.value, k=int(pert.value), layer=pert.layer, steps=pert.steps)
    return pert.spec.label.format(**fields)
