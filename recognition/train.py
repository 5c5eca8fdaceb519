"""Training loop: dataset index -> `OUT/{config.yaml, last.pt, best.pt, metrics.jsonl, tb/}`.

One plain loop for the MotionBERT baseline and MaskCLR. Per epoch: train (a standard pass, and
from `maskclr.start_epoch` on the AGPM-masked pass and the MLCL losses), validate (top-1/top-5
on `<split>_val`), write `last.pt` atomically (model, optimizer, scheduler, loss memory, RNG
state, history) and `best.pt` when val top-1 improves. `--resume` continues from `last.pt`
exactly: same epoch, optimizer, scheduler, centroid memory and RNG state. Data randomness is
a pure function of (seed, epoch, item), so it does not depend on workers or restarts.

No usable training clip (an empty `<split>_train`, or every clip skipped by `skip_bad`) is an error
before anything is written. An empty validation split (none listed, or all skipped) is a warning:
there is nothing to select on, so `best.pt` is the last epoch's weights (Make's target still exists),
the `val_*` entries of `metrics.jsonl` are null and the checkpoints' `best_metric` is None.

Distributed: launched by `torchrun`, each rank takes its shard of every epoch (gloo on CPU,
NCCL on CUDA); rank 0 writes the files.

Read top to bottom: the builders, then `setup` (data, model, optimiser, scheduler, loss, resumed
or initial state), `train_one_epoch`, `validate`, `save` and `run_train`, the driver. The device,
process group and seeds are `recognition.runtime`'s; datasets and splits `recognition.data`'s. With `-v`, each
training step is logged (`epoch E step S/N`, before the step runs).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler

from pipeline.atomic import atomic_write_text, write_text_if_changed
from pipeline.config import dump_yaml, to_dict
from pipeline.progress import progress
from pipeline.store import open_dataset
from recognition.checkpoint import init_from, is_ours, read_checkpoint, save_checkpoint
from recognition.checkpoint_import import CheckpointError
from recognition.config import TrainConfig, check_family, head_lr_for, split_names
from recognition.data import SkeletonDataset, label_names_of, make_dataset, no_clips_message, require_clips
from recognition.maskclr.agpm import agpm_mask, apply_input_zero_mask, v1_input_mask
from recognition.maskclr.losses import MLCLLoss
from recognition.models.action import ActionModel, build_action_model
from recognition.replicas import kept_running_statistics, per_replica, replica_forward
from recognition.runtime import Dist, autocast_for, seed_everything, setup_distributed, teardown_distributed

log = logging.getLogger(__name__)

_RESUME_REMEDY = "delete it and rerun without --resume to train from scratch"
_NO_VAL = dict.fromkeys(("val_top1", "val_top5", "val_loss"), None) | {"val_n": 0}  # no fake 0.0 accuracy


def build_model(cfg: TrainConfig, num_classes: int) -> ActionModel:
    return build_action_model(**model_config_of(cfg, num_classes))


def model_config_of(cfg: TrainConfig, num_classes: int) -> dict:
    """`build_action_model` keyword arguments; what checkpoints store to rebuild the model."""
    m = cfg.model
    out = dict(
        num_classes=num_classes,
        backbone=m.backbone,
        preset=m.preset,
        hidden_dim=m.hidden_dim,
        dropout=m.dropout,
        maxlen=m.maxlen,
        use_mask_token=(cfg.maskclr.enabled and cfg.maskclr.masking == "agpm") or cfg.random_mask.ratio > 0,
    )
    if m.faithful_residual_bug:  # F9; absent otherwise, so other runs' model configs are unchanged
        out["backbone_options"] = {"faithful_residual_bug": True}
    return out


def make_optimizer(cfg: TrainConfig, model: ActionModel):
    groups = [
        {"params": list(model.backbone.parameters()), "lr": cfg.optim.lr_backbone},
        {"params": list(model.head.parameters()), "lr": cfg.optim.lr_head},
    ]
    opt = torch.optim.AdamW(groups, weight_decay=cfg.optim.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=cfg.optim.lr_decay)
    return opt, sched


def make_loss(cfg: TrainConfig, num_classes: int) -> MLCLLoss:
    mc = cfg.maskclr
    return MLCLLoss(
        num_classes=num_classes,
        lambda_sc=mc.lambda_sc,
        lambda_cc=mc.lambda_cc,
        temperature_sc=mc.temperature_sc,
        sc_p_dim=mc.sc_p_dim,
        cc_detach=mc.cc_detach,
        alpha=mc.cc_alpha,
        cl_type=mc.cl_type,
        supcon_rowmax=mc.supcon_rowmax,
    )


def maskclr_step(cfg: TrainConfig, model, core: ActionModel, loss_fn: MLCLLoss, x, y, *, update_memory: bool):
    """Standard pass -> AGPM mask from its attention -> masked pass -> CE + MLCL terms.

    `model` may be the DDP wrapper; the standard pass goes through the plain module `core` so
    that DDP sees exactly one forward per backward.
    """
    mc, groups = cfg.maskclr, cfg.optim.replica_groups
    out = replica_forward(core, x, groups, return_attention=True)
    scores = out.activation  # [N, M, T, V], attention received per token, no gradient
    if mc.masking == "agpm":
        mask = per_replica(
            lambda s: agpm_mask(s, ratio=mc.mask_ratio, tau=mc.mask_tau, axis=mc.mask_axis), scores, groups
        )
    else:
        mask = per_replica(
            lambda s: v1_input_mask(s, ratio=mc.v1_ratio, tau=mc.mask_tau, tube_len=mc.v1_tube_len), scores, groups
        )
    # The masked view must not teach the backbone's BatchNorms (STTFormer's) its statistics: evaluation sees whole
    # skeletons (docs/method.md §9.2). The head's BatchNorm learns from both passes, as in the official code.
    with kept_running_statistics(core.backbone):
        if mc.masking == "agpm":
            out_m = replica_forward(model, x, groups, token_mask=mask)
        else:
            out_m = replica_forward(model, apply_input_zero_mask(x, mask), groups)
    ce = F.cross_entropy(out.logits, y)
    if mc.avg_ce:
        ce = 0.5 * (ce + F.cross_entropy(out_m.logits, y))
    z, zm = (out.features, out_m.features) if mc.embedding == "hidden" else (None, None)
    terms = loss_fn(
        out.logits.float(),
        out_m.logits.float(),
        y,
        z=None if z is None else z.float(),
        z_masked=None if zm is None else zm.float(),
        update_memory=update_memory,
    )
    loss = ce + terms["total_contrastive"]
    return (
        loss,
        out.logits,
        {"ce": ce.detach(), "loss_sc": terms["loss_sc"].detach(), "loss_cc": terms["loss_cc"].detach()},
    )


@torch.no_grad()
def evaluate_loader(
    model: ActionModel, loader, device: torch.device, *, loss_fn: MLCLLoss | None = None, update_memory: bool = False
) -> dict:
    """Top-1/top-5 and mean CE over a loader (single deterministic clip per sample)."""
    model.eval()
    n = correct1 = correct5 = 0
    ce_sum = 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x).logits.float()  # validation in float32 on every device (docs/method.md §7.4)
        if loss_fn is not None and update_memory and loss_fn.class_contrast is not None:
            loss_fn.class_contrast(logits, y, update=True)  # F7 (faithful): memory also learns on val
        ce_sum += F.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct1 += (top[:, 0] == y).sum().item()
        correct5 += (top == y[:, None]).any(dim=1).sum().item()
        n += y.numel()
    return {
        "val_top1": 100.0 * correct1 / max(n, 1),
        "val_top5": 100.0 * correct5 / max(n, 1),
        "val_loss": ce_sum / max(n, 1),
        "val_n": n,
    }


@dataclass
class Run:
    """What the loop carries from epoch to epoch; built by `setup`, advanced by the epoch functions."""

    cfg: TrainConfig
    env: Dist
    out: Path
    split: str
    names: list[str]
    train_ds: SkeletonDataset
    sampler: DistributedSampler
    train_loader: DataLoader
    val_loader: DataLoader | None  # None: no validation clip
    core: ActionModel
    model: torch.nn.Module  # `core`, or its DDP wrapper
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.StepLR
    loss_fn: MLCLLoss
    start_epoch: int = 0
    best: float | None = -math.inf  # best val top-1; None once an epoch had no validation
    history: list[dict] = field(default_factory=list)


def make_loaders(cfg: TrainConfig, env: Dist, index: dict, *, data: str | Path, split: str, num_classes: int) -> dict:
    """`Run`'s train_ds, sampler, train_loader and val_loader (None: no validation); no training clip raises."""
    train_split, val_split = split_names(split)
    train_ds = make_dataset(cfg, index, train_split, train=True, num_classes=num_classes, source=data)
    require_clips(train_ds, train_split, data, usable="training clips")
    val_ds = make_dataset(cfg, index, val_split, train=False, num_classes=num_classes, source=data)
    if not len(val_ds):
        log.warning(
            "%s: no validation; best.pt is the last epoch's weights and val_* are null in metrics.jsonl",
            no_clips_message(val_ds, val_split, data, usable="validation clips"),
        )
    sampler = DistributedSampler(
        train_ds, num_replicas=env.world, rank=env.rank, shuffle=True, seed=cfg.seed, drop_last=env.world > 1
    )
    bs, workers = cfg.optim.batch_size, cfg.optim.num_workers
    # MaskCLR drops an incomplete last batch (§7.4); any run drops a last batch of one clip, which the head's
    # BatchNorm cannot normalise in training.
    n = len(sampler)
    drop_last = (cfg.maskclr.enabled and n > bs) or (n > bs and n % bs == 1)
    if drop_last and not cfg.maskclr.enabled:
        log.info("%d training clips per process at batch %d: the last batch of 1 clip is dropped each epoch", n, bs)
    # Workers are not persistent: each epoch's workers copy the dataset after its set_epoch.
    common = dict(batch_size=bs, num_workers=workers, pin_memory=cfg.optim.pin_memory and env.device.type == "cuda")
    train_loader = DataLoader(train_ds, sampler=sampler, drop_last=drop_last, **common)
    val_loader = DataLoader(val_ds, shuffle=False, **common) if len(val_ds) else None
    return {"train_ds": train_ds, "sampler": sampler, "train_loader": train_loader, "val_loader": val_loader}


def restore(run: Run, path: Path) -> None:
    """Continue from our `path` (last.pt): weights, optimiser, scheduler, loss memory, torch RNG, history."""
    ck = read_checkpoint(path, remedy=_RESUME_REMEDY)
    if not is_ours(ck):
        raise CheckpointError(f"{path}: not a checkpoint written by train; {_RESUME_REMEDY}")
    run.core.load_state_dict(ck["model_state"])
    run.opt.load_state_dict(ck["optimizer"])
    run.sched.load_state_dict(ck["scheduler"])
    run.loss_fn.load_state_dict(ck["loss_state"])
    torch.set_rng_state(ck["rng"]["torch"])
    run.start_epoch, run.history = ck["epoch"] + 1, list(ck["history"])
    run.best = -math.inf if ck["best_metric"] is None else ck["best_metric"]  # None: trained without validation
    log.info(
        "resumed %s at epoch %d (best val top-1 %s)",
        path,
        run.start_epoch,
        "none" if ck["best_metric"] is None else f"{run.best:.2f}",
    )


def setup(
    cfg: TrainConfig,
    env: Dist,
    *,
    data: str | Path,
    split: str,
    out: Path,
    init: str | None,
    resume: bool,
    allow_pickle: bool = False,
) -> Run:
    """Data, model, optimiser, scheduler and loss, then `out/last.pt`'s state (`resume`) or the `init` weights.

    Writes nothing. The torch RNG is drawn in a fixed order (model, then loss initialisation).
    """
    cfg = head_lr_for(cfg, init=init is not None)
    if cfg.optim.replica_groups > 1 and env.world > 1:
        raise ValueError(
            f"optim.replica_groups {cfg.optim.replica_groups} emulates DataParallel replicas in one process; under "
            "torchrun every rank is already one replica: set optim.replica_groups=1"
        )
    index = open_dataset(data)
    names = label_names_of(index)
    family = index.get("dataset") if isinstance(index, dict) else getattr(index, "dataset", None)
    check_family(cfg, family=family, num_classes=len(names), source=data)
    loaders = make_loaders(cfg, env, index, data=data, split=split, num_classes=len(names))
    core = build_model(cfg, len(names)).to(env.device)
    opt, sched = make_optimizer(cfg, core)
    loss_fn = make_loss(cfg, len(names)).to(env.device)
    run = Run(cfg, env, out, split, names, core=core, model=core, opt=opt, sched=sched, loss_fn=loss_fn, **loaders)
    last_path = out / "last.pt"
    if resume and last_path.is_file():
        restore(run, last_path)
    elif resume:
        log.info("--resume: no %s yet; starting from scratch", last_path)
    elif init:
        log.info("--init %s: %s", init, init_from(core, init, allow_pickle=allow_pickle))
    if env.world > 1:
        device_ids = [env.device] if env.device.type == "cuda" else None
        # MaskCLR: the standard pass runs outside the wrapper (maskclr_step), so DDP cannot assume that
        # its one forward reaches every parameter.
        run.model = torch.nn.parallel.DistributedDataParallel(
            core, device_ids=device_ids, find_unused_parameters=cfg.maskclr.enabled
        )
    if cfg.maskclr.enabled and cfg.maskclr.cc_detach and cfg.maskclr.cl_type == "tcl":
        log.warning(
            "faithful L_cc: built from detached logits, it has NO gradient and is only logged (switch F1, docs/method.md §10)"
        )
    return run


def random_token_mask(x: torch.Tensor, ratio: float) -> torch.Tensor:
    """MotionBERT-R's mask (docs/method.md §7.5): bool [N, M, T, V] with round(ratio·T·V) tokens of each real person
    (any non-zero confidence) drawn uniformly, from the torch RNG; padded persons are never masked."""
    n, m, t, v, _ = x.shape
    k = round(ratio * t * v)
    order = torch.rand(n, m, t * v, device=x.device).argsort(dim=-1)
    mask = torch.zeros(n, m, t * v, dtype=torch.bool, device=x.device)
    mask.scatter_(-1, order[..., :k], True)
    real = (x[..., 2] != 0).flatten(2).any(-1)  # [N, M]
    return (mask & real[..., None]).reshape(n, m, t, v)


def forward_loss(run: Run, x: torch.Tensor, y: torch.Tensor, *, masked: bool):
    """(loss, logits, detached loss parts) of one batch: CE, or the MaskCLR step once `masked`."""
    with autocast_for(run.env.device):
        if masked:
            return maskclr_step(run.cfg, run.model, run.core, run.loss_fn, x, y, update_memory=True)
        mask = random_token_mask(x, run.cfg.random_mask.ratio) if run.cfg.random_mask.ratio else None
        logits = replica_forward(run.model, x, run.cfg.optim.replica_groups, token_mask=mask).logits
        loss = F.cross_entropy(logits.float(), y)
        return loss, logits, {"ce": loss.detach()}


def train_one_epoch(run: Run, epoch: int, *, masked: bool) -> dict:
    """One pass over this rank's shard; the epoch's `train_*` means (loss, its parts, accuracy)."""
    dev = run.env.device
    run.sampler.set_epoch(epoch)
    run.train_ds.set_epoch(epoch)
    run.model.train()
    sums: dict[str, float] = {}
    seen = 0
    desc = f"epoch {epoch + 1}/{run.cfg.optim.epochs}"
    bar = progress(run.train_loader, desc=desc, disable=not run.env.main)
    for step, (x, y) in enumerate(bar):
        log.debug("epoch %d step %d/%d", epoch + 1, step + 1, len(run.train_loader))
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        loss, logits, parts = forward_loss(run, x, y, masked=masked)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        k = y.numel()
        seen += k
        for name, v in {"loss": loss.detach(), **parts}.items():
            sums[name] = sums.get(name, 0.0) + float(v) * k
        sums["acc"] = sums.get("acc", 0.0) + float((logits.argmax(1) == y).sum())
        bar.set_postfix(loss=f"{sums['loss'] / seen:.3f}", refresh=False)  # drawn at the bar's own rate
    # "train_acc" keeps the place of sums' "acc" (key order is metrics.jsonl's column order)
    means = {f"train_{k}": v / max(seen, 1) for k, v in sums.items()}
    return means | {"train_acc": 100.0 * sums.get("acc", 0.0) / max(seen, 1)}


def validate(run: Run, *, masked: bool) -> dict:
    """`val_*` of the whole `<split>_val` on every rank; nulls (`_NO_VAL`) without validation clips."""
    if run.val_loader is None:
        return _NO_VAL
    update = masked and run.cfg.maskclr.cc_update_on_val
    return evaluate_loader(run.core, run.val_loader, run.env.device, loss_fn=run.loss_fn, update_memory=update)


def log_epoch(run: Run, entry: dict, writer) -> None:
    """Rank 0: the epoch's log line and its numbers in TensorBoard."""
    has_val = run.val_loader is not None
    val_text = f"val top-1 {entry['val_top1']:.2f} top-5 {entry['val_top5']:.2f}" if has_val else "no validation"
    log.info(
        "epoch %d: train loss %.4f acc %.1f | %s", entry["epoch"], entry["train_loss"], entry["train_acc"], val_text
    )
    for k, v in entry.items():
        if isinstance(v, (int, float)) and k != "epoch":
            writer.add_scalar(k, v, entry["epoch"])
    writer.flush()


def save(run: Run, epoch: int) -> None:
    """Rank 0: `last.pt`, `best.pt` when val top-1 improved (every epoch without validation), `metrics.jsonl`."""
    val_top1 = run.history[-1]["val_top1"]
    if run.val_loader is not None:
        improved = val_top1 > run.best
        run.best = max(run.best, val_top1)
    else:  # nothing to select on: best.pt follows the last epoch
        improved, run.best = True, None
    payload = {
        "model_state": run.core.state_dict(),
        "model_config": model_config_of(run.cfg, len(run.names)),
        "run_config": to_dict(run.cfg),
        "label_names": run.names,
        "epoch": epoch,
        "optimizer": run.opt.state_dict(),
        "scheduler": run.sched.state_dict(),
        "loss_state": run.loss_fn.state_dict(),
        "best_metric": run.best,
        "rng": {"torch": torch.get_rng_state()},
        "history": run.history,
        "split": run.split,
    }
    if improved:
        save_checkpoint(run.out / "best.pt", payload)
    save_checkpoint(run.out / "last.pt", payload)
    atomic_write_text(run.out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in run.history))


def run_train(
    cfg: TrainConfig,
    *,
    data: str | Path,
    split: str,
    out: str | Path,
    device: str = "auto",
    init: str | None = None,
    resume: bool = False,
    allow_pickle: bool = False,
) -> dict:
    """Train; returns the final history entry. See the module docstring for the files.

    `allow_pickle`: read an `init` file that needs full unpickling (MotionBERT's `latest_epoch.bin`
    stores numpy scalars); only for files you trust, as with `evaluate --allow-pickle`.
    """
    out = Path(out)
    env = setup_distributed(device)
    seed_everything(cfg.seed)
    run = setup(cfg, env, data=data, split=split, out=out, init=init, resume=resume, allow_pickle=allow_pickle)
    writer = None
    if env.main:
        out.mkdir(parents=True, exist_ok=True)
        write_text_if_changed(out / "config.yaml", dump_yaml(to_dict(run.cfg)))  # lr_head as it runs
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"), purge_step=run.start_epoch)
    for epoch in range(run.start_epoch, cfg.optim.epochs):
        masked = cfg.maskclr.enabled and epoch >= cfg.maskclr.start_epoch
        train = train_one_epoch(run, epoch, masked=masked)
        run.sched.step()
        val = validate(run, masked=masked)
        lrs = {"lr_backbone": run.opt.param_groups[0]["lr"], "lr_head": run.opt.param_groups[1]["lr"]}
        run.history.append({"epoch": epoch + 1, **train, **val, **lrs, "maskclr_active": masked})
        if env.main:
            log_epoch(run, run.history[-1], writer)
            save(run, epoch)
    if writer is not None:
        writer.close()
    teardown_distributed(env)
    return run.history[-1] if run.history else {}
