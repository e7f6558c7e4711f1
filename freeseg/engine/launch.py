"""Start one process per device and set up ``torch.distributed``.

Three ways in:
- ``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``): the
  process group is initialised from the environment (``env://``) and ``main_func`` runs here;
- ``--num-gpus N`` (× ``--num-machines M``): N processes are spawned on this machine
  (``torch.multiprocessing``, start method ``spawn``), rendezvous at ``--dist-url``
  (``tcp://host:port``; ``auto`` picks a free local port, one machine only);
- otherwise ``main_func`` runs in this process without a process group.
NCCL is used when the processes drive GPUs, gloo on CPU (so a 2-process CPU run works).
"""
from __future__ import annotations

import logging
import os
import socket
import sys
from datetime import timedelta
from typing import Any, Callable
from urllib.parse import urlparse

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ..utils import comm
from ..utils.errors import FreeSegError

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def default_backend(use_cuda: bool | None = None) -> str:
    if use_cuda is None:
        use_cuda = torch.cuda.is_available()
    return "nccl" if use_cuda else "gloo"


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def launch(
    main_func: Callable[..., Any],
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str | None = None,
    args: tuple[Any, ...] = (),
    backend: str | None = None,
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> Any:
    """Run ``main_func(*args)`` on every process of the job; returns its result in one process.

    A :class:`FreeSegError` raised by any spawned process is raised again here with its
    message (so the command line can print it as one line) and its ``exit_status``.
    """
    backend = backend or default_backend()
    if launched_by_torchrun():
        _init_group(backend, "env://", int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"]),
                    int(os.environ.get("LOCAL_RANK", 0)), timeout)
        try:
            return main_func(*args)
        finally:
            comm.destroy()
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        return main_func(*args)
    if num_gpus_per_machine < 1 or not 0 <= machine_rank < num_machines:
        raise FreeSegError(
            f"--num-gpus {num_gpus_per_machine} --num-machines {num_machines} --machine-rank "
            f"{machine_rank} is not a valid layout; machine ranks run from 0 to num-machines-1"
        )
    if backend == "nccl" and num_gpus_per_machine > torch.cuda.device_count():
        raise FreeSegError(
            f"--num-gpus {num_gpus_per_machine} but only {torch.cuda.device_count()} GPUs are visible; "
            "lower --num-gpus (or set MODEL.DEVICE cpu for CPU processes)"
        )
    if dist_url in (None, "", "auto"):
        if num_machines > 1:
            raise FreeSegError("--dist-url auto works on one machine only; pass tcp://<rank-0 host>:<port>")
        dist_url = f"tcp://127.0.0.1:{find_free_port()}"
    check_dist_url(dist_url)
    if num_machines > 1:  # the rendezvous blocks until every machine has started its processes
        print(f"machine {machine_rank} of {num_machines}: waiting at {dist_url} for all {world_size} processes "
              f"({num_gpus_per_machine} per machine) to join", file=sys.stderr, flush=True)
    ctx = mp.get_context("spawn")
    errors = ctx.SimpleQueue()
    try:
        mp.start_processes(
            _worker,
            nprocs=num_gpus_per_machine,
            args=(main_func, args, backend, dist_url, world_size, num_gpus_per_machine, machine_rank,
                  timeout, errors),
            start_method="spawn",
        )
    except (mp.ProcessRaisedException, mp.ProcessExitedException):
        # The first process to die may be a peer that lost its connection to the one with the
        # user error; that error is the cause worth reporting.
        if not errors.empty():
            message, status = errors.get()
            error = FreeSegError(message)
            error.exit_status = status  # e.g. 130: training stopped by Ctrl-C in the processes
            raise error from None
        raise
    return None


def check_dist_url(url: str) -> None:
    """FreeSegError unless ``url`` is a rendezvous address torch.distributed can use."""
    parsed = urlparse(url)
    try:
        usable = parsed.scheme in ("env", "file") or (parsed.scheme == "tcp" and bool(parsed.hostname)
                                                       and parsed.port is not None)
    except ValueError:  # a port that is not a number
        usable = False
    if not usable:
        raise FreeSegError(
            f"--dist-url {url} is not a rendezvous address; use tcp://<host of machine 0>:<free port> "
            "(or auto on one machine)"
        )


def _init_group(backend: str, url: str, world: int, rank: int, local_rank: int, timeout: timedelta) -> None:
    os.environ["LOCAL_RANK"] = str(local_rank)  # read by freeseg.utils.comm.get_local_rank
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method=url, world_size=world, rank=rank, timeout=timeout)
    comm.synchronize()


def _worker(
    local_rank: int,
    main_func: Callable[..., Any],
    args: tuple[Any, ...],
    backend: str,
    dist_url: str,
    world_size: int,
    gpus_per_machine: int,
    machine_rank: int,
    timeout: timedelta,
    errors: Any,
) -> None:
    rank = machine_rank * gpus_per_machine + local_rank
    _init_group(backend, dist_url, world_size, rank, local_rank, timeout)
    try:
        main_func(*args)
    except FreeSegError as e:
        # Exit with a status (no traceback) and hand the one-line message and the status the
        # command should exit with to the parent.
        errors.put((f"rank {rank}: {e}", getattr(e, "exit_status", 2)))
        raise SystemExit(2) from None
    finally:
        comm.destroy()


def create_ddp_model(model: nn.Module, *, find_unused_parameters: bool = False) -> nn.Module:
    """Wrap ``model`` in DDP when running distributed.

    Frozen parameters (CLIP, loaded prompts) get no gradient buckets and no all-reduce (DDP
    only registers parameters that require grad). They are still broadcast once from rank 0 at
    construction: ranks are seeded ``SEED + rank``, so anything randomly initialised (a CLIP
    built without weights, in tests) would otherwise differ between ranks.
    """
    if comm.get_world_size() == 1:
        return model
    device = next(model.parameters()).device
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        broadcast_buffers=False,  # FrozenBN statistics are identical everywhere; BN is frozen
        find_unused_parameters=find_unused_parameters,
    )
