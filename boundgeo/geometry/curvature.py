"""Principal curvatures of the decision boundary at boundary points.

At a point z on the boundary between the predicted class l of x and the class k across it, the
boundary is the zero set of F = f_k − f_l. Its principal curvatures are the eigenvalues of the
shape operator

    S = P ∇²F(z) P / ‖∇F(z)‖,    P = I − n nᵀ,  n = ∇F(z)/‖∇F(z)‖,

restricted to the tangent space n⊥, and the principal directions are its eigenvectors
(Moosavi-Dezfooli et al., ICLR 2018, arXiv 1705.09554; Fawzi et al., CVPR 2018). Along a tangent
unit vector u, F(z + t u) ≈ ½ t² ‖∇F‖ uᵀS u: **a positive curvature means that moving along u
alone, with no normal component, crosses into class k**, as when the region of x is convex
around it. The universal-perturbation papers tie small universal perturbations to directions
along which the boundary is positively curved at many points at once.

The top curvatures come from a batched Lanczos iteration with full reorthogonalisation, one
Hessian-vector product per point per iteration. For networks with ReLU the Hessian is zero almost
everywhere, so the products are finite differences of gradients at a scale h (as in the authors'
code): S u ≈ P (∇F(z + h u) − ∇F(z − h u)) / (2h ‖∇F(z)‖), the curvature of the boundary seen
at the scale h. For smooth models ``method="autograd"`` gives exact products by double
backpropagation.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._checks import check_choice, check_count, check_real, check_seed
from .._errors import BoundgeoError
from .._results import Result
from ..attacks.boundary import BoundaryPoints, deepfool
from ..classifier import Classifier, as_classifier
from ..io._sources import as_source

METHODS = ("finite_difference", "autograd")
_BISECTION_STEPS = 30
_TINY = 1e-12
_STEP_BYTES = 256 * 2**20  # the most bytes of steps curvature_fooling holds at once


# ============================================================================== result
@dataclass(frozen=True, eq=False)
class Curvature(Result):
    """Principal curvatures of the decision boundary at boundary points.

    Fields (n points, k curvatures each, ``*S`` one input's shape):
        curvature: (n, k) the top-k principal curvatures by magnitude, in 1/input units,
            sorted by decreasing |κ|; positive where moving along the direction alone crosses
            into ``target`` (see the module docstring). NaN for points without a boundary point.
        direction: (n, k, *S) unit principal directions, tangent to the boundary.
        residual: (n, k) ‖S u − κ u‖ of each pair, measured with one more product: small means
            an eigenpair. Finite differences of a ReLU network are only roughly linear in u, so
            there it is often of the size of κ: κ is then the curvature along u at the scale h,
            not an exact principal curvature.
        point: (n, *S) the boundary point z (on the segment from x to x + r, where the logits
            of ``label`` and ``target`` are equal); x itself where not ``valid``.
        gradient_norm: (n,) ‖∇(f_target − f_label)‖ at z.
        label, target: (n,) the two classes the boundary separates.
        index: (n,) position of each x in the data it came from.
        valid: (n,) bool: a boundary point was found (DeepFool converged).
        on_boundary: (n,) bool: at z no third class beats ``label`` and ``target``, so z is on
            the decision boundary and not only on the level set f_target = f_label.
        step: (n,) the finite-difference scale h per point (NaN for ``"autograd"``).
        along: (n, m) the normal-section curvature uᵀSu/uᵀu along each of the m directions given
            as ``along=`` (each projected onto the tangent space first), or None.
        along_names: (m,) the group of each of those directions (the keys when ``along`` was a
            mapping, else ``"along"``), or None.
        method: ``"finite_difference"`` or ``"autograd"``.
        settings: the arguments. seconds: wall time. cost: ``forward_rows``, ``backward_rows``.
    """

    curvature: torch.Tensor
    direction: torch.Tensor
    residual: torch.Tensor
    point: torch.Tensor
    gradient_norm: torch.Tensor
    label: torch.Tensor
    target: torch.Tensor
    index: torch.Tensor
    valid: torch.Tensor
    on_boundary: torch.Tensor
    step: torch.Tensor
    along: torch.Tensor | None = None
    along_names: tuple[str, ...] | None = None
    method: str = "finite_difference"
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.curvature.shape[0])

    @property
    def k(self) -> int:
        return int(self.curvature.shape[1])

    def directions(self, *, positive: bool | None = None) -> torch.Tensor:
        """Principal directions of the valid points as unit rows (m, d).

        Args:
            positive: True keeps directions of positive curvature, False of negative
                curvature, None all of them. The rows of positive curvature are the ones whose
                shared span the universal-perturbation papers relate to universal perturbations.
        """
        keep = self.valid[:, None].expand_as(self.curvature).clone()
        if positive is True:
            keep &= self.curvature > 0
        elif positive is False:
            keep &= self.curvature < 0
        return self.direction.reshape(len(self), self.k, -1)[keep]

    def to_frame(self):
        """Tidy rows, one per (valid point, rank): index, label, target, rank, curvature, residual,
        gradient_norm, step, on_boundary."""
        import pandas as pd

        n, k = self.curvature.shape
        ok = self.valid.cpu().numpy()
        frame = pd.DataFrame({
            "index": np.repeat(self.index.cpu().numpy(), k),
            "label": np.repeat(self.label.cpu().numpy(), k),
            "target": np.repeat(self.target.cpu().numpy(), k),
            "rank": np.tile(np.arange(1, k + 1), n),
            "curvature": self.curvature.cpu().numpy().reshape(-1),
            "residual": self.residual.cpu().numpy().reshape(-1),
            "gradient_norm": np.repeat(self.gradient_norm.cpu().numpy(), k),
            "step": np.repeat(self.step.cpu().numpy(), k),
            "on_boundary": np.repeat(self.on_boundary.cpu().numpy(), k),
        })
        return frame[np.repeat(ok, k)].reset_index(drop=True)

    def along_frame(self):
        """Tidy rows, one per (valid point, given direction): index, group, direction (its
        position in ``along``), curvature. Raises if no ``along`` directions were given."""
        import pandas as pd

        if self.along is None:
            raise BoundgeoError("no curvature along given directions: pass along= to boundary_curvature")
        n, m = self.along.shape
        ok = np.repeat(self.valid.cpu().numpy(), m)
        frame = pd.DataFrame({
            "index": np.repeat(self.index.cpu().numpy(), m),
            "group": np.tile(np.asarray(self.along_names, dtype=object), n),
            "direction": np.tile(np.arange(m), n),
            "curvature": self.along.cpu().numpy().reshape(-1),
        })
        return frame[ok].reset_index(drop=True)


# ============================================================================== pieces
def _gap(clf: Classifier, z: torch.Tensor, label: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """F(z) = f_target(z) − f_label(z), one value per row."""
    logits = clf.forward(z)
    return logits.gather(1, target[:, None]).squeeze(1) - logits.gather(1, label[:, None]).squeeze(1)


@torch.no_grad()
def _bracketed(clf, x, r, label, target, cost) -> torch.Tensor:
    """Rows where F < 0 at x and F > 0 at x + r, so that bisection finds a boundary point:
    False where the inputs are not the ones the points were computed from, for example."""
    both = _gap(clf, torch.cat([x, x + r]), torch.cat([label, label]), torch.cat([target, target]))
    cost["forward_rows"] += 2 * x.shape[0]
    return (both[: x.shape[0]] < 0) & (both[x.shape[0]:] > 0)


@torch.no_grad()
def _boundary_point(clf, x, r, label, target, cost) -> torch.Tensor:
    """The point of the segment x → x + r where F = 0, by bisection (forward passes only).

    DeepFool's x + r lies slightly across (overshoot); the curvature belongs on the boundary.
    F < 0 at x (label wins) and F > 0 at x + r (target wins), so a root lies in between.
    """
    lo = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
    hi = torch.ones_like(lo)
    shape = (-1,) + (1,) * (x.dim() - 1)
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2
        across = _gap(clf, x + mid.view(shape) * r, label, target) > 0
        cost["forward_rows"] += x.shape[0]
        hi = torch.where(across, mid, hi)
        lo = torch.where(across, lo, mid)
    return x + ((lo + hi) / 2).view(shape) * r


def _no_third_class(logits, label, target) -> torch.Tensor:
    pair = torch.maximum(logits.gather(1, label[:, None]), logits.gather(1, target[:, None])).squeeze(1)
    others = logits.scatter(1, label[:, None], float("-inf")).scatter(1, target[:, None], float("-inf"))
    return others.amax(1) <= pair


def _gradient(clf, z, label, target, *, create_graph: bool = False):
    """z with grad enabled, ∇F(z) and the logits at z (one forward, one backward)."""
    z = z.detach().requires_grad_(True)
    logits = clf.forward(z)
    gap = logits.gather(1, target[:, None]).squeeze(1) - logits.gather(1, label[:, None]).squeeze(1)
    (grad,) = torch.autograd.grad(gap.sum(), z, create_graph=create_graph)
    return z, grad, logits.detach()


def _tangent(v: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """v (..., d) with its component along the unit vectors ``normal`` (..., d) removed."""
    return v - (v * normal).sum(-1, keepdim=True) * normal


def _lanczos(apply, start: torch.Tensor, normal: torch.Tensor, steps: int, generators):
    """Batched Lanczos with full reorthogonalisation for n symmetric operators on n⊥ at once.

    ``apply`` maps (n, d) tangent rows to (n, d) tangent rows. Returns the tridiagonal matrices
    (n, m, m), the Lanczos bases (n, m, d) and the last off-diagonal β_m (n,). When a row's
    Krylov space is exhausted (β ≈ 0), it restarts from a fresh random tangent vector
    orthogonal to its basis (drawn from that row's own generator), which keeps T
    block-diagonal.
    """
    n, d = start.shape
    basis = torch.zeros(n, steps, d, dtype=start.dtype, device=start.device)
    alpha = torch.zeros(n, steps, dtype=start.dtype, device=start.device)
    beta = torch.zeros(n, steps, dtype=start.dtype, device=start.device)
    q = start / start.norm(dim=1, keepdim=True)
    for j in range(steps):
        basis[:, j] = q
        w = apply(q)
        alpha[:, j] = (w * q).sum(1)
        w = _tangent(w, normal)
        for _ in range(2):  # twice is enough (Kahan): the basis stays orthonormal to rounding
            w = w - torch.einsum("njd,nj->nd", basis[:, : j + 1], torch.einsum("njd,nd->nj", basis[:, : j + 1], w))
        size = w.norm(dim=1)
        beta[:, j] = size
        if j + 1 == steps:
            break
        scale = torch.maximum(alpha[:, : j + 1].abs().amax(1), beta[:, : j + 1].amax(1)).clamp_min(_TINY)
        exhausted = size <= 1e-6 * scale
        if exhausted.any():
            fresh = torch.stack([torch.randn(d, generator=generators[i], dtype=start.dtype)
                                 for i in exhausted.nonzero().squeeze(1).tolist()]).to(start.device)
            fresh = _tangent(fresh, normal[exhausted])
            for _ in range(2):
                b = basis[exhausted, : j + 1]
                fresh = fresh - torch.einsum("njd,nj->nd", b, torch.einsum("njd,nd->nj", b, fresh))
            w = w.clone()
            w[exhausted] = fresh
            beta[exhausted, j] = 0.0  # block boundary: the new vector does not couple to the old
            size = torch.where(exhausted, w.norm(dim=1), size)
        q = w / size.clamp_min(_TINY)[:, None]
    tri = torch.diag_embed(alpha) + torch.diag_embed(beta[:, :-1], 1) + torch.diag_embed(beta[:, :-1], -1)
    return tri, basis, beta[:, -1]


def _as_directions(along, d: int, shape: tuple[int, ...], like: torch.Tensor):
    """``along`` (None, a tensor or a mapping name → tensor) as rows (m, d) and their names."""
    if along is None:
        return None, None
    groups = dict(along) if isinstance(along, Mapping) else {"along": along}
    rows, names = [], []
    for name, value in groups.items():
        value = torch.as_tensor(value).to(like.device, like.dtype)
        value = value.reshape(1, -1) if value.dim() == 1 else value.reshape(value.shape[0], -1)
        if value.shape[1] != d or value.shape[0] == 0 or not torch.isfinite(value).all():
            raise BoundgeoError(f"along must be finite directions of shape (m, {d}) or (m, *{shape}); "
                                f"{name!r} has shape {tuple(value.shape)}")
        rows.append(value)
        names += [str(name)] * value.shape[0]
    return torch.cat(rows), tuple(names)


def _along(apply, directions: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """uᵀSu/uᵀu for each direction u (m, d) made tangent at each point: (n, m)."""
    tangent = _tangent(directions[None].expand(len(normal), -1, -1), normal[:, None, :])
    size = tangent.norm(dim=2, keepdim=True)
    tangent = tangent / size.clamp_min(_TINY)
    kappa = (_apply_each(apply, tangent) * tangent).sum(2)
    return torch.where(size.squeeze(2) > _TINY, kappa, torch.full_like(kappa, float("nan")))


def _apply_each(apply, vectors: torch.Tensor) -> torch.Tensor:
    """S applied to each of j vectors per point: (n, j, d) -> (n, j, d), one batched call per j."""
    return torch.stack([apply(vectors[:, i]).detach() for i in range(vectors.shape[1])], 1)


def _check(k, method, steps, step, relative_step, batch_size, seed, progress) -> dict[str, Any]:
    """The settings of :func:`boundary_curvature`, validated and in their canonical types."""
    check_choice(progress, "progress", (True, False))
    return {
        "k": check_count(k, "k"),
        "method": check_choice(method, "method", METHODS),
        "lanczos_steps": None if steps is None else check_count(steps, "lanczos_steps"),
        "step": None if step is None else check_real(step, "step", low=0, low_open=True),
        "relative_step": check_real(relative_step, "relative_step", low=0, low_open=True),
        "batch_size": check_count(batch_size, "batch_size"),
        "seed": check_seed(seed),
    }


def _check_finite(curvature, residual, gradient_norm, valid) -> None:
    """Every valid point has finite curvatures: a NaN there (an overflowing gradient, a step h
    so small that the difference of gradients is all rounding) must not pass for a measurement."""
    bad = valid & ~(torch.isfinite(curvature).all(1) & torch.isfinite(residual).all(1)
                    & torch.isfinite(gradient_norm))
    if bool(bad.any()):
        rows = bad.nonzero().squeeze(1)[:5].tolist()
        raise BoundgeoError(
            f"boundary_curvature produced NaN or Inf curvatures at {int(bad.sum())} boundary points "
            f"(rows {rows}...); try a larger step= or relative_step=, or method='finite_difference'"
        )


# ============================================================================== public
@torch.enable_grad()  # gradients are the method, even when the caller is inside no_grad
def boundary_curvature(
    clf: Classifier,
    points,
    *,
    k: int = 10,
    inputs=None,
    method: str = "finite_difference",
    step: float | None = None,
    relative_step: float = 0.1,
    lanczos_steps: int | None = None,
    along=None,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
    **deepfool_kwargs,
) -> Curvature:
    """Top-k principal curvatures of the decision boundary, and their directions, at each
    input's nearest boundary point.

    Args:
        clf: the classifier.
        points: a :class:`BoundaryPoints` (then ``inputs`` is the data they were computed from,
            rows taken at ``points.index``), or data in any accepted form, in which case
            :func:`deepfool` (ℓ2) finds the boundary points first.
        k: how many curvatures per point, the largest in magnitude.
        inputs: the data behind ``points`` when ``points`` is a :class:`BoundaryPoints`.
        method: ``"finite_difference"`` (default; works for ReLU networks, whose Hessian is
            zero almost everywhere) or ``"autograd"`` (exact Hessian-vector products by double
            backpropagation, for smooth models).
        step: the finite-difference scale h in input units, the same for every point.
        relative_step: when ``step`` is None, h = relative_step · ‖r(x)‖₂ per point: the
            curvature seen at a tenth of the distance to the boundary by default.
        lanczos_steps: Lanczos iterations m (default max(2k + 10, 30), at most d − 1). With
            m = d − 1 and a linear (smooth-model) operator the curvatures are exact.
        along: optional directions (m, *S) or (m, d), or a mapping name → directions, e.g.
            ``{"principal": spec.basis(10), "random": ...}``: the curvature of the boundary along
            each, one extra Hessian-vector product per direction and point (fields ``along``
            and ``along_names``).
        batch_size: points per batch; each Lanczos step runs 2·batch_size rows through the
            model for finite differences.
        seed: seeds the Lanczos start vectors.
        progress: a progress bar over batches.
        **deepfool_kwargs: passed to :func:`deepfool` when ``points`` is data.

    Returns:
        :class:`Curvature`, tensors on the classifier's device.

    Shape:
        points: n boundary points of inputs (n, *S) → curvature (n, k), direction (n, k, *S).

    Example:
        >>> import torch, boundgeo as bg
        >>> clf = bg.Classifier(torch.nn.Linear(4, 2).eval(), bounds=(-9, 9))
        >>> curv = bg.boundary_curvature(clf, torch.zeros(2, 4), k=2)
        >>> bool(curv.curvature.abs().max() < 1e-3)  # an affine boundary is flat
        True
    """
    clf = as_classifier(clf)
    checked = _check(k, method, lanczos_steps, step, relative_step, batch_size, seed, progress)
    k, lanczos_steps, step, relative_step, batch_size, seed = (
        checked[name] for name in ("k", "lanczos_steps", "step", "relative_step", "batch_size", "seed"))
    start_time = time.perf_counter()
    if isinstance(points, BoundaryPoints):
        if inputs is None:
            raise BoundgeoError(
                "boundary_curvature needs the inputs behind the BoundaryPoints (inputs=...), "
                "since a boundary point is x + r; or pass the data itself as points"
            )
        if deepfool_kwargs:
            raise BoundgeoError(f"DeepFool settings {sorted(deepfool_kwargs)} only apply when points is data")
        source = as_source(inputs, device=clf.device)
        if len(points) and int(points.index.max()) >= len(source):
            raise BoundgeoError(
                f"points.index goes up to {int(points.index.max())}, but inputs has {len(source)} rows; "
                f"pass the data the points were computed from"
            )
        x, _ = source.get(points.index.cpu())
        x = clf.check_inputs(x)
        pts = points.to(x.device)
        if tuple(x.shape[1:]) != pts.input_shape:
            raise BoundgeoError(f"inputs of shape {tuple(x.shape)} do not match points of input shape {pts.input_shape}")
    else:
        from ..io._sources import as_tensors

        x, _ = as_tensors(points)
        x = clf.check_inputs(x)
        pts = deepfool(clf, x, norm="l2", **deepfool_kwargs)
    n = x.shape[0]
    d = int(np.prod(x.shape[1:]))
    if d < 2:
        raise BoundgeoError(f"curvature needs inputs of dimension >= 2, got {d}")
    m = min(int(lanczos_steps) if lanczos_steps is not None else max(2 * int(k) + 10, 30), d - 1)
    kk = min(int(k), m)
    cost = {"forward_rows": 0, "backward_rows": 0}
    real = dict(dtype=x.dtype, device=x.device)
    curvature = torch.full((n, kk), float("nan"), **real)
    direction = torch.zeros((n, kk) + tuple(x.shape[1:]), **real)
    residual = torch.full((n, kk), float("nan"), **real)
    point = x.clone()
    gradient_norm = torch.full((n,), float("nan"), **real)
    steps_h = torch.full((n,), float("nan"), **real)
    on_boundary = torch.zeros(n, dtype=torch.bool, device=x.device)
    valid = pts.converged.to(x.device) & (pts.label != pts.target).to(x.device)
    along, along_names = _as_directions(along, d, tuple(x.shape[1:]), x)
    along_out = None if along is None else torch.full((n, along.shape[0]), float("nan"), **real)
    index = pts.index.to(x.device)

    # an empty tensor splits into one empty chunk: with no converged point there is no batch
    chunks = [rows for rows in valid.nonzero().squeeze(1).split(batch_size) if len(rows)]
    if not chunks:
        warnings.warn(
            f"DeepFool found no boundary point for any of the {n} inputs (none converged), so "
            "there is no curvature to measure: every row is NaN with valid=False",
            stacklevel=2,
        )
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="curvature", unit="batch")
    zero_hessian, unbracketed = True, 0
    for rows in chunks:
        xb, rb = x[rows], pts.perturbation[rows].to(x.dtype)
        lab, tgt = pts.label[rows], pts.target[rows]
        bracketed = _bracketed(clf, xb, rb, lab, tgt, cost)
        if not bracketed.all():
            unbracketed += int((~bracketed).sum())
            valid[rows[~bracketed]] = False
            rows, xb, rb, lab, tgt = (t[bracketed] for t in (rows, xb, rb, lab, tgt))
            if len(rows) == 0:
                continue
        z = _boundary_point(clf, xb, rb, lab, tgt, cost)
        zg, grad, logits = _gradient(clf, z, lab, tgt, create_graph=(method == "autograd"))
        on_boundary[rows] = _no_third_class(logits, lab, tgt)
        cost["forward_rows"] += len(rows)
        cost["backward_rows"] += len(rows)
        flat = grad.detach().reshape(len(rows), -1)
        gnorm = flat.norm(dim=1)
        normal = flat / gnorm.clamp_min(_TINY)[:, None]
        shape = (len(rows),) + tuple(x.shape[1:])
        if method == "finite_difference":
            h = (torch.full_like(gnorm, float(step)) if step is not None
                 else relative_step * rb.reshape(len(rows), -1).norm(dim=1))
            h = h.clamp_min(1e-6)

            def apply(u, z=z, h=h, lab=lab, tgt=tgt, gnorm=gnorm, normal=normal, shape=shape):
                shift = (h[:, None] * u).reshape(shape)
                both = torch.cat([z + shift, z - shift])
                _, g2, _ = _gradient(clf, both, torch.cat([lab, lab]), torch.cat([tgt, tgt]))
                cost["forward_rows"] += 2 * len(u)
                cost["backward_rows"] += 2 * len(u)
                g2 = g2.reshape(2 * len(u), -1)
                hv = (g2[: len(u)] - g2[len(u):]) / (2 * h[:, None])
                return _tangent(hv, normal) / gnorm.clamp_min(_TINY)[:, None]
        else:
            h = torch.full_like(gnorm, float("nan"))

            def apply(u, zg=zg, grad=grad, gnorm=gnorm, normal=normal, shape=shape):
                hv = None
                if grad.requires_grad:  # an affine model's gradient does not depend on z at all
                    (hv,) = torch.autograd.grad(grad, zg, grad_outputs=u.reshape(shape), retain_graph=True,
                                                allow_unused=True)
                    cost["backward_rows"] += len(u)
                hv = torch.zeros_like(u) if hv is None else hv.reshape(len(u), -1)
                return _tangent(hv, normal) / gnorm.clamp_min(_TINY)[:, None]

        # each point's own random stream, from (seed, its index in the data): its result does
        # not depend on the batch size or on which other points are in the run
        # modulo 2**64, the range manual_seed takes, so that every seed check_seed allows works
        generators = [torch.Generator().manual_seed((seed * 1_000_003 + int(i)) % 2**64)
                      for i in index[rows].tolist()]
        start = torch.stack([torch.randn(d, generator=g) for g in generators]).to(x.device, x.dtype)
        start = _tangent(start, normal)
        tri, basis, _ = _lanczos(lambda u: apply(u).detach(), start, normal, m, generators)
        theta, s = torch.linalg.eigh(tri.double())
        order = theta.abs().argsort(dim=1, descending=True)[:, :kk]
        s = s.gather(2, order[:, None, :].expand(-1, m, -1)).to(basis.dtype)
        vectors = torch.einsum("nmd,nmk->nkd", basis, s)
        vectors = vectors / vectors.norm(dim=2, keepdim=True).clamp_min(_TINY)
        # Measured, not taken from T: the curvature along each direction and the residual
        # ‖Sv − κv‖ from one more product per direction. For a linear operator these equal the
        # Ritz value and its residual; finite differences of a ReLU network are only roughly
        # linear, and then the Ritz residual would claim a convergence that is not there.
        image = _apply_each(apply, vectors)
        kappa = (image * vectors).sum(2)
        resort = kappa.abs().argsort(dim=1, descending=True)
        kappa, vectors = kappa.gather(1, resort), vectors.gather(1, resort[:, :, None].expand_as(vectors))
        image = image.gather(1, resort[:, :, None].expand_as(image))
        if bool((kappa != 0).any()):
            zero_hessian = False
        curvature[rows] = kappa
        direction[rows] = vectors.reshape((len(rows), kk) + tuple(x.shape[1:]))
        residual[rows] = (image - kappa[:, :, None] * vectors).norm(dim=2)
        if along is not None:
            along_out[rows] = _along(apply, along, normal)
        point[rows] = z
        gradient_norm[rows] = gnorm
        steps_h[rows] = h
    _check_finite(curvature, residual, gradient_norm, valid)
    if unbracketed:
        warnings.warn(
            f"{unbracketed} boundary points are not between x (the label wins) and x + r (the target "
            "wins) and are left out (valid=False); are the inputs the ones the points were computed from?",
            stacklevel=2,
        )
    if method == "autograd" and chunks and zero_hessian:
        warnings.warn(
            "every Hessian-vector product was zero: the model is piecewise linear (ReLU, max "
            "pooling) and its Hessian vanishes almost everywhere; use method='finite_difference'",
            stacklevel=2,
        )
    return Curvature(
        curvature=curvature,
        direction=direction,
        residual=residual,
        point=point,
        gradient_norm=gradient_norm,
        label=pts.label.to(x.device),
        target=pts.target.to(x.device),
        index=index,
        valid=valid,
        on_boundary=on_boundary,
        step=steps_h,
        along=along_out,
        along_names=along_names,
        method=method,
        seconds=time.perf_counter() - start_time,
        settings={"k": int(k), "method": method, "step": step, "relative_step": relative_step,
                  "lanczos_steps": m, "batch_size": batch_size, "seed": seed,
                  "along": None if along is None else int(along.shape[0])},
        cost=cost,
    )


# ============================================================================== fooling along directions
@dataclass(frozen=True, eq=False)
class CurvatureFooling(Result):
    """How often a step of norm ε from x along tangent directions of the boundary changes the
    prediction: along the most curved principal direction, the least curved of the top k, and
    random tangent directions (Fawzi et al., CVPR 2018: flat along most directions, curved along a
    few, and the curved ones are the vulnerable ones).

    Fields:
        epsilons: (E,) step norms (ℓ2).
        groups: the direction groups, in the order of ``hits``' second axis.
        hits: (n, G, E) the share of a point's directions of each group along which a step of ε,
            either way (x ± ε u, clipped to the bounds), changes the prediction; NaN where the
            curvature point is not valid.
        rate: (G, E) the mean of ``hits`` over the valid points.
        curvature: (n, G) the curvature along each group's direction (for the random group the
            mean of uᵀSu over its directions is not measured: NaN).
        index: (n,) position of each x in the data. valid: (n,) bool. settings: the arguments.
    """

    epsilons: torch.Tensor
    groups: tuple[str, ...]
    hits: torch.Tensor
    rate: torch.Tensor
    curvature: torch.Tensor
    index: torch.Tensor
    valid: torch.Tensor
    settings: dict[str, Any] = field(default_factory=dict)

    def to_frame(self):
        """Tidy rows: group, eps, fooling_rate (the mean over valid points)."""
        import pandas as pd

        g, e = self.rate.shape
        return pd.DataFrame({"group": np.repeat(np.array(self.groups, dtype=object), e),
                             "eps": np.tile(self.epsilons.double().numpy(), g),
                             "fooling_rate": self.rate.double().numpy().reshape(-1)})


FOOLING_GROUPS = ("most curved (κ₁)", "least curved of the top k (κ_k)", "random tangent")


def curvature_fooling(
    clf: Classifier,
    curvature: Curvature,
    inputs,
    epsilons,
    *,
    random: int = 10,
    seed: int = 0,
    batch_size: int = 256,
) -> CurvatureFooling:
    """Fooling rates of steps along curved, less curved and random tangent directions.

    From each input x (whose boundary point z and principal directions ``curvature`` holds), a
    step x ± ε u changes the prediction where the boundary bends towards x along u: for a flat
    boundary at distance ρ, a tangent step never crosses it, and for a sphere of radius R around
    x it crosses exactly when ε > √(R² − ‖x − c‖²). Three groups of unit directions, all tangent
    at z: the principal direction of largest |κ|, the k-th (the least curved of the k computed),
    and ``random`` random tangent directions (uniform on the tangent sphere, seeded per point).

    Args:
        clf: the classifier the curvature was measured on.
        curvature: a :class:`Curvature` from :func:`boundary_curvature`.
        inputs: the data behind ``curvature.index`` (the inputs x).
        epsilons: step norms ε (ℓ2).
        random: random tangent directions per point.
        seed: seeds them (per point, from its index).
        batch_size: points per gradient batch, and the most rows per forward of the steps (the
            steps of several points share a forward).

    Returns:
        :class:`CurvatureFooling`.

    Shape:
        → hits: (n, 3, E), rate: (3, E).
    """
    from .._perturb import check_radii

    clf = as_classifier(clf)
    if not isinstance(curvature, Curvature):
        raise BoundgeoError(f"curvature must be a Curvature from boundary_curvature, got {type(curvature).__name__}")
    eps = check_radii(epsilons, "epsilons")
    random, seed = check_count(random, "random"), check_seed(seed)
    batch_size = check_count(batch_size, "batch_size")
    source = as_source(inputs, device=clf.device)
    n = len(curvature)
    if n and int(curvature.index.max()) >= len(source):
        raise BoundgeoError(f"curvature.index goes up to {int(curvature.index.max())}, but inputs has "
                            f"{len(source)} rows; pass the data the curvature was measured on")
    x_all, _ = source.get(curvature.index.cpu())
    x_all = clf.check_inputs(x_all)
    shape = tuple(x_all.shape[1:])
    if shape != tuple(curvature.point.shape[1:]):
        raise BoundgeoError(f"inputs of shape {tuple(x_all.shape)} do not match the curvature's points "
                            f"{tuple(curvature.point.shape)}")
    d = int(np.prod(shape))
    real = dict(dtype=x_all.dtype, device=x_all.device)
    hits = torch.full((n, len(FOOLING_GROUPS), len(eps)), float("nan"), dtype=torch.float64)
    kappa = torch.full((n, len(FOOLING_GROUPS)), float("nan"), dtype=torch.float64)
    valid = curvature.valid.cpu().clone()
    radii = eps.to(**real).view((1, -1, 1, 1) + (1,) * len(shape))  # (1, E, 1, 1, *S)
    index = curvature.index.cpu()
    # a point's steps are E·2·(2 + random) rows; the points of a chunk share forwards of at most
    # batch_size rows, and a chunk holds at most _STEP_BYTES of steps, so memory stays bounded
    per_point = len(eps) * 2 * (2 + random) * d * x_all.element_size()
    chunk = max(1, min(batch_size, _STEP_BYTES // per_point))
    for rows in [r for r in valid.nonzero().squeeze(1).split(batch_size) if len(r)]:
        x = x_all[rows.to(x_all.device)]
        label = curvature.label[rows].to(x.device)
        target = curvature.target[rows].to(x.device)
        z = curvature.point[rows].to(**real)
        _, grad, _ = _gradient(clf, z, label, target)
        flat = grad.detach().reshape(len(rows), d)
        normal = flat / flat.norm(dim=1, keepdim=True).clamp_min(_TINY)
        principal = curvature.direction[rows].to(**real).reshape(len(rows), curvature.k, d)
        kappa[rows, 0] = curvature.curvature[rows, 0].double().cpu()
        kappa[rows, 1] = curvature.curvature[rows, -1].double().cpu()
        for part in torch.arange(len(rows)).split(chunk):
            # each point's own stream, from (seed, its index), one (random, d) draw as always: its
            # result does not depend on the batch; modulo 2**64, the range manual_seed takes
            draws = torch.empty(len(part), random, d, dtype=torch.float64)
            for j, i in enumerate(index[rows[part]].tolist()):
                generator = torch.Generator().manual_seed((seed * 1_000_003 + i) % 2**64)
                torch.randn(random, d, generator=generator, dtype=torch.float64, out=draws[j])
            on = part.to(x.device)
            tangent = _tangent(draws.to(**real), normal[on, None])
            tangent = tangent / tangent.norm(dim=2, keepdim=True).clamp_min(_TINY)
            directions = torch.cat([principal[on, :1], principal[on, -1:], tangent], dim=1)  # (m, 2 + random, d)
            directions = directions.reshape((len(part), 1, 1, -1) + shape)
            with torch.no_grad():
                ahead = radii * directions
                steps = torch.cat([x[on, None, None, None] + ahead, x[on, None, None, None] - ahead], dim=2)
                pred = torch.cat([clf.forward(clf.clip(step)).argmax(1)
                                  for step in steps.reshape((-1,) + shape).split(batch_size)])
            # (m, E, 2 + random): either way fools
            fooled = (pred.view(len(part), len(eps), 2, -1) != label[on, None, None, None]).any(dim=2).double()
            hits[rows[part]] = torch.stack([fooled[:, :, 0], fooled[:, :, 1], fooled[:, :, 2:].mean(dim=2)], 1).cpu()
    rate = (hits[valid].mean(dim=0) if bool(valid.any())
            else torch.full((len(FOOLING_GROUPS), len(eps)), float("nan"), dtype=torch.float64))
    return CurvatureFooling(epsilons=eps, groups=FOOLING_GROUPS, hits=hits, rate=rate, curvature=kappa,
                            index=curvature.index.cpu(), valid=valid,
                            settings={"random": random, "seed": seed, "batch_size": batch_size})
