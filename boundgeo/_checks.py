"""The checks every public function shares for its settings: counts, reals, seeds, choices, devices.

Each returns the value in its canonical Python type or raises :class:`BoundgeoError` naming the
argument, so that a bad setting never ends in a raw ``TypeError`` deep inside torch, nor is
silently truncated (``batch_size=2.5``) or turned into something else (``shard_size=0``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from ._errors import BoundgeoError

SEED_MAX = 2**63 - 1  # numpy's and torch's generators both take seeds in [0, 2**63)


def _real_scalar(value: Any) -> float | None:
    """``value`` as a float if it is a real number (Python, numpy or 0-d tensor), else None."""
    if isinstance(value, bool) or isinstance(value, np.bool_):
        return None
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or value.is_complex() or value.dtype == torch.bool:
            return None
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    return None


def check_count(value: Any, name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """A whole number within [minimum, maximum]; an integral float such as ``1e3`` is accepted,
    ``2.5``, booleans, strings and NaN are not."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        number = int(value)
    else:
        real = _real_scalar(value)
        if real is None or not math.isfinite(real) or real != int(real):
            raise BoundgeoError(f"{name} must be a whole number, got {value!r}")
        number = int(real)
    if number < minimum or (maximum is not None and number > maximum):
        span = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise BoundgeoError(f"{name} must be {span}, got {value!r}")
    return number


def check_real(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number within the interval; ``low_open``/``high_open`` exclude the ends."""
    real = _real_scalar(value)
    if real is None or not math.isfinite(real):
        raise BoundgeoError(f"{name} must be a finite real number, got {value!r}")
    too_low = low is not None and (real <= low if low_open else real < low)
    too_high = high is not None and (real >= high if high_open else real > high)
    if too_low or too_high:
        left = "(" if low_open or low is None else "["
        right = ")" if high_open or high is None else "]"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise BoundgeoError(f"{name} must be in {left}{lo}, {hi}{right}, got {value!r}")
    return real


def check_seed(value: Any, name: str = "seed") -> int:
    """A seed for ``torch.Generator`` and ``numpy.random.default_rng``: a whole number in [0, 2**63)."""
    return check_count(value, name, minimum=0, maximum=SEED_MAX)


def check_choice(value: Any, name: str, choices: Iterable[Any]) -> Any:
    """One of ``choices``."""
    choices = tuple(choices)
    try:
        known = any(value == c and type(value) is type(c) for c in choices)
    except (TypeError, ValueError, RuntimeError):  # arrays and tensors have no single truth value
        known = False
    if not known:
        raise BoundgeoError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_device(device: Any, name: str = "device") -> torch.device:
    """A device that exists on this machine: ``"cuda"`` without CUDA, ``"mps"`` without Metal, or
    a misspelt name is refused here rather than deep inside torch."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise BoundgeoError(f"{name} {device!r} is not a torch device ({exc})") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BoundgeoError(f"{name} {device!r}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BoundgeoError(
                f"{name} {device!r}: only {torch.cuda.device_count()} CUDA devices are available"
            )
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise BoundgeoError(f"{name} {device!r}: MPS is not available on this machine")
    elif dev.type not in ("cpu", "meta") and not _backend_available(dev.type):
        raise BoundgeoError(f"{name} {device!r} is not available on this machine")
    return dev


def _backend_available(kind: str) -> bool:
    module = getattr(torch, kind, None)
    is_available = getattr(module, "is_available", None)
    return bool(is_available()) if callable(is_available) else False
