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
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from pipeline.atomic import atomic_write_text, write_text_if_changed
from pipeline.config import dump_yaml, to_dict
from pipeline.schema import read_index
from recognition.checkpoint import init_from, is_ours, read_checkpoint, save_checkpoint
from recognition.checkpoint_import import CheckpointError
from recognition.config import TrainConfig
from recognition.data import SkeletonDataset, split_frame_dirs
from recognition.maskclr.agpm import agpm_mask, apply_input_zero_mask, v1_input_mask
from recognition.maskclr.losses import MLCLLoss
from recognition.models.action import ActionModel, build_action_model

log = logging.getLogger(__name__)

_RESUME_REMEDY = "delete it and rerun without --resume to train from scratch"
_NO_VAL = dict.fromkeys(("val_top1", "val_top5", "val_loss"), None) | {"val_n": 0}  # no fake 0.0 accuracy


@dataclass
class Dist:
    """Process-group facts; world 1 when not launched by torchrun."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def pick_device(name: str) -> torch.device:
    """ "auto" -> cuda if available else cpu; "cuda" without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("DEVICE=cuda but no CUDA GPU is visible; use DEVICE=cpu (or auto)")
    return torch.device(name)


def setup_distributed(device: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(device=pick_device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank=rank, world=world, device=dev)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def label_names_of(index: dict) -> list[str]:
    """Class names from the index (`label_names`), else "class_<i>" up to the largest label."""
    if "label_names" in index:
        return [str(n) for n in index["label_names"]]
    top = max((int(a["label"]) for a in index["annotations"]), default=-1)
    return [f"class_{i}" for i in range(top + 1)]


def make_dataset(
    cfg: TrainConfig,
    index: dict,
    split: str,
    *,
    train: bool,
    num_classes: int,
    noise_sigma: float = 0.0,
    source: str | Path | None = None,
) -> SkeletonDataset:
    """The dataset of split `split`; `source` (the index file) is named in the error messages."""
    ds = SkeletonDataset(
        annotations=index["annotations"],
        frame_dirs=split_frame_dirs(index, split, source=source),
        train=train,
        opts=cfg.data,
        seed=cfg.seed,
        num_classes=num_classes,
        noise_sigma=noise_sigma,
        noise_per_person=cfg.noise_per_person,
        skip_bad=cfg.optim.skip_bad,
    )
    if ds.skipped:
        log.warning("%s: skipped %d clips with no data (skip_bad): %s", split, len(ds.skipped), ds.skipped[:5])
    if ds.person_selection:
        log.info("%s: %d clips had more than 2 persons; kept the 2 highest-scoring", split, len(ds.person_selection))
    return ds


def no_clips_message(ds: SkeletonDataset, split: str, source: str | Path, *, usable: str) -> str:
    """Why `ds` (of split `split` of file `source`) is empty, in one line; `usable` names the clips' role."""
    if ds.skipped:
        first = ", ".join(ds.skipped[:5]) + (", ..." if len(ds.skipped) > 5 else "")
        return f"no usable {usable} in split {split!r} of {source} ({len(ds.skipped)} skipped by skip_bad: {first})"
    return f"split {split!r} of {source} lists no clips"


def require_clips(ds: SkeletonDataset, split: str, source: str | Path, *, usable: str) -> None:
    """Raise ValueError when `ds` holds no clip: its split lists none, or `skip_bad` skipped them all."""
    if len(ds):
        return
    todo = (
        "their poses hold no person, no frame or only zero scores: re-extract them, or use another split"
        if ds.skipped
        else "rebuild the index (python -m pipeline index) or use another split"
    )
    raise ValueError(f"{no_clips_message(ds, split, source, usable=usable)}; {todo}")


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
        use_mask_token=cfg.maskclr.enabled and cfg.maskclr.masking == "agpm",
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


def autocast_for(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def maskclr_step(cfg: TrainConfig, model, core: ActionModel, loss_fn: MLCLLoss, x, y, *, update_memory: bool):
    """Standard pass -> AGPM mask from its attention -> masked pass -> CE + MLCL terms.

    `model` may be the DDP wrapper; the standard pass goes through the plain module `core` so
    that DDP sees exactly one forward per backward.
    """
    mc = cfg.maskclr
    out = core(x, return_attention=True)
    scores = out.activation  # [N, M, T, V], attention received per token, no gradient
    if mc.masking == "agpm":
        mask = agpm_mask(scores, ratio=mc.mask_ratio, tau=mc.mask_tau, axis=mc.mask_axis)
        out_m = model(x, token_mask=mask)
    else:
        mask = v1_input_mask(scores, ratio=mc.v1_ratio, tau=mc.mask_tau, tube_len=mc.v1_tube_len)
        out_m = model(apply_input_zero_mask(x, mask))
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
        with autocast_for(device):
            logits = model(x).logits.float()
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


def run_train(
    cfg: TrainConfig,
    *,
    data: str | Path,
    split: str,
    out: str | Path,
    device: str = "auto",
    init: str | None = None,
    resume: bool = False,
    halt_after_steps: int | None = None,
) -> dict:
    """Train; returns the final history entry. See the module docstring for the files."""
    out = Path(out)
    env = setup_distributed(device)
    seed_everything(cfg.seed)
    index = read_index(data)
    names = label_names_of(index)
    num_classes = len(names)
    train_ds = make_dataset(cfg, index, f"{split}_train", train=True, num_classes=num_classes, source=data)
    require_clips(train_ds, f"{split}_train", data, usable="training clips")
    val_ds = make_dataset(cfg, index, f"{split}_val", train=False, num_classes=num_classes, source=data)
    has_val = len(val_ds) > 0
    if not has_val:
        log.warning(
            "%s: no validation; best.pt is the last epoch's weights and val_* are null in metrics.jsonl",
            no_clips_message(val_ds, f"{split}_val", data, usable="validation clips"),
        )
    sampler = DistributedSampler(
        train_ds, num_replicas=env.world, rank=env.rank, shuffle=True, seed=cfg.seed, drop_last=env.world > 1
    )
    bs = cfg.optim.batch_size
    train_loader = DataLoader(
        train_ds,
        batch_size=bs,
        sampler=sampler,
        num_workers=cfg.optim.num_workers,
        drop_last=cfg.maskclr.enabled and len(train_ds) > bs,
    )
    val_loader = DataLoader(val_ds, batch_size=bs, shuffle=False, num_workers=cfg.optim.num_workers)

    core = build_model(cfg, num_classes).to(env.device)
    opt, sched = make_optimizer(cfg, core)
    loss_fn = make_loss(cfg, num_classes).to(env.device)
    start_epoch, best, history = 0, -math.inf, []
    last_path = out / "last.pt"
    if resume and last_path.is_file():
        ck = read_checkpoint(last_path, remedy=_RESUME_REMEDY)
        if not is_ours(ck):
            raise CheckpointError(f"{last_path}: not a checkpoint written by train; {_RESUME_REMEDY}")
        core.load_state_dict(ck["model_state"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        loss_fn.load_state_dict(ck["loss_state"])
        torch.set_rng_state(ck["rng"]["torch"])
        start_epoch, history = ck["epoch"] + 1, list(ck["history"])
        best = -math.inf if ck["best_metric"] is None else ck["best_metric"]  # None: trained without validation
        log.info(
            "resumed %s at epoch %d (best val top-1 %s)",
            last_path,
            start_epoch,
            "none" if ck["best_metric"] is None else f"{best:.2f}",
        )
    elif resume:
        log.info("--resume: no %s yet; starting from scratch", last_path)
    elif init:
        log.info("--init %s: %s", init, init_from(core, init))
    model = core
    if env.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            core, device_ids=[env.device] if env.device.type == "cuda" else None
        )
    if cfg.maskclr.enabled and cfg.maskclr.cc_detach and cfg.maskclr.cl_type == "tcl":
        log.warning(
            "faithful L_cc: built from detached logits, it has NO gradient and is only logged (switch F1, docs/method.md §10)"
        )

    run_cfg = to_dict(cfg)
    if env.main:
        out.mkdir(parents=True, exist_ok=True)
        write_text_if_changed(out / "config.yaml", dump_yaml(run_cfg))
    writer = None
    if env.main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"), purge_step=start_epoch)
    steps = 0
    for epoch in range(start_epoch, cfg.optim.epochs):
        sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        model.train()
        masked_on = cfg.maskclr.enabled and epoch >= cfg.maskclr.start_epoch
        sums: dict[str, float] = {}
        seen = 0
        bar = tqdm(
            train_loader,
            desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
            disable=not env.main,
            leave=False,
            dynamic_ncols=True,
        )
        for x, y in bar:
            x, y = x.to(env.device, non_blocking=True), y.to(env.device, non_blocking=True)
            with autocast_for(env.device):
                if masked_on:
                    loss, logits, parts = maskclr_step(cfg, model, core, loss_fn, x, y, update_memory=True)
                else:
                    logits = model(x).logits
                    loss = F.cross_entropy(logits.float(), y)
                    parts = {"ce": loss.detach()}
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            k = y.numel()
            seen += k
            for name, v in {"loss": loss.detach(), **parts}.items():
                sums[name] = sums.get(name, 0.0) + float(v) * k
            sums["acc"] = sums.get("acc", 0.0) + float((logits.argmax(1) == y).sum())
            bar.set_postfix(loss=f"{sums['loss'] / seen:.3f}")
            steps += 1
            if halt_after_steps is not None and steps >= halt_after_steps:
                os._exit(137)  # a hard kill mid-epoch, for the resume test
        sched.step()
        val = _NO_VAL
        if has_val:
            val = evaluate_loader(
                core, val_loader, env.device, loss_fn=loss_fn, update_memory=masked_on and cfg.maskclr.cc_update_on_val
            )
        entry = {
            "epoch": epoch + 1,
            **{f"train_{k}": v / max(seen, 1) for k, v in sums.items()},
            "train_acc": 100.0 * sums.get("acc", 0.0) / max(seen, 1),
            **val,
            "lr_backbone": opt.param_groups[0]["lr"],
            "lr_head": opt.param_groups[1]["lr"],
            "maskclr_active": masked_on,
        }
        history.append(entry)
        if has_val:
            improved = val["val_top1"] > best
            best = max(best, val["val_top1"])
        else:  # nothing to select on: best.pt follows the last epoch
            improved, best = True, None
        if env.main:
            val_text = f"val top-1 {val['val_top1']:.2f} top-5 {val['val_top5']:.2f}" if has_val else "no validation"
            log.info(
                "epoch %d: train loss %.4f acc %.1f | %s", epoch + 1, entry["train_loss"], entry["train_acc"], val_text
            )
            for k, v in entry.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    writer.add_scalar(k, v, epoch + 1)
            writer.flush()
            payload = {
                "model_state": core.state_dict(),
                "model_config": model_config_of(cfg, num_classes),
                "run_config": run_cfg,
                "label_names": names,
                "epoch": epoch,
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "loss_state": loss_fn.state_dict(),
                "best_metric": best,
                "rng": {"torch": torch.get_rng_state()},
                "history": history,
                "split": split,
            }
            if improved:
                save_checkpoint(out / "best.pt", payload)
            save_checkpoint(last_path, payload)
            atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    if writer is not None:
        writer.close()
    if env.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return history[-1] if history else {}
