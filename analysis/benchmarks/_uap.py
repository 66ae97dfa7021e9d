"""What the two universal-perturbation benchmarks share (bench_universal.py and
bench_uap_methods.py import it, so a change here changes both of their scopes, and a change to
one of them no longer changes the other's)."""

from __future__ import annotations

import torch


def random_direction(shape, xi: float, norm: str, seed: int) -> torch.Tensor:
    """The baseline v of both benchmarks: a draw on the sphere of the ℓ2 ball of radius ``xi``,
    or a corner of the ℓ∞ ball (every coordinate ±``xi``), from ``seed`` alone."""
    g = torch.Generator().manual_seed(seed)
    if norm == "linf":
        return xi * (torch.randint(0, 2, shape, generator=g) * 2 - 1).float()
    v = torch.randn(shape, generator=g)
    return xi * v / v.norm()
