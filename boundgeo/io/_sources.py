"""Accept every form of `data` the API promises: tensors, arrays, (x, y) pairs, Datasets, DataLoaders.

`as_source(data)` gives one random-access view over any of them, so that analyses can pick
inputs by index (reproducible subsets, resumable shards) without loading a whole dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset
from torch.utils.data._utils.collate import default_collate, default_convert

from .._errors import BoundgeoError

# datasets are read by index; materialising one whole (as_tensors) stops beyond this size,
# so that e.g. 50,000 ImageNet images (30 GiB as float32) are refused rather than decoded
MATERIALISE_MAX_BYTES = 8 * 2**30
CHUNK = 1024  # dataset items decoded per step of Source.all
WORKER_BATCH = 16  # dataset items a loader worker decodes per task in Source.get


def _as_tensor(value, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return torch.as_tensor(value)
    raise BoundgeoError(f"{what} must be a tensor or numpy array, got {type(value).__name__}")


def _as_inputs(value, what: str = "inputs") -> torch.Tensor:
    x = _as_tensor(value, what)
    if x.is_complex():
        raise BoundgeoError(f"{what} must be real, got dtype {x.dtype}")
    return x


def _as_labels(value, what: str = "labels") -> torch.Tensor:
    """Class indices as int64. Integer (or bool) labels, and float labels whose values are
    all whole numbers (``1.0``), are taken; ``1.5``, NaN, complex and negative labels are an
    error rather than truncated."""
    y = _as_tensor(value, what)
    if y.is_complex():
        raise BoundgeoError(f"{what} must be class indices, got dtype {y.dtype}")
    if y.is_floating_point():
        bad = ~torch.isfinite(y) | (y != torch.round(y))
        if bool(bad.any()):
            raise BoundgeoError(
                f"{what} must be whole class indices, got {y.dtype} values such as "
                f"{y[bad].flatten()[:3].tolist()}"
            )
    y = y.long()
    if y.numel() and bool((y < 0).any()):
        raise BoundgeoError(f"{what} must be class indices >= 0, got {int(y.min())}")
    return y


def _shape_text(shape) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _as_list(batch: list) -> list:
    """A loader's collate step that keeps the items as they are (checked one by one later)."""
    return batch


class Source:
    """Random access to inputs (and labels, when known) of any supported data form.

    A dataset's items are decoded in ``num_workers`` loader worker processes when it is more
    than 0 (taken from the DataLoader the data came in), and the batches come back in pinned
    memory when ``pin_memory`` is set, so that the copy to a CUDA model overlaps with work.
    """

    def __init__(self, x=None, y=None, dataset: Dataset | None = None, *, num_workers: int = 0,
                 pin_memory: bool = False) -> None:
        self._x, self._y, self._dataset = x, y, dataset
        self.num_workers, self.pin_memory = int(num_workers), bool(pin_memory)
        self._first = None  # (position, shape) of the first dataset item read: all must match it
        if x is not None:
            if x.dim() < 2 or x.shape[0] == 0:
                raise BoundgeoError(
                    f"inputs must be a non-empty batch of shape (n, ...), got {tuple(x.shape)}"
                )
            if x.is_complex():
                raise BoundgeoError(f"inputs must be real, got dtype {x.dtype}")
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

    def _name(self, i: int) -> str:
        samples = getattr(self._dataset, "samples", None)  # torchvision's folder datasets
        if isinstance(samples, Sequence) and 0 <= i < len(samples):
            entry = samples[i]
            return f"item {i} ({entry[0] if isinstance(entry, (tuple, list)) else entry})"
        return f"item {i}"

    def get(self, indices) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Inputs (and labels or None) at ``indices`` (a 1-D LongTensor or sequence)."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        if self._x is not None:
            idx = indices.to(self._x.device)
            x = self._x[idx]
            y = self._y[indices.to(self._y.device)] if self._y is not None else None
            return x, y
        xs, ys = [], []
        positions = indices.tolist()
        for i, item in zip(positions, self._items(positions)):
            if isinstance(item, (tuple, list)):
                x_i = _as_inputs(item[0], f"dataset inputs ({self._name(i)})")
                ys.append(_as_tensor(item[1], "dataset labels") if len(item) >= 2 else None)
            else:
                x_i = _as_inputs(item, f"dataset inputs ({self._name(i)})")
                ys.append(None)
            if self._first is None:
                self._first = (i, tuple(x_i.shape))
            elif tuple(x_i.shape) != self._first[1]:
                raise BoundgeoError(
                    f"dataset items differ in shape: {self._name(self._first[0])} is "
                    f"{_shape_text(self._first[1])} and {self._name(i)} is "
                    f"{_shape_text(x_i.shape)}; give every item one shape (for image folders: "
                    f"size=(H, W) or crop=)"
                )
            xs.append(x_i)
        x = torch.stack(xs)
        if self.pin_memory and torch.cuda.is_available():
            x = x.pin_memory()
        y = None if any(v is None for v in ys) else _as_labels(torch.stack(ys), "dataset labels").reshape(-1)
        return x, y

    def _items(self, positions: list[int]):
        """The dataset's items at ``positions``, in order: read here, or decoded by loader
        workers when there are some and more than one batch of items to decode."""
        if self.num_workers == 0 or len(positions) <= WORKER_BATCH:
            for i in positions:
                yield self._dataset[i]
            return
        loader = DataLoader(Subset(self._dataset, positions), batch_size=WORKER_BATCH,
                            num_workers=self.num_workers, collate_fn=_as_list)
        for batch in loader:
            yield from batch

    def all(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Every input (and label) in memory. A dataset is read in chunks into one tensor, after
        checking from its first item that the whole fits in ``MATERIALISE_MAX_BYTES``."""
        total = len(self)
        if self._x is not None:
            return self.get(torch.arange(total))
        first, _ = self.get([0])
        need = total * first[0].numel() * first.element_size()
        if need > MATERIALISE_MAX_BYTES:
            raise BoundgeoError(
                f"this needs all {total} dataset items in memory: {need / 2**30:.1f} GiB of "
                f"{first.dtype} inputs of shape {tuple(first.shape[1:])}, more than "
                f"{MATERIALISE_MAX_BYTES / 2**30:.0f} GiB; pass a subset "
                f"(torch.utils.data.Subset(data, indices)) or smaller inputs"
            )
        x = torch.empty((total, *first.shape[1:]), dtype=first.dtype)
        ys = []
        for start in range(0, total, CHUNK):
            x_part, y_part = self.get(torch.arange(start, min(start + CHUNK, total)))
            if x_part.dtype != x.dtype:
                raise BoundgeoError(
                    f"dataset items differ in dtype: {self._name(0)} is {x.dtype} and the items "
                    f"from {start} on are {x_part.dtype}"
                )
            x[start : start + len(x_part)] = x_part
            ys.append(y_part)
        y = None if any(v is None for v in ys) else torch.cat(ys)
        return x, y


def _materialise(loader: DataLoader) -> Source:
    """One pass over ``loader`` as given (its sampler, collate_fn and transforms), in memory;
    each thing it yields is a batch: inputs, or (inputs, labels, ...)."""
    xs, ys = [], []
    for batch in loader:
        if isinstance(batch, (tuple, list)) and batch:
            xs.append(_as_inputs(batch[0]))
            ys.append(_as_tensor(batch[1], "labels") if len(batch) > 1 else None)
        elif isinstance(batch, (torch.Tensor, np.ndarray)):
            xs.append(_as_inputs(batch))
            ys.append(None)
        else:
            raise BoundgeoError(
                f"the DataLoader must yield input tensors or (inputs, labels) pairs, got a "
                f"{type(batch).__name__}"
            )
        if xs[-1].shape[1:] != xs[0].shape[1:]:
            raise BoundgeoError(
                f"the DataLoader's batches differ in shape: {tuple(xs[0].shape)} and "
                f"{tuple(xs[-1].shape)}"
            )
    if not xs:
        raise BoundgeoError("the DataLoader yielded no batches")
    y = None if any(v is None for v in ys) else _as_labels(torch.cat([v.reshape(-1) for v in ys]))
    return Source(torch.cat(xs), y)


def as_source(data, *, device: torch.device | str | None = None) -> Source:
    """Wrap ``data`` (tensor, ndarray, (x, y), Dataset or DataLoader) for indexed access.

    A DataLoader over a map-style Dataset with the default ``collate_fn`` is read through its
    ``dataset`` by index (its sampler and batching are not used: position ``i`` is item ``i``
    of the dataset), so nothing is held in memory that is not asked for; its ``num_workers``
    decode the items, and its ``pin_memory`` (or a CUDA ``device``: where the inputs go) pins
    the batches. A DataLoader over an
    IterableDataset, or with a ``collate_fn`` of its own (which may transform the inputs), is
    iterated once as given and held in memory; positions then count in that pass's order.

    Labels are class indices: integer, bool, or float with whole values (``3.0``); non-integral
    floats, NaN, complex and negative labels raise a BoundgeoError, as do complex inputs and
    dataset items of differing shapes.
    """
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return Source(_as_inputs(data))
    if isinstance(data, Sequence) and not isinstance(data, str) and len(data) == 2:
        x, y = data
        return Source(_as_inputs(x), _as_labels(y))
    if isinstance(data, DataLoader):
        own_collate = data.collate_fn not in (default_collate, default_convert)
        if isinstance(data.dataset, IterableDataset) or own_collate:
            return _materialise(data)
        return Source(dataset=data.dataset, num_workers=data.num_workers,
                      pin_memory=data.pin_memory or _is_cuda(device))
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        return Source(dataset=data, pin_memory=_is_cuda(device))
    raise BoundgeoError(
        "data must be a tensor, a numpy array, an (inputs, labels) pair, a map-style torch "
        f"Dataset or a DataLoader; got {type(data).__name__}"
    )


def _is_cuda(device) -> bool:
    return device is not None and torch.device(device).type == "cuda"


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

