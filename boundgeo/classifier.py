"""`Classifier`: a PyTorch model seen as a map from input space (pixels in `bounds`) to logits."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ._errors import BoundgeoError

_BOUNDS_TOLERANCE = 1e-5


def _as_vector(value, name: str) -> torch.Tensor | None:
    if value is None:
        return None
    vec = torch.as_tensor(np.asarray(value, dtype=np.float32)).reshape(-1)
    if vec.numel() == 0 or not torch.isfinite(vec).all():
        raise BoundgeoError(f"{name} must be finite and non-empty, got {value!r}")
    return vec


def _model_device(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


class Classifier:
    """Wrap an ``nn.Module`` so that boundgeo sees inputs in pixel space.

    The model receives ``(x - mean) / std``; everything boundgeo computes (margins, normals,
    perturbations) lives in the space of ``x``, whose values lie within ``bounds``.

    Args:
        model: any module mapping a batch of inputs to logits of shape (n, C).
        bounds: (low, high) of valid input values.
        mean, std: per-channel normalisation applied inside, or None. A scalar, one value per
            channel (broadcast over (N, C, H, W) or channel-major flat inputs) or one value per
            feature of a flat input.
        num_classes: C; inferred from the last ``nn.Linear`` or the first forward pass when None.
        device: where the model runs; by default the device of its parameters. Never CUDA
            unless the model or this argument says so.

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
    ) -> None:
        if not isinstance(model, nn.Module):
            raise BoundgeoError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if len(bounds) != 2 or not float(bounds[0]) < float(bounds[1]):
            raise BoundgeoError(f"bounds must be (low, high) with low < high, got {bounds!r}")
        if device is not None:
            model = model.to(device)
        if model.training:
            warnings.warn(
                "the model was in training mode; boundgeo switched it to eval mode, since "
                "dropout or batch-norm statistics would make the boundary random",
                stacklevel=2,
            )
            model.eval()
        self.model = model
        self.bounds = (float(bounds[0]), float(bounds[1]))
        self.device = torch.device(device) if device is not None else _model_device(model)
        self.mean = _as_vector(mean, "mean")
        self.std = _as_vector(std, "std")
        if self.std is not None and (self.std <= 0).any():
            raise BoundgeoError(f"std must be positive, got {std!r}")
        if num_classes is None:
            linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
            num_classes = linears[-1].out_features if linears else None
        if num_classes is not None:
            self._check_num_classes(int(num_classes))
        self._num_classes = num_classes

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
        """Differentiable logits of inputs already validated (used inside attacks)."""
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
        return out

    __call__ = forward

    @torch.no_grad()
    def logits(self, x, *, batch_size: int = 512) -> torch.Tensor:
        """Logits of shape (n, C), computed in batches without gradients.

        Shape:
            x: (n, *S) in input space; returns (n, C) on the model's device.
        """
        x = self.check_inputs(x)
        if batch_size < 1:
            raise BoundgeoError(f"batch_size must be >= 1, got {batch_size}")
        return torch.cat([self.forward(chunk) for chunk in x.split(batch_size)])

    @torch.no_grad()
    def predict(self, x, *, batch_size: int = 512) -> torch.Tensor:
        """Predicted classes, shape (n,), as a LongTensor on the model's device."""
        x = self.check_inputs(x)
        if batch_size < 1:
            raise BoundgeoError(f"batch_size must be >= 1, got {batch_size}")
        return torch.cat([self.forward(chunk).argmax(1) for chunk in x.split(batch_size)])

    def clip(self, x: torch.Tensor) -> torch.Tensor:
        """Project onto the box ``bounds``."""
        return x.clamp(*self.bounds)

    def __repr__(self) -> str:
        c = self._num_classes if self._num_classes is not None else "?"
        return (
            f"Classifier({type(self.model).__name__}, classes={c}, bounds={self.bounds}, "
            f"device={self.device})"
        )
