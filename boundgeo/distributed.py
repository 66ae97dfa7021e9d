"""Runs across processes with ``torch.distributed`` (``torchrun``): which rank does what.

boundgeo never starts a process group in the library: it joins the one the user (or the
``boundgeo`` command under ``torchrun``) initialised, with gloo on CPUs or NCCL on GPUs, and
otherwise behaves as one process; torch.distributed is never required. Under a group of N
processes, every rank makes the same calls with the same arguments, and:

- :func:`~boundgeo.boundary_normals` computes shard k on rank k mod N. Rank 0 holds the
  ``out=`` directory's lock and writes ``run.json`` and ``points/``; every rank returns the
  same result, bit for bit one process's (the shards are the same computations, and with
  ``n=`` the ranks exchange how many usable inputs each shard holds, so each keeps exactly
  what one process would). ``out=`` must be one folder that every rank sees (one machine, or a
  shared file system).
- :func:`~boundgeo.spectrum` splits the blocks of the Gram matrix it accumulates (rows for
  the d x d one, columns for the n x n one: each rank reads 1/N of the data) and sums them with
  ``all_reduce``; the exact and randomized routes, for matrices that fit one process, run
  whole on every rank.
- :func:`~boundgeo.universal_perturbation` with ``method="sgd"`` or ``"batched"`` splits every
  mini-batch into pieces, one or more per rank, and sums the pieces' gradients (or gathers
  their DeepFool steps) in order, so v is the same on every rank after every step.
  ``method="deepfool"`` (Algorithm 1) is sequential, every step starting from the v the last
  one left: it runs on rank 0 and the others receive its result.
- :func:`~boundgeo.fooling_rate`, :func:`~boundgeo.robustness_profile` and
  :func:`~boundgeo.subspace_fooling` split their inputs into the chunks of ``batch_size`` that
  one process uses and sum exact counts: the rates are one process's exactly. (The profile's
  universal witnesses are fitted whole on every rank, for the same reason.)

Settings that differ across ranks (``n``, ``seed``, ``out``, the model, the data…) are refused
on every rank with a :class:`~boundgeo.BoundgeoError` naming them, never left to deadlock or to
mix, and an error on one rank is raised on all of them.

>>> import boundgeo as bg
>>> bg.distributed.world()          # outside torchrun: one process
World(rank=0, size=1)
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

import torch

from ._errors import BoundgeoError

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place in the process group: ``rank`` of ``size`` (0 of 1 outside one)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """True on the rank that prints, holds locks and writes shared files (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """True when more than one process takes part."""
        return self.size > 1

    # -------------------------------------------------------------------- collectives
    def _device(self) -> torch.device:
        """Where a collective's tensors must be: the GPU of this rank for NCCL, else the CPU."""
        import torch.distributed as dist

        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of ``tensor`` over the ranks, on ``tensor``'s device (``tensor`` is unchanged)."""
        if not self.active:
            return tensor
        import torch.distributed as dist

        buffer = tensor.detach().to(self._device(), copy=True)
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
        return buffer.to(tensor.device)

    def all_gather(self, obj: T) -> list[T]:
        """Every rank's ``obj`` (picklable), in rank order."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.size
        dist.all_gather_object(gathered, obj)
        return gathered

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        import torch.distributed as dist

        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def run_on_main(self, fn: Callable[[], T]) -> T:
        """``fn()`` on rank 0 only, its result broadcast to every rank. An exception there is
        raised on every rank (a BoundgeoError with rank 0's message), so none waits forever."""
        if not self.active:
            return fn()
        outcome: tuple[str, Any] = ("ok", None)
        if self.main:
            try:
                outcome = ("ok", fn())
            except BoundgeoError as exc:
                outcome = ("error", str(exc))
            except BaseException as exc:
                outcome = ("error", f"{type(exc).__name__}: {exc}")
                self.broadcast(outcome)
                raise
        outcome = self.broadcast(outcome)
        if outcome[0] == "error":
            raise BoundgeoError(outcome[1] if self.main else f"on rank 0: {outcome[1]}")
        return outcome[1]

    def agree(self, what: str, values: Mapping[str, Any]) -> None:
        """Refuse, on every rank, settings that differ across ranks; the message names them.

        Args:
            what: the call, for the message (e.g. ``"boundary_normals"``).
            values: name → value (JSON-like: compared with ``==``).
        """
        if not self.active:
            return
        gathered = self.all_gather(dict(values))
        differ = sorted({name for other in gathered for name in set(other) | set(values)
                         if other.get(name) != gathered[0].get(name)})
        if differ:
            detail = "; ".join(
                f"{name}: " + ", ".join(f"rank {r} {other.get(name)!r}" for r, other in enumerate(gathered))
                for name in differ
            )
            raise BoundgeoError(f"{what} was called with settings that differ across the {self.size} "
                                f"ranks ({detail}); every rank must pass the same {', '.join(differ)}")

    def check_all(self, error: str | None) -> None:
        """Raise on every rank when any rank reports an ``error`` (its message, else None)."""
        if not self.active:
            if error is not None:
                raise BoundgeoError(error)
            return
        errors = self.all_gather(error)
        bad = [(r, e) for r, e in enumerate(errors) if e is not None]
        if bad:
            rank, message = bad[0]
            raise BoundgeoError(message if rank == self.rank else f"on rank {rank}: {message}")


_ALONE = threading.local()


@contextlib.contextmanager
def single_process():
    """Within this block boundgeo ignores the process group: for work that one rank does alone
    (Algorithm 1, sequential by nature) while the others wait for its result."""
    before = getattr(_ALONE, "depth", 0)
    _ALONE.depth = before + 1
    try:
        yield
    finally:
        _ALONE.depth = before


def world() -> World:
    """This process's rank and the number of processes: from the initialised
    ``torch.distributed`` process group, else ``World(0, 1)``. torch.distributed is never
    required: without it, or without a group, boundgeo runs as one process."""
    if getattr(_ALONE, "depth", 0):
        return World()
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch built without distributed support
        return World()
    if not dist.is_available() or not dist.is_initialized():
        return World()
    return World(dist.get_rank(), dist.get_world_size())


def launched_by_torchrun() -> bool:
    """True when the environment says torchrun (or another launcher) started this process as
    one of several: ``WORLD_SIZE`` above 1 with ``RANK`` and a rendezvous address."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return False
    return size > 1 and "RANK" in os.environ and "MASTER_ADDR" in os.environ


def gather_pieces(world: World, sizes: list[int], local: Mapping[int, torch.Tensor],
                  like: torch.Tensor) -> list[torch.Tensor]:
    """Every piece of a split computation on every rank, in piece order.

    Piece i (of ``len(sizes)``) was computed on rank i mod N and has ``sizes[i]`` rows of the
    shape and dtype of ``like``'s rows; ``local`` maps the indices of this rank's pieces to
    their results. Pieces travel in one padded ``all_gather``.
    """
    if not world.active:
        return [local[i] for i in range(len(sizes))]
    import torch.distributed as dist

    slots = -(-len(sizes) // world.size)
    height = max(sizes, default=0)
    device = world._device()
    buffer = torch.zeros((slots, height) + tuple(like.shape[1:]), dtype=like.dtype, device=device)
    for i, value in local.items():
        buffer[i // world.size, : sizes[i]] = value.to(device)
    gathered = [torch.empty_like(buffer) for _ in range(world.size)]
    dist.all_gather(gathered, buffer)
    return [gathered[i % world.size][i // world.size, : sizes[i]].to(like.device) for i in range(len(sizes))]


def chunks(n: int, size: int, world: World) -> list[tuple[int, int]]:
    """The (start, stop) chunks of ``size`` rows out of ``n`` that this rank takes: chunk i on
    rank i mod N. They are the chunks one process goes through, so every row is computed in the
    same batch, and results are bit for bit one process's."""
    return [(start, min(start + size, n)) for start in range(0, n, size)][world.rank :: world.size]


def map_rows(world: World, n: int, size: int, fn: Callable[[int, int], torch.Tensor],
             *, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """``fn(start, stop)`` over the chunks of ``size`` rows, concatenated: (n, ...) on every rank.

    Each rank computes its chunks (:func:`chunks`); the others are zeros, and the ranks' tensors
    are summed, which adds only zeros to every value (exact). bool results travel as uint8.
    """
    if not world.active:
        parts = [fn(start, stop) for start, stop in chunks(n, size, world)]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype, device=device)
    out, error = None, None
    try:
        for start, stop in chunks(n, size, world):
            part = fn(start, stop)
            if out is None:
                out = torch.zeros((n,) + tuple(part.shape[1:]),
                                  dtype=torch.uint8 if dtype == torch.bool else dtype, device=part.device)
            out[start:stop] = part
    except Exception as exc:  # sent to every rank in the shape exchange below, so none waits forever
        error = exc
    shapes = world.all_gather(f"{type(error).__name__}: {error}" if error is not None
                              else None if out is None else tuple(out.shape[1:]))
    failed = [(r, s) for r, s in enumerate(shapes) if isinstance(s, str)]
    if error is not None:
        raise error
    if failed:
        raise BoundgeoError(f"failed on rank {failed[0][0]} of {world.size} ({failed[0][1]}); every rank stops")
    trailing = next((s for s in shapes if s is not None), None)
    if trailing is None:  # no rows at all (n == 0), as one process returns
        return torch.zeros(0, dtype=dtype, device=device)
    if out is None:  # fewer chunks than ranks: this rank adds zeros
        out = torch.zeros((n,) + trailing, dtype=torch.uint8 if dtype == torch.bool else dtype, device=device)
    out = world.all_reduce_sum(out)
    return out.bool() if dtype == torch.bool else out
