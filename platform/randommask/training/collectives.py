"""The two collectives the worker needs, as no-ops for a single worker (no process group then)."""

from __future__ import annotations

from typing import Any

import torch


def all_reduce_sum(t: torch.Tensor, world: int, device: torch.device) -> torch.Tensor:
    """The sum over ranks of a CPU tensor (on the device for the collective: NCCL needs CUDA tensors)."""
    if world == 1:
        return t
    t = t.to(device)
    torch.distributed.all_reduce(t)
    return t.cpu()


def all_gather(obj: Any, world: int) -> list[Any]:
    """Every rank's ``obj``, in rank order."""
    if world == 1:
        return [obj]
    out = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out
