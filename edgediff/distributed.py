"""Which device and which process: the torchrun/DDP context of a training run, and nothing else.

Kept apart from the loop so that `edgediff.train` reads as the training recipe; every call here is a no-op in a
single process, so the loop is written once for one process and for many.
"""

from __future__ import annotations

import os

import torch

from edgediff.errors import EdgediffError


def pick_device(name: str) -> torch.device:
    """`--device auto|cpu|cuda` as a torch device; asking for CUDA where there is none is a one-line error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise EdgediffError("--device cuda but no CUDA GPU is visible; use --device cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


class Distributed:
    """torchrun/DDP context: nccl on CUDA, gloo on CPU; a single process when WORLD_SIZE is unset."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = device
        if self.world > 1:
            import torch.distributed as dist

            if device.type == "cuda":
                self.device = torch.device("cuda", self.local_rank)
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        """Rank 0: the one process that logs, writes run.json, checkpoints and previews."""
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model as the loop calls it: DDP-wrapped (gradients averaged across processes) when there are several."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def mean(self, value: float) -> float:
        """`value` averaged over the processes (the loss every rank logs is the same number)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
