"""Evaluation: checkpoint + dataset index + split -> `OUT/{metrics.json, confusion.csv, predictions.npz}`.

MotionBERT's test protocol: one deterministic clip per sample (test resampling, crop scale 2),
no test-time augmentation. Optional Gaussian noise (docs/method.md §8(a)) with `noise_sigma`.
`predictions.npz` holds `frame_dir`, `label`, `logits` (float32 [N, C]) and `features`
([N, hidden], the head's 2048-d hidden h).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from pipeline.atomic import atomic_write_bytes, atomic_write_text
from pipeline.config import from_dict
from pipeline.progress import progress
from pipeline.store import open_dataset
from recognition import diagnostics as dg
from recognition.checkpoint import build_model_from_checkpoint
from recognition.config import TrainConfig, resolve
from recognition.data import label_names_of, make_dataset, require_clips
from recognition.preprocess import describe_preprocessing, faithful_options, fixed_options
from recognition.runtime import pick_device

log = logging.getLogger(__name__)


PREPROCESSING = ("auto", "fixed", "faithful")


def eval_config(ck: dict, *, faithful: bool | None, preprocessing: str = "auto") -> TrainConfig:
    """The run config to evaluate a checkpoint with, resolved.

    Ours: the run config it stores (`faithful` overrides its switch). A foreign checkpoint (MotionBERT's or
    MaskCLR's, no run config): defaults at its maxlen, and with `preprocessing="auto"` the data pipeline of the code
    that wrote it, i.e. the official test-time switches F3 and F4 (docs/method.md §10). `fixed` / `faithful` force
    the data switches either way, for any checkpoint.
    """
    if preprocessing not in PREPROCESSING:
        raise ValueError(f"preprocessing must be one of {PREPROCESSING}, got {preprocessing!r}")
    ours = bool(ck.get("run_config"))
    if ours:
        cfg = from_dict(TrainConfig, ck["run_config"])
    else:
        maxlen = ck["model_config"]["maxlen"]
        cfg = TrainConfig(data=dataclasses.replace(TrainConfig().data, clip_len=maxlen))
    if faithful is not None:
        cfg = dataclasses.replace(cfg, faithful=faithful)
    cfg = resolve(cfg)
    if preprocessing == "auto" and not ours and faithful is None:
        preprocessing = "faithful"
    if preprocessing == "faithful":
        cfg = dataclasses.replace(cfg, data=faithful_options(cfg.data))
    elif preprocessing == "fixed":
        cfg = dataclasses.replace(cfg, data=fixed_options(cfg.data))
    return cfg


@torch.no_grad()
def predict_dataset(model, loader, device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits [N, C] float32, features [N, H] float32 and labels [N] over a loader."""
    logits, feats, labels = [], [], []
    for x, y in progress(loader, desc="evaluate"):
        out = model(x.to(device))  # float32 on every device (docs/method.md §7.4)
        logits.append(out.logits.float().cpu())
        feats.append(out.features.float().cpu())
        labels.append(y)
    return (torch.cat(logits).numpy(), torch.cat(feats).numpy(), torch.cat(labels).numpy())


def accuracy_report(logits: np.ndarray, labels: np.ndarray, names: list[str]) -> tuple[dict, np.ndarray]:
    """Top-1/top-5, per-class accuracy and the confusion matrix [C, C] (rows = true)."""
    c = logits.shape[1]
    conf = dg.confusion_matrix(labels, logits.argmax(1), c)
    per_class = {name: None if np.isnan(acc) else float(acc) for name, acc in zip(names, dg.class_accuracy(conf))}
    metrics = {
        "top1": dg.topk_accuracy(logits, labels, 1),
        "top5": dg.topk_accuracy(logits, labels, 5),
        "n": int(len(labels)),
        "num_classes": int(c),
        "per_class_accuracy": per_class,
    }
    return metrics, conf


def run_evaluate(
    *,
    checkpoint: str | Path,
    data: str | Path,
    split: str,
    out: str | Path,
    device: str = "auto",
    noise_sigma: float = 0.0,
    faithful: bool | None = None,
    batch_size: int = 32,
    allow_pickle: bool = False,
    preprocessing: str = "auto",
) -> dict:
    """Evaluate and write the files; returns metrics. `preprocessing`: see `eval_config` (stated in metrics.json)."""
    dev = pick_device(device)
    model, ck = build_model_from_checkpoint(checkpoint, allow_pickle=allow_pickle)
    model.to(dev)
    cfg = eval_config(ck, faithful=faithful, preprocessing=preprocessing)
    prep = describe_preprocessing(cfg.data)
    origin = "our run config" if ck.get("run_config") else "a foreign checkpoint: the code that wrote it"
    log.info("preprocessing: %s (%s)", prep, origin if preprocessing == "auto" else f"--preprocessing {preprocessing}")
    index = open_dataset(data)
    names = ck.get("label_names") or label_names_of(index)
    num_classes = ck["model_config"]["num_classes"]
    if len(names) != num_classes:
        raise ValueError(f"{checkpoint}: model has {num_classes} classes but the labels name {len(names)}")
    ds = make_dataset(cfg, index, split, train=False, num_classes=num_classes, noise_sigma=noise_sigma, source=data)
    require_clips(ds, split, data, usable="clips to evaluate")
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=cfg.optim.num_workers)
    logits, feats, labels = predict_dataset(model, loader, dev)
    metrics, conf = accuracy_report(logits, labels, names)
    metrics.update(
        checkpoint=str(checkpoint),
        data=str(data),
        split=split,
        noise_sigma=noise_sigma,
        faithful=cfg.faithful,
        preprocessing=prep,
        skipped=ds.skipped,
    )
    out = Path(out)
    buf = io.BytesIO()
    np.savez(
        buf,
        frame_dir=np.array(ds.names),
        label=labels.astype(np.int64),
        logits=logits.astype(np.float32),
        features=feats.astype(np.float32),
    )
    atomic_write_bytes(out / "predictions.npz", buf.getvalue())
    header = "true\\pred," + ",".join(names)
    rows = [f"{names[i]}," + ",".join(str(v) for v in conf[i]) for i in range(num_classes)]
    atomic_write_text(out / "confusion.csv", "\n".join([header, *rows]) + "\n")
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    log.info(
        "%s on %s: top-1 %.2f top-5 %.2f (n=%d)", checkpoint, split, metrics["top1"], metrics["top5"], metrics["n"]
    )
    return metrics
