"""Where and how stage 2 runs: the device, bf16 autocast, the torchrun process group, the seeds.

Shared by train, evaluate, predict, report and the bench; reads no file and writes none. Distributed
runs are launched by `torchrun` (its `WORLD_SIZE`, `RANK`, `LOCAL_RANK`): gloo on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import os
import random
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from pipeline.devices import choose_device


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
    """The device for "auto", "cpu", "cuda" or "cuda:N" (the rule of `pipeline.devices`, shared with stage 1)."""
    return torch.device(choose_device(name, gpus=torch.cuda.device_count() if torch.cuda.is_available() else 0))


def setup_distributed(device: str) -> Dist:
    """Join the torchrun process group (one GPU per local rank on CUDA); a single process otherwise."""
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


def teardown_distributed(env: Dist) -> None:
    """Wait for every rank, then leave the process group; nothing to do in a single process."""
    if env.world > 1:
        dist.barrier()
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (called once, by the command's run function)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA; a no-op context (float32) elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
