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
- :func:`~boundgeo.spectrum` on the streamed route splits the blocks of the Gram matrix it
  accumulates (rows for the d x d one, columns for the n x n one: each rank reads 1/N of the
  data) and sums them with ``all_reduce``; the in-memory routes (gram, exact, randomized), for
  matrices that every rank holds anyway, run whole on every rank.
- :func:`~boundgeo.universal_perturbation` with ``method="sgd"`` or ``"batched"`` splits every
  mini-batch into pieces, one or more per rank, and sums the pieces' gradients (or gathers
  their DeepFool steps) in order, so v is the same on every rank after every step.
  ``method="deepfool"`` (Algorithm 1) is sequential, every step starting from the v the last
  one left: it runs on rank 0 and the others receive its result.
- :func:`~boundgeo.fooling_rate`, :func:`~boundgeo.robustness_profile` and
  :func:`~boundgeo.subspace_fooling` split their inputs into the chunks of ``batch_size`` that
  one process uses and sum exact counts: the rates are one process's exactly. (The profile's
  universal witnesses are each fitted whole, for the same reason: budget ε_i on rank i mod N.)

Settings that differ across ranks (``n``, ``seed``, ``out``, the model, the data…) are refused
on every rank with a :class:`~boundgeo.BoundgeoError` naming them, never left to deadlock or to
mix. An error on one rank is raised on all of them at the next collective (every collective
carries one flag per rank: :meth:`World.sum_of`, :func:`gather_pieces`, :func:`map_rows`,
:meth:`World.run_on_main`), so none waits forever.

>>> import boundgeo as bg
>>> bg.distributed.world()          # outside torchrun: one process
World(rank=0, size=1)
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence, TypeVar

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
        raised on every rank (rank 0's own exception there, a BoundgeoError with its message on
        the others), so none waits forever."""
        if not self.active:
            return fn()
        outcome: Any = None
        error: BaseException | None = None
        if self.main:
            try:
                outcome = fn()
            except Exception as exc:
                error, outcome = exc, Failure.of(exc)
            except BaseException as exc:  # KeyboardInterrupt…: tell the others, then stop
                self.broadcast(Failure.of(exc))
                raise
        outcome = self.broadcast(outcome)
        self.raise_failures(error, [outcome] + [None] * (self.size - 1))
        return outcome

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

    def raise_failures(self, error: BaseException | None, reports: Sequence[Any]) -> None:
        """After a collective that carried every rank's report (a :class:`Failure` where the rank
        failed, anything else where it did not): this rank raises its own ``error`` again, with
        its traceback; the others raise a BoundgeoError with the first failed rank's message. So
        every rank stops at the same point, and none waits in the next collective."""
        if error is not None:
            raise error
        for rank, report in enumerate(reports):
            if isinstance(report, Failure):
                raise BoundgeoError(f"failed on rank {rank} of {self.size}, so every rank stops: {report.message}")

    def _stop_if_flagged(self, flags: torch.Tensor, error: BaseException | None) -> None:
        """``flags`` (summed or gathered across ranks) nonzero where a rank failed: then every rank
        exchanges the messages (on this error path only) and raises."""
        if bool(flags.any()):  # one host sync: the result is needed before the next step anyway
            self.raise_failures(error, self.all_gather(None if error is None else Failure.of(error)))

    def sum_of(self, compute: Callable[[], torch.Tensor], *, shape: Sequence[int], dtype: torch.dtype,
               device: torch.device | str) -> torch.Tensor:
        """``compute()`` on every rank, summed over the ranks with ``all_reduce`` (``compute()`` alone
        outside a group). An exception in ``compute`` on any rank is raised on every rank, and so is
        a result that is not of ``shape`` and ``dtype``: the sum travels with one flag per rank,
        so failing costs no extra collective when nothing fails."""
        if not self.active:
            return compute()
        error: BaseException | None = None
        value = None
        try:
            value = compute()
            if tuple(value.shape) != tuple(shape) or value.dtype != dtype:
                raise BoundgeoError(f"a rank computed {tuple(value.shape)} {value.dtype}, expected "
                                    f"{tuple(shape)} {dtype}; this is a bug, please report it")
        except Exception as exc:
            error = exc
        wire = _wire_dtype(dtype)
        buffer = torch.zeros(math.prod(shape) + 1, dtype=wire, device=self._device())
        if error is None:
            buffer[:-1] = value.reshape(-1).to(buffer.device, wire)
        else:
            buffer[-1] = 1
        buffer = self.all_reduce_sum(buffer)
        self._stop_if_flagged(buffer[-1:], error)
        return buffer[:-1].reshape(tuple(shape)).to(device, dtype)

    def share(self, items: Sequence[T]) -> list[T]:
        """This rank's items: item i on rank i mod N (all of them outside a group)."""
        return list(items)[self.rank :: self.size]


@dataclass(frozen=True)
class Failure:
    """A rank's error as it travels to the other ranks: its message (picklable)."""

    message: str

    @classmethod
    def of(cls, exc: BaseException) -> "Failure":
        return cls(str(exc) if isinstance(exc, BoundgeoError) else f"{type(exc).__name__}: {exc}")


def _wire_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a tensor travels in: bools and bytes widened so that flags summed over any
    number of ranks cannot wrap around."""
    return torch.int32 if dtype in (torch.bool, torch.uint8, torch.int8) else dtype


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


def gather_pieces(world: World, sizes: Sequence[int], compute: Callable[[int], torch.Tensor], *,
                  row_shape: Sequence[int], dtype: torch.dtype, device: torch.device | str) -> list[torch.Tensor]:
    """Every piece of a split computation on every rank, in piece order.

    Piece i (of ``len(sizes)``) is ``compute(i)``, ``sizes[i]`` rows of ``row_shape`` and
    ``dtype``, computed on rank i mod N (every piece here outside a group). The pieces travel in
    one padded ``all_gather`` that also carries one flag per rank: an exception in ``compute`` on
    any rank is raised on every rank.
    """
    if not world.active:
        return [compute(i) for i in range(len(sizes))]
    import torch.distributed as dist

    row_shape = tuple(row_shape)
    slots, height = -(-len(sizes) // world.size), max(sizes, default=0)
    wire = _wire_dtype(dtype)
    per_slot = height * math.prod(row_shape)
    buffer = torch.zeros(slots * per_slot + 1, dtype=wire, device=world._device())
    error: BaseException | None = None
    try:
        for i in range(world.rank, len(sizes), world.size):
            value = compute(i)
            if tuple(value.shape) != (sizes[i],) + row_shape:
                raise BoundgeoError(f"piece {i} has shape {tuple(value.shape)}, expected {(sizes[i],) + row_shape}; "
                                    "this is a bug, please report it")
            start = (i // world.size) * per_slot
            buffer[start : start + value.numel()] = value.reshape(-1).to(buffer.device, wire)
    except Exception as exc:
        error = exc
        buffer[-1] = 1
    gathered = [torch.empty_like(buffer) for _ in range(world.size)]
    dist.all_gather(gathered, buffer)
    world._stop_if_flagged(torch.stack([part[-1] for part in gathered]), error)
    pieces = []
    for i, size in enumerate(sizes):
        start = (i // world.size) * per_slot
        flat = gathered[i % world.size][start : start + size * math.prod(row_shape)]
        pieces.append(flat.reshape((size,) + row_shape).to(device, dtype))
    return pieces


def sample_digest(x: torch.Tensor) -> str:
    """sha256 of the shape and of the rows at up to 32 evenly spaced positions: whether every rank
    holds the same data, without hashing all of it."""
    digest = hashlib.sha256(str(tuple(x.shape)).encode())
    if len(x):
        for i in torch.linspace(0, x.shape[0] - 1, min(x.shape[0], 32)).round().long().tolist():
            digest.update(x[i].detach().double().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def chunks(n: int, size: int, world: World) -> list[tuple[int, int]]:
    """The (start, stop) chunks of ``size`` rows out of ``n`` that this rank takes: chunk i on
    rank i mod N. They are the chunks one process goes through, so every row is computed in the
    same batch, and results are bit for bit one process's."""
    return world.share([(start, min(start + size, n)) for start in range(0, n, size)])


def map_rows(world: World, n: int, size: int, fn: Callable[[int, int], torch.Tensor], *, dtype: torch.dtype,
             device: torch.device | str, trailing: Sequence[int] = ()) -> torch.Tensor:
    """``fn(start, stop)`` over the chunks of ``size`` rows, concatenated: (n, *trailing) on every rank.

    Each rank computes its chunks (:func:`chunks`) into a tensor of zeros, and the ranks'
    tensors are summed, which adds only zeros to every value (exact): one ``all_reduce``, which
    also carries the ranks' failures (:meth:`World.sum_of`).
    """
    shape = (n,) + tuple(trailing)

    def mine() -> torch.Tensor:
        out = torch.zeros(shape, dtype=dtype, device=device)
        for start, stop in chunks(n, size, world):
            part = fn(start, stop)
            if tuple(part.shape) != (stop - start,) + tuple(trailing):
                raise BoundgeoError(f"rows {start}:{stop} came back of shape {tuple(part.shape)}, expected "
                                    f"{(stop - start,) + tuple(trailing)}; this is a bug, please report it")
            out[start:stop] = part
        return out

    return world.sum_of(mine, shape=shape, dtype=dtype, device=device)
