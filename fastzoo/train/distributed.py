"""torch.distributed set-up from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT):
plain python is one process, torchrun (one node or many, through its usual options) is DDP."""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # only a group set up here is torn down here (not a caller's own)

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def enabled(self):
        return self.world_size > 1


def launched_by_torchrun():
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device="auto"):
    """Pick the device and, under torchrun, join the process group: nccl on GPU, gloo on CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible")
    if not launched_by_torchrun():
        return Dist(device=torch.device(device))
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    if device == "cuda":
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    owns = world > 1 and not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device == "cuda" else "gloo", init_method="env://")
    return Dist(rank, world, local, dev, owns)


def teardown(d):
    if d.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(d, values):
    """Sum a list of numbers over the ranks (float64 on the process group's device)."""
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    if d.enabled:
        dist.all_reduce(t)
    return t.tolist()


def gather_objects(d, obj):
    """Every rank's `obj`, in rank order, on every rank."""
    if not d.enabled:
        return [obj]
    out = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def any_rank(d, flag):
    """True on every rank when `flag` is true on one (e.g. Ctrl-C seen by one rank only)."""
    if not d.enabled:
        return bool(flag)
    return all_reduce_sum(d, [float(bool(flag))])[0] > 0


def barrier(d):
    if d.enabled:
        dist.barrier()
