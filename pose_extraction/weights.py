"""The local weights cache: the only place in the project that downloads anything.

`python -m pose_extraction weights ESTIMATOR` (or `make weights ESTIMATOR=...`) fetches the
official checkpoint files of an estimator (and of the person detector a top-down estimator
needs) from their official addresses into the cache, and checks each file's SHA-256 against
the prefix its publisher put in the file name (mmpose and torchvision name files
`<name>-<first 8 hex of sha256>.pth`). `--from FILE` imports a local file instead (no network).
Everything else in the project reads weights only from this cache or from an explicit path.

Cache folder: `$RSA_WEIGHTS_DIR`, else `~/.cache/robust-skeleton-action/weights/`. A manifest
`manifest.json` there records file, source and full SHA-256 of what was fetched or imported.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pipeline.atomic import atomic_open, atomic_write_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightFile:
    """One official file: where it comes from and the SHA-256 prefix its publisher gives."""

    role: str  # "estimator" or "detector"
    filename: str
    url: str
    sha256_prefix: str


_DETECTOR = WeightFile(
    "detector",
    "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth",
    "https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth",
    "dd69338a",
)

_OPP = "https://github.com/openpifpaf/torchhub/releases/download/v0.13/"
_K16 = "shufflenetv2k16-210820-232500-cocokp-slurm726069-edge513-o10s-7189450a.pkl"
_K30 = "shufflenetv2k30-210821-003923-cocokp-slurm726072-edge513-o10s-5fe1c400.pkl"
_R50 = "resnet50-210830-150728-cocokp-slurm728641-edge513-o10s-ecd30da4.pkl"

OFFICIAL: dict[str, tuple[WeightFile, ...]] = {
    # OpenPifPaf's published checkpoints are whole pickled models (loaded only from this cache or
    # an explicit path); the default network is shufflenetv2k16, the others under their own names.
    "openpifpaf": (WeightFile("estimator", _K16, _OPP + _K16, "7189450a"),),
    "openpifpaf_shufflenetv2k30": (WeightFile("estimator", _K30, _OPP + _K30, "5fe1c400"),),
    "openpifpaf_resnet50": (WeightFile("estimator", _R50, _OPP + _R50, "ecd30da4"),),
    "vitpose": (
        WeightFile(
            "estimator",
            "td-hm_ViTPose-base_8xb64-210e_coco-256x192-216eae50_20230314.pth",
            "https://download.openmmlab.com/mmpose/v1/body_2d_keypoint/topdown_heatmap/coco/"
            "td-hm_ViTPose-base_8xb64-210e_coco-256x192-216eae50_20230314.pth",
            "216eae50",
        ),
        _DETECTOR,
    ),
    "hrnet": (
        WeightFile(
            "estimator",
            "hrnet_w32_coco_256x192-c78dce93_20200708.pth",
            "https://download.openmmlab.com/mmpose/top_down/hrnet/hrnet_w32_coco_256x192-c78dce93_20200708.pth",
            "c78dce93",
        ),
        _DETECTOR,
    ),
}


class WeightsError(RuntimeError):
    """A weights file is missing, corrupt, or cannot be fetched."""


def cache_dir() -> Path:
    return Path(os.environ.get("RSA_WEIGHTS_DIR", Path.home() / ".cache/robust-skeleton-action/weights"))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _manifest() -> dict:
    path = cache_dir() / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _record(estimator: str, role: str, path: Path, source: str, digest: str) -> None:
    manifest = _manifest()
    manifest.setdefault(estimator, {})[role] = {"file": path.name, "source": source, "sha256": digest}
    atomic_write_text(cache_dir() / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def resolve(estimator: str, role: str = "estimator", explicit: str | os.PathLike | None = None) -> Path:
    """The weights file to use: `explicit` if given, else the cached one for (estimator, role).

    Raises:
        WeightsError: naming `make weights ESTIMATOR=<estimator>` when nothing is cached.
    """
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise WeightsError(f"weights file {p} not found")
        return p
    entry = _manifest().get(estimator, {}).get(role)
    if entry:
        p = cache_dir() / entry["file"]
        if p.is_file():
            return p
    raise WeightsError(
        f"no {role} weights for {estimator!r} in {cache_dir()}: run `make weights ESTIMATOR={estimator}` "
        f"(or `python -m pose_extraction weights {estimator} --from FILE` for a local file)"
    )


def import_file(estimator: str, src: str | os.PathLike, *, role: str = "estimator") -> Path:
    """Copy a local file into the cache and record its SHA-256 (no network)."""
    src = Path(src)
    if not src.is_file():
        raise WeightsError(f"{src}: not a file")
    dest = cache_dir() / src.name
    if src.resolve() != dest.resolve():
        with atomic_open(dest) as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out)
    digest = sha256_of(dest)
    _record(estimator, role, dest, f"file:{src.resolve()}", digest)
    log.info("imported %s as %s weights of %s (sha256 %s)", src, role, estimator, digest[:12])
    return dest


def fetch(estimator: str) -> list[Path]:
    """Download the official files of `estimator` into the cache, checking their hash prefixes."""
    if estimator == "blazepose":
        raise WeightsError(
            "blazepose needs no download: its model ships inside the mediapipe 0.10.21 wheel (make install-mediapipe)"
        )
    if estimator not in OFFICIAL:
        raise WeightsError(f"no official download known for {estimator!r}; known: {sorted(OFFICIAL)}; use --from FILE")
    paths = []
    for wf in OFFICIAL[estimator]:
        dest = cache_dir() / wf.filename
        if not dest.is_file():
            log.info("downloading %s", wf.url)
            try:
                with urllib.request.urlopen(wf.url, timeout=60) as resp, atomic_open(dest) as out:
                    shutil.copyfileobj(resp, out)
            except OSError as exc:
                raise WeightsError(f"cannot download {wf.url}: {exc}") from exc
        digest = sha256_of(dest)
        if not digest.startswith(wf.sha256_prefix):
            dest.unlink()
            raise WeightsError(f"{wf.filename}: sha256 {digest[:8]}... does not match the published {wf.sha256_prefix}")
        _record(estimator, wf.role, dest, wf.url, digest)
        paths.append(dest)
    return paths
