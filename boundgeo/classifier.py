"""`Classifier`: a PyTorch model seen as a map from input space (pixels in `bounds`) to logits."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ._checks import check_choice, check_count, check_device, check_real
from ._errors import BoundgeoError

_BOUNDS_TOLERANCE = 1e-5
OUTPUTS = ("auto", "logits", "probabilities")


def _as_vector(value, name: str) -> torch.Tensor | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise BoundgeoError(f"{name} must be a number or a sequence of numbers, got {value!r}") from exc
    vec = torch.as_tensor(array).reshape(-1)
    if vec.numel() == 0 or not torch.isfinite(vec).all():
        raise BoundgeoError(f"{name} must be finite and non-empty, got {value!r}")
    return vec


def _check_bounds(bounds) -> tuple[float, float]:
    if isinstance(bounds, (str, bytes)) or not isinstance(bounds, (Sequence, np.ndarray, torch.Tensor)) \
            or len(bounds) != 2:
        raise BoundgeoError(f"bounds must be (low, high) with low < high, got {bounds!r}")
    low = check_real(bounds[0], "bounds[0] (low)")
    high = check_real(bounds[1], "bounds[1] (high)")
    if not low < high:
        raise BoundgeoError(f"bounds must be (low, high) with low < high, got {bounds!r}")
    return low, high


def _probability_tolerance(dtype: torch.dtype, classes: int) -> float:
    """How far from 1 a row of probabilities may sum in ``dtype``: √eps, or the rounding of
    summing ``classes`` values when that is larger (float32: 3.5e-4 for up to ~700 classes)."""
    eps = torch.finfo(dtype).eps
    return max(math.sqrt(eps), 4 * classes * eps)


def _model_device(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


class Classifier:
    """Wrap an ``nn.Module`` so that boundgeo sees inputs in pixel space.

    The model receives ``(x - mean) / std``; everything boundgeo computes (margins, normals,
    perturbations) lives in the space of ``x``, whose values lie within ``bounds``.

    DeepFool linearises the *logits*. A model whose last layer is a softmax returns
    probabilities, whose gradients vanish where the model is confident: the margins come out
    several times too large (the digits CNN with a softmax appended: median 4.98 against 0.52 on
    100 test digits) and nothing else looks wrong. So the first forward pass checks the outputs
    once: rows that are all non-negative and sum to 1 raise a :class:`BoundgeoError` unless
    ``outputs`` says what they are.

    Args:
        model: any module mapping a batch of inputs to logits of shape (n, C).
        bounds: (low, high) of valid input values, finite.
        mean, std: per-channel normalisation applied inside, or None. A scalar, one value per
            channel (broadcast over (N, C, H, W) or channel-major flat inputs) or one value per
            feature of a flat input.
        num_classes: C; inferred from the last ``nn.Linear`` or the first forward pass when None.
        device: where the model runs; by default the device of its parameters. Never CUDA
            unless the model or this argument says so; a device this machine lacks is refused.
        outputs: what the model returns. ``"auto"`` (default): logits, checked once on the first
            forward pass (probabilities raise). ``"logits"``: logits (or log-probabilities),
            not checked, for a model whose logits may legitimately look like probabilities.
            ``"probabilities"``: rows of probabilities (a softmax last layer); boundgeo works on
            their logarithm, ``log(max(p, tiny))``, which differs from the logits only by a
            constant per row, so DeepFool finds the same boundary points as on the logits,
            except where a probability underflows (below ``tiny``, the dtype's smallest normal
            number: a logit gap beyond about 87 in float32 and bfloat16, 9.7 in float16). There
            the clamp flattens that class's log-probability, so its gradient is zero and its gap
            to the label understated; boundgeo warns (a ``RuntimeWarning``, once per
            ``Classifier``) on the first forward pass where that happens. Give boundgeo the
            model without its softmax where you can.

    Example:
        >>> import torch, boundgeo as bg
        >>> clf = bg.Classifier(torch.nn.Linear(4, 3))
        >>> clf.predict(torch.zeros(2, 4)).shape
        torch.Size([2])
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        bounds: Sequence[float] = (0.0, 1.0),
        mean=None,
        std=None,
        num_classes: int | None = None,
        device: str | torch.device | None = None,
        outputs: str = "auto",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise BoundgeoError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.bounds = _check_bounds(bounds)
        self.outputs = check_choice(outputs, "outputs", OUTPUTS)
        if device is not None:
            device = check_device(device)
            model = model.to(device)
        if model.training:
            warnings.warn(
                "the model was in training mode; boundgeo switched it to eval mode, since "
                "dropout or batch-norm statistics would make the boundary random",
                stacklevel=2,
            )
            model.eval()
        self.model = model
        self.device = device if device is not None else _model_device(model)
        self.mean = _as_vector(mean, "mean")
        self.std = _as_vector(std, "std")
        if self.std is not None and (self.std <= 0).any():
            raise BoundgeoError(f"std must be positive, got {std!r}")
        if num_classes is None:
            linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
            num_classes = linears[-1].out_features if linears else None
        if num_classes is not None:
            num_classes = check_count(num_classes, "num_classes", minimum=1)
            self._check_num_classes(num_classes)
        self._num_classes = num_classes
        # the outputs are checked once, on the first forward pass (see _check_outputs)
        self._outputs_checked = outputs == "logits"
        # outputs="probabilities": whether the clamp of underflowed probabilities was reported
        self._underflow_reported = False

    # ------------------------------------------------------------------ properties
    @property
    def num_classes(self) -> int:
        """Number of classes C (known once given, read off the last Linear, or after a forward)."""
        if self._num_classes is None:
            raise BoundgeoError(
                "num_classes is not known yet: pass num_classes= or call logits() once"
            )
        return self._num_classes

    @staticmethod
    def _check_num_classes(c: int) -> None:
        if c < 2:
            raise BoundgeoError(f"a classifier needs at least 2 classes, got {c}")

    # ------------------------------------------------------------------ inputs
    def _broadcast(self, vec: torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
        vec = vec.to(device=x.device, dtype=x.dtype)
        if vec.numel() == 1:
            return vec.reshape(())
        if x.dim() >= 3 and x.shape[1] == vec.numel():
            return vec.reshape((1, -1) + (1,) * (x.dim() - 2))
        if x.dim() == 2:
            if x.shape[1] == vec.numel():
                return vec.reshape(1, -1)
            if x.shape[1] % vec.numel() == 0:  # channel-major flattening, as torch.flatten does
                return vec.repeat_interleave(x.shape[1] // vec.numel()).reshape(1, -1)
        raise BoundgeoError(
            f"{name} has {vec.numel()} values, which does not broadcast over inputs of shape "
            f"{tuple(x.shape)} (expected one per channel, dim 1)"
        )

    def check_inputs(self, x) -> torch.Tensor:
        """Validate a batch of inputs and return it as a float tensor on the model's device.

        Raises:
            BoundgeoError: empty or 0-d input, NaN/Inf values, or values outside ``bounds``.
        """
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        if not isinstance(x, torch.Tensor):
            raise BoundgeoError(f"inputs must be a tensor or numpy array, got {type(x).__name__}")
        if x.dim() < 2 or x.shape[0] == 0:
            raise BoundgeoError(
                f"inputs must be a non-empty batch of shape (n, ...), got {tuple(x.shape)}"
            )
        if x.is_complex():
            raise BoundgeoError(f"inputs must be real, got dtype {x.dtype} of shape {tuple(x.shape)}")
        if not x.is_floating_point():
            x = x.float()
        x = x.to(self.device)
        finite = torch.isfinite(x)
        if not finite.all():
            bad = int((~finite).sum())
            raise BoundgeoError(
                f"inputs of shape {tuple(x.shape)} contain {bad} NaN or Inf values"
            )
        low, high = self.bounds
        xmin, xmax = float(x.min()), float(x.max())
        if xmin < low - _BOUNDS_TOLERANCE or xmax > high + _BOUNDS_TOLERANCE:
            raise BoundgeoError(
                f"inputs of shape {tuple(x.shape)} span [{xmin:.4g}, {xmax:.4g}], outside the "
                f"bounds {self.bounds}; pass the right bounds= or scale the inputs"
            )
        return x

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable logits of inputs already validated (used inside attacks).

        With ``outputs="probabilities"`` these are the log-probabilities.

        Raises:
            BoundgeoError: the model fails on ``x``, returns something other than (n, C), NaN or
                Inf, or (checked on the first call only) probabilities where logits were expected.

        Shape:
            x: (n, *S) in input space → (n, C).
        """
        if self.mean is not None:
            x = x - self._broadcast(self.mean, x, "mean")
        if self.std is not None:
            x = x / self._broadcast(self.std, x, "std")
        try:
            out = self.model(x)
        except Exception as exc:  # a shape the model rejects: say which
            raise BoundgeoError(
                f"the model rejected inputs of shape {tuple(x.shape)} "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise BoundgeoError(
                f"the model must return logits of shape (n, C) = ({x.shape[0]}, C); "
                f"it returned {shape} for inputs of shape {tuple(x.shape)}"
            )
        if self._num_classes is None:
            self._check_num_classes(out.shape[1])
            self._num_classes = out.shape[1]
        elif out.shape[1] != self._num_classes:
            raise BoundgeoError(
                f"the model returned {out.shape[1]} logits, but num_classes={self._num_classes}"
            )
        if not out.is_floating_point():
            raise BoundgeoError(f"the model returned {out.dtype} outputs; logits must be floating point")
        # A NaN must not reach argmax. One sum and one host sync per forward (the sum of finite
        # logits is finite; any NaN or Inf makes it NaN or Inf): 8 µs on the CPU against 58 µs
        # for isfinite().all() at 256 rows, and DeepFool's crossing test syncs every step anyway.
        detached, tiny = out.detach(), torch.finfo(out.dtype).tiny
        watch = self.outputs == "probabilities" and not self._underflow_reported
        if watch:  # and the rows with an underflowed probability, in the same host sync
            total, underflowed = torch.stack([detached.sum().double(),
                                              (detached < tiny).any(1).sum().double()]).tolist()
        else:
            total, underflowed = float(detached.sum()), 0
        rows = 0
        if not math.isfinite(total):  # count them (or it overflowed near 1e38)
            rows = int((~torch.isfinite(detached)).any(1).sum())
        if rows:
            raise BoundgeoError(
                f"the model returned NaN or Inf outputs for {rows} of {out.shape[0]} inputs of "
                f"shape {tuple(x.shape)}; boundgeo needs finite logits (check the model's "
                "weights, and that the inputs are in the range it was trained on)"
            )
        if not self._outputs_checked:
            self._check_outputs(detached)
            self._outputs_checked = True
        if self.outputs == "probabilities":
            if underflowed:
                self._underflow_reported = True
                warnings.warn(
                    f"{int(underflowed)} of {out.shape[0]} inputs have class probabilities below "
                    f"{tiny:.3g}, the smallest normal {str(out.dtype).removeprefix('torch.')} number (a "
                    f"logit gap beyond {-math.log(tiny):.3g}): boundgeo clamps them there before the "
                    "log, so those classes' log-probabilities are flat (zero gradient) and their gaps "
                    "to the label understated. Steps towards them, and margins and normals that "
                    "depend on them, are not those of the logits; give boundgeo the model without "
                    "its softmax for exact results (reported once per Classifier)",
                    RuntimeWarning, stacklevel=2)
            out = out.clamp_min(tiny).log()
        return out

    __call__ = forward

    def _check_outputs(self, out: torch.Tensor) -> None:
        """Once, on the first forward: are the outputs rows of probabilities? One reduction on
        the model's device and one host sync."""
        tol = _probability_tolerance(out.dtype, out.shape[1])
        nonnegative = (out >= 0).all(1)
        sums = out.sum(1)
        unit = (sums - 1).abs() <= tol
        probabilities = bool((nonnegative & unit).all())
        if self.outputs == "auto" and probabilities:
            raise BoundgeoError(
                f"the model's outputs look like probabilities: all {out.shape[0]} rows of the "
                f"first batch are non-negative and sum to 1 (within {tol:.1e}) over {out.shape[1]} "
                "classes, as after a softmax. DeepFool linearises logits; on probabilities its "
                "margins come out several times too large. Remove the softmax, or pass "
                "Classifier(..., outputs='probabilities') to work on the log-probabilities, or "
                "outputs='logits' if these really are logits"
            )
        if self.outputs == "probabilities" and not probabilities:
            worst = float((sums - 1).abs().max())
            raise BoundgeoError(
                f"outputs='probabilities', but the model's outputs are not probabilities: "
                f"min {float(out.min()):.4g}, row sums up to {worst:.3g} away from 1; "
                "use outputs='auto' or 'logits' for a model that returns logits"
            )

    @torch.no_grad()
    def logits(self, x, *, batch_size: int = 512) -> torch.Tensor:
        """Logits of shape (n, C) (log-probabilities with ``outputs="probabilities"``), computed
        in batches without gradients.

        Shape:
            x: (n, *S) in input space; returns (n, C) on the model's device.
        """
        batch_size = check_count(batch_size, "batch_size")
        x = self.check_inputs(x)
        return torch.cat([self.forward(chunk) for chunk in x.split(batch_size)])

    @torch.no_grad()
    def predict(self, x, *, batch_size: int = 512) -> torch.Tensor:
        """Predicted classes, shape (n,), as a LongTensor on the model's device."""
        batch_size = check_count(batch_size, "batch_size")
        x = self.check_inputs(x)
        return torch.cat([self.forward(chunk).argmax(1) for chunk in x.split(batch_size)])

    def clip(self, x: torch.Tensor) -> torch.Tensor:
        """Project onto the box ``bounds``."""
        return x.clamp(*self.bounds)

    def __repr__(self) -> str:
        c = self._num_classes if self._num_classes is not None else "?"
        return (
            f"Classifier({type(self.model).__name__}, classes={c}, bounds={self.bounds}, "
            f"device={self.device}, outputs={self.outputs!r})"
        )


def as_classifier(model_or_clf: Any, name: str = "clf") -> Classifier:
    """The :class:`Classifier` every public function works on.

    A :class:`Classifier` is returned as it is. A bare ``nn.Module`` is wrapped as
    ``Classifier(model)`` with a warning, since that assumes inputs in [0, 1], no normalisation
    and logits as outputs (checked on the first forward pass); wrap it yourself to say otherwise.

    Args:
        model_or_clf: a :class:`Classifier` or a ``torch.nn.Module``.
        name: the argument's name, for the messages.

    Raises:
        BoundgeoError: anything else.
    """
    if isinstance(model_or_clf, Classifier):
        return model_or_clf
    if isinstance(model_or_clf, nn.Module):
        warnings.warn(
            f"{name} is a bare {type(model_or_clf).__name__} (torch.nn.Module), not a "
            "boundgeo.Classifier; wrapped it as Classifier(model), which assumes bounds (0, 1) "
            "and no normalisation (mean=None, std=None). Pass bg.Classifier(model, bounds=..., "
            "mean=..., std=...) if that is wrong",
            stacklevel=3,
        )
        return Classifier(model_or_clf)
    raise BoundgeoError(
        f"{name} must be a boundgeo.Classifier or a torch.nn.Module, got {type(model_or_clf).__name__}"
    )
