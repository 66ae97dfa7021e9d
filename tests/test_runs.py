"""Runs of boundary_normals(out=DIR) that cannot be mixed up, and result files that cannot lie.

Resume after SIGKILL, one writer at a time, checksums per shard, fingerprints of model and
data, paths confined to the result's folder, durable atomic writes, malformed files refused,
float16 storage.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import boundgeo as bg
import boundgeo.attacks.boundary as boundary
from boundgeo._results import atomic_write_bytes

ROOT = Path(__file__).resolve().parent.parent
spectrum_module = importlib.import_module("boundgeo.geometry.spectral")  # bg.spectrum is the function
ARRAYS = ("perturbation", "normal", "margin", "label", "target", "iterations", "converged", "status",
          "index")

# Every file Python opens while ``_OPENED`` is a list is recorded there (audit hooks cannot be
# removed, so the hook is installed once and stays idle otherwise).
_OPENED: list[str] | None = None


def _record_open(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.path.abspath(os.fsdecode(args[0])))


sys.addaudithook(_record_open)


def _same_points(a: bg.BoundaryPoints, b: bg.BoundaryPoints) -> None:
    for name in ARRAYS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def _interrupted(monkeypatch, after: int, run) -> None:
    """Run ``run()`` with DeepFool dying (KeyboardInterrupt) after ``after`` shards."""
    real, calls = boundary.deepfool, []

    def dies(*args, **kwargs):
        if len(calls) == after:
            raise KeyboardInterrupt("simulated interruption")
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(boundary, "deepfool", dies)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(boundary, "deepfool", real)


def _other_model(model: nn.Module) -> nn.Module:
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 1e-3  # one weight, barely
    return other


KW = dict(n=100, shard_size=20, batch_size=20, seed=1, progress=False)


# ------------------------------------------------------------------------------ subprocess runs
CHILD = textwrap.dedent(
    """
    import sys, time
    import torch
    from torch import nn
    import boundgeo as bg

    torch.set_num_threads(1)
    out, delay, die_in_write = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    if die_in_write:  # SIGKILL half way through writing that shard's .npz: the worst moment
        import os, signal
        import numpy

        real_savez, saved = numpy.savez, []

        def savez(file, *args, **kwargs):
            saved.append(1)
            if len(saved) == die_in_write:
                file.write(b"PK\x03\x04 half a shard")
                file.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real_savez(file, *args, **kwargs)

        numpy.savez = savez


    class Slow(nn.Module):
        def __init__(self, delay):
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
            self.delay = delay

        def forward(self, x):
            time.sleep(self.delay)
            return self.net(x)


    x, _ = bg.load_dataset("digits", split="test")
    pts = bg.boundary_normals(bg.Classifier(Slow(delay).eval()), x[:240], out=out, shard_size=20,
                              batch_size=20, progress=False)
    print(len(pts))
    """
)


def _child(tmp_path: Path, out: Path, delay: float, die_in_write: int = 0) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), str(out), str(delay), str(die_in_write)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finished(proc: subprocess.Popen) -> str:
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    return stdout


def _wait_for_shards(proc: subprocess.Popen, out: Path, count: int) -> None:
    """Until ``count`` shards of the run in ``out`` are written."""
    deadline = time.monotonic() + 300  # a loaded CI machine can take minutes to start torch
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        if len(list((out / "shards").glob("*.json"))) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"no {count} shards in {out} after 300 s")


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["between shards", "inside a write"])
def test_a_killed_run_resumes_to_the_uninterrupted_result_bit_for_bit(tmp_path, moment):
    _finished(_child(tmp_path, tmp_path / "reference", 0.0))
    run = tmp_path / "run"
    if moment == "between shards":
        proc = _child(tmp_path, run, 0.1)  # 12 shards, about 0.5 s each
        _wait_for_shards(proc, run, 4)  # so that run.json records at least 3
        proc.send_signal(signal.SIGKILL)
    else:
        proc = _child(tmp_path, run, 0.0, die_in_write=4)
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "points" / "meta.json").exists(), "killed too late: the run had finished"
    if moment == "inside a write":
        assert list((run / "shards").glob(".00003.npz.*.tmp")), "the kill should leave half a shard"
    # the shards run.json vouches for (a shard written just before the kill may not be in it yet)
    finished = [run / "shards" / f"{int(k):05d}.npz" for k in json.loads((run / "run.json").read_text())["shards"]]
    assert len(finished) >= 3
    kept = {p: p.stat().st_mtime_ns for p in finished}
    assert _finished(_child(tmp_path, run, 0.0)).strip() == "240"
    assert {p: p.stat().st_mtime_ns for p in finished} == kept  # reused, not computed again
    for name in ARRAYS:
        a = np.load(tmp_path / "reference" / "points" / f"{name}.npy")
        b = np.load(run / "points" / f"{name}.npy")
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), name
    assert not list(run.rglob("*.tmp")), "temporary files left behind"


@pytest.mark.slow
def test_a_second_writer_is_refused_at_once(tmp_path, small_net):
    model, x, _ = small_net
    proc = _child(tmp_path, tmp_path / "run", 0.05)
    _wait_for_shards(proc, tmp_path / "run", 1)
    with pytest.raises(bg.BoundgeoError, match="being written by another process .*pid"):
        bg.boundary_normals(bg.Classifier(model), x[:240], out=tmp_path / "run", progress=False)
    assert proc.poll() is None, "the first writer should still be running"
    assert _finished(proc).strip() == "240"  # and it finishes undisturbed
    assert len(bg.BoundaryPoints.load(tmp_path / "run")) == 240


def test_the_lock_is_released_after_a_run_and_after_a_failure(tmp_path, small_net, monkeypatch):
    model, x, _ = small_net
    clf = bg.Classifier(model)
    _interrupted(monkeypatch, 1, lambda: bg.boundary_normals(clf, x, out=tmp_path / "run", **KW))
    bg.boundary_normals(clf, x, out=tmp_path / "run", **KW)
    assert len(bg.boundary_normals(clf, x, out=tmp_path / "run", **KW)) == 100


# ------------------------------------------------------------------------------ fingerprints
def test_resuming_with_a_different_model_is_refused(tmp_path, small_net, monkeypatch):
    model, x, y = small_net
    clf = bg.Classifier(model)
    _interrupted(monkeypatch, 2, lambda: bg.boundary_normals(clf, (x, y), out=tmp_path / "run", **KW))
    for other in (bg.Classifier(_other_model(model)), bg.Classifier(model, mean=0.1),
                  bg.Classifier(model, bounds=(0.0, 2.0))):
        with pytest.raises(bg.BoundgeoError, match="a different model") as err:
            bg.boundary_normals(other, (x, y), out=tmp_path / "run", **KW)
        assert "data" not in str(err.value) and "settings" not in str(err.value)
    resumed = bg.boundary_normals(clf, (x, y), out=tmp_path / "run", **KW)
    _same_points(resumed, bg.boundary_normals(clf, (x, y), **KW))


def _conv_net(padding_mode: str = "zeros") -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode=padding_mode), nn.Flatten(),
                         nn.Linear(2 * 8 * 8, 10)).eval()


def test_the_configuration_fingerprint_sees_what_the_weights_do_not():
    """Same weights, other outputs: a padding mode, the outputs= setting, a buffer kept out of the
    state_dict. The weights' fingerprint (which bench_universal's ART runs record) is blind to them."""
    zeros, reflect = _conv_net(), _conv_net("reflect")
    x = torch.rand(4, 1, 8, 8)
    assert not torch.allclose(zeros(x), reflect(x))
    a, b = bg.Classifier(zeros), bg.Classifier(reflect)
    assert boundary._model_fingerprint(a) == boundary._model_fingerprint(b)
    assert boundary._model_config(a) != boundary._model_config(b)
    assert boundary._model_config(a) == boundary._model_config(bg.Classifier(_conv_net()))
    assert boundary._model_config(a) != boundary._model_config(bg.Classifier(_conv_net(), outputs="probabilities"))
    shifted = _conv_net()
    shifted.register_buffer("shift", torch.zeros(1), persistent=False)
    other = _conv_net()
    other.register_buffer("shift", torch.ones(1), persistent=False)
    assert boundary._model_fingerprint(bg.Classifier(shifted)) == boundary._model_fingerprint(bg.Classifier(other))
    assert boundary._model_config(bg.Classifier(shifted)) != boundary._model_config(bg.Classifier(other))


def test_resuming_with_another_configuration_of_the_same_weights_is_refused(tmp_path, monkeypatch):
    x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    clf = bg.Classifier(_conv_net())
    kw = dict(batch_size=10, progress=False)
    _interrupted(monkeypatch, 2, lambda: bg.boundary_normals(clf, x, out=tmp_path / "run", **kw))
    with pytest.raises(bg.BoundgeoError, match="a different model configuration"):
        bg.boundary_normals(bg.Classifier(_conv_net("reflect")), x, out=tmp_path / "run", **kw)
    # a run recorded before the configuration was fingerprinted resumes, with a warning
    run_json = tmp_path / "run" / "run.json"
    record = json.loads(run_json.read_text())
    del record["fingerprint"]["model_config"]
    run_json.write_text(json.dumps(record))
    with pytest.warns(UserWarning, match="before boundgeo fingerprinted the model's configuration"):
        resumed = bg.boundary_normals(clf, x, out=tmp_path / "run", **kw)
    _same_points(resumed, bg.boundary_normals(clf, x, **kw))


def test_a_float16_run_of_the_old_rounding_is_not_resumed(tmp_path, monkeypatch):
    """float16 shards written before session 20 rounded r toward zero and were not checked."""
    x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    clf = bg.Classifier(_conv_net())
    kw = dict(batch_size=10, progress=False, dtype=torch.float16)
    _interrupted(monkeypatch, 2, lambda: bg.boundary_normals(clf, x, out=tmp_path / "run", **kw))
    run_json = tmp_path / "run" / "run.json"
    record = json.loads(run_json.read_text())
    assert record["settings"]["storage_rounding"] == "outward, checked"
    del record["settings"]["storage_rounding"]
    run_json.write_text(json.dumps(record))
    with pytest.raises(bg.BoundgeoError, match="storage_rounding was None"):
        bg.boundary_normals(clf, x, out=tmp_path / "run", **kw)


def test_resuming_with_different_data_of_the_same_length_is_refused(tmp_path, small_net, monkeypatch):
    model, x, y = small_net
    clf = bg.Classifier(model)
    _interrupted(monkeypatch, 2, lambda: bg.boundary_normals(clf, (x, y), out=tmp_path / "run", **KW))
    shuffled = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    for data in ((x[shuffled], y[shuffled]), (x, (y + 1) % 10), (x[:-1], y[:-1])):
        with pytest.raises(bg.BoundgeoError, match="different data"):
            bg.boundary_normals(clf, data, out=tmp_path / "run", **KW)
    with pytest.raises(bg.BoundgeoError, match=r"a different model .* and different data .* and other "
                                               r"settings \(seed was 1, now 2\)"):
        bg.boundary_normals(bg.Classifier(_other_model(model)), (x[shuffled], y[shuffled]),
                            out=tmp_path / "run", **{**KW, "seed": 2})


def test_a_deleted_run_json_does_not_let_old_shards_be_reused(tmp_path, small_net, monkeypatch):
    model, x, y = small_net
    clf, other = bg.Classifier(model), bg.Classifier(_other_model(model))
    _interrupted(monkeypatch, 3, lambda: bg.boundary_normals(clf, (x, y), out=tmp_path / "run", **KW))
    (tmp_path / "run" / "run.json").unlink()
    with pytest.warns(UserWarning, match="3 shards with no run.json"):
        from_other = bg.boundary_normals(other, (x, y), out=tmp_path / "run", **KW)
    _same_points(from_other, bg.boundary_normals(other, (x, y), **KW))


# ------------------------------------------------------------------------------ checksums
def test_a_replaced_or_rewritten_shard_is_computed_again(tmp_path, small_net):
    model, x, y = small_net
    clf = bg.Classifier(model)
    reference = bg.boundary_normals(clf, (x, y), **KW)
    bg.boundary_normals(clf, (x, y), out=tmp_path / "run", **KW)
    shards = tmp_path / "run" / "shards"
    for suffix in (".npz", ".json"):  # shard 1 copied over shard 2: 20 duplicate points, once
        shutil.copy(shards / f"00001{suffix}", shards / f"00002{suffix}")
    part = bg.BoundaryPoints.load(shards / "00003")
    part.normal[:] = float("nan")  # rows rewritten with NaN, saved as a well-formed shard
    part.save(shards / "00003")
    with pytest.raises(bg.BoundgeoError, match="00002.npz/.json do not match their checksum"):
        list(boundary.iter_shards(tmp_path / "run"))
    with pytest.warns(UserWarning, match="no longer match their checksum") as caught:
        resumed = bg.boundary_normals(clf, (x, y), out=tmp_path / "run", **KW)
    assert sorted(str(w.message).split("shards/")[1][:5] for w in caught) == ["00002", "00003"]
    _same_points(resumed, reference)
    assert len(set(resumed.index.tolist())) == 100 and torch.isfinite(resumed.normal).all()
    assert sum(len(s) for s in boundary.iter_shards(tmp_path / "run")) == 100


# ------------------------------------------------------------------------------ confined paths
@pytest.mark.parametrize("hostile", ["../../outside/secret", "ABSOLUTE", "normal/../../../outside/secret"])
def test_array_paths_in_meta_json_stay_inside_the_folder(tmp_path, small_net, hostile):
    global _OPENED
    model, x, _ = small_net
    bg.boundary_normals(bg.Classifier(model), x[:30], out=tmp_path / "run", progress=False)
    (tmp_path / "outside").mkdir()
    secret = tmp_path / "outside" / "secret.npy"
    np.save(secret, np.zeros((30, 1, 8, 8), dtype=np.float32))
    marker = tmp_path / "outside" / "created"
    hostile = str(tmp_path / "outside" / "secret") if hostile == "ABSOLUTE" else hostile
    meta_path = tmp_path / "run" / "points" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["arrays"] = [hostile if name == "normal" else name for name in meta["arrays"]] + [str(marker)]
    meta_path.write_text(json.dumps(meta))
    _OPENED = []
    try:
        for load in (bg.BoundaryPoints.load, lambda path: bg.spectrum(path, baseline_draws=0)):
            with pytest.raises(bg.BoundgeoError, match="meta.json lists arrays"):
                load(tmp_path / "run")
        opened = list(_OPENED)
    finally:
        _OPENED = None
    assert not [p for p in opened if p.startswith(str(tmp_path / "outside"))], opened
    assert not marker.exists() and not Path(str(marker) + ".npy").exists()


def test_a_saved_location_is_never_followed(tmp_path, small_net, monkeypatch):
    """A saved BoundaryPoints whose settings name a folder elsewhere is read from its own arrays."""
    global _OPENED
    monkeypatch.setattr(spectrum_module, "_DENSE_LIMIT", 0)  # as if large: the file route
    model, x, _ = small_net
    bg.boundary_normals(bg.Classifier(model), x[:30], out=tmp_path / "elsewhere", progress=False)
    pts = bg.deepfool(bg.Classifier(model), x[:30])
    saved = bg.BoundaryPoints(**{name: getattr(pts, name) for name in ARRAYS},
                              settings={"loaded_from": str(tmp_path / "elsewhere")}).save(tmp_path / "mine")
    _OPENED = []
    try:
        spec = bg.spectrum(bg.BoundaryPoints.load(saved), baseline_draws=0)
        opened = list(_OPENED)
    finally:
        _OPENED = None
    assert not [p for p in opened if p.startswith(str(tmp_path / "elsewhere"))], opened
    assert spec.n == int(pts.converged.sum())


# ------------------------------------------------------------------------------ durability
def test_atomic_writes_sync_the_file_and_then_the_directory(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def recording_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    atomic_write_bytes(tmp_path / "a.json", lambda h: h.write(b"{}"))
    assert len(synced) == 2
    assert Path(synced[0]).parent == tmp_path and Path(synced[0]).name.startswith(".a.json.")  # before the rename
    assert Path(synced[1]) == tmp_path  # the rename itself
    assert (tmp_path / "a.json").read_bytes() == b"{}" and not list(tmp_path.glob("*.tmp"))


def test_orphaned_temporary_files_are_removed_on_the_next_run(tmp_path, small_net, monkeypatch):
    model, x, y = small_net
    clf = bg.Classifier(model)
    run = tmp_path / "run"
    _interrupted(monkeypatch, 2, lambda: bg.boundary_normals(clf, (x, y), out=run, **KW))
    (run / "points").mkdir()
    orphans = [run / ".run.json.k3j2.tmp", run / "shards" / ".00002.npz.x81a.tmp",
               run / "points" / ".normal.npy.q0z.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"half written")
    mine = run / "notes.txt"
    mine.write_text("not boundgeo's")
    bg.boundary_normals(clf, (x, y), out=run, **KW)
    assert not list(run.rglob("*.tmp")) and mine.exists()


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


@pytest.mark.parametrize(
    "damage",
    ["empty json", "truncated json", "nested json", "json list", "json without fields", "empty npz",
     "truncated npz", "npz missing an array"],
)
def test_a_malformed_saved_result_is_an_error_naming_the_file(tmp_path, small_net, damage):
    model, x, _ = small_net
    stem = bg.deepfool(bg.Classifier(model), x[:5]).save(tmp_path / "pts")
    json_path, npz_path = stem.with_suffix(".json"), stem.with_suffix(".npz")
    if damage == "empty json":
        json_path.write_text("")
    elif damage == "truncated json":
        _truncate(json_path, 40)
    elif damage == "nested json":
        json_path.write_text("[" * 100_000 + "]" * 100_000)
    elif damage == "json list":
        json_path.write_text("[1, 2]")
    elif damage == "json without fields":
        json_path.write_text(json.dumps({"type": "BoundaryPoints"}))
    elif damage == "empty npz":
        npz_path.write_bytes(b"")
    elif damage == "truncated npz":
        _truncate(npz_path, npz_path.stat().st_size // 2)
    else:
        with np.load(npz_path) as npz:
            kept = {k: npz[k] for k in npz.files if k != "normal"}
        np.savez(npz_path, **kept)
    named = json_path.name if "json" in damage else npz_path.name
    with pytest.raises(bg.BoundgeoError, match=named.replace(".", r"\.")):
        bg.BoundaryPoints.load(stem)


@pytest.mark.parametrize(
    "damage",
    ["empty meta.json", "nested meta.json", "meta.json without arrays", "short normal.npy",
     "empty normal.npy", "header only normal.npy", "rows of another length", "object array"],
)
def test_a_malformed_run_directory_is_an_error_naming_the_file(tmp_path, small_net, damage):
    model, x, _ = small_net
    bg.boundary_normals(bg.Classifier(model), x[:30], out=tmp_path / "run", progress=False)
    points = tmp_path / "run" / "points"
    meta, normal = points / "meta.json", points / "normal.npy"
    if damage == "empty meta.json":
        meta.write_text("")
    elif damage == "nested meta.json":
        meta.write_text('{"arrays": ' + "[" * 100_000 + "]" * 100_000 + "}")
    elif damage == "meta.json without arrays":
        meta.write_text(json.dumps({"norm": "l2", "settings": {}}))
    elif damage == "short normal.npy":  # the header says 30 rows, the file holds fewer
        _truncate(normal, normal.stat().st_size - 100)
    elif damage == "empty normal.npy":
        normal.write_bytes(b"")
    elif damage == "header only normal.npy":
        _truncate(normal, 40)
    elif damage == "rows of another length":
        np.save(normal, np.zeros((29, 1, 8, 8), dtype=np.float32))
    else:
        np.save(points / "margin.npy", np.array([object()] * 30), allow_pickle=True)
    named = meta.name if "meta" in damage else ("margin.npy" if damage == "object array" else normal.name)
    for load in (bg.BoundaryPoints.load, lambda path: bg.spectrum(path, baseline_draws=0)):
        with pytest.raises(bg.BoundgeoError, match=named.replace(".", r"\.")):
            load(tmp_path / "run")


def test_a_malformed_run_json_is_an_error_naming_it(tmp_path, small_net):
    model, x, _ = small_net
    clf = bg.Classifier(model)
    bg.boundary_normals(clf, x[:30], out=tmp_path / "run", progress=False)
    _truncate(tmp_path / "run" / "run.json", 30)
    with pytest.raises(bg.BoundgeoError, match=r"run\.json is not readable JSON"):
        bg.boundary_normals(clf, x[:30], out=tmp_path / "run", progress=False)
    # starting over is always possible
    assert len(bg.boundary_normals(clf, x[:30], out=tmp_path / "run", resume=False, progress=False)) == 30


# ------------------------------------------------------------------------------ float16 storage
def test_float16_storage_halves_the_disk_rounds_outward_and_keeps_every_converged_point_across(tmp_path, small_net):
    model, x, _ = small_net
    clf = bg.Classifier(model)
    wide = bg.boundary_normals(clf, x[:100], out=tmp_path / "f32", progress=False)
    half = bg.boundary_normals(clf, x[:100], out=tmp_path / "f16", dtype=torch.float16, progress=False)
    assert half.normal.dtype == half.perturbation.dtype == torch.float16 and half.margin.dtype == torch.float32
    assert torch.equal(half.normal, wide.normal.half())
    # the perturbation is rounded away from zero (x + r at least as far along every coordinate as
    # DeepFool's point, just past the boundary), toward zero only where outward leaves the bounds:
    # by less than one float16 step either way
    r, r16 = wide.perturbation, half.perturbation.float()
    assert bool(((r16 - r).abs() <= 2**-10 * r.abs() + 2**-24).all())  # 2**-24: subnormal steps
    adv = x[:100][half.index] + r16
    inward = r16.abs() < r.abs()
    assert float(inward.float().mean()) < 0.1
    step = 2**-10 * r.abs() + 2**-24  # inward only where one step outward would leave [0, 1]
    at_bound = ((adv - 0).abs() <= step) | ((adv - 1).abs() <= step)
    assert bool(at_bound[inward].all())
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    # every point flagged converged crosses as stored; a point the rounding sent back is flagged
    crossed = clf.predict(adv) == half.target
    assert bool(crossed[half.converged].all())
    back = half.status == 4
    assert torch.equal(back, wide.converged & ~crossed) and not bool(half.converged[back].any())
    assert torch.equal(half.margin, wide.margin) and half.settings["dtype"] == "float16"
    for name in ("normal", "perturbation"):
        sizes = [(tmp_path / run / "points" / f"{name}.npy").stat().st_size for run in ("f16", "f32")]
        assert sizes[0] < 0.51 * sizes[1], sizes
    in_memory = bg.boundary_normals(clf, x[:100], dtype=torch.float16, progress=False)
    assert torch.equal(in_memory.normal, half.normal)
    a = bg.spectrum(tmp_path / "f32", baseline_draws=0).singular_values[:20]
    b = bg.spectrum(tmp_path / "f16", baseline_draws=0).singular_values[:20]
    assert float(((b - a).abs() / a).max()) < 1e-3


def test_float16_refuses_perturbations_beyond_its_range(tmp_path, affine_model):
    with torch.no_grad():
        affine_model.linear.weight.mul_(1e-8)  # the boundary lies ~1e6 away
    clf = bg.Classifier(affine_model.eval(), bounds=(-1e7, 1e7))
    x = torch.zeros(4, 16)
    pts = bg.boundary_normals(clf, x, clip=False, progress=False)  # float32 holds them
    assert float(pts.perturbation.abs().max()) > 65504
    for out in (None, tmp_path / "run"):
        with pytest.raises(bg.BoundgeoError, match="perturbation .* float16 holds at most 65504"):
            bg.boundary_normals(clf, x, clip=False, dtype=torch.float16, out=out, progress=False)


def test_a_shard_of_other_inputs_is_computed_again_even_with_a_good_checksum(tmp_path, monkeypatch):
    """The inputs of a run with n= come from torch.randperm(seed): if another torch drew another
    order, a finished shard would hold other inputs than the run now assigns to it."""
    x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    clf = bg.Classifier(_conv_net())
    kw = dict(batch_size=10, n=30, seed=3, progress=False)
    _interrupted(monkeypatch, 2, lambda: bg.boundary_normals(clf, x, out=tmp_path / "run", **kw))
    real = torch.randperm
    monkeypatch.setattr(torch, "randperm", lambda n, generator=None: real(n, generator=generator).flip(0))
    with pytest.warns(UserWarning, match="holds other inputs than this run assigns"):
        resumed = bg.boundary_normals(clf, x, out=tmp_path / "run", **kw)
    _same_points(resumed, bg.boundary_normals(clf, x, **kw))  # the same (flipped) order throughout
