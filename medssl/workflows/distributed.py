"""Multi-process (torchrun) bundle runs: what ``multi_gpu_train.json`` builds (the process's device, the
``DistributedDataParallel`` wrappers, the unlabelled sampler, rank-0-only handlers) and how the run ends.

The end of a run, :func:`shutdown`, the ``finalize`` of every ``multi_gpu_train.json``:

``dist.destroy_process_group()`` alone does not free the process group while a ``DistributedDataParallel`` module
still holds it: its reducer keeps the group (and the work of the last all-reduce) alive until the interpreter shuts
down, and on gloo destroying it that late aborts the process now and then ("terminate called without an active
exception", exit code -6) after a run that trained and saved everything. Measured with two CPU processes, a DDP
network and a DDP threshold head, three iterations each: 4 aborts in 25 runs when the wrappers outlive the group, none
in 50 when their reducers are released first. torchrun then reports the whole run as failed, which breaks any
pipeline that checks the exit code.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from monai.data import DistributedSampler

from medssl.handlers.checkpoint import export_model
from medssl.methods import entry, uses_unlabeled

__all__ = ["init_process_group", "local_device", "data_parallel", "parallel_threshold_head", "unlabeled_sampler", "validation_sampler", "rank0_only", "shutdown"]


def init_process_group(device: torch.device) -> None:
    """Join torchrun's process group (NCCL on GPUs, gloo on the CPU) unless already in one, and make ``device``
    this process's GPU."""
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(device)


def local_device() -> torch.device:
    """This process's device: the GPU of its ``LOCAL_RANK`` (set by torchrun) when there are GPUs, else the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}")
    return torch.device("cpu")


def data_parallel(module: torch.nn.Module, device: torch.device) -> torch.nn.parallel.DistributedDataParallel:
    """``module`` on ``device``, wrapped in ``DistributedDataParallel`` (on the process's GPU, or on the CPU)."""
    ids = [device] if torch.cuda.is_available() else None
    return torch.nn.parallel.DistributedDataParallel(module.to(device), device_ids=ids)


def parallel_threshold_head(head: torch.nn.Module, device: torch.device, ssl_method: str) -> torch.nn.Module:
    """The threshold head wrapped like the network when ``ssl_method`` trains it; as it is otherwise (a
    ``DistributedDataParallel`` module whose parameters receive no gradient fails the next all-reduce)."""
    return data_parallel(head, device) if entry(ssl_method).uses_head else head


def unlabeled_sampler(ssl_method: str, dataset: Any) -> DistributedSampler | None:
    """Each process's share of the unlabelled images, shuffled, when ``ssl_method`` reads them; else None."""
    return DistributedSampler(dataset, even_divisible=True, shuffle=True) if uses_unlabeled(ssl_method) else None


def validation_sampler(dataset: Any) -> DistributedSampler | None:
    """Each process's share of the validation cases, in order, none of them twice; None (every process validates
    every case) outside a process group or when there are fewer cases than processes: MONAI's sampler refuses to share them unevenly, padding
    would count a case twice, and a process with no case would run an empty evaluation. Every case counted once per
    process leaves the gathered means unchanged."""
    if not (dist.is_available() and dist.is_initialized()) or len(dataset) < dist.get_world_size():
        return None
    return DistributedSampler(dataset, even_divisible=False, shuffle=False)


def rank0_only(handlers: Sequence[Any]) -> Sequence[Any] | None:
    """``handlers`` in the first process, None in the others (one process writes the logs and checkpoints)."""
    return handlers if not dist.is_initialized() or dist.get_rank() == 0 else None


def shutdown(*modules: torch.nn.Module, ckpt_dir: str | os.PathLike | None = None) -> None:
    """Wait for every process, write ``ckpt_dir/model.pt`` from the first one
    (:func:`~medssl.handlers.checkpoint.export_model`), release the reducers of the ``DistributedDataParallel``
    modules among ``modules`` (they cannot train after this), then destroy the process group. Outside a process
    group, only the export."""
    if not (dist.is_available() and dist.is_initialized()):
        if ckpt_dir is not None:
            export_model(ckpt_dir)
        return
    dist.barrier()
    if ckpt_dir is not None and dist.get_rank() == 0:
        export_model(ckpt_dir)
    for module in modules:
        if isinstance(module, torch.nn.parallel.DistributedDataParallel):
            module.__dict__.pop("reducer", None)
    gc.collect()
    dist.destroy_process_group()
