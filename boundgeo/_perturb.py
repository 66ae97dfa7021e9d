"""Adding perturbations to inputs and counting which predictions change (shared by analyses)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from ._checks import check_choice, check_real
from ._errors import BoundgeoError
from .classifier import Classifier

NORMS = ("l2", "linf")


def check_norm(norm: str) -> str:
    """The one check of ``norm`` that every analysis shares."""
    return check_choice(norm, "norm", NORMS)


def check_radii(values, name: str) -> torch.Tensor:
    """Budgets or radii: one positive finite number, or a sequence, array or tensor of them, as
    a 1-D float64 tensor in the order given. Each value goes through ``check_real``, so that
    ``"abc"``, NaN or a nested list are refused naming the entry."""
    if isinstance(values, (torch.Tensor, np.ndarray)):
        items = list(values.reshape(-1))
    elif isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        items = [values]
    else:
        items = list(values)
    if not items:
        raise BoundgeoError(f"{name} must hold at least one positive number, got {values!r}")
    reals = [check_real(v, f"{name}[{i}]", low=0, low_open=True) for i, v in enumerate(items)]
    return torch.tensor(reals, dtype=torch.float64)


def row_sizes(flat: torch.Tensor, norm: str) -> torch.Tensor:
    """ℓ2 or ℓ∞ norm of each row of ``flat`` (m, d).

    The ℓ2 norm is accumulated in float64 where the device has it (not MPS): summed in float32
    it is off by up to 1e-5 relative at d = 10^6, and a projection onto the ball would leak out
    of it by as much. The result is float64 then, else the dtype of ``flat``.
    """
    if norm == "linf":
        return flat.abs().amax(dim=1)
    if flat.device.type == "mps":
        return flat.norm(dim=1)
    return torch.linalg.vector_norm(flat, dim=1, dtype=torch.float64)


def scale_to_norm(v: torch.Tensor, norm: str) -> torch.Tensor:
    """Rows of ``v`` (m, d) rescaled to unit ℓ2 or ℓ∞ norm."""
    flat = v.reshape(v.shape[0], -1)
    size = flat.norm(dim=1) if norm == "l2" else flat.abs().amax(dim=1)
    return (flat / size.clamp_min(1e-30)[:, None]).reshape(v.shape)


def project_rows(v: torch.Tensor, radius: float, norm: str) -> torch.Tensor:
    """Each row of ``v`` (m, *S) projected onto the ℓ2 or ℓ∞ ball of radius ``radius``."""
    if norm == "linf":
        # a radius beyond the dtype's range (xi=1e300 with float32) means no constraint at all
        radius = min(float(radius), torch.finfo(v.dtype).max) if v.is_floating_point() else radius
        return v.clamp(-radius, radius)
    size = row_sizes(v.reshape(v.shape[0], -1), "l2")
    scale = torch.where(size > radius, radius / size.clamp_min(1e-30), torch.ones_like(size))
    return v * scale.to(v.dtype).view((-1,) + (1,) * (v.dim() - 1))


@torch.no_grad()
def fooled(
    clf: Classifier, x: torch.Tensor, clean: torch.Tensor, v: torch.Tensor, *, batch_size: int = 512
) -> torch.Tensor:
    """Which inputs change class once ``v`` is added and the result clipped to the bounds.

    Args:
        x: validated inputs (n, *S) on the classifier's device; clean: their predictions (n,).
        v: one perturbation (*S) shared by all inputs, or one per input (n, *S).
    """
    return perturbed_predictions(clf, x, v, batch_size=batch_size) != clean


def sent_to(pred: torch.Tensor, clean: torch.Tensor, target: int | None) -> torch.Tensor:
    """Which inputs a perturbation succeeds on, from their predictions with it (``pred``) and
    without it (``clean``): untargeted (``target`` None) those whose class changed; targeted those
    now predicted as ``target`` that were not before (an input already in ``target`` cannot be
    sent there, and counts for neither side of a targeted rate)."""
    if target is None:
        return pred != clean
    return (pred == target) & (clean != target)


def best_other(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """max_{k≠c} f_k per row of ``logits`` (n, C), c = ``cls`` (n,): the largest logit of any class
    but the row's own, from the top two (no (n, C) mask, whatever C is). Differentiable."""
    top = logits.topk(2, dim=1)
    return torch.where(top.indices[:, 0] == cls, top.values[:, 1], top.values[:, 0])


@torch.no_grad()
def perturbed_predictions(clf: Classifier, x: torch.Tensor, v: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
    """The predicted classes (n,) of ``x`` once ``v`` is added and the result clipped to the
    bounds; ``v`` is one perturbation (*S) or one per input (n, *S)."""
    per_input = v.dim() == x.dim()
    v = v.to(x.device, x.dtype)
    out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for start in range(0, x.shape[0], batch_size):
        stop = start + batch_size
        shift = v[start:stop] if per_input else v
        out[start:stop] = clf.forward(clf.clip(x[start:stop] + shift)).argmax(1)
    return out
