"""Robustness report: trained runs x pose indexes -> `OUT/{metrics.json, <section>.csv, <section>.png, report.html}`.

`python -m recognition report --runs RUN_DIR... --data INDEX... --out DIR [--config configs/report/default.yaml]`.
Sections (docs/method.md §8, laid out as the seed's tables and figures, §13.1): clean accuracy; accuracy vs Gaussian
noise σ and vs spatial-only noise σ; vs shifted joints k; targeted vs random masking; RISE deletion/insertion with
attention saliency; failure analysis (confusion pairs, class-wise accuracy, confusion matrices, t-SNE of the hidden
features, attention over time); the cross-estimator table; pose quality (Table 3) and one clip clean vs noisy
(Figure 2).

The first `--data` index is the one every sweep uses; all of them enter the cross-estimator and pose-quality tables.
Run A is the first `--runs` entry: failure-analysis tables rank by it and give the others' values beside it.
Evaluations are cached in `OUT/cache/` (`recognition.robustness`); every output is rewritten only when its bytes
change, so a re-run with nothing changed changes no file. Each section of `report.html` prints the command that
regenerates its numbers (`... --only <section>`, which rewrites only that section's CSV and figure and prints the
CSV), and the page embeds the report config and every run's config. Rendering (CSV, PNG, `report.html`) is in
`recognition.report_page`; this module computes the sections.
"""

from __future__ import annotations

import hashlib
import json
import logging
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
from recognition.preprocess import normalize_screen
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

# section -> perturbation, for every perturbation with a report sweep (`perturb.ReportSweep`), in the table's order
SWEEPS = {spec.sweep.section: kind for kind, spec in PERTURBATIONS.items() if spec.sweep is not None}
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
H36M_JOINTS = (
    "root",
    "r_hip",
    "r_knee",
    "r_ankle",
    "l_hip",
    "l_knee",
    "l_ankle",
    "belly",
    "neck",
    "nose",
    "head",
    "l_shoulder",
    "l_elbow",
    "l_wrist",
    "r_shoulder",
    "r_elbow",
    "r_wrist",
)
COCO_EDGES = (
    (0, 1),
    (0, 2),
    (1, 3),
    (2, 4),
    (5, 6),
    (5, 7),
    (7, 9),
    (6, 8),
    (8, 10),
    (5, 11),
    (6, 12),
    (11, 12),
    (11, 13),
    (13, 15),
    (12, 14),
    (14, 16),
)
assert len(COCO17_JOINTS) == 17


@dataclass(frozen=True)
class ReportConfig:
    """What the report sweeps; YAML in `configs/report/` lists what differs.

    Attributes:
        seeds: seeds of every random perturbation; tables give the mean (and std) over them.
        sigmas: Gaussian noise levels (docs/method.md §8(a)), screen-normalised units.
        spatial_sigmas: spatial-only noise levels (§8(b)).
        shift_ks: numbers of shifted joints (§8(c)); k = 0 (clean) is added.
        mask_ks: joints masked per frame, targeted and random (§8(d)).
        noise_per_person: Gaussian noise independent per person (True) or broadcast (False, F6); None: each run's
            own resolved setting.
        failure_sigma: the σ of the noisy failure analysis (confusion pairs, class-wise accuracy, matrices).
        top_pairs: k of the top-k confusion pairs.
        rise_steps: deletion/insertion steps n (the curve has n + 1 points).
        rise_clips: deletion/insertion on at most this many clips (a fixed random subset); 0: every clip.
        saliency_layers: layers whose spatial attention gives the deletion/insertion saliency (-1 = last).
        rise_random_baseline: also draw the curves with a random token order.
        tsne_points: at most this many clips in the t-SNE (a fixed random subset, the same for every run).
        tsne_perplexity: t-SNE perplexity.
        attention_clips: clips of the attention figure; empty: chosen automatically.
        attention_samples: how many clips to choose automatically.
        noisy_clip: the clip of the clean-vs-noisy figure; empty: the split's first.
        noisy_clip_sigmas: its noise levels (the seed's Figure 2: 0.002 and 0.005).
        batch_size: evaluation batch size.
        seed: seed of the t-SNE and of the clip choices.
    """

    seeds: tuple[int, ...] = (0,)
    sigmas: tuple[float, ...] = (0.0, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1)
    spatial_sigmas: tuple[float, ...] = (0.0, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1)
    shift_ks: tuple[int, ...] = (1, 3, 5, 10)
    mask_ks: tuple[int, ...] = tuple(range(18))
    noise_per_person: bool | None = None
    failure_sigma: float = 0.005
    top_pairs: int = 5
    rise_steps: int = 16
    rise_clips: int = 0
    saliency_layers: tuple[int, ...] = (-1,)
    rise_random_baseline: bool = True
    tsne_points: int = 1000
    tsne_perplexity: float = 30.0
    attention_clips: tuple[str, ...] = ()
    attention_samples: int = 2
    noisy_clip: str = ""
    noisy_clip_sigmas: tuple[float, ...] = (0.002, 0.005)
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("seeds must list at least one seed")
        if any(s < 0 for s in (*self.sigmas, *self.spatial_sigmas, self.failure_sigma, *self.noisy_clip_sigmas)):
            raise ValueError("noise levels must be >= 0")
        if any(not 0 <= k <= 17 for k in (*self.shift_ks, *self.mask_ks)):
            raise ValueError("shift_ks and mask_ks must lie in [0, 17]")
        if len(self.mask_ks) < 2 or list(self.mask_ks) != sorted(set(self.mask_ks)):
            raise ValueError(f"mask_ks must be increasing with at least 2 values, got {self.mask_ks}")
        if self.rise_steps < 1 or self.top_pairs < 1 or self.batch_size < 1 or self.rise_clips < 0:
            raise ValueError("rise_steps, top_pairs and batch_size must be >= 1, rise_clips >= 0")


def _top1(res: dict) -> float:
    return dg.topk_accuracy(res["logits"], res["labels"], 1)


def _prob_of(res: dict, cls: np.ndarray) -> float:
    z = res["logits"] - res["logits"].max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return float(np.mean(p[np.arange(len(cls)), cls]))


class Report:
    """Runs, data and config of one report; `section(name)` computes a Section (evaluations via the cache)."""

    def __init__(self, *, runs: list[RunContext], data: list[DataContext], cfg: ReportConfig, command: list[str]):
        self.runs, self.data, self.cfg, self.command = runs, data, cfg, command
        self.main = data[0]
        names = {tuple(label_names_for(r, self.main)) for r in runs}
        if len(names) != 1:
            raise ValueError(f"the runs have different class lists: {sorted(names)}")
        self.label_names = list(names.pop())

    # -- helpers -------------------------------------------------------------------------------------------------
    def reproduce(self, name: str) -> str:
        return shlex.join([*self.command, "--only", name])

    def eval(self, run: RunContext, items: list[tuple[Perturbation, int]], **kw) -> dict:
        return evaluate_many(
            run, self.main, items, batch_size=self.cfg.batch_size, noise_per_person=self.cfg.noise_per_person, **kw
        )

    def clean(self, run: RunContext) -> dict:
        return self.eval(run, [(Perturbation("clean"), 0)])[(Perturbation("clean"), 0)]

    def noise_mode(self, run: RunContext) -> str:
        per = run.cfg.noise_per_person if self.cfg.noise_per_person is None else self.cfg.noise_per_person
        return "independent per person" if per else "broadcast to both persons (F6, faithful)"

    def seeded_sweep(self, kind: str, values: list[float]) -> tuple[list[list], dict]:
        rows, metrics = [], {}
        for run in self.runs:
            items = [(Perturbation(kind, v), s) for v in values for s in self.cfg.seeds]
            res = self.eval(run, items)
            metrics[run.name] = {}
            for v in values:
                accs = [_top1(res[(Perturbation(kind, v), s)]) for s in self.cfg.seeds]
                metrics[run.name][f"{v:g}"] = {
                    "top1_mean": float(np.mean(accs)),
                    "top1_std": float(np.std(accs)),
                    "top1_per_seed": dict(zip(map(str, self.cfg.seeds), accs)),
                }
                rows.append([run.name, f"{v:g}", np.mean(accs), np.std(accs), *accs])
        return rows, metrics

    def curve_figure(self, xs: list, metrics: dict, *, xlabel: str, title: str, categorical: bool) -> bytes:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        pos = np.arange(len(xs)) if categorical else np.asarray(xs, dtype=float)
        for run in self.runs:
            m = metrics[run.name]
            mean = np.array([m[f"{v:g}"]["top1_mean"] for v in xs])
            std = np.array([m[f"{v:g}"]["top1_std"] for v in xs])
            ax.errorbar(pos, mean, yerr=std if len(self.cfg.seeds) > 1 else None, marker="o", capsize=3, label=run.name)
        if categorical:
            ax.set_xticks(pos, [f"{v:g}" for v in xs])
        ax.set(xlabel=xlabel, ylabel="top-1 accuracy (%)", title=title, ylim=(0, 100))
        ax.grid(alpha=0.3)
        ax.legend()
        return png_bytes(fig)

    # -- sections ------------------------------------------------------------------------------------------------
    def section(self, name: str) -> Section:
        if name not in SECTIONS:
            raise ValueError(f"unknown report section {name!r}; valid: {', '.join(SECTIONS)}")
        log.info("section %s", name)
        if name in SWEEPS:
            return self._sweep(SWEEPS[name])
        return getattr(self, f"_{name}")()

    def _accuracy(self) -> Section:
        rows, metrics = [], {}
        for run in self.runs:
            res = self.clean(run)
            t5 = dg.topk_accuracy(res["logits"], res["labels"], 5)
            metrics[run.name] = {
                "top1": _top1(res),
                "top5": t5,
                "n": int(len(res["labels"])),
                "checkpoint": str(run.checkpoint),
                "sha256": run.digest,
                "faithful": run.cfg.faithful,
                "noise": self.noise_mode(run),
            }
            rows.append(
                [
                    run.name,
                    str(run.checkpoint),
                    run.digest[:12],
                    run.cfg.faithful,
                    self.noise_mode(run),
                    self.main.split,
                    len(res["labels"]),
                    _top1(res),
                    t5,
                ]
            )
        notes = [
            shlex.join(
                [
                    "python",
                    "-m",
                    "recognition",
                    "evaluate",
                    "--checkpoint",
                    str(r.checkpoint),
                    "--data",
                    str(self.main.path),
                    "--split",
                    self.main.split,
                    "--out",
                    f"eval_{r.name}",
                ]
            )
            for r in self.runs
        ]
        return Section(
            "accuracy",
            "Clean accuracy",
            "One deterministic clip per sample (docs/method.md §8). `evaluate` gives the same top-1:",
            ["run", "checkpoint", "sha256", "faithful", "Gaussian noise", "split", "n", "top1", "top5"],
            rows,
            metrics=metrics,
            notes=notes,
        )

    def _sweep(self, kind: str) -> Section:
        """Accuracy vs the value of a perturbation with a report sweep, over its `ReportConfig` grid and the seeds."""
        spec = PERTURBATIONS[kind]
        sweep, grid = spec.sweep, getattr(self.cfg, spec.sweep.grid)
        xs = sorted({spec.identity, *grid}) if sweep.with_identity else sorted(set(grid))
        rows, metrics = self.seeded_sweep(kind, xs)
        text = sweep.text
        if spec.noise_mode:
            text += " Noise mode per run: " + "; ".join(f"{r.name}: {self.noise_mode(r)}" for r in self.runs) + "."
        return Section(
            sweep.section,
            sweep.heading,
            text,
            ["run", sweep.column, "top1_mean", "top1_std", *[f"top1_seed{s}" for s in self.cfg.seeds]],
            rows,
            self.curve_figure(xs, metrics, xlabel=sweep.xlabel, title=sweep.title, categorical=sweep.categorical),
            metrics,
            self.evaluate_notes(xs) if spec.via_preprocess else [],
        )

    def evaluate_notes(self, sigmas: list[float]) -> list[str]:
        """The `evaluate --noise-sigma` commands that give the Gaussian noise rows of the runs' own seeds."""
        notes = []
        for run in self.runs:
            if run.cfg.seed in self.cfg.seeds and self.cfg.noise_per_person in (None, run.cfg.noise_per_person):
                sig = self.cfg.failure_sigma if self.cfg.failure_sigma in sigmas else sigmas[-1]
                notes.append(
                    f"{run.name}, seed {run.cfg.seed} (the run's seed), any σ, e.g. {sig:g}: "
                    + shlex.join(
                        [
                            "python",
                            "-m",
                            "recognition",
                            "evaluate",
                            "--checkpoint",
                            str(run.checkpoint),
                            "--data",
                            str(self.main.path),
                            "--split",
                            self.main.split,
                            "--out",
                            f"eval_{run.name}_sigma{sig:g}",
                            "--noise-sigma",
                            f"{sig:g}",
                        ]
                    )
                )
        return notes

    def _masking(self) -> Section:
        ks, seeds = list(self.cfg.mask_ks), self.cfg.seeds
        rows, metrics = [], {}
        plt = pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for ri, run in enumerate(self.runs):
            clean = self.clean(run)
            pred = clean["logits"].argmax(1)
            items = [(Perturbation("mask_targeted", k), 0) for k in ks]
            items += [(Perturbation("mask_random", k), s) for k in ks for s in seeds]
            res = self.eval(run, items)
            m = metrics[run.name] = {"targeted": {}, "random": {}}
            for k in ks:
                t = res[(Perturbation("mask_targeted", k), 0)]
                rnd = [res[(Perturbation("mask_random", k), s)] for s in seeds]
                m["targeted"][str(k)] = {"top1": _top1(t), "prob": _prob_of(t, pred)}
                m["random"][str(k)] = {
                    "top1": float(np.mean([_top1(r) for r in rnd])),
                    "prob": float(np.mean([_prob_of(r, pred) for r in rnd])),
                }
            for method in ("targeted", "random"):
                curve = m[method]
                for k in ks:
                    rows.append([run.name, method, k, curve[str(k)]["top1"], curve[str(k)]["prob"]])
                auc = {q: dg.curve_auc(ks, [curve[str(k)][q] for k in ks]) for q in ("top1", "prob")}
                m[f"{method}_auc"] = auc
                rows.append([run.name, method, "AUC", auc["top1"], auc["prob"]])
                style = "-" if method == "targeted" else ":"
                for ax, q in zip(axes, ("top1", "prob")):
                    ax.plot(
                        ks,
                        [curve[str(k)][q] for k in ks],
                        style,
                        marker="o",
                        ms=3,
                        color=colors[ri % len(colors)],
                        label=f"{run.name} {method}",
                    )
        axes[0].set(xlabel="masked joints per frame k", ylabel="top-1 accuracy (%)", ylim=(0, 100))
        axes[1].set(xlabel="masked joints per frame k", ylabel="p(clean prediction)", ylim=(0, 1))
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        return Section(
            "masking",
            "Targeted vs random masking",
            "Zero (x, y, conf) of the k joints per frame that receive the most last-layer attention in the "
            "clean pass (targeted) or of k random joints (random, mean over seeds), in model-input space "
            "(docs/method.md §8 d). `prob` is the mean softmax probability of the clean-predicted class; the rows "
            "k = AUC give the normalised area under each curve over k (RISE formula, trapezoid).",
            ["run", "method", "k", "top1", "prob"],
            rows,
            png_bytes(fig),
            metrics,
        )

    def _deletion_insertion(self) -> Section:
        steps, cfg = self.cfg.rise_steps, self.cfg
        sources: list[int | str] = list(dict.fromkeys(cfg.saliency_layers)) + (
            ["random"] if cfg.rise_random_baseline else []
        )
        clips = split_frame_dirs(self.main.index, self.main.split)
        if 0 < cfg.rise_clips < len(clips):
            pick = np.sort(np.random.default_rng(cfg.seed).permutation(len(clips))[: cfg.rise_clips])
            clips = [clips[i] for i in pick]
        rows, metrics = [], {"clips": len(clips)}
        plt = pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        frac = np.linspace(0, 1, steps + 1)
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for ri, run in enumerate(self.runs):
            items = [
                (Perturbation(kind, layer=src, steps=steps), 0) for src in sources for kind in ("deletion", "insertion")
            ]
            res = self.eval(run, items, frame_dirs=clips)
            metrics[run.name] = {}
            for si, src in enumerate(sources):
                label = (
                    "random order"
                    if src == "random"
                    else "attention, last layer"
                    if src == -1
                    else f"attention, layer {src}"
                )
                dele = res[(Perturbation("deletion", layer=src, steps=steps), 0)]["curve"].mean(0)
                ins = res[(Perturbation("insertion", layer=src, steps=steps), 0)]["curve"].mean(0)
                auc = {
                    "deletion_auc": dg.rise_auc(dele),
                    "insertion_auc": dg.rise_auc(ins),
                    "deletion_curve": dele.tolist(),
                    "insertion_curve": ins.tolist(),
                }
                metrics[run.name][str(src)] = auc
                rows.append([run.name, label, auc["deletion_auc"], auc["insertion_auc"]])
                style = ("-", "--", "-.", ":")[si % 4] if src != "random" else ":"
                for ax, curve in zip(axes, (dele, ins)):
                    ax.plot(frac, curve, style, color=colors[ri % len(colors)], label=f"{run.name}, {label}")
        axes[0].set(
            title="deletion (lower is better)", xlabel="fraction of tokens zeroed", ylabel="p(clean prediction)"
        )
        axes[1].set(title="insertion from zeros (higher is better)", xlabel="fraction of tokens inserted")
        for ax in axes:
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        return Section(
            "deletion_insertion",
            "RISE deletion and insertion with attention saliency",
            f"Units are the (person, frame, joint) tokens, ordered by the attention they receive in the "
            f"clean pass; {steps} steps over {len(clips)} clips; deletion replaces tokens by zeros, "
            f"insertion starts from the all-zero input. Score: softmax probability of the "
            f"clean-predicted class. "
            f"AUC = (Σ s_i − s_0/2 − s_n/2) / n (docs/method.md §8 e).",
            ["run", "saliency", "deletion_auc", "insertion_auc"],
            rows,
            png_bytes(fig),
            metrics,
        )

    def _conditions(self) -> dict[str, dict[str, dict]]:
        """{condition: {run: result}} for the clean and the noisy failure analysis (first seed)."""
        sig, seed = self.cfg.failure_sigma, self.cfg.seeds[0]
        out: dict[str, dict] = {"clean": {}, f"sigma={sig:g}": {}}
        for run in self.runs:
            out["clean"][run.name] = self.clean(run)
            out[f"sigma={sig:g}"][run.name] = self.eval(run, [(Perturbation("gaussian", sig), seed)])[
                (Perturbation("gaussian", sig), seed)
            ]
        return out

    def _confusions(self) -> dict[str, dict[str, np.ndarray]]:
        c = len(self.label_names)
        return {
            cond: {name: dg.confusion_matrix(r["labels"], r["logits"].argmax(1), c) for name, r in runs.items()}
            for cond, runs in self._conditions().items()
        }

    def _confusion_pairs(self) -> Section:
        names, a = self.label_names, self.runs[0].name
        rows, metrics = [], {}
        for cond, confs in self._confusions().items():
            pairs = dg.top_confused_pairs(confs[a], self.cfg.top_pairs)
            metrics[cond] = {"pairs": [], "failure_share_pct": {}}
            for rank, (i, j, _) in enumerate(pairs, 1):
                scores = [int(dg.confusion_scores(confs[r.name])[i, j]) for r in self.runs]
                rows.append([cond, rank, names[i], names[j], *scores])
                metrics[cond]["pairs"].append(
                    {"i": names[i], "j": names[j], "S": dict(zip([r.name for r in self.runs], scores))}
                )
            shares = [dg.failure_share(confs[r.name], pairs) for r in self.runs]
            own = [
                dg.failure_share(confs[r.name], dg.top_confused_pairs(confs[r.name], self.cfg.top_pairs))
                for r in self.runs
            ]
            rows.append([cond, "share of failures in these pairs (%)", "", "", *shares])
            rows.append([cond, f"share in the run's own top-{self.cfg.top_pairs} (%)", "", "", *own])
            metrics[cond]["failure_share_pct"] = dict(zip([r.name for r in self.runs], shares))
            metrics[cond]["own_top_share_pct"] = dict(zip([r.name for r in self.runs], own))
        return Section(
            "confusion_pairs",
            f"Most confused class pairs (top {self.cfg.top_pairs} of {a})",
            f"Confusion score S_ij = n_ij + n_ji (docs/method.md §8 f), pairs ranked for {a}, the same pairs' "
            f"scores for every run (the seed's Table 4), clean and at Gaussian σ = "
            f"{self.cfg.failure_sigma:g} (seed {self.cfg.seeds[0]}).",
            ["condition", "rank", "class_i", "class_j", *[f"S_{r.name}" for r in self.runs]],
            rows,
            metrics=metrics,
        )

    def _classwise_accuracy(self) -> Section:
        a = self.runs[0].name
        header, cols, metrics = ["class"], [], {}
        for cond, confs in self._confusions().items():
            accs = {name: dg.class_accuracy(conf) for name, conf in confs.items()}
            metrics[cond] = {name: [None if np.isnan(v) else float(v) for v in acc] for name, acc in accs.items()}
            for r in self.runs:
                header.append(f"{r.name} {cond}")
                cols.append(accs[r.name])
            for r in self.runs[1:]:
                header.append(f"{r.name} - {a} {cond}")
                cols.append(accs[r.name] - accs[a])
        rows = [[n, *[float(c[i]) for c in cols]] for i, n in enumerate(self.label_names)]
        return Section(
            "classwise_accuracy",
            "Class-wise accuracy",
            f"n_ii / n_i per class (docs/method.md §8 g), clean and at σ = {self.cfg.failure_sigma:g}; "
            f"differences are against {a}.",
            header,
            rows,
            metrics=metrics,
        )

    def _confusion_matrices(self) -> Section:
        confs = self._confusions()
        plt = pyplot()
        c = len(self.label_names)
        fig, axes = plt.subplots(
            len(confs),
            len(self.runs),
            figsize=(4.4 * len(self.runs), 4.4 * len(confs)),
            squeeze=False,
            layout="constrained",
        )
        for ri, (cond, per_run) in enumerate(confs.items()):
            for ci, run in enumerate(self.runs):
                conf = per_run[run.name]
                norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
                ax = axes[ri][ci]
                ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
                ax.set_title(f"{run.name}, {cond}", fontsize=9)
                if c <= 30:
                    ax.set_xticks(range(c), self.label_names, rotation=90, fontsize=6)
                    ax.set_yticks(range(c), self.label_names, fontsize=6)
                ax.set(xlabel="predicted", ylabel="true")
        metrics = {cond: {name: conf.tolist() for name, conf in per.items()} for cond, per in confs.items()}
        return Section(
            "confusion_matrices",
            "Confusion matrices",
            "Rows = true class, normalised per row.",
            figure=png_bytes(fig),
            metrics=metrics,
        )

    def _tsne(self) -> Section:
        plt = pyplot()
        fig, axes = plt.subplots(1, len(self.runs), figsize=(4.8 * len(self.runs), 4.4), squeeze=False)
        metrics = {}
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
            ax.set_title(f"{run.name} ({len(pick)} clips)", fontsize=9)
            ax.set_xticks([]), ax.set_yticks([])
            metrics[run.name] = {"points": int(len(pick))}
        if len(self.label_names) <= 20:
            handles = [
                plt.Line2D([], [], marker="o", ls="", color=sc.cmap(sc.norm(i)), label=n)
                for i, n in enumerate(self.label_names)
            ]
            fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
            fig.subplots_adjust(right=0.85)
        return Section(
            "tsne",
            "t-SNE of the hidden features",
            f"scikit-learn t-SNE (perplexity {self.cfg.tsne_perplexity:g}, PCA init, seed {self.cfg.seed}) "
            f"of the head's hidden feature h on clean clips, coloured by true class.",
            figure=png_bytes(fig),
            metrics=metrics,
        )

    def _pick_attention_clips(self) -> list[str]:
        if self.cfg.attention_clips:
            return list(self.cfg.attention_clips)
        first, last = self.clean(self.runs[0]), self.clean(self.runs[-1])
        ok_a = first["logits"].argmax(1) == first["labels"]
        ok_b = last["logits"].argmax(1) == last["labels"]
        wanted = np.flatnonzero(~ok_a & ok_b) if len(self.runs) > 1 else np.flatnonzero(~ok_a)
        order = list(wanted) + [i for i in range(len(ok_a)) if i not in set(wanted)]
        return [str(first["frame_dir"][i]) for i in order[: self.cfg.attention_samples]]

    def _attention(self) -> Section:
        clips = self._pick_attention_clips()
        plt = pyplot()
        fig, axes = plt.subplots(
            len(clips),
            len(self.runs),
            figsize=(5.8 * len(self.runs), 3.4 * len(clips)),
            squeeze=False,
            layout="constrained",
        )
        metrics = {}
        for ci, run in enumerate(self.runs):
            maps = attention_maps(run, self.main, clips)
            for si, clip in enumerate(clips):
                act = maps["activation"][si, 0].T  # [T, V] -> [V, T], person 0
                pred, true = int(maps["logits"][si].argmax()), int(maps["labels"][si])
                ax = axes[si][ci]
                im = ax.imshow(act, aspect="auto", cmap="viridis", interpolation="nearest")
                fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
                ax.set_yticks(range(len(H36M_JOINTS)), H36M_JOINTS, fontsize=6)
                ax.set_title(
                    f"{run.name}: {clip}\ntrue {self.label_names[true]}, predicted {self.label_names[pred]}", fontsize=8
                )
                ax.set_xlabel("frame")
                metrics.setdefault(clip, {})[run.name] = {
                    "true": self.label_names[true],
                    "predicted": self.label_names[pred],
                }
        return Section(
            "attention",
            "Attention over time",
            "Attention each joint receives in the last layer's spatial attention (heads averaged, summed "
            "over queries, docs/method.md §5.1), person 0, clean input; joints × frames, runs side by side (the "
            "seed's Figure 9). Clips: " + ", ".join(clips) + ".",
            figure=png_bytes(fig),
            metrics=metrics,
        )

    def _cross_estimator(self) -> Section:
        if len(self.data) < 2:
            return Section(
                "cross_estimator",
                "Cross-estimator accuracy",
                "Needs two or more --data indexes of the same clips (one per pose estimator).",
            )
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
        return Section(
            "cross_estimator",
            "Cross-estimator accuracy (train on X, test on Y)",
            f"Clean top-1 of each run (rows; trained on its own poses) on each index's poses (columns), "
            f"over the {len(clips)} clips of {self.main.split} that every index holds.",
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
        for ax, sig in zip(axes[0], sigmas):
            noisy = gaussian_noise(xy, sig, np.random.default_rng([self.cfg.seeds[0], 0]), per_person=True)
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
            f"(seed {self.cfg.seeds[0]}).",
            figure=png_bytes(fig),
            metrics={"clip": name, "frame": int(t)},
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
