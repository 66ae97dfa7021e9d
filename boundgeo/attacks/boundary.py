"""Nearest boundary points and boundary normals: batched multi-class DeepFool.

DeepFool (Moosavi-Dezfooli, Fawzi & Frossard, CVPR 2016, arXiv 1511.04599) linearises the
classifier around the current point and steps to the nearest linearised boundary. With
k̂ the label at x, f'_k = f_k - f_k̂ and w'_k = ∇f_k - ∇f_k̂, one step is

    l̂ = argmin_{k ≠ k̂} |f'_k| / ‖w'_k‖_q,     r_i = |f'_l̂| / ‖w'_l̂‖_q · u(w'_l̂)

with q the dual norm (ℓ2: q = 2, u(w) = w / ‖w‖₂; ℓ∞: q = 1, u(w) = sign(w)). The iterate
is x + (1 + η) Σ r_i, η = ``overshoot``, clipped to the bounds.

Every iteration here costs one forward pass of the still-active samples and one vector-Jacobian
product per candidate class on that same graph; the normal of a sample that has just crossed
is taken from the same graph too (it is the gradient of f_target - f_label at its final point),
so collecting normals costs no extra forward pass.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import stat
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._checks import check_choice, check_count, check_real, check_seed
from .._errors import BoundgeoError
from .._perturb import check_norm
from .._results import Result, atomic_write_bytes, fsync_directory, read_json
from ..classifier import Classifier, as_classifier
from ..distributed import Failure, World
from ..distributed import world as get_world
from ..io._sources import as_positions, as_source

CONVERGED, NOT_CONVERGED, ZERO_GRADIENT, ZERO_NORMAL, ROUNDED_BACK = 0, 1, 2, 3, 4
STATUS_NAMES = ("converged", "not_converged", "zero_gradient", "zero_normal", "rounded_back")
# Added to the linearised distance |f'|/‖w'‖ of every step (input units), as in the authors'
# code and foolbox, so that a step that lands exactly on the linearised boundary still makes
# progress; with clipping it also keeps the iterations few.
_STEP_SLACK = 1e-4
_TINY = 1e-12
# Relative logit gap that counts as crossed: ~32 ulps (of the logits' dtype) of the largest logit.
_CROSS_ULPS = 32
# A candidate's gradient whose projection onto subspace= is below this share of its norm has no
# usable direction there: the projection is rounding noise (float32 leaves ~1e-7 of it), and
# a step along it would be 1e5 times the full-space one.
_SUBSPACE_BLIND = 1e-5
# refine=: an input leaves once its move towards the tangent plane's foot has been halved to this.
_REFINE_LEAST = 1 / 16
# _box_steps: Newton steps at most (each one pass over the inputs; 3-6 suffice on the MNIST CNN),
# and how often the host is asked whether all have stopped (a sync on CUDA)
_NEWTON_MOST = 64
_NEWTON_CHECK = 2
# On the CPU, only small batches of small inputs take the vmapped backward (see _vjp_rows).
_VMAP_MAX_BATCH_CPU = 4
_VMAP_MAX_SAMPLE_CPU = 1024
# _smallest_box_step prunes a candidate whose unconstrained step is longer than the best box-
# constrained step by more than this relative margin (rounding in the two computations)
_PRUNE_MARGIN = 1e-4


# ============================================================================== result
@dataclass(frozen=True, eq=False)
class BoundaryPoints(Result):
    """Nearest boundary points of a set of inputs, as found by DeepFool.

    Fields (n inputs, ``*S`` one input's shape):
        perturbation: (n, *S) r(x) including the overshoot and clipping; x + r is across the
            boundary when ``converged``.
        normal: (n, *S) unit normal of the boundary at x + r: the normalised gradient of
            f_target - f_label there (zeros where not converged).
        margin: (n,) ‖r‖ in ``norm``.
        label: (n,) predicted class of x. target: (n,) class at x + r.
        iterations: (n,) DeepFool steps taken. converged: (n,) bool.
        status: (n,) int8: 0 converged, 1 not converged within ``max_iter``, 2 zero gradient
            (flat region or gradient masking: no direction to step in), 3 zero normal (crossed,
            so ``converged``, but the gradient of f_target - f_label vanishes at x + r: ``normal``
            is zeros there), 4 rounded back (``boundary_normals(dtype=torch.float16)`` only:
            DeepFool crossed, but x + r with r as stored in float16 is on the label's side again,
            so not ``converged``; ``normal`` is still the normal at the point DeepFool found).
            The flag lets a stored run pick its usable normals from this small array without
            reading the normals themselves.
        index: (n,) position of each x in the data it came from.
        true_label: (n,) the data's labels when they were given, else None.
        norm: ``"l2"`` or ``"linf"``. settings: the arguments of the run.
        cost: passes through the model, in rows (one input through the network):
            ``forward_rows`` and ``backward_rows`` (vector-Jacobian products), and of those
            ``refine_rows`` (each one forward and one backward row) spent by ``refine``.
    """

    perturbation: torch.Tensor
    normal: torch.Tensor
    margin: torch.Tensor
    label: torch.Tensor
    target: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    status: torch.Tensor
    index: torch.Tensor
    norm: str = "l2"
    true_label: torch.Tensor | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.margin.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.perturbation.shape[1:])

    def directions(self, kind: str = "normal", *, only_converged: bool = True) -> torch.Tensor:
        """Unit rows of shape (m, d): boundary normals, or r(x)/‖r(x)‖₂ (the paper's matrix N).

        Args:
            kind: ``"normal"`` or ``"perturbation"``.
            only_converged: keep only the rows of converged samples (m ≤ n); the others have
                no boundary point and would not be unit vectors.
        """
        if kind not in ("normal", "perturbation"):
            raise BoundgeoError(f"kind must be 'normal' or 'perturbation', got {kind!r}")
        rows = (self.normal if kind == "normal" else self.perturbation).reshape(len(self), -1)
        rows = rows.float()
        norms = rows.norm(dim=1)
        keep = norms > 0
        if only_converged:
            keep &= self.converged.to(keep.device)
        rows = rows[keep]
        return rows / norms[keep, None]

    def to_frame(self):
        """One row per input: index, label, target, margin, iterations, converged, status."""
        import pandas as pd

        frame = pd.DataFrame(
            {
                "index": self.index.cpu().numpy(),
                "label": self.label.cpu().numpy(),
                "target": self.target.cpu().numpy(),
                "margin": self.margin.cpu().numpy(),
                "norm": self.norm,
                "iterations": self.iterations.cpu().numpy(),
                "converged": self.converged.cpu().numpy(),
                "status": np.asarray(STATUS_NAMES)[self.status.cpu().numpy().astype(int)],
            }
        )
        if self.true_label is not None:
            frame.insert(1, "true_label", self.true_label.cpu().numpy())
        return frame

    def _map_tensors(self, fn) -> "BoundaryPoints":
        """The same points with ``fn`` applied to every tensor field."""
        return dataclasses.replace(
            self,
            **{f.name: fn(getattr(self, f.name)) for f in dataclasses.fields(self)
               if isinstance(getattr(self, f.name), torch.Tensor)},
        )

    def select(self, indices) -> "BoundaryPoints":
        """The points at ``indices`` (positions in this result, a LongTensor, bool mask or
        sequence), for example a seeded subset for a costlier analysis; ``index`` keeps
        pointing into the original data."""
        indices = as_positions(indices, "indices")
        if indices.dtype == torch.bool:
            if indices.shape != (len(self),):
                raise BoundgeoError(f"a mask of shape {tuple(indices.shape)} does not fit {len(self)} points")
            indices = indices.nonzero().squeeze(1)
        if indices.numel() and (int(indices.min()) < -len(self) or int(indices.max()) >= len(self)):
            raise BoundgeoError(f"indices span [{int(indices.min())}, {int(indices.max())}], but there are "
                                f"{len(self)} points")
        return self._map_tensors(lambda t: t[indices.to(t.device)])

    def to(self, device: str | torch.device) -> "BoundaryPoints":
        """The same points with every tensor on ``device``."""
        return self._map_tensors(lambda t: t.to(device))

    @classmethod
    def concat(cls, parts: list["BoundaryPoints"]) -> "BoundaryPoints":
        """Stack several results of the same run (for example shards) into one."""
        if not parts:
            raise BoundgeoError("nothing to concatenate")
        tensors = {}
        for f in dataclasses.fields(cls):
            first = getattr(parts[0], f.name)
            values = [getattr(p, f.name) for p in parts]
            if all(isinstance(v, torch.Tensor) for v in values):
                tensors[f.name] = torch.cat(values)
            elif isinstance(first, torch.Tensor) or f.name == "true_label":
                tensors[f.name] = None  # labels known for some parts only: drop them
        cost = {key: sum(p.cost.get(key, 0) for p in parts) for key in parts[0].cost}
        return dataclasses.replace(parts[0], cost=cost, **tensors)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BoundaryPoints":
        """Load a result saved with :meth:`save`, or the output directory of
        :func:`boundary_normals`; the arrays of the latter are memory-mapped.

        Only the files of the result's own fields are opened (the array names in
        ``points/meta.json`` must be field names, never paths), and a malformed, truncated or
        empty file is a BoundgeoError naming it.
        """
        path = Path(path)
        if path.is_dir():
            return _load_collection(path)
        return super().load(path)


# ============================================================================== deepfool
def _check_settings(norm, overshoot, max_iter, candidates, nearest) -> dict[str, Any]:
    """DeepFool's settings in their canonical types, or a BoundgeoError naming the bad one."""
    return dict(
        norm=check_norm(norm),
        overshoot=check_real(overshoot, "overshoot", low=0.0),
        max_iter=check_count(max_iter, "max_iter"),
        # at least the label and one other class
        candidates=None if candidates is None else check_count(candidates, "candidates", minimum=2),
        nearest=None if nearest is None else check_count(nearest, "nearest"),
    )


def _vjp_rows(out: torch.Tensor, inp: torch.Tensor, grad_outputs: torch.Tensor) -> torch.Tensor:
    """Vector-Jacobian products of one graph with B grad_outputs: (B, m, C) -> (B, m, *S).

    On CUDA one vmapped backward (``is_grads_batched``) is fastest. On the CPU the loop over the
    retained graph wins except where per-call overhead dominates, i.e. for a few small inputs.
    9 rows, 2 threads: on an MNIST CNN the loop took 95 ms against 154 ms vmapped at 128 inputs
    and the two tie at 8-32, but for a single input the vmapped backward took 1.3 ms against
    2.6 ms; on a CIFAR-10 ResNet-8 the loop won from one input on (7.2 ms against 9.2 ms, 13.9
    against 17.9 at 4), and on a ResNet-50 at 224x224 by 2.2 s against 3.4 s at 4 inputs. Both
    give the same numbers.
    """
    rows = grad_outputs.shape[0]
    small = inp.shape[0] <= _VMAP_MAX_BATCH_CPU and inp[:1].numel() <= _VMAP_MAX_SAMPLE_CPU
    if rows > 1 and (inp.device.type != "cpu" or small):
        try:
            # retain_graph: if an op has no batching rule the error can come half way through the
            # backward, and the loop below still needs the graph
            return torch.autograd.grad(out, inp, grad_outputs, is_grads_batched=True, retain_graph=True)[0]
        except RuntimeError:  # an op without a batching rule: fall back to the loop
            pass
    # written into one preallocated tensor: a list plus torch.stack would hold it twice
    result = torch.empty((rows,) + tuple(inp.shape), dtype=inp.dtype, device=inp.device)
    for j in range(rows):
        result[j] = torch.autograd.grad(out, inp, grad_outputs[j], retain_graph=j < rows - 1)[0]
    return result


def _candidates(logits: torch.Tensor, candidates: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and candidate classes (n, k): the label first, then the top k-1 others by logit."""
    label = logits.argmax(1)
    k = logits.shape[1] if candidates is None else min(int(candidates), logits.shape[1])
    ranked = logits.clone()
    ranked.scatter_(1, label[:, None], float("inf"))
    cand = ranked.topk(k, dim=1).indices
    assert torch.equal(cand[:, 0], label), "the label must lead the candidate list"
    return label, cand


def _box_steps(w: torch.Tensor, need: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
               norm: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The smallest steps s (in ``norm``) with w·s = need inside the box lower <= s <= upper.

    w: (rows, m, d) linearised gradients; need: (rows, m) > 0; lower <= 0 <= upper: (m, d).
    The minimiser is s_i = clip(t w_i) for ℓ2 and clip(t sign(w_i)) for ℓ∞ (KKT), so w·s is
    g(t) = Σ a_i min(t, b_i), with a_i = w_i², b_i = cap_i / |w_i| (ℓ2) or a_i = |w_i|,
    b_i = cap_i (ℓ∞), cap_i the room left on the side w_i pushes to. g is piecewise linear,
    nondecreasing and concave, so Newton's method from t = 0 (with the slope to the right of t)
    never passes the root and stops exactly: a step that crosses no breakpoint lands on it. That
    takes a few passes over d where sorting the breakpoints took 2-3 times as long (the sort stays
    as the fallback, see _box_steps_sorted). When even the full box falls short (g(∞) < need),
    s fills the box (every coordinate at its cap) and ``feasible`` is False.

    Returns ``(s, size, feasible)``: (rows, m, d), (rows, m) norms of s, (rows, m) bools.
    """
    a, b = _breakpoints(w, lower, upper, norm)
    a = torch.where(b > 0, a, torch.zeros_like(a))  # a coordinate with no room never moves
    bounded = torch.isfinite(b)
    unbounded_slope = torch.where(bounded, torch.zeros_like(a), a).sum(-1)
    feasible = (unbounded_slope > 0) | ((a * torch.where(bounded, b, torch.zeros_like(b))).sum(-1) >= need)
    t = torch.zeros_like(need)
    before = None  # how many breakpoints lay ahead of t before the last step
    for step in range(_NEWTON_MOST):
        ahead = b > t.unsqueeze(-1)
        count = ahead.sum(-1)
        # where the last step crossed no breakpoint, g was linear along it: t is the root
        if before is not None and step % _NEWTON_CHECK == 0 and bool(((count == before) | ~feasible).all()):
            break
        reach = (a * torch.minimum(b, t.unsqueeze(-1))).sum(-1)
        slope = (a * ahead).sum(-1)
        before = count
        t = t + (need - reach).clamp_min(0) / slope.clamp_min(_TINY)
    else:
        late = feasible & ((b > t.unsqueeze(-1)).sum(-1) != before)
        if bool(late.any()):  # never seen in practice; exact in any case
            t = t.masked_scatter(late, _box_steps_sorted(w[late], need[late], lower, upper, norm, index=late))
    return _box_fill(w, t, feasible, lower, upper, norm)


def _smallest_box_step(w: torch.Tensor, need: torch.Tensor, w_dual: torch.Tensor, usable: torch.Tensor,
                       lower: torch.Tensor, upper: torch.Tensor, norm: str) -> torch.Tensor:
    """Of m inputs' candidate steps inside the box, each input's smallest: (m, d).

    w: (rows, m, d) the candidates' gradients; need, w_dual, usable: (m, rows); lower, upper: (m, d).
    The same choice as solving every candidate with _box_steps and taking the smallest feasible
    step (the first in candidate order on a tie; where none is feasible, the box's corner towards
    the candidate whose plain step is smallest), with fewer solves: a candidate's step inside the
    box is never shorter than its plain step need/‖w‖_dual, so once the candidate with the
    smallest plain step is solved, only those whose plain step is shorter than that solution can
    still win. On the MNIST CNN that is 1.5 solves per input of 9 candidates at the first step
    (ℓ2; 3.3 for ℓ∞) and 1.0 of 3 later. One host sync, to gather the survivors.
    """
    m = need.shape[0]
    pick = torch.arange(m, device=w.device)
    inf = torch.tensor(float("inf"), dtype=need.dtype, device=need.device)
    plain = torch.where(usable, need / w_dual.clamp_min(_TINY), inf)  # (m, rows)
    first = plain.argmin(dim=1)
    step, size, feasible = _box_steps(w[first, pick][None], need[pick, first][None], lower, upper, norm)
    step, size = step[0], torch.where(feasible[0] & usable[pick, first], size[0], inf)
    alive = plain < size[:, None] * (1 + _PRUNE_MARGIN)
    alive[pick, first] = False
    i, k = alive.nonzero(as_tuple=True)  # the host sync
    if not len(i):
        return step
    more, more_size, more_feasible = _box_steps(w[k, i][None], need[i, k][None], lower[i], upper[i], norm)
    sizes = torch.full_like(need, float("inf"))
    sizes[pick, first] = size
    sizes[i, k] = torch.where(more_feasible[0], more_size[0], inf)
    best = sizes.argmin(dim=1)
    solved = torch.full(need.shape, -1, dtype=torch.long, device=w.device)  # (m, rows) -> pair
    solved.index_put_((i, k), torch.arange(len(i), device=w.device))
    other = torch.isfinite(sizes).any(dim=1) & (best != first)
    step[other] = more[0, solved[other, best[other]]]
    return step


def _breakpoints(w: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                 norm: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The a_i and b_i of g(t) = Σ a_i min(t, b_i) (see _box_steps); b_i = ∞ where w_i = 0."""
    magnitude = w.abs()
    cap = torch.where(w > 0, upper, -lower).clamp_min(0)  # room on w's side, (rows, m, d)
    moves = magnitude > 0
    if norm == "l2":
        a = magnitude * magnitude
        b = torch.where(moves, cap / magnitude.clamp_min(_TINY), torch.full_like(cap, float("inf")))
    else:
        a = magnitude
        b = torch.where(moves, cap, torch.full_like(cap, float("inf")))
    return a, b


def _box_fill(w: torch.Tensor, t: torch.Tensor, feasible: torch.Tensor, lower: torch.Tensor,
              upper: torch.Tensor, norm: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The steps clip(t w) (ℓ2) or clip(t sign w) (ℓ∞), the box's corner towards w where infeasible."""
    t = torch.where(feasible, t, torch.zeros_like(t)).unsqueeze(-1)
    direction = w if norm == "l2" else w.sign()
    s = torch.where(feasible.unsqueeze(-1), torch.minimum(torch.maximum(t * direction, lower), upper),
                    torch.where(w > 0, upper, torch.where(w < 0, lower, torch.zeros_like(w))))
    size = torch.linalg.vector_norm(s, ord=2 if norm == "l2" else float("inf"), dim=-1)
    return s, size, feasible


def _box_steps_sorted(w: torch.Tensor, need: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                      norm: str, *, index: torch.Tensor | None = None) -> torch.Tensor:
    """The root t of _box_steps' g found by sorting the breakpoints: exact in one pass, slower.

    ``index`` (a boolean mask over (rows, m)) says which rows of a larger problem w and need are,
    so that the (m, d) bounds can be matched to them. Returns t, of need's shape.
    """
    if index is not None:
        column = index.nonzero()[:, 1]
        lower, upper = lower[column], upper[column]
    a, b = _breakpoints(w, lower, upper, norm)
    b_sorted, order = b.sort(dim=-1)
    a_sorted = a.gather(-1, order)
    saturated = torch.where(torch.isinf(b_sorted), torch.zeros_like(a_sorted), a_sorted * b_sorted)
    before = saturated.cumsum(-1) - saturated  # Σ_{i<j} a_i b_i
    slope = a_sorted.flip(-1).cumsum(-1).flip(-1)  # Σ_{i>=j} a_i
    reach = before + torch.where(slope > 0, b_sorted * slope, torch.zeros_like(slope))  # g(b_j)
    reach = torch.where(torch.isinf(b_sorted) & (slope == 0), before, reach)
    enough = reach >= need.unsqueeze(-1)
    j = enough.to(torch.int8).argmax(-1, keepdim=True)  # the first breakpoint where g reaches need
    return (need - before.gather(-1, j).squeeze(-1)) / slope.gather(-1, j).squeeze(-1).clamp_min(_TINY)


def _crossed(logits: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The predictions, and where they are across from ``label`` by more than float rounding.

    A point across by 1e-6 in logits can flip back when the same input is evaluated in another
    batch, so crossed means a logit gap above ~32 ulps (of the logits' dtype) of the largest logit.
    """
    pred = logits.argmax(1)
    gap = logits.gather(1, pred[:, None])[:, 0] - logits.gather(1, label[:, None])[:, 0]
    tol = _CROSS_ULPS * torch.finfo(logits.dtype).eps * (1.0 + logits.abs().amax(dim=1))
    return pred, (pred != label) & (gap > tol)


def _linear_step(w: torch.Tensor, f: torch.Tensor, w_dual: torch.Tensor, norm: str) -> torch.Tensor:
    """DeepFool's plain step (m, d) to the linearised boundary w·s = |f|, plus the reference slack.

    w: (m, d) gradients of the logit gaps; f: (m,) the gaps; w_dual: (m,) ‖w‖ in the dual norm
    (ℓ2 for ℓ2, ℓ1 for ℓ∞). ℓ2 steps along w, ℓ∞ along sign(w), |f|/‖w‖_dual + slack long.
    """
    length = f.abs() / w_dual.clamp_min(_TINY) + _STEP_SLACK  # in input units
    if norm == "l2":
        return (length / w_dual.clamp_min(_TINY))[:, None] * w
    return length[:, None] * w.sign()


def _refine(clf: Classifier, x: torch.Tensor, x_adv: torch.Tensor, normal: torch.Tensor, label: torch.Tensor,
            target: torch.Tensor, status: torch.Tensor, *, rounds: int, norm: str, overshoot: float,
            max_iter: int, clip: bool, box_step: bool) -> int:
    """Shorter perturbations by projections onto the boundary's tangent plane (the idea of
    SuperDeepFool, Abdolahpourrostam, Abroshan & Moosavi-Dezfooli, NeurIPS 2024; written from that
    idea, not their algorithm, whose steps and stopping differ): from a boundary point x + r with
    unit normal n, the point of the tangent plane nearest x is x + s, s the smallest step (in
    ``norm``, inside the box when ``clip``) with n·s = n·r; from x + (1 + η) s, two-class DeepFool
    steps towards the class found before cross the boundary again. The new point replaces the old
    one, with its normal and class, only where it is across and strictly closer to x, so no input
    ever gets a longer perturbation; where it is not, the next round goes half as far towards the
    foot (on a strongly curved boundary the full projection overshoots), and after a few halvings
    the input is done.
    Up to ``rounds`` rounds, each from the latest point. Updates ``x_adv``, ``normal`` and
    ``target`` in place; returns the rows it used, each one forward and one backward row (one per
    input and step)."""
    lo, hi = clf.bounds
    order = 2 if norm == "l2" else float("inf")
    dual = 2 if norm == "l2" else 1
    used = 0
    # the share of the way to the tangent plane's foot: halved for an input whose candidate was not
    # closer (a strongly curved boundary), which leaves once it falls below _REFINE_LEAST
    share = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    for _ in range(rounds):
        rows = ((status == CONVERGED) & (share >= _REFINE_LEAST)).nonzero().squeeze(1)
        start = x[rows].flatten(1)
        r = (x_adv[rows] - x[rows]).flatten(1)
        unit = normal[rows].flatten(1)
        need = (r * unit).sum(1)  # the boundary point's height along its normal
        keep = need > 0
        rows, start, r, unit, need = rows[keep], start[keep], r[keep], unit[keep], need[keep]
        if not rows.numel():
            break
        size_now = torch.linalg.vector_norm(r, ord=order, dim=1)
        if clip:  # x + (1 + η) Σ s stays in the box, as in the main loop
            lower = ((lo - start) / (1.0 + overshoot)).clamp_max(0)
            upper = ((hi - start) / (1.0 + overshoot)).clamp_min(0)
        else:
            lower, upper = torch.full_like(start, -math.inf), torch.full_like(start, math.inf)
        foot = _box_steps(unit[None], need[None], lower, upper, norm)[0][0]
        part = share[rows, None]
        # on the tangent plane too (a mix of two of its points), and inside the box
        total = part * foot + (1 - part) * (r / (1.0 + overshoot))
        lab, cls = label[rows], target[rows]
        z = x_adv[rows].clone()
        found = torch.zeros(len(rows), dtype=torch.bool, device=x.device)
        found_normal = torch.zeros_like(r)
        found_class = cls.clone()
        pending = torch.arange(len(rows), device=x.device)
        for it in range(max_iter + 1):
            moved = x[rows[pending]] + (1.0 + overshoot) * total[pending].view(x[rows[pending]].shape)
            if clip:
                moved = clf.clip(moved)
            z[pending] = x[rows[pending]] + (moved - x[rows[pending]])  # exactly x + r, as deepfool returns
            za = z[pending].detach().requires_grad_(True)
            logits = clf.forward(za)
            detached = logits.detach()
            pred, crossed = _crossed(detached, lab[pending])
            own = detached.gather(1, lab[pending, None])[:, 0]
            towards = torch.where(crossed, pred, cls[pending])
            grad_outputs = torch.zeros_like(detached)
            grad_outputs.scatter_(1, towards[:, None], 1.0)
            grad_outputs.scatter_add_(1, lab[pending, None], -torch.ones_like(own)[:, None])
            (w,) = torch.autograd.grad(logits, za, grad_outputs)
            used += len(pending)
            w = w.flatten(1)
            w_size = w.norm(dim=1)
            done = crossed & (w_size > _TINY)
            found[pending[done]] = True
            found_normal[pending[done]] = w[done] / w_size[done, None]
            found_class[pending[done]] = pred[done]
            stepping = ~crossed & (w_size > _TINY)
            if it == max_iter or not stepping.any():
                break
            idx = pending[stepping]
            ws = w[stepping]
            f = detached[stepping].gather(1, cls[idx, None])[:, 0] - own[stepping]
            w_dual = torch.linalg.vector_norm(ws, ord=dual, dim=1)
            if box_step:
                room = total[idx]
                need_step = (-f).clamp_min(0) + _STEP_SLACK * w_dual
                step = _box_steps(ws[None], need_step[None], (lower[idx] - room).clamp_max(0),
                                  (upper[idx] - room).clamp_min(0), norm)[0][0]
            else:
                step = _linear_step(ws, (-f).clamp_min(0), w_dual, norm)
            total[idx] += step
            pending = idx
        size_new = torch.linalg.vector_norm((z - x[rows]).flatten(1), ord=order, dim=1)
        better = found & (size_new < size_now)
        share[rows[~better]] /= 2
        chosen = rows[better]
        x_adv[chosen] = z[better]
        normal[chosen] = found_normal[better].view((-1,) + tuple(x.shape[1:])).to(normal.dtype)
        target[chosen] = found_class[better]
    return used


@torch.enable_grad()  # gradients are the method, even when the caller is inside no_grad
# (on the private worker, so that deepfool keeps its own signature and __kwdefaults__)
def _deepfool_batch(
    clf: Classifier,
    x: torch.Tensor,
    *,
    norm: str,
    overshoot: float,
    max_iter: int,
    candidates: int | None,
    clip: bool,
    nearest: int | None,
    box_step: bool | str = False,
    subspace: torch.Tensor | None = None,
    refine: int = 0,
) -> dict[str, torch.Tensor]:
    n = x.shape[0]
    lo, hi = clf.bounds
    label = cand = None  # set from the first forward, at x itself
    r_total = torch.zeros_like(x)
    x_adv = x.clone()
    target = torch.zeros(n, dtype=torch.long, device=x.device)
    normal = torch.zeros_like(x)
    iterations = torch.zeros(n, dtype=torch.long, device=x.device)
    status = torch.full((n,), NOT_CONVERGED, dtype=torch.int8, device=x.device)
    active = torch.arange(n, device=x.device)

    forward_rows = backward_rows = 0
    for it in range(max_iter + 1):
        if active.numel() == 0:
            break
        xa = x_adv[active].detach().requires_grad_(True)
        forward_rows += active.numel()
        logits = clf.forward(xa)
        detached = logits.detach()
        if it == 0:
            label, cand = _candidates(detached, candidates)
            target = label.clone()
            num_classes = detached.shape[1]
        lab = label[active]
        pred, crossed = _crossed(detached, lab)
        stepping = ~crossed if it < max_iter else torch.zeros_like(crossed)
        if not crossed.any() and not stepping.any():
            break  # the last forward found nobody crossing: nothing left to differentiate

        m = active.numel()
        rows = cand.shape[1] - 1 if stepping.any() else 1
        grad_outputs = torch.zeros(rows, m, num_classes, device=x.device, dtype=logits.dtype)
        arange_m = torch.arange(m, device=x.device)
        if stepping.any():
            # Samples still on their side: one row per candidate class, e_k - e_label.
            weight = stepping.to(logits.dtype).expand(rows, m)
            grad_outputs.scatter_(2, cand[active, 1:].T.unsqueeze(2), weight.unsqueeze(2))
            grad_outputs[:, arange_m, lab] -= weight
        # Samples that crossed: row 0 is e_target - e_label, whose gradient is the normal.
        grad_outputs[0, arange_m, pred] += crossed.to(logits.dtype)
        grad_outputs[0, arange_m, lab] -= crossed.to(logits.dtype)
        grads = _vjp_rows(logits, xa, grad_outputs)
        backward_rows += rows * m
        assert grads.shape == (rows,) + tuple(xa.shape), (grads.shape, rows, xa.shape)

        done = active[crossed]
        if done.numel():
            g = grads[0, crossed]
            g_norm = g.flatten(1).norm(dim=1)
            unit = g / g_norm.clamp_min(_TINY).view((-1,) + (1,) * (g.dim() - 1))
            has_normal = g_norm > _TINY
            normal[done] = torch.where(
                has_normal.view((-1,) + (1,) * (g.dim() - 1)), unit, torch.zeros_like(unit)
            )
            target[done] = pred[crossed]
            status[done] = torch.where(has_normal, CONVERGED, ZERO_NORMAL).to(status.dtype)

        if stepping.any():
            idx = active[stepping]
            # (rows, m', d): a view when every sample steps (the common case), else one copy
            w = (grads if bool(stepping.all()) else grads[:, stepping]).flatten(2)
            if subspace is not None:  # steps inside span(B): the gradients' projections Bᵀ B w
                full = torch.linalg.vector_norm(w, dim=2).T
                w = (w @ subspace.T) @ subspace
            f = (logits.detach()[stepping].gather(1, cand[idx, 1:])
                 - logits.detach()[stepping].gather(1, lab[stepping, None]))  # (m', rows)
            w_norm = torch.linalg.vector_norm(w, ord=2 if norm == "l2" else 1, dim=2).T  # (m', rows)
            usable = w_norm > _TINY
            if subspace is not None:  # a projection at rounding level is no direction: the subspace is blind
                usable &= w_norm > _SUBSPACE_BLIND * full
            ratio = torch.where(usable, f.abs() / w_norm.clamp_min(_TINY), torch.full_like(f, float("inf")))
            flat = ~usable.any(dim=1)
            if flat.any():  # no candidate has a gradient: report, never divide by zero
                status[idx[flat]] = ZERO_GRADIENT
            pick = torch.arange(len(idx), device=x.device)
            if box_step is True or (box_step == "after_first" and it > 0):
                # the step for every candidate solved inside the box that keeps x + (1 + η) Σ r in
                # bounds, and the candidate whose step is smallest; the same slack as below
                room = r_total[idx].flatten(1)
                start = x[idx].flatten(1)
                lower = ((lo - start) / (1.0 + overshoot) - room).clamp_max(0)
                upper = ((hi - start) / (1.0 + overshoot) - room).clamp_min(0)
                need = f.abs() + _STEP_SLACK * w_norm  # (m', rows)
                step = _smallest_box_step(w, need, w_norm, usable, lower, upper, norm)
            else:
                best = ratio.argmin(dim=1)
                step = _linear_step(w[best, pick], f[pick, best], w_norm[pick, best], norm)
            step[flat] = 0
            r_total[idx] += step.view((-1,) + tuple(x.shape[1:]))
            moved = x[idx] + (1.0 + overshoot) * r_total[idx]
            if clip:
                moved = clf.clip(moved)
                if box_step == "after_first" and it == 0:
                    # the later steps are solved in the box around x + (1 + η) Σ r, so Σ r must be
                    # the move the iterate made: what the clip cut off would otherwise count as
                    # room on the way back, and steps across it would not move the iterate
                    r_total[idx] = (moved - x[idx]) / (1.0 + overshoot)
            # Evaluate exactly x + r, the tensor a user rebuilds from the result, so that the
            # class found across the boundary is reproducible bit for bit.
            x_adv[idx] = x[idx] + (moved - x[idx])
            iterations[idx] += (~flat).long()
            if it == 0 and nearest is not None and nearest < cand.shape[1] - 1:
                order = ratio.argsort(dim=1)[:, :nearest]
                narrowed = cand[:, : nearest + 1].clone()
                narrowed[idx, 1:] = cand[idx, 1:].gather(1, order)
                cand = narrowed
            keep = torch.ones(m, dtype=torch.bool, device=x.device)
            keep[crossed] = False
            keep[stepping.nonzero().squeeze(1)[flat]] = False
            active = active[keep]
        else:
            active = active[~crossed]

    refine_rows = 0  # each a forward row and a backward row of the refinement, in the totals too
    if refine and label is not None:
        refine_rows = _refine(clf, x, x_adv, normal, label, target, status, rounds=refine, norm=norm,
                              overshoot=overshoot, max_iter=max_iter, clip=clip, box_step=bool(box_step))
        forward_rows, backward_rows = forward_rows + refine_rows, backward_rows + refine_rows
    perturbation = (x_adv - x).detach()
    flat_r = perturbation.flatten(1)
    margin = flat_r.norm(dim=1) if norm == "l2" else flat_r.abs().amax(dim=1)
    return {
        "perturbation": perturbation,
        "normal": normal.detach(),
        "margin": margin,
        "label": label,
        "target": target,
        "iterations": iterations,
        "converged": (status == CONVERGED) | (status == ZERO_NORMAL),
        "status": status,
        "cost": {"forward_rows": forward_rows, "backward_rows": backward_rows, "refine_rows": refine_rows},
    }


def _check_box_step(box_step: Any, clip: Any) -> bool | str:
    if isinstance(box_step, (bool, np.bool_)):
        box_step = bool(box_step)
    elif not (isinstance(box_step, str) and box_step == "after_first"):
        raise BoundgeoError(f"box_step must be False, True or 'after_first', got {box_step!r}")
    if box_step and not clip:
        raise BoundgeoError(f"box_step={box_step!r} solves steps inside clf.bounds, so it needs clip=True")
    return box_step


def _check_refine(refine: Any, subspace: Any = None) -> int:
    rounds = check_count(refine, "refine", minimum=0)
    if rounds and subspace is not None:
        raise BoundgeoError(f"refine={rounds} projects onto tangent planes of the whole input space; it cannot "
                            "be combined with subspace= (use refine=0)")
    return rounds


def _check_subspace(rows, x: torch.Tensor, *, name: str = "subspace") -> torch.Tensor:
    """``subspace=`` as (k, d) orthonormal rows on the inputs' device and dtype, or a BoundgeoError
    naming it."""
    d = int(x[0].numel())
    try:
        rows = torch.as_tensor(rows)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise BoundgeoError(f"{name} must be a tensor or array of rows, got {type(rows).__name__}") from exc
    if not rows.is_floating_point() or rows.dim() < 2 or rows.shape[0] == 0 \
            or tuple(rows.shape[1:]) not in (tuple(x.shape[1:]), (d,)) or rows.shape[0] > d:
        raise BoundgeoError(f"{name} has shape {tuple(rows.shape)} and dtype {rows.dtype}: expected real rows "
                            f"(k, *{tuple(x.shape[1:])}) or (k, {d}) with 1 <= k <= {d}")
    flat = rows.reshape(rows.shape[0], d)
    if not bool(torch.isfinite(flat).all()):
        raise BoundgeoError(f"{name} contains NaN or Inf")
    error = float((flat.double() @ flat.double().T - torch.eye(len(flat), dtype=torch.float64,
                                                               device=flat.device)).abs().max())
    if error > 1e-4:
        raise BoundgeoError(f"{name} is not orthonormal (|B Bᵀ - I| reaches {error:.2g}); "
                            "orthonormalise it, e.g. with torch.linalg.qr(B.T).Q.T")
    return flat.to(x.device, x.dtype)


def deepfool(
    clf: Classifier,
    x,
    *,
    norm: str = "l2",
    overshoot: float = 0.02,
    max_iter: int = 50,
    candidates: int | None = 10,
    batch_size: int = 256,
    clip: bool = True,
    nearest: int | None = 3,
    box_step: bool | str = False,
    refine: int = 0,
    subspace=None,
    progress: bool = False,
) -> BoundaryPoints:
    """Minimal perturbations across the decision boundary and the boundary normals there.

    Multi-class DeepFool (Moosavi-Dezfooli et al., CVPR 2016, Algorithm 2) for ℓ2 and for ℓ∞
    (the ℓ1-dual step), relative to the predicted label, so no labels are needed.

    Args:
        clf: the classifier.
        x: inputs (n, *S) within ``clf.bounds``.
        norm: ``"l2"`` or ``"linf"``.
        overshoot: η; the iterate is x + (1 + η) Σ r_i (as in the paper; never scaled by the
            input range).
        max_iter: most DeepFool steps per input; inputs that have not crossed by then are
            reported with ``converged=False``.
        candidates: classes considered, the top-k by clean logit including the label (None:
            all classes).
        batch_size: inputs per batch; crossed inputs leave the batch at once.
        clip: project the iterate onto ``clf.bounds`` at every step.
        nearest: after the first step keep only this many candidate classes per input, the
            nearest by the linearised distance |f'_k| / ‖w'_k‖_q; later steps then need
            ``nearest`` gradients instead of ``candidates - 1``. None keeps all candidates at
            every step (textbook DeepFool). On the MNIST CNN benchmark the default 3 halves
            the time and leaves the median and mean ‖r‖ unchanged to four digits.
        box_step: ``True`` solves each linearised step inside the box instead of clipping after
            it: the smallest step (in ``norm``) that crosses the linearised boundary while
            x + (1 + η) Σ r stays within ``clf.bounds`` (exact: Newton's method on the step's
            concave piecewise-linear equation, sorting the coordinates' breakpoints as the
            fallback), towards the candidate class whose step is smallest, so saturated pixels
            no longer absorb part of the step. Where even the whole box cannot cross the
            linearised boundary, the step fills the box. ``"after_first"`` clips the first step
            (linearised at x, the least accurate) and solves the later ones in the box around
            the clipped iterate: on the MNIST CNN it needs a third (ℓ2) to a half (ℓ∞) of the
            iterations with median norms within 0.7%, where ``True`` needs a quarter but lands
            9% (ℓ2) to 19% (ℓ∞) farther. Needs ``clip=True``.
        refine: rounds of tangent-plane projection after DeepFool has crossed (the idea of
            SuperDeepFool, Abdolahpourrostam et al., NeurIPS 2024): from the boundary point with
            normal n, the nearest point of its tangent plane (the smallest s with n·s = n·r,
            inside the box when clipping), then two-class DeepFool steps across again. A point
            replaces the previous one, with its normal and class, only where it is across and
            closer to x. 0 (the default) is DeepFool as published. Each round costs one forward
            and one backward row per input and step (usually 1-2 steps); on the MNIST CNN one
            round shortens the median ‖r‖ by about 10%. Not with ``subspace``.
        subspace: orthonormal rows (k, *S) or (k, d): every step is taken inside their span, with
            the candidates' gradients replaced by their projections (Ortiz-Jiménez et al. 2020),
            so the perturbation found is the margin along that subspace (see
            :func:`~boundgeo.subspace_margins`). ℓ2 only and ``clip=False``: clipping would leave
            the subspace. The normals reported stay the full gradients' (the boundary's normal).
        progress: show a progress bar over batches.

    Returns:
        :class:`BoundaryPoints` on the classifier's device, ``index`` = 0..n-1.

    Shape:
        x: (n, *S) → perturbation, normal: (n, *S); margin, label, target: (n,).

    Example:
        >>> import torch, boundgeo as bg
        >>> clf = bg.Classifier(torch.nn.Linear(2, 2).eval(), bounds=(-10, 10))
        >>> pts = bg.deepfool(clf, torch.zeros(3, 2), clip=False)
        >>> bool(pts.converged.all())
        True
    """
    clf = as_classifier(clf)
    checked = _check_settings(norm, overshoot, max_iter, candidates, nearest)
    batch_size = check_count(batch_size, "batch_size")
    x = clf.check_inputs(x)
    settings = dict(**checked, clip=bool(clip), box_step=_check_box_step(box_step, clip),
                    refine=_check_refine(refine, subspace))
    norm, overshoot, max_iter, candidates, nearest = (
        checked[key] for key in ("norm", "overshoot", "max_iter", "candidates", "nearest"))
    if subspace is not None:
        if norm != "l2" or clip or settings["box_step"]:
            raise BoundgeoError(f"subspace= steps along projected gradients in ℓ2 and needs clip=False (clipping "
                                f"would leave the subspace); got norm={norm!r}, clip={clip!r}, "
                                f"box_step={settings['box_step']!r}")
        subspace = _check_subspace(subspace, x)
        settings["subspace_dim"] = subspace.shape[0]
    chunks = x.split(batch_size)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="deepfool", unit="batch")
    parts = [
        _deepfool_batch(clf, chunk, norm=norm, overshoot=overshoot, max_iter=max_iter,
                        candidates=candidates, clip=clip, nearest=nearest, box_step=settings["box_step"],
                        subspace=subspace, refine=settings["refine"])
        for chunk in chunks
    ]
    fields_ = {key: torch.cat([p[key] for p in parts]) for key in parts[0] if key != "cost"}
    cost = {key: sum(p["cost"][key] for p in parts) for key in parts[0]["cost"]}
    return BoundaryPoints(
        **fields_,
        cost=cost,
        index=torch.arange(x.shape[0], device=x.device),
        norm=norm,
        settings=settings,
    )


# ============================================================================== collection
_RUN_FILE = "run.json"
_SHARDS = "shards"
_POINTS = "points"
_LOCK_FILE = ".lock"
# Version of the out= directory. 1 (no "format" key): run.json held the settings only.
# 2: status flags zero normals, run.json holds fingerprints of the model and data and a sha256
# per shard, and points/meta.json says its format.
_FORMAT = 2
_STORAGE_DTYPES = {torch.float32: "float32", torch.float16: "float16"}
# Inputs (with their labels) at this many evenly spaced positions, first and last included, and
# the count make the data's fingerprint: reading every input again on each resume would cost
# as much as a pass over the dataset.
_DATA_SAMPLE = 32
_DEEPFOOL_DEFAULTS = dict(overshoot=0.02, max_iter=50, candidates=10, clip=True, nearest=3, box_step=False,
                          refine=0)
# settings added after runs were recorded without them: such a run used the value given here
_LEGACY_SETTINGS = {"box_step": False, "refine": 0}
_TENSOR_FIELDS = tuple(f.name for f in dataclasses.fields(BoundaryPoints)
                       if f.name not in ("norm", "settings", "cost"))


def _shard_stem(out: Path, k: int) -> Path:
    return out / _SHARDS / f"{k:05d}"


def boundary_normals(
    clf: Classifier,
    data,
    *,
    n: int | None = None,
    norm: str = "l2",
    batch_size: int = 256,
    out: str | os.PathLike | None = None,
    resume: bool | str = True,
    seed: int = 0,
    progress: bool = True,
    keep_misclassified: bool = False,
    shard_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    **deepfool_kwargs: Any,
) -> BoundaryPoints:
    """Boundary points and normals over a dataset, in shards, resumable.

    Args:
        clf: the classifier.
        data: inputs, an (inputs, labels) pair, a torch Dataset or a DataLoader.
        n: number of boundary points wanted; None takes every input in order. With n, the
            inputs are taken in a random order fixed by ``seed`` until n are collected.
        norm: ``"l2"`` or ``"linf"``.
        batch_size: DeepFool batch size.
        out: directory; when given, each shard is written as soon as it is done (atomically)
            and the finished result is stored memory-mapped in ``out/points``.
        resume: continue from the finished shards in ``out``; the settings, the model and the
            data must be those of the run there. ``"auto"``: continue the run in ``out`` when it
            is this one, else start over with a warning (what the command line does). False:
            always start over.
        seed: fixes the choice and order of inputs.
        progress: a progress bar over inputs.
        keep_misclassified: when labels are given, inputs the model gets wrong are skipped
            (and counted in ``settings["skipped_misclassified"]``) unless this is True.
        shard_size: inputs per shard (default ``batch_size``); memory stays bounded by it.
        dtype: storage dtype of ``normal`` and ``perturbation``, in the result and on disk:
            ``torch.float32`` or ``torch.float16`` (half the disk; the normals are unit vectors,
            and a perturbation beyond float16's range is an error, never inf). ``margin`` is
            computed before the rounding. In float16 each x + r is predicted again as stored:
            a point the rounding brought back to its label's side is not ``converged`` (status
            4, ``"rounded_back"``).
        **deepfool_kwargs: ``overshoot``, ``max_iter``, ``candidates``, ``clip``, ``nearest``,
            ``box_step``, ``refine`` (see :func:`deepfool`).

    Returns:
        :class:`BoundaryPoints` on the CPU; ``index`` points into ``data``.

    Shape:
        data: N inputs of shape S → perturbation, normal: (n, *S), n = N or the given n.

    With ``out=``, ``out/run.json`` records the settings, fingerprints of the model (sha256 of
    its state_dict and module types, mean, std and bounds; and of its configuration: ``outputs``,
    each module's hyperparameters, every buffer) and of the data (its count and the
    inputs and labels at 32 evenly spaced positions), and a sha256 per finished shard. Resuming
    with other settings, another model or other data is refused, naming what changed; a shard
    that no longer matches its checksum is computed again with a warning; shards without a
    run.json are never reused. The directory is locked (``fcntl.flock`` on ``out/.lock``) for
    the whole run, so a second writer gets a BoundgeoError at once.
    """
    unknown = set(deepfool_kwargs) - set(_DEEPFOOL_DEFAULTS)
    if unknown:
        raise BoundgeoError(f"unknown deepfool arguments {sorted(unknown)}")
    clf = as_classifier(clf)
    df_kwargs = {**_DEEPFOOL_DEFAULTS, **deepfool_kwargs}
    checked = _check_settings(norm, df_kwargs["overshoot"], df_kwargs["max_iter"], df_kwargs["candidates"],
                              df_kwargs["nearest"])
    storage = _STORAGE_DTYPES.get(dtype) if isinstance(dtype, torch.dtype) else None
    if storage is None:
        raise BoundgeoError("dtype (the storage dtype of normal and perturbation) must be torch.float32 "
                            f"or torch.float16, got {dtype!r}")
    out_path = None if out is None else Path(out)
    if out_path is not None and out_path.exists() and not out_path.is_dir():
        raise BoundgeoError(f"out={str(out)!r} is an existing file, not a directory")
    batch_size = check_count(batch_size, "batch_size")
    source = as_source(data, device=clf.device)
    total = len(source)
    settings = dict(
        norm=checked.pop("norm"),
        n=None if n is None else check_count(n, "n", maximum=total),
        seed=check_seed(seed),
        shard_size=batch_size if shard_size is None else check_count(shard_size, "shard_size"),
        batch_size=batch_size,
        keep_misclassified=bool(keep_misclassified),
        num_inputs=total,
        dtype=storage,
        clip=bool(df_kwargs["clip"]),
        box_step=_check_box_step(df_kwargs["box_step"], df_kwargs["clip"]),
        refine=_check_refine(df_kwargs["refine"]),
        **checked,
    )
    if storage == "float16":  # float16 shards of older runs rounded toward zero and were not checked
        settings["storage_rounding"] = "outward, checked"
    resume = check_choice(resume, "resume", (True, False, "auto"))
    world = get_world()
    record = None
    if out_path is not None or world.active:
        record = {"format": _FORMAT, "settings": settings,
                  "fingerprint": {"model": _model_fingerprint(clf), "model_config": _model_config(clf),
                                  "data": _data_fingerprint(source)}}
        # every rank must run the same collection, or the shards would mix two runs
        world.agree("boundary_normals", {**settings, **record["fingerprint"], "resume": resume,
                                         "out": None if out_path is None else str(out_path.resolve())})
    if out_path is None:
        return _collect(clf, source, settings, None, progress, world)
    with _RunDirectory(out_path, record, resume=resume, world=world) as run:
        _collect(clf, source, settings, run, progress, world)  # returns once rank 0 wrote points/
        return BoundaryPoints.load(out_path)


def _collect(clf: Classifier, source, settings: dict[str, Any], run: "_RunDirectory | None",
             progress: bool, world: World) -> BoundaryPoints | None:
    """The shard loop of :func:`boundary_normals`: kept in memory and returned (``run`` None),
    or written into the run directory, reusing its verified shards.

    Shards are taken in rounds of one per rank, shard k on rank k mod N (N = 1 outside a
    process group). Each round first exchanges how many usable inputs every shard of the round
    holds (those the model gets right, when misclassified ones are skipped; the rows of a shard
    finished before), so that with ``n=`` every rank knows how many rows each shard must keep:
    exactly what one process, going shard by shard, would keep. The shards are then computed
    in parallel and rank 0 records them in ``run.json``.
    """
    n, seed, shard_size, total = settings["n"], settings["seed"], settings["shard_size"], settings["num_inputs"]
    order = (torch.arange(total) if n is None
             else torch.randperm(total, generator=torch.Generator().manual_seed(seed)))
    wanted = total if n is None else n
    filter_wrong = source.has_labels and not settings["keep_misclassified"]
    bar = None
    if progress and world.main:
        from tqdm.auto import tqdm

        bar = tqdm(total=wanted, desc="boundary normals", unit="pt" if n is not None else "input")
    mine: list[tuple[int, BoundaryPoints]] = []  # in memory: this rank's shards
    shard_counts: list[int] = []
    collected, skipped, first = 0, 0, 0
    labelled, cost = True, {}
    while collected < wanted and first * shard_size < total:
        ks = [k for k in range(first, first + world.size) if k * shard_size < total]
        k = first + world.rank
        job: _ShardJob | None = None
        error = None
        if k in ks:
            try:
                job = _ShardJob.plan(clf, source, order[k * shard_size : (k + 1) * shard_size], k, run,
                                     filter_wrong, settings)
            except Exception as exc:  # reported to every rank below, then raised here
                error = exc
        usable = world.all_gather(Failure.of(error) if error is not None else None if job is None else job.usable)
        world.raise_failures(error, usable)
        keeps: dict[int, int] = {}  # shard → the most rows it may keep
        for i, shard in enumerate(ks):
            if collected >= wanted:
                break
            keeps[shard] = wanted - collected
            collected += min(usable[i], keeps[shard])
        summary = None
        if k in keeps:
            try:
                part = job.run(clf, keeps[k], run)
                summary = {"rows": len(part), "skipped": int(part.settings.get("skipped_misclassified", 0)),
                           "cost": dict(part.cost), "labelled": part.true_label is not None,
                           "entry": job.entry}
                if run is None:
                    mine.append((k, part))
            except Exception as exc:
                error = exc
        summaries = world.all_gather(summary if error is None else Failure.of(error))
        if run is not None:  # the round's finished shards, even when another rank failed
            run.record_shards({shard: summaries[i]["entry"] for i, shard in enumerate(ks)
                               if shard in keeps and not isinstance(summaries[i], Failure)})
        world.raise_failures(error, summaries)
        for i, shard in enumerate(ks):
            done = summaries[i]
            if shard not in keeps:
                continue
            skipped += done["skipped"]
            if done["rows"]:
                labelled &= done["labelled"]
                for key, value in done["cost"].items():
                    cost[key] = cost.get(key, 0) + value
            shard_counts.append(done["rows"])
            if bar is not None:  # without n the bar counts inputs processed, with n points collected
                bar.update(done["rows"] if n is not None else min(shard_size, total - shard * shard_size))
        first += world.size
    if bar is not None:
        bar.close()
    if collected == 0:
        raise BoundgeoError("no input left: the model misclassifies all of them "
                            "(pass keep_misclassified=True to use them anyway)")
    settings = {**settings, "skipped_misclassified": skipped}
    if skipped and progress and world.main:
        print(f"boundary_normals: skipped {skipped} misclassified inputs "
              "(keep_misclassified=True keeps them)")
    if n is not None and collected < n and world.main:
        print(f"boundary_normals: only {collected} of the {n} wanted inputs are usable")
    if run is not None:
        world.run_on_main(lambda: run.finish(shard_counts, settings, labelled=labelled, cost=cost))
        return None
    parts = [part for gathered in world.all_gather(mine) for part in gathered]
    parts = [part for _, part in sorted(parts, key=lambda item: item[0])]
    return dataclasses.replace(BoundaryPoints.concat(parts), settings=settings)


class _ShardJob:
    """One shard of :func:`boundary_normals` on the rank that owns it: read and (when
    misclassified inputs are skipped) predicted first, so that the round knows how many usable
    inputs it holds; then computed (or reused from the run directory) and saved."""

    def __init__(self, k: int, idx: torch.Tensor, settings: dict[str, Any]) -> None:
        self.k, self.idx, self.settings = k, idx, settings
        self.reused: BoundaryPoints | None = None
        self.x = self.y = self.right = None
        self.usable = 0
        self.entry: dict[str, Any] | None = None

    @classmethod
    def plan(cls, clf: Classifier, source, idx: torch.Tensor, k: int, run: "_RunDirectory | None",
             filter_wrong: bool, settings: dict[str, Any]) -> "_ShardJob":
        job = cls(k, idx, settings)
        job.reused = None if run is None else run.shard(k)
        if job.reused is not None and not _holds_planned(job.reused.index, idx):
            # the seeded order of the inputs is not what it was (another torch's randperm, say):
            # the shard's rows are other inputs than this shard's, whatever its checksum says
            warnings.warn(f"shard {k} of {run.out} holds other inputs than this run assigns to it "
                          "(the seeded order of the inputs changed): computing it again", stacklevel=4)
            run.shards.pop(str(k), None)
            job.reused = None
        if job.reused is not None:  # finished before: its rows are what one process kept
            job.usable = len(job.reused)
            job.entry = run.shards[str(k)]
            return job
        x, y = source.get(idx)
        job.x, job.y = clf.check_inputs(x), y
        if filter_wrong:
            job.right = clf.predict(job.x, batch_size=settings["batch_size"]).cpu() == y.cpu()
            job.usable = int(job.right.sum())
        else:
            job.usable = len(idx)
        return job

    def run(self, clf: Classifier, keep: int, run: "_RunDirectory | None") -> BoundaryPoints:
        if self.reused is not None:
            return self.reused
        part = _compute_shard(clf, self.idx, self.x, self.y, self.right, keep, self.settings)
        self.x = self.y = None
        if run is not None:
            self.entry = run.save_shard(self.k, part)
        return part


def _holds_planned(stored: torch.Tensor, planned: torch.Tensor) -> bool:
    """Whether a stored shard's ``index`` is a subsequence of the positions the run assigns to
    the shard (some may be left out: misclassified inputs, or the last ones under ``n=``)."""
    position = {int(v): i for i, v in enumerate(planned.tolist())}
    at = [position.get(int(v), -1) for v in stored.tolist()]
    return all(a >= 0 for a in at) and all(a < b for a, b in zip(at, at[1:]))


def _compute_shard(clf: Classifier, idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None,
                   right: torch.Tensor | None, keep: int, settings: dict[str, Any]) -> BoundaryPoints:
    """DeepFool on the inputs ``x`` at ``idx`` (at most ``keep`` of them; without those the
    model gets wrong when ``right`` is given), on the CPU, in the storage dtype."""
    wrong = 0
    if right is not None:
        kept = right.nonzero().squeeze(1)
        # count the misclassified inputs only up to the last one the result takes
        seen = len(right) if len(kept) <= keep else int(kept[keep - 1]) + 1
        wrong = int((~right[:seen]).sum())
        idx, x, y = idx[right], x[right], y[right]
    # with n=, run DeepFool only on the inputs still wanted, so that the shards hold exactly the
    # result's rows (and no work is thrown away)
    idx, x = idx[:keep], x[:keep]
    y = None if y is None else y[:keep]
    dtype = getattr(torch, settings["dtype"])
    if not idx.numel():
        return _empty_shard(tuple(x.shape[1:]), wrong, dtype)
    found = deepfool(clf, x, norm=settings["norm"], batch_size=settings["batch_size"],
                     **{key: settings[key] for key in _DEEPFOOL_DEFAULTS}).to("cpu")
    stored = _in_storage_dtype(found, idx, dtype, x.cpu(), clf.bounds)
    if dtype != found.perturbation.dtype:
        # DeepFool's points lie just past the boundary (the overshoot scales only the last
        # step): check that x + r, with r as stored, still crosses, as a user rebuilds it
        rebuilt = x + stored["perturbation"].to(x.device, x.dtype)
        with torch.no_grad():
            crossed = clf.predict(rebuilt, batch_size=settings["batch_size"]).cpu() == found.target
        lost = found.converged & ~crossed
        if bool(lost.any()):
            status = found.status.clone()
            status[lost] = ROUNDED_BACK
            found = dataclasses.replace(found, status=status, converged=found.converged & ~lost)
    return dataclasses.replace(
        found, index=idx, true_label=None if y is None else y.cpu().long(),
        settings={"skipped_misclassified": wrong}, **stored,
    )


def _in_storage_dtype(found: BoundaryPoints, idx: torch.Tensor, dtype: torch.dtype, x: torch.Tensor,
                      bounds: tuple[float, float]) -> dict[str, torch.Tensor]:
    """``normal`` and ``perturbation`` in ``dtype``; a value that is not finite there (NaN from
    the model, or beyond float16's range) is an error rather than a silent inf.

    A perturbation is rounded away from zero, entry by entry, so that x + r lies at least as far
    from x along every coordinate as the point DeepFool found, which is just across the boundary
    (toward zero, 84 of 99 converged points of the digits CNN fell back to the label's side; to
    nearest, 2 of 50); an entry that would then leave the bounds is rounded toward zero instead
    (x + r then lies between x and DeepFool's point, inside like both). Whether each rebuilt
    x + r still crosses is checked by the caller (``ROUNDED_BACK``)."""
    fields = {}
    lo, hi = bounds
    for name in ("perturbation", "normal"):
        value = getattr(found, name)
        stored = value.to(dtype)
        bad = ~torch.isfinite(stored.flatten(1)).all(dim=1)
        if bad.any():
            largest = float(value.flatten(1)[bad].abs().nan_to_num(float("inf")).max())
            raise BoundgeoError(
                f"{name} of the inputs at positions {idx[bad][:5].tolist()} of data ({int(bad.sum())} in all) "
                f"is NaN or Inf in {dtype} (largest magnitude {largest:.4g}; float16 holds at most "
                f"{torch.finfo(torch.float16).max:g}); store in torch.float32 or check the model"
            )
        if name == "perturbation" and dtype != value.dtype:  # after the check: inf would step to 65504
            back = stored.to(value.dtype)
            toward = torch.where(back.abs() > value.abs(), torch.nextafter(stored, torch.zeros_like(stored)), stored)
            outward = torch.full_like(stored, float("inf")) * value.sign().to(dtype)
            away = torch.where(back.abs() < value.abs(), torch.nextafter(stored, outward), stored)
            moved = x.to(value.dtype) + away.to(value.dtype)
            inside = torch.isfinite(away) & (moved >= lo) & (moved <= hi)
            stored = torch.where(inside, away, toward)
        fields[name] = stored
    return fields


def _empty_shard(shape: tuple[int, ...], skipped: int, dtype: torch.dtype) -> BoundaryPoints:
    zeros = torch.zeros((0,) + shape, dtype=dtype)
    empty_long = torch.zeros(0, dtype=torch.long)
    return BoundaryPoints(
        perturbation=zeros, normal=zeros.clone(), margin=torch.zeros(0), label=empty_long,
        target=empty_long.clone(), iterations=empty_long.clone(),
        converged=torch.zeros(0, dtype=torch.bool), status=torch.zeros(0, dtype=torch.int8),
        index=empty_long.clone(), true_label=empty_long.clone(),
        settings={"skipped_misclassified": skipped},
    )


# ------------------------------------------------------------------------------ fingerprints
def _hash_value(digest, value) -> None:
    """Feed a tensor (dtype, shape and bytes) or any other value (its repr) into ``digest``."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    else:
        digest.update(repr(value).encode())


def _model_fingerprint(clf: Classifier) -> str:
    """sha256 of what fixes the classifier's outputs: the module types, every state_dict entry,
    and the normalisation and bounds."""
    digest = hashlib.sha256()
    for name, module in clf.model.named_modules():
        digest.update(f"{name}:{type(module).__qualname__};".encode())
    for name, value in sorted(clf.model.state_dict().items()):
        digest.update(name.encode())
        _hash_value(digest, value)
    for value in (clf.mean, clf.std, tuple(clf.bounds)):
        _hash_value(digest, value)
    return digest.hexdigest()


def _model_config(clf: Classifier) -> str:
    """sha256 of what fixes the classifier's outputs besides its weights, which
    :func:`_model_fingerprint` leaves out: ``clf.outputs`` (logits or probabilities), every
    module's hyperparameters as its ``extra_repr`` names them (a convolution's stride, padding and
    padding mode, a pooling's kernel) and every buffer, also those kept out of the state_dict
    (``persistent=False``). Kept apart from the weights' fingerprint, which results already
    record (bench_universal's ART runs, resumable runs written before it)."""
    digest = hashlib.sha256(f"outputs={clf.outputs!r};".encode())
    for name, module in clf.model.named_modules():
        digest.update(f"{name}:{type(module).__qualname__}({module.extra_repr()});".encode())
    for name, value in clf.model.named_buffers():
        digest.update(name.encode())
        _hash_value(digest, value)
    return digest.hexdigest()


def _data_fingerprint(source) -> str:
    """sha256 of the number of inputs and of the inputs and labels at evenly spaced positions."""
    total = len(source)
    positions = torch.linspace(0, total - 1, min(total, _DATA_SAMPLE)).round().long().unique()
    x, y = source.get(positions)
    digest = hashlib.sha256(f"{total} inputs;".encode())
    _hash_value(digest, x)
    _hash_value(digest, y)
    return digest.hexdigest()


def _file_digest(stem: Path) -> str | None:
    """sha256 over a shard's .json and .npz, or None when either is missing."""
    digest = hashlib.sha256()
    for path in (stem.with_suffix(".json"), stem.with_suffix(".npz")):
        try:
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(2**22), b""):
                    digest.update(chunk)
        except FileNotFoundError:
            return None
        digest.update(b"|")
    return digest.hexdigest()


# ------------------------------------------------------------------------------ run directory
class _RunDirectory:
    """The ``out=`` directory of one :func:`boundary_normals` run, locked for the whole run.

    ``run.json`` is the manifest: the format, the settings, the fingerprints of the model and
    data, and the sha256 of every finished shard, rewritten atomically after each shard. A
    shard is reused only when its files still match its checksum.
    """

    def __init__(self, out: Path, record: dict[str, Any], *, resume: bool | str,
                 world: World = World()) -> None:
        self.out = out
        self.record = json.loads(json.dumps(record))  # as it reads back from run.json
        self.resume = resume
        self.world = world
        self.shards: dict[str, dict[str, Any]] = {}
        self._lock: int | None = None

    def __enter__(self) -> "_RunDirectory":
        # Under a process group rank 0 alone locks, checks and prepares the directory (it may
        # remove stale shards); the others wait for it and take its table of finished shards.
        def prepare() -> dict[str, dict[str, Any]]:
            self._acquire()
            try:
                self._prepare()
            except BaseException:
                self._release()
                raise
            return self.shards

        self.shards = self.world.run_on_main(prepare)
        return self

    def __exit__(self, *exc) -> None:
        self._release()

    def _acquire(self) -> None:
        import fcntl

        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / _LOCK_FILE
        try:  # never through a link: the lock file is truncated and written below
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            raise BoundgeoError(f"cannot take the lock {path} ({exc.strerror}); a symbolic link or "
                                "another kind of file is not used as a lock: remove it") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise BoundgeoError(f"the lock {path} is not a regular file: remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip()
            os.close(fd)
            raise BoundgeoError(
                f"{self.out} is being written by another process ({holder or 'unknown'} holds {path}); "
                "wait for it to finish or choose another out="
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self._lock = fd

    def _release(self) -> None:
        if self._lock is not None:
            import fcntl

            fcntl.flock(self._lock, fcntl.LOCK_UN)
            os.close(self._lock)
            self._lock = None

    def _prepare(self) -> None:
        for name in (_SHARDS, _POINTS, _RUN_FILE):
            if (self.out / name).is_symlink():  # the run's files stay inside out=
                raise BoundgeoError(f"{self.out / name} is a symbolic link; a run writes only inside its "
                                    "own folder: remove the link or choose another out=")
        for folder in (self.out, self.out / _SHARDS, self.out / _POINTS):
            for orphan in folder.glob(".*.tmp"):  # left by a killed run; no writer is left (we hold the lock)
                orphan.unlink(missing_ok=True)
        run_file = self.out / _RUN_FILE
        previous = read_json(run_file) if self.resume and run_file.exists() else None
        if previous is not None and not isinstance(previous, dict):
            raise BoundgeoError(f"{run_file} is not a boundary_normals manifest; use resume=False to start over")
        version = None if previous is None else previous.get("format")
        if version is not None:
            if not isinstance(version, int) or version > _FORMAT:
                raise BoundgeoError(f"{run_file} has format {version!r}, newer than this boundgeo reads "
                                    f"({_FORMAT}); upgrade boundgeo or use resume=False")
            changed = _what_changed(previous, self.record)
            if changed and self.resume == "auto":
                warnings.warn(f"{self.out} holds a run with {' and '.join(changed)}: starting over",
                              stacklevel=4)
                version = None
            elif changed:
                raise BoundgeoError(f"{self.out} holds a run with {' and '.join(changed)}; "
                                    "use another out= or resume=False to start over")
            else:
                self.shards = _checked_shard_table(previous.get("shards"), run_file)
        if version is None:
            leftovers = sorted((self.out / _SHARDS).glob("*.npz"))
            if self.resume and leftovers and not (previous and previous.get("format")):
                reason = "no run.json" if previous is None else "a run.json from before shard checksums"
                warnings.warn(f"{self.out} holds {len(leftovers)} shards with {reason}: they cannot be "
                              "checked against this run and are removed", stacklevel=4)
            for sub in (_SHARDS, _POINTS):
                shutil.rmtree(self.out / sub, ignore_errors=True)
        (self.out / _SHARDS).mkdir(parents=True, exist_ok=True)
        self._write_manifest()

    def _write_manifest(self) -> None:
        text = json.dumps({**self.record, "shards": self.shards}, indent=1, sort_keys=True).encode()
        atomic_write_bytes(self.out / _RUN_FILE, lambda h: h.write(text))

    def shard(self, k: int) -> BoundaryPoints | None:
        """Shard k if it is finished and its files match their checksum, else None."""
        entry = self.shards.get(str(k))
        if entry is None:
            return None
        stem = _shard_stem(self.out, k)
        if _file_digest(stem) != entry["sha256"]:
            warnings.warn(f"{stem}.npz/.json no longer match their checksum in {self.out / _RUN_FILE} "
                          "(changed, replaced or damaged since they were written): computing the shard again",
                          stacklevel=4)
            del self.shards[str(k)]
            return None
        return BoundaryPoints.load(stem)

    def save_shard(self, k: int, part: BoundaryPoints) -> dict[str, Any]:
        """Write shard k (atomically) and return its entry for the manifest."""
        stem = part.save(_shard_stem(self.out, k))
        return {"rows": len(part), "sha256": _file_digest(stem)}

    def record_shards(self, entries: dict[int, dict[str, Any]]) -> None:
        """Enter finished shards in the table; rank 0 rewrites run.json (a failure there is raised
        on every rank)."""
        self.shards.update({str(k): entry for k, entry in entries.items()})
        self.world.run_on_main(self._write_manifest)

    def finish(self, shard_counts: list[int], settings: dict[str, Any], *, labelled: bool,
               cost: dict[str, int]) -> None:
        _write_collection(self.out, shard_counts, settings, labelled=labelled, cost=cost)


def _what_changed(previous: dict[str, Any], record: dict[str, Any]) -> list[str]:
    """What differs between a stored manifest and this run: model, data, settings (named)."""
    changed = []
    before = previous.get("fingerprint") if isinstance(previous.get("fingerprint"), dict) else {}
    if before.get("model") != record["fingerprint"]["model"]:
        changed.append("a different model (its weights, module types, mean, std or bounds differ)")
    elif "model_config" not in before:  # recorded before boundgeo fingerprinted the configuration
        warnings.warn("the run in this directory was recorded before boundgeo fingerprinted the model's "
                      "configuration (outputs=, module hyperparameters, non-persistent buffers): its shards "
                      "are reused on the weights' fingerprint alone", stacklevel=5)
    elif before["model_config"] != record["fingerprint"]["model_config"]:
        changed.append("a different model configuration (its outputs= setting, a module's hyperparameters "
                       "such as a stride or padding, or a buffer differ)")
    if before.get("data") != record["fingerprint"]["data"]:
        changed.append(f"different data (its count or the inputs at {_DATA_SAMPLE} evenly spaced positions differ)")
    old = previous.get("settings") if isinstance(previous.get("settings"), dict) else {}
    old = {**_LEGACY_SETTINGS, **old}
    new = record["settings"]
    diffs = [f"{key} was {old.get(key)!r}, now {new.get(key)!r}" for key in sorted(set(old) | set(new))
             if old.get(key) != new.get(key)]
    if diffs:
        changed.append("other settings (" + "; ".join(diffs) + ")")
    return changed


def _checked_shard_table(table: Any, run_file: Path) -> dict[str, dict[str, Any]]:
    if table is None:
        return {}
    ok = isinstance(table, dict) and all(
        isinstance(key, str) and key.isdigit() and isinstance(entry, dict)
        and isinstance(entry.get("sha256"), str) and isinstance(entry.get("rows"), int)
        for key, entry in table.items()
    )
    if not ok:
        raise BoundgeoError(f"{run_file} has a malformed shard table; use resume=False to start over")
    return table


# ------------------------------------------------------------------------------ finished result
def _write_collection(out: Path, shard_counts: list[int], settings: dict[str, Any], *, labelled: bool,
                      cost: dict[str, int]) -> None:
    """Store the finished result as one .npy per field (memory-mappable) plus meta.json.

    The files are written by streaming the shards one after another (the header first, then
    each shard's rows as raw bytes), so memory stays at one shard however large the result.
    Each goes to a temporary file of its own, synced to disk before it is renamed into place.
    """
    folder = out / _POINTS
    folder.mkdir(parents=True, exist_ok=True)
    used = [k for k, count in enumerate(shard_counts) if count]
    first = BoundaryPoints.load(_shard_stem(out, used[0]))
    total = sum(shard_counts)
    names = [name for name in _TENSOR_FIELDS if isinstance(getattr(first, name), torch.Tensor)]
    if "true_label" in names and not labelled:  # labels known for some shards only: drop them
        names.remove("true_label")
    handles, temps = {}, {}
    try:
        for name in names:
            array = getattr(first, name).numpy()
            fd, temps[name] = tempfile.mkstemp(dir=folder, prefix=f".{name}.npy.", suffix=".tmp")
            handles[name] = os.fdopen(fd, "wb")
            header = {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False,
                      "shape": (total,) + array.shape[1:]}
            np.lib.format.write_array_header_2_0(handles[name], header)
        for k in used:
            shard = first if k == used[0] else BoundaryPoints.load(_shard_stem(out, k))
            for name in names:
                rows = getattr(shard, name).numpy()
                handles[name].write(np.ascontiguousarray(rows).tobytes())
            del shard
        for handle in handles.values():
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        for temp in temps.values():
            Path(temp).unlink(missing_ok=True)
        raise
    finally:
        for handle in handles.values():
            handle.close()
    for name in names:
        os.replace(temps[name], folder / f"{name}.npy")
    fsync_directory(folder)
    meta = {"format": _FORMAT, "norm": first.norm, "settings": settings, "arrays": names, "cost": cost}
    atomic_write_bytes(folder / "meta.json", lambda h: h.write(json.dumps(meta, indent=2).encode()))


@dataclass(frozen=True)
class _Stored:
    """Where a loaded collection's arrays are on disk, and the format they were written in."""

    folder: Path
    format: int


def _stored(points: BoundaryPoints) -> _Stored | None:
    """The folder of ``points`` when they are a collection just loaded from disk, else None.

    Kept as an attribute, not a field: a field would be saved, and a location read back from a
    saved file must never be trusted. Derived results (select, to, replace) do not carry it.
    """
    return points.__dict__.get("_stored")


def _load_collection(out: Path) -> BoundaryPoints:
    folder = out / _POINTS
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        raise BoundgeoError(f"{out} holds no finished boundary_normals run ({meta_path} is missing)")
    meta = read_json(meta_path)
    version = meta.get("format", 1) if isinstance(meta, dict) else None
    names = meta.get("arrays") if isinstance(meta, dict) else None
    if (not isinstance(version, int) or not isinstance(names, list)
            or not isinstance(meta.get("settings"), dict) or meta.get("norm") not in ("l2", "linf")):
        raise BoundgeoError(f"{meta_path} is not the meta.json of a boundary_normals run")
    if version > _FORMAT:
        raise BoundgeoError(f"{meta_path} has format {version}, newer than this boundgeo reads ({_FORMAT})")
    # array names are field names, never paths: nothing outside the folder is ever opened
    strange = [name for name in names if name not in _TENSOR_FIELDS]
    missing = set(_TENSOR_FIELDS) - set(names) - {"true_label"}
    if strange or missing or len(set(names)) != len(names):
        raise BoundgeoError(f"{meta_path} lists arrays {names!r}; expected the fields {list(_TENSOR_FIELDS)} "
                            "(true_label optional), each once")
    root = out.resolve() / _POINTS  # not folder.resolve(): a symlinked points/ must not carry it elsewhere
    arrays = {}
    for name in names:
        path = folder / f"{name}.npy"
        if not path.resolve().is_relative_to(root):
            raise BoundgeoError(f"{path} leads outside {folder}")
        try:
            # copy-on-write map: pages are read on demand and never written back
            array = np.load(path, mmap_mode="c", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise BoundgeoError(f"{path} is not a readable .npy array ({exc})") from exc
        if array.dtype.kind not in "biuf" or array.ndim == 0:
            raise BoundgeoError(f"{path} holds a {array.dtype} array of shape {array.shape}, not numeric rows")
        arrays[name] = torch.from_numpy(array)
    count = arrays["margin"].shape[0]
    for name, array in arrays.items():
        wide = name in ("perturbation", "normal")
        if array.shape[0] != count or (array.dim() > 1) != wide:
            raise BoundgeoError(f"{folder / (name + '.npy')} has shape {tuple(array.shape)}, which does not "
                                f"fit {count} points")
    if arrays["normal"].shape != arrays["perturbation"].shape:
        raise BoundgeoError(f"normal.npy and perturbation.npy in {folder} differ in shape: "
                            f"{tuple(arrays['normal'].shape)} and {tuple(arrays['perturbation'].shape)}")
    arrays.setdefault("true_label", None)
    settings = {**meta["settings"], "loaded_from": str(out)}
    cost = meta.get("cost") if isinstance(meta.get("cost"), dict) else {}
    points = BoundaryPoints(**arrays, norm=meta["norm"], settings=settings, cost=cost)
    object.__setattr__(points, "_stored", _Stored(folder, version))
    return points


def iter_shards(out: str | os.PathLike) -> Iterator[BoundaryPoints]:
    """The finished shards of a :func:`boundary_normals` run, one at a time (bounded memory),
    each checked against its checksum in ``run.json``."""
    out = Path(out)
    run_file = out / _RUN_FILE
    manifest = read_json(run_file) if run_file.exists() else None
    if not isinstance(manifest, dict) or "format" not in manifest:
        raise BoundgeoError(f"{out} holds no boundary_normals run whose shards can be checked "
                            f"({run_file} is missing or from before shard checksums)")
    table = _checked_shard_table(manifest.get("shards"), run_file)
    if not table:
        raise BoundgeoError(f"{out} holds no shards of a boundary_normals run")
    for k in sorted(int(key) for key in table):
        stem = _shard_stem(out, k)
        if _file_digest(stem) != table[str(k)]["sha256"]:
            raise BoundgeoError(f"{stem}.npz/.json do not match their checksum in {run_file}")
        yield BoundaryPoints.load(stem)
