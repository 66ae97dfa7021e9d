"""Toy classifiers whose robustness category is known at a stated budget ε, in 2-D and in d dims.

Each builder returns a :class:`Toy`: the model, its data, the budget ``eps`` it was built for and
the ``category`` that holds there (with τ = 0.5), for the ℓ2 norm. The geometry of each:

- :func:`wide_margins` (category 1): two well-separated blobs on either side of a hyperplane;
  every input is far further from the boundary than ε.
- :func:`scattered_normals` (category 2): every input sits at distance ρ from a small local
  hyperplane of its own whose normal points in a random direction; any input is fooled by a
  step of about ρ along its own normal, but one vector of norm ε = 1.25 ρ only fools the inputs
  whose normals it happens to be aligned with.
- :func:`stacked_slabs` (category 3): thin slabs of alternating class stacked along one
  direction w; every input sits at distance ρ from a slab boundary, always on the same side
  along w, so the single shift ε·w fools them all, while a random direction moves along w by
  only about ε/√d.
- :func:`bubbles` (category 4): every input sits inside a tiny ball of its class in a sea of
  the other class; any perturbation longer than the ball's far side leaves it.

The models are piecewise-linear in the input (gradients exist almost everywhere, so DeepFool
works on them) and accept inputs of shape (n, d) with no box constraint: their classifiers use
bounds (-1e3, 1e3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ._errors import BoundgeoError
from .classifier import Classifier

_BOUNDS = (-1e3, 1e3)


@dataclass(frozen=True)
class Toy:
    """A toy classifier with data and the category it was built to be in at ``eps`` (ℓ2, τ = 0.5).

    Fields:
        name, model (an nn.Module on (n, d) inputs), x (n, d) data, eps, category (1-4),
        margin (the ℓ2 distance of the data to the boundary it was built with), window
        ((xmin, xmax, ymin, ymax) for drawing a 2-D toy).
    """

    name: str
    model: nn.Module
    x: torch.Tensor
    eps: float
    category: int
    margin: float
    window: tuple[float, float, float, float]

    def __post_init__(self) -> None:
        self.model.eval()  # no dropout or batch-norm, but say so: Classifier warns otherwise

    @property
    def classifier(self) -> Classifier:
        return Classifier(self.model, bounds=_BOUNDS, num_classes=2)

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])


def _check_dim(dim: int) -> None:
    if dim < 2:
        raise BoundgeoError(f"toys need dim >= 2, got {dim}")


def _logits(score: torch.Tensor, scale: float) -> torch.Tensor:
    """Two logits whose difference is ``scale * score``: class 1 where score > 0."""
    return torch.stack([torch.zeros_like(score), scale * score], dim=1)


# ----------------------------------------------------------------------------- category 1
class _Halfspace(nn.Module):
    def __init__(self, normal: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("normal", normal / normal.norm())

    def forward(self, x):
        return _logits(x @ self.normal, 4.0)


def wide_margins(*, dim: int = 2, n: int = 200, separation: float = 3.0, seed: int = 0) -> Toy:
    """Category 1 at ε = separation / 6: two blobs at ±separation along e₁, spread 0.3."""
    _check_dim(dim)
    gen = torch.Generator().manual_seed(seed)
    side = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0)
    x = 0.3 * torch.randn(n, dim, generator=gen)
    x[:, 0] = side * separation + 0.3 * torch.randn(n, generator=gen).clamp(-2.5, 2.5)
    normal = torch.zeros(dim)
    normal[0] = 1.0
    margin = float((x @ normal).abs().min())
    return Toy("wide margins", _Halfspace(normal), x, separation / 6, 1, margin,
               (-2 * separation, 2 * separation, -2 * separation, 2 * separation))


# ----------------------------------------------------------------------------- category 2
class _LocalPlanes(nn.Module):
    """score(x) = max_i ⟨u_i, x − x_i⟩ − ρ − λ‖x − x_i‖²: class 1 near x_i beyond its plane."""

    def __init__(self, centers: torch.Tensor, normals: torch.Tensor, rho: float, locality: float) -> None:
        super().__init__()
        self.register_buffer("centers", centers)
        self.register_buffer("normals", normals / normals.norm(dim=1, keepdim=True))
        self.rho, self.locality = rho, locality

    def forward(self, x):
        diff = x[:, None, :] - self.centers[None]                     # (n, m, d)
        along = (diff * self.normals[None]).sum(-1)                   # (n, m)
        score = along - self.rho - self.locality * (diff**2).sum(-1)
        return _logits(score.max(dim=1).values, 20.0)


def scattered_normals(*, dim: int = 2, n: int = 100, rho: float = 0.05, seed: int = 0) -> Toy:
    """Category 2 at ε = 1.25 × margin: local planes at distance ρ with random normals.

    Inputs lie at least 2.5 apart on a lattice (in 2-D the n grid points nearest the centre, in
    more dimensions n distinct random lattice points), while each plane's class-1 region lies
    within 0.95 of its own input (locality λ = 1), so no plane reaches another input's ε-ball.
    """
    _check_dim(dim)
    if n < 1:
        raise BoundgeoError(f"n must be >= 1, got {n}")
    gen = torch.Generator().manual_seed(seed)
    side = max(2, math.ceil(n ** (1 / dim) - 1e-9))
    while side**dim < n:  # float rounding in the root
        side += 1
    if dim == 2:
        grid = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1)
        grid = grid.reshape(-1, 2).float()
        nearest = (grid - grid.mean(0)).norm(dim=1).argsort(stable=True)[:n]
        lattice = grid[nearest.sort().values]
    else:
        chosen: dict[tuple, None] = {}
        while len(chosen) < n:
            for row in torch.randint(0, side, (n, dim), generator=gen).tolist():
                chosen.setdefault(tuple(row), None)
        lattice = torch.tensor(list(chosen)[:n], dtype=torch.float32)
    x = 2.5 * lattice
    x -= x.mean(0)
    normals = torch.randn(len(x), dim, generator=gen)
    model = _LocalPlanes(x.clone(), normals, rho, 1.0)
    margin = (1 - (1 - 4 * rho) ** 0.5) / 2  # the root of t − t² = ρ along the own normal
    # the window shows a few inputs up close: the local planes are small
    return Toy("scattered normals", model, x, 1.25 * margin, 2, margin, (-2.6, 2.6, -2.6, 2.6))


# ----------------------------------------------------------------------------- category 3
class _Slabs(nn.Module):
    """A triangle wave along w: class 1 where (⟨w, x⟩ mod P) lies in (P/4, 3P/4)."""

    def __init__(self, direction: torch.Tensor, period: float) -> None:
        super().__init__()
        self.register_buffer("direction", direction / direction.norm())
        self.period = period

    def forward(self, x):
        phase = torch.remainder(x @ self.direction, self.period)
        return _logits(self.period / 4 - (phase - self.period / 2).abs(), 20.0)


def stacked_slabs(*, dim: int = 2, n: int = 200, period: float = 0.8, seed: int = 0) -> Toy:
    """Category 3 at ε = 1.25 × margin: every input sits 3P/16 below a boundary along w.

    Inputs lie at phase P/16 (class 0) or 9P/16 (class 1) of the triangle wave, so the shift
    +ε·w crosses a boundary for all of them once ε > 3P/16, and never re-crosses below
    3P/16 + P/2.
    """
    _check_dim(dim)
    gen = torch.Generator().manual_seed(seed)
    direction = torch.zeros(dim)
    direction[0] = 1.0
    x = 2.0 * torch.randn(n, dim, generator=gen)
    layer = torch.randint(-4, 4, (n,), generator=gen).float()
    offset = torch.where(torch.arange(n) % 2 == 0, period / 16, 9 * period / 16)
    x[:, 0] = layer * period + offset
    margin = 3 * period / 16
    return Toy("stacked slabs", _Slabs(direction, period), x, 1.25 * margin, 3, margin,
               (-4 * period, 4 * period, -4 * period, 4 * period))


# ----------------------------------------------------------------------------- category 4
class _Bubbles(nn.Module):
    """score(x) = min_i ‖x − c_i‖ − r: class 0 inside the balls B(c_i, r), class 1 outside."""

    def __init__(self, centers: torch.Tensor, radius: float) -> None:
        super().__init__()
        self.register_buffer("centers", centers)
        self.radius = radius

    def forward(self, x):
        dist = ((x[:, None, :] - self.centers[None]) ** 2).sum(-1).clamp_min(1e-12).sqrt()
        return _logits(dist.min(dim=1).values - self.radius, 20.0)


def bubbles(*, dim: int = 2, n: int = 100, radius: float = 0.1, seed: int = 0) -> Toy:
    """Category 4 at ε = 1.5 × radius: each input sits r/4 off the centre of its own bubble.

    Every point of the bubble lies within 1.25 r of the input, so every perturbation of norm
    ε = 1.5 r leaves the bubble and changes the class.
    """
    _check_dim(dim)
    gen = torch.Generator().manual_seed(seed)
    if dim == 2:  # a jittered grid: Gaussian centres in the plane can nearly touch
        side = int(round(n**0.5))
        grid = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1)
        centers = grid.reshape(-1, 2).float() - (side - 1) / 2
        centers += 0.2 * torch.rand(centers.shape, generator=gen)
    else:
        centers = 3.0 * torch.randn(n, dim, generator=gen)
    offset = torch.randn(len(centers), dim, generator=gen)
    x = centers + (radius / 4) * offset / offset.norm(dim=1, keepdim=True)
    return Toy("bubbles", _Bubbles(centers, radius), x, 1.5 * radius, 4, 0.75 * radius,
               (-1.6, 1.6, -1.6, 1.6))  # a few bubbles up close


ALL = (wide_margins, scattered_normals, stacked_slabs, bubbles)


def all_toys(*, dim: int = 2, seed: int = 0) -> list[Toy]:
    """One toy of each category, in ``dim`` dimensions."""
    return [build(dim=dim, seed=seed) for build in ALL]
