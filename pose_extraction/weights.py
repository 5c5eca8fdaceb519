"""The local weights cache: official checkpoints of the estimators and of MotionBERT.

`python -m pose_extraction weights NAME` (or `make weights ESTIMATOR=...`, `make weights
MODEL=motionbert`) fetches the official checkpoint files of an estimator (and of the person
detector a top-down estimator needs) or of a model from their official addresses into the cache,
through the project's one downloader (`pipeline/fetch.py`: a progress bar, resume of a cut
download from `<file>.part`, atomic rename). Each file's SHA-256 is checked against the prefix
its publisher put in the file name (mmpose and torchvision name files `<name>-<first 8 hex of
sha256>.pth`), a digest the server sends (Hugging Face's `X-Linked-Etag`), and the digest
recorded at its first fetch: a cached file whose bytes changed is an error, never downloaded
over, and a file already cached and verified needs no network. `--from FILE` imports a local
file instead (no network; checked the same way). Everything else in the project reads weights
only from this cache or from an explicit path.

MotionBERT (docs/architecture.md §8.6): `motionbert` is the pretrained backbone (role
"backbone", MotionBERT's `checkpoint/pretrain/MB_release/latest_epoch.bin`);
`motionbert_ntu60_xsub` and `motionbert_ntu60_xview` are its NTU60 finetuned action files
(role "action"). Their published names are generic, so they are cached as
`motionbert-<folder>-<file>`; an imported file of the published name is stored the same way.

Cache folder: `$RSA_WEIGHTS_DIR`, else `~/.cache/robust-skeleton-action/weights/`. A manifest
`manifest.json` there records file, source and full SHA-256 of what was fetched or imported.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.atomic import atomic_write_text
from pipeline.fetch import Digest, FetchError, copy_in, download, sha256_of, source_url, verify

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightFile:
    """One official file: its cache name, where it comes from and the SHA-256 prefix its publisher gives."""

    role: str  # "estimator" or "detector"; a model's "backbone" or "action"
    filename: str
    url: str
    sha256_prefix: str = ""  # "" where the publisher gives none (the digest is recorded at the first fetch)


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

_MB = "https://huggingface.co/walterzhu/MotionBERT/resolve/main/checkpoint/"


def _motionbert(role: str, path: str) -> WeightFile:
    """A file of MotionBERT's Hugging Face release, cached as motionbert-<folder>-<file>."""
    folder, name = path.rsplit("/", 1)
    return WeightFile(role, f"motionbert-{folder.rsplit('/', 1)[-1]}-{name}", _MB + path)


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
    # MotionBERT's release (the Hugging Face model card's model zoo): the pretrained DSTformer and the
    # NTU60 finetuned action checkpoints; loaded with `recognition train --init FILE --allow-pickle`.
    "motionbert": (_motionbert("backbone", "pretrain/MB_release/latest_epoch.bin"),),
    "motionbert_ntu60_xsub": (_motionbert("action", "action/FT_MB_release_MB_ft_NTU60_xsub/best_epoch.bin"),),
    "motionbert_ntu60_xview": (_motionbert("action", "action/FT_MB_release_MB_ft_NTU60_xview/best_epoch.bin"),),
}


class WeightsError(RuntimeError):
    """A weights file is missing, corrupt, or cannot be fetched."""


def cache_dir() -> Path:
    return Path(os.environ.get("RSA_WEIGHTS_DIR", Path.home() / ".cache/robust-skeleton-action/weights"))


def _manifest() -> dict:
    path = cache_dir() / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _record(estimator: str, role: str, path: Path, source: str, digest: str) -> None:
    manifest = _manifest()
    manifest.setdefault(estimator, {})[role] = {"file": path.name, "source": source, "sha256": digest}
    atomic_write_text(cache_dir() / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _make_var(name: str) -> str:
    """The Make variable that names `name`: MODEL for a model's weights, else ESTIMATOR."""
    return "MODEL" if any(wf.role not in ("estimator", "detector") for wf in OFFICIAL.get(name, ())) else "ESTIMATOR"


def _role(name: str, role: str) -> str:
    """`role`, where the command line's default "estimator" means a model's own first role ("backbone")."""
    roles = [wf.role for wf in OFFICIAL.get(name, ())]
    return roles[0] if role == "estimator" and roles and role not in roles else role


def _recorded(filename: str) -> list[Digest]:
    """The SHA-256s the manifest recorded for a cached file (under any name and role)."""
    values = {
        e["sha256"]
        for roles in _manifest().values()
        for e in roles.values()
        if e.get("file") == filename and "sha256" in e
    }
    where = f"recorded in {cache_dir() / 'manifest.json'} when it was first fetched"
    return [Digest(v, where) for v in sorted(values)]


def _published(wf: WeightFile | None) -> list[Digest]:
    return [Digest(wf.sha256_prefix, "published in its file name")] if wf and wf.sha256_prefix else []


def _digests(wf: WeightFile) -> list[Digest]:
    return _published(wf) + _recorded(wf.filename)


def resolve(estimator: str, role: str = "estimator", explicit: str | os.PathLike | None = None) -> Path:
    """The weights file to use: `explicit` if given, else the cached one for (estimator, role).

    Raises:
        WeightsError: naming `make weights ESTIMATOR=<estimator>` (MODEL= for a model) when nothing is cached.
    """
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise WeightsError(f"weights file {p} not found")
        return p
    role = _role(estimator, role)
    entry = _manifest().get(estimator, {}).get(role)
    if entry:
        p = cache_dir() / entry["file"]
        if p.is_file():
            return p
    raise WeightsError(
        f"no {role} weights for {estimator!r} in {cache_dir()}: run `make weights {_make_var(estimator)}={estimator}` "
        f"(or `python -m pose_extraction weights {estimator} --from FILE` for a local file)"
    )


def import_file(estimator: str, src: str | os.PathLike, *, role: str = "estimator") -> Path:
    """Copy a local file into the cache and record its SHA-256 (no network).

    The file keeps its name, except a file of an official file's published name (the last part of
    its URL), which takes that file's cache name and must match its published and recorded
    digests. A cached file of that name with other bytes is an error, never replaced.
    """
    src = Path(src)
    if not src.is_file():
        raise WeightsError(f"{src}: not a file")
    role = _role(estimator, role)
    official = next(
        (wf for wf in OFFICIAL.get(estimator, ()) if wf.role == role and wf.url.rsplit("/", 1)[-1] == src.name), None
    )
    dest = cache_dir() / (official.filename if official else src.name)
    try:
        if src.resolve() == dest.resolve():  # a file put into the cache by hand: recorded as it is
            digest = verify(dest, _published(official))
        elif dest.is_file():
            digest = verify(dest, _digests(official) if official else _recorded(dest.name))
            if sha256_of(src) != digest:
                raise WeightsError(f"{dest} already holds other bytes than {src}; delete it first to import {src}")
        else:
            digest = copy_in(src, dest, digests=_digests(official) if official else _recorded(dest.name))
    except FetchError as exc:
        raise WeightsError(str(exc)) from None
    _record(estimator, role, dest, f"file:{src.resolve()}", digest)
    log.info("imported %s as %s weights of %s (sha256 %s)", src, role, estimator, digest[:12])
    return dest


def fetch(estimator: str) -> list[Path]:
    """Download the official files of `estimator` into the cache (verify those already there).

    Raises:
        WeightsError: an unknown name, a network error (one line naming the URL), or a file whose
            SHA-256 does not match its published or recorded digest.
    """
    if estimator == "blazepose":
        raise WeightsError(
            "blazepose needs no download: its model ships inside the mediapipe 0.10.21 wheel (make install-mediapipe)"
        )
    if estimator not in OFFICIAL:
        raise WeightsError(f"no official download known for {estimator!r}; known: {sorted(OFFICIAL)}; use --from FILE")
    paths = []
    for wf in OFFICIAL[estimator]:
        dest = cache_dir() / wf.filename
        before = _manifest().get(estimator, {}).get(wf.role, {})
        try:
            if dest.is_file():
                digest = verify(dest, _digests(wf))
                source = before["source"] if before.get("file") == wf.filename and "source" in before else wf.url
                log.info("%s: already cached, sha256 %s verified", dest, digest[:12])
            else:
                digest = download(wf.url, dest, digests=_digests(wf), desc=wf.filename)
                source = source_url(wf.url)
        except FetchError as exc:
            raise WeightsError(str(exc)) from None
        _record(estimator, wf.role, dest, source, digest)
        paths.append(dest)
    return paths
