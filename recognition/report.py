"""Robustness report: trained runs x pose indexes -> `OUT/{metrics.json, <section>.csv, <section>.png, report.html}`.

`python -m recognition report --runs RUN_DIR... --data INDEX... --out DIR [--config configs/report/default.yaml]`.
Sections (docs/method.md §8, laid out as the seed's tables and figures, §13.1): clean accuracy; accuracy vs Gaussian
noise σ; vs spatial-only noise σ (Figure 4, with MotionBERT-R when its run is given); vs shifted joints k in both
readings (Figure 5); targeted vs random masking (Figure 6); RISE deletion/insertion on accuracy with the attention of
three depths (Figure 1); the top confused pairs (Table 4), class-wise accuracy (Figure 3), confusion matrices
(Figure 7), t-SNE of the hidden features (Figure 8), attention over time (Figure 9); the cross-estimator table; pose
quality (Table 3) and one clip clean vs noisy (Figure 2). Every section has its CSV (a figure-only one lists the
figure's numbers).

The first `--data` index is the one every sweep uses; all of them enter the cross-estimator and pose-quality tables.
Run A is the first `--runs` entry: class-wise differences are against it. One Gaussian noise mode (the report
config's `noise_per_person`) applies to every run, and the page's header states it with the other choices that make
two reports comparable: each run's preprocessing (faithful or fixed), the precision, the seeds. Evaluations are
cached in `OUT/cache/` (`recognition.robustness`); every output is rewritten only when its bytes change, so a re-run
with nothing changed changes no file. Each section of `report.html` prints the command that regenerates its numbers
(`... --only <section>`, which rewrites only that section's CSV and figure and prints the CSV), and the page embeds
the report config and every run's config.

Where things are: rendering (CSV, PNG, `report.html`) in `recognition.report_page`; `ReportConfig` and the `Report`
helpers every section shares in `recognition.report_core`; the robustness sections in
`recognition.report_robustness`; the failure analysis in `recognition.report_failures`. This module holds the data
sections (cross-estimator, pose quality, the noisy clip), the `section` dispatcher and `run_report`, and re-exports
the names callers import from it (`__all__`).
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pipeline.config import dump_yaml, to_dict
from pipeline.schema import COCO17_JOINTS
from recognition import diagnostics as dg
from recognition import report_failures, report_robustness
from recognition.config import split_names
from recognition.data import split_frame_dirs
from recognition.perturb import gaussian_noise
from recognition.preprocess import normalize_screen
from recognition.report_core import Report, ReportConfig, _top1, model_label, preprocessing_of
from recognition.report_failures import pick_attention_clip
from recognition.report_page import Section, csv_bytes, png_bytes, pyplot, render_html, write_if_changed
from recognition.report_robustness import SWEEPS, saliency_layers_of
from recognition.robustness import DataContext, Perturbation, ResultCache, RunContext, evaluate_many
from recognition.runtime import pick_device

__all__ = [
    "SECTIONS",
    "SWEEPS",
    "Report",
    "ReportConfig",
    "model_label",
    "pick_attention_clip",
    "preprocessing_of",
    "run_report",
    "saliency_layers_of",
    "section",
]

log = logging.getLogger(__name__)

SECTIONS = (
    "accuracy",
    *SWEEPS,
    "masking",
    "deletion_insertion",
    "confusion_pairs",
    "classwise_accuracy",
    "confusion_matrices",
    "tsne",
    "attention",
    "cross_estimator",
    "pose_quality",
    "noisy_clip",
)
# fmt: off
COCO_EDGES = (
    (0, 1), (0, 2), (1, 3), (2, 4), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10), (5, 11), (6, 12), (11, 12), (11, 13),
    (13, 15), (12, 14), (14, 16),
)
# fmt: on
assert len(COCO17_JOINTS) == 17


def cross_estimator(report: Report) -> Section:
    common = set.intersection(*(set(split_frame_dirs(d.index, d.split)) for d in report.data))
    clips = [n for n in split_frame_dirs(report.main.index, report.main.split) if n in common]
    if not clips:
        raise ValueError(f"the --data indexes share no clip in split {report.main.split!r}")
    rows, metrics = [], {}
    for run in report.runs:
        accs = []
        for d in report.data:
            res = evaluate_many(
                run, d, [(Perturbation("clean"), 0)], frame_dirs=clips, batch_size=report.cfg.batch_size
            )[(Perturbation("clean"), 0)]
            accs.append(_top1(res))
        metrics[run.name] = dict(zip([d.name for d in report.data], accs))
        rows.append([run.name, *accs])
    text = (
        f"Clean top-1 of each run (rows; trained on its own poses) on each index's poses (columns), "
        f"over the {len(clips)} clips of {report.main.split} that every index holds."
    )
    if len(report.data) < 2:
        text += " Needs two or more --data indexes of the same clips (one per pose estimator) to compare them."
    return Section(
        "cross_estimator",
        "Cross-estimator accuracy (train on X, test on Y)",
        text,
        ["run", *[f"{d.name} ({_estimator(d.index)})" for d in report.data]],
        rows,
        metrics=metrics,
    )


def pose_quality(report: Report) -> Section:
    rows, metrics = [], {}
    for d in report.data:
        for split in sorted(d.index["split"]):
            q = dg.pose_quality(d.index, split_frame_dirs(d.index, split))
            metrics.setdefault(d.name, {})[split] = q
            rows.append(
                [
                    d.name,
                    _estimator(d.index),
                    split,
                    q["clips"],
                    q["person_frames"],
                    q["missing_keypoints_pct"],
                    q["missing_persons_pct"],
                    q["unknown_expected"],
                ]
            )
    return Section(
        "pose_quality",
        "Pose quality (the seed's Table 3)",
        "Missing keypoints: joints with score 0 among detected persons (a person is detected in a "
        "frame when any joint has a score > 0). Missing persons: Σ max(expected − detected, 0) over "
        "frames against the expected count (NTU: 2 for the mutual actions, 1 otherwise; other "
        "datasets: the index's metadata).",
        [
            "data",
            "estimator",
            "split",
            "clips",
            "person_frames",
            "missing_keypoints_pct",
            "missing_persons_pct",
            "clips_without_expected_count",
        ],
        rows,
        metrics=metrics,
    )


def noisy_clip(report: Report) -> Section:
    index = report.main.index
    names = split_frame_dirs(index, report.main.split)
    name = report.cfg.noisy_clip or names[0]
    rec = next((a for a in index["annotations"] if a["frame_dir"] == name), None)
    if rec is None:
        raise ValueError(f"noisy_clip {name!r} is not in {report.main.path}")
    xy = normalize_screen(rec["keypoint"], rec["img_shape"])  # [M, T, 17, 2]
    score = np.asarray(rec["keypoint_score"])
    t = xy.shape[1] // 2
    sigmas = report.cfg.noisy_clip_sigmas
    plt = pyplot()
    fig, axes = plt.subplots(1, len(sigmas), figsize=(4.2 * len(sigmas), 4.2), squeeze=False)
    pts = xy[:, t][score[:, t] > 0]
    lo, hi = pts.min(0), pts.max(0)
    pad = 0.15 * max(hi - lo)
    rows = [
        [name, int(t), 0.0, m, COCO17_JOINTS[v], float(xy[m, t, v, 0]), float(xy[m, t, v, 1])]
        for m in range(xy.shape[0])
        for v in range(xy.shape[2])
        if score[m, t, v] > 0
    ]
    for ax, sig in zip(axes[0], sigmas):
        rng = np.random.default_rng([report.cfg.seeds[0], 0])
        noisy = gaussian_noise(xy, sig, rng, per_person=report.cfg.noise_per_person)
        rows += [
            [name, int(t), sig, m, COCO17_JOINTS[v], float(noisy[m, t, v, 0]), float(noisy[m, t, v, 1])]
            for m in range(xy.shape[0])
            for v in range(xy.shape[2])
            if score[m, t, v] > 0
        ]
        for m in range(xy.shape[0]):
            for arr, color, lw in ((xy, "black", 2.0), (noisy, "crimson", 1.2)):
                for a, b in COCO_EDGES:
                    if score[m, t, a] > 0 and score[m, t, b] > 0:
                        ax.plot(arr[m, t, [a, b], 0], arr[m, t, [a, b], 1], color=color, lw=lw)
        ax.set(
            xlim=(lo[0] - pad, hi[0] + pad),
            ylim=(hi[1] + pad, lo[1] - pad),
            aspect="equal",
            title=f"σ = {sig:g}: clean (black) vs noisy (red)",
        )
        ax.tick_params(labelsize=7)
    return Section(
        "noisy_clip",
        "One clip clean vs noisy (the seed's Figure 2)",
        f"{name}, frame {t}, screen-normalised coordinates; Gaussian noise as in the σ sweep "
        f"(seed {report.cfg.seeds[0]}, {report.noise_mode}). The CSV lists the drawn joints (σ = 0: clean).",
        ["clip", "frame", "sigma", "person", "joint", "x", "y"],
        rows,
        png_bytes(fig),
        {"clip": name, "frame": int(t)},
        html_rows=10,
    )


def _estimator(index: dict) -> str:
    anns = index.get("annotations") or [{}]
    est = anns[0].get("estimator")
    return str(est.get("name")) if isinstance(est, dict) and est.get("name") else "unknown"


# section name -> the function that computes it from a Report; every sweep section is `report_robustness.sweep`
SECTION_FUNCTIONS: dict[str, Callable[[Report], Section]] = {
    "accuracy": report_robustness.accuracy,
    "masking": report_robustness.masking,
    "deletion_insertion": report_robustness.deletion_insertion,
    "confusion_pairs": report_failures.confusion_pairs,
    "classwise_accuracy": report_failures.classwise_accuracy,
    "confusion_matrices": report_failures.confusion_matrices,
    "tsne": report_failures.tsne,
    "attention": report_failures.attention,
    "cross_estimator": cross_estimator,
    "pose_quality": pose_quality,
    "noisy_clip": noisy_clip,
}
assert set(SECTIONS) == {*SWEEPS, *SECTION_FUNCTIONS}


def section(report: Report, name: str) -> Section:
    """The Section `name` (one of `SECTIONS`) of the report, its evaluations via the cache."""
    if name not in SECTIONS:
        raise ValueError(f"unknown report section {name!r}; valid: {', '.join(SECTIONS)}")
    log.info("section %s", name)
    if name in SWEEPS:
        return report_robustness.sweep(report, name)
    return SECTION_FUNCTIONS[name](report)


@torch.no_grad()  # a scope, not a global set_grad_enabled(False): the caller keeps its gradients
def run_report(
    *,
    runs: list[str | Path],
    data: list[str | Path],
    out: str | Path,
    cfg: ReportConfig,
    command: list[str],
    split: str | None = None,
    device: str = "auto",
    only: list[str] | None = None,
) -> dict:
    """Build the report (or only the named sections) and write its files; returns the metrics.

    Args:
        runs: run directories (their best.pt) or checkpoint files; the first is run A.
        data: dataset indexes; the first is the one the sweeps use.
        command: the command line to print as the way to regenerate (without `--only`).
        split: the evaluation split (default: `<the runs' training split>_val`).
        only: section names; when given, writes only their CSV/PNG (no metrics.json, no report.html).
    """
    bad = [n for n in only or () if n not in SECTIONS]
    if bad:
        raise ValueError(f"unknown report section(s) {bad}; valid: {', '.join(SECTIONS)}")
    out = Path(out)
    dev = pick_device(device)
    cache = ResultCache(out / "cache")
    contexts = []
    for r in runs:
        p = Path(r)
        ck = p / "best.pt" if p.is_dir() else p
        name = p.name if p.is_dir() else f"{p.parent.name}/{p.stem}"
        if name in {c.name for c in contexts}:
            name = f"{name}#{len(contexts)}"
        contexts.append(RunContext(ck, name=name, device=dev, cache=cache))
    if split is None:
        fams = {c.split for c in contexts}
        if len(fams) != 1 or None in fams:
            raise ValueError(
                f"the runs were trained on different or unknown splits {sorted(map(str, fams))}; pass --split"
            )
        split = split_names(fams.pop())[1]
    datas = [DataContext(d, split=split, cache=cache) for d in data]
    report = Report(runs=contexts, data=datas, cfg=cfg, command=command)
    names = list(only) if only else list(SECTIONS)
    sections = [section(report, n) for n in names]
    written = []
    for s in sections:
        if s.rows is not None:
            data_bytes = csv_bytes(s)
            if write_if_changed(out / f"{s.name}.csv", data_bytes):
                written.append(f"{s.name}.csv")
            if only:
                print(data_bytes.decode(), end="")
        if s.figure is not None and write_if_changed(out / f"{s.name}.png", s.figure):
            written.append(f"{s.name}.png")
    metrics = {
        "sections": {s.name: s.metrics for s in sections},
        "split": split,
        "runs": [r.name for r in contexts],
        "models": report.labels,
        "choices": report.choices(),
        "data": [str(d) for d in data],
    }
    if not only:
        cfg_yaml = dump_yaml(to_dict(cfg))
        metrics["config"] = to_dict(cfg)
        metrics["command"] = shlex.join(command)
        if write_if_changed(out / "metrics.json", (json.dumps(metrics, indent=1, sort_keys=True) + "\n").encode()):
            written.append("metrics.json")
        if write_if_changed(out / "report.html", render_html(report, sections, cfg_yaml).encode()):
            written.append("report.html")
    log.info(
        "report %s: %d evaluations cached, %d computed; files changed: %s",
        out,
        cache.hits,
        cache.misses,
        ", ".join(written) or "none",
    )
    return metrics
