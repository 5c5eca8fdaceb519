"""The report's robustness sections (docs/method.md §8 a-e), each a function of a `recognition.report_core.Report`:
clean accuracy; accuracy vs the value of every report sweep (`SWEEPS`: Gaussian noise σ, spatial-only noise σ,
shifted joints k, Figures 4 and 5); targeted vs random masking (Figure 6); RISE deletion/insertion with the attention
of three depths (Figure 1). `recognition.report.section` dispatches to them.
"""

from __future__ import annotations

import numpy as np

from recognition import diagnostics as dg
from recognition.data import split_frame_dirs
from recognition.perturb import PERTURBATIONS
from recognition.report_core import Report, _top1, preprocessing_of
from recognition.report_page import Section, png_bytes, pyplot
from recognition.robustness import Perturbation, RunContext

# section -> its perturbations (several: labelled variants of one figure), for every perturbation with a report sweep
# (`perturb.ReportSweep`), in the table's order
SWEEPS: dict[str, tuple[str, ...]] = {}
for _kind, _spec in PERTURBATIONS.items():
    if _spec.sweep is not None:
        SWEEPS[_spec.sweep.section] = (*SWEEPS.get(_spec.sweep.section, ()), _kind)


def _prob_of(res: dict, cls: np.ndarray) -> float:
    z = res["logits"] - res["logits"].max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return float(np.mean(p[np.arange(len(cls)), cls]))


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


def accuracy(report: Report) -> Section:
    rows, metrics = [], {}
    for run in report.runs:
        res = report.clean(run)
        t5 = dg.topk_accuracy(res["logits"], res["labels"], 5)
        metrics[run.name] = {
            "model": report.labels[run.name],
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
                report.labels[run.name],
                str(run.checkpoint),
                run.digest[:12],
                run.cfg.faithful,
                preprocessing_of(run),
                report.main.split,
                len(res["labels"]),
                _top1(res),
                t5,
            ]
        )
    notes = [report.evaluate_command(r, f"eval_{r.name}") for r in report.runs]
    return Section(
        "accuracy",
        "Clean accuracy",
        "One deterministic clip per sample (docs/method.md §8). `evaluate` gives the same top-1:",
        ["run", "model", "checkpoint", "sha256", "faithful", "preprocessing", "split", "n", "top1", "top5"],
        rows,
        metrics=metrics,
        notes=notes,
    )


def sweep(report: Report, section: str) -> Section:
    """Accuracy vs the value of the perturbation(s) of a report sweep, over its `ReportConfig` grid and the seeds.

    A section of several perturbations (the two readings of shifted joints) has a `variant` column.
    """
    kinds = SWEEPS[section]
    spec = PERTURBATIONS[kinds[0]]
    sweep, grid = spec.sweep, getattr(report.cfg, spec.sweep.grid)
    xs = sorted({spec.identity, *grid}) if sweep.with_identity else sorted(set(grid))
    clips = report.subset(report.cfg.sweep_clips) if spec.space == "model" else None
    raw = report.seeded_sweep(kinds, xs, clips)  # {run: {kind: {value: ...}}}
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
        for run in report.runs
        for kind in kinds
        for v in xs
    ]
    text = sweep.text
    if spec.noise_mode:
        text += f" Noise mode, every run: {report.noise_mode}."
    if section == "spatial_noise":
        mbr = [r.name for r in report.runs if report.labels[r.name].startswith("MotionBERT-R")]
        text += (
            f" MotionBERT-R: {', '.join(mbr)}."
            if mbr
            else " No MotionBERT-R run given (a run whose config has random_mask.ratio > 0, docs/method.md §7.5); "
            "pass one with --runs to add its curve."
        )
    text += f" Mean ± std over seeds {', '.join(map(str, report.cfg.seeds))}." + report.subset_note(clips)
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
            *[f"top1_seed{s}" for s in report.cfg.seeds],
        ],
        rows,
        report.curve_figure(xs, raw, kinds, sweep=sweep, ylabel="top-1 accuracy (%)"),
        metrics,
        evaluate_notes(report, xs) if spec.via_preprocess else [],
    )


def evaluate_notes(report: Report, sigmas: list[float]) -> list[str]:
    """The `evaluate --noise-sigma` commands that give the Gaussian noise rows of the runs' own seeds."""
    notes = []
    for run in report.runs:
        if run.cfg.seed in report.cfg.seeds and report.cfg.noise_per_person == run.cfg.noise_per_person:
            sig = report.cfg.failure_sigma if report.cfg.failure_sigma in sigmas else sigmas[-1]
            notes.append(
                f"{run.name}, seed {run.cfg.seed} (the run's seed), any σ, e.g. {sig:g}: "
                + report.evaluate_command(run, f"eval_{run.name}_sigma{sig:g}", "--noise-sigma", f"{sig:g}")
            )
    return notes


def masking(report: Report) -> Section:
    ks, seeds, clips = list(report.cfg.mask_ks), report.cfg.seeds, report.subset(report.cfg.sweep_clips)
    rows, metrics = [], {}
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ri, run in enumerate(report.runs):
        items = [(Perturbation("mask_targeted", k), 0) for k in ks]
        items += [(Perturbation("mask_random", k), s) for k in ks for s in seeds]
        res = report.eval(run, [(Perturbation("clean"), 0), *items], frame_dirs=clips)
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
                rows.append([run.name, method, k, c["top1"], c["top1_std"] if method == "random" else None, c["prob"]])
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
                    label=f"{report.display(run)}, {method}",
                )
    axes[0].set(xlabel="masked joints per frame k", ylabel="top-1 accuracy (%)", ylim=(0, 100))
    axes[1].set(xlabel="masked joints per frame k", ylabel="p(clean prediction), per clip", ylim=(0, 1))
    axes[0].set_title("accuracy (the seed's Figure 6)", fontsize=9)
    axes[1].set_title("probability variant", fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    aucs = "; ".join(f"{r.name}: {metrics[r.name]['targeted_auc']['top1']:.2f}" for r in report.runs)
    return Section(
        "masking",
        "Targeted vs random masking (the seed's Figure 6)",
        "Zero (x, y, conf) of the k joints per frame that receive the most last-layer attention in the "
        "clean pass (targeted) or of k random joints (random, mean ± std over the seeds), in model-input space, "
        "real persons only: the padded second person of a one-person clip is never masked (docs/method.md §8 d). "
        "top1 is the accuracy (%), the seed's measure; prob, the mean softmax probability of the "
        "clean-predicted class, is the probability variant. The rows k = AUC give the normalised area under "
        f"each curve over k (RISE formula, trapezoid); targeted deletion AUC on accuracy: {aucs}."
        + report.subset_note(clips),
        ["run", "method", "k", "top1", "top1_std", "prob"],
        rows,
        png_bytes(fig),
        metrics,
    )


def deletion_insertion(report: Report) -> Section:
    steps, cfg = report.cfg.rise_steps, report.cfg
    clips = report.subset(cfg.rise_clips) or split_frame_dirs(report.main.index, report.main.split)
    rows, metrics = [], {"clips": len(clips)}
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.2), layout="constrained")
    frac = np.linspace(0, 1, steps + 1)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ri, run in enumerate(report.runs):
        sources: list[tuple[int | str, str]] = saliency_layers_of(run, cfg.saliency_layers)
        if cfg.rise_random_baseline:
            sources.append(("random", "random order"))
        items = [
            (Perturbation(kind, layer=src, steps=steps), 0) for src, _ in sources for kind in ("deletion", "insertion")
        ]
        res = report.eval(run, items, frame_dirs=clips)
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
                        label=f"{report.display(run)}, {label}",
                    )
    for col, what in enumerate(("deletion (lower is better)", "insertion from zeros (higher is better)")):
        axes[0][col].set(title=f"{what}: accuracy (the seed's Figure 1)", ylabel="top-1 accuracy (%)", ylim=(0, 100))
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
