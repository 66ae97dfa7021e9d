"""Accept every form of `data` the API promises: tensors, arrays, (x, y) pairs, Datasets, DataLoaders.

`as_source(data)` gives one random-access view over any of them, so that analyses can pick
inputs by index (reproducible subsets, resumable shards) without loading a whole dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ._errors import BoundgeoError


def _as_tensor(value, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return torch.as_tensor(value)
    raise BoundgeoError(f"{what} must be a tensor or numpy array, got {type(value).__name__}")


class Source:
    """Random access to inputs (and labels, when known) of any supported data form."""

    def __init__(self, x=None, y=None, dataset: Dataset | None = None) -> None:
        self._x, self._y, self._dataset = x, y, dataset
        if x is not None:
            if x.dim() < 2 or x.shape[0] == 0:
                raise BoundgeoError(
                    f"inputs must be a non-empty batch of shape (n, ...), got {tuple(x.shape)}"
                )
            if y is not None and (y.dim() != 1 or y.shape[0] != x.shape[0]):
                raise BoundgeoError(
                    f"labels of shape {tuple(y.shape)} do not match inputs of shape "
                    f"{tuple(x.shape)}: expected ({x.shape[0]},)"
                )
        elif dataset is not None and len(dataset) == 0:
            raise BoundgeoError("the dataset is empty")

    def __len__(self) -> int:
        return self._x.shape[0] if self._x is not None else len(self._dataset)

    @property
    def has_labels(self) -> bool:
        if self._x is not None:
            return self._y is not None
        item = self._dataset[0]
        return isinstance(item, (tuple, list)) and len(item) >= 2

    def get(self, indices) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Inputs (and labels or None) at ``indices`` (a 1-D LongTensor or sequence)."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        if self._x is not None:
            idx = indices.to(self._x.device)
            x = self._x[idx]
            y = self._y[indices.to(self._y.device)] if self._y is not None else None
            return x, y
        xs, ys = [], []
        for i in indices.tolist():
            item = self._dataset[i]
            if isinstance(item, (tuple, list)):
                xs.append(_as_tensor(item[0], "dataset inputs"))
                ys.append(_as_tensor(item[1], "dataset labels") if len(item) >= 2 else None)
            else:
                xs.append(_as_tensor(item, "dataset inputs"))
                ys.append(None)
        x = torch.stack(xs)
        y = None if any(v is None for v in ys) else torch.stack(ys).long().reshape(-1)
        return x, y

    def all(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.get(torch.arange(len(self)))


def as_source(data) -> Source:
    """Wrap ``data`` (tensor, ndarray, (x, y), Dataset or DataLoader) for indexed access."""
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return Source(_as_tensor(data, "inputs"))
    if isinstance(data, Sequence) and not isinstance(data, str) and len(data) == 2:
        x, y = data
        return Source(_as_tensor(x, "inputs"), _as_tensor(y, "labels").long())
    if isinstance(data, DataLoader):
        if isinstance(data.dataset, IterableDataset):
            xs, ys = [], []
            for batch in data:
                if isinstance(batch, (tuple, list)):
                    xs.append(_as_tensor(batch[0], "inputs"))
                    ys.append(_as_tensor(batch[1], "labels") if len(batch) > 1 else None)
                else:
                    xs.append(_as_tensor(batch, "inputs"))
                    ys.append(None)
            if not xs:
                raise BoundgeoError("the DataLoader yielded no batches")
            y = None if any(v is None for v in ys) else torch.cat(ys).long()
            return Source(torch.cat(xs), y)
        return as_source(data.dataset)
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        return Source(dataset=data)
    raise BoundgeoError(
        "data must be a tensor, a numpy array, an (inputs, labels) pair, a map-style torch "
        f"Dataset or a DataLoader; got {type(data).__name__}"
    )


def as_tensors(data) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Materialise ``data`` as (inputs, labels or None)."""
    return as_source(data).all()


def as_positions(values, what: str) -> torch.Tensor:
    """A 1-D CPU tensor of integer positions, or a bool mask as given (tensor, array or list);
    floats and other types are an error rather than silently truncated."""
    try:
        t = values.detach().cpu() if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise BoundgeoError(f"{what} must be integer positions or a bool mask: {exc}") from exc
    if t.dtype != torch.bool and (t.is_floating_point() or t.is_complex() or t.dtype == torch.uint8):
        raise BoundgeoError(f"{what} must be integer positions or a bool mask, got dtype {t.dtype}")
    if t.dim() != 1:
        raise BoundgeoError(f"{what} must be one-dimensional, got shape {tuple(t.shape)}")
    return t if t.dtype == torch.bool else t.long()

