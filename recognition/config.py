"""Stage-2 run configuration: frozen dataclasses whose defaults are MotionBERT's action recipe.

A YAML under `configs/recognition/` lists only what differs; `--set a.b=v` overrides it.
`faithful: true` switches every item of the faithful table (F1-F9, docs/method.md §10) to the official
code's behaviour, whatever the individual keys say; `resolve()` applies it, and the resolved
values are what runs, what is written to `config.yaml` and what checkpoints embed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from recognition.preprocess import PreprocessOptions, faithful_options


@dataclass(frozen=True)
class ModelConfig:
    """Backbone and head. `preset` picks sizes from the backbone's PRESETS."""

    backbone: str = "dstformer"
    preset: str = "base"
    hidden_dim: int = 2048
    dropout: float = 0.5
    maxlen: int = 243
    faithful_residual_bug: bool = False  # F9, transformer backbone only: the MaskCLR port's x = 2·attn(x)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with backbone and head groups, StepLR(x lr_decay) per epoch."""

    epochs: int = 300
    batch_size: int = 32
    lr_backbone: float = 1e-4
    lr_head: float | None = None  # None: by the recipe, `head_lr_for` (1e-3 finetuning with --init, 1e-4 from scratch)
    weight_decay: float = 0.01
    lr_decay: float = 0.99
    num_workers: int = 0
    pin_memory: bool = False  # pinned host batches (CUDA only; ignored on CPU)
    replica_groups: int = 1  # 2: the official 2-GPU DataParallel split of each batch (recognition/replicas.py)
    skip_bad: bool = False


@dataclass(frozen=True)
class MaskCLRConfig:
    """AGPM + MLCL (docs/method.md §5–6). Off unless `enabled`."""

    enabled: bool = False
    start_epoch: int = 0  # the masked path and contrastive losses run from this epoch on
    masking: Literal["agpm", "v1"] = "agpm"
    mask_ratio: float = 0.5
    mask_tau: float = 0.75
    mask_axis: Literal["joint", "sample"] = "joint"
    v1_ratio: float = 0.2
    v1_tube_len: int = 27
    lambda_sc: float = 0.5
    lambda_cc: float = 0.5
    temperature_sc: float = 0.5
    cl_type: Literal["tcl", "cl"] = "tcl"
    embedding: Literal["logits", "hidden"] = "logits"
    avg_ce: bool = False
    cc_alpha: float = 0.9
    sc_p_dim: int = 1  # F2: 0 = softmax over the batch (official), 1 = over classes
    cc_detach: bool = False  # F1: True = class-level loss from detached logits (no gradient)
    cc_update_on_val: bool = False  # F7
    supcon_rowmax: bool = False  # F8


@dataclass(frozen=True)
class RandomMaskConfig:
    """MotionBERT-R (docs/method.md §7.5): every training step masks `ratio` of each real person's (frame, joint)
    tokens, drawn uniformly; the model's mask token replaces them (zeroed joints on backbones without one). 0: off."""

    ratio: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"random_mask.ratio must be in [0, 1), got {self.ratio}")


# Dataset families a shipped config can be written for, with their class counts (docs/method.md §12).
FAMILY_CLASSES = {"ntu60": 60, "ntu120": 120, "kinetics400": 400}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides its paths (which come from the command line).

    `dataset` names the family the config is written for (a key of FAMILY_CLASSES); training refuses an index of
    another family. None: any index (mocap15, folder datasets).
    """

    seed: int = 0
    faithful: bool = False
    dataset: str | None = None
    noise_per_person: bool = True  # F6, for noisy evaluation
    model: ModelConfig = field(default_factory=ModelConfig)
    data: PreprocessOptions = field(default_factory=PreprocessOptions)
    optim: OptimConfig = field(default_factory=OptimConfig)
    maskclr: MaskCLRConfig = field(default_factory=MaskCLRConfig)
    random_mask: RandomMaskConfig = field(default_factory=RandomMaskConfig)


# Protocol names that mean the unprefixed `train`/`val` pair of Kinetics400 and folder indexes.
PLAIN_PROTOCOLS = ("", "train", "all")


def split_names(protocol: str) -> tuple[str, str]:
    """(training split, validation split) of a protocol: `xsub` -> (`xsub_train`, `xsub_val`); `""`, `train` or `all`
    -> (`train`, `val`), the splits of Kinetics400 and folder indexes."""
    if protocol in PLAIN_PROTOCOLS:
        return "train", "val"
    return f"{protocol}_train", f"{protocol}_val"


def check_family(cfg: TrainConfig, *, family: str | None, num_classes: int, source: object) -> None:
    """Refuse an index of another family than the config's `dataset` (named by the index, or told by its class count).

    Raises:
        ValueError: naming the index `source`, both families and the config to use instead.
    """
    want = cfg.dataset
    if want is None:
        return
    got = family or next((f for f, n in FAMILY_CLASSES.items() if n == num_classes), None)
    if got == want and num_classes == FAMILY_CLASSES[want]:
        return
    what = f"a {got} index of {num_classes} classes" if got else f"an index of {num_classes} classes"
    instead = f"a {got} config" if got in FAMILY_CLASSES else "a config without `dataset`"
    raise ValueError(
        f"{source}: {what}, but the config is for {want} ({FAMILY_CLASSES[want]} classes); "
        f"use {instead} (make configs lists the shipped ones) or a {want} index"
    )


HEAD_LR_FINETUNE = 1e-3  # MotionBERT MB_ft_*: a pretrained (or phase-1) backbone is loaded
HEAD_LR_SCRATCH = 1e-4  # MotionBERT MB_train_*: from scratch


def head_lr_for(cfg: TrainConfig, *, init: bool) -> TrainConfig:
    """`cfg` with `optim.lr_head` set: as given, else MotionBERT's recipe for whether `--init` loads weights
    (docs/method.md §7.1). The value that runs is the one written to config.yaml and the checkpoints."""
    if cfg.optim.lr_head is not None:
        return cfg
    lr = HEAD_LR_FINETUNE if init else HEAD_LR_SCRATCH
    return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr_head=lr))


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Apply `faithful: true` (official behaviour for F1-F9) and check cross-field rules."""
    if cfg.data.clip_len > cfg.model.maxlen:
        raise ValueError(f"data.clip_len {cfg.data.clip_len} exceeds model.maxlen {cfg.model.maxlen}")
    if cfg.maskclr.sc_p_dim not in (0, 1):
        raise ValueError(f"maskclr.sc_p_dim must be 0 or 1, got {cfg.maskclr.sc_p_dim}")
    if cfg.optim.replica_groups < 1:
        raise ValueError(f"optim.replica_groups must be >= 1, got {cfg.optim.replica_groups}")
    if cfg.dataset is not None and cfg.dataset not in FAMILY_CLASSES:
        raise ValueError(f"dataset {cfg.dataset!r} is not a known family; valid: {', '.join(FAMILY_CLASSES)} or null")
    if cfg.random_mask.ratio and cfg.maskclr.enabled:
        raise ValueError("random_mask (MotionBERT-R) and maskclr are two different models; enable one of them")
    if cfg.model.faithful_residual_bug and cfg.model.backbone != "transformer":
        raise ValueError(
            f"model.faithful_residual_bug (F9) exists only for the transformer backbone, not {cfg.model.backbone!r}"
        )
    if not cfg.faithful:
        return cfg
    model = dataclasses.replace(cfg.model, faithful_residual_bug=cfg.model.backbone == "transformer")
    data = faithful_options(cfg.data)
    mclr = dataclasses.replace(cfg.maskclr, sc_p_dim=0, cc_detach=True, cc_update_on_val=True, supcon_rowmax=True)
    return dataclasses.replace(cfg, model=model, data=data, maskclr=mclr, noise_per_person=False)
