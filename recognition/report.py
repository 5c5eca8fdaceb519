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
the report config and every run's config. Rendering (CSV, PNG, `report.html`) is in `recognition.report_page`; this
module computes the sections.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.config import dump_yaml, to_dict
from pipeline.schema import COCO17_JOINTS
from recognition import diagnostics as dg
from recognition.config import split_names
from recognition.data import split_frame_dirs
from recognition.perturb import PERTURBATIONS, gaussian_noise
from recognition.preprocess import describe_preprocessing, normalize_screen
from recognition.report_page import Section, csv_bytes, png_bytes, pyplot, render_html, write_if_changed
from recognition.robustness import (
    DataContext,
    Perturbation,
    ResultCache,
    RunContext,
    attention_maps,
    evaluate_many,
    label_names_for,
)
from recognition.runtime import pick_device

log = logging.getLogger(__name__)

# section -> its perturbations (several: labelled variants of one figure), for every perturbation with a report sweep
# (`perturb.ReportSweep`), in the table's order
SWEEPS: dict[str, tuple[str, ...]] = {}
for _kind, _spec in PERTURBATIONS.items():
    if _spec.sweep is not None:
        SWEEPS[_spec.sweep.section] = (*SWEEPS.get(_spec.sweep.section, ()), _kind)
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
H36M_JOINTS = (
    "root", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "belly", "neck", "nose", "head",
    "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist",
)
COCO_EDGES = (
    (0, 1), (0, 2), (1, 3), (2, 4), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10), (5, 11), (6, 12), (11, 12), (11, 13),
    (13, 15), (12, 14), (14, 16),
)
# fmt: on
assert len(COCO17_JOINTS) == 17
ATTENTION_CLASS = "drink water"  # the seed's Figure 9 shows a clip of this NTU class
MIN_SEEDS = 3  # docs/method.md §8(j): at least 3 noise seeds per point


@dataclass(frozen=True)
class ReportConfig:
    """What the report sweeps; YAML in `configs/report/` lists what differs.

    Attributes:
        seeds: seeds of every random perturbation; tables give the mean and std over them (docs/method.md §8(j):
            at least 3).
        sigmas: Gaussian noise levels (docs/method.md §8(a)), screen-normalised units.
        spatial_sigmas: spatial-only noise levels (§8(b)).
        shift_ks: numbers of shifted joints (§8(c)); k = 0 (clean) is added.
        mask_ks: joints masked per frame, targeted and random (§8(d)).
        noise_per_person: the one Gaussian noise mode of the report, applied to every run: independent per person
            (True) or the official broadcast of one draw to both persons (False, switch F6).
        classwise_sigma: the σ of the class-wise accuracy (the seed's Figure 3: 0.002).
        failure_sigma: the σ of the confusion matrices and of the noisy blocks of Table 4 (the seed's: 0.005).
        top_pairs: k of the top-k confusion pairs.
        rise_steps: deletion/insertion steps n (the curve has n + 1 points).
        rise_clips: deletion/insertion on at most this many clips (a fixed random subset); 0: every clip.
        sweep_clips: the model-space sweeps (shifted joints, masking) on at most this many clips (a fixed random
            subset, the same for every run; their k = 0 point is the clean accuracy of that subset); 0: every clip.
        saliency_layers: layers whose spatial attention gives the deletion/insertion saliency (Python-style indices);
            empty: the first, the middle and the last of those the backbone serves (`attention_layers`).
        rise_random_baseline: also draw the curves with a random token order.
        tsne_points: at most this many clips in the t-SNE (a fixed random subset, the same for every run).
        tsne_perplexity: t-SNE perplexity.
        attention_clip: the clip of the attention figure; empty: chosen by the rule of `Report.attention_clip`.
        noisy_clip: the clip of the clean-vs-noisy figure; empty: the split's first.
        noisy_clip_sigmas: its noise levels (the seed's Figure 2: 0.002 and 0.005).
        batch_size: evaluation batch size.
        seed: seed of the t-SNE and of the clip subsets.
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    sigmas: tuple[float, ...] = (0.0, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1)
    spatial_sigmas: tuple[float, ...] = (0.0, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1)
    shift_ks: tuple[int, ...] = (1, 3, 5, 10)
    mask_ks: tuple[int, ...] = tuple(range(18))
    noise_per_person: bool = True
    classwise_sigma: float = 0.002
    failure_sigma: float = 0.005
    top_pairs: int = 5
    rise_steps: int = 16
    rise_clips: int = 0
    sweep_clips: int = 0
    saliency_layers: tuple[int, ...] = ()
    rise_random_baseline: bool = True
    tsne_points: int = 1000
    tsne_perplexity: float = 30.0
    attention_clip: str = ""
    noisy_clip: str = ""
    noisy_clip_sigmas: tuple[float, ...] = (0.002, 0.005)
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must list at least one seed, each once, got {self.seeds}")
        levels = (*self.sigmas, *self.spatial_sigmas, self.classwise_sigma, self.failure_sigma, *self.noisy_clip_sigmas)
        if any(s < 0 for s in levels):
            raise ValueError("noise levels must be >= 0")
        if any(not 0 <= k <= 17 for k in (*self.shift_ks, *self.mask_ks)):
            raise ValueError("shift_ks and mask_ks must lie in [0, 17]")
        if len(self.mask_ks) < 2 or list(self.mask_ks) != sorted(set(self.mask_ks)):
            raise ValueError(f"mask_ks must be increasing with at least 2 values, got {self.mask_ks}")
        if (
            self.rise_steps < 1
            or self.top_pairs < 1
            or self.batch_size < 1
            or min(self.rise_clips, self.sweep_clips) < 0
        ):
            raise ValueError("rise_steps, top_pairs and batch_size must be >= 1, rise_clips and sweep_clips >= 0")


def _top1(res: dict) -> float:
    return dg.topk_accuracy(res["logits"], res["labels"], 1)


def _prob_of(res: dict, cls: np.ndarray) -> float:
    z = res["logits"] - res["logits"].max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return float(np.mean(p[np.arange(len(cls)), cls]))


def model_label(run: RunContext) -> str:
    """What a run is, in the seed's names: MaskCLR, MotionBERT-R (`random_mask.ratio > 0`, docs/method.md §7.5) or
    the MotionBERT baseline, with the backbone when it is not DSTFormer; an official checkpoint says so."""
    if not run.run_config:
        return "official checkpoint"
    cfg = run.cfg
    name = "MaskCLR" if cfg.maskclr.enabled else "MotionBERT-R" if cfg.random_mask.ratio > 0 else "MotionBERT"
    return name if cfg.model.backbone == "dstformer" else f"{name} ({cfg.model.backbone})"


def preprocessing_of(run: RunContext) -> str:
    """ "faithful" (the official F3/F4 test-time switches), "fixed" or "mixed (...)", as the run is evaluated."""
    return describe_preprocessing(run.cfg.data)


def saliency_layers_of(run: RunContext, wanted: tuple[int, ...]) -> list[tuple[int, str]]:
    """(layer index, label) of the deletion/insertion saliency: `wanted`, else the first, middle and last layer."""
    depth = run.model.backbone.attention_layers
    if depth == 1:
        return [(0, "attention, last block (the only layer this backbone serves)")]
    if wanted:
        bad = [w for w in wanted if not -depth <= w < depth]
        if bad:
            raise ValueError(f"saliency_layers {bad} out of range for {run.name}, whose backbone serves {depth} layers")
        layers = sorted({w % depth for w in wanted})
    else:
        layers = sorted({0, (depth - 1) // 2, depth - 1})
    where = {depth - 1: " (last)", (depth - 1) // 2: " (middle)", 0: " (first)"}  # later keys win: depth 2
    return [(i, f"attention, block {i + 1} of {depth}{where.get(i, '')}") for i in layers]


def pick_attention_clip(
    labels: np.ndarray, frame_dirs: np.ndarray, label_names: list[str], *, split: str
) -> tuple[str, str]:
    """The clip of the attention figure (the seed's Figure 9, a "drink water" clip) and the rule that chose it.

    The first clip (in split order) of the first class whose name reads "drink water" (case, underscores and
    punctuation ignored: NTU's A001 "drink water."), else the first clip of the split's most frequent class (ties: the
    lower class index).
    """

    def norm(name: str) -> str:
        return " ".join(re.sub(r"[^a-z0-9]+", " ", name.lower()).split())

    labels = np.asarray(labels)
    drink = [c for c, n in enumerate(label_names) if ATTENTION_CLASS in norm(n) and np.any(labels == c)]
    if drink:
        cls = drink[0]
        rule = f"the first {split} clip of class {label_names[cls]!r}, named like {ATTENTION_CLASS!r}"
    else:
        cls = int(np.argmax(np.bincount(labels, minlength=len(label_names))))
        rule = (
            f"no class is named like {ATTENTION_CLASS!r}: the first {split} clip of the most frequent class, "
            f"{label_names[cls]!r}"
        )
    return str(frame_dirs[np.flatnonzero(labels == cls)[0]]), rule


class Report:
    """Runs, data and config of one report; `section(name)` computes a Section (evaluations via the cache)."""

    def __init__(self, *, runs: list[RunContext], data: list[DataContext], cfg: ReportConfig, command: list[str]):
        self.runs, self.data, self.cfg, self.command = runs, data, cfg, command
        self.main = data[0]
        names = {tuple(label_names_for(r, self.main)) for r in runs}
        if len(names) != 1:
            raise ValueError(f"the runs have different class lists: {sorted(names)}")
        self.label_names = list(names.pop())
        self.labels = {r.name: model_label(r) for r in runs}
        if len(self.cfg.seeds) < MIN_SEEDS:
            log.warning("%d noise seed(s); docs/method.md §8(j) asks for at least %d", len(cfg.seeds), MIN_SEEDS)

    # -- helpers -------------------------------------------------------------------------------------------------
    def reproduce(self, name: str) -> str:
        return shlex.join([*self.command, "--only", name])

    def display(self, run: RunContext) -> str:
        """A run's name in legends and titles: its model (MaskCLR, MotionBERT-R, ...) and its name."""
        return f"{self.labels[run.name]}: {run.name}"

    @property
    def noise_mode(self) -> str:
        if self.cfg.noise_per_person:
            return "independent per person"
        return "one draw broadcast to both persons (F6, the official code's)"

    def choices(self) -> dict[str, str]:
        """What a reader needs to compare two reports: preprocessing per run, noise mode, precision, seeds."""
        seeds = self.cfg.seeds
        out = {
            f"run {r.name}": f"{self.labels[r.name]}; {preprocessing_of(r)} preprocessing (faithful: "
            f"{str(r.cfg.faithful).lower()}, data.conf_order {r.cfg.data.conf_order}, data.track_swaps_conf "
            f"{str(r.cfg.data.track_swaps_conf).lower()}; docs/method.md §10 F3, F4)"
            + (
                f"; its own noise_per_person is {str(r.cfg.noise_per_person).lower()}, the report's mode applies"
                if r.cfg.noise_per_person != self.cfg.noise_per_person
                else ""
            )
            for r in self.runs
        }
        out["Gaussian noise mode"] = (
            f"{self.noise_mode}, the same for every run (noise_per_person: {str(self.cfg.noise_per_person).lower()}; "
            "spatial-only noise is always independent per person)"
        )
        out["precision"] = f"float32 on every device, no autocast (device: {self.runs[0].device.type})"
        out["seeds"] = (
            f"{', '.join(map(str, seeds))}: every random perturbation is the mean ± std over these {len(seeds)} seeds"
            + (f" (fewer than the {MIN_SEEDS} of docs/method.md §8(j))" if len(seeds) < MIN_SEEDS else "")
        )
        out["noise levels of the failure analysis"] = (
            f"class-wise accuracy at σ = {self.cfg.classwise_sigma:g}; confusion matrices and the noisy blocks of "
            f"Table 4 at σ = {self.cfg.failure_sigma:g}"
        )
        return out

    def evaluate_command(self, run: RunContext, out: str, *extra: str) -> str:
        """The `python -m recognition evaluate` command of a run on the swept data."""
        argv = ["python", "-m", "recognition", "evaluate", "--checkpoint", str(run.checkpoint)]
        return shlex.join([*argv, "--data", str(self.main.path), "--split", self.main.split, "--out", out, *extra])

    def eval(self, run: RunContext, items: list[tuple[Perturbation, int]], **kw) -> dict:
        return evaluate_many(
            run, self.main, items, batch_size=self.cfg.batch_size, noise_per_person=self.cfg.noise_per_person, **kw
        )

    def clean(self, run: RunContext) -> dict:
        return self.eval(run, [(Perturbation("clean"), 0)])[(Perturbation("clean"), 0)]

    def noisy(self, run: RunContext, sigma: float) -> list[dict]:
        """The Gaussian-noise results at sigma, one per seed."""
        items = [(Perturbation("gaussian", sigma), s) for s in self.cfg.seeds]
        res = self.eval(run, items)
        return [res[i] for i in items]

    def subset(self, n: int) -> list[str] | None:
        """At most n clips of the swept split, a fixed random subset in split order (`seed`); None: all of them."""
        clips = split_frame_dirs(self.main.index, self.main.split)
        if not 0 < n < len(clips):
            return None
        pick = np.sort(np.random.default_rng(self.cfg.seed).permutation(len(clips))[:n])
        return [clips[i] for i in pick]

    def subset_note(self, clips: list[str] | None) -> str:
        if clips is None:
            return ""
        return f" On a fixed random subset of {len(clips)} clips (sweep_clips; k = 0 is its clean accuracy)."

    def seeded_sweep(self, kinds: tuple[str, ...], values: list[float], frame_dirs: list[str] | None = None) -> dict:
        """{run: {kind: {value: {top1_mean, top1_std, top1_per_seed}}}} of seeded perturbations, one eval per run."""
        metrics = {}
        for run in self.runs:
            items = [(Perturbation(kind, v), s) for kind in kinds for v in values for s in self.cfg.seeds]
            res = self.eval(run, items, frame_dirs=frame_dirs)
            for kind in kinds:
                for v in values:
                    accs = [_top1(res[(Perturbation(kind, v), s)]) for s in self.cfg.seeds]
                    metrics.setdefault(run.name, {}).setdefault(kind, {})[f"{v:g}"] = {
                        "top1_mean": float(np.mean(accs)),
                        "top1_std": float(np.std(accs)),
                        "top1_per_seed": dict(zip(map(str, self.cfg.seeds), accs)),
                    }
        return metrics

    def curve_figure(self, xs: list, metrics: dict, kinds: tuple[str, ...], *, sweep, ylabel: str) -> bytes:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6.8, 4.0))
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        pos = np.arange(len(xs)) if sweep.categorical else np.asarray(xs, dtype=float)
        for ri, run in enumerate(self.runs):
            for ki, kind in enumerate(kinds):
                m = metrics[run.name][kind]
                mean = np.array([m[f"{v:g}"]["top1_mean"] for v in xs])
                std = np.array([m[f"{v:g}"]["top1_std"] for v in xs])
                variant = PERTURBATIONS[kind].sweep.variant
                ax.errorbar(
                    pos,
                    mean,
                    yerr=std if len(self.cfg.seeds) > 1 else None,
                    marker="os^v"[ki % 4],
                    ls=("-", "--", "-.", ":")[ki % 4],
                    capsize=3,
                    color=colors[ri % len(colors)],
                    label=self.display(run) + (f", {variant}" if len(kinds) > 1 else ""),
                )
        if sweep.categorical:
            ax.set_xticks(pos, [f"{v:g}" for v in xs])
        ax.set(xlabel=sweep.xlabel, ylabel=ylabel, title=sweep.title, ylim=(0, 100))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        return png_bytes(fig)

    # -- sections ------------------------------------------------------------------------------------------------
    def section(self, name: str) -> Section:
        if name not in SECTIONS:
            raise ValueError(f"unknown report section {name!r}; valid: {', '.join(SECTIONS)}")
        log.info("section %s", name)
        if name in SWEEPS:
            return self._sweep(name)
        return getattr(self, f"_{name}")()

    def _accuracy(self) -> Section:
        rows, metrics = [], {}
        for run in self.runs:
            res = self.clean(run)
            t5 = dg.topk_accuracy(res["logits"], res["labels"], 5)
            metrics[run.name] = {
                "model": self.labels[run.name],
                "top1": _top1(res),
                "top5": t5,
                "n": int(len(res["labels"])),
                "checkpoint": str(run.checkpoint),
                "sha256": run.digest,
                "faithful": run.cfg.faithful,
                "preprocessing": preprocessing_of(run),
            }
            rows.append(
                [
                    run.name,
                    self.labels[run.name],
                    str(run.checkpoint),
                    run.digest[:12],
                    run.cfg.faithful,
                    preprocessing_of(run),
                    self.main.split,
                    len(res["labels"]),
                    _top1(res),
                    t5,
                ]
            )
        notes = [self.evaluate_command(r, f"eval_{r.name}") for r in self.runs]
        return Section(
            "accuracy",
            "Clean accuracy",
            "One deterministic clip per sample (docs/method.md §8). `evaluate` gives the same top-1:",
            ["run", "model", "checkpoint", "sha256", "faithful", "preprocessing", "split", "n", "top1", "top5"],
            rows,
            metrics=metrics,
            notes=notes,
        )

    def _sweep(self, section: str) -> Section:
        """Accuracy vs the value of the perturbation(s) of a report sweep, over its `ReportConfig` grid and the seeds.

        A section of several perturbations (the two readings of shifted joints) has a `variant` column.
        """
        kinds = SWEEPS[section]
        spec = PERTURBATIONS[kinds[0]]
        sweep, grid = spec.sweep, getattr(self.cfg, spec.sweep.grid)
        xs = sorted({spec.identity, *grid}) if sweep.with_identity else sorted(set(grid))
        clips = self.subset(self.cfg.sweep_clips) if spec.space == "model" else None
        raw = self.seeded_sweep(kinds, xs, clips)  # {run: {kind: {value: ...}}}
        many = len(kinds) > 1
        rows = [
            [
                run.name,
                *([PERTURBATIONS[kind].sweep.variant] if many else []),
                f"{v:g}",
                (m := raw[run.name][kind][f"{v:g}"])["top1_mean"],
                m["top1_std"],
                *m["top1_per_seed"].values(),
            ]
            for run in self.runs
            for kind in kinds
            for v in xs
        ]
        text = sweep.text
        if spec.noise_mode:
            text += f" Noise mode, every run: {self.noise_mode}."
        if section == "spatial_noise":
            mbr = [r.name for r in self.runs if self.labels[r.name].startswith("MotionBERT-R")]
            text += (
                f" MotionBERT-R: {', '.join(mbr)}."
                if mbr
                else " No MotionBERT-R run given (a run whose config has random_mask.ratio > 0, docs/method.md §7.5); "
                "pass one with --runs to add its curve."
            )
        text += f" Mean ± std over seeds {', '.join(map(str, self.cfg.seeds))}." + self.subset_note(clips)
        # {run: {value: ...}}, or {run: {variant: {value: ...}}} for a section of several perturbations
        metrics = {
            name: {PERTURBATIONS[k].sweep.variant: per[k] for k in kinds} if many else per[kinds[0]]
            for name, per in raw.items()
        }
        return Section(
            sweep.section,
            sweep.heading,
            text,
            [
                "run",
                *(["variant"] if many else []),
                sweep.column,
                "top1_mean",
                "top1_std",
                *[f"top1_seed{s}" for s in self.cfg.seeds],
            ],
            rows,
            self.curve_figure(xs, raw, kinds, sweep=sweep, ylabel="top-1 accuracy (%)"),
            metrics,
            self.evaluate_notes(xs) if spec.via_preprocess else [],
        )

    def evaluate_notes(self, sigmas: list[float]) -> list[str]:
        """The `evaluate --noise-sigma` commands that give the Gaussian noise rows of the runs' own seeds."""
        notes = []
        for run in self.runs:
            if run.cfg.seed in self.cfg.seeds and self.cfg.noise_per_person == run.cfg.noise_per_person:
                sig = self.cfg.failure_sigma if self.cfg.failure_sigma in sigmas else sigmas[-1]
                notes.append(
                    f"{run.name}, seed {run.cfg.seed} (the run's seed), any σ, e.g. {sig:g}: "
                    + self.evaluate_command(run, f"eval_{run.name}_sigma{sig:g}", "--noise-sigma", f"{sig:g}")
                )
        return notes

    def _masking(self) -> Section:
        ks, seeds, clips = list(self.cfg.mask_ks), self.cfg.seeds, self.subset(self.cfg.sweep_clips)
        rows, metrics = [], {}
        plt = pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for ri, run in enumerate(self.runs):
            items = [(Perturbation("mask_targeted", k), 0) for k in ks]
            items += [(Perturbation("mask_random", k), s) for k in ks for s in seeds]
            res = self.eval(run, [(Perturbation("clean"), 0), *items], frame_dirs=clips)
            pred = res[(Perturbation("clean"), 0)]["logits"].argmax(1)
            m = metrics[run.name] = {"targeted": {}, "random": {}}
            for k in ks:
                t = res[(Perturbation("mask_targeted", k), 0)]
                rnd = [res[(Perturbation("mask_random", k), s)] for s in seeds]
                m["targeted"][str(k)] = {"top1": _top1(t), "top1_std": 0.0, "prob": _prob_of(t, pred)}
                m["random"][str(k)] = {
                    "top1": float(np.mean([_top1(r) for r in rnd])),
                    "top1_std": float(np.std([_top1(r) for r in rnd])),
                    "prob": float(np.mean([_prob_of(r, pred) for r in rnd])),
                }
            for method in ("targeted", "random"):
                curve = m[method]
                for k in ks:
                    c = curve[str(k)]
                    rows.append(
                        [run.name, method, k, c["top1"], c["top1_std"] if method == "random" else None, c["prob"]]
                    )
                auc = {q: dg.curve_auc(ks, [curve[str(k)][q] for k in ks]) for q in ("top1", "prob")}
                m[f"{method}_auc"] = auc
                rows.append([run.name, method, "AUC", auc["top1"], None, auc["prob"]])
                style = "-" if method == "targeted" else ":"
                for ax, q in zip(axes, ("top1", "prob")):
                    ax.plot(
                        ks,
                        [curve[str(k)][q] for k in ks],
                        style,
                        marker="o",
                        ms=3,
                        color=colors[ri % len(colors)],
                        label=f"{self.display(run)}, {method}",
                    )
        axes[0].set(xlabel="masked joints per frame k", ylabel="top-1 accuracy (%)", ylim=(0, 100))
        axes[1].set(xlabel="masked joints per frame k", ylabel="p(clean prediction), per clip", ylim=(0, 1))
        axes[0].set_title("accuracy (the seed's Figure 6)", fontsize=9)
        axes[1].set_title("probability variant", fontsize=9)
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        aucs = "; ".join(f"{r.name}: {metrics[r.name]['targeted_auc']['top1']:.2f}" for r in self.runs)
        return Section(
            "masking",
            "Targeted vs random masking (the seed's Figure 6)",
            "Zero (x, y, conf) of the k joints per frame that receive the most last-layer attention in the "
            "clean pass (targeted) or of k random joints (random, mean ± std over the seeds), in model-input space, "
            "real persons only: the padded second person of a one-person clip is never masked (docs/method.md §8 d). "
            "top1 is the accuracy (%), the seed's measure; prob, the mean softmax probability of the "
            "clean-predicted class, is the probability variant. The rows k = AUC give the normalised area under "
            f"each curve over k (RISE formula, trapezoid); targeted deletion AUC on accuracy: {aucs}."
            + self.subset_note(clips),
            ["run", "method", "k", "top1", "top1_std", "prob"],
            rows,
            png_bytes(fig),
            metrics,
        )

    def _deletion_insertion(self) -> Section:
        steps, cfg = self.cfg.rise_steps, self.cfg
        clips = self.subset(cfg.rise_clips) or split_frame_dirs(self.main.index, self.main.split)
        rows, metrics = [], {"clips": len(clips)}
        plt = pyplot()
        fig, axes = plt.subplots(2, 2, figsize=(11, 7.2), layout="constrained")
        frac = np.linspace(0, 1, steps + 1)
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for ri, run in enumerate(self.runs):
            sources: list[tuple[int | str, str]] = saliency_layers_of(run, cfg.saliency_layers)
            if cfg.rise_random_baseline:
                sources.append(("random", "random order"))
            items = [
                (Perturbation(kind, layer=src, steps=steps), 0)
                for src, _ in sources
                for kind in ("deletion", "insertion")
            ]
            res = self.eval(run, items, frame_dirs=clips)
            metrics[run.name] = {}
            for si, (src, label) in enumerate(sources):
                dele = res[(Perturbation("deletion", layer=src, steps=steps), 0)]
                ins = res[(Perturbation("insertion", layer=src, steps=steps), 0)]
                curves = {
                    "accuracy": [100.0 * np.mean(r["pred"] == r["labels"][:, None], axis=0) for r in (dele, ins)],
                    "probability": [r["curve"].mean(0) for r in (dele, ins)],
                }
                entry = metrics[run.name][str(src)] = {"label": label}
                for score, (d, i) in curves.items():
                    entry[score] = {
                        "deletion_auc": dg.rise_auc(d),
                        "insertion_auc": dg.rise_auc(i),
                        "deletion_curve": [float(v) for v in d],
                        "insertion_curve": [float(v) for v in i],
                    }
                    rows.append([run.name, label, score, entry[score]["deletion_auc"], entry[score]["insertion_auc"]])
                style = ":" if src == "random" else ("-", "--", "-.")[si % 3]
                for row, score in enumerate(("accuracy", "probability")):
                    for col in range(2):
                        axes[row][col].plot(
                            frac,
                            curves[score][col],
                            style,
                            color=colors[ri % len(colors)],
                            label=f"{self.display(run)}, {label}",
                        )
        for col, what in enumerate(("deletion (lower is better)", "insertion from zeros (higher is better)")):
            axes[0][col].set(
                title=f"{what}: accuracy (the seed's Figure 1)", ylabel="top-1 accuracy (%)", ylim=(0, 100)
            )
            axes[1][col].set(
                title=f"{what}: probability variant (RISE's)",
                ylabel="p(clean prediction), per clip",
                ylim=(0, 1),
                xlabel=f"fraction of the real persons' tokens {'zeroed' if col == 0 else 'inserted'}",
            )
        for ax in axes.ravel():
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
        return Section(
            "deletion_insertion",
            "RISE deletion and insertion with attention saliency (the seed's Figure 1)",
            f"Units are the (person, frame, joint) tokens of the real persons (a slot with any non-zero "
            f"confidence: the padded second person of a one-person clip is never a unit), ordered by the attention "
            f"they receive in the clean pass at three depths (first, middle and last block the backbone serves; a "
            f"backbone that serves only its last block shows that one, labelled); {steps} steps over {len(clips)} "
            f"clips. Deletion zeroes the first round(i/n·units) tokens; insertion keeps only them, from the input "
            f"whose real persons are zeroed. Score s_i: top-1 accuracy (%) of the clips after step i (the seed's "
            f"measure, §4 and §7.3), and, labelled as such, the probability variant: the mean softmax probability "
            f"of the clean-predicted class. AUC = (Σ s_i − s_0/2 − s_n/2) / n (docs/method.md §8 e).",
            ["run", "saliency", "score", "deletion_auc", "insertion_auc"],
            rows,
            png_bytes(fig),
            metrics,
        )

    def _conditions(self, sigma: float) -> dict[str, dict[str, list[dict]]]:
        """{condition: {run: results}}: the clean pass, and Gaussian noise at sigma (one result per seed)."""
        out: dict[str, dict] = {"clean": {}, f"sigma={sigma:g}": {}}
        for run in self.runs:
            out["clean"][run.name] = [self.clean(run)]
            out[f"sigma={sigma:g}"][run.name] = self.noisy(run, sigma)
        return out

    def _confusions(self, sigma: float) -> dict[str, dict[str, list[np.ndarray]]]:
        """{condition: {run: confusion matrix per seed}} (one matrix for the clean pass)."""
        c = len(self.label_names)
        return {
            cond: {
                name: [dg.confusion_matrix(r["labels"], r["logits"].argmax(1), c) for r in results]
                for name, results in runs.items()
            }
            for cond, runs in self._conditions(sigma).items()
        }

    def _confusion_pairs(self) -> Section:
        """Table 4: per ranking run and condition, its top pairs with every run's S and the share of failures."""
        names, k = self.label_names, self.cfg.top_pairs
        confs = self._confusions(self.cfg.failure_sigma)
        rows, metrics = [], {}
        for ranker in self.runs:
            for cond, per in confs.items():
                summed = {name: np.sum(mats, axis=0) for name, mats in per.items()}  # over the seeds
                pairs = dg.top_confused_pairs(summed[ranker.name], k)
                entry = metrics.setdefault(ranker.name, {})[cond] = {"pairs": []}
                for rank, (i, j, _) in enumerate(pairs, 1):
                    scores = [float(dg.confusion_scores(summed[r.name])[i, j]) / len(per[r.name]) for r in self.runs]
                    rows.append([ranker.name, cond, rank, names[i], names[j], *scores])
                    entry["pairs"].append(
                        {"i": names[i], "j": names[j], "S": dict(zip([r.name for r in self.runs], scores))}
                    )
                shares = [dg.failure_share(summed[r.name], pairs) for r in self.runs]
                rows.append(
                    [
                        ranker.name,
                        cond,
                        f"share of all failures in these {len(pairs)} pairs (%)",
                        "",
                        "",
                        *shares,
                    ]
                )
                entry["failure_share_pct"] = dict(zip([r.name for r in self.runs], shares))
                entry["own_failure_share_pct"] = shares[self.runs.index(ranker)]
        own = "; ".join(
            f"{r.name}: {metrics[r.name][c]['own_failure_share_pct']:.1f}% ({c})" for r in self.runs for c in confs
        )
        return Section(
            "confusion_pairs",
            f"Most confused class pairs: top {k} of each run, clean and at σ = {self.cfg.failure_sigma:g} "
            "(the seed's Table 4)",
            f"Confusion score S_ij = n_ij + n_ji (docs/method.md §8 f). One block per ranking run and condition "
            f"(clean; Gaussian σ = {self.cfg.failure_sigma:g}, S averaged over seeds "
            f"{', '.join(map(str, self.cfg.seeds))}): its top {k} pairs with every run's S, then the share of all "
            f"failures (off-diagonal counts) these pairs hold for every run; the ranking run's own share is the "
            f"seed's number (22.4% MotionBERT, 36.4% MaskCLR, clean). Own shares: {own}.",
            ["ranked_by", "condition", "rank", "class_i", "class_j", *[f"S_{r.name}" for r in self.runs]],
            rows,
            metrics=metrics,
        )

    def _classwise_accuracy(self) -> Section:
        """Figure 3: n_ii / n_i per class, clean and at `classwise_sigma` (mean ± std over the seeds)."""
        a, sig = self.runs[0].name, self.cfg.classwise_sigma
        header, cols, metrics = ["class"], [], {}
        for cond, confs in self._confusions(sig).items():
            per_seed = {name: np.stack([dg.class_accuracy(m) for m in mats]) for name, mats in confs.items()}
            with np.errstate(invalid="ignore"):
                mean = {name: np.mean(v, axis=0) for name, v in per_seed.items()}
            metrics[cond] = {name: [None if np.isnan(v) else float(v) for v in acc] for name, acc in mean.items()}
            for r in self.runs:
                header.append(f"{r.name} {cond}")
                cols.append(mean[r.name])
                if cond != "clean":
                    header.append(f"{r.name} {cond} std")
                    cols.append(np.std(per_seed[r.name], axis=0))
            for r in self.runs[1:]:
                header.append(f"{r.name} - {a} {cond}")
                cols.append(mean[r.name] - mean[a])
        rows = [[n, *[float(c[i]) for c in cols]] for i, n in enumerate(self.label_names)]
        plt = pyplot()
        c = len(self.label_names)
        fig, ax = plt.subplots(figsize=(max(6.4, 0.22 * c * len(self.runs)), 4.0), layout="constrained")
        width = 0.8 / len(self.runs)
        noisy = f"sigma={sig:g}"
        for ri, r in enumerate(self.runs):
            acc = np.array([np.nan if v is None else v for v in metrics[noisy][r.name]])
            ax.bar(np.arange(c) + (ri - (len(self.runs) - 1) / 2) * width, acc, width, label=self.display(r))
        ax.set_xticks(range(c), self.label_names, rotation=90, fontsize=6 if c > 30 else 8)
        ax.set(ylabel="top-1 accuracy (%)", ylim=(0, 100), title=f"class-wise accuracy at σ = {sig:g}")
        ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.08), ncol=len(self.runs), frameon=False)
        return Section(
            "classwise_accuracy",
            f"Class-wise accuracy at σ = {sig:g} (the seed's Figure 3)",
            f"n_ii / n_i per class (docs/method.md §8 g), clean and at Gaussian σ = {sig:g} (mean and std over seeds "
            f"{', '.join(map(str, self.cfg.seeds))}; noise {self.noise_mode}); differences are against {a}.",
            header,
            rows,
            png_bytes(fig),
            metrics,
        )

    def _confusion_matrices(self) -> Section:
        """Figure 7: confusion matrices at `failure_sigma`, summed over the seeds."""
        sig = self.cfg.failure_sigma
        cond = f"sigma={sig:g}"
        confs = {name: np.sum(mats, axis=0) for name, mats in self._confusions(sig)[cond].items()}
        plt = pyplot()
        c = len(self.label_names)
        fig, axes = plt.subplots(
            1, len(self.runs), figsize=(4.6 * len(self.runs), 4.6), squeeze=False, layout="constrained"
        )
        rows = []
        for ci, run in enumerate(self.runs):
            conf = confs[run.name]
            norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
            ax = axes[0][ci]
            ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
            ax.set_title(f"{self.display(run)}, σ = {sig:g}", fontsize=9)
            if c <= 30:
                ax.set_xticks(range(c), self.label_names, rotation=90, fontsize=6)
                ax.set_yticks(range(c), self.label_names, fontsize=6)
            ax.set(xlabel="predicted", ylabel="true")
            rows += [
                [run.name, cond, self.label_names[i], self.label_names[j], int(conf[i, j]), float(norm[i, j])]
                for i in range(c)
                for j in range(c)
                if conf[i, j]
            ]
        return Section(
            "confusion_matrices",
            f"Confusion matrices at σ = {sig:g} (the seed's Figure 7)",
            f"Rows = true class, normalised per row; counts summed over seeds {', '.join(map(str, self.cfg.seeds))} "
            f"(noise {self.noise_mode}). The CSV lists the non-zero cells.",
            ["run", "condition", "true", "predicted", "count", "row_fraction"],
            rows,
            png_bytes(fig),
            {cond: {name: conf.tolist() for name, conf in confs.items()}},
            html_rows=20,
        )

    def _tsne(self) -> Section:
        plt = pyplot()
        fig, axes = plt.subplots(1, len(self.runs), figsize=(4.8 * len(self.runs), 4.4), squeeze=False)
        metrics, rows = {}, []
        for ax, run in zip(axes[0], self.runs):
            clean = self.clean(run)
            n = len(clean["labels"])
            pick = np.sort(np.random.default_rng(self.cfg.seed).permutation(n)[: self.cfg.tsne_points])
            key = {
                "tsne_of": run.digest,
                "data": self.main.digest,
                "clips": clean["frame_dir"][pick].tolist(),
                "perplexity": self.cfg.tsne_perplexity,
                "seed": self.cfg.seed,
                "features": _hash_array(clean["features"]),
            }
            emb = run.cache.get(key)
            if emb is None:
                emb = {
                    "xy": dg.tsne_embedding(
                        clean["features"][pick], perplexity=self.cfg.tsne_perplexity, seed=self.cfg.seed
                    )
                }
                run.cache.put(key, emb)
            sc = ax.scatter(
                *emb["xy"].T, c=clean["labels"][pick], cmap="tab20", s=8, vmin=0, vmax=max(len(self.label_names) - 1, 1)
            )
            ax.set_title(f"{self.display(run)} ({len(pick)} clips)", fontsize=9)
            ax.set_xticks([]), ax.set_yticks([])
            metrics[run.name] = {"points": int(len(pick))}
            rows += [
                [run.name, str(clean["frame_dir"][i]), self.label_names[int(clean["labels"][i])], float(x), float(y)]
                for i, (x, y) in zip(pick, emb["xy"])
            ]
        if len(self.label_names) <= 20:
            handles = [
                plt.Line2D([], [], marker="o", ls="", color=sc.cmap(sc.norm(i)), label=n)
                for i, n in enumerate(self.label_names)
            ]
            fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
            fig.subplots_adjust(right=0.85)
        return Section(
            "tsne",
            "t-SNE of the hidden features (the seed's Figure 8)",
            f"scikit-learn t-SNE (perplexity {self.cfg.tsne_perplexity:g}, PCA init, seed {self.cfg.seed}) "
            f"of the head's hidden feature h on clean clips, coloured by true class.",
            ["run", "clip", "class", "x", "y"],
            rows,
            png_bytes(fig),
            metrics,
            html_rows=10,
        )

    def attention_clip(self) -> tuple[str, str]:
        """The clip of Figure 9 and the rule that chose it: the config's `attention_clip`, else `pick_attention_clip`
        over the split's clips."""
        if self.cfg.attention_clip:
            return self.cfg.attention_clip, "the report config's attention_clip"
        clean = self.clean(self.runs[0])
        return pick_attention_clip(clean["labels"], clean["frame_dir"], self.label_names, split=self.main.split)

    def _attention(self) -> Section:
        clip, rule = self.attention_clip()
        plt = pyplot()
        fig, axes = plt.subplots(
            1, len(self.runs), figsize=(5.8 * len(self.runs), 3.6), squeeze=False, layout="constrained"
        )
        metrics, rows = {"clip": clip, "rule": rule}, []
        for ci, run in enumerate(self.runs):
            maps = attention_maps(run, self.main, [clip])
            act = maps["activation"][0, 0].T  # [T, V] -> [V, T], person 0
            pred, true = int(maps["logits"][0].argmax()), int(maps["labels"][0])
            ax = axes[0][ci]
            im = ax.imshow(act, aspect="auto", cmap="viridis", interpolation="nearest")
            fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
            ax.set_yticks(range(len(H36M_JOINTS)), H36M_JOINTS, fontsize=6)
            ax.set_title(
                f"{self.display(run)}: {clip}\ntrue {self.label_names[true]}, predicted {self.label_names[pred]}",
                fontsize=8,
            )
            ax.set_xlabel("frame")
            metrics[run.name] = {"true": self.label_names[true], "predicted": self.label_names[pred]}
            rows += [
                [run.name, clip, H36M_JOINTS[v], t, float(act[v, t])]
                for v in range(act.shape[0])
                for t in range(act.shape[1])
            ]
        return Section(
            "attention",
            "Attention over time (the seed's Figure 9)",
            f"Attention each joint receives in the last layer's spatial attention (heads averaged, summed "
            f"over queries, docs/method.md §5.1), person 0, clean input; joints × frames, runs side by side. "
            f"Clip {clip}: {rule}.",
            ["run", "clip", "joint", "frame", "attention"],
            rows,
            png_bytes(fig),
            metrics,
            html_rows=10,
        )

    def _cross_estimator(self) -> Section:
        common = set.intersection(*(set(split_frame_dirs(d.index, d.split)) for d in self.data))
        clips = [n for n in split_frame_dirs(self.main.index, self.main.split) if n in common]
        if not clips:
            raise ValueError(f"the --data indexes share no clip in split {self.main.split!r}")
        rows, metrics = [], {}
        for run in self.runs:
            accs = []
            for d in self.data:
                res = evaluate_many(
                    run, d, [(Perturbation("clean"), 0)], frame_dirs=clips, batch_size=self.cfg.batch_size
                )[(Perturbation("clean"), 0)]
                accs.append(_top1(res))
            metrics[run.name] = dict(zip([d.name for d in self.data], accs))
            rows.append([run.name, *accs])
        text = (
            f"Clean top-1 of each run (rows; trained on its own poses) on each index's poses (columns), "
            f"over the {len(clips)} clips of {self.main.split} that every index holds."
        )
        if len(self.data) < 2:
            text += " Needs two or more --data indexes of the same clips (one per pose estimator) to compare them."
        return Section(
            "cross_estimator",
            "Cross-estimator accuracy (train on X, test on Y)",
            text,
            ["run", *[f"{d.name} ({_estimator(d.index)})" for d in self.data]],
            rows,
            metrics=metrics,
        )

    def _pose_quality(self) -> Section:
        rows, metrics = [], {}
        for d in self.data:
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

    def _noisy_clip(self) -> Section:
        index = self.main.index
        names = split_frame_dirs(index, self.main.split)
        name = self.cfg.noisy_clip or names[0]
        rec = next((a for a in index["annotations"] if a["frame_dir"] == name), None)
        if rec is None:
            raise ValueError(f"noisy_clip {name!r} is not in {self.main.path}")
        xy = normalize_screen(rec["keypoint"], rec["img_shape"])  # [M, T, 17, 2]
        score = np.asarray(rec["keypoint_score"])
        t = xy.shape[1] // 2
        sigmas = self.cfg.noisy_clip_sigmas
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
            rng = np.random.default_rng([self.cfg.seeds[0], 0])
            noisy = gaussian_noise(xy, sig, rng, per_person=self.cfg.noise_per_person)
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
            f"(seed {self.cfg.seeds[0]}, {self.noise_mode}). The CSV lists the drawn joints (σ = 0: clean).",
            ["clip", "frame", "sigma", "person", "joint", "x", "y"],
            rows,
            png_bytes(fig),
            {"clip": name, "frame": int(t)},
            html_rows=10,
        )


def _hash_array(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _estimator(index: dict) -> str:
    anns = index.get("annotations") or [{}]
    est = anns[0].get("estimator")
    return str(est.get("name")) if isinstance(est, dict) and est.get("name") else "unknown"


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
    sections = [report.section(n) for n in names]
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
