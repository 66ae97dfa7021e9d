"""Fooling rates of random vectors inside a subspace against random vectors in the full space.

Moosavi-Dezfooli et al. 2017, Section 4: a random vector of norm ξ drawn inside the span S of
the top principal directions of the boundary normals fools far more images than a random vector
of the same norm drawn in the whole input space (≈38% against ≈10% on ImageNet at ξ = 2000).
For a flat boundary at distance ρ, a direction u uniform on the unit sphere of R^d crosses it at
radius ε with probability P(⟨u, n⟩ ≥ ρ/ε), which :func:`halfspace_fooling_probability` gives in
closed form (Fawzi, Moosavi-Dezfooli & Frossard, NeurIPS 2016).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._checks import check_choice, check_count, check_seed
from .._errors import BoundgeoError
from .._perturb import check_norm, check_radii, fooled, scale_to_norm
from .._results import Result
from ..classifier import Classifier, as_classifier
from ..distributed import map_rows
from ..distributed import world as get_world
from ..io._sources import as_tensors

_ORTHONORMAL_TOL = 1e-4
_STEP_BYTES = 256 * 2**20  # the most bytes of steps adversarial_dimension holds at once


@dataclass(frozen=True, eq=False)
class SubspaceFooling(Result):
    """Fooling rates of random vectors of given radii, inside span(basis) and in the full space.

    Fields:
        radii: (R,) norms of the random vectors.
        subspace_rate, full_rate: (R,) mean fooling rate over draws.
        subspace_rates, full_rates: (R, draws) fooling rate of each draw.
        k: dimension of the subspace; d: of the input space; n: inputs evaluated.
        norm: ``"l2"`` or ``"linf"``; independent: one vector per input (True) or one shared
            by all inputs per draw (False, the paper's setting). settings: the arguments.
    """

    radii: torch.Tensor
    subspace_rate: torch.Tensor
    full_rate: torch.Tensor
    subspace_rates: torch.Tensor
    full_rates: torch.Tensor
    k: int
    d: int
    n: int
    norm: str
    independent: bool
    settings: dict[str, Any] = field(default_factory=dict)

    def ratio(self) -> torch.Tensor:
        """Subspace fooling rate over full-space fooling rate, per radius (inf where full is 0)."""
        full = self.full_rate.double()
        return torch.where(full > 0, self.subspace_rate.double() / full.clamp_min(1e-300),
                           torch.full_like(full, float("inf")))

    def to_frame(self):
        """Tidy rows: radius, space ('subspace' or 'full'), draw, fooling_rate, k, norm."""
        import pandas as pd

        radii = self.radii.double().numpy()
        draws = self.subspace_rates.shape[1]
        frames = []
        for space, rates in (("subspace", self.subspace_rates), ("full", self.full_rates)):
            frames.append(pd.DataFrame({
                "radius": np.repeat(radii, draws),
                "space": space,
                "draw": np.tile(np.arange(draws), len(radii)),
                "fooling_rate": rates.double().numpy().reshape(-1),
                "k": self.k,
                "norm": self.norm,
            }))
        return pd.concat(frames, ignore_index=True)


def _check_basis(basis, d: int) -> torch.Tensor:
    if isinstance(basis, np.ndarray):
        basis = torch.from_numpy(basis)
    if not isinstance(basis, torch.Tensor):
        raise BoundgeoError(f"basis must be a (k, d) tensor or array, got {type(basis).__name__}")
    if basis.dim() < 2 or basis.shape[0] == 0:
        raise BoundgeoError(f"basis must be a non-empty (k, d) matrix of rows, got {tuple(basis.shape)}")
    rows = basis.detach().cpu().reshape(basis.shape[0], -1).double()
    if rows.shape[1] != d:
        raise BoundgeoError(
            f"basis rows have {rows.shape[1]} entries but one input has {d}: shape {tuple(basis.shape)}"
        )
    if not torch.isfinite(rows).all():
        raise BoundgeoError(f"basis of shape {tuple(basis.shape)} contains NaN or Inf")
    if rows.shape[0] > d:
        raise BoundgeoError(f"a basis of R^{d} has at most {d} rows, got {rows.shape[0]}")
    gram = rows @ rows.T
    error = float((gram - torch.eye(len(rows), dtype=gram.dtype)).abs().max())
    if error > _ORTHONORMAL_TOL:
        q, r = torch.linalg.qr(rows.T)
        diag = r.diagonal().abs()
        if float(diag.min()) <= 1e-8 * max(float(diag.max()), 1e-300):
            raise BoundgeoError(
                f"basis of shape {tuple(basis.shape)} is rank-deficient: its rows do not span "
                f"{rows.shape[0]} dimensions"
            )
        warnings.warn(
            f"basis rows are not orthonormal (max |BBᵀ - I| = {error:.2e}); orthonormalised them "
            "with a QR decomposition, which keeps their span",
            stacklevel=3,
        )
        rows = q.T
    return rows.float()


def subspace_fooling(
    clf: Classifier,
    x,
    basis,
    *,
    radii,
    draws: int = 20,
    norm: str = "l2",
    seed: int = 0,
    independent: bool = False,
    batch_size: int = 512,
    progress: bool = False,
) -> SubspaceFooling:
    """Fooling rate of random vectors in span(basis) beside random vectors in the full space.

    For every draw a direction is drawn uniformly on the unit sphere of span(basis) and one on
    the unit sphere of R^d; each is scaled to every radius in ``norm`` (for ℓ∞ the uniform ℓ2
    directions rescaled to ℓ∞ norm ε: on the ℓ∞ sphere, not uniform on it; the same directions
    for all radii, so the curves are smooth in the radius), added to the inputs, clipped to the bounds, and
    counted as fooling where the predicted class changes (the paper's fooling rate, not an
    error against labels). Measure it on inputs that were not used to compute the basis.

    Args:
        clf: the classifier.
        x: inputs (n, *S), or any data form (labels are ignored).
        basis: (k, d) or (k, *S) orthonormal rows, e.g. ``spectrum(...).basis(k)``. Rows that
            are not orthonormal are orthonormalised (QR, same span) with a warning; NaN, a
            wrong size or a rank-deficient basis raise BoundgeoError.
        radii: norms of the random vectors (in ``norm``).
        draws: random directions per radius and space.
        norm: ``"l2"`` or ``"linf"``.
        seed: seeds the directions.
        independent: draw a separate direction for every input (estimates each input's
            probability of being fooled) instead of one per draw for all inputs.
        batch_size: inputs per forward pass.
        progress: a progress bar over draws.

    Returns:
        :class:`SubspaceFooling`.

    Shape:
        x: (n, *S); basis: (k, d) with d = prod(S) → rates: (R,) and (R, draws).
    """
    clf = as_classifier(clf)
    check_norm(norm)
    draws, seed = check_count(draws, "draws"), check_seed(seed)
    batch_size = check_count(batch_size, "batch_size")
    for name, flag in (("independent", independent), ("progress", progress)):
        check_choice(flag, name, (True, False))
    radii_t = check_radii(radii, "radii")
    inputs, _ = as_tensors(x)
    inputs = clf.check_inputs(inputs)
    n, shape = inputs.shape[0], tuple(inputs.shape[1:])
    d = int(np.prod(shape))
    rows = _check_basis(basis, d).to(inputs.device)
    k = rows.shape[0]
    # under a process group each rank checks its chunks of the inputs; the counts are exact sums
    world = get_world()
    world.agree("subspace_fooling", {"n": n, "k": k, "radii": radii_t.tolist(), "draws": draws, "norm": norm,
                                     "seed": seed, "independent": independent, "batch_size": batch_size})
    clean = map_rows(world, n, batch_size, lambda a, b: clf.predict(inputs[a:b], batch_size=batch_size),
                     dtype=torch.long, device=inputs.device)
    # separate streams: the full-space draws must not depend on k, so that the baseline is the
    # same for every subspace compared at one seed
    gen_full = torch.Generator().manual_seed(seed)
    gen_sub = torch.Generator().manual_seed(seed + 1_000_003)
    count = n if independent else 1
    sub_rates = torch.zeros(len(radii_t), draws, dtype=torch.float64)
    full_rates = torch.zeros_like(sub_rates)
    draw_range = range(draws)
    if progress and world.main:
        from tqdm.auto import tqdm

        draw_range = tqdm(draw_range, desc="subspace fooling", unit="draw")
    spaces = (("subspace", sub_rates), ("full", full_rates))
    for j in draw_range:
        z_sub = torch.randn(count, k, generator=gen_sub).to(inputs.device)
        z_full = torch.randn(count, d, generator=gen_full).to(inputs.device)
        directions = {"subspace": scale_to_norm(z_sub @ rows, norm), "full": scale_to_norm(z_full, norm)}

        def hits(a: int, b: int) -> torch.Tensor:  # (b - a, radii, 2): every radius and space of this draw
            return torch.stack([torch.stack([
                fooled(clf, inputs[a:b], clean[a:b],
                       (radius * directions[space][a:b]).reshape((b - a,) + shape) if independent
                       else (radius * directions[space][0]).reshape(shape), batch_size=batch_size)
                for space, _ in spaces], dim=1) for radius in radii_t.tolist()], dim=1)

        hit = map_rows(world, n, batch_size, hits, dtype=torch.bool, device=inputs.device,
                       trailing=(len(radii_t), len(spaces)))
        for s_index, (_, target) in enumerate(spaces):
            target[:, j] = hit[:, :, s_index].double().mean(0).cpu()
    return SubspaceFooling(
        radii=radii_t,
        subspace_rate=sub_rates.mean(1),
        full_rate=full_rates.mean(1),
        subspace_rates=sub_rates,
        full_rates=full_rates,
        k=k,
        d=d,
        n=n,
        norm=norm,
        independent=independent,
        settings={"draws": draws, "seed": seed, "independent": independent},
    )


def halfspace_fooling_probability(margin, radius, d: int):
    """P(⟨u, n⟩ ≥ ρ/ε) for u uniform on the unit sphere of R^d: the chance that a random vector
    of norm ε crosses a flat boundary at distance ρ. The density of t = ⟨u, n⟩ is
    ∝ (1 - t²)^((d-3)/2), so the tail is ½ I_{1-a²}((d-1)/2, ½) for a = ρ/ε ∈ [0, 1].
    """
    from scipy.special import betainc

    d = check_count(d, "d", minimum=2)
    margin, radius = np.asarray(margin, dtype=np.float64), np.asarray(radius, dtype=np.float64)
    if not np.isfinite(margin).all():
        raise BoundgeoError("margin must be finite (a distance ρ ≥ 0, or negative past the boundary)")
    if not (np.isfinite(radius).all() and (radius > 0).all()):
        raise BoundgeoError(f"radius must be finite and > 0 (the norm ε of the random vectors), got {radius}")
    a = margin / radius
    tail = 0.5 * betainc((d - 1) / 2.0, 0.5, np.clip(1.0 - a**2, 0.0, 1.0))
    return np.where(a >= 1.0, 0.0, np.where(a <= 0.0, 1.0 - tail, tail))


# ============================================================================== adversarial dimension
@dataclass(frozen=True, eq=False)
class AdversarialDimension(Result):
    """How many orthogonal directions, each a step of norm ε, change each input's prediction.

    Fields:
        epsilons: (E,) step norms ε (ℓ2).
        ks: (K,) the numbers of orthogonal directions tried (1, 2, 4, … up to ``max_k``).
        counts: (n, E, K) how many of the k directions of the k-th family fool input i at ε.
        dimension: (n, E) the most directions found fooling in one family: the estimate of the
            dimension of the adversarial subspace at x (0: none fools).
        no_gradient: (n,) inputs whose loss gradient is zero (no direction to align with; their
            dimension is 0).
        label: (n,) the clean predictions. d: input dimension. settings: the arguments.
    """

    epsilons: torch.Tensor
    ks: torch.Tensor
    counts: torch.Tensor
    dimension: torch.Tensor
    no_gradient: torch.Tensor
    label: torch.Tensor
    d: int
    settings: dict[str, Any] = field(default_factory=dict)

    def median(self) -> torch.Tensor:
        """(E,) the median dimension over inputs (the lower median), per ε."""
        return self.dimension.double().median(dim=0).values

    def to_frame(self):
        """Tidy rows: index, eps, dimension (one per input and ε)."""
        import pandas as pd

        n, e = self.dimension.shape
        return pd.DataFrame({"index": np.repeat(np.arange(n), e),
                             "eps": np.tile(self.epsilons.double().numpy(), n),
                             "dimension": self.dimension.numpy().reshape(-1)})


def gradient_aligned_directions(gradient, k: int, *, seed: int = 0, index: int = 0) -> torch.Tensor:
    """k orthonormal directions, each at cosine exactly 1/√k with ``gradient``: the Gradient-Aligned
    Adversarial Subspace of Tramèr et al. (2017). u_i = Σ_j M_ij q_j, with q_1 = ĝ, q_2…q_k a
    random orthonormal completion (drawn from ``(seed, index)``), and M the transposed
    orthonormal DCT-II matrix of size k, whose first column is 1/√k.

    Args:
        gradient: (*S) or (d,), not zero.
        k: 1 ≤ k ≤ d.
        seed, index: the completion's draw (:func:`adversarial_dimension` uses the input's index).

    Returns:
        (k, d) orthonormal rows, float64.
    """
    g = torch.as_tensor(gradient).detach().double().cpu().reshape(-1)
    k = check_count(k, "k", maximum=g.numel())
    size = float(g.norm())
    if not size > 0 or not np.isfinite(size):
        raise BoundgeoError("gradient must be finite and not zero: a zero gradient has no direction to align with")
    return _mixing(k) @ _completion(g / size, k, check_seed(seed), index).T


def _mixing(k: int) -> torch.Tensor:
    """The transposed orthonormal DCT-II matrix of size k: orthogonal, first column 1/√k."""
    from scipy.fft import dct

    return torch.from_numpy(np.ascontiguousarray(dct(np.eye(k), norm="ortho", axis=0).T))


def _completion(unit: torch.Tensor, k: int, seed: int, index: int) -> torch.Tensor:
    """(d, k) orthonormal columns: ``unit`` first, then k − 1 random ones orthogonal to it, drawn
    from the generator of (seed, index); the first j columns of a larger k are the same."""
    return _completions(unit[None], k, seed, [index])[0]


def _completions(units: torch.Tensor, k: int, seed: int, indices) -> torch.Tensor:
    """:func:`_completion` of each row of ``units`` (m, d) with its index: (m, d, k), one batched QR."""
    m, d = units.shape
    # stored as rows (m, k, d): each draw fills a contiguous row, and the transposed view is the
    # column-major layout LAPACK takes, so the batched QR sees the same matrices as one at a time
    z = torch.empty(m, k, d, dtype=torch.float64)
    z[:, 0] = units
    for i, index in enumerate(indices):
        # modulo 2**64, the range manual_seed takes (the same seed wherever it fits, no overflow beyond)
        generator = torch.Generator().manual_seed((seed * 1_000_003 + int(index)) % 2**64)
        for j in range(1, k):  # one draw per column, all of one size: the same columns whatever k is
            torch.randn(d, generator=generator, dtype=torch.float64, out=z[i, j])
    q = torch.linalg.qr(z.transpose(1, 2))[0]
    first = q[:, :, 0]
    flip = (first * units).sum(1) < 0  # QR returns ±ĝ first
    q[:, :, 0] = torch.where(flip[:, None], -first, first)
    return q


def adversarial_dimension(
    clf: Classifier,
    x,
    epsilons,
    *,
    max_k: int = 64,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> AdversarialDimension:
    """The dimension of the space of adversarial directions at each input (Tramèr, Papernot,
    Goodfellow, Boneh & McDaniel 2017, "The space of transferable adversarial examples").

    For k = 1, 2, 4, … up to ``max_k``, the Gradient-Aligned Adversarial Subspace construction
    (:func:`gradient_aligned_directions`) gives k orthogonal unit directions, each at cosine 1/√k
    with the gradient of the cross-entropy of the clean prediction. A step of norm ε along one of
    them (clipped to the bounds) fools when it changes the prediction. The dimension at x is the
    most directions of one family that fool: k orthogonal directions that all fool span a
    k-dimensional space of adversarial examples. The published figure is about 25 on MNIST
    (treat it as an order of magnitude). For a flat boundary at distance ρ along the gradient,
    the k-th family fools in full exactly when ε/√k > ρ, so the dimension is the largest k tried
    with k < (ε/ρ)².

    Args:
        clf: the classifier.
        x: inputs (n, *S) within ``clf.bounds``.
        epsilons: step norms ε (ℓ2), one or several.
        max_k: the most orthogonal directions tried (at most d).
        seed: seeds the random completions, per input (a result does not depend on the batch).
        batch_size: inputs per gradient batch, and the most rows per forward of the steps (the
            steps of several inputs share a forward).
        progress: a progress bar over batches.

    Returns:
        :class:`AdversarialDimension` on the CPU.

    Shape:
        x: (n, *S) → dimension: (n, E); counts: (n, E, K).
    """
    import torch.nn.functional as F

    clf = as_classifier(clf)
    eps = check_radii(epsilons, "epsilons")
    seed, batch_size = check_seed(seed), check_count(batch_size, "batch_size")
    check_choice(progress, "progress", (True, False))
    inputs, _ = as_tensors(x)
    inputs = clf.check_inputs(inputs)
    n, shape = inputs.shape[0], tuple(inputs.shape[1:])
    d = int(np.prod(shape))
    max_k = check_count(max_k, "max_k", maximum=d)
    ks = sorted({2**i for i in range(int(np.log2(max_k)) + 1)} | {max_k})
    # every family's mixing matrix stacked, zero-padded to max_k columns: (Σk, max_k), so that
    # one matmul against the completions gives all families' directions of all inputs
    mixing = torch.zeros(sum(ks), max_k, dtype=torch.float64)
    family = torch.repeat_interleave(torch.arange(len(ks)), torch.tensor(ks))  # (Σk,) family of each row
    for k, block in zip(ks, mixing.split(ks)):
        block[:, :k] = _mixing(k)
    family = family.to(inputs.device)
    counts = torch.zeros(n, len(eps), len(ks), dtype=torch.long)
    no_gradient = torch.zeros(n, dtype=torch.bool)
    labels = torch.zeros(n, dtype=torch.long)
    radii = eps.to(inputs.device, inputs.dtype).view((1, -1, 1) + (1,) * len(shape))  # (1, E, 1, *S)
    # the steps of one input are E·Σk rows; a chunk of inputs shares forwards of at most batch_size
    # rows (256 is the fastest per row on this CPU, 64 to 4096 tried), and holds at most
    # _STEP_BYTES of steps, so that memory stays bounded whatever batch_size, E and max_k are
    per_input = len(eps) * sum(ks) * d * inputs.element_size()
    chunk = max(1, min(batch_size, _STEP_BYTES // per_input))
    starts = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="adversarial dimension", unit="batch")
    for start in starts:
        batch = inputs[start : start + batch_size]
        xb = batch.detach().requires_grad_(True)
        logits = clf.forward(xb)
        label = logits.detach().argmax(1)
        loss = F.cross_entropy(logits, label, reduction="sum")
        grad = torch.autograd.grad(loss, xb)[0].reshape(len(batch), d).double().cpu()
        labels[start : start + len(batch)] = label.cpu()
        norms = grad.norm(dim=1)
        has = norms > 0  # False for NaN too
        no_gradient[start : start + len(batch)] = ~has
        kept = has.nonzero().squeeze(1)
        for part in kept.split(chunk):
            if not len(part):
                continue
            completion = _completions(grad[part] / norms[part, None], max_k, seed, (part + start).tolist())
            directions = torch.matmul(mixing, completion.transpose(1, 2))  # (m, Σk, d)
            directions = directions.to(inputs.device, inputs.dtype).reshape((len(part), 1, -1) + shape)
            on = part.to(inputs.device)
            steps = batch[on][:, None, None] + radii * directions  # (m, E, Σk, *S)
            with torch.no_grad():
                pred = torch.cat([clf.forward(clf.clip(rows)).argmax(1)
                                  for rows in steps.reshape((-1,) + shape).split(batch_size)])
            fooled_rows = (pred.view(len(part), len(eps), -1) != label[on][:, None, None]).long()
            found = torch.zeros(len(part), len(eps), len(ks), dtype=torch.long, device=inputs.device)
            counts[part + start] = found.index_add_(2, family, fooled_rows).cpu()
    dimension = counts.max(dim=2).values
    return AdversarialDimension(epsilons=eps, ks=torch.tensor(ks), counts=counts, dimension=dimension,
                                no_gradient=no_gradient, label=labels, d=d,
                                settings={"max_k": max_k, "seed": seed, "batch_size": batch_size})
