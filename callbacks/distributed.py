"""Collective helpers: the same answer on every process, or no collective at all.

A multi-process training job hangs when one rank leaves the training loop while the others
wait for it in the next gradient all-reduce. Every decision that ends training is therefore
reduced across ranks here, and every rank must call these helpers at the same points. Without
an initialised ``torch.distributed`` process group they are plain local operations, so the same
code runs in single-process jobs and in tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from satmon._optional import is_available, require

log = logging.getLogger("satmon.callbacks")


@dataclass(frozen=True)
class World:
    """This process's place in the job: its global rank and the number of processes."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def _dist() -> Any | None:
    """``torch.distributed`` when a process group is initialised, else None."""
    if not is_available("torch"):
        return None
    dist = require("torch.distributed", feature="multi-process stop decisions")
    if not dist.is_available() or not dist.is_initialized():
        return None
    return dist


def world() -> World:
    """The current :class:`World` (rank 0 of 1 without an initialised process group)."""
    dist = _dist()
    if dist is None:
        return World()
    return World(rank=dist.get_rank(), size=dist.get_world_size())


def _collective_device(dist: Any) -> Any:
    torch = require("torch", feature="multi-process stop decisions")
    # NCCL reduces only CUDA tensors; gloo (CPU jobs) only CPU ones.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@dataclass(frozen=True)
class StopVote:
    """The result of one stop vote: how many ranks wanted to stop and how many could not vote.

    ``failed`` counts ranks whose local part of the vote raised (they voted "continue"); every
    rank still took part in the collective, so the ranks stay in step.
    """

    stop: int = 0
    failed: int = 0

    @property
    def any_stop(self) -> bool:
        return self.stop > 0


def vote_stop(wish: Callable[[], bool]) -> StopVote:
    """Count, on every rank, the ranks whose ``wish()`` is True (a SUM all-reduce).

    Every rank must call this the same number of times; it is how a stop decision taken by one
    process becomes the decision of all of them. Whatever fails *locally* (``wish()`` raising,
    the vote's tensor not being built) is itself part of the vote: that rank contributes
    "continue, failed" and still joins the collective, so a rank-local fault never leaves the
    ranks one collective apart (which would hang the job at the next one). Only the collective
    itself may raise, and then the process group is broken for the trainer as well.
    """
    try:
        vote, failed = (1 if wish() else 0), 0
    except Exception:
        log.exception("satmon: this rank could not compute its stop vote; it votes continue")
        vote, failed = 0, 1
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return StopVote(stop=vote, failed=failed)
    torch = require("torch", feature="multi-process stop decisions")
    try:
        t = torch.tensor([vote, failed], dtype=torch.int32, device=_collective_device(dist))
    except Exception:
        log.exception("satmon: building the stop vote failed on this rank; it votes continue")
        t = torch.tensor([0, 1], dtype=torch.int32, device=_fallback_device(dist))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    stop, failed = (int(v) for v in t.tolist())
    return StopVote(stop=stop, failed=failed)


def _fallback_device(dist: Any) -> Any:
    torch = require("torch", feature="multi-process stop decisions")
    if dist.get_backend() == "nccl":
        return torch.device("cuda")
    return torch.device("cpu")


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (a single-element list when alone).

    Objects must be small and picklable; they never leave this job's processes.
    """
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, *, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself when alone)."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
