"""The report's core: `ReportConfig` (what the report sweeps) and `Report` (its runs, data and config, and the helpers
every section shares: the header's choices, cached evaluations, clip subsets, seeded sweeps, the accuracy-curve figure).

The sections themselves (docs/method.md §8) are functions of a `Report`: the robustness ones in
`recognition.report_robustness`, the failure analysis in `recognition.report_failures`, the data ones with the
`section` dispatcher and `run_report` in `recognition.report`. This module imports none of them.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass

import numpy as np

from recognition import diagnostics as dg
from recognition.data import split_frame_dirs
from recognition.perturb import PERTURBATIONS
from recognition.preprocess import describe_preprocessing
from recognition.report_page import png_bytes, pyplot
from recognition.robustness import DataContext, Perturbation, RunContext, evaluate_many, label_names_for

log = logging.getLogger(__name__)

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
        attention_clip: the clip of the attention figure; empty: chosen by the rule of `report_failures.attention_clip`.
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


class Report:
    """Runs, data and config of one report, and the helpers its sections share (evaluations via the cache);
    `recognition.report.section(report, name)` computes a Section."""

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
