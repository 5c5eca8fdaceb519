"""Training-step benchmark of the action model, all variants side by side in one run.

For each backbone preset: forward+backward clips/s with fused attention
(`scaled_dot_product_attention`) and with the explicit softmax(QK^T)V path, their ratio, the
MaskCLR step (standard pass with attention, AGPM, masked pass, CE + MLCL) and its cost
relative to the baseline step, model FLOPs per clip (torch's FLOP counter, forward+backward)
and the achieved FLOP/s. bf16 autocast on CUDA, float32 on CPU.

    python bench/train_step.py --device auto --preset base --batch 2 --frames 243
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from recognition.config import MaskCLRConfig, TrainConfig
from recognition.maskclr.losses import MLCLLoss
from recognition.models.action import build_action_model
from recognition.runtime import autocast_for, pick_device
from recognition.train import maskclr_step


def make_batch(n: int, t: int, num_classes: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, t, 17, 3, generator=g) * 2 - 1  # [N, M, T, V, C]
    x[..., 2] = x[..., 2].abs()
    y = torch.arange(n) % num_classes
    return x.to(device), y.to(device)


def baseline_step(model, x, y, opt):
    logits = model(x).logits
    loss = F.cross_entropy(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def make_maskclr_step(cfg: TrainConfig, loss_fn: MLCLLoss):
    def step(model, x, y, opt):
        loss, _, _ = maskclr_step(cfg, model, model, loss_fn, x, y, update_memory=True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def time_step(step, model, x, y, opt, device, *, warmup: int, repeats: int) -> float:
    """Median seconds per step."""
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with autocast_for(device):
            step(model, x, y, opt)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def count_flops(step, model, x, y, opt, device) -> int:
    with FlopCounterMode(display=False) as counter, autocast_for(device):
        step(model, x, y, opt)
    return counter.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--backbone", default="dstformer")
    ap.add_argument("--preset", default="base")
    ap.add_argument("--batch", type=int, default=None, help="clips per step (default: 2 on CPU, 32 on CUDA)")
    ap.add_argument("--frames", type=int, default=243)
    ap.add_argument("--classes", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    batch = args.batch or (32 if device.type == "cuda" else 2)
    torch.manual_seed(0)
    model = build_action_model(
        num_classes=args.classes, backbone=args.backbone, preset=args.preset, maxlen=args.frames, use_mask_token=True
    ).to(device)
    if batch == 1:  # BatchNorm cannot train on one clip: keep the head's BN in eval mode (timing is unaffected)
        model.head.bn.eval()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = make_batch(batch, args.frames, args.classes, device)
    cfg = TrainConfig(maskclr=MaskCLRConfig(enabled=True))
    loss_fn = MLCLLoss(num_classes=args.classes).to(device)
    mstep = make_maskclr_step(cfg, loss_fn)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
        f"{args.backbone}/{args.preset} {params / 1e6:.1f} M params, batch {batch}, {args.frames} frames, 2 persons, "
        f"{'bf16 autocast' if device.type == 'cuda' else 'float32'}"
    )
    rows = []
    for name, step, explicit in [
        ("baseline fused", baseline_step, False),
        ("baseline explicit", baseline_step, True),
        ("maskclr fused", mstep, False),
    ]:
        model.backbone.explicit_attention = explicit
        sec = time_step(step, model, x, y, opt, device, warmup=args.warmup, repeats=args.repeats)
        rows.append((name, sec))
    model.backbone.explicit_attention = False
    flops = count_flops(baseline_step, model, x, y, opt, device) / batch  # after timing: the counter slows later steps
    base = rows[0][1]
    print(f"{'step':<20}{'s/step':>10}{'clips/s':>10}{'x baseline fused':>18}")
    for name, sec in rows:
        print(f"{name:<20}{sec:>10.3f}{batch / sec:>10.2f}{sec / base:>18.2f}")
    print(f"fused/explicit speed ratio: {rows[1][1] / rows[0][1]:.2f}x")
    print(f"maskclr step / baseline step: {rows[2][1] / base:.2f}x")
    print(
        f"model FLOPs per clip (forward+backward): {flops / 1e9:.1f} GFLOP; "
        f"achieved (baseline fused): {flops * batch / base / 1e12:.3f} TFLOP/s"
    )


if __name__ == "__main__":
    main()
