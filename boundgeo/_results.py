"""Saving and loading result dataclasses without pickle: arrays in ``.npz``, the rest in ``.json``.

Every result class is a frozen dataclass that inherits :class:`Result`. Tensor and ndarray
fields go to ``<stem>.npz`` (read back with ``allow_pickle=False``); every other field must be
JSON-serialisable and goes to ``<stem>.json`` together with the class name and the boundgeo
version that wrote it. ``load`` restores tensors as tensors, arrays as arrays and tuples as
tuples, so ``load(save(r))`` equals ``r`` field by field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from ._errors import BoundgeoError

R = TypeVar("R", bound="Result")


def _stem(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.suffix in (".npz", ".json"):
        path = path.with_suffix("")
    return path


def atomic_write_bytes(path: Path, write) -> None:
    """Write through ``write(fileobj)`` into a temporary file, then rename it onto ``path``.

    The file is synced to disk before the rename and the directory after it, so that a crash,
    even of the machine, leaves either the old file or the new one, never half of one. The
    temporary name is unique (``.<name>.<random>.tmp``): two writers never share one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)


def fsync_directory(folder: Path) -> None:
    """Make the renames within ``folder`` durable (POSIX; directories cannot be opened elsewhere)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: Path) -> Any:
    """The JSON value in ``path``; an unreadable, truncated, empty or absurdly nested file is a
    BoundgeoError naming it."""
    try:
        return json.loads(Path(path).read_bytes())
    except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BoundgeoError(f"{path} is not readable JSON ({type(exc).__name__}: {str(exc)[:200]})") from None


def _jsonable(value: Any, name: str) -> tuple[Any, Any]:
    """Return (json value, kind tag) for a non-array field."""
    if isinstance(value, tuple):
        return [_jsonable(v, name)[0] for v in value], "tuple"
    if isinstance(value, (np.integer,)):
        return int(value), "scalar"
    if isinstance(value, (np.floating,)):
        return float(value), "scalar"
    if isinstance(value, np.bool_):
        return bool(value), "scalar"
    try:
        json.dumps(value)
    except TypeError as exc:
        raise BoundgeoError(
            f"field {name!r} of type {type(value).__name__} cannot be saved as JSON"
        ) from exc
    return value, "json"


class Result:
    """Mixin for frozen result dataclasses: ``save``, ``load`` and ``to_frame``."""

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``<path>.npz`` (arrays) and ``<path>.json`` (everything else).

        Args:
            path: file stem; a ``.npz`` or ``.json`` suffix is dropped.

        Returns:
            The stem that :meth:`load` takes.
        """
        from . import __version__

        stem = _stem(path)
        arrays: dict[str, np.ndarray] = {}
        kinds: dict[str, str] = {}
        values: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, torch.Tensor):
                arrays[field.name] = value.detach().cpu().numpy()
                kinds[field.name] = "tensor"
            elif isinstance(value, np.ndarray):
                arrays[field.name] = np.asarray(value)
                kinds[field.name] = "ndarray"
            elif value is None:
                values[field.name], kinds[field.name] = None, "json"
            else:
                values[field.name], kinds[field.name] = _jsonable(value, field.name)
        record = {
            "type": type(self).__name__,
            "boundgeo_version": __version__,
            "kinds": kinds,
            "fields": values,
        }
        atomic_write_bytes(stem.with_suffix(".npz"), lambda h: np.savez(h, **arrays))
        text = json.dumps(record, indent=2, sort_keys=True).encode()
        atomic_write_bytes(stem.with_suffix(".json"), lambda h: h.write(text))
        return stem

    @classmethod
    def load(cls: type[R], path: str | os.PathLike) -> R:
        """Read a result written by :meth:`save` (no pickle is ever unpickled)."""
        stem = _stem(path)
        json_path, npz_path = stem.with_suffix(".json"), stem.with_suffix(".npz")
        for p in (json_path, npz_path):
            if not p.exists():
                raise BoundgeoError(f"cannot load {cls.__name__}: {p} does not exist")
        record = read_json(json_path)
        if not isinstance(record, dict) or record.get("type") != cls.__name__:
            found = record.get("type") if isinstance(record, dict) else type(record).__name__
            raise BoundgeoError(f"{json_path} holds a {found!r}, not a {cls.__name__!r}")
        kinds, values = record.get("kinds"), record.get("fields")
        if not isinstance(kinds, dict) or not isinstance(values, dict):
            raise BoundgeoError(f"{json_path} lacks the 'kinds' and 'fields' of a saved {cls.__name__}")
        kwargs: dict[str, Any] = {}
        try:
            with zipfile.ZipFile(npz_path) as archive:
                for field in dataclasses.fields(cls):
                    kind = kinds.get(field.name)
                    if kind == "tensor":
                        kwargs[field.name] = torch.from_numpy(_read_member(archive, field.name, npz_path))
                    elif kind == "ndarray":
                        kwargs[field.name] = _read_member(archive, field.name, npz_path)
                    elif kind == "tuple":
                        kwargs[field.name] = _to_tuple(values[field.name])
                    elif kind is not None:
                        kwargs[field.name] = values[field.name]
        except BoundgeoError:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, TypeError, MemoryError) as exc:
            raise BoundgeoError(f"{npz_path} (with {json_path.name}) is not a readable {cls.__name__}: "
                                f"{type(exc).__name__}: {str(exc)[:200]}") from None
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise BoundgeoError(f"{json_path} does not describe a {cls.__name__}: {exc}") from None


def _read_member(archive: zipfile.ZipFile, name: str, npz_path: Path) -> np.ndarray:
    """The numeric array ``name`` of an .npz, read without pickle. Its header is checked against
    the member's stored size before anything is allocated: numpy allocates what a header claims
    (4 TiB for a forged one) before it finds the data missing."""
    try:
        info = archive.getinfo(f"{name}.npy")
    except KeyError:
        raise BoundgeoError(f"{npz_path} lacks the array {name!r}") from None
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version not in ((1, 0), (2, 0)):
            raise BoundgeoError(f"{npz_path}: {name}.npy has .npy format {version}, not one numpy.savez writes")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(member)
        stored = info.file_size - member.tell()
    if dtype.hasobject or dtype.kind not in "biuf":
        raise BoundgeoError(f"{npz_path}: {name}.npy holds a {dtype} array, not numbers")
    declared = math.prod(shape) * dtype.itemsize
    if declared != stored:
        raise BoundgeoError(f"{npz_path}: {name}.npy declares {shape} ({declared} bytes) but holds {stored} bytes")
    with archive.open(info) as member:
        return np.lib.format.read_array(member, allow_pickle=False)


def _to_tuple(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_to_tuple(v) for v in value)
    return value
