"""Universal adversarial perturbations: one vector v that changes the prediction of most inputs.

Algorithm 1 of Moosavi-Dezfooli, Fawzi, Fawzi & Frossard (CVPR 2017, arXiv 1610.08401): starting
from v = 0, go through the shuffled data; for every x_i whose prediction v does not change yet,
add the minimal (DeepFool, ℓ2) perturbation Δv_i that sends x_i + v across the boundary and
project back onto the ball, v ← P_{p,ξ}(v + Δv_i); stop once the fooling rate on the data reaches
1 − δ (or after ``max_passes``: the authors' code loops until then, which may be forever).

Two faster variants share the stopping rule:
- ``"batched"``: DeepFool steps for a mini-batch of unfooled inputs at once, all computed at the
  same v; v moves along their mean direction by the median step length and is projected;
- ``"sgd"`` (Shafahi et al., "Universal adversarial training", AAAI 2020): mini-batch ascent on
  the cross-entropy of the clean prediction clipped at β, with a projection after every step.

The fooling rate is the paper's: the share of inputs whose predicted class changes once v is
added and the result clipped to the bounds, not an error rate against labels.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._checks import check_choice, check_count, check_real, check_seed
from .._errors import BoundgeoError
from .._perturb import (best_other, check_norm, fooled, perturbed_predictions, project_rows, row_sizes, scale_to_norm,
                        sent_to)
from .._results import Result
from ..classifier import Classifier, as_classifier
from ..distributed import (
    World,
    chunks,
    gather_pieces,
    map_rows,
    sample_digest,
    single_process,
)
from ..distributed import world as get_world
from ..io._sources import as_positions, as_tensors
from .boundary import BoundaryPoints, _model_config, _model_fingerprint, deepfool
from .singular import PowerIteration, layer_function, signed_in_ball, target_margin

METHODS = ("deepfool", "batched", "sgd", "singular", "spectral")
LOSSES = ("ce", "margin", "focal_margin")  # the losses of method="sgd"
SGD_LOSS = "focal_margin"  # its default, chosen against the published update in bench_uap_methods
# γ of loss="focal_margin": each input's margin weighted by its closeness to success to this power
# (bench_uap_methods: 0.3 kept the margin's gains at large budgets and lost none at small ones)
FOCUS = 0.3
TARGETED = ("sgd", "singular")  # the methods that take target=


# ============================================================================== basics
def project(v: torch.Tensor, xi: float, norm: str) -> torch.Tensor:
    """P_{p,ξ}: the nearest point of the ℓp ball of radius ξ (paper, Eq. 2's constraint).

    ℓ2: v · min(1, ξ/‖v‖₂); ℓ∞: clip(v, −ξ, ξ). Exact, idempotent, and the identity inside.
    """
    check_norm(norm)
    xi = check_real(xi, "xi", low=0, low_open=True)
    return project_rows(v[None], xi, norm)[0]


def _norm_of(v: torch.Tensor, norm: str) -> float:
    return float(row_sizes(v.reshape(1, -1), norm)[0])


def fooling_rate(clf: Classifier, x, v, *, batch_size: int = 512) -> float:
    """Share of inputs whose predicted class changes once ``v`` is added (then clipped to bounds).

    Args:
        clf: the classifier (a bare ``nn.Module`` is wrapped with a warning).
        x: inputs (n, *S) or any data form (labels are ignored).
        v: one perturbation shared by all inputs, of shape S (or a
            :class:`UniversalPerturbation`), or one perturbation per input, of shape (n, *S),
            for example ``deepfool(clf, x).perturbation``; row i is added to input i.
        batch_size: inputs per forward pass.

    Shape:
        x: (n, *S); v: (*S) or (n, *S) → a float in [0, 1].

    Example:
        >>> import torch, boundgeo as bg
        >>> clf = bg.Classifier(torch.nn.Linear(2, 2).eval(), bounds=(-9, 9))
        >>> bg.fooling_rate(clf, torch.zeros(4, 2), torch.zeros(2))
        0.0
    """
    clf = as_classifier(clf)
    batch_size = check_count(batch_size, "batch_size")
    inputs, _ = as_tensors(x)
    inputs = clf.check_inputs(inputs)
    v = _as_perturbation(v, inputs)
    world = get_world()
    world.agree("fooling_rate", {"n": inputs.shape[0], "batch_size": batch_size})
    clean = _predict(clf, inputs, batch_size, world)
    return _fooled_count(clf, inputs, clean, v, batch_size, world)[0] / inputs.shape[0]


def _predict(clf: Classifier, x: torch.Tensor, batch_size: int, world: World) -> torch.Tensor:
    """Predicted classes of ``x``, every rank predicting its chunks (one process: all)."""
    return map_rows(world, x.shape[0], batch_size, lambda a, b: clf.predict(x[a:b], batch_size=batch_size),
                    dtype=torch.long, device=x.device)


def _fooled_mask(clf: Classifier, x: torch.Tensor, clean: torch.Tensor, v: torch.Tensor, batch_size: int,
                 world: World) -> torch.Tensor:
    """Which inputs ``v`` fools, each rank checking its chunks: the same mask on every rank."""
    return map_rows(world, x.shape[0], batch_size,
                    lambda a, b: fooled(clf, x[a:b], clean[a:b], v, batch_size=batch_size),
                    dtype=torch.bool, device=x.device)


def _fooled_count(clf: Classifier, x: torch.Tensor, clean: torch.Tensor, v: torch.Tensor, batch_size: int,
                  world: World, *, also: int = 0, target: int | None = None) -> tuple[int, int, int]:
    """From one forward pass per input, each rank counting its chunks: how many inputs ``v``
    fools, how many it sends to ``target`` of those not predicted as it without v (0 without a
    target), and the sum of ``also`` over the ranks (a count kept per rank). Exact integer sums,
    in one collective."""
    per_input = v.dim() == x.dim()

    def mine() -> torch.Tensor:
        counts = torch.tensor([0, 0, also], dtype=torch.long, device=x.device)
        for a, b in chunks(x.shape[0], batch_size, world):
            pred = perturbed_predictions(clf, x[a:b], v[a:b] if per_input else v, batch_size=batch_size)
            counts[0] += (pred != clean[a:b]).sum()
            if target is not None:
                counts[1] += sent_to(pred, clean[a:b], target).sum()
        return counts

    changed, sent, total = world.sum_of(mine, shape=(3,), dtype=torch.long, device=x.device).tolist()
    return changed, sent, total


def _as_perturbation(v, inputs: torch.Tensor, name: str = "perturbation") -> torch.Tensor:
    """``v`` (a tensor, array or :class:`UniversalPerturbation`) checked against the inputs (n, *S):
    of shape S (one for all inputs) or (n, *S) (one per input), finite, on their device and dtype."""
    if isinstance(v, UniversalPerturbation):
        v = v.perturbation
    try:
        v = torch.as_tensor(v)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise BoundgeoError(f"{name} must be a tensor or array, got {type(v).__name__}") from exc
    if v.is_complex():  # .to(float) would drop the imaginary part with only a warning
        raise BoundgeoError(f"{name} must be real, got dtype {v.dtype}")
    v = v.to(inputs.device, inputs.dtype)
    shared, per_input = tuple(inputs.shape[1:]), tuple(inputs.shape)
    if tuple(v.shape) not in (shared, per_input):
        raise BoundgeoError(
            f"{name} of shape {tuple(v.shape)} fits inputs of shape {per_input} neither as one "
            f"perturbation for all of them, shape {shared}, nor as one per input, shape {per_input}"
        )
    if not torch.isfinite(v).all():
        raise BoundgeoError(f"{name} of shape {tuple(v.shape)} contains NaN or Inf")
    return v


# ============================================================================== result
@dataclass(frozen=True, eq=False)
class UniversalPerturbation(Result):
    """A universal perturbation and how it was found.

    Fields:
        perturbation: (*S) the vector v, with ‖v‖_p ≤ ξ.
        xi, norm: the ball it lives in (ξ and p of the paper).
        method: ``"deepfool"`` (Algorithm 1), ``"batched"``, ``"sgd"``, ``"singular"`` or ``"spectral"``.
        fooling_rate: on the data it was fitted on. eval_fooling_rate: on ``eval_data`` or None.
        history: one row per pass: pass, fooling_rate (targeted: target_rate, the share the
            fit and its stopping rule use), norm, seconds, gradient_evaluations (rows of
            vector-Jacobian products), updates, score. With ``score="running"`` the rate is the
            running score of the pass, and ``exact_fooling_rate`` (``exact_target_rate``) the
            counted rate of the v the pass ended with, where it was counted.
        seconds: wall time of the fit. passes: passes made. reached: whether 1 − δ was reached.
        settings: the arguments.
        target: the class a targeted perturbation sends inputs to (None: untargeted). Then
            target_rate and eval_target_rate are the shares of the fit and ``eval_data`` inputs
            not predicted as ``target`` without v that v sends to it; fooling_rate and
            eval_fooling_rate still count every changed prediction.
    """

    perturbation: torch.Tensor
    xi: float
    norm: str
    method: str
    fooling_rate: float
    eval_fooling_rate: float | None
    history: list[dict[str, Any]]
    seconds: float
    passes: int
    reached: bool
    settings: dict[str, Any] = field(default_factory=dict)
    target: int | None = None
    target_rate: float | None = None
    eval_target_rate: float | None = None

    def to_frame(self):
        """The history: one row per pass."""
        import pandas as pd

        frame = pd.DataFrame(self.history)
        frame.insert(0, "method", self.method)
        return frame

    def held_out_target_text(self) -> str | None:
        """What a targeted v does to the held-out inputs, as a phrase: the share of those not
        predicted as the target that v sends there, or, where every held-out input is predicted
        as the target already (``eval_target_rate`` is NaN: the share is undefined), that fact.
        None for an untargeted v or one fitted without ``eval_data``."""
        rate = self.eval_target_rate
        if self.target is None or rate is None:
            return None
        if not math.isfinite(rate):
            return f"every held-out input is predicted as {self.target} already"
        return f"it sends {rate:.1%} of the held-out inputs not predicted as {self.target} to {self.target}"


# ============================================================================== methods
def _check(settings: dict[str, Any]) -> dict[str, Any]:
    """Every setting of :func:`universal_perturbation`, validated and in its canonical type."""
    out = dict(settings)
    out["norm"] = check_norm(settings["norm"])
    out["method"] = check_choice(settings["method"], "method", METHODS)
    out["xi"] = check_real(settings["xi"], "xi", low=0, low_open=True)
    out["delta"] = check_real(settings["delta"], "delta", low=0, high=1, low_open=True, high_open=True)
    out["overshoot"] = check_real(settings["overshoot"], "overshoot", low=0)
    out["loss_clip"] = check_real(settings["loss_clip"], "loss_clip", low=0, low_open=True)
    if settings["step_size"] is not None:
        out["step_size"] = check_real(settings["step_size"], "step_size", low=0, low_open=True)
    out["momentum"] = check_real(settings.get("momentum", 0.0), "momentum", low=0, high=1, high_open=True)
    out["step_decay"] = check_real(settings.get("step_decay", 0.8), "step_decay", low=0, high=1, low_open=True)
    if settings["batch_size"] is None:  # the published SGD-UAP's mini-batch for "sgd"
        out["batch_size"] = 32 if out["method"] == "sgd" else 64
    for name in ("max_passes", "batch_size", "max_iter"):
        out[name] = check_count(out[name], name)
    if settings["max_batch"] is not None:
        out["max_batch"] = check_count(settings["max_batch"], "max_batch")
    if settings["candidates"] is not None:
        out["candidates"] = check_count(settings["candidates"], "candidates", minimum=2)
    out["seed"] = check_seed(settings["seed"])
    if settings.get("p") is not None:  # p in (1, ∞]: ψ_p' needs the dual exponent p/(p − 1)
        infinite = isinstance(settings["p"], (float, np.floating)) and settings["p"] == math.inf
        out["p"] = math.inf if infinite else check_real(settings["p"], "p", low=1, low_open=True)
    if settings.get("q") is not None:
        out["q"] = check_real(settings["q"], "q", low=1)
    out["components"] = check_count(settings.get("components", 10), "components")
    out["score"] = check_choice(settings.get("score", "running"), "score", ("running", "exact"))
    loss = settings.get("loss")
    if loss is not None and out["method"] != "sgd":
        raise BoundgeoError(f"loss={loss!r} is a setting of method='sgd', not of {out['method']!r}")
    out["loss"] = check_choice(SGD_LOSS if loss is None else loss, "loss", LOSSES)
    layer = settings.get("layer")
    if layer is not None and not isinstance(layer, str):
        raise BoundgeoError(f"layer must be a module name (str) or None, got {type(layer).__name__}")
    if settings.get("target") is not None:
        out["target"] = check_count(settings["target"], "target", minimum=0)
        if out["method"] not in TARGETED:
            raise BoundgeoError(f"target= is implemented for method='sgd' and 'singular', not {out['method']!r}")
        if out["method"] == "singular" and layer is not None:
            raise BoundgeoError(f"target= with method='singular' takes the Jacobian of the target's logit margin, "
                                f"so layer must be None (the logits), got {layer!r}")
    for name in ("progress", "keep_best"):
        check_choice(settings[name], name, (True, False))
    return out


def _check_ball(v: torch.Tensor, xi: float, norm: str, method: str, when: str) -> float:
    """‖v‖ after a pass, checked: finite and inside the ball (to float rounding). A NaN or an
    escaped v would otherwise be reported with a plausible fooling rate."""
    size = _norm_of(v, norm)
    if not bool(torch.isfinite(v).all()) or not size <= xi * (1 + 1e-6):
        raise BoundgeoError(
            f"universal_perturbation(method={method!r}, norm={norm!r}, xi={xi:g}) produced a "
            f"perturbation with {norm} norm {size!r} {when}: not finite or outside the ball "
            f"‖v‖ ≤ xi; this is a bug, please report it with the settings"
        )
    return size


def _check_orders(orders, n: int, max_passes: int) -> list[torch.Tensor]:
    given = [as_positions(order, f"orders[{p}]") for p, order in enumerate(orders)]
    if len(given) < max_passes:
        raise BoundgeoError(f"orders holds {len(given)} passes, fewer than max_passes={max_passes}")
    expected = torch.arange(n)
    for p, order in enumerate(given[:max_passes]):
        if order.dtype == torch.bool or len(order) != n or not torch.equal(order.sort().values, expected):
            raise BoundgeoError(f"orders[{p}] is not a permutation of 0..{n - 1}")
    return given


class _Counter:
    def __init__(self) -> None:
        self.gradients = 0
        self.updates = 0
        self.hits = 0  # "sgd": inputs its forward passes found fooled (sent to the target), this rank


def _deepfool_step(clf, points, df_kwargs, counter) -> BoundaryPoints:
    pts = deepfool(clf, points, norm="l2", **df_kwargs)
    counter.gradients += pts.cost.get("backward_rows", 0)
    return pts


def _deepfool_steps(clf, points, df_kwargs, counter, piece, world: World) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepFool's steps and whether each converged, for ``points`` in pieces (one piece per rank
    at least, of at most ``piece`` inputs), piece i on rank i mod N, gathered on every rank in
    one collective. ``counter`` counts this rank's gradient rows only."""
    pieces = _pieces(torch.arange(points.shape[0], device=points.device), piece, world)
    width = points[0].numel()

    def compute(i: int) -> torch.Tensor:  # the step's entries, then 1 where it converged
        pts = _deepfool_step(clf, points[pieces[i]], df_kwargs, counter)
        return torch.cat([pts.perturbation.reshape(len(pts), width),
                          pts.converged.to(points.dtype)[:, None]], dim=1)

    packed = torch.cat(gather_pieces(world, [len(part) for part in pieces], compute, row_shape=(width + 1,),
                                     dtype=points.dtype, device=points.device))
    return packed[:, :width].reshape(points.shape), packed[:, width].bool()


def _pieces(idx: torch.Tensor, chunk: int | None, world: World) -> list[torch.Tensor]:
    """A mini-batch's pieces: at least one per rank, of at most ``chunk`` (``max_batch``) inputs;
    one process uses the mini-batch whole when ``chunk`` is None. When ``chunk`` is at most the
    mini-batch divided by the number of ranks, these are the pieces one process uses with the
    same ``max_batch``, and the arithmetic is repeated exactly."""
    size = -(-len(idx) // world.size)
    return list(idx.split(min(size, chunk) if chunk is not None else size))


def _pass_algorithm1(clf, x, clean, v, order, xi, norm, df_kwargs, counter, most: int = 256) -> torch.Tensor:
    """One pass of Algorithm 1, one input at a time.

    Predictions are checked lazily in windows that grow while inputs are already fooled and
    shrink to one after every update, so the checks cost few forward passes without ever using
    a stale v: after each update the next check uses the new v, as the algorithm says.
    """
    position, window = 0, 1
    while position < len(order):
        idx = order[position : position + window]
        with torch.no_grad():
            pred = clf.forward(clf.clip(x[idx] + v)).argmax(1)
        still = (pred == clean[idx]).nonzero()
        if len(still) == 0:
            position += len(idx)
            window = min(window * 2, most)
            continue
        j = int(still[0])
        i = idx[j : j + 1]
        pts = _deepfool_step(clf, clf.clip(x[i] + v), df_kwargs, counter)
        if bool(pts.converged[0]):
            v = project(v + pts.perturbation[0], xi, norm)
            counter.updates += 1
        position += j + 1
        window = 1
    return v


def _pass_batched(clf, x, clean, v, order, xi, norm, df_kwargs, counter, batch, chunk, world=World(),
                  piece=None) -> torch.Tensor:
    """DeepFool steps for a mini-batch of unfooled inputs at the same v; v moves along their mean
    direction by the length of a typical (median) step, then is projected.

    This is one Algorithm-1-sized step per mini-batch, in the direction the batch agrees on.
    Folding the stale steps in one after another made v jump between passes on MNIST (ℓ2 ξ = 3:
    3% to 21%). Moving by their plain mean, whose length shrinks as the steps disagree, held
    19.2-25.0% held-out over 5 seeds of the benchmark; the mean direction at the median length
    holds 23.5-25.0%, and more at every other setting too.

    Under a process group the unfooled inputs of a mini-batch are split into pieces, DeepFool
    runs on each rank's pieces, and the steps are gathered in order, so that every rank moves v
    alike.
    """
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        still = ~_fooled_mask(clf, x[idx], clean[idx], v, chunk, world)
        if not still.any():
            continue
        steps, converged = _deepfool_steps(clf, clf.clip(x[idx[still]] + v), df_kwargs, counter, piece, world)
        if converged.any():
            steps = steps[converged]
            mean = steps.mean(0)
            size = mean.norm()
            if size > 0:
                length = steps.reshape(len(steps), -1).norm(dim=1).median()
                v = project(v + mean * (length / size), xi, norm)
                counter.updates += 1
    return v


def _margin(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """f_c − max_{k≠c} f_k per row, c = ``cls`` (n,): positive where c is predicted."""
    return logits.gather(1, cls[:, None])[:, 0] - best_other(logits, cls)


def _sgd_loss(logits: torch.Tensor, pred: torch.Tensor, clean: torch.Tensor, target: int | None, loss: str,
              loss_clip: float) -> torch.Tensor:
    """The per-input loss that ``"sgd"`` ascends (see :func:`_pass_sgd`)."""
    if target is None:
        if loss == "ce":
            return F.cross_entropy(logits, clean, reduction="none").clamp(max=loss_clip)
        away = -_margin(logits, clean)
        if loss == "focal_margin":  # closeness to success: 1 − p_k̂, a constant weight per input
            away = away * (1 - F.softmax(logits.detach(), 1).gather(1, clean[:, None])[:, 0]).pow(FOCUS)
        return away.clamp(max=loss_clip)
    pulling = (pred != target).to(logits.dtype)
    goal = torch.full_like(clean, target)
    if loss == "ce":
        return -F.cross_entropy(logits, goal, reduction="none") * pulling
    towards = _margin(logits, goal)
    if loss == "focal_margin":  # closeness to success: p_c
        towards = towards * F.softmax(logits.detach(), 1)[:, target].pow(FOCUS)
    return towards * pulling


def _pass_sgd(clf, x, clean, v, order, xi, norm, counter, batch, step_size, loss_clip, world=World(),
              piece=None, target: int | None = None, momentum: float = 0.0,
              velocity: torch.Tensor | None = None, loss: str = SGD_LOSS) -> tuple[torch.Tensor, torch.Tensor]:
    """Shafahi et al. 2020: ascent on min(CE(f(x + v), k̂(x)), β) over mini-batches; with
    ``loss="margin"`` on min(max_{k≠k̂} f_k − f_k̂, β), the margin of Carlini & Wagner, whose
    gradient does not fade as the clean class's probability falls; ``"focal_margin"`` weights each
    input's margin by (1 − p_k̂)^γ (p_c^γ targeted), computed without gradient.

    With ``target`` = c: descent on CE(f(x + v), c) (``"margin"``: ascent on f_c − max_{k≠c} f_k)
    over the inputs of the mini-batch that v does not send to c yet (read from the same forward
    pass); those already there stop pulling, as the clip β stops the untargeted loss from
    pushing inputs already far across.

    The gradient of a mini-batch's mean loss is summed over pieces of at most ``piece``
    (``max_batch``) inputs, so the memory of one backward pass is bounded by ``piece`` whatever
    ``batch`` is; with ``piece`` None it is one backward pass. Under a process group piece i is
    computed on rank i mod N and the pieces' gradients are gathered and summed in order on
    every rank: the same sum as one process's with the same pieces.

    With ``momentum`` μ > 0 the step follows g ← μ g + ∇/mean|∇| (the gradient scaled to unit mean
    absolute entry, as MI-FGSM does, so that mini-batches of any loss scale count alike) instead
    of the mini-batch gradient alone; ``velocity`` carries g from pass to pass. Returns v and g.
    """
    if velocity is None:
        velocity = torch.zeros_like(v)
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        v = v.detach().requires_grad_(True)
        pieces = _pieces(idx, piece, world)

        def gradient(i: int) -> torch.Tensor:
            part = pieces[i]
            logits = clf.forward(clf.clip(x[part] + v))
            pred = logits.detach().argmax(1)  # the running score: at the v before this step
            # a tensor on the model's device: read once per pass, no host sync per mini-batch
            counter.hits = counter.hits + sent_to(pred, clean[part], target).sum()
            total = _sgd_loss(logits, pred, clean[part], target, loss, loss_clip).sum() / len(idx)
            counter.gradients += len(part)
            return torch.autograd.grad(total, v)[0][None]

        first, *rest = gather_pieces(world, [1] * len(pieces), gradient, row_shape=v.shape, dtype=v.dtype,
                                     device=v.device)
        grad = first[0]
        for g in rest:
            grad = grad + g[0]  # in piece order on every rank: one process's sum
        with torch.no_grad():
            if momentum > 0:
                velocity = momentum * velocity + grad / grad.abs().mean().clamp_min(torch.finfo(grad.dtype).tiny)
                grad = velocity
            direction = grad.sign() if norm == "linf" else scale_to_norm(grad[None], "l2")[0]
            v = project(v + step_size * direction, xi, norm)
        counter.updates += 1
    return v.detach(), velocity


def _spectral(clf, x, clean, xi, norm, components, df_kwargs, counter, forward_batch) -> torch.Tensor:
    """The best of the top ``components`` principal directions of the fit inputs' unit DeepFool
    normals, either sign, taken to the surface of the ball (:func:`signed_in_ball`)."""
    from ..geometry.spectral import spectrum  # here: the geometry package imports the attacks one

    pts = _deepfool_step(clf, x, df_kwargs, counter)
    # the rows spectrum() takes: converged points with a nonzero normal
    rows = int((pts.converged.cpu() & (pts.normal.reshape(len(pts), -1).abs().amax(1).cpu() > 0)).sum())
    if rows == 0:
        raise BoundgeoError("method='spectral': DeepFool converged for none of the fit inputs, so there are no "
                            "normals to take principal directions of; raise max_iter or check the model")
    # the paper's (uncentred) spectrum, by whichever route bounds the memory of these normals
    spec = spectrum(pts, kind="normal", k=min(components, rows, x[0].numel()), baseline_draws=0)
    best, best_count = None, -1
    for direction in spec.basis(min(components, len(spec.components))).to(x.device):
        v, count = signed_in_ball(clf, x, clean, direction.to(x.dtype).reshape(x.shape[1:]), xi, norm,
                                  forward_batch)
        if count > best_count:  # on a tie the earlier, larger principal direction
            best, best_count = v, count
    counter.updates += 1
    return best


def universal_perturbation(
    clf: Classifier,
    data,
    *,
    xi: float,
    norm: str = "linf",
    delta: float = 0.2,
    max_passes: int = 10,
    method: str = "deepfool",
    overshoot: float = 0.02,
    eval_data=None,
    seed: int = 0,
    progress: bool = True,
    batch_size: int | None = None,
    max_iter: int = 50,
    candidates: int | None = 10,
    step_size: float | None = None,
    step_decay: float = 0.8,
    momentum: float = 0.0,
    loss_clip: float = 8.0,
    keep_best: bool = True,
    orders: Sequence[Sequence[int]] | None = None,
    max_batch: int | None = None,
    layer: str | None = None,
    p: float | None = None,
    q: float | None = None,
    components: int = 10,
    target: int | None = None,
    score: str = "running",
    loss: str | None = None,
) -> UniversalPerturbation:
    """Find a universal perturbation v with ‖v‖_p ≤ ξ that fools at least 1 − δ of ``data``.

    Args:
        clf: the classifier.
        data: inputs to fit on (tensor, array, (x, y) pair, Dataset, DataLoader); never modified.
        xi: ξ, the radius of the ball (in input units, e.g. pixels in [0, 1]).
        norm: ``"l2"`` or ``"linf"`` (p of the paper).
        delta: δ; stop once the fooling rate on ``data`` reaches 1 − δ.
        max_passes: the most passes over the data (the algorithm always stops).
        method: ``"deepfool"`` (Algorithm 1, one input at a time), ``"batched"`` (DeepFool for
            ``batch_size`` unfooled inputs at a time), ``"sgd"`` (Shafahi et al. 2020),
            ``"singular"`` (the (p, q)-singular vector of the stacked Jacobians of ``layer`` at
            the fit inputs, by the generalised power method: Khrulkov & Oseledets 2018; one pass
            is one iteration) or ``"spectral"`` (the best of the top ``components`` principal
            directions of the fit inputs' DeepFool normals, either sign: the paper's
            explanation of universal perturbations as an attack; one pass).
        overshoot: DeepFool's η for the per-input steps.
        eval_data: held-out inputs for ``eval_fooling_rate``.
        seed: seeds the order of the inputs in every pass.
        progress: a progress bar over passes.
        batch_size: mini-batch of the ``"batched"`` and ``"sgd"`` methods (and the inputs per
            Jacobian product of ``"singular"``); default 32 for ``"sgd"``, 64 otherwise.
        max_iter, candidates: DeepFool settings of the per-input steps.
        step_size: ``"sgd"`` step of the first pass (sign step for ℓ∞, normalised gradient step
            for ℓ2); default 0.8 ξ.
        step_decay: ``"sgd"``: the step of pass p is ``step_size * step_decay ** (p - 1)``, large
            steps first to reach the surface of the ball, small ones later to settle on it; 1
            keeps it constant. In (0, 1].
        momentum: ``"sgd"``: μ in [0, 1) of a momentum on the scaled mini-batch gradients (0: the
            mini-batch gradient alone, as Shafahi et al.).
        loss_clip: β, the clip of the loss of ``"sgd"`` (untargeted).
        loss: ``"sgd"``: the loss ascended (None: ``SGD_LOSS``, ``"focal_margin"``; refused for
            the other methods). ``"ce"`` is the clipped cross-entropy of Shafahi et al.;
            ``"margin"`` the logit margin of Carlini & Wagner, max_{k≠k̂} f_k − f_k̂ clipped at β
            (targeted f_c − max_{k≠c} f_k); ``"focal_margin"`` that margin with each input
            weighted by its closeness to success to the power γ = ``FOCUS`` (0.3), 1 − p_k̂
            untargeted and p_c targeted, held constant in the gradient: the (1 − p_t)^γ of the
            focal loss (Lin et al. 2017) with t the clean class, so that the inputs the model is
            least sure of count most, as in the cross-entropy's gradient, while the margin's
            gradient, unlike the cross-entropy's, does not vanish as probabilities saturate.
        keep_best: return the v with the highest fooling rate on ``data`` among the ends of
            passes rather than the last one. When ξ is not much larger than the per-input
            margins, each DeepFool step is a large part of the ball and the last v can be much
            worse than an earlier one; False returns the last v, as Algorithm 1 does. With
            sgd's default ``score="running"`` the candidates are the last v and the v that ended
            the pass with the best running score (see ``score``).
        orders: the order of the inputs in each pass, one permutation of 0..n−1 per pass (at
            least ``max_passes`` of them), instead of seeded shuffles. For paired comparisons:
            one run of Algorithm 1 depends strongly on the order, so replaying another
            implementation's orders compares the implementations, not the shuffles.
        max_batch: the most inputs in one forward or backward pass, to bound memory at large
            inputs (a 224x224 network's activations): the ``"sgd"`` gradient of a mini-batch
            is then summed over pieces, DeepFool and the fooling checks run in pieces. It
            changes how the work is split, not the algorithm: v is the same up to float
            rounding. None: mini-batches in one pass, fooling checks 512 inputs at a time.
        layer: ``"singular"``: the module (a name from ``model.named_modules()``) whose output's
            Jacobian is used; None for the logits. It must run once per forward pass: a module
            that runs twice (torchvision's BasicBlock calls its one ``relu`` twice) is refused.
        p, q: ``"singular"``: maximise ‖A v‖_q over ‖v‖_p = 1, A the stacked Jacobians. Default
            p = ∞, q = 10 for ℓ∞ attacks and p = q = 2 for ℓ2 (the paper's choices); p > 1.
        components: ``"spectral"``: how many principal directions are tried.
        score: ``"sgd"``: how the fooling rate after each pass (for ``delta`` and ``keep_best``)
            is measured. ``"running"`` counts the inputs each mini-batch's forward pass finds
            fooled, at the v before that step, so a pass costs no forward pass beyond its
            gradients; it mixes the v's of the pass, so it only ranks the passes: a pass whose
            running score reaches 1 − δ stops the fit only if the v it ended with fools 1 − δ,
            counted exactly, and ``keep_best`` counts two candidates exactly at the end, the last
            v and the v that ended the best-scored pass, and keeps the better (at most two
            forward passes over the fit set in all, besides stopping checks). ``"exact"``
            evaluates the whole fit set after every pass and compares every pass's v. Either way
            the returned ``fooling_rate`` is the returned v's, counted.
        target: a class c: a targeted perturbation that sends inputs to c (``"sgd"`` and
            ``"singular"``; the latter's rows are then the gradients of the logit margin
            f_c − f_k, k each input's runner-up class, at the fit inputs not predicted as c, and
            ``layer`` must be None). ``delta`` and ``keep_best`` then use the share of the fit
            inputs not predicted as c without v that v sends to c; the result's ``target_rate``
            and ``eval_target_rate``.

    Returns:
        :class:`UniversalPerturbation` with the perturbation on the classifier's device.

    Shape:
        data: (n, *S) → perturbation: (*S).
    """
    clf = as_classifier(clf)
    checked = _check(dict(xi=xi, delta=delta, method=method, norm=norm, max_passes=max_passes,
                          overshoot=overshoot, seed=seed, progress=progress, batch_size=batch_size,
                          max_iter=max_iter, candidates=candidates, step_size=step_size,
                          step_decay=step_decay, momentum=momentum,
                          loss_clip=loss_clip, keep_best=keep_best, max_batch=max_batch, layer=layer, p=p,
                          q=q, components=components, target=target, score=score, loss=loss))
    world = get_world()
    x, _ = as_tensors(data)
    x = clf.check_inputs(x)  # on the model's device; never written to, so the caller's data stays as it is
    given = _check_orders(orders, x.shape[0], checked["max_passes"]) if orders is not None else None
    if not world.active:
        return _fit(clf, x, checked, given, eval_data, world)
    world.agree("universal_perturbation", {
        **{key: value for key, value in checked.items() if key != "progress"}, "n": x.shape[0],
        "orders": None if given is None else [order.tolist() for order in given],
        "model": _model_fingerprint(clf), "model_config": _model_config(clf), "data": sample_digest(x),
        "eval_data": eval_data is not None})
    if checked["method"] in ("batched", "sgd"):
        return _fit(clf, x, checked, given, eval_data, world)

    # Algorithm 1 is sequential (every step starts from the v the previous one left), and the
    # singular and spectral methods are one computation over the fit set, so they run whole on
    # rank 0 and the others receive the result
    def alone() -> UniversalPerturbation:
        with single_process():
            found = _fit(clf, x, checked, given, eval_data, World())
        return dataclasses.replace(found, perturbation=found.perturbation.cpu())  # to be sent

    found = world.run_on_main(alone)
    return dataclasses.replace(found, perturbation=found.perturbation.to(x.device),
                               settings={**found.settings, "processes": world.size, "ranks_used": 1})


@torch.enable_grad()  # gradients are the method, even when the caller is inside no_grad
# (on the private worker, so that universal_perturbation keeps its own signature and __kwdefaults__)
def _fit(clf: Classifier, x: torch.Tensor, checked: dict[str, Any], given: list[torch.Tensor] | None, eval_data,
         world: World) -> UniversalPerturbation:
    """:func:`universal_perturbation` on checked settings, every rank of ``world`` taking part."""
    xi, norm, method, delta, overshoot, loss_clip = (
        checked[k] for k in ("xi", "norm", "method", "delta", "overshoot", "loss_clip"))
    max_passes, batch_size, max_iter, candidates, seed = (
        checked[k] for k in ("max_passes", "batch_size", "max_iter", "candidates", "seed"))
    progress, keep_best, chunk = checked["progress"], checked["keep_best"], checked["max_batch"]
    n = x.shape[0]
    forward_batch = chunk if chunk is not None else 512
    clean = _predict(clf, x, forward_batch, world)
    target = checked.get("target")
    counted = n if target is None else int((clean != target).sum())
    if target is not None:
        classes = clf.num_classes
        if not target < classes:
            raise BoundgeoError(f"target must be a class of the model, 0 to {classes - 1}, got {target}")
        if counted == 0:
            raise BoundgeoError(f"target={target}: the model predicts class {target} for every fit input "
                                "without any perturbation; there is nothing to send there")
    generator = torch.Generator().manual_seed(seed)
    df_kwargs = dict(overshoot=overshoot, max_iter=max_iter, candidates=candidates)
    if chunk is not None:
        df_kwargs["batch_size"] = chunk
    step = checked["step_size"] if checked["step_size"] is not None else 0.8 * xi
    step_decay = checked["step_decay"]
    v = torch.zeros(x.shape[1:], dtype=x.dtype, device=x.device)
    counter = _Counter()
    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    bar = None
    if progress and world.main:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_passes, desc=f"universal ({method})", unit="pass")
    rate, reached = 0.0, False
    best_v, best_rate, best_pass = v.clone(), 0.0, 0
    # sgd's running score counts each mini-batch at the v before its step: it mixes the v's of a
    # pass, so it ranks the passes but is not the rate of the v a pass ends with (exact counts below)
    running = method == "sgd" and checked["score"] == "running"
    scored = "fooling_rate" if target is None else "target_rate"

    def exact(u: torch.Tensor) -> float:
        """The rate of ``u`` on the fit set (targeted: the share sent to the target), counted."""
        changed, sent, _ = _fooled_count(clf, x, clean, u, forward_batch, world, target=target)
        return (changed if target is None else sent) / counted

    last_exact = None  # the exact rate of the current v, when it has been counted
    power, exponents, velocity = None, {}, None
    if method == "singular":
        exponents = {"p": checked.get("p") or (math.inf if norm == "linf" else 2.0),
                     "q": checked.get("q") or (10.0 if norm == "linf" else 2.0)}
        clf.forward(x[:1])  # the classifier's first-call checks outside the torch.func transform
        jacobian_batch = chunk if chunk is not None else batch_size
        if target is None:
            power = PowerIteration(layer_function(clf, checked.get("layer"), probe=x), x, **exponents, seed=seed,
                                   batch_size=jacobian_batch)
        else:  # one row per input that is not in the target class yet: the gradient of its margin
            # against its runner-up to the target, which is its own clean class (it is not the target)
            pulling = clean != target
            power = PowerIteration(target_margin(clf, target), x[pulling], **exponents, seed=seed,
                                   batch_size=jacobian_batch, labels=clean[pulling])
    for p in range(1, max_passes + 1):
        tick = time.perf_counter()
        gradients_before, updates_before, hits_before = counter.gradients, counter.updates, counter.hits
        order = (given[p - 1] if given is not None else torch.randperm(n, generator=generator)).to(x.device)
        if method == "deepfool":
            v = _pass_algorithm1(clf, x, clean, v, order, xi, norm, df_kwargs, counter, min(256, forward_batch))
        elif method == "batched":
            v = _pass_batched(clf, x, clean, v, order, xi, norm, df_kwargs, counter, batch_size, forward_batch,
                              world, chunk)
        elif method == "sgd":
            v, velocity = _pass_sgd(clf, x, clean, v, order, xi, norm, counter, batch_size,
                                    step * step_decay ** (p - 1), loss_clip, world, chunk, target,
                                    checked["momentum"], velocity, checked["loss"])
        elif method == "singular":
            rows_before = power.rows
            moved = power.step()
            counter.gradients += power.rows - rows_before
            v, _ = signed_in_ball(clf, x, clean, power.v, xi, norm, forward_batch, target)
            counter.updates += 1
        else:
            v = _spectral(clf, x, clean, xi, norm, checked["components"], df_kwargs, counter, forward_batch)
        size = _check_ball(v, xi, norm, method, f"after pass {p}")
        if method == "sgd" and checked["score"] == "running":
            # the fooled inputs its own forward passes saw, each at the v before its step: no
            # forward pass over the fit set after the pass (a third more work per pass)
            seen = int(counter.hits - hits_before)
            hits, gradients = world.sum_of(
                lambda: torch.tensor([seen, counter.gradients - gradients_before]),
                shape=(2,), dtype=torch.long, device="cpu").tolist()
        else:
            changed, sent, gradients = _fooled_count(clf, x, clean, v, forward_batch, world,
                                                     also=counter.gradients - gradients_before,  # every rank's rows
                                                     target=target)
            hits = changed if target is None else sent
        rate = hits / counted  # targeted: the share sent to the target
        last_exact = None if running else rate
        if running and rate >= 1 - delta:  # stop only if the v this pass ends with fools 1 − δ itself
            last_exact = exact(v)
        history.append({
            "pass": p,
            scored: rate,
            "norm": size,
            "seconds": time.perf_counter() - tick,
            "gradient_evaluations": gradients,
            "updates": counter.updates - updates_before,
            "score": checked["score"] if method == "sgd" else "exact",
        })
        if running and last_exact is not None:
            history[-1][f"exact_{scored}"] = last_exact
        if rate >= best_rate:  # on a tie the later v, which has had more updates
            best_v, best_rate, best_pass = v.clone(), rate, p
        if bar is not None:
            bar.update(1)
            bar.set_postfix(fooling=f"{rate:.3f}")
        if method == "singular":
            history[-1]["moved"] = moved  # ‖v_new − v‖_p of the power method's iterate
        if (rate if last_exact is None else last_exact) >= 1 - delta:
            reached = True
            break
        if method == "spectral" or (method == "singular" and moved == 0):
            break  # one computation / a fixed point: further passes would repeat it
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    if running:
        # the running scores rank the passes; the two candidates, the last v and the v that ended
        # the best-scored pass, are counted exactly and the better one is kept (on a tie the last);
        # that choice is part of the fit and its time counts, the count of a v returned unchosen not
        tick = time.perf_counter()
        last_exact = exact(v) if last_exact is None else last_exact
        if keep_best and not reached and best_pass != len(history):
            best_exact = exact(best_v)
            if best_exact > last_exact:
                v, last_exact = best_v, best_exact
            seconds += time.perf_counter() - tick
        rate = last_exact
    elif keep_best and not reached:
        v, rate = best_v, best_rate
    targeted, eval_rate = {}, None
    if target is None:
        if eval_data is not None:
            eval_rate = fooling_rate(clf, eval_data, v, batch_size=forward_batch)
    else:  # both rates of v from one forward pass over the fit inputs, and one over the held-out ones
        changed, sent, _ = _fooled_count(clf, x, clean, v, forward_batch, world, target=target)
        targeted = {"target": target, "target_rate": sent / counted, "eval_target_rate": None}
        rate = changed / n  # every changed prediction
        if eval_data is not None:
            held, _ = as_tensors(eval_data)
            held = clf.check_inputs(held)
            world.agree("universal_perturbation eval_data", {"n": held.shape[0]})
            held_clean = _predict(clf, held, forward_batch, world)
            changed, sent, _ = _fooled_count(clf, held, held_clean, v, forward_batch, world, target=target)
            others = int((held_clean != target).sum())
            eval_rate = changed / held.shape[0]
            targeted["eval_target_rate"] = sent / others if others else float("nan")
    return UniversalPerturbation(
        perturbation=v.detach(),
        xi=float(xi),
        norm=norm,
        method=method,
        fooling_rate=rate,
        eval_fooling_rate=eval_rate,
        history=history,
        seconds=seconds,
        passes=len(history),
        reached=reached,
        settings={"delta": delta, "max_passes": max_passes, "overshoot": overshoot, "seed": seed,
                  "batch_size": batch_size, "max_iter": max_iter, "candidates": candidates,
                  "step_size": step, "step_decay": step_decay, "momentum": checked["momentum"],
                  "loss_clip": loss_clip, "keep_best": keep_best, "n": n,
                  **({"loss": checked["loss"]} if method == "sgd" else {}),
                  "score": checked["score"] if method == "sgd" else "exact",
                  "orders": "given" if given is not None else "seeded", "max_batch": chunk,
                  "processes": world.size,
                  **({"layer": checked.get("layer"), **exponents, "jacobian_products": power.route}
                     if method == "singular" else {}),
                  **({"components": checked["components"]} if method == "spectral" else {})},
        **targeted,
    )


# ============================================================================== examples
@dataclass(frozen=True, eq=False)
class PerturbedExamples(Result):
    """A few inputs with a perturbation added, and the predictions before and after (the
    paper's Figure 1). Fields: clean (k, *S), perturbed (k, *S) clipped to the bounds,
    before (k,), after (k,)."""

    clean: torch.Tensor
    perturbed: torch.Tensor
    before: torch.Tensor
    after: torch.Tensor

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame({"before": self.before.numpy(), "after": self.after.numpy(),
                             "fooled": (self.before != self.after).numpy()})


def perturbed_examples(clf: Classifier, x, v, *, k: int = 8, seed: int = 0) -> PerturbedExamples:
    """Pick ``k`` inputs (seeded) and record their predictions before and after adding ``v``.

    Shape:
        x: (n, *S); v: (*S) shared, or (n, *S) one per input → fields of k = min(k, n) rows.
    """
    clf = as_classifier(clf)
    k = check_count(k, "k")
    seed = check_seed(seed)
    inputs, _ = as_tensors(x)
    inputs = clf.check_inputs(inputs)
    v = _as_perturbation(v, inputs)
    pick = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(seed))[:k].to(inputs.device)
    clean = inputs[pick]
    perturbed = clf.clip(clean + (v[pick] if v.dim() == inputs.dim() else v))
    return PerturbedExamples(clean=clean.cpu(), perturbed=perturbed.cpu(),
                             before=clf.predict(clean).cpu(), after=clf.predict(perturbed).cpu())


# ============================================================================== transfer
def transfer_matrix(classifiers: Mapping[str, Classifier], perturbations: Mapping[str, Any], x):
    """Fooling rate of every perturbation on every classifier (the paper's Table 2).

    Args:
        classifiers: name → :class:`Classifier` (a bare ``nn.Module`` is wrapped with a warning).
        perturbations: name → :class:`UniversalPerturbation`, a tensor of the input shape S
            (usually named after the model it was computed on), or one perturbation per input,
            (n, *S), e.g. the DeepFool perturbations of one model, to see how they transfer.
        x: the inputs to evaluate on.

    Returns:
        A DataFrame with one row per perturbation and one column per classifier; a tidy version
        is ``frame.stack()``.
    """
    import pandas as pd

    if not classifiers or not perturbations:
        raise BoundgeoError("transfer_matrix needs at least one classifier and one perturbation")
    inputs, _ = as_tensors(x)
    rows: dict[str, dict[str, float]] = {pname: {} for pname in perturbations}
    for cname, clf in classifiers.items():
        clf = as_classifier(clf, f"classifiers[{cname!r}]")
        checked = clf.check_inputs(inputs)
        clean = clf.predict(checked)  # once per model, not once per perturbation
        for pname, v in perturbations.items():
            hit = fooled(clf, checked, clean, _as_perturbation(v, checked, f"perturbation {pname!r}"))
            rows[pname][cname] = float(hit.double().mean())
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "perturbation from"
    frame.columns.name = "fooling rate on"
    return frame
