"""`load_dataset`: scikit-learn's digits (embedded), MNIST (IDX files) and CIFAR-10 (python batches)."""

from __future__ import annotations

import gzip
import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from ._errors import BoundgeoError

DIGITS_SEED = 0
DIGITS_TEST_FRACTION = 0.3
SPLITS = ("train", "test", "all")


def load_dataset(
    name: str, *, root: str | os.PathLike | None = None, split: str = "test"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a dataset as float32 images in [0, 1] and int64 labels.

    Args:
        name: ``"digits"`` (scikit-learn's bundled 8x8 digits, no files needed), ``"mnist"``
            (IDX files, gzipped or raw) or ``"cifar10"`` (the python pickle batches).
        root: directory with the files; default ``data/<name>/`` under the working directory.
        split: ``"train"``, ``"test"`` or ``"all"`` (digits: a fixed, seeded, stratified 70/30
            split; mnist/cifar10: the original files; ``"all"`` concatenates train and test).

    Returns:
        ``(x, y)`` with x float32 of shape (N, C, H, W) in [0, 1] and y int64 of shape (N,).

    Raises:
        BoundgeoError: unknown name or split; missing files (the message names the files it
            expected and where); files of the wrong format.

    Example:
        >>> x, y = load_dataset("digits")
        >>> tuple(x.shape[1:]), x.dtype
        ((1, 8, 8), torch.float32)
    """
    if split not in SPLITS:
        raise BoundgeoError(f"split must be one of {SPLITS}, got {split!r}")
    loaders = {"digits": _digits, "mnist": _mnist, "cifar10": _cifar10}
    if name not in loaders:
        raise BoundgeoError(f"unknown dataset {name!r}; choose one of {sorted(loaders)}")
    if name == "digits":
        return _digits(split)
    root = Path(root) if root is not None else Path("data") / name
    if split == "all":
        parts = [loaders[name](root, s) for s in ("train", "test")]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    return loaders[name](root, split)


# ---------------------------------------------------------------------------- digits
def _digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]  # pixel values are 0..16
    y = bunch.target.astype(np.int64)
    if split == "all":
        return torch.from_numpy(x), torch.from_numpy(y)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SEED, stratify=y
    )
    x, y = (x_tr, y_tr) if split == "train" else (x_te, y_te)
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)


# ---------------------------------------------------------------------------- files
def _find(root: Path, names: list[str], dataset: str) -> Path:
    for name in names:
        for candidate in (root / name, root / name.replace("-idx", ".idx")):
            if candidate.exists():
                return candidate
    raise BoundgeoError(
        f"{dataset}: none of {names} found in {root.resolve()}; put the original files there "
        f"or pass root="
    )


def _read_maybe_gz(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (the MNIST format): magic 0x0000 <dtype> <ndim>, big-endian dims."""
    data = _read_maybe_gz(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise BoundgeoError(f"{path} is not an IDX file (bad magic number {data[:4]!r})")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise BoundgeoError(f"{path}: unknown IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        raise BoundgeoError(f"{path}: header says {dims} but holds {array.size} values")
    return array.reshape(dims)


def _mnist(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    prefix = "t10k" if split == "test" else "train"
    files = {}
    for kind, magic_dims in (("images", 3), ("labels", 1)):
        base = f"{prefix}-{kind}-idx{magic_dims}-ubyte"
        files[kind] = _find(root, [base + ".gz", base], "mnist")
    images, labels = read_idx(files["images"]), read_idx(files["labels"])
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise BoundgeoError(
            f"mnist: images {images.shape} and labels {labels.shape} do not form a dataset"
        )
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    return x, torch.from_numpy(labels.astype(np.int64))


# ---------------------------------------------------------------------------- cifar10
_CIFAR_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers, and refuses every other callable."""

    def find_class(self, module: str, name: str):
        if (module, name) in _CIFAR_ALLOWED:
            return super().find_class(module, name)
        raise BoundgeoError(
            f"refusing to unpickle {module}.{name}: a CIFAR-10 batch holds only a dict of arrays"
        )


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _ArraysOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except BoundgeoError:
        raise
    except Exception as exc:
        raise BoundgeoError(f"{path} is not a CIFAR-10 python batch ({exc})") from exc
    if not isinstance(batch, dict):
        raise BoundgeoError(f"{path} holds a {type(batch).__name__}, not a dict of arrays")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise BoundgeoError(f"{path} lacks the 'data' and 'labels' entries of a CIFAR-10 batch")
    data, labels = batch["data"], np.asarray(batch["labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise BoundgeoError(f"{path}: 'data' must be a uint8 array (N, 3072)")
    if data.shape[1] != 3072 or labels.shape != (data.shape[0],) or labels.dtype.kind not in "iu":
        raise BoundgeoError(
            f"{path}: data {data.shape} and labels {labels.shape} do not form a CIFAR-10 batch"
        )
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _cifar10(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    missing = [n for n in names if not (root / n).exists()]
    if missing:
        raise BoundgeoError(
            f"cifar10: expected {names} in {root.resolve()}; missing {missing}"
        )
    parts = [_load_cifar_batch(root / n) for n in names]
    x = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
    y = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(x), torch.from_numpy(y)
