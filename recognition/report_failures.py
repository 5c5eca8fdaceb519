"""The report's failure-analysis sections (docs/method.md §8 f-i), each a function of a
`recognition.report_core.Report`: the top confused class pairs (Table 4), class-wise accuracy (Figure 3), confusion
matrices (Figure 7), t-SNE of the hidden features (Figure 8) and attention over time (Figure 9, with the rule that
picks its clip). `recognition.report.section` dispatches to them.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from recognition import diagnostics as dg
from recognition.report_core import Report
from recognition.report_page import Section, png_bytes, pyplot
from recognition.robustness import attention_maps

# fmt: off
H36M_JOINTS = (
    "root", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "belly", "neck", "nose", "head",
    "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist",
)
# fmt: on
ATTENTION_CLASS = "drink water"  # the seed's Figure 9 shows a clip of this NTU class


def _hash_array(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


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


def conditions(report: Report, sigma: float) -> dict[str, dict[str, list[dict]]]:
    """{condition: {run: results}}: the clean pass, and Gaussian noise at sigma (one result per seed)."""
    out: dict[str, dict] = {"clean": {}, f"sigma={sigma:g}": {}}
    for run in report.runs:
        out["clean"][run.name] = [report.clean(run)]
        out[f"sigma={sigma:g}"][run.name] = report.noisy(run, sigma)
    return out


def confusions(report: Report, sigma: float) -> dict[str, dict[str, list[np.ndarray]]]:
    """{condition: {run: confusion matrix per seed}} (one matrix for the clean pass)."""
    c = len(report.label_names)
    return {
        cond: {
            name: [dg.confusion_matrix(r["labels"], r["logits"].argmax(1), c) for r in results]
            for name, results in runs.items()
        }
        for cond, runs in conditions(report, sigma).items()
    }


def confusion_pairs(report: Report) -> Section:
    """Table 4: per ranking run and condition, its top pairs with every run's S and the share of failures."""
    names, k = report.label_names, report.cfg.top_pairs
    confs = confusions(report, report.cfg.failure_sigma)
    rows, metrics = [], {}
    for ranker in report.runs:
        for cond, per in confs.items():
            summed = {name: np.sum(mats, axis=0) for name, mats in per.items()}  # over the seeds
            pairs = dg.top_confused_pairs(summed[ranker.name], k)
            entry = metrics.setdefault(ranker.name, {})[cond] = {"pairs": []}
            for rank, (i, j, _) in enumerate(pairs, 1):
                scores = [float(dg.confusion_scores(summed[r.name])[i, j]) / len(per[r.name]) for r in report.runs]
                rows.append([ranker.name, cond, rank, names[i], names[j], *scores])
                entry["pairs"].append(
                    {"i": names[i], "j": names[j], "S": dict(zip([r.name for r in report.runs], scores))}
                )
            shares = [dg.failure_share(summed[r.name], pairs) for r in report.runs]
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
            entry["failure_share_pct"] = dict(zip([r.name for r in report.runs], shares))
            entry["own_failure_share_pct"] = shares[report.runs.index(ranker)]
    own = "; ".join(
        f"{r.name}: {metrics[r.name][c]['own_failure_share_pct']:.1f}% ({c})" for r in report.runs for c in confs
    )
    return Section(
        "confusion_pairs",
        f"Most confused class pairs: top {k} of each run, clean and at σ = {report.cfg.failure_sigma:g} "
        "(the seed's Table 4)",
        f"Confusion score S_ij = n_ij + n_ji (docs/method.md §8 f). One block per ranking run and condition "
        f"(clean; Gaussian σ = {report.cfg.failure_sigma:g}, S averaged over seeds "
        f"{', '.join(map(str, report.cfg.seeds))}): its top {k} pairs with every run's S, then the share of all "
        f"failures (off-diagonal counts) these pairs hold for every run; the ranking run's own share is the "
        f"seed's number (22.4% MotionBERT, 36.4% MaskCLR, clean). Own shares: {own}.",
        ["ranked_by", "condition", "rank", "class_i", "class_j", *[f"S_{r.name}" for r in report.runs]],
        rows,
        metrics=metrics,
    )


def classwise_accuracy(report: Report) -> Section:
    """Figure 3: n_ii / n_i per class, clean and at `classwise_sigma` (mean ± std over the seeds)."""
    a, sig = report.runs[0].name, report.cfg.classwise_sigma
    header, cols, metrics = ["class"], [], {}
    for cond, confs in confusions(report, sig).items():
        per_seed = {name: np.stack([dg.class_accuracy(m) for m in mats]) for name, mats in confs.items()}
        with np.errstate(invalid="ignore"):
            mean = {name: np.mean(v, axis=0) for name, v in per_seed.items()}
        metrics[cond] = {name: [None if np.isnan(v) else float(v) for v in acc] for name, acc in mean.items()}
        for r in report.runs:
            header.append(f"{r.name} {cond}")
            cols.append(mean[r.name])
            if cond != "clean":
                header.append(f"{r.name} {cond} std")
                cols.append(np.std(per_seed[r.name], axis=0))
        for r in report.runs[1:]:
            header.append(f"{r.name} - {a} {cond}")
            cols.append(mean[r.name] - mean[a])
    rows = [[n, *[float(c[i]) for c in cols]] for i, n in enumerate(report.label_names)]
    plt = pyplot()
    c = len(report.label_names)
    fig, ax = plt.subplots(figsize=(max(6.4, 0.22 * c * len(report.runs)), 4.0), layout="constrained")
    width = 0.8 / len(report.runs)
    noisy = f"sigma={sig:g}"
    for ri, r in enumerate(report.runs):
        acc = np.array([np.nan if v is None else v for v in metrics[noisy][r.name]])
        ax.bar(np.arange(c) + (ri - (len(report.runs) - 1) / 2) * width, acc, width, label=report.display(r))
    ax.set_xticks(range(c), report.label_names, rotation=90, fontsize=6 if c > 30 else 8)
    ax.set(ylabel="top-1 accuracy (%)", ylim=(0, 100), title=f"class-wise accuracy at σ = {sig:g}")
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.08), ncol=len(report.runs), frameon=False)
    return Section(
        "classwise_accuracy",
        f"Class-wise accuracy at σ = {sig:g} (the seed's Figure 3)",
        f"n_ii / n_i per class (docs/method.md §8 g), clean and at Gaussian σ = {sig:g} (mean and std over seeds "
        f"{', '.join(map(str, report.cfg.seeds))}; noise {report.noise_mode}); differences are against {a}.",
        header,
        rows,
        png_bytes(fig),
        metrics,
    )


def confusion_matrices(report: Report) -> Section:
    """Figure 7: confusion matrices at `failure_sigma`, summed over the seeds."""
    sig = report.cfg.failure_sigma
    cond = f"sigma={sig:g}"
    confs = {name: np.sum(mats, axis=0) for name, mats in confusions(report, sig)[cond].items()}
    plt = pyplot()
    c = len(report.label_names)
    fig, axes = plt.subplots(
        1, len(report.runs), figsize=(4.6 * len(report.runs), 4.6), squeeze=False, layout="constrained"
    )
    rows = []
    for ci, run in enumerate(report.runs):
        conf = confs[run.name]
        norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
        ax = axes[0][ci]
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"{report.display(run)}, σ = {sig:g}", fontsize=9)
        if c <= 30:
            ax.set_xticks(range(c), report.label_names, rotation=90, fontsize=6)
            ax.set_yticks(range(c), report.label_names, fontsize=6)
        ax.set(xlabel="predicted", ylabel="true")
        rows += [
            [run.name, cond, report.label_names[i], report.label_names[j], int(conf[i, j]), float(norm[i, j])]
            for i in range(c)
            for j in range(c)
            if conf[i, j]
        ]
    return Section(
        "confusion_matrices",
        f"Confusion matrices at σ = {sig:g} (the seed's Figure 7)",
        f"Rows = true class, normalised per row; counts summed over seeds {', '.join(map(str, report.cfg.seeds))} "
        f"(noise {report.noise_mode}). The CSV lists the non-zero cells.",
        ["run", "condition", "true", "predicted", "count", "row_fraction"],
        rows,
        png_bytes(fig),
        {cond: {name: conf.tolist() for name, conf in confs.items()}},
        html_rows=20,
    )


def tsne(report: Report) -> Section:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(report.runs), figsize=(4.8 * len(report.runs), 4.4), squeeze=False)
    metrics, rows = {}, []
    for ax, run in zip(axes[0], report.runs):
        clean = report.clean(run)
        n = len(clean["labels"])
        pick = np.sort(np.random.default_rng(report.cfg.seed).permutation(n)[: report.cfg.tsne_points])
        key = {
            "tsne_of": run.digest,
            "data": report.main.digest,
            "clips": clean["frame_dir"][pick].tolist(),
            "perplexity": report.cfg.tsne_perplexity,
            "seed": report.cfg.seed,
            "features": _hash_array(clean["features"]),
        }
        emb = run.cache.get(key)
        if emb is None:
            emb = {
                "xy": dg.tsne_embedding(
                    clean["features"][pick], perplexity=report.cfg.tsne_perplexity, seed=report.cfg.seed
                )
            }
            run.cache.put(key, emb)
        sc = ax.scatter(
            *emb["xy"].T, c=clean["labels"][pick], cmap="tab20", s=8, vmin=0, vmax=max(len(report.label_names) - 1, 1)
        )
        ax.set_title(f"{report.display(run)} ({len(pick)} clips)", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
        metrics[run.name] = {"points": int(len(pick))}
        rows += [
            [run.name, str(clean["frame_dir"][i]), report.label_names[int(clean["labels"][i])], float(x), float(y)]
            for i, (x, y) in zip(pick, emb["xy"])
        ]
    if len(report.label_names) <= 20:
        handles = [
            plt.Line2D([], [], marker="o", ls="", color=sc.cmap(sc.norm(i)), label=n)
            for i, n in enumerate(report.label_names)
        ]
        fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
        fig.subplots_adjust(right=0.85)
    return Section(
        "tsne",
        "t-SNE of the hidden features (the seed's Figure 8)",
        f"scikit-learn t-SNE (perplexity {report.cfg.tsne_perplexity:g}, PCA init, seed {report.cfg.seed}) "
        f"of the head's hidden feature h on clean clips, coloured by true class.",
        ["run", "clip", "class", "x", "y"],
        rows,
        png_bytes(fig),
        metrics,
        html_rows=10,
    )


def attention_clip(report: Report) -> tuple[str, str]:
    """The clip of Figure 9 and the rule that chose it: the config's `attention_clip`, else `pick_attention_clip`
    over the split's clips."""
    if report.cfg.attention_clip:
        return report.cfg.attention_clip, "the report config's attention_clip"
    clean = report.clean(report.runs[0])
    return pick_attention_clip(clean["labels"], clean["frame_dir"], report.label_names, split=report.main.split)


def attention(report: Report) -> Section:
    clip, rule = attention_clip(report)
    plt = pyplot()
    fig, axes = plt.subplots(
        1, len(report.runs), figsize=(5.8 * len(report.runs), 3.6), squeeze=False, layout="constrained"
    )
    metrics, rows = {"clip": clip, "rule": rule}, []
    for ci, run in enumerate(report.runs):
        maps = attention_maps(run, report.main, [clip])
        act = maps["activation"][0, 0].T  # [T, V] -> [V, T], person 0
        pred, true = int(maps["logits"][0].argmax()), int(maps["labels"][0])
        ax = axes[0][ci]
        im = ax.imshow(act, aspect="auto", cmap="viridis", interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
        ax.set_yticks(range(len(H36M_JOINTS)), H36M_JOINTS, fontsize=6)
        ax.set_title(
            f"{report.display(run)}: {clip}\ntrue {report.label_names[true]}, predicted {report.label_names[pred]}",
            fontsize=8,
        )
        ax.set_xlabel("frame")
        metrics[run.name] = {"true": report.label_names[true], "predicted": report.label_names[pred]}
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
