"""Universal perturbations from the geometry alone: (p, q)-singular vectors of the stacked
Jacobians of a layer (Khrulkov & Oseledets, CVPR 2018, "Art of singular vectors and universal
adversarial perturbations") and the principal directions of the boundary normals (the
explanation of Moosavi-Dezfooli et al. 2017, turned into an attack).

Both are one-shot: no per-input attack runs inside the loop. :func:`universal_perturbation`
calls them for ``method="singular"`` and ``method="spectral"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .._errors import BoundgeoError
from .._perturb import perturbed_predictions, scale_to_norm, sent_to
from ..classifier import Classifier


# ============================================================================== the layer
class _Reached(BaseException):
    """Raised by the hook on the chosen layer to end the forward pass there. A BaseException, so
    that ``Classifier.forward``'s report of models that reject their inputs lets it through."""


def layer_function(clf: Classifier, layer: str | None,
                   probe: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """x (n, *S) in input space → the output of ``layer`` (a module name of ``clf.model``, as
    ``named_modules()`` lists them) flattened to (n, m); the logits when ``layer`` is None. The
    classifier's normalisation comes first, so the Jacobian is with respect to the pixels.

    The forward pass stops at the layer's first call. A module that runs more than once per
    forward pass (torchvision's BasicBlock calls its one ``relu`` twice) has no single output, and
    the first call would silently be an intermediate one: with a ``probe`` input (one is enough)
    such a layer is refused, naming how often it ran."""
    if layer is None:
        return clf.forward
    modules = dict(clf.model.named_modules())
    if not isinstance(layer, str) or layer not in modules or layer == "":
        names = [name for name in modules if name]
        shown = ", ".join(names[:12]) + (", …" if len(names) > 12 else "")
        raise BoundgeoError(f"layer must name a module of the model (None for the logits), got {layer!r}; "
                            f"its modules: {shown}")
    module = modules[layer]
    if probe is not None:
        calls = []
        handle = module.register_forward_hook(lambda *_: calls.append(None))
        try:
            with torch.no_grad():
                clf.forward(probe[:1])
        finally:
            handle.remove()
        if len(calls) != 1:
            parent = layer.rpartition(".")[0]
            raise BoundgeoError(
                f"layer {layer!r} runs {len(calls)} times in one forward pass, so it has no single output "
                f"(the first would be taken): name a module that runs once"
                + (f", such as the block that holds it, {parent!r}" if parent and len(calls) > 1 else ""))

    def through(x: torch.Tensor) -> torch.Tensor:
        seen: list = []

        def keep(_module, _inputs, output):
            seen.append(output)
            raise _Reached  # the layers after it would only add work to every product

        handle = module.register_forward_hook(keep)
        try:
            clf.forward(x)
        except _Reached:
            pass
        finally:
            handle.remove()
        if not seen or not isinstance(seen[-1], torch.Tensor):
            raise BoundgeoError(f"layer {layer!r} did not return a tensor during the forward pass")
        return seen[-1].reshape(x.shape[0], -1)

    return through


def target_margin(clf: Classifier, target: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(x (n, *S), others (n,)) → f_c(x) − f_k(x) as (n, 1), c = ``target`` and k = ``others``
    the runner-up class of each input, fixed beforehand (at the clean input: for an input not
    predicted as c, its predicted class), so that the function is smooth and its Jacobian one row
    per input: the rows of a targeted ``"singular"`` perturbation. Raising it sends the input
    towards c."""

    def margin(x: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
        logits = clf.forward(x)
        return (logits[:, target] - logits.gather(1, others[:, None])[:, 0])[:, None]

    return margin


# ============================================================================== (p, q)-singular vectors
def _psi(z: torch.Tensor, r: float) -> torch.Tensor:
    """ψ_r(z) = sign(z)·|z|^(r−1): the gradient of ‖z‖_r^r / r. Callers scale z to max |z| = 1
    first (only the direction matters, and |z|^9 of raw activations overflows float32)."""
    if r == 1:
        return z.sign()
    if r == 2:
        return z
    return z.sign() * z.abs().pow(r - 1)


def _dual(p: float) -> float:
    return 1.0 if math.isinf(p) else p / (p - 1)


def _pnorm(v: torch.Tensor, p: float) -> torch.Tensor:
    flat = v.reshape(-1)
    return flat.abs().amax() if math.isinf(p) else torch.linalg.vector_norm(flat, ord=p)


def _unit(v: torch.Tensor, p: float) -> torch.Tensor:
    return v / _pnorm(v, p).clamp_min(torch.finfo(v.dtype).tiny)


class PowerIteration:
    """The generalised power method of Boyd (1974), as Khrulkov & Oseledets use it: for the
    stacked Jacobian A = [J_1; …; J_n] of ``f`` at the inputs, x ← ψ_{p'}(Aᵀ ψ_q(A x)) / ‖·‖_p
    converges to a local maximiser of ‖A x‖_q / ‖x‖_p. A x comes from Jacobian-vector products
    (``torch.func.jvp``) and Aᵀ y from one backward pass, in chunks of ``batch_size`` inputs; no
    Jacobian is formed. A model that ``torch.func`` cannot transform falls back to autograd's
    double-backward trick for A x (``route`` says which was used).

    ``labels`` (n,), when given, is passed beside each chunk of inputs, ``f(part, labels_part)``:
    the per-input classes of a function such as :func:`target_margin`.
    """

    def __init__(self, f: Callable[..., torch.Tensor], x: torch.Tensor, *, p: float, q: float,
                 seed: int, batch_size: int, labels: torch.Tensor | None = None) -> None:
        self.x, self.p, self.q, self.batch_size = x, p, q, batch_size
        self.labels = labels
        self.f = f
        generator = torch.Generator().manual_seed(seed)
        start = torch.randn(x.shape[1:], generator=generator, dtype=torch.float64).to(x.device, x.dtype)
        self.v = _unit(start, p)
        self.route = "torch.func"
        self.rows = 0  # rows of Jacobian products, forward and backward

    def _of(self, labels: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
        return self.f if labels is None else (lambda z: self.f(z, labels))

    def _forward(self, part: torch.Tensor, v: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """A v over the inputs ``part``: (len(part), m)."""
        tangent = v.expand_as(part)
        f = self._of(labels)
        if self.route == "torch.func":
            try:
                return torch.func.jvp(f, (part,), (tangent,))[1].detach()
            except (RuntimeError, NotImplementedError):
                self.route = "autograd"  # and stay there
        point = part.detach().requires_grad_(True)
        out = f(point)
        dummy = torch.zeros_like(out, requires_grad=True)
        (pulled,) = torch.autograd.grad(out, point, dummy, create_graph=True)
        return torch.autograd.grad(pulled, dummy, tangent)[0].detach()  # d/d(dummy) <Jᵀ dummy, v> = J v

    def _backward(self, part: torch.Tensor, y: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Aᵀ y over the inputs ``part``, summed: (*S)."""
        point = part.detach().requires_grad_(True)
        return torch.autograd.grad(self._of(labels)(point), point, y)[0].sum(0)

    def step(self) -> float:
        """One iteration; returns how far v moved up to sign, min ‖v_new ∓ v‖_p (0 at a fixed point)."""
        parts = self.x.split(self.batch_size)
        labels = self.labels.split(self.batch_size) if self.labels is not None else [None] * len(parts)
        # ψ_q is homogeneous: A v is scaled by its largest entry over all inputs before ψ_q, so
        # that the chunks keep their relative weights
        av = [self._forward(part, self.v, rows) for part, rows in zip(parts, labels)]
        scale = max(float(a.abs().amax()) for a in av)
        if not math.isfinite(scale) or scale == 0:
            raise BoundgeoError("the power method's A v is zero or not finite: the layer's Jacobian at the fit "
                                "inputs is zero (a dead layer?) or overflows; try another layer")
        total = torch.zeros_like(self.v)
        for part, a, rows in zip(parts, av, labels):
            total += self._backward(part, _psi(a / scale, self.q), rows).detach()
        self.rows += 2 * self.x.shape[0]
        if not bool(torch.isfinite(total).all()) or not bool(total.abs().amax() > 0):
            raise BoundgeoError("the power method's Aᵀψ(A v) is zero or not finite at the fit inputs; try "
                                "another layer")
        new = _unit(_psi(_unit(total, math.inf), _dual(self.p)), self.p)
        # up to sign: the iterate may flip between ±v, and either sign is the same singular vector
        moved = float(torch.minimum(_pnorm(new - self.v, self.p), _pnorm(new + self.v, self.p)))
        self.v = new
        return moved


def signed_in_ball(clf: Classifier, x: torch.Tensor, clean: torch.Tensor, direction: torch.Tensor, xi: float,
                   norm: str, batch_size: int, target: int | None = None) -> tuple[torch.Tensor, int]:
    """The better of ±``direction`` taken to the surface of the ball (ℓ2: ξ·u/‖u‖; ℓ∞: the
    corner ξ·sign(u), the point of the ball farthest along u), by the number of ``x`` it fools
    (with ``target``: sends to ``target``, :func:`sent_to`); on a tie the + sign. Returns it and
    that number."""
    if norm == "linf":
        v = xi * direction.sign()
    else:
        v = xi * scale_to_norm(direction[None], "l2")[0]

    def count(w: torch.Tensor) -> int:
        return int(sent_to(perturbed_predictions(clf, x, w, batch_size=batch_size), clean, target).sum())

    plus, minus = count(v), count(-v)
    return (v, plus) if plus >= minus else (-v, minus)
