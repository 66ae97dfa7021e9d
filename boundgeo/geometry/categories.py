"""The four robustness categories, measured as a profile over the budget ε.

With D the data, B_ε the ball of radius ε and f(x) the predicted class, the categories differ
only in their quantifiers (each strictly less robust than the one before):

1. no small adversarial perturbations:  ∀x∈D ∀Δ∈B_ε  f(x) = f(x+Δ)
2. per-image adversarial perturbations: ∀x∈D ∃Δ∈B_ε  f(x) ≠ f(x+Δ)
3. a universal perturbation:            ∃Δ∈B_ε ∀x∈D  f(x) ≠ f(x+Δ)
4. every perturbation fools:            ∀x∈D ∀Δ, ‖Δ‖=ε  f(x) ≠ f(x+Δ)

"∀x" is read as "for at least a share τ (``threshold``) of the data". Every ∃ is witnessed by an
attack (DeepFool, a universal perturbation, random vectors), so a profile is evidence, not
proof: a category 1 verdict means that no attack tried here found a witness, not that none
exists. The witnesses are pooled so that the three rates nest by construction,
per-image ≥ universal ≥ random: an input fooled by the universal or by a random vector has a
per-image adversarial perturbation, and a random vector that fools many inputs is itself a
universal witness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._checks import check_choice, check_count, check_real, check_seed
from .._errors import BoundgeoError
from .._perturb import check_norm, check_radii, fooled, project_rows, scale_to_norm
from .._results import Result
from ..attacks.boundary import deepfool
from ..attacks.universal import METHODS as UNIVERSAL_METHODS
from ..attacks.universal import universal_perturbation
from ..classifier import Classifier, as_classifier
from ..distributed import gather_pieces, map_rows, single_process
from ..distributed import world as get_world
from ..io._sources import as_tensors

NAMES = {
    1: "no small adversarial perturbations",
    2: "per-image adversarial perturbations",
    3: "universal perturbation",
    4: "every perturbation fools",
}
FORMULAS = {
    1: "∀x∈D ∀Δ∈B_ε: f(x) = f(x+Δ)",
    2: "∀x∈D ∃Δ∈B_ε: f(x) ≠ f(x+Δ)",
    3: "∃Δ∈B_ε ∀x∈D: f(x) ≠ f(x+Δ)",
    4: "∀x∈D ∀Δ with ‖Δ‖=ε: f(x) ≠ f(x+Δ)",
}
EVIDENCE_NOTE = ("evidence from attacks, not a proof: every ∃ is a witness found by DeepFool, a "
                 "universal perturbation or random vectors, and a category can only be as low as "
                 "those attacks are strong")


def category_of(per_image: float, universal: float, random: float, threshold: float) -> int:
    """4 if random ≥ τ, else 3 if universal ≥ τ, else 2 if per-image ≥ τ, else 1."""
    if random >= threshold:
        return 4
    if universal >= threshold:
        return 3
    if per_image >= threshold:
        return 2
    return 1


def transition(epsilons, rates, threshold: float) -> float | None:
    """Smallest ε at which ``rates`` reaches τ, linearly interpolated between grid points.

    Returns the first ε when the first rate already reaches τ (the transition lies at or below
    it) and None when no rate does.
    """
    eps = np.asarray(epsilons, dtype=float)
    r = np.asarray(rates, dtype=float)
    above = np.nonzero(r >= threshold)[0]
    if len(above) == 0:
        return None
    k = int(above[0])
    if k == 0:
        return float(eps[0])
    e0, e1, r0, r1 = eps[k - 1], eps[k], r[k - 1], r[k]
    return float(e0 + (threshold - r0) * (e1 - e0) / (r1 - r0))


# ============================================================================== results
@dataclass(frozen=True, eq=False)
class RobustnessProfile(Result):
    """Three rates and a category per budget ε.

    Fields:
        epsilons: (E,) budgets, ascending.
        per_image_rate, universal_rate, random_rate: (E,) shares of the evaluated inputs;
            per_image ≥ universal ≥ random at every ε.
        category: (E,) 1-4.
        eps2, eps3, eps4: smallest ε at which the per-image, universal and random rates reach
            τ (interpolated; None when not reached on the grid).
        threshold: τ. norm: ``"l2"`` or ``"linf"``. n: inputs evaluated. d: input dimension.
        margin_median: median DeepFool margin of the evaluated inputs.
        settings: the arguments.
    """

    epsilons: torch.Tensor
    per_image_rate: torch.Tensor
    universal_rate: torch.Tensor
    random_rate: torch.Tensor
    category: torch.Tensor
    eps2: float | None
    eps3: float | None
    eps4: float | None
    threshold: float
    norm: str
    n: int
    d: int
    margin_median: float
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio_42(self) -> float | None:
        """ε₄ / ε₂. For flat boundaries it grows as √d (Fawzi et al., NeurIPS 2016), times a factor
        set by τ and by how many boundaries lie near an input: a single hyperplane is crossed by a
        random direction with probability below ½ at every ε, so at τ ≥ ½ it has no ε₄ (None)."""
        return self.eps4 / self.eps2 if self.eps4 is not None and self.eps2 else None

    @property
    def ratio_32(self) -> float | None:
        """ε₃ / ε₂: how much larger a universal perturbation must be than per-image ones."""
        return self.eps3 / self.eps2 if self.eps3 is not None and self.eps2 else None

    def category_at(self, eps: float) -> int:
        """The category at the largest grid budget not above ``eps``."""
        eps = check_real(eps, "eps")
        index = int(np.searchsorted(self.epsilons.numpy(), eps, side="right")) - 1
        if index < 0:
            raise BoundgeoError(f"eps {eps} lies below the smallest budget {float(self.epsilons[0])}")
        return int(self.category[index])

    def to_frame(self):
        """Tidy rows: epsilon, witness ('per-image', 'universal', 'random'), rate, category."""
        import pandas as pd

        frames = []
        for name, rates in (("per-image", self.per_image_rate), ("universal", self.universal_rate),
                            ("random", self.random_rate)):
            frames.append(pd.DataFrame({"epsilon": self.epsilons.double().numpy(), "witness": name,
                                        "rate": rates.double().numpy(),
                                        "category": self.category.numpy(), "norm": self.norm}))
        return pd.concat(frames, ignore_index=True)

    def summary(self) -> str:
        """The profile in sentences, with the caveat that it is evidence."""
        def fmt(value):
            return "not reached" if value is None else f"{value:.4g}"

        lines = [
            f"Robustness profile ({self.norm}, τ = {self.threshold:g}, {self.n} inputs, d = {self.d}):",
            f"  ε₂ (per-image adversarials for ≥ τ of the data) = {fmt(self.eps2)}",
            f"  ε₃ (a universal perturbation fools ≥ τ)          = {fmt(self.eps3)}",
            f"  ε₄ (random perturbations fool ≥ τ)               = {fmt(self.eps4)}",
        ]
        if self.ratio_42 is not None:
            lines.append(f"  ε₄/ε₂ = {self.ratio_42:.3g} (for flat boundaries it grows as √d = {math.sqrt(self.d):.3g})")
        if self.ratio_32 is not None:
            lines.append(f"  ε₃/ε₂ = {self.ratio_32:.3g}")
        lines.append(f"  Note: {EVIDENCE_NOTE}.")
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class Category(Result):
    """The category that holds at one budget ε, with the rates that witness it.

    Fields:
        value: 1-4. name: its name. formula: the quantified statement that holds, with τ.
        eps, threshold, norm: the setting. per_image_rate, universal_rate, random_rate: the
        evidence. note: what the evidence is (attacks, not proofs).
    """

    value: int
    name: str
    formula: str
    eps: float
    threshold: float
    norm: str
    per_image_rate: float
    universal_rate: float
    random_rate: float
    note: str = EVIDENCE_NOTE

    def __str__(self) -> str:
        return (f"category {self.value} ({self.name}) at ε = {self.eps:g}: {self.formula} "
                f"[per-image {self.per_image_rate:.1%}, universal {self.universal_rate:.1%}, "
                f"random {self.random_rate:.1%}; {self.note}]")


def _formula(value: int, threshold: float) -> str:
    share = f"for ≥ {threshold:.0%} of x∈D" if value != 1 else f"for > {1 - threshold:.0%} of x∈D"
    return f"{FORMULAS[value]}   ({share})"


# ============================================================================== PGD witness
@torch.enable_grad()  # gradients are the method, even when the caller is inside no_grad
def pgd_fooled(clf: Classifier, x: torch.Tensor, clean: torch.Tensor, eps: float, *, norm: str = "l2",
               steps: int = 20, step_size: float | None = None, batch_size: int = 256) -> torch.Tensor:
    """Which inputs projected gradient ascent (Madry et al. 2018) fools within B_ε.

    Ascent on the cross-entropy of the clean prediction: ℓ2 normalised-gradient steps or ℓ∞
    sign steps of ``step_size`` (default 2.5 ε / steps), projected onto the ball and the bounds
    after each step. Returns a bool tensor (n,): True where some iterate changed the class.
    """
    clf = as_classifier(clf)
    check_norm(norm)
    eps = check_real(eps, "eps", low=0, low_open=True)
    steps = check_count(steps, "steps")
    batch_size = check_count(batch_size, "batch_size")
    alpha = (check_real(step_size, "step_size", low=0, low_open=True) if step_size is not None
             else 2.5 * eps / steps)
    out = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], clean[start : start + batch_size]
        delta = torch.zeros_like(xb)
        hit = torch.zeros(len(xb), dtype=torch.bool, device=x.device)
        for _ in range(steps):
            delta.requires_grad_(True)
            logits = clf.forward(clf.clip(xb + delta))
            hit |= logits.detach().argmax(1) != yb
            loss = torch.nn.functional.cross_entropy(logits, yb)
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                step = scale_to_norm(grad, "l2") if norm == "l2" else grad.sign()
                delta = project_rows(delta + alpha * step, eps, norm)
                delta = clf.clip(xb + delta) - xb
        with torch.no_grad():
            hit |= clf.forward(clf.clip(xb + delta)).argmax(1) != yb
        out[start : start + batch_size] = hit
    return out


# ============================================================================== measurement
def robustness_profile(
    clf: Classifier,
    data,
    *,
    epsilons,
    norm: str = "l2",
    threshold: float = 0.5,
    seed: int = 0,
    draws: int = 10,
    universal_method: str = "sgd",
    universal_passes: int = 5,
    fit_fraction: float = 0.5,
    batch_size: int = 256,
    refine: bool = False,
    pgd_steps: int = 20,
    progress: bool = False,
) -> RobustnessProfile:
    """Per-image, universal and random fooling rates and the category at every budget ε.

    The data are split (seeded) into a fit part, on which the universal perturbations are
    computed, and an evaluation part, on which all three rates are measured:
    - per-image: DeepFool margins ≤ ε (one pass gives every ε), pooled with every input fooled
      by the universal or a random witness below, at this budget or a smaller one, and, with
      ``refine=True``, by PGD inside B_ε;
    - universal: the held-out fooling rate of a universal perturbation with ξ = ε
      (``universal_method``), or of the best random vector if that fools more, or of the best
      witness at a smaller budget (which lies in B_ε too);
    - random: the fooling rate of ``draws`` random directions, each applied to every evaluated
      input: uniform on the ℓ2 sphere of radius ε, or for ``norm="linf"`` those Gaussian
      directions rescaled to ℓ∞ norm ε (on the ℓ∞ sphere, but not uniform on it).

    Args:
        clf: the classifier.
        data: inputs (labels are ignored), at least 4.
        epsilons: the budgets (positive).
        norm: ``"l2"`` or ``"linf"``.
        threshold: τ, the share of the data that "∀x" stands for.
        seed: seeds the split, the random directions and the universal perturbations.
        draws: random directions per ε.
        universal_method, universal_passes: how the universal witnesses are computed.
        fit_fraction: share of the data used to fit the universal perturbations.
        batch_size: the most inputs in one forward or backward pass, in every stage (DeepFool,
            the witnesses' checks, the universal perturbations' gradients, PGD): lower it to
            bound memory at large inputs; the results do not depend on it beyond float rounding.
        refine: also attack, at every ε, the inputs no witness has fooled yet with PGD
            (``pgd_steps`` steps): DeepFool's linear steps can miss adversarials that a
            gradient-ascent attack inside the ball finds.
        pgd_steps: PGD steps per ε when ``refine``.
        progress: a progress bar over ε.

    Returns:
        :class:`RobustnessProfile`. The categories are evidence from attacks, not proofs.
    """
    clf = as_classifier(clf)
    check_norm(norm)
    threshold = check_real(threshold, "threshold", low=0, high=1, low_open=True)
    fit_fraction = check_real(fit_fraction, "fit_fraction", low=0, high=1, low_open=True, high_open=True)
    seed, draws = check_seed(seed), check_count(draws, "draws")
    universal_method = check_choice(universal_method, "universal_method", UNIVERSAL_METHODS)
    universal_passes = check_count(universal_passes, "universal_passes")
    batch_size, pgd_steps = check_count(batch_size, "batch_size"), check_count(pgd_steps, "pgd_steps")
    for name, flag in (("refine", refine), ("progress", progress)):
        check_choice(flag, name, (True, False))
    eps = check_radii(epsilons, "epsilons").sort().values
    x, _ = as_tensors(data)
    x = clf.check_inputs(x)
    if len(x) < 4:
        raise BoundgeoError(f"a profile needs at least 4 inputs (half to fit, half to evaluate), got {len(x)}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=generator).to(x.device)
    n_fit = max(1, min(len(x) - 1, int(round(fit_fraction * len(x)))))
    x_fit, x_eval = x[order[:n_fit]], x[order[n_fit:]]
    n, shape = x_eval.shape[0], tuple(x_eval.shape[1:])
    d = int(np.prod(shape))
    # Under a process group every per-input computation below (DeepFool, the witnesses' checks,
    # PGD) runs on each rank's chunks of batch_size inputs, the chunks one process uses, and the
    # results are gathered: the rates are one process's exactly.
    world = get_world()
    world.agree("robustness_profile", {"n": len(x), "epsilons": eps.tolist(), "norm": norm, "threshold": threshold,
                                       "seed": seed, "draws": draws, "universal_method": universal_method,
                                       "universal_passes": universal_passes, "fit_fraction": fit_fraction,
                                       "batch_size": batch_size, "refine": refine, "pgd_steps": pgd_steps})

    def margins_and_labels(a: int, b: int) -> torch.Tensor:
        pts = deepfool(clf, x_eval[a:b], norm=norm, batch_size=batch_size)
        margin = torch.where(pts.converged, pts.margin, torch.full_like(pts.margin, float("inf")))
        return torch.stack([margin.double(), pts.label.double()], dim=1)

    found = map_rows(world, n, batch_size, margins_and_labels, dtype=torch.float64, device=x.device, trailing=(2,))
    margins = found[:, 0].to(x.dtype)
    clean = found[:, 1].long()  # DeepFool's first forward is the clean prediction
    directions = scale_to_norm(torch.randn(draws, d, generator=generator).to(x.device), norm).reshape((draws,) + shape)

    def random_hits(e: float) -> torch.Tensor:  # (n, draws): which inputs each random direction at ε fools
        return map_rows(world, n, batch_size,
                        lambda a, b: torch.stack([fooled(clf, x_eval[a:b], clean[a:b], e * directions[j],
                                                         batch_size=batch_size) for j in range(draws)], dim=1),
                        dtype=torch.bool, device=x.device, trailing=(draws,))

    # The universal witnesses, one per ε, are fitted whole (each alone, as one process fits it:
    # split, its gradient sums would be rounded in another order), ε_i on rank i mod N.
    def witness(i: int) -> torch.Tensor:
        with single_process():
            uap = universal_perturbation(clf, x_fit, xi=float(eps[i]), norm=norm, method=universal_method,
                                         max_passes=universal_passes, seed=seed, progress=False,
                                         max_batch=batch_size)
        return uap.perturbation[None]

    witnesses = gather_pieces(world, [1] * len(eps), witness, row_shape=shape, dtype=x.dtype, device=x.device)
    per_image, universal, random = [], [], []
    # B_ε' ⊂ B_ε for ε' ≤ ε: a witness found at a smaller budget stands at every larger one
    hit_so_far = torch.zeros(n, dtype=torch.bool, device=x.device)
    universal_so_far = 0.0
    steps = list(enumerate(eps.tolist()))
    if progress and world.main:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="robustness profile", unit="ε")
    for i, e in steps:
        hit_any = margins <= e
        hits_random = random_hits(e)
        random_rate = float(hits_random.double().mean())
        uap_hits = map_rows(world, n, batch_size,
                            lambda a, b: fooled(clf, x_eval[a:b], clean[a:b], witnesses[i][0], batch_size=batch_size),
                            dtype=torch.bool, device=x.device)
        best_random = hits_random.double().mean(0).max()
        universal_so_far = max(universal_so_far, float(uap_hits.double().mean()), float(best_random))
        hit_so_far = hit_so_far | hit_any | uap_hits | hits_random.any(1)
        if refine and not hit_so_far.all():
            rest = (~hit_so_far).nonzero().squeeze(1)
            hit_so_far[rest] = map_rows(
                world, len(rest), batch_size,
                lambda a, b: pgd_fooled(clf, x_eval[rest[a:b]], clean[rest[a:b]], e, norm=norm, steps=pgd_steps,
                                        batch_size=batch_size),
                dtype=torch.bool, device=x.device)
        per_image.append(float(hit_so_far.double().mean()))
        universal.append(universal_so_far)
        random.append(random_rate)

    per_image_t = torch.tensor(per_image, dtype=torch.float64)
    universal_t = torch.tensor(universal, dtype=torch.float64)
    random_t = torch.tensor(random, dtype=torch.float64)
    categories = torch.tensor([category_of(p, u, r, threshold)
                               for p, u, r in zip(per_image, universal, random)])
    finite = margins[torch.isfinite(margins)]
    return RobustnessProfile(
        epsilons=eps,
        per_image_rate=per_image_t,
        universal_rate=universal_t,
        random_rate=random_t,
        category=categories,
        eps2=transition(eps, per_image, threshold),
        eps3=transition(eps, universal, threshold),
        eps4=transition(eps, random, threshold),
        threshold=float(threshold),
        norm=norm,
        n=n,
        d=d,
        margin_median=float(finite.median()) if len(finite) else float("inf"),
        settings={"seed": seed, "draws": draws, "universal_method": universal_method, "refine": refine,
                  "pgd_steps": pgd_steps,
                  "universal_passes": universal_passes, "fit_fraction": fit_fraction, "n_fit": n_fit},
    )


def categorize(
    clf: Classifier,
    data,
    *,
    eps: float,
    norm: str = "l2",
    threshold: float = 0.5,
    seed: int = 0,
    **profile_kwargs: Any,
) -> Category:
    """The robustness category at one budget ε, with its evidence and the statement that holds.

    Example:
        >>> import boundgeo as bg
        >>> from boundgeo import toys
        >>> toy = toys.wide_margins(dim=2)
        >>> bg.categorize(toy.classifier, toy.x, eps=toy.eps).value
        1
    """
    clf = as_classifier(clf)
    eps = check_real(eps, "eps", low=0, low_open=True)
    prof = robustness_profile(clf, data, epsilons=[eps], norm=norm, threshold=threshold, seed=seed,
                              **profile_kwargs)
    value = int(prof.category[0])
    return Category(
        value=value,
        name=NAMES[value],
        formula=_formula(value, threshold),
        eps=float(eps),
        threshold=float(threshold),
        norm=norm,
        per_image_rate=float(prof.per_image_rate[0]),
        universal_rate=float(prof.universal_rate[0]),
        random_rate=float(prof.random_rate[0]),
    )
