"""The shipped run configs: `configs/recognition/<model>[_<backbone>]_<family>.yaml`.

The file name says what a config is for; `make train MODEL=maskclr DATASET=ntu60_vitpose SPLIT=xsub` finds
`maskclr_ntu60.yaml` from the dataset's family (the first word of the dataset name) and the model, with no file to
write. `make configs` (`python -m recognition configs`) lists them:

    model        motionbert (from scratch), motionbert_ft (finetuned from the pretrained backbone), motionbert_r
                 (MotionBERT-R, random joint masking), maskclr (phase 2, from the motionbert run)
    backbone     dstformer (no tag in the name), transformer, sttformer
    family       ntu60, ntu120, kinetics400, mocap15 (the embedded demo)
    splits       the protocols of the family (`--split` / `SPLIT=`)

A config of an NTU or Kinetics family sets `dataset:` to its family, and training refuses another family's index
(`recognition.config.check_family`). docs/method.md §7 gives the recipes and their sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "recognition"
MODELS = ("motionbert", "motionbert_ft", "motionbert_r", "maskclr")
BACKBONE_TAGS = ("transformer", "sttformer")  # dstformer has no tag
# The protocols of each family: `<p>_train` / `<p>_val`, or `train` for the plain train/val splits.
FAMILY_SPLITS = {
    "ntu60": ("xsub", "xview"),
    "ntu120": ("xsub", "xset"),
    "kinetics400": ("train",),
    "mocap15": ("xview", "xsub"),
}


@dataclass(frozen=True)
class ShippedConfig:
    """One shipped config file and what its name says."""

    model: str
    backbone: str
    family: str
    path: Path

    @property
    def splits(self) -> tuple[str, ...]:
        return FAMILY_SPLITS[self.family]


def parse_name(path: Path) -> ShippedConfig:
    """What `<model>[_<backbone>]_<family>.yaml` names.

    Raises:
        ValueError: the name does not follow the convention.
    """
    stem = path.stem
    family = next((f for f in FAMILY_SPLITS if stem.endswith(f"_{f}")), None)
    rest = stem[: -len(family) - 1] if family else ""
    backbone = next((b for b in BACKBONE_TAGS if rest.endswith(f"_{b}")), None)
    model = rest[: -len(backbone) - 1] if backbone else rest
    if family is None or model not in MODELS:
        raise ValueError(
            f"{path}: not named <model>[_<backbone>]_<family>.yaml with model in {MODELS}, backbone in "
            f"{BACKBONE_TAGS} and family in {tuple(FAMILY_SPLITS)}"
        )
    return ShippedConfig(model, backbone or "dstformer", family, path)


def shipped_configs(directory: Path = CONFIG_DIR) -> list[ShippedConfig]:
    """Every config of `directory`, sorted by family, model, backbone (in the orders above)."""
    found = [parse_name(p) for p in sorted(directory.glob("*.yaml"))]
    backbones = ("dstformer", *BACKBONE_TAGS)
    families = list(FAMILY_SPLITS)
    return sorted(found, key=lambda c: (families.index(c.family), MODELS.index(c.model), backbones.index(c.backbone)))


def family_of(dataset: str) -> str:
    """The family of a dataset name: its first word (`ntu60_vitpose` -> `ntu60`)."""
    return dataset.split("_", 1)[0]


def find_config(model: str, backbone: str, dataset: str, directory: Path = CONFIG_DIR) -> Path:
    """The shipped config of `model` on `backbone` for the family of `dataset`.

    Raises:
        ValueError: none is shipped; the message lists what is, for that family or model.
    """
    family = family_of(dataset)
    for c in shipped_configs(directory):
        if (c.model, c.backbone, c.family) == (model, backbone, family):
            return c.path
    same = [c.path.name for c in shipped_configs(directory) if c.family == family]
    hint = f"shipped for {family}: {', '.join(same)}" if same else f"no config is shipped for the family {family!r}"
    raise ValueError(
        f"no shipped config for MODEL={model} BACKBONE={backbone} on {dataset} (family {family}); {hint}; "
        "pass CONFIG=your.yaml (make configs lists them)"
    )


def _shown(path: Path) -> str:
    """`path` relative to the repository when it lies inside it."""
    root = CONFIG_DIR.parent.parent
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def format_table(configs: list[ShippedConfig]) -> str:
    """The `make configs` table: model, backbone, family, splits, file."""
    rows = [("model", "backbone", "family", "splits", "file")]
    rows += [(c.model, c.backbone, c.family, ",".join(c.splits), _shown(c.path)) for c in configs]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(f"{v:<{w}}" for v, w in zip(r[:4], widths)) + "  " + r[4] for r in rows)
