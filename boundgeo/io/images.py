"""`ImageFolder`: lazy access to images laid out one folder per class (ImageNet's layout).

Decoding is Pillow's (as in torchvision's own ``ImageFolder``; torchvision 0.29 deprecates its
``torchvision.io`` decoders), resizing and cropping are ``torchvision.transforms.v2``'s, on the
PIL image as in torchvision's ImageNet evaluation; nothing here parses an image by hand.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import DatasetFolder
from torchvision.transforms import v2

from .._checks import check_count
from .._errors import BoundgeoError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # Pillow's modes for 16-bit gray PNGs


def decode_file(path: str, *, grayscale: bool = False) -> Image.Image | torch.Tensor:
    """One image file, decoded by Pillow: a PIL image in mode ``"RGB"`` (or ``"L"`` when
    ``grayscale``); 16-bit grayscale PNGs, which Pillow's ``convert`` would clip at 255, come as
    a float32 tensor (C, H, W) in [0, 1] instead.

    Grayscale, paletted and RGBA files become RGB (alpha dropped). A file that cannot be read or
    decoded (missing, truncated, not an image) raises a BoundgeoError naming it.
    """
    try:
        with Image.open(path) as image:
            if image.mode in _SIXTEEN_BIT:
                values = torch.from_numpy(np.asarray(image, dtype=np.float32) / 65535.0)[None]
                return values if grayscale else values.expand(3, -1, -1).contiguous()
            return image.convert("L" if grayscale else "RGB")
    except Exception as exc:  # Pillow signals bad files with OSError, SyntaxError, ValueError...
        raise BoundgeoError(f"cannot decode image {path}: {type(exc).__name__}: {exc}") from exc


def _pair(value, name: str) -> tuple[int, int] | int | None:
    if value is None:
        return None
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise BoundgeoError(f"{name} must be an int or a pair (H, W), got {value!r}")
        return (check_count(value[0], f"{name}[0]"), check_count(value[1], f"{name}[1]"))
    return check_count(value, name)


def _hidden(name: str) -> bool:
    # .ipynb_checkpoints, .DS_Store, macOS "._x.jpg" resource forks: never classes, never images
    return name.startswith(".")


class ImageFolder(DatasetFolder):
    """Images in ``root/<class>/**/<image>.{jpg,jpeg,png}``, decoded one at a time on access.

    Classes are the sub-folders of ``root`` in sorted order, so label ``i`` is ``classes[i]``
    (as in ``torchvision.datasets.ImageFolder``, which this subclasses). Extensions are matched
    case-insensitively. Files with other extensions are not read and are listed in
    ``.ignored``; hidden files and folders (names starting with ``.``, such as
    ``.ipynb_checkpoints``) are skipped entirely. The dataset is picklable and works with
    ``DataLoader(num_workers=...)``; only the images asked for are decoded.

    Args:
        root: the folder holding one sub-folder per class.
        size: resize first: an int resizes the shorter side to it (torchvision's ``Resize``,
            bilinear, antialiased), a pair ``(H, W)`` resizes to exactly that.
        crop: then center-crop to ``crop`` (int or ``(H, W)``); 224 with ``size=256`` is the
            usual ImageNet evaluation. An image smaller than the crop is an error, not padded.
        grayscale: one channel (ITU-R 601 luma); otherwise three (RGB), also for grayscale,
            paletted or RGBA files.

    Attributes:
        classes: class names (folder names), sorted. class_to_idx: name -> label.
        samples: ``(path, label)`` for every image, in order. targets: the labels.
        ignored: paths of non-image files found in the class folders.

    Shape:
        Item ``i``: ``(image, label)`` with image float32 (C, H, W) in [0, 1], C = 1 or 3,
        and label an int in ``0..len(classes) - 1``.

    Raises:
        BoundgeoError: ``root`` missing or not a folder; no class folders, or only one; a class
            folder without images; on access, an unreadable or corrupt image (named).

    Example:
        >>> data = ImageFolder("data/cifar10")  # doctest: +SKIP
        >>> image, label = data[0]; data.classes[label]  # doctest: +SKIP
        'airplane'
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        size: int | tuple[int, int] | None = None,
        crop: int | tuple[int, int] | None = None,
        grayscale: bool = False,
    ) -> None:
        path = Path(root)
        if not path.exists():
            raise BoundgeoError(f"image folder {path} does not exist")
        if not path.is_dir():
            raise BoundgeoError(f"image folder {path} is not a directory")
        self.size = _pair(size, "size")
        self.crop = _pair(crop, "crop")
        if not isinstance(grayscale, bool):
            raise BoundgeoError(f"grayscale must be True or False, got {grayscale!r}")
        self.grayscale = grayscale
        self.ignored: list[str] = []
        super().__init__(
            str(path),
            loader=functools.partial(decode_file, grayscale=self.grayscale),
            extensions=IMAGE_EXTENSIONS,
        )
        self._resize = v2.Resize(self.size, antialias=True) if self.size is not None else None
        self._crop = v2.CenterCrop(self.crop) if self.crop is not None else None

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        with os.scandir(directory) as entries:
            entries = list(entries)
        classes = sorted(e.name for e in entries if e.is_dir() and not _hidden(e.name))
        if len(classes) < 2:
            images = [e.name for e in entries if e.name.lower().endswith(IMAGE_EXTENSIONS)]
            found = (f"only one class folder ({classes[0]!r})" if classes
                     else "no class folders")
            hint = f"; it holds {len(images)} image files directly" if images else ""
            raise BoundgeoError(
                f"image folder {directory}: found {found}{hint}; expected one sub-folder per "
                f"class (at least two), e.g. {directory}/<class>/<image>.jpg"
            )
        return classes, {name: i for i, name in enumerate(classes)}

    def make_dataset(self, directory: str, class_to_idx: dict[str, int], *args, **kwargs):
        samples, empty, ignored = [], [], []
        for name in sorted(class_to_idx, key=class_to_idx.__getitem__):
            found, walked = [], []
            for base, dirs, files in os.walk(os.path.join(directory, name), followlinks=True):
                dirs[:] = [d for d in dirs if not _hidden(d)]  # pruned while walking
                walked.append((base, files))
            # folders in the order of their paths as strings, as torchvision's make_dataset takes
            # them (sorted(os.walk(...))): "a/1.jpg", "a-b/2.jpg", "a/x/3.jpg", not depth first
            for base, files in sorted(walked):
                for file in sorted(files):
                    if _hidden(file):
                        continue
                    if file.lower().endswith(IMAGE_EXTENSIONS):
                        found.append((os.path.join(base, file), class_to_idx[name]))
                    else:
                        ignored.append(os.path.join(base, file))
            if not found:
                empty.append(name)
            samples.extend(found)
        if empty:
            raise BoundgeoError(
                f"image folder {directory}: class folders {empty[:5]} hold no images "
                f"(extensions read: {', '.join(IMAGE_EXTENSIONS)}, any case)"
            )
        self.ignored = ignored
        return samples

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        image = self.loader(path)
        if self._resize is not None:
            image = self._resize(image)
        if self._crop is not None:
            height, width = v2.functional.get_size(image)
            want = (self.crop, self.crop) if isinstance(self.crop, int) else self.crop
            if height < want[0] or width < want[1]:  # CenterCrop would pad with black
                raise BoundgeoError(
                    f"{path} is {height}x{width} after resizing, smaller than crop={self.crop}; "
                    f"pass size= of at least the crop"
                )
            image = self._crop(image)
        if isinstance(image, Image.Image):
            image = v2.functional.pil_to_tensor(image)
        return v2.functional.to_dtype(image, torch.float32, scale=True), label


def _collate(batch: list) -> tuple[torch.Tensor | None, torch.Tensor, list]:
    """Stack a batch in the worker (one tensor crosses the process boundary, not one per
    image); a batch of ragged images comes back as their shapes, for the error message."""
    images = [item[0] for item in batch]
    labels = torch.tensor([item[1] for item in batch], dtype=torch.int64)
    shapes = [tuple(image.shape) for image in images]
    if len(set(shapes)) == 1:
        return torch.stack(images), labels, shapes
    return None, labels, shapes


def stack_images(
    datasets: Sequence[ImageFolder],
    *,
    max_bytes: int,
    num_workers: int = 0,
    batch_size: int = 256,
    expect_shape: tuple[int, ...] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every image of ``datasets`` (in order) into one tensor, within ``max_bytes``.

    The size of the result is known from the first image before anything else is decoded;
    beyond ``max_bytes`` this refuses and points to lazy access. Items of another shape than
    the first are an error naming both files.

    Shape:
        Returns x float32 (N, C, H, W) in [0, 1] and y int64 (N,), N = total items.
    """
    max_bytes = check_count(max_bytes, "max_bytes")
    num_workers = check_count(num_workers, "num_workers", minimum=0)
    total = sum(len(d) for d in datasets)
    first, _ = datasets[0][0]
    shape = tuple(first.shape)
    if expect_shape is not None and shape != tuple(expect_shape):
        raise BoundgeoError(
            f"{datasets[0].samples[0][0]} decodes to shape {shape}, expected {tuple(expect_shape)}"
        )
    need = total * first.numel() * first.element_size()
    if need > max_bytes:
        raise BoundgeoError(
            f"{total} images of shape {shape} take {need / 2**30:.2f} GiB as float32, more than "
            f"max_bytes={max_bytes} ({max_bytes / 2**30:.2f} GiB); use bg.ImageFolder(root, ...) "
            f"for lazy access (pass it as data: it is read by index), pass size=/crop= for "
            f"smaller images, or raise max_bytes="
        )
    x = torch.empty((total, *shape), dtype=torch.float32)
    y = torch.empty(total, dtype=torch.int64)
    pos = 0
    for dataset in datasets:
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                            collate_fn=_collate)
        start = pos
        for images, labels, shapes in loader:
            odd = next((i for i, s in enumerate(shapes) if s != shape), None)
            if odd is not None:
                raise BoundgeoError(
                    f"images differ in size: {datasets[0].samples[0][0]} is "
                    f"{'x'.join(map(str, shape[1:]))} and {dataset.samples[pos - start + odd][0]} "
                    f"is {'x'.join(map(str, shapes[odd][1:]))} (HxW{_after(dataset)}); pass "
                    f"size=(H, W) or crop= to give them one size, or use bg.ImageFolder for "
                    f"lazy access"
                )
            x[pos : pos + len(labels)] = images
            y[pos : pos + len(labels)] = labels
            pos += len(labels)
    return x, y


def _after(dataset: ImageFolder) -> str:
    if dataset.size is None and dataset.crop is None:
        return ""
    return f" after size={dataset.size}, crop={dataset.crop}"
