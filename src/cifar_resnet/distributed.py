"""Data-parallel training with torch.distributed: one process per device, launched by torchrun.

The train stage runs unchanged in a single process. Under torchrun (or when it relaunches
itself through torchrun for `train.nproc > 1`) every process trains a replica on its own
shard of each epoch; DistributedDataParallel averages the gradients, so the replicas stay
identical, and rank 0 alone logs, checkpoints and writes outputs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def process_rank() -> int:
    """This process's global rank as torchrun set it (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun set up (NCCL on GPUs, gloo on CPUs); a no-op otherwise."""
    if not launched_by_torchrun():
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))
    if info.world_size > 1 and not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return info


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """This same script under torchrun with `nproc` processes on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *argv]


def run_under_torchrun(nproc: int, argv: list[str]) -> int:
    """Run argv under torchrun and return its exit status; Ctrl-C or SIGTERM stop the workers cleanly."""
    process = subprocess.Popen(torchrun_command(nproc, argv))
    try:
        return process.wait()
    except KeyboardInterrupt:
        # torchrun forwards SIGTERM to its workers, which checkpoint-safely stop (a kill would orphan them).
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
        raise


def sum_across_ranks(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """Element-wise sums over all processes (the identity in a single process)."""
    if not info.active:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def shutdown(info: DistInfo) -> None:
    if info.active and dist.is_initialized():
        dist.destroy_process_group()


def sync_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every process.

    DDP broadcasts them before each forward, but the last training batch then updates
    each replica's statistics from its own shard; evaluating without this would give
    slightly different validation metrics, and so different stopping decisions, per rank.
    """
    if info.active:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
