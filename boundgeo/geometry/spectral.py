"""The spectrum of the boundary normals against random directions (Moosavi-Dezfooli et al. 2017, §4).

The paper stacks the unit vectors r(x)/‖r(x)‖ of many images into a matrix N and finds that its
singular values decay much faster than those of a matrix of random unit vectors: the normals of
the decision boundary near the data are correlated and lie close to a low-dimensional subspace S,
which is what makes a single universal perturbation possible.

:func:`spectrum` computes the singular values and principal directions of N by the cheapest
route that fits (exact SVD, Gram matrix of the smaller side, randomized top-k SVD, or a
streaming Gram over memory-mapped rows that never holds N in memory), and the same spectrum for
n random unit vectors in R^d (mean and 5-95% band over seeded draws) beside the
Marchenko-Pastur prediction.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._checks import check_choice, check_count, check_seed
from .._errors import BoundgeoError
from .._results import Result
from ..distributed import World, sample_digest
from ..distributed import world as get_world

ROUTES = ("exact", "gram", "randomized", "stream")
KINDS = ("normal", "perturbation")
# Above this many matrix entries the rows are streamed in blocks instead of copied (float64).
_DENSE_LIMIT = 50_000_000
# One float64 block of rows or columns in the stream route takes at most this (its float32
# read buffer half as much); smaller blocks mean more reads, larger ones more memory.
_BLOCK_BYTES = 16 * 2**20
_MAX_COMPONENTS = 256


# ============================================================================== result
@dataclass(frozen=True, eq=False)
class Spectrum(Result):
    """Singular values of the matrix of unit normals, beside those of random unit vectors.

    Fields:
        singular_values: (r,) descending; r = min(n, d), or k for the randomized route.
        baseline_mean, baseline_low, baseline_high: (r_b,) singular values of n random unit
            vectors in R^d: mean and 5% / 95% quantiles over ``baseline_draws`` draws.
        marchenko_pastur: (min(n, d),) the singular values the Marchenko-Pastur law predicts
            for n random unit vectors in R^d (quantiles of its density).
        components: (m, d) top right singular vectors (principal directions in input space),
            m = min(r, k or 256).
        n, d: rows (directions used) and their dimension; input_shape: the shape of one input.
        total_energy: Σσ² over all singular values (‖N‖_F² = n for unit rows), so that energies
            are exact even when only the top k values were computed.
        mean_squared_cosine: the mean of cos²(n_i, n_j) over pairs i ≠ j, one number for how
            correlated the directions are: (Σσ⁴ − n) / (n² − n) when every singular value is
            known, else from ``pair_rows`` seeded rows. 1/d for random unit vectors
            (:attr:`random_mean_squared_cosine`), 1 when every row is ± the same vector.
        abs_cosine_above_half: the share of pairs i ≠ j with |cos(n_i, n_j)| > 0.5, from
            ``pair_rows`` rows (every row when the pairs are few enough to count exactly).
        pair_rows: how many rows (a seeded choice, or all n) the pair statistics use.
        route, kind: how it was computed and from which directions. settings: the arguments.
    """

    singular_values: torch.Tensor
    baseline_mean: torch.Tensor
    baseline_low: torch.Tensor
    baseline_high: torch.Tensor
    marchenko_pastur: torch.Tensor
    components: torch.Tensor
    n: int
    d: int
    input_shape: tuple[int, ...]
    total_energy: float
    route: str
    kind: str
    settings: dict[str, Any] = field(default_factory=dict)
    mean_squared_cosine: float = float("nan")  # nan: a spectrum saved before these were measured
    abs_cosine_above_half: float = float("nan")
    pair_rows: int = 0

    # -------------------------------------------------------------- summaries
    @property
    def random_mean_squared_cosine(self) -> float:
        """E cos² of two independent random unit vectors in R^d: exactly 1/d."""
        return 1.0 / self.d

    @property
    def random_abs_cosine_above_half(self) -> float:
        """P(|cos| > 0.5) for two independent random unit vectors in R^d: cos has the density
        ∝ (1 − t²)^((d−3)/2), so the share is the regularised incomplete beta I_{3/4}((d−1)/2, ½)."""
        from scipy.special import betainc

        return float(betainc((self.d - 1) / 2.0, 0.5, 0.75)) if self.d > 1 else 1.0

    @property
    def baseline_source(self) -> str:
        """What ``baseline=True`` compares with: the mean of the seeded random draws, or the
        Marchenko-Pastur prediction when none were drawn (``baseline_draws=0``)."""
        return "random draws" if len(self.baseline_mean) else "marchenko-pastur (baseline_draws=0)"

    def _values(self, baseline: bool) -> torch.Tensor:
        if not baseline:
            return self.singular_values
        return self.baseline_mean if len(self.baseline_mean) else self.marchenko_pastur

    def _total(self, baseline: bool) -> float:
        return float((self._values(True).double() ** 2).sum()) if baseline else self.total_energy

    def energy(self, k: int, *, baseline: bool = False) -> float:
        """Share of Σσ² in the top k singular values (of the random baseline if ``baseline``)."""
        values = self._values(baseline)
        if k < 0:
            raise BoundgeoError(f"k must be >= 0, got {k}")
        if k > len(values) and len(values) < min(self.n, self.d):
            raise BoundgeoError(f"only the top {len(values)} singular values were computed, not {k}")
        return float((values[:k].double() ** 2).sum()) / self._total(baseline)

    def dim(self, energy: float = 0.9, *, baseline: bool = False) -> int:
        """Smallest k whose top-k singular values hold ``energy`` of Σσ²."""
        if not 0 < energy <= 1:
            raise BoundgeoError(f"energy must be in (0, 1], got {energy}")
        values = self._values(baseline).double()
        cumulative = torch.cumsum(values**2, 0) / self._total(baseline)
        reached = (cumulative >= energy - 1e-12).nonzero()
        if len(reached) == 0:
            raise BoundgeoError(
                f"the {len(values)} singular values computed hold {float(cumulative[-1]):.3f} of "
                f"the energy, less than {energy}; compute more with k="
            )
        return int(reached[0]) + 1

    @staticmethod
    def _erank(values: torch.Tensor) -> float:
        p = values.double().clamp_min(0)
        p = p[p > 0] / p.sum()
        return float(torch.exp(-(p * p.log()).sum()))

    @property
    def effective_rank(self) -> float:
        """Roy & Vetterli (2007): exp of the entropy of σ_i / Σσ_j (over the values computed)."""
        return self._erank(self.singular_values)

    @property
    def baseline_effective_rank(self) -> float:
        return self._erank(self._values(True))

    def concentration(self, energy: float = 0.9) -> float:
        """How much more concentrated than random: dims random needs for ``energy`` divided by
        the dims the normals need."""
        return self.dim(energy, baseline=True) / self.dim(energy)

    def summary(self, energy: float = 0.9) -> dict[str, float | int | str]:
        """Headline numbers for the normals and for the random baseline alike; ``"baseline"``
        says which baseline the ``random_*`` numbers come from (see :attr:`baseline_source`)."""
        return {
            "n": self.n,
            "d": self.d,
            f"dim_{round(energy * 100)}": self.dim(energy),  # round: int(0.57 * 100) is 56
            f"random_dim_{round(energy * 100)}": self.dim(energy, baseline=True),
            "concentration": self.concentration(energy),
            "effective_rank": self.effective_rank,
            "random_effective_rank": self.baseline_effective_rank,
            "energy_top10": self.energy(min(10, len(self.singular_values))),
            "random_energy_top10": self.energy(min(10, len(self._values(True))), baseline=True),
            "sigma_1": float(self.singular_values[0]),
            "random_sigma_1": float(self._values(True)[0]),
            "mean_squared_cosine": self.mean_squared_cosine,
            "random_mean_squared_cosine": self.random_mean_squared_cosine,
            "abs_cosine_above_half": self.abs_cosine_above_half,
            "random_abs_cosine_above_half": self.random_abs_cosine_above_half,
            "baseline": self.baseline_source,
        }

    def basis(self, k: int, *, reshape: bool = False) -> torch.Tensor:
        """Top-k principal directions: (k, d) orthonormal rows, or (k, *input_shape)."""
        if not 1 <= k <= len(self.components):
            raise BoundgeoError(
                f"k must be between 1 and the {len(self.components)} components kept; "
                "pass a larger k= to spectrum() for more"
            )
        rows = self.components[:k]
        return rows.reshape((k,) + tuple(self.input_shape)) if reshape else rows

    def to_frame(self):
        """Tidy rows: index, singular_value, source ('normals', 'random', 'marchenko-pastur'),
        and the random band's low/high."""
        import pandas as pd

        frames = [
            pd.DataFrame({"index": np.arange(1, len(self.singular_values) + 1),
                          "singular_value": self.singular_values.double().numpy(),
                          "source": self.kind + "s"}),
            pd.DataFrame({"index": np.arange(1, len(self.baseline_mean) + 1),
                          "singular_value": self.baseline_mean.double().numpy(),
                          "low": self.baseline_low.double().numpy(),
                          "high": self.baseline_high.double().numpy(),
                          "source": "random"}),
            pd.DataFrame({"index": np.arange(1, len(self.marchenko_pastur) + 1),
                          "singular_value": self.marchenko_pastur.double().numpy(),
                          "source": "marchenko-pastur"}),
        ]
        return pd.concat(frames, ignore_index=True)


# ============================================================================== inputs
def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit ℓ2 norm, in place: divided by their largest entry first, so that rows
    of magnitude 1e200 (whose squared norm overflows) or 1e-200 (underflows) keep their direction."""
    x /= x.abs().amax(dim=1, keepdim=True)
    x /= x.norm(dim=1, keepdim=True)
    return x


class _Rows:
    """The (n, d) matrix of directions: a view of the source plus which rows to use."""

    def __init__(self, array: torch.Tensor, keep: torch.Tensor | None, input_shape, unit: bool):
        self.array, self.keep, self.input_shape, self.unit = array, keep, tuple(input_shape), unit
        self.rows = torch.arange(array.shape[0]) if keep is None else keep.nonzero().squeeze(1)

    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def d(self) -> int:
        return self.array.shape[1]

    def dense(self) -> torch.Tensor:
        return _unit_rows(self.array[self.rows].double())

    @property
    def source_rows(self) -> int:
        """Rows of the source, used or not."""
        return self.array.shape[0]

    def _mask(self, positions: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(self.source_rows, dtype=torch.bool)
        mask[self.rows[positions]] = True
        return mask

    def subset(self, positions: torch.Tensor) -> "_Rows":
        """The same source restricted to the rows in use at ``positions`` (sorted)."""
        return _Rows(self.array, self._mask(positions), self.input_shape, self.unit)

    def row_blocks(self, size: int, world: World = World()):
        for start in world.share(range(0, self.n, size)):
            yield _unit_rows(self.array[self.rows[start : start + size]].double())

    def column_blocks(self, size: int, world: World = World()):
        for start in world.share(range(0, self.d, size)):
            yield start, self.array[:, start : start + size][self.rows].double()


class _FileRows(_Rows):
    """Rows of a ``.npy`` file written by :func:`~boundgeo.boundary_normals`, read block by block.

    Blocks are read with plain file reads into a buffer, not through a memory map: a column
    block touches every row, and the kernel's read-ahead and fault-around would make nearly the
    whole mapped file resident (and counted in RSS) for every block. No read takes more than
    ``_BLOCK_BYTES``, whatever the file's size.
    """

    def __init__(self, path: Path, keep: torch.Tensor, input_shape) -> None:
        self.path = path
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(handle)
            self._offset = handle.tell()
        if fortran or dtype.hasobject:
            raise BoundgeoError(f"{path} is not a C-ordered numeric array")
        self._dtype = dtype
        self._shape = (shape[0], int(np.prod(shape[1:])))
        self.keep, self.input_shape, self.unit = keep, tuple(input_shape), True
        self.rows = keep.nonzero().squeeze(1)
        self._rows_np = self.rows.numpy()

    @property
    def d(self) -> int:
        return self._shape[1]

    @property
    def source_rows(self) -> int:
        return self._shape[0]

    def nonzero(self) -> torch.Tensor:
        """Which rows of the file have any non-zero entry: one sequential pass in blocks of at
        most ``_BLOCK_BYTES`` (for directories written before zero normals were flagged)."""
        n, d = self._shape
        size = max(1, min(n, _BLOCK_BYTES // (self._dtype.itemsize * d)))
        block = np.empty((size, d), dtype=self._dtype)
        flags = np.empty(n, dtype=bool)
        with open(self.path, "rb", buffering=0) as handle:
            handle.seek(self._offset)
            for start in range(0, n, size):
                rows = block[: min(size, n - start)]
                self._fill(handle, rows)
                flags[start : start + len(rows)] = (rows != 0).any(axis=1)
        return torch.from_numpy(flags)

    def _fill(self, handle, out: np.ndarray) -> None:
        """Read exactly ``out.nbytes`` from ``handle`` into ``out`` (reads may come back short)."""
        view, done = memoryview(out).cast("B"), 0
        while done < len(view):
            got = handle.readinto(view[done:])
            if not got:
                raise BoundgeoError(f"{self.path} ends before the {self._shape[0]} x {self.d} array its header declares")
            done += got

    def _read_rows(self, handle, rows, start: int, stop: int, raw: np.ndarray) -> None:
        """Columns [start, stop) of the file's ``rows`` into the first rows of ``raw``, one read each."""
        itemsize = self._dtype.itemsize
        for i, row in enumerate(rows):
            handle.seek(self._offset + (int(row) * self.d + start) * itemsize)
            self._fill(handle, raw[i, : stop - start])

    def _blocks(self, spans: list[tuple[np.ndarray, int, int]]):
        """One float64 block per span (rows, start, stop). The same two buffers (the rows as read,
        and their float64 copy that is handed out) serve every block: each block is overwritten
        by the next, and memory stays at one block however many there are."""
        height = max(len(rows) for rows, _, _ in spans)
        width = max(stop - start for _, start, stop in spans)
        raw = np.empty((height, width), dtype=self._dtype)
        out = torch.empty((height, width), dtype=torch.float64)
        with open(self.path, "rb", buffering=0) as handle:
            for rows, start, stop in spans:
                self._read_rows(handle, rows, start, stop, raw)
                block = out[: len(rows), : stop - start]
                block.copy_(torch.from_numpy(raw[: len(rows), : stop - start]))
                yield block

    def subset(self, positions: torch.Tensor) -> "_FileRows":
        return _FileRows(self.path, self._mask(positions), self.input_shape)

    def dense(self) -> torch.Tensor:
        raw = np.empty((self.n, self.d), dtype=self._dtype)
        with open(self.path, "rb", buffering=0) as handle:
            self._read_rows(handle, self._rows_np, 0, self.d, raw)
        return _unit_rows(torch.from_numpy(raw).double())

    def row_blocks(self, size: int, world: World = World()):
        spans = [(self._rows_np[start : start + size], 0, self.d) for start in world.share(range(0, self.n, size))]
        if spans:
            for block in self._blocks(spans):
                yield _unit_rows(block)

    def column_blocks(self, size: int, world: World = World()):
        spans = [(self._rows_np, start, min(start + size, self.d)) for start in world.share(range(0, self.d, size))]
        if spans:
            for (_, start, _), block in zip(spans, self._blocks(spans)):
                yield start, block


def _as_rows(normals, kind: str) -> _Rows:
    from ..attacks.boundary import BoundaryPoints

    if kind not in KINDS:
        raise BoundgeoError(f"kind must be 'normal' or 'perturbation', got {kind!r}")
    if isinstance(normals, (str, os.PathLike)):
        if not Path(normals).is_dir():
            raise BoundgeoError(f"{normals} is not the output directory of a boundary_normals run")
        normals = BoundaryPoints.load(normals)  # validated, memory-mapped: nothing is read yet
    if isinstance(normals, BoundaryPoints):
        return _points_rows(normals, kind)
    if isinstance(normals, np.ndarray):
        normals = torch.from_numpy(normals)
    if not isinstance(normals, torch.Tensor):
        raise BoundgeoError(
            f"normals must be BoundaryPoints, a directory, or an (n, d) array; got {type(normals).__name__}"
        )
    if normals.dim() < 2 or normals.shape[0] == 0:
        raise BoundgeoError(f"normals must be a non-empty (n, d) matrix of rows, got {tuple(normals.shape)}")
    if normals.is_complex() or normals.dtype == torch.bool:
        raise BoundgeoError(f"normals must be real-valued rows, got dtype {normals.dtype}")
    rows = _Rows(normals.detach().cpu().reshape(normals.shape[0], -1), None, normals.shape[1:], unit=False)
    _check_rows(rows)
    return rows


def _points_rows(points, kind: str) -> _Rows:
    """The converged rows of ``points``; for normals, without the zero ones (a vanishing
    gradient gives no normal). A large collection on disk is read block by block from its
    file, choosing rows from the small per-row arrays only."""
    from ..attacks.boundary import ZERO_NORMAL, _stored

    keep = points.converged.cpu().bool()
    if kind == "normal":
        keep &= points.status.cpu() != ZERO_NORMAL
    if not keep.any():
        raise BoundgeoError("no converged boundary point with a non-zero normal" if kind == "normal"
                            else "no converged boundary point to take directions from")
    stored = _stored(points)
    if stored is not None and len(points) * int(np.prod(points.input_shape)) > _DENSE_LIMIT:
        path = stored.folder / f"{kind}.npy"
        rows = _FileRows(path, keep, points.input_shape)
        if kind == "normal" and stored.format < 2:  # written before zero normals were flagged
            keep &= rows.nonzero()
            if not keep.any():
                raise BoundgeoError("no converged boundary point with a non-zero normal")
            rows = _FileRows(path, keep, points.input_shape)
        return rows
    source = points.normal if kind == "normal" else points.perturbation
    array = source.detach().reshape(len(points), -1).cpu()
    if kind == "normal":  # results made or saved before zero normals were flagged
        keep &= array.abs().amax(dim=1) > 0
        if not keep.any():
            raise BoundgeoError("no converged boundary point with a non-zero normal")
    rows = _Rows(array, keep, points.input_shape, unit=True)
    if rows.n * rows.d <= _DENSE_LIMIT:
        _check_rows(rows)
    return rows


def _check_rows(rows: _Rows) -> None:
    sample = rows.array[rows.rows] if rows.n * rows.d <= _DENSE_LIMIT else None
    if sample is None:
        return
    if not torch.isfinite(sample).all():
        bad = (~torch.isfinite(sample)).any(dim=1).nonzero().squeeze(1)[:5].tolist()
        raise BoundgeoError(f"rows {bad} of the {tuple(sample.shape)} matrix contain NaN or Inf")
    zero = (sample.abs().sum(dim=1) == 0).nonzero().squeeze(1)
    if len(zero):
        raise BoundgeoError(
            f"{len(zero)} rows of the {tuple(sample.shape)} matrix are zero (first: "
            f"{zero[:5].tolist()}); a zero row has no direction"
        )


def _return_freed_memory() -> None:
    """Hand freed heap memory back to the operating system between the stages of a large spectrum.

    glibc serves the ~30 MiB blocks of these stages from its heaps once the first one is freed
    (its mmap threshold rises to their size) and keeps up to twice that free in every heap the
    BLAS threads used: for N = 2000 x 150,528, 150 MiB still counted in RSS after the baseline,
    on which the stream's own peak then stacked. ``malloc_trim`` returns it; elsewhere this
    does nothing.
    """
    try:
        import ctypes

        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return
    trim(0)


# ============================================================================== routes
def _pick_route(rows: _Rows, k: int | None) -> str:
    small, large = sorted((rows.n, rows.d))
    if rows.n * rows.d > _DENSE_LIMIT:
        return "stream"
    if k is not None and small > 2000 and k <= small // 10:
        return "randomized"
    return "gram" if large >= 2 * small else "exact"


def _from_gram_rows(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of a Gram matrix → (σ descending, eigenvectors as columns)."""
    values, vectors = torch.linalg.eigh(gram)
    values, vectors = values.flip(0), vectors.flip(1)
    return values.clamp_min(0).sqrt(), vectors


def _route_exact(rows: _Rows, keep: int):
    _, s, vh = torch.linalg.svd(rows.dense(), full_matrices=False)
    return s, vh[:keep]


def _within_rank(s: torch.Tensor, keep: int) -> int:
    """Directions Nᵀu/σ exist only where σ is not zero: beyond the numerical rank they would
    be rounding noise divided by ~0, so fewer components are kept (basis(k) then says so)."""
    return max(1, min(keep, int((s > 1e-6 * s[0]).sum())))


def _route_gram(rows: _Rows, keep: int):
    """The Gram matrix of the smaller side, whole: the matrix is in memory (on every rank of a
    process group, which repeats this small product rather than exchange it)."""
    n_mat = rows.dense()
    if rows.d <= rows.n:  # d x d Gram: its eigenvectors are the right singular vectors
        s, v = _from_gram_rows(n_mat.T @ n_mat)
        return s, v[:, :keep].T.contiguous()
    s, u = _from_gram_rows(n_mat @ n_mat.T)  # n x n Gram: V = Nᵀ U / σ
    keep = _within_rank(s, keep)
    top = u[:, :keep]
    v = (n_mat.T @ top) / s[:keep].clamp_min(1e-300)
    return s, v.T.contiguous()


def _route_randomized(rows: _Rows, keep: int, k: int, seed: int):
    n_mat = rows.dense()
    with torch.random.fork_rng(devices=[]):  # svd_lowrank draws from the global generator
        torch.manual_seed(seed)
        u, s, v = torch.svd_lowrank(n_mat, q=min(k + 10, min(n_mat.shape)), niter=7)
    return s[:k], v[:, :keep].T.contiguous()


def _route_stream(rows: _Rows, keep: int, world: World = World()):
    """Gram of the smaller side accumulated in float64 block by block; N is never held whole.

    Memory beyond the result: one block, the Gram matrix and its eigenvectors. The second pass
    (N = 2000 x 150,528) holds the components (256 x d float32, 147 MiB), one block and the
    (n, keep) coefficients only.

    Under a process group each rank reads every N-th block (of rows for the d x d Gram, of
    columns for the n x n one) and the Gram matrices, then the components, are summed with
    ``all_reduce``: a rank reads 1/N of the file.
    """
    if rows.d <= rows.n:
        size = max(1, _BLOCK_BYTES // (8 * rows.d))

        def my_gram() -> torch.Tensor:
            gram = torch.zeros(rows.d, rows.d, dtype=torch.float64)
            for block in rows.row_blocks(size, world):
                gram.addmm_(block.T, block)
            return gram

        gram = world.sum_of(my_gram, shape=(rows.d, rows.d), dtype=torch.float64, device="cpu")
        s, v = _from_gram_rows(gram)
        return s, v[:, :keep].T.contiguous().float()
    size = max(1, _BLOCK_BYTES // (8 * rows.n))

    def my_gram() -> torch.Tensor:
        gram = torch.zeros(rows.n, rows.n, dtype=torch.float64)
        for _, block in rows.column_blocks(size, world):
            gram.addmm_(block, block.T)  # in place: no (n, n) temporary per block
        return gram

    gram = world.sum_of(my_gram, shape=(rows.n, rows.n), dtype=torch.float64, device="cpu")
    _return_freed_memory()
    scale = gram.diagonal().clone().sqrt()  # row norms: unit rows without a separate pass
    if (scale == 0).any():
        raise BoundgeoError(f"{int((scale == 0).sum())} rows are zero; a zero row has no direction")
    if not torch.isfinite(gram).all():
        raise BoundgeoError("the rows contain NaN or Inf")
    gram /= scale[:, None]
    gram /= scale[None, :]
    s, u = _from_gram_rows(gram)
    del gram
    keep = _within_rank(s, keep)
    # second pass: V = Nᵀ U / σ with N = D⁻¹ A, one column block at a time
    coeff_t = (u[:, :keep] / scale[:, None] / s[:keep].clamp_min(1e-300)).T.contiguous()
    del u
    _return_freed_memory()  # the eigensolver's scratch, before the components are allocated
    # each rank fills its own column blocks; the zeros elsewhere make the sum the whole of V

    def my_columns() -> torch.Tensor:
        v = (torch.zeros if world.active else torch.empty)(keep, rows.d, dtype=torch.float32)
        for start, block in rows.column_blocks(size, world):
            v[:, start : start + block.shape[1]] = coeff_t @ block
        return v

    return s, world.sum_of(my_columns, shape=(keep, rows.d), dtype=torch.float32, device="cpu")


# ============================================================================== baseline
def _rows_digest(normals, rows: _Rows) -> str | None:
    """What must be equal across ranks for their shares to add up: the resolved directory, or a
    sha256 of the rows at up to 32 evenly spaced positions (None outside a process group)."""
    from ..attacks.boundary import _stored

    if not get_world().active:
        return None
    if isinstance(normals, (str, os.PathLike)):
        return str(Path(normals).resolve())
    stored = _stored(normals) if hasattr(normals, "converged") else None
    if stored is not None:
        return str(stored.folder.resolve())
    picks = torch.linspace(0, rows.n - 1, min(rows.n, 32)).round().long() if rows.n else torch.zeros(0, dtype=torch.long)
    return sample_digest(torch.as_tensor(rows.array[rows.rows[picks]]))


def random_unit_spectrum(n: int, d: int, *, seed: int = 0) -> torch.Tensor:
    """Singular values (descending) of n random unit vectors in R^d, one seeded draw.

    For n <= d the n x n Gram matrix is drawn directly: the Gram matrix of n standard Gaussian
    vectors is Wishart(d, I_n), sampled by the Bartlett decomposition in O(n³) without ever
    forming the n x d matrix; normalising it by its diagonal gives the Gram matrix of the unit
    vectors. For n > d the unit rows are drawn in blocks and their d x d Gram accumulated.
    """
    rng = np.random.default_rng(seed)
    if n <= d:
        a = rng.standard_normal((n, n))
        a *= np.tri(n, n, -1, dtype=bool)  # strictly lower triangle, in place: no n x n copies
        a[np.diag_indices(n)] = np.sqrt(rng.chisquare(d - np.arange(n)))
        lower = torch.from_numpy(a)
        gram = lower @ lower.T
        del lower, a
        scale = gram.diagonal().sqrt()
        gram /= scale[:, None]
        gram /= scale[None, :]
        values = torch.linalg.eigvalsh(gram)
    else:
        gram = torch.zeros(d, d, dtype=torch.float32)
        size = max(1, _BLOCK_BYTES // (4 * d))
        for start in range(0, n, size):
            block = torch.from_numpy(rng.standard_normal((min(size, n - start), d), dtype=np.float32))
            block /= block.norm(dim=1, keepdim=True)
            gram += block.T @ block
        values = torch.linalg.eigvalsh(gram.double())
    return values.flip(0).clamp_min(0).sqrt()


def marchenko_pastur(n: int, d: int) -> torch.Tensor:
    """Singular values of n random unit vectors in R^d predicted by the Marchenko-Pastur law.

    With ratio λ = min(n, d) / max(n, d), the squared singular values of the Gram matrix of the
    smaller side follow the MP density on [(1 - √λ)², (1 + √λ)²], scaled by max(1, n/d); the i-th
    value is its (i - 1/2)/min(n, d) upper quantile.
    """
    r = min(n, d)
    lam = r / max(n, d)
    scale = max(1.0, n / d)
    lo, hi = (1 - math.sqrt(lam)) ** 2, (1 + math.sqrt(lam)) ** 2
    grid = np.linspace(lo, hi, 20001)
    density = np.sqrt(np.clip((hi - grid) * (grid - lo), 0, None)) / (2 * math.pi * lam * np.maximum(grid, 1e-300))
    cdf = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(grid))])
    cdf /= cdf[-1]
    quantiles = 1 - (np.arange(r) + 0.5) / r
    eig = np.interp(quantiles, cdf, grid) * scale
    return torch.from_numpy(np.sqrt(eig))


# ============================================================================== pair statistics
# Pair statistics count every pair when n²·d multiply-adds stay below this (n = 5,000 at d = 784),
# else use a seeded choice of rows (364 of them at d = 150,528): ~1 s on two CPU cores. Their
# Gram matrix stays within _PAIR_GRAM_BYTES (2,896 rows).
_PAIR_WORK = 2e10
_PAIR_GRAM_BYTES = 2**26


def _pair_statistics(rows: _Rows, values: torch.Tensor, complete: bool, seed: int) -> tuple[float, float, int]:
    """mean cos², share of |cos| > 0.5 over pairs i ≠ j, and the rows used.

    The mean of cos² is exact from the spectrum when every singular value is known:
    Σ_{i≠j} cos² = ‖NNᵀ‖_F² − n = Σσ⁴ − n. The share needs the cosines themselves, from the
    Gram matrix of all rows or of a seeded choice of them."""
    n, d = rows.n, rows.d
    if n < 2:
        return float("nan"), float("nan"), n
    m = max(2, int(min(n, math.sqrt(_PAIR_WORK / d), math.sqrt(_PAIR_GRAM_BYTES / 8))))
    positions = (torch.arange(n) if m == n else
                 torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:m].sort().values)
    sample = rows.subset(positions)
    # the Gram matrix of the chosen rows by column blocks (memory: one block), normalised to cosines
    gram = torch.zeros(m, m, dtype=torch.float64)
    for _, block in sample.column_blocks(max(1, _BLOCK_BYTES // (8 * m))):
        gram.addmm_(block.double(), block.double().T)
    scale = gram.diagonal().sqrt().clamp_min(1e-300)
    gram /= scale[:, None]
    gram /= scale[None, :]
    gram.fill_diagonal_(0.0)
    pairs = m * (m - 1)
    above = float((gram.abs() > 0.5).sum()) / pairs
    if complete:
        squared = (float((values.double() ** 4).sum()) - n) / (n * (n - 1))
    else:
        squared = float((gram**2).sum()) / pairs
    return min(max(squared, 0.0), 1.0), above, m


# ============================================================================== main entry
def spectrum(
    normals,
    *,
    kind: str = "normal",
    k: int | None = None,
    baseline_draws: int = 5,
    seed: int = 0,
    route: str | None = None,
    by: str | None = None,
) -> Spectrum | dict[Any, Spectrum]:
    """Singular values and principal directions of the boundary normals, against random.

    Implements the analysis of Moosavi-Dezfooli et al. 2017, Section 4: the rows of N are unit
    vectors (the normals, or r(x)/‖r(x)‖ with ``kind="perturbation"``, the paper's choice).

    Args:
        normals: a :class:`~boundgeo.BoundaryPoints` (converged points only), the output
            directory of :func:`~boundgeo.boundary_normals` (streamed from disk), or an (n, d)
            tensor/array of rows (normalised here; zero or NaN rows are an error). From
            BoundaryPoints or a directory, converged points with a zero normal are left out.
        kind: ``"normal"`` or ``"perturbation"`` (for BoundaryPoints).
        k: how many singular values (randomized route) and principal directions to keep;
            None: all singular values and up to 256 directions.
        baseline_draws: seeded draws of n random unit vectors in R^d for the band (0: none).
        seed: seeds the baseline and the randomized route.
        route: ``"exact"`` (SVD), ``"gram"`` (eigen-decomposition of the smaller Gram matrix),
            ``"randomized"`` (top-k, needs k), ``"stream"`` (blockwise Gram, bounded memory) or
            None to pick: stream above 5e7 entries, randomized for a small k of a large matrix,
            gram for a matrix at least twice as long as wide, else exact.
        by: one spectrum per group of points instead of one for all (Jetley et al., NeurIPS
            2018: class-specific directions): ``"label"`` (the predicted class), ``"target"``
            (the class across the boundary) or ``"pair"`` ((label, target)). Each group gets its
            own random baseline of as many rows; ``k`` is capped at each group's rank. Needs
            BoundaryPoints or their directory (rows have no classes).

    Returns:
        :class:`Spectrum`; with ``by``, a dict group → Spectrum in ascending group order
        (groups without a usable point are left out).

    Shape:
        normals: (n, d) or (n, *S) → singular_values: (min(n, d),), components: (m, d).

    Example:
        >>> import torch, boundgeo as bg
        >>> spec = bg.spectrum(torch.randn(50, 20), baseline_draws=2)
        >>> round(float((spec.singular_values ** 2).sum()), 6)   # unit rows: Σσ² = n
        50.0
    """
    if by is not None:
        return _by_group(normals, by, kind=kind, k=k, baseline_draws=baseline_draws, seed=seed, route=route)
    if route is not None and route not in ROUTES:
        raise BoundgeoError(f"route must be one of {ROUTES} or None, got {route!r}")
    baseline_draws = check_count(baseline_draws, "baseline_draws", minimum=0, maximum=10_000)
    seed = check_seed(seed)
    if k is not None:
        k = check_count(k, "k")
    rows = _as_rows(normals, kind)
    n, d = rows.n, rows.d
    rank = min(n, d)
    if k is not None and not 1 <= k <= rank:
        raise BoundgeoError(f"k must be between 1 and min(n, d) = min({n}, {d}) = {rank}, got {k}")
    chosen = route or _pick_route(rows, k)
    if chosen == "randomized" and k is None:
        raise BoundgeoError("the randomized route computes the top k values: pass k=")
    keep = min(rank, k if k is not None else _MAX_COMPONENTS)
    # the baseline first: its scratch memory is then never held beside the components
    draws = [random_unit_spectrum(n, d, seed=seed + 1 + i) for i in range(baseline_draws)]
    if chosen == "stream":
        _return_freed_memory()
    world = get_world()
    world.agree("spectrum", {"kind": kind, "k": k, "baseline_draws": baseline_draws, "seed": seed,
                             "route": chosen, "n": n, "d": d, "rows": _rows_digest(normals, rows)})
    # under a process group the gram and stream routes split their work across the ranks; the
    # exact and randomized ones (matrices small enough for one process) run whole on each
    if chosen == "exact":
        values, components = _route_exact(rows, keep)
    elif chosen == "gram":
        values, components = _route_gram(rows, keep)
    elif chosen == "randomized":
        values, components = _route_randomized(rows, keep, k, seed)
    else:
        values, components = _route_stream(rows, keep, world)
    values = values[:rank].double()
    squared_cosine, above_half, pair_rows = _pair_statistics(rows, values, complete=chosen != "randomized",
                                                             seed=seed)

    if draws:
        stack = torch.stack(draws)
        band = torch.quantile(stack, torch.tensor([0.05, 0.95], dtype=stack.dtype), dim=0)
        base_mean, base_low, base_high = stack.mean(0), band[0], band[1]
    else:
        base_mean = base_low = base_high = torch.zeros(0, dtype=torch.float64)
    return Spectrum(
        singular_values=values,
        baseline_mean=base_mean,
        baseline_low=base_low,
        baseline_high=base_high,
        marchenko_pastur=marchenko_pastur(n, d),
        components=components.float(),
        n=n,
        d=d,
        input_shape=tuple(int(s) for s in rows.input_shape),
        total_energy=float(n),  # every row is a unit vector
        route=chosen,
        kind=kind,
        settings={"k": k, "baseline_draws": baseline_draws, "seed": seed, "route": route},
        mean_squared_cosine=squared_cosine,
        abs_cosine_above_half=above_half,
        pair_rows=pair_rows,
    )


GROUPINGS = ("label", "target", "pair")


def _by_group(normals, by: str, *, kind: str, k: int | None, **settings) -> dict[Any, Spectrum]:
    """One :func:`spectrum` per group of points: classes (``"label"``, ``"target"``) or pairs."""
    from ..attacks.boundary import ZERO_NORMAL, BoundaryPoints

    by = check_choice(by, "by", GROUPINGS)
    if kind not in ("normal", "perturbation"):
        raise BoundgeoError(f"kind must be 'normal' or 'perturbation', got {kind!r}")
    if isinstance(normals, (str, os.PathLike)):
        normals = BoundaryPoints.load(normals)
    if not isinstance(normals, BoundaryPoints):
        raise BoundgeoError(f"by={by!r} groups boundary points by class: pass BoundaryPoints or the directory "
                            f"boundary_normals wrote, not {type(normals).__name__} rows (they have no classes)")
    usable = normals.converged.cpu().bool()
    if kind == "normal":
        usable &= normals.status.cpu() != ZERO_NORMAL
    label, target = normals.label.cpu(), normals.target.cpu()
    keys = {"label": label.tolist(), "target": target.tolist(),
            "pair": list(zip(label.tolist(), target.tolist()))}[by]
    groups: dict[Any, list[int]] = {}
    for i, (key, ok) in enumerate(zip(keys, usable.tolist())):
        if ok:
            groups.setdefault(key, []).append(i)
    if not groups:
        raise BoundgeoError("no converged boundary point with a non-zero normal" if kind == "normal"
                            else "no converged boundary point to take directions from")
    d = int(np.prod(normals.input_shape))
    return {key: spectrum(normals.select(torch.tensor(groups[key])), kind=kind,
                          k=None if k is None else min(k, len(groups[key]), d), **settings)
            for key in sorted(groups)}


def alignment(v, spec: Spectrum, k: int) -> float:
    """The share of ‖v‖² inside the top-k principal subspace of ``spec``: ‖B v‖² / ‖v‖².

    k/d for a random direction (in expectation), 1 for a vector inside the subspace. For a
    batch of vectors (m, *S), the mean share over the rows (each counted as a direction,
    whatever its length). The paper argues that universal perturbations lie near the subspace
    the normals span; this measures it.

    Args:
        v: a perturbation (*S) or (d,), or rows (m, *S) / (m, d); a UniversalPerturbation too.
        spec: the spectrum whose principal directions span the subspace.
        k: the subspace's dimension, 1 ≤ k ≤ the components kept in ``spec``.

    Shape:
        v: (*S) or (m, *S) → float in [0, 1].
    """
    if hasattr(v, "perturbation") and not isinstance(v, torch.Tensor):
        v = v.perturbation
    try:
        v = torch.as_tensor(v)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise BoundgeoError(f"v must be a tensor or array, got {type(v).__name__}") from exc
    if v.is_complex() or not (v.is_floating_point() or v.dtype in (torch.int32, torch.int64)):
        raise BoundgeoError(f"v must be real, got dtype {v.dtype}")
    k = check_count(k, "k")
    basis = spec.basis(k).double()
    shape, inputs = tuple(v.shape), tuple(spec.input_shape)
    # one vector (d values, in any shape), or rows of them: (m, d), (m, *inputs), or any (m, *S)
    # of d values a row when the spectrum's rows were flat and it does not know the inputs' shape;
    # not any tensor whose size happens to be a multiple of d, averaged over rows that are no
    # vectors of the inputs
    one = v.numel() == spec.d
    many = len(shape) >= 2 and (shape[1:] in ((spec.d,), inputs)
                                or (inputs == (spec.d,) and math.prod(shape[1:]) == spec.d))
    if v.numel() == 0 or not (one or many):
        raise BoundgeoError(f"v of shape {shape} does not hold vectors of the spectrum's dimension {spec.d}: pass "
                            f"one vector, shaped {inputs} or ({spec.d},), or rows of them, (m, *{inputs}) or "
                            f"(m, {spec.d})")
    rows = v.detach().double().cpu().reshape(-1, spec.d)
    if not bool(torch.isfinite(rows).all()):
        raise BoundgeoError("v contains NaN or Inf")
    norms = (rows**2).sum(1)
    if bool((norms == 0).any()):
        raise BoundgeoError(f"{int((norms == 0).sum())} of the vectors are zero: a zero vector has no direction")
    inside = ((rows @ basis.T) ** 2).sum(1) / norms
    return float(inside.clamp(0, 1).mean())
