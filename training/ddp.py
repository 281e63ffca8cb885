"""Which process of a torchrun / accelerate launch this is, before torch.distributed is set up.

The launchers export RANK and WORLD_SIZE to every process; the Trainer initialises the
process group itself, later. Work that must happen once per run (evaluation, writing the
model, the summary and the logs) runs on rank 0 only.
"""

from __future__ import annotations

import os


def process_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return process_rank() == 0


def end_process_group() -> None:
    """Under torchrun: wait for every process, then tear the process group down. A gloo group
    still alive when the interpreter exits can abort that process (std::terminate in its worker
    threads) after a run that succeeded; rank 0 goes on to save and evaluate alone."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
