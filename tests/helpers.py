"""Generated test data shared by the test packages (import as `from tests.helpers import ...`)."""

from __future__ import annotations

import numpy as np


def make_record(
    M: int = 2,
    T: int = 16,
    V: int = 17,
    *,
    seed: int = 0,
    frame_dir: str = "clip0",
    label: int | None = None,
    img_shape: tuple[int, int] = (1080, 1920),
) -> dict:
    """A random but valid pose record (float32, scores in [0, 1])."""
    rng = np.random.default_rng(seed)
    h, w = img_shape
    kp = (rng.random((M, T, V, 2)) * np.array([w, h])).astype(np.float32)
    score = rng.random((M, T, V)).astype(np.float32)
    rec = {
        "frame_dir": frame_dir,
        "total_frames": T,
        "img_shape": img_shape,
        "original_shape": img_shape,
        "keypoint": kp,
        "keypoint_score": score,
        "fps": 30.0,
        "person_ids": np.arange(M, dtype=np.int64),
        "estimator": {"name": "random", "weights": "", "version": "1"},
        "schema_version": 1,
    }
    if label is not None:
        rec["label"] = label
    return rec


def make_index(n: int = 6, *, num_classes: int = 3, T: int = 16, seed: int = 0) -> dict:
    """A valid dataset index with xsub/xview splits over `n` random clips."""
    anns = [
        make_record(M=1 + i % 2, T=T + i, seed=seed + i, frame_dir=f"c{i:03d}", label=i % num_classes) for i in range(n)
    ]
    names = [a["frame_dir"] for a in anns]
    half = n // 2
    split = {
        "xsub_train": names[:half],
        "xsub_val": names[half:],
        "xview_train": names[half:],
        "xview_val": names[:half],
    }
    return {"split": split, "annotations": anns}


def load_as_numpy1(path) -> object:
    """Assert that the pickle at `path` names only `numpy.core.*` numpy globals (which numpy 1.x and 2.x both import)
    and load it with an unpickler that refuses numpy 2's `numpy._core` names, as numpy 1 would."""
    import io
    import pickle
    import pickletools
    import warnings
    from pathlib import Path

    data = Path(path).read_bytes()
    names = {a for op, a, _ in pickletools.genops(data) if isinstance(a, str) and a.startswith("numpy")}
    names |= {a.split()[0] for op, a, _ in pickletools.genops(data) if op.name == "GLOBAL"}
    assert names and all(n == "numpy" or n.startswith("numpy.core.") for n in names), names

    class Numpy1Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            assert not module.startswith("numpy._core"), module
            return super().find_class(module, name)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2's numpy.core shim
        return Numpy1Unpickler(io.BytesIO(data)).load()
