"""Margins inside subspaces: how far the decision boundary is along chosen directions only.

Ortiz-Jiménez, Modas, Moosavi-Dezfooli & Frossard, "Hold me tight! Influence of discriminative
features on deep network boundaries" (NeurIPS 2020): DeepFool whose gradients are projected onto
a subspace S at every step finds the smallest perturbation inside S that changes the prediction,
the margin along S. Measured in bands of the 2-D DCT, from low to high frequency, it shows
where in frequency a network is sensitive (small margins) and where it is invariant (large
margins, or none found): on MNIST the margins grow steeply towards high frequencies.

>>> import torch, boundgeo as bg
>>> band = bg.dct_basis((1, 8, 8), band=(0, 2))     # the 2 x 2 lowest frequencies
>>> band.shape, torch.allclose(band.flatten(1) @ band.flatten(1).T, torch.eye(4), atol=1e-6)
(torch.Size([4, 1, 8, 8]), True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._checks import check_choice, check_count
from .._errors import BoundgeoError
from .._results import Result
from ..attacks.boundary import _check_subspace, deepfool
from ..classifier import Classifier, as_classifier

DCT_KINDS = ("block", "ring")


# ============================================================================== DCT bases
def dct_basis(shape: Sequence[int], band: tuple[int, int], *, kind: str = "block",
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Orthonormal rows spanning a band of the 2-D DCT-II over the last two axes of ``shape``.

    ``kind="block"`` is the subspace of "Hold me tight!": the frequencies (u, v) with
    lo ≤ u < hi and lo ≤ v < hi, a square block on the diagonal of the DCT spectrum (low
    frequencies at lo = 0). ``kind="ring"`` takes lo ≤ max(u, v) < hi instead: consecutive
    rings [0, w), [w, 2w), … partition the whole space, so margins in them account for every
    direction. Each channel (the leading axes of ``shape``) gets the same frequencies, so a band
    of an RGB image is 3x the size of one of a grey image.

    The rows are scipy's orthonormal inverse DCT (``scipy.fft.idctn(norm="ortho")``) of one-hot
    spectra: orthonormal to rounding.

    Args:
        shape: the shape of one input, (H, W) or (C, H, W) (any leading axes).
        band: (lo, hi), 0 ≤ lo < hi, clipped to the spectrum (hi may exceed H and W).
        kind: ``"block"`` or ``"ring"``.
        dtype: of the rows.

    Returns:
        (k, *shape) orthonormal rows, ordered by frequency then channel.

    Shape:
        → (k, *shape), k = channels x the number of frequencies in the band.
    """
    from scipy.fft import idctn

    shape = _as_shape(shape)
    kind = check_choice(kind, "kind", DCT_KINDS)
    lo, hi = _as_band(band)
    height, width = shape[-2:]
    u, v = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    inside = ((u >= lo) & (u < hi) & (v >= lo) & (v < hi)) if kind == "block" else \
        ((np.maximum(u, v) >= lo) & (np.maximum(u, v) < hi))
    freqs = np.argwhere(inside)
    if len(freqs) == 0:
        raise BoundgeoError(f"band {band!r} ({kind}) holds no frequency of a {height}x{width} DCT spectrum")
    channels = int(np.prod(shape[:-2]))
    spectra = np.zeros((len(freqs), height, width))
    spectra[np.arange(len(freqs)), freqs[:, 0], freqs[:, 1]] = 1.0
    images = torch.from_numpy(idctn(spectra, axes=(1, 2), norm="ortho").reshape(len(freqs), height * width))
    # one row per (frequency, channel): the frequency's image in that channel, zeros in the others
    # (built in ``dtype``: at 224x224x3 a band of 144 frequencies is 432 rows of 150,528 values)
    rows = torch.zeros((len(freqs), channels, channels, height * width), dtype=dtype)
    for c in range(channels):
        rows[:, c, c] = images.to(dtype)
    return rows.reshape((len(freqs) * channels,) + shape)


def dct_bands(shape: Sequence[int], width: int, *, count: int | None = None, kind: str = "block",
              dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """DCT bands of ``width`` frequencies from low to high, ready for :func:`subspace_margins`:
    name ``"lo-hi"`` → :func:`dct_basis` rows. By default they are consecutive: with
    ``kind="ring"`` they partition the space; with ``"block"`` (the paper's) they are the diagonal
    blocks. With ``count``, that many bands start evenly across the spectrum (at i·side/count),
    which samples it with narrower bands where full ones would not fit in memory."""
    shape = _as_shape(shape)
    width = check_count(width, "width")
    kind = check_choice(kind, "kind", ("block", "ring"))
    # a diagonal block needs both frequencies: on an H x W spectrum blocks end at min(H, W),
    # rings (max(u, v)) at max(H, W)
    side = min(shape[-2:]) if kind == "block" else max(shape[-2:])
    if count is None:
        starts = range(0, side, width)
    else:
        count = check_count(count, "count", maximum=side)
        starts = sorted({round(i * side / count) for i in range(count)})
    return {f"{lo}-{min(lo + width, side)}": dct_basis(shape, (lo, min(lo + width, side)), kind=kind, dtype=dtype)
            for lo in starts}


def _as_shape(shape) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError) as exc:
        raise BoundgeoError(f"shape must be a sequence of sizes such as (1, 28, 28), got {shape!r}") from exc
    if len(shape) < 2 or min(shape) < 1:
        raise BoundgeoError(f"shape must have at least two positive axes (H, W), got {shape!r}")
    return shape


def _as_band(band) -> tuple[int, int]:
    try:
        lo, hi = (int(b) for b in band)
        exact = all(float(b) == int(b) for b in band)
    except (TypeError, ValueError) as exc:
        raise BoundgeoError(f"band must be (lo, hi) frequencies, got {band!r}") from exc
    if not exact or not 0 <= lo < hi:
        raise BoundgeoError(f"band must be whole frequencies (lo, hi) with 0 <= lo < hi, got {band!r}")
    return lo, hi


# ============================================================================== margins
@dataclass(frozen=True, eq=False)
class SubspaceMargins(Result):
    """The smallest ℓ2 perturbation inside each subspace that changes the prediction, per input.

    Fields:
        margin: (n, s) ‖r‖₂ of the perturbation found inside subspace j for input i; inf where
            DeepFool did not cross within ``max_iter`` steps (the margin is larger, or none
            exists inside the subspace).
        converged: (n, s) whether it crossed.
        subspaces: the s names, in the order given. dims: (s,) the dimension of each subspace.
        label: (n,) the predicted class. d: the input dimension.
        settings: the DeepFool settings.
    """

    margin: torch.Tensor
    converged: torch.Tensor
    subspaces: tuple[str, ...]
    dims: torch.Tensor
    label: torch.Tensor
    d: int
    settings: dict[str, Any] = field(default_factory=dict)

    def median(self) -> dict[str, float]:
        """Median margin per subspace (inf when more than half found none)."""
        return {name: float(self.margin[:, j].double().median()) for j, name in enumerate(self.subspaces)}

    def found(self) -> dict[str, float]:
        """Share of inputs whose margin was found, per subspace."""
        return {name: float(self.converged[:, j].double().mean()) for j, name in enumerate(self.subspaces)}

    def summary_frame(self):
        """One row per subspace: dim, found share, margin quartiles (inf where not found)."""
        import pandas as pd

        rows = []
        quartiles = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
        for j, name in enumerate(self.subspaces):
            # "lower": an observed margin, inf included, never an interpolation with inf
            q = torch.quantile(self.margin[:, j].double(), quartiles, interpolation="lower")
            rows.append({"subspace": name, "dim": int(self.dims[j]), "found": float(self.converged[:, j].double().mean()),
                         "q25": float(q[0]), "median": float(q[1]), "q75": float(q[2])})
        return pd.DataFrame(rows)

    def to_frame(self):
        """Tidy rows: index, subspace, dim, margin, converged (one per input and subspace)."""
        import pandas as pd

        n, s = self.margin.shape
        return pd.DataFrame({
            "index": np.repeat(np.arange(n), s),
            "subspace": np.tile(np.array(self.subspaces, dtype=object), n),
            "dim": np.tile(self.dims.numpy(), n),
            "margin": self.margin.double().cpu().numpy().reshape(-1),
            "converged": self.converged.cpu().numpy().reshape(-1),
        })


def subspace_margins(
    clf: Classifier,
    x,
    bases: Mapping[str, Any],
    *,
    overshoot: float = 0.02,
    max_iter: int = 100,
    candidates: int | None = 10,
    batch_size: int = 256,
    nearest: int | None = 3,
    progress: bool = False,
) -> SubspaceMargins:
    """Margins along subspaces: ℓ2 DeepFool with its gradients projected onto each subspace.

    Ortiz-Jiménez et al., NeurIPS 2020: at every step the candidate gradients w_k are replaced
    by their projections P_S w_k = Bᵀ B w_k onto span(B), so every step, and the perturbation
    found, lies inside S; its norm is the margin along S. For an affine model f the margin along
    S is |f_k − f_l| / ‖P_S (w_k − w_l)‖, reached in one step. The iterate is not clipped to
    ``clf.bounds``: clipping would leave the subspace, and the margin measures the function's
    geometry, as in the paper (an image x + r may leave the valid range).

    Args:
        clf: the classifier.
        x: inputs (n, *S) within ``clf.bounds``.
        bases: name → orthonormal rows (k, *S) or (k, d) spanning each subspace (e.g. from
            :func:`dct_bands`). Rows are checked to be orthonormal; they are held on the model's
            device (k x d values each).
        overshoot, candidates, batch_size, nearest: DeepFool's settings (:func:`~boundgeo.deepfool`;
            ``nearest`` ranks the candidates by their distance along the subspace).
        max_iter: steps before an input is reported as not found (``converged`` False, margin
            inf). Along subspaces the boundary is farther and steps are less aligned with it
            than in the full space, so the default is twice DeepFool's.
        progress: a progress bar over subspaces.

    Returns:
        :class:`SubspaceMargins` on the CPU.

    Shape:
        x: (n, *S), bases: name → (k, *S) → margin, converged: (n, len(bases)).
    """
    clf = as_classifier(clf)
    check_choice(progress, "progress", (True, False))
    inputs = clf.check_inputs(x)
    shape = tuple(inputs.shape[1:])
    d = int(np.prod(shape))
    if not isinstance(bases, Mapping) or not bases:
        raise BoundgeoError("bases must be a non-empty mapping of name → orthonormal rows (k, *input_shape)")
    checked = {str(name): _check_subspace(rows, inputs, name=f"bases[{name!r}]") for name, rows in bases.items()}
    margins, converged, dims = [], [], []
    items = checked.items()
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, desc="subspace margins", unit="subspace")
    label = None
    for name, rows in items:
        pts = deepfool(clf, inputs, norm="l2", overshoot=overshoot, max_iter=max_iter, candidates=candidates,
                       batch_size=batch_size, clip=False, nearest=nearest, subspace=rows)
        margin = torch.where(pts.converged, pts.margin, torch.full_like(pts.margin, float("inf")))
        if not bool((torch.isfinite(margin) | ~pts.converged).all()):
            raise BoundgeoError(f"subspace {name!r}: a converged margin is not finite; this is a bug, please report it")
        margins.append(margin.detach().cpu())
        converged.append(pts.converged.cpu())
        dims.append(rows.shape[0])
        label = pts.label.cpu()
    return SubspaceMargins(
        margin=torch.stack(margins, dim=1),
        converged=torch.stack(converged, dim=1),
        subspaces=tuple(checked),
        dims=torch.tensor(dims),
        label=label,
        d=d,
        settings={"overshoot": overshoot, "max_iter": max_iter, "candidates": candidates, "batch_size": batch_size,
                  "nearest": nearest},
    )
