"""`load_dataset`: scikit-learn's digits (embedded), MNIST (IDX files), CIFAR-10 (python batches or
an image folder) and any image folder laid out one folder per class."""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import zlib
from pathlib import Path

import numpy as np
import torch

from .._checks import check_choice
from .._errors import BoundgeoError

DIGITS_SEED = 0
DIGITS_TEST_FRACTION = 0.3
SPLITS = ("train", "test", "all")
NAMES = ("digits", "mnist", "cifar10", "folder")
DEFAULT_MAX_BYTES = 4 * 2**30  # decoded image folders beyond this are refused: use ImageFolder
# CIFAR-10's label order 0..9 (also the sorted order of its class folders)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    split: str = "test",
    size: int | tuple[int, int] | None = None,
    crop: int | tuple[int, int] | None = None,
    grayscale: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a dataset as float32 images in [0, 1] and int64 labels, all in memory.

    Args:
        name: ``"digits"`` (scikit-learn's bundled 8x8 digits, no files needed), ``"mnist"``
            (IDX files, gzipped or raw), ``"cifar10"`` (the python pickle batches, or an image
            folder with CIFAR's ten class folders) or ``"folder"`` (any image folder).
        root: directory with the files; default ``data/<name>/`` under the working directory
            (``"folder"`` needs it: the folder holding one sub-folder per class).
        split: ``"train"``, ``"test"`` or ``"all"`` (``"all"`` concatenates train and test).
            digits: a fixed, seeded, stratified 70/30 split. mnist and cifar10 batches: the
            original files. cifar10 as an image folder: if ``root`` has ``train/`` and
            ``test/`` sub-folders (either one is enough for its own split), each holds that
            split's class folders; otherwise ``root`` holds the class folders of a single
            split, read as ``"test"`` (the layout of the CIFAR-10 test images shipped with this
            project), and ``"train"``/``"all"`` are refused. ``"folder"``: ``root`` is one
            split's folder, so only the default is accepted (point ``root`` at another split).
        size, crop, grayscale: for ``"folder"`` only; see :class:`boundgeo.ImageFolder`.
        max_bytes: image folders only: refuse to decode more than this many bytes of float32
            images (default 4 GiB) and point to :class:`boundgeo.ImageFolder`, which reads
            images lazily. The size is known from the first image, before the rest is decoded.
        num_workers: image folders only: DataLoader worker processes decoding the images.

    Returns:
        ``(x, y)``: the images and their labels. For image folders, label ``i`` is the
        ``i``-th class folder in sorted order (``ImageFolder(root).classes``); for cifar10
        the names are :data:`CIFAR10_CLASSES`.

    Shape:
        x: float32 (N, C, H, W) in [0, 1]; y: int64 (N,).

    Raises:
        BoundgeoError: unknown name or split; missing files (the message names the files it
            expected and where); files of the wrong format, corrupt or truncated (named);
            labels outside the classes; image folders: see :class:`boundgeo.ImageFolder`,
            plus images of different sizes (two are named) and decoded sizes beyond
            ``max_bytes``.

    Example:
        >>> x, y = load_dataset("digits")
        >>> tuple(x.shape[1:]), x.dtype
        ((1, 8, 8), torch.float32)
    """
    check_choice(split, "split", SPLITS)
    if not isinstance(name, str) or name not in NAMES:
        raise BoundgeoError(f"unknown dataset {name!r}; choose one of {sorted(NAMES)}")
    image_options = dict(size=size, crop=crop, grayscale=grayscale)
    if name != "folder":
        given = [k for k, v in image_options.items() if v not in (None, False)]
        if given:
            raise BoundgeoError(f"{', '.join(given)} apply to load_dataset('folder', ...) only")
    if name == "digits":
        return _digits(split)
    if name == "folder":
        if root is None:
            raise BoundgeoError("load_dataset('folder') needs root=, the folder of class folders")
        if split != "test":
            raise BoundgeoError(
                f"split={split!r}: for 'folder', root is one split's class folders; "
                f"point root at that split's folder instead"
            )
        from .images import ImageFolder, stack_images

        folder = ImageFolder(root, **image_options)
        return stack_images([folder], max_bytes=max_bytes, num_workers=num_workers)
    root = Path(root) if root is not None else Path("data") / name
    if name == "cifar10":
        return _cifar10(root, split, max_bytes=max_bytes, num_workers=num_workers)
    return _train_and_test(_mnist, root) if split == "all" else _mnist(root, split)


def _train_and_test(read, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [read(root, s) for s in ("train", "test")]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


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


def _check_regular(path: Path) -> None:
    """A dataset file must be a regular file: a symlink to a device (/dev/zero) or a FIFO would be
    read forever."""
    if not path.is_file():
        raise BoundgeoError(f"{path} is not a regular file (a device, FIFO or folder, or a link to one)")


IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# the data of one IDX file is read up to this size (MNIST's largest file holds 47 MB): a header
# that claims more, as a gzip bomb's would, is refused before anything is decompressed
IDX_MAX_BYTES = 2**30


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (the MNIST format), gzipped or raw: magic 0x0000 <dtype> <ndim>, big-endian
    dims, then the data. The data is read only up to the size the header declares (at most
    ``IDX_MAX_BYTES``), so a gzip bomb is refused rather than decompressed."""
    _check_regular(path)
    gzipped = False
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw) if gzipped else raw
            magic = stream.read(4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
                raise BoundgeoError(f"{path} is not an IDX file (bad magic number {magic!r})")
            if magic[2] not in IDX_TYPES:
                raise BoundgeoError(f"{path}: unknown IDX element type 0x{magic[2]:02x}")
            ndim, dtype = magic[3], np.dtype(IDX_TYPES[magic[2]])
            head = stream.read(4 * ndim)
            if len(head) < 4 * ndim:
                raise BoundgeoError(f"{path}: IDX header of {ndim} dims is cut short ({4 + len(head)} bytes)")
            dims = tuple(int.from_bytes(head[4 * i : 4 * i + 4], "big") for i in range(ndim))
            count = math.prod(dims)  # exact: huge headers must not wrap around as numpy products do
            size = count * dtype.itemsize
            if size > IDX_MAX_BYTES:
                raise BoundgeoError(f"{path}: header says {dims} ({count} values of {dtype.itemsize} bytes), "
                                    f"more than the {IDX_MAX_BYTES} bytes an IDX file is read up to")
            data = stream.read(size + 1)  # one byte more tells a file longer than its header
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        if gzipped:
            raise BoundgeoError(f"{path} is a corrupt or truncated gzip file ({exc})") from exc
        raise BoundgeoError(f"cannot read {path}: {exc}") from exc
    if len(data) != size:
        held = f"more than {size}" if len(data) > size else str(len(data))
        raise BoundgeoError(
            f"{path}: header says {dims} ({count} values of {dtype.itemsize} bytes) but the file "
            f"holds {held} bytes of data (truncated or corrupt?)"
        )
    return np.frombuffer(data, dtype=dtype).reshape(dims)


def _mnist(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    prefix = "t10k" if split == "test" else "train"
    files = {}
    for kind, magic_dims in (("images", 3), ("labels", 1)):
        base = f"{prefix}-{kind}-idx{magic_dims}-ubyte"
        files[kind] = _find(root, [base + ".gz", base], "mnist")
    images, labels = read_idx(files["images"]), read_idx(files["labels"])
    if images.dtype != np.uint8:
        # 0..255 bytes are the format; floats could hold NaN or values beyond 255
        raise BoundgeoError(
            f"{files['images']}: MNIST images must be unsigned bytes (IDX type 0x08), "
            f"got {images.dtype}"
        )
    if labels.dtype.kind not in "iu":
        raise BoundgeoError(f"{files['labels']}: labels must be integers, got {labels.dtype}")
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise BoundgeoError(
            f"mnist: images {images.shape} and labels {labels.shape} do not form a dataset"
        )
    _check_labels(labels, 10, files["labels"])
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    return x, torch.from_numpy(labels.astype(np.int64))


def _check_labels(labels: np.ndarray, classes: int, path) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise BoundgeoError(
            f"{path}: labels must be in 0..{classes - 1}, found {labels.min()}..{labels.max()}"
        )


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
    _check_regular(path)
    try:
        batch = _ArraysOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except BoundgeoError as exc:
        raise BoundgeoError(f"{path}: {exc}") from None
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
    _check_labels(labels, 10, path)
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _cifar10(root: Path, split: str, **folder_options) -> tuple[torch.Tensor, torch.Tensor]:
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    batches = ["test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]
    if root.is_dir() and not any((root / n).exists() for n in batches) and _has_subfolders(root):
        return _cifar10_folder(root, split, **folder_options)
    return _train_and_test(_cifar10_batches, root) if split == "all" else _cifar10_batches(root, split)


def _has_subfolders(root: Path) -> bool:
    return any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir())


def _cifar10_batches(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    missing = [n for n in names if not (root / n).exists()]
    if missing:
        raise BoundgeoError(
            f"cifar10: expected {names} in {root.resolve()} (python batches), or class folders "
            f"{list(CIFAR10_CLASSES)} (image folder); missing {missing}"
        )
    parts = [_load_cifar_batch(root / n) for n in names]
    x = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
    y = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(x), torch.from_numpy(y)


def _cifar10_folder(root: Path, split: str, **options) -> tuple[torch.Tensor, torch.Tensor]:
    wanted = ("train", "test") if split == "all" else (split,)
    if (root / "train").is_dir() or (root / "test").is_dir():
        absent = [s for s in wanted if not (root / s).is_dir()]
        if absent:
            raise BoundgeoError(
                f"cifar10: split {split!r} needs {[str(root / s) for s in absent]}, "
                f"which is not there"
            )
        folders = [root / s for s in wanted]
    elif split != "test":
        raise BoundgeoError(
            f"cifar10: {root} holds the class folders of a single split (no train/ or test/ "
            f"sub-folders), read as split='test'; split={split!r} is not there. Lay the "
            f"splits out as {root}/train/<class>/ and {root}/test/<class>/ to have both"
        )
    else:
        folders = [root]
    from .images import ImageFolder, stack_images

    datasets = [ImageFolder(folder) for folder in folders]
    for folder, dataset in zip(folders, datasets):
        if tuple(dataset.classes) != CIFAR10_CLASSES:
            raise BoundgeoError(
                f"cifar10: {folder} has class folders {dataset.classes}, expected CIFAR-10's "
                f"{list(CIFAR10_CLASSES)}; use load_dataset('folder', root=...) for other classes"
            )
    return stack_images(datasets, expect_shape=(3, 32, 32), **options)
