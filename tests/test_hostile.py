"""Hostile files for every loader (issue 13): a file a user may be handed is refused with a
BoundgeoError naming it, never executed, and never lets a read or a write escape its folder.

Every payload below writes a marker file when unpickled; the marker must never appear. The
payloads are shown to be live (an ordinary unpickling runs them) so that these tests can fail.
Loaders covered: zoo.load_checkpoint, load_weights, Result.load (BoundaryPoints, Spectrum,
UniversalPerturbation), BoundaryPoints.load / spectrum / iter_shards of a run directory and its
resume, load_dataset for mnist (IDX), cifar10 (python batches) and image folders, and the command
line's reading of setup.json (normals, report).
"""

from __future__ import annotations

import builtins
import gzip
import io
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import boundgeo as bg
from boundgeo import zoo
from boundgeo.attacks.boundary import iter_shards
from boundgeo.cli import main


# ------------------------------------------------------------------------------ payloads
class _Exec:
    """Unpickled, it writes the marker with Python's own exec (no shell needed)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').close()",))


class _Shell:
    """Unpickled, it runs ``touch marker`` through os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


PAYLOADS = {"exec": _Exec, "shell": _Shell}


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "MARKER"
    yield path
    assert not path.exists(), "a hostile payload ran"


def _small() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()


def _evil_files(folder: Path, marker: Path, state_dict: dict) -> dict[str, Path]:
    """Pickles that carry a payload, in every container torch or pickle writes."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for kind, payload in PAYLOADS.items():
        ckpt = {"arch": "mlp", "input_shape": [1, 8, 8], "num_classes": 10, "state_dict": state_dict,
                "meta": {"hook": payload(marker)}}
        files[f"torch.save {kind}"] = folder / f"zip_{kind}.pt"
        torch.save(ckpt, files[f"torch.save {kind}"])
        files[f"legacy torch.save {kind}"] = folder / f"legacy_{kind}.pt"
        torch.save(ckpt, files[f"legacy torch.save {kind}"], _use_new_zipfile_serialization=False)
        files[f"pickle.dump {kind}"] = folder / f"raw_{kind}.pkl"
        files[f"pickle.dump {kind}"].write_bytes(pickle.dumps(ckpt, protocol=2))
        inside = {**state_dict, "1.weight": payload(marker)}  # the payload as a weight
        files[f"payload as a weight {kind}"] = folder / f"weight_{kind}.pt"
        torch.save({**ckpt, "state_dict": inside, "meta": {}}, files[f"payload as a weight {kind}"])
    return files


def test_the_payloads_are_live(tmp_path):
    """An ordinary unpickling of each file runs its payload: the refusals below are real."""
    for kind, payload in PAYLOADS.items():
        marker = tmp_path / f"MARKER_{kind}"
        pickle.loads(pickle.dumps(payload(marker)))
        assert marker.exists()
    marker = tmp_path / "MARKER_torch"
    files = _evil_files(tmp_path / "files", marker, _small().state_dict())
    torch.load(files["torch.save exec"], weights_only=False)
    assert marker.exists()
    marker.unlink()
    np.save(tmp_path / "obj.npy", np.array([_Exec(marker)], dtype=object), allow_pickle=True)
    np.load(tmp_path / "obj.npy", allow_pickle=True)
    assert marker.exists()


# ------------------------------------------------------------------------------ checkpoints
def _damaged(folder: Path, good: Path) -> dict[str, Path]:
    data = good.read_bytes()
    files = {"empty": folder / "empty.pt", "truncated": folder / "cut.pt", "text": folder / "text.pt"}
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["text"].write_text("{'state_dict': 'not a checkpoint'}")
    return files


def _outside_link(tmp_path: Path, target: Path, name: str) -> Path:
    """A file in a folder of its own that is a symlink to ``target`` elsewhere."""
    folder = tmp_path / "handed"
    folder.mkdir(exist_ok=True)
    link = folder / name
    link.symlink_to(target)
    return link


def test_load_checkpoint_refuses_payloads_damage_and_links(tmp_path, marker):
    good = zoo.train("mlp", torch.rand(10, 1, 8, 8), torch.arange(10), epochs=1)
    files = _evil_files(tmp_path / "evil", marker, good.model.state_dict())
    files.update(_damaged(tmp_path, good.save(tmp_path / "good.pt")))
    files["link to a payload"] = _outside_link(tmp_path, files["torch.save exec"], "ckpt.pt")
    files["link to a device"] = _outside_link(tmp_path, Path("/dev/zero"), "zero.pt")
    for case, path in files.items():
        with pytest.raises(bg.BoundgeoError, match=path.name.replace(".", r"\.")):
            zoo.load_checkpoint(path)
        assert not marker.exists(), case
    assert zoo.load_checkpoint(tmp_path / "good.pt").num_classes == 10  # the good one still loads


def test_load_weights_refuses_payloads_damage_and_links(tmp_path, marker):
    files = _evil_files(tmp_path / "evil", marker, _small().state_dict())
    torch.save(_small().state_dict(), tmp_path / "good.pt")
    files.update(_damaged(tmp_path, tmp_path / "good.pt"))
    files["link to a payload"] = _outside_link(tmp_path, files["legacy torch.save shell"], "w.pt")
    files["link to a device"] = _outside_link(tmp_path, Path("/dev/zero"), "zero.pt")
    for case, path in files.items():
        with pytest.raises(bg.BoundgeoError, match=path.name.replace(".", r"\.")):
            bg.load_weights(_small(), path)
        assert not marker.exists(), case


FACTORY = "from torch import nn\n\ndef make():\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n"


def test_the_command_line_refuses_a_payload_in_one_line(tmp_path, marker, capsys):
    (tmp_path / "nets.py").write_text(FACTORY)
    files = _evil_files(tmp_path / "evil", marker, _small().state_dict())
    for case in ("torch.save exec", "pickle.dump shell"):
        code = main(["normals", "--out", str(tmp_path / "out"), "--model", f"{tmp_path / 'nets.py'}:make",
                     "--weights", str(files[case]), "--n", "3"])
        err = capsys.readouterr().err
        assert code == 2 and "NOT loaded" in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1, err
        assert not marker.exists(), case


# ------------------------------------------------------------------------------ saved results
def _object_npy(path: Path, marker: Path) -> None:
    np.save(path, np.array([_Exec(marker)] * 3, dtype=object), allow_pickle=True)


def _npz_with(path: Path, name: str, member: bytes) -> None:
    """Rewrite the .npz at ``path`` with the member ``name`` replaced by ``member`` (raw bytes)."""
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    assert name in arrays, (name, sorted(arrays))
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, value)
            archive.writestr(key + ".npy", member if key == name else buffer.getvalue())


def _huge_header() -> bytes:
    """An .npy member whose header claims 2**40 float32 values (4 TiB) and holds 16 bytes."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": (2**40,)})
    return b"\x93NUMPY\x01\x00" + buffer.getvalue()[8:] + bytes(16)


@pytest.fixture(scope="module")
def results(small_net, tmp_path_factory):
    """One saved result of three kinds, and a finished run directory."""
    model, x, _ = small_net
    clf = bg.Classifier(model)
    folder = tmp_path_factory.mktemp("results")
    pts = bg.deepfool(clf, x[:6])
    saved = {
        bg.BoundaryPoints: (pts.save(folder / "pts"), "normal"),
        bg.Spectrum: (bg.spectrum(pts, baseline_draws=0).save(folder / "spectrum"), "singular_values"),
        bg.UniversalPerturbation: (bg.universal_perturbation(clf, x[:6], xi=1.0, max_passes=1, method="batched",
                                                             progress=False).save(folder / "uap"), "perturbation"),
    }
    run = folder / "run"
    bg.boundary_normals(clf, x[:30], out=run, shard_size=10, progress=False)
    return saved, run, clf, x[:30]


def _copy(stem: Path, to: Path) -> Path:
    to.mkdir(parents=True, exist_ok=True)
    for suffix in (".json", ".npz"):
        shutil.copy(stem.with_suffix(suffix), to / (stem.name + suffix))
    return to / stem.name


@pytest.mark.parametrize("damage", ["object array", "raw pickle member", "huge header", "empty npz", "200k-deep json",
                                    "invalid utf-8 json", "npz linked to a payload"])
@pytest.mark.parametrize("cls", [bg.BoundaryPoints, bg.Spectrum, bg.UniversalPerturbation], ids=lambda c: c.__name__)
def test_saved_results_refuse_hostile_files(tmp_path, marker, results, cls, damage):
    saved, _, _, _ = results
    stem = _copy(saved[cls][0], tmp_path / "copy")
    field = saved[cls][1]
    npz, json_path = stem.with_suffix(".npz"), stem.with_suffix(".json")
    if damage == "object array":
        _object_npy(tmp_path / "obj.npy", marker)
        _npz_with(npz, field, (tmp_path / "obj.npy").read_bytes())
    elif damage == "raw pickle member":
        _npz_with(npz, field, pickle.dumps(_Shell(marker)))
    elif damage == "huge header":  # numpy allocated 4 TiB before reading: a raw MemoryError
        _npz_with(npz, field, _huge_header())
    elif damage == "empty npz":
        npz.write_bytes(b"")
    elif damage == "200k-deep json":
        json_path.write_text("[" * 200_000 + "]" * 200_000)
    elif damage == "invalid utf-8 json":
        json_path.write_bytes(b"\xff\xfe{}")
    else:
        evil = tmp_path / "evil.npz"
        shutil.copy(npz, evil)
        _object_npy(tmp_path / "obj.npy", marker)
        _npz_with(evil, field, (tmp_path / "obj.npy").read_bytes())
        npz.unlink()
        npz.symlink_to(evil)
    named = (json_path if "json" in damage else npz).name
    with pytest.raises(bg.BoundgeoError, match=named.replace(".", r"\.")):
        cls.load(stem)


# ------------------------------------------------------------------------------ run directories
def _run_copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy, symlinks=True)
    return copy


def _loaders(run: Path):
    return {"BoundaryPoints.load": lambda: bg.BoundaryPoints.load(run),
            "spectrum": lambda: bg.spectrum(run, baseline_draws=0)}


@pytest.mark.parametrize("name", ["normal", "margin", "index"])
def test_a_run_directory_with_a_payload_array_is_refused(tmp_path, marker, results, name):
    run = _run_copy(results[1], tmp_path)
    _object_npy(run / "points" / f"{name}.npy", marker)
    for loader in _loaders(run).values():
        with pytest.raises(bg.BoundgeoError, match=rf"{name}\.npy"):
            loader()


def test_a_run_directory_with_a_huge_or_cut_header_is_refused(tmp_path, results):
    run = _run_copy(results[1], tmp_path)
    normal = run / "points" / "normal.npy"
    normal.write_bytes(_huge_header())
    for loader in _loaders(run).values():
        with pytest.raises(bg.BoundgeoError, match=r"normal\.npy"):
            loader()
    normal.write_bytes(b"\x93NUMPY\x01\x00\xff\xff{'descr'")  # a header length beyond the file
    for loader in _loaders(run).values():
        with pytest.raises(bg.BoundgeoError, match=r"normal\.npy"):
            loader()


def test_a_run_directory_whose_points_link_outside_is_refused(tmp_path, results):
    """Arrays behind a symlinked points/ folder lie outside the run: they are not read."""
    run = _run_copy(results[1], tmp_path)
    outside = tmp_path / "outside_points"
    shutil.move(run / "points", outside)
    (run / "points").symlink_to(outside)
    for loader in _loaders(run).values():
        with pytest.raises(bg.BoundgeoError, match="leads outside"):
            loader()
    (run / "points").unlink()
    shutil.copytree(outside, run / "points")
    (run / "points" / "normal.npy").unlink()
    (run / "points" / "normal.npy").symlink_to(outside / "normal.npy")
    for loader in _loaders(run).values():
        with pytest.raises(bg.BoundgeoError, match="leads outside"):
            loader()


def test_a_payload_shard_is_never_read_on_resume_and_iter_shards_refuses_it(tmp_path, marker, results):
    _, run, clf, x = results
    run = _run_copy(run, tmp_path)
    shard = run / "shards" / "00001.npz"
    _object_npy(tmp_path / "obj.npy", marker)
    _npz_with(shard, "normal", (tmp_path / "obj.npy").read_bytes())
    with pytest.raises(bg.BoundgeoError, match=r"00001\.npz/\.json do not match their checksum"):
        list(iter_shards(run))
    with pytest.warns(UserWarning, match=r"00001\.npz/\.json no longer match their checksum"):
        again = bg.boundary_normals(clf, x, out=run, shard_size=10, progress=False)
    torch.testing.assert_close(again.normal, bg.BoundaryPoints.load(results[1]).normal, rtol=0, atol=0)


def test_a_symlinked_lock_file_is_refused_and_its_target_left_alone(tmp_path, results):
    _, run, clf, x = results
    run = _run_copy(run, tmp_path)
    precious = tmp_path / "precious.txt"
    precious.write_text("the user's file")
    (run / ".lock").unlink(missing_ok=True)
    (run / ".lock").symlink_to(precious)
    try:
        with pytest.raises(bg.BoundgeoError, match=r"\.lock"):
            bg.boundary_normals(clf, x, out=run, shard_size=10, progress=False)
    finally:
        assert precious.read_text() == "the user's file", "a write escaped through the symlinked lock"


def test_symlinked_run_folders_are_refused_and_nothing_is_written_outside(tmp_path, results):
    _, _, clf, x = results
    run, outside = tmp_path / "run", tmp_path / "outside"
    run.mkdir()
    outside.mkdir()
    (run / "shards").symlink_to(outside)
    try:
        with pytest.raises(bg.BoundgeoError, match="shards"):
            bg.boundary_normals(clf, x, out=run, shard_size=10, progress=False)
    finally:
        assert not list(outside.iterdir()), "the run wrote outside its folder"


# ------------------------------------------------------------------------------ datasets
def _idx(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape) + array.tobytes()


def _mnist_folder(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz"
    images.write_bytes(gzip.compress(_idx(np.zeros((3, 28, 28), dtype=np.uint8))))
    labels.write_bytes(gzip.compress(_idx(np.array([0, 1, 2], dtype=np.uint8))))
    return images, labels


def _gzip_bomb(path: Path, n: int) -> None:
    """An IDX file of n 28x28 zero images, gzipped in 1 MiB pieces (64 MiB make 64 KB)."""
    import zlib

    pack = zlib.compressobj(1, zlib.DEFLATED, 31)
    with open(path, "wb") as handle:
        handle.write(pack.compress(bytes([0, 0, 8, 3]) + b"".join(int(s).to_bytes(4, "big") for s in (n, 28, 28))))
        zeros = bytes(2**20)
        for _ in range(n * 784 // 2**20):
            handle.write(pack.compress(zeros))
        handle.write(pack.compress(bytes(n * 784 % 2**20)) + pack.flush())


def test_mnist_refuses_bombs_devices_and_damage(tmp_path, monkeypatch):
    images, labels = _mnist_folder(tmp_path / "mnist")
    assert bg.load_dataset("mnist", root=tmp_path / "mnist")[0].shape == (3, 1, 28, 28)
    whole = images.read_bytes()
    cases = {
        "empty": b"",
        "truncated gzip": whole[: len(whole) // 2],
        "one byte too many": gzip.compress(_idx(np.zeros((3, 28, 28), dtype=np.uint8)) + b"\0"),
    }
    for case, content in cases.items():
        images.write_bytes(content)
        with pytest.raises(bg.BoundgeoError, match=r"t10k-images-idx3-ubyte\.gz"):
            bg.load_dataset("mnist", root=tmp_path / "mnist")
    # a gzip bomb: its header is read, and the 64 MiB behind it are not decompressed (the limit
    # is lowered to 1 MiB here; at the real 1 GiB the old code needed 5 GiB for such a file)
    monkeypatch.setattr(bg.io.datasets, "IDX_MAX_BYTES", 2**20)
    _gzip_bomb(images, 2**26 // 784)
    assert images.stat().st_size < 2**20
    with pytest.raises(bg.BoundgeoError, match=r"t10k-images-idx3-ubyte\.gz: header says .* more than the 1048576"):
        bg.load_dataset("mnist", root=tmp_path / "mnist")
    # a symlink to a device would be read forever
    images.unlink()
    images.symlink_to("/dev/zero")
    with pytest.raises(bg.BoundgeoError, match=r"t10k-images-idx3-ubyte\.gz is not a regular file"):
        bg.load_dataset("mnist", root=tmp_path / "mnist")


def _cifar_payload(path: Path, marker: Path, where: str) -> None:
    batch = {b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [0, 1]}
    if where == "data":
        batch[b"data"] = _Exec(marker)
    elif where == "labels":
        batch[b"labels"] = [_Shell(marker), 1]
    elif where == "extra key":
        batch[b"filenames"] = _Exec(marker)
    else:  # an object array: numpy's reconstruction asked to build the payload inside it
        batch[b"data"] = np.array([_Exec(marker)], dtype=object)
    path.write_bytes(pickle.dumps(batch, protocol=2))


@pytest.mark.parametrize("where", ["data", "labels", "extra key", "object array"])
def test_cifar10_batches_never_run_a_payload(tmp_path, marker, where):
    _cifar_payload(tmp_path / "test_batch", marker, where)
    with pytest.raises(bg.BoundgeoError, match="test_batch"):
        bg.load_dataset("cifar10", root=tmp_path)


def test_cifar10_batches_refuse_damage_and_devices(tmp_path):
    batch = {b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [0, 1]}
    whole = pickle.dumps(batch, protocol=2)
    for content in (b"", whole[: len(whole) // 2], b"not a pickle"):
        (tmp_path / "test_batch").write_bytes(content)
        with pytest.raises(bg.BoundgeoError, match="test_batch"):
            bg.load_dataset("cifar10", root=tmp_path)
    (tmp_path / "test_batch").unlink()
    (tmp_path / "test_batch").symlink_to("/dev/zero")
    with pytest.raises(bg.BoundgeoError, match="test_batch is not a regular file"):
        bg.load_dataset("cifar10", root=tmp_path)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("bad", ["empty", "truncated", "pickle named .jpg", "bomb", "link to a device"])
def test_image_folders_refuse_hostile_images(tmp_path, marker, bad):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "f" / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "f" / cls / "ok.png")
    target = tmp_path / "f" / "b" / "x.png"
    if bad == "empty":
        target.write_bytes(b"")
    elif bad == "truncated":
        target.write_bytes((tmp_path / "f" / "a" / "ok.png").read_bytes()[:30])
    elif bad == "pickle named .jpg":
        target = target.with_suffix(".jpg")
        target.write_bytes(pickle.dumps(_Exec(marker)))
    elif bad == "bomb":
        target.write_bytes(_png_claiming(60_000, 60_000))
    else:
        target.symlink_to("/dev/zero")
    with pytest.raises(bg.BoundgeoError, match=target.name.replace(".", r"\.")):
        bg.load_dataset("folder", root=tmp_path / "f")


# ------------------------------------------------------------------------------ command line files
def _setup_cases(folder: Path) -> dict[str, bytes]:
    return {"200k-deep": b"[" * 200_000 + b"]" * 200_000, "invalid utf-8": b"\xff\xfe{}", "truncated": b'{"model": ',
            "a list": b"[1, 2]"}


def test_the_report_names_a_hostile_setup_json(tmp_path, results, capsys):
    saved, _, _, _ = results
    out = tmp_path / "out"
    _copy(saved[bg.Spectrum][0], out)  # a result to report on
    for case, content in _setup_cases(out).items():
        (out / "setup.json").write_bytes(content)
        code = main(["report", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and "setup.json" in err and "Traceback" not in err, (case, err)


def test_stage_commands_name_a_hostile_setup_json(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    failures = []
    for case, content in _setup_cases(out).items():
        (out / "setup.json").write_bytes(content)
        try:
            code = main(["normals", "--out", str(out), "--n", "3"])
        except Exception as exc:  # noqa: BLE001 - what escapes is the finding
            failures.append(f"{case}: {type(exc).__name__}")
            continue
        err = capsys.readouterr().err
        if code != 2 or "setup.json" not in err:
            failures.append(f"{case}: exit {code}, {err!r}")
    assert not failures, failures
