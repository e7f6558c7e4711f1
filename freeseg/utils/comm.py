"""Helpers for torch.distributed that also work when it is not initialised (one process)."""
from __future__ import annotations

import pickle
from typing import Any

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_local_rank() -> int:
    import os

    return int(os.environ.get("LOCAL_RANK", 0)) if is_dist() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes; a no-op in a single process."""
    if is_dist() and get_world_size() > 1:
        dist.barrier()


# NCCL runs gather objects over a gloo group of the same ranks (no pickles through GPUs), made
# once per default group. It is keyed by the default group's id(), not the group itself, and
# destroy() drops it: a process group kept alive past destroy_process_group is torn down during
# interpreter exit, where gloo's threads can abort the process ("terminate called without an
# active exception"; seen in the two-process evaluation test when this held the default group).
_GLOO_GROUPS: dict[int, Any] = {}


def _cpu_group():
    """The group to gather Python objects over: None (the default group) unless it is NCCL."""
    if dist.get_backend() != "nccl":
        return None
    key = id(dist.group.WORLD)
    if key not in _GLOO_GROUPS:
        _GLOO_GROUPS.clear()
        _GLOO_GROUPS[key] = dist.new_group(backend="gloo")
    return _GLOO_GROUPS[key]


def destroy() -> None:
    """Destroy every process group (if any), with the gloo group made for object gathers."""
    _GLOO_GROUPS.clear()
    if is_dist():
        dist.destroy_process_group()


def all_gather(data: Any) -> list[Any]:
    """Gather any picklable object from every rank; returns a list with one entry per rank."""
    if get_world_size() == 1:
        return [data]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, data, group=_cpu_group())
    return out


def gather(data: Any, dst: int = 0) -> list[Any]:
    """Gather picklable objects on rank ``dst``; other ranks get an empty list."""
    if get_world_size() == 1:
        return [data]
    group = _cpu_group()
    if get_rank() == dst:
        out: list[Any] = [None] * get_world_size()
        dist.gather_object(data, out, dst=dst, group=group)
        return out
    dist.gather_object(data, None, dst=dst, group=group)
    return []


def reduce_dict(values: dict[str, torch.Tensor], average: bool = True) -> dict[str, torch.Tensor]:
    """All-reduce a dict of scalar tensors (same keys on every rank), for logging."""
    world = get_world_size()
    if world < 2:
        return values
    with torch.no_grad():
        names = sorted(values)
        stacked = torch.stack([values[k].detach().float() for k in names])
        dist.all_reduce(stacked)
        if average:
            stacked /= world
        return dict(zip(names, stacked))


def shared_random_seed() -> int:
    """A random int that is the same on all ranks (drawn on rank 0)."""
    seed = int(torch.randint(2**31, (1,)).item())
    return all_gather(seed)[0]


def object_size(obj: Any) -> int:
    return len(pickle.dumps(obj))
