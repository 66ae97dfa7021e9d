"""The items of issue 13 that no other test named: each is checked here by name.

candidates=2.5 (silently truncated once), batch_size=0 and 2.5 for every universal method, and
unique temporary names for every atomic write (one writer died on the fixed name
``points/.perturbation.npy.tmp``).
"""

from __future__ import annotations

import tempfile

import pytest
import torch

import boundgeo as bg
from boundgeo._results import atomic_write_bytes


@pytest.mark.parametrize("call", ["deepfool", "boundary_normals", "universal_perturbation"])
def test_a_fractional_candidates_is_refused_not_truncated(small_net, call):
    model, x, _ = small_net
    extra = {"progress": False} if call != "deepfool" else {}
    if call == "universal_perturbation":
        extra["xi"] = 1.0
    with pytest.raises(bg.BoundgeoError, match="candidates must be a whole number, got 2.5"):
        getattr(bg, call)(bg.Classifier(model), x[:4], candidates=2.5, **extra)


@pytest.mark.parametrize("method", ["deepfool", "batched", "sgd"])
@pytest.mark.parametrize("batch_size, match", [(0, "batch_size must be >= 1, got 0"),
                                               (2.5, "batch_size must be a whole number, got 2.5")])
def test_every_universal_method_refuses_a_bad_batch_size(small_net, method, batch_size, match):
    model, x, _ = small_net
    with pytest.raises(bg.BoundgeoError, match=match):
        bg.universal_perturbation(bg.Classifier(model), x[:4], xi=1.0, method=method, batch_size=batch_size,
                                  progress=False)


def test_temporary_names_are_unique_for_every_write(tmp_path, small_net, monkeypatch):
    """Two writes of the same file, and the arrays a finished run writes, each use a fresh name."""
    names = []
    real = tempfile.mkstemp

    def recording_mkstemp(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        names.append(name)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", recording_mkstemp)
    for _ in range(2):
        atomic_write_bytes(tmp_path / "same.json", lambda handle: handle.write(b"{}"))
    model, x, _ = small_net
    bg.boundary_normals(bg.Classifier(model), x[:20], out=tmp_path / "run", shard_size=10, progress=False)
    points_temps = [name for name in names if "/points/." in name]
    assert {f"{field}.npy" for field in ("perturbation", "normal", "margin")} <= {
        name.rsplit("/.", 1)[1].split(".npy.")[0] + ".npy" for name in points_temps}
    assert len(names) == len(set(names)) > 8, names
    assert all(name.endswith(".tmp") and "/." in name for name in names)
    assert not list(tmp_path.rglob("*.tmp"))
    assert torch.isfinite(bg.BoundaryPoints.load(tmp_path / "run").normal).all()
