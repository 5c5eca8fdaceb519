"""Diagnostics of docs/method.md §8 and §13.1: accuracy, AUCs, confusion pairs, class-wise accuracy, poses, t-SNE.

Pure numpy (scikit-learn only inside `tsne_embedding`); no torch, no files. The one home of the metrics on logits
(`topk_accuracy`, `confusion_matrix`, `class_accuracy`). The report (`recognition.report`) turns what these return into
tables and figures; `recognition.evaluate` computes its metrics with the same functions.
"""

from __future__ import annotations

import numpy as np

from pipeline.datasets import NTU_TWO_PERSON_ACTIONS, UnknownVideoError, parse_ntu_name


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Top-k accuracy in percent: the share of samples whose label is among the k highest logits; 0 without samples.

    Args:
        logits: [N, C].
        labels: [N] true classes.
        k: 1 takes the argmax (ties go to the lower class); k > 1 the first k of `np.argsort(-logits)`.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    logits, labels = np.asarray(logits), np.asarray(labels)
    if len(labels) == 0:
        return 0.0
    if k == 1:
        hit = logits.argmax(1) == labels  # [N]
    else:
        hit = (np.argsort(-logits, axis=1)[:, :k] == labels[:, None]).any(1)  # [N, k] -> [N]
    return float(100.0 * np.mean(hit))


def rise_auc(scores: np.ndarray) -> float | np.ndarray:
    """RISE's normalised AUC of a curve sampled at n + 1 evenly spaced steps (docs/method.md §8(e)).

    AUC = (sum_{i=0..n} s_i - s_0 / 2 - s_n / 2) / n, over the last axis of `scores` [..., n + 1].
    """
    s = np.asarray(scores, dtype=np.float64)
    n = s.shape[-1] - 1
    if n < 1:
        raise ValueError(f"a curve needs at least 2 points, got {s.shape[-1]}")
    out = (s.sum(axis=-1) - s[..., 0] / 2 - s[..., -1] / 2) / n
    return float(out) if out.ndim == 0 else out


def curve_auc(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoid area under y(x) with x rescaled to [0, 1]; equals `rise_auc(y)` for evenly spaced x."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2 or np.any(np.diff(x) <= 0):
        raise ValueError(f"need increasing x and y of the same length >= 2, got {x.shape} and {y.shape}")
    t = (x - x[0]) / (x[-1] - x[0])
    return float(np.sum((t[1:] - t[:-1]) * (y[1:] + y[:-1]) / 2))


def confusion_matrix(labels: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """n[i, j] = number of samples of true class i predicted as j; int64 [C, C]."""
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(conf, (np.asarray(labels), np.asarray(pred)), 1)
    return conf


def confusion_scores(conf: np.ndarray) -> np.ndarray:
    """S_ij = n_ij + n_ji for i != j, 0 on the diagonal (docs/method.md §8(f)); symmetric [C, C]."""
    s = conf + conf.T
    np.fill_diagonal(s, 0)
    return s


def top_confused_pairs(conf: np.ndarray, k: int) -> list[tuple[int, int, int]]:
    """The k class pairs (i < j) with the highest confusion score S_ij = n_ij + n_ji, as (i, j, S_ij).

    Ties are broken by (i, j) ascending; pairs with S = 0 are left out, so fewer than k may come back.
    """
    s = confusion_scores(conf)
    i, j = np.triu_indices(len(s), k=1)
    vals = s[i, j]
    order = np.lexsort((j, i, -vals))  # by -S, then i, then j
    return [(int(i[o]), int(j[o]), int(vals[o])) for o in order[:k] if vals[o] > 0]


def failure_share(conf: np.ndarray, pairs: list[tuple[int, int, int]]) -> float:
    """Share (%) of all failures (off-diagonal counts) that fall in the given class pairs; 0 without failures."""
    failures = conf.sum() - np.trace(conf)
    if failures == 0:
        return 0.0
    s = confusion_scores(conf)
    return float(100.0 * sum(s[i, j] for i, j, _ in pairs) / failures)


def class_accuracy(conf: np.ndarray) -> np.ndarray:
    """n_ii / n_i in percent per class (docs/method.md §8(g)); NaN for a class with no sample."""
    n = conf.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, 100.0 * np.diag(conf) / n, np.nan)


def expected_persons(index: dict, record: dict) -> int | None:
    """How many persons clip `record` should show: NTU's rule, else the index's metadata, else None (unknown).

    Sources, in order: the record's own `expected_persons`; the index's `expected_persons` (an int, or a mapping from
    label or label name to an int); NTU names `SsssCcccPpppRrrrAaaa` (2 for the mutual actions A050-A060 and
    A106-A120, else 1); mocap15's per-sample metadata (`index["mocap15"]["samples"][frame_dir]["persons"]`).
    """
    if "expected_persons" in record:
        return int(record["expected_persons"])
    meta = index.get("expected_persons")
    if isinstance(meta, (int, np.integer)) and not isinstance(meta, bool):
        return int(meta)
    label = record.get("label")
    if isinstance(meta, dict) and label is not None:
        names = index.get("label_names")
        for key in (label, str(label), names[label] if names is not None and label < len(names) else None):
            if key is not None and key in meta:
                return int(meta[key])
    try:
        ntu = parse_ntu_name(str(record["frame_dir"]))
    except UnknownVideoError:
        ntu = None
    if ntu is not None:
        return 2 if ntu.action in NTU_TWO_PERSON_ACTIONS else 1
    mocap = index.get("mocap15")
    info = mocap.get("samples", {}).get(record["frame_dir"]) if isinstance(mocap, dict) else None
    if info and "persons" in info:
        return int(info["persons"])
    return None


def pose_quality(index: dict, frame_dirs: list[str]) -> dict:
    """Table 3 of the seed for the clips `frame_dirs` of a pose index.

    A person is detected in a frame when any of its joints has a score > 0; a keypoint is missing when its score is 0
    (the data contract writes missing joints as coordinates 0, score 0).

    Returns:
        {"clips", "person_frames": detected person-frames, "missing_keypoints_pct": missing joints among detected
        persons, "expected_person_frames", "missing_persons_pct": sum over frames of max(expected - detected, 0)
        against the expected count (None when no clip has a known expected count), "unknown_expected": clips without
        one}.
    """
    by_name = {a["frame_dir"]: a for a in index["annotations"]}
    det_frames = missing_kp = expected_total = missing_persons = unknown = 0
    for name in frame_dirs:
        rec = by_name[name]
        score = np.asarray(rec["keypoint_score"])  # [M, T, V]
        t = int(rec.get("total_frames", score.shape[1] if score.ndim == 3 else 0))
        detected = (score > 0).any(axis=-1) if score.size else np.zeros((0, t), dtype=bool)  # [M, T]
        det_frames += int(detected.sum())
        missing_kp += int(((score == 0) & detected[..., None]).sum())
        want = expected_persons(index, rec)
        if want is None:
            unknown += 1
            continue
        per_frame = detected.sum(axis=0) if detected.shape[0] else np.zeros(t, dtype=np.int64)  # [T]
        expected_total += want * t
        missing_persons += int(np.clip(want - per_frame, 0, None).sum())
    v = 17
    return {
        "clips": len(frame_dirs),
        "person_frames": det_frames,
        "missing_keypoints_pct": 100.0 * missing_kp / (det_frames * v) if det_frames else 0.0,
        "expected_person_frames": expected_total,
        "missing_persons_pct": 100.0 * missing_persons / expected_total if expected_total else None,
        "unknown_expected": unknown,
    }


def tsne_embedding(features: np.ndarray, *, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """2-d t-SNE (scikit-learn, PCA init, fixed seed) of features [N, D] -> [N, 2] float32."""
    from sklearn.manifold import TSNE

    n = len(features)
    if n < 3:
        return np.zeros((n, 2), dtype=np.float32)
    tsne = TSNE(n_components=2, perplexity=min(perplexity, (n - 1) / 3), init="pca", random_state=seed)
    return tsne.fit_transform(np.asarray(features, dtype=np.float64)).astype(np.float32)
