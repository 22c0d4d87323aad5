"""Multi-process training under ``torchrun``: joining the process group from the environment
torchrun sets, and the batch shard of each process."""
from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist


def resolve_device(device: torch.device | str) -> torch.device:
    """``device`` as a torch.device that exists on this machine: "cpu", or "cuda" / "cuda:N" with a
    GPU N present. Anything else raises a ValueError naming it (torch itself would fail later, with
    an AssertionError or a RuntimeError deep inside the first transfer)."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r}: no CUDA GPU is available here (torch.cuda.is_available() "
                             "is False); use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    elif resolved.type != "cpu":
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {str(device)!r}")
    return resolved


def init_from_env(device: str = "cpu") -> tuple[int, int, torch.device]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): gloo for CPU training,
    nccl for CUDA, each process on the GPU of its LOCAL_RANK. Returns (rank, world size, device);
    (0, 1, device) in a single process. The device is checked first (``resolve_device``)."""
    device = str(resolve_device(device))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    rank, world = rank_and_world()
    if world > 1 and device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    return rank, world, torch.device(device)


def leave_process_group() -> None:
    """Leave the process group at the end of a command: a barrier first, so that no process tears
    its connections down while another still has traffic in flight on them (gloo on CPU: a rank
    that destroyed its group while its peer was still finishing the last collective was seen to
    abort at exit, rarely, with "terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(index: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This process's contiguous share of a global batch (sizes differ by at most one)."""
    n = len(index)
    return index[n * rank // world: n * (rank + 1) // world]


def check_shards(batch_sizes: Iterable[int], world: int) -> None:
    """Every batch of a run must give each of the ``world`` processes at least one sample: an empty
    shard has no loss to compute, and its process would leave the others waiting in the all-reduce."""
    smallest = min(batch_sizes)
    if world > 1 and smallest < world:
        raise ValueError(f"under torchrun with {world} processes every batch needs at least {world} samples "
                         f"(one per process), but this run has a batch of {smallest}: choose batch sizes of at "
                         f"least {world} whose epoch's last, partial batch (the training set's size modulo the "
                         f"batch size), if any, also holds at least {world}")


def broadcast_from_rank0(module: torch.nn.Module) -> None:
    """Give every process rank 0's parameters and buffers (in place), as DistributedDataParallel
    does when it wraps a module: replicas built from different seeds would otherwise train apart
    on averaged gradients. A no-op outside a process group."""
    if dist.is_available() and dist.is_initialized():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, 0)


def shard_weight(part: int, world: int, total: int) -> float:
    """The factor on a shard's mean loss (``part`` of the ``total`` samples of the global batch)
    that makes the mean over the ``world`` processes of the weighted shard means the global batch's
    mean, whatever the shards' sizes."""
    return part * world / total


def global_mean(loss: torch.Tensor, world: int) -> float:
    """The global batch's loss from each process's weighted shard loss (``shard_weight``): the
    mean over processes, all-reduced when there are several."""
    if world > 1:
        loss = loss.detach().clone()
        dist.all_reduce(loss)
        loss /= world
    return loss.item()


class LossModule(torch.nn.Module):
    """``model.loss`` as a forward pass, so that DistributedDataParallel (which hooks forward)
    synchronises its gradients."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return self.model.loss(x, cond)
