"""`load_weights`: put a checkpoint found in the wild into a model, loading tensors only.

Every file goes through ``torch.load(..., weights_only=True, map_location="cpu")``; a file that
this refuses (a pickled whole model, arbitrary objects, code) is reported and never loaded
another way.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .._errors import BoundgeoError

# where training scripts put the state dict inside a checkpoint dict, most specific first
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")
# prefixes that wrappers add to every key: DataParallel/DDP, torch.compile
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
SHOWN = 5  # keys listed in a mismatch message


def load_weights(model: nn.Module, path: str | os.PathLike, *, strict: bool = True) -> nn.Module:
    """Load the weights in ``path`` into ``model`` (in place) and return it.

    Layouts understood:

    - a bare ``state_dict`` (``torch.save(model.state_dict(), path)``);
    - a checkpoint dict holding it under ``"state_dict"`` (PyTorch Lightning),
      ``"model_state_dict"``, ``"model"`` or ``"net"`` (the first of these that holds tensors);
    - keys prefixed ``module.`` (DataParallel, DistributedDataParallel) or ``_orig_mod.``
      (``torch.compile``), removed when every key carries them;
    - keys under a common prefix such as ``model.`` (a LightningModule's attribute), removed
      when that is what makes the keys match the model's (keys outside it, such as a loss's
      buffers, are then left out);
    - a list or tuple of state dicts: the first is taken, with a warning.

    The file is read with ``torch.load(path, weights_only=True, map_location="cpu")`` only;
    ``load_state_dict`` then copies the tensors to the model's device and dtype.

    Args:
        model: the module to fill; its own ``state_dict()`` keys decide how keys are matched.
        path: the checkpoint file.
        strict: every key of the model must be found and every key of the checkpoint under
            the prefix that was removed used (as ``load_state_dict(strict=True)``); entries
            outside that prefix (other attributes of a LightningModule) are left out with a
            warning that names them. With False, missing and unexpected keys are allowed; a
            shape mismatch is an error either way.

    Returns:
        ``model``, with the weights loaded.

    Raises:
        BoundgeoError: the file is missing, truncated or corrupt, holds no state dict, or holds
            code or objects beyond tensors (``weights_only=True`` refused it: it is NOT loaded);
            keys do not match (the first missing and unexpected keys are listed) or shapes
            differ (both shapes are given); a weight is NaN.

    Example:
        >>> import torchvision  # doctest: +SKIP
        >>> net = load_weights(torchvision.models.resnet18(), "resnet18.pth")  # doctest: +SKIP
    """
    if not isinstance(model, nn.Module):
        raise BoundgeoError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    path = Path(path)
    if not path.exists():
        raise BoundgeoError(f"weights file {path} does not exist")
    if not path.is_file():
        raise BoundgeoError(f"weights file {path} is not a file")
    state = _unwrap(_read(path), path)
    expected = model.state_dict()
    original = list(state)  # the keys as read, for the warning on what was left out
    state, removed = _match_keys(state, set(expected))
    # BatchNorm's step counter: checkpoints from before torch 0.4.1 have none, and torch's own
    # loading fills it in (it never changes what the model computes in eval mode)
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in state
        if k in expected and isinstance(expected[k], torch.Tensor)
        and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if shapes or (strict and (missing or unexpected)):
        parts = []
        for title, keys in (("missing from the file", missing), ("unexpected in the file", unexpected),
                            ("shape mismatch", shapes)):
            if keys and (strict or title == "shape mismatch"):
                more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
                parts.append(f"{title} ({len(keys)}): {', '.join(keys[:SHOWN])}{more}")
        keys = f" (keys read without the prefix {removed!r})" if removed else ""
        raise BoundgeoError(
            f"weights in {path} do not fit {type(model).__name__}{keys}: " + "; ".join(parts)
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and bool(torch.isnan(v).any())]
    if bad:
        raise BoundgeoError(f"weights in {path} hold NaN in {bad[:SHOWN]}")
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise BoundgeoError(f"weights in {path} do not load into {type(model).__name__}: {exc}") from exc
    if len(state) < len(original):
        out = sorted(k for k in original if not k.startswith(removed))
        more = f" and {len(out) - SHOWN} more" if len(out) > SHOWN else ""
        warnings.warn(f"{path}: loaded the {len(state)} entries under {removed!r}; left out "
                      f"{len(original) - len(state)} others: {', '.join(out[:SHOWN])}{more}", stacklevel=2)
    return model


def _read(path: Path):
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        detail = _refusal_detail(str(exc))
        raise BoundgeoError(
            f"{path} holds code or objects beyond tensors (a pickled model, other Python "
            f"objects, or pickle instructions that torch's safe loader does not run{detail}); "
            f"torch.load(weights_only=True) refused it and it was NOT loaded. Save the "
            f"state_dict instead (torch.save(model.state_dict(), path))"
        ) from None
    except Exception as exc:  # garbage makes torch's reader fail in any of a dozen ways
        raise BoundgeoError(
            f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no details'}"
        ) from None


def _refusal_detail(message: str) -> str:
    for line in message.splitlines():
        if "GLOBAL" in line or "Unsupported" in line:
            return f": {line.strip()[:200]}"
    return ""


def _is_state_dict(value) -> bool:
    return (isinstance(value, Mapping) and len(value) > 0
            and all(isinstance(k, str) for k in value)
            and all(isinstance(v, torch.Tensor) for v in value.values()))


def _unwrap(obj, path: Path, depth: int = 0) -> dict[str, torch.Tensor]:
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, (list, tuple)) and obj and depth < 3:
        warnings.warn(f"{path} holds a {type(obj).__name__} of {len(obj)} entries; "
                      f"loading the first", stacklevel=3)
        return _unwrap(obj[0], path, depth + 1)
    if isinstance(obj, Mapping) and depth < 3:
        for key in WRAPPER_KEYS:
            if key in obj and (_is_state_dict(obj[key]) or isinstance(obj[key], (Mapping, list, tuple))):
                try:
                    return _unwrap(obj[key], path, depth + 1)
                except BoundgeoError:
                    continue
    if isinstance(obj, Mapping):
        found = f"a dict with keys {sorted(map(str, obj))[:10]}"
    else:
        found = f"a {type(obj).__name__}"
    raise BoundgeoError(
        f"{path} holds no state dict ({found}); expected a dict of tensors, possibly under "
        f"one of {list(WRAPPER_KEYS)}"
    )


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _strip_wrappers(state: dict[str, torch.Tensor], removed: str) -> tuple[dict, str]:
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state, removed, changed = _strip(state, prefix), removed + prefix, True
    return state, removed


def _heads(state: dict[str, torch.Tensor]) -> list[str]:
    """First key components (``"model."``) that more than half of the keys share: a prefix worth
    stripping (a LightningModule's attribute), never one submodule out of many (``"fc."``), and
    never a number: ``"0."`` is the first child of a Sequential, whose siblings (``"1."``) are
    layers of the same network, not other attributes to leave out."""
    counts: dict[str, int] = {}
    for key in state:
        if "." in key:
            head = key.split(".", 1)[0]
            if not head.isdigit():
                counts[head + "."] = counts.get(head + ".", 0) + 1
    return [h for h, c in sorted(counts.items()) if 2 * c > len(state)]


def _match_keys(state: dict[str, torch.Tensor], wanted: set[str]) -> tuple[dict, str]:
    """The keys as given, without wrapper prefixes, or without a prefix most keys share: the
    exact match if one of these is, else the one that shares the most keys with the model.
    Returns it and the prefix removed ("" for none)."""
    candidates = [(state, ""), _strip_wrappers(state, "")]
    for _ in range(2):  # up to two levels: "model.module.", "model.net."
        for base, removed in list(candidates):
            candidates.extend(_strip_wrappers(_strip(base, h), removed + h) for h in _heads(base))
    exact = [c for c in candidates if set(c[0]) == wanted]
    if exact:
        return exact[0]
    best = max(candidates, key=lambda c: len(wanted & set(c[0])))
    return best if len(wanted & set(best[0])) > len(wanted & set(state)) else (state, "")
