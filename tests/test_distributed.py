"""The end of a torchrun bundle run (``finalize``): DDP reducers released before the process group is destroyed."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from medssl.workflows.distributed import shutdown


def test_shutdown_releases_the_ddp_reducers_then_destroys_the_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        network, head = DistributedDataParallel(torch.nn.Linear(3, 2)), torch.nn.Linear(2, 1)  # a head without DDP
        head(network(torch.randn(4, 3))).sum().backward()
        assert "reducer" in network.__dict__
        shutdown(network, head)
        assert not dist.is_initialized() and "reducer" not in network.__dict__
        assert head.weight.grad is not None  # other modules are left as they are
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_shutdown_outside_a_process_group_does_nothing():
    network = torch.nn.Linear(3, 2)
    shutdown(network)
    assert not dist.is_initialized() and network(torch.randn(1, 3)).shape == (1, 2)
