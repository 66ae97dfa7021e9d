import importlib
import io
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

import boundgeo as bg
from boundgeo.geometry.spectral import marchenko_pastur, random_unit_spectrum

spectrum_module = importlib.import_module("boundgeo.geometry.spectral")  # bg.spectrum is the function


@pytest.fixture(scope="module")
def net_points(small_net):
    model, x, _ = small_net
    return bg.deepfool(bg.Classifier(model), x[:500])


def test_affine_normals_have_rank_c_minus_1(affine_model):
    clf = bg.Classifier(affine_model.eval(), bounds=(-100, 100))
    x = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    spec = bg.spectrum(bg.deepfool(clf, x, clip=False), baseline_draws=1)
    sv = spec.singular_values
    assert sv[3] > 1e-3 * sv[0]           # the C-1 = 4 directions are all used
    assert sv[4:].max() < 1e-6 * sv[0]    # σ_C onwards ≈ 0
    assert spec.dim(0.999999) <= 4 and spec.dim(0.9, baseline=True) > 4


@pytest.mark.parametrize("route", ["exact", "gram", "stream"])
def test_unit_rows_energy_and_orthonormal_basis(route):
    rows = torch.randn(120, 40, generator=torch.Generator().manual_seed(1)) * torch.rand(120, 1)
    spec = bg.spectrum(rows, route=route, baseline_draws=2)
    assert float((spec.singular_values**2).sum()) == pytest.approx(120, rel=1e-9)
    basis = spec.basis(40).double()
    torch.testing.assert_close(basis @ basis.T, torch.eye(40, dtype=torch.float64), atol=1e-5, rtol=0)
    # the basis diagonalises NᵀN: its rows are the right singular vectors
    n_mat = rows.double() / rows.double().norm(dim=1, keepdim=True)
    torch.testing.assert_close((n_mat @ basis.T).norm(dim=0), spec.singular_values, rtol=1e-5, atol=1e-6)
    assert spec.energy(40) == pytest.approx(1.0) and spec.energy(0) == 0.0


def test_all_routes_agree_on_the_top_singular_values(net_points, tmp_path):
    reference = bg.spectrum(net_points, route="exact", baseline_draws=0)
    top = reference.singular_values[:10]
    for route in ("gram", "randomized", "stream"):
        spec = bg.spectrum(net_points, route=route, k=10 if route == "randomized" else None,
                           baseline_draws=0)
        torch.testing.assert_close(spec.singular_values[:10], top, rtol=1e-4, atol=0)
        # principal directions agree up to sign
        cos = (spec.basis(5).double() * reference.basis(5).double()).sum(1).abs()
        assert (cos > 0.999).all(), (route, cos)
    wide = torch.randn(30, 500, generator=torch.Generator().manual_seed(2))  # d >> n: n x n Gram
    exact = bg.spectrum(wide, route="exact", baseline_draws=0)
    for route in ("gram", "stream"):
        spec = bg.spectrum(wide, route=route, baseline_draws=0)
        torch.testing.assert_close(spec.singular_values, exact.singular_values, rtol=1e-6, atol=1e-9)
        cos = (spec.basis(5).double() * exact.basis(5).double()).sum(1).abs()
        assert (cos > 0.999999).all()


def test_streams_from_a_boundary_normals_directory(small_net, tmp_path):
    model, x, y = small_net
    clf = bg.Classifier(model)
    pts = bg.boundary_normals(clf, (x[:200], y[:200]), out=tmp_path / "run", shard_size=50,
                              progress=False)
    in_memory = bg.spectrum(pts, route="exact", baseline_draws=0)
    streamed = bg.spectrum(tmp_path / "run", route="stream", baseline_draws=0)
    torch.testing.assert_close(streamed.singular_values, in_memory.singular_values, rtol=1e-6, atol=1e-9)
    assert streamed.n == int(pts.converged.sum())


def _as_written_before_zero_normal_flags(run):
    meta_path = run / "points" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["format"]
    meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize("from_file", [False, True], ids=["mapped", "read-from-file"])
def test_an_old_directory_with_zero_normals_drops_them_as_boundary_points_do(small_net, tmp_path, monkeypatch,
                                                                              from_file):
    if from_file:  # as for a large directory: rows read block by block from normal.npy
        monkeypatch.setattr(spectrum_module, "_DENSE_LIMIT", 0)
    model, x, y = small_net
    clf = bg.Classifier(model)
    bg.boundary_normals(clf, (x[:120], y[:120]), out=tmp_path / "run", shard_size=50, progress=False)
    # a directory written before zero normals were flagged: their status says converged
    _as_written_before_zero_normal_flags(tmp_path / "run")
    path = tmp_path / "run" / "points" / "normal.npy"
    normals = np.load(path)
    converged = np.load(tmp_path / "run" / "points" / "converged.npy")
    zeroed = np.flatnonzero(converged)[[0, 7]]
    normals[zeroed] = 0  # converged points whose gradient vanished
    np.save(path, normals)
    loaded = bg.BoundaryPoints.load(tmp_path / "run")
    assert not loaded.normal[zeroed].any()
    reference = bg.spectrum(loaded, route="exact", baseline_draws=0)
    assert reference.n == int(converged.sum()) - 2
    for route in ("exact", "stream"):
        from_disk = bg.spectrum(tmp_path / "run", route=route, baseline_draws=0)
        assert from_disk.n == reference.n
        torch.testing.assert_close(from_disk.singular_values, reference.singular_values, rtol=1e-6, atol=1e-9)
    normals[:] = 0
    np.save(path, normals)
    with pytest.raises(bg.BoundgeoError, match="non-zero normal"):
        bg.spectrum(tmp_path / "run", baseline_draws=0)


def test_a_new_directory_takes_zero_normals_from_status_and_refuses_unflagged_ones(small_net, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.setattr(spectrum_module, "_DENSE_LIMIT", 0)  # the file route
    model, x, y = small_net
    bg.boundary_normals(bg.Classifier(model), (x[:60], y[:60]), out=tmp_path / "run", progress=False)
    points = tmp_path / "run" / "points"
    status, converged = np.load(points / "status.npy"), np.load(points / "converged.npy")
    flagged = np.flatnonzero(converged)[:3]
    status[flagged] = 3  # zero normal: left out without looking at normal.npy
    np.save(points / "status.npy", status)
    spec = bg.spectrum(tmp_path / "run", route="stream", baseline_draws=0)
    assert spec.n == int(converged.sum()) - 3
    # a zero row the flags do not announce is an error, never a silent NaN direction
    normals = np.load(points / "normal.npy")
    normals[np.flatnonzero(converged)[5]] = 0
    np.save(points / "normal.npy", normals)
    with pytest.raises(bg.BoundgeoError, match="1 rows are zero"):
        bg.spectrum(tmp_path / "run", route="stream", baseline_draws=0)


def test_baseline_matches_marchenko_pastur_edges():
    spec = bg.spectrum(torch.randn(500, 2000, generator=torch.Generator().manual_seed(3)),
                       baseline_draws=3)
    assert spec.baseline_mean[0] == pytest.approx(1 + (500 / 2000) ** 0.5, rel=0.03)
    assert spec.baseline_mean[-1] == pytest.approx(1 - (500 / 2000) ** 0.5, rel=0.03)
    assert (spec.baseline_low <= spec.baseline_mean).all() and (spec.baseline_mean <= spec.baseline_high).all()
    torch.testing.assert_close(spec.baseline_mean, spec.marchenko_pastur, rtol=0.05, atol=0.02)
    # a random matrix looks like its own baseline
    assert spec.concentration() == pytest.approx(1.0, abs=0.05)
    tall = random_unit_spectrum(3000, 300, seed=0)  # n > d
    assert float((tall**2).sum()) == pytest.approx(3000, rel=1e-5)
    torch.testing.assert_close(tall, marchenko_pastur(3000, 300), rtol=0.05, atol=0.05)


def test_summaries():
    eye = torch.eye(8)
    spec = bg.spectrum(eye, baseline_draws=0)
    assert spec.effective_rank == pytest.approx(8.0)
    assert spec.dim(0.5) == 4 and spec.energy(2) == pytest.approx(0.25)
    line = torch.ones(10, 8)  # one direction
    spec = bg.spectrum(line, baseline_draws=4)
    assert spec.effective_rank == pytest.approx(1.0) and spec.dim(0.9) == 1
    assert spec.concentration() == spec.dim(0.9, baseline=True) / 1 > 1
    assert spec.summary()["concentration"] == spec.concentration()


def test_same_seed_same_baseline_and_round_trip(net_points, tmp_path):
    a = bg.spectrum(net_points, baseline_draws=3, seed=7)
    b = bg.spectrum(net_points, baseline_draws=3, seed=7)
    assert torch.equal(a.baseline_mean, b.baseline_mean)
    loaded = bg.Spectrum.load(a.save(tmp_path / "spec"))
    assert torch.equal(loaded.singular_values, a.singular_values)
    assert torch.equal(loaded.components, a.components)
    assert loaded.input_shape == a.input_shape == (1, 8, 8) and loaded.route == a.route
    assert a.basis(3, reshape=True).shape == (3, 1, 8, 8)
    frame = a.to_frame()
    assert set(frame.source) == {"normals", "random", "marchenko-pastur"}


@pytest.mark.parametrize(
    "rows, kwargs, match",
    [
        (torch.cat([torch.randn(5, 4), torch.zeros(2, 4)]), {}, "2 rows .* are zero"),
        (torch.tensor([[1.0, float("nan")], [1.0, 0.0]]), {}, "NaN"),
        (torch.randn(5, 4), {"k": 5}, r"min\(n, d\) = min\(5, 4\) = 4"),
        (torch.randn(5, 4), {"route": "randomized"}, "pass k="),
        (torch.randn(5, 4), {"route": "qr"}, "route must be"),
        (torch.randn(5, 4), {"kind": "gradient"}, "kind must be"),
        (torch.zeros(0, 4), {}, "non-empty"),
    ],
)
def test_bad_input_raises(rows, kwargs, match):
    with pytest.raises(bg.BoundgeoError, match=match):
        bg.spectrum(rows, **kwargs)


def test_basis_beyond_what_was_kept_raises():
    spec = bg.spectrum(torch.randn(30, 10), k=3, baseline_draws=0)
    with pytest.raises(bg.BoundgeoError, match="components kept"):
        spec.basis(4)


@pytest.mark.parametrize("route", ["exact", "gram", "stream"])
def test_rank_deficient_rows_give_unit_directions_only(route):
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(30, 3, generator=gen) @ torch.randn(3, 200, generator=gen)  # rank 3 in R^200
    spec = bg.spectrum(rows, route=route, baseline_draws=1)
    # every component kept is a unit vector: none of rounding noise divided by σ ≈ 0
    assert len(spec.components) >= 3 and torch.isfinite(spec.components).all()
    torch.testing.assert_close(spec.components.norm(dim=1), torch.ones(len(spec.components)), atol=1e-4, rtol=0)
    basis = spec.basis(3)
    torch.testing.assert_close(basis @ basis.T, torch.eye(3), atol=1e-4, rtol=0)


class _CountingFile:
    """A file whose reads are counted (the largest and the total, in bytes); it offers no file
    descriptor, so no read can bypass the count."""

    def __init__(self, real, counts: dict[str, int]) -> None:
        self._real, self._counts = real, counts

    def _count(self, size: int) -> None:
        self._counts["largest"] = max(self._counts["largest"], size)
        self._counts["total"] += size

    def read(self, size: int = -1) -> bytes:
        data = self._real.read(size)
        self._count(len(data))
        return data

    def readinto(self, buffer) -> int:
        self._count(memoryview(buffer).nbytes)
        return self._real.readinto(buffer)

    def fileno(self) -> int:
        raise io.UnsupportedOperation("reads must go through read/readinto, where they are counted")

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._real.close()


@pytest.mark.parametrize("flagged", [True, False], ids=["zero-normal-flags", "written-before-flags"])
def test_the_stream_route_reads_no_more_than_one_block_at_a_time(tmp_path, monkeypatch, flagged):
    # 600 normals of dimension 8192 (18.8 MiB) against blocks of 1 MiB. Once, choosing the rows
    # read 4096 rows at a time: the whole file, 1.1 GiB more at ImageNet size.
    block = 2**20
    monkeypatch.setattr(spectrum_module, "_BLOCK_BYTES", block)
    monkeypatch.setattr(spectrum_module, "_DENSE_LIMIT", 0)  # as for a large directory
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(8192, 10)
    with torch.no_grad():
        model.weight.copy_(torch.randn(10, 8192, generator=gen) / 90)
    x = torch.rand(600, 8192, generator=gen)
    run = tmp_path / "run"
    pts = bg.boundary_normals(bg.Classifier(model.eval()), x, out=run, candidates=3, progress=False)
    if not flagged:
        _as_written_before_zero_normal_flags(run)
    counts = {"largest": 0, "total": 0}

    def counting_open(path, *args, **kwargs):
        real = open(path, *args, **kwargs)
        return _CountingFile(real, counts) if Path(path).name == "normal.npy" else real

    bg.spectrum(run, route="stream", baseline_draws=0)  # first-call allocations are not the reads
    monkeypatch.setattr(spectrum_module, "open", counting_open, raising=False)
    tracemalloc.start()
    try:
        spec = bg.spectrum(run, route="stream", baseline_draws=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert spec.n == int(pts.converged.sum()) > 500
    assert counts["total"] >= spec.n * 8192 * 4  # every row was read, and counted
    assert counts["largest"] <= block, counts
    # one block (float32) and its float64 copy, and the 0.8 MiB grid of the Marchenko-Pastur
    # quantiles; never the whole file
    assert peak < 3 * block, peak


def test_without_a_baseline_the_summaries_compare_with_marchenko_pastur():
    spec = bg.spectrum(torch.randn(40, 30, generator=torch.Generator().manual_seed(0)), baseline_draws=0)
    assert spec.baseline_source.startswith("marchenko-pastur")
    summary = spec.summary()
    assert summary["baseline"] == spec.baseline_source
    assert summary["random_dim_90"] == spec.dim(0.9, baseline=True) >= 1
    assert spec.concentration() > 0
    drawn = bg.spectrum(torch.randn(40, 30, generator=torch.Generator().manual_seed(0)), baseline_draws=2)
    assert drawn.summary()["baseline"] == "random draws"


# ------------------------------------------------------------------------------ correlation numbers
def _pairs(rows: torch.Tensor) -> tuple[float, float]:
    unit = torch.nn.functional.normalize(rows.double(), dim=1)
    cos = unit @ unit.T
    off = ~torch.eye(len(rows), dtype=torch.bool)
    return float((cos[off] ** 2).mean()), float((cos[off].abs() > 0.5).double().mean())


@pytest.mark.parametrize("route", ["exact", "gram", "stream", "randomized"])
def test_mean_squared_cosine_and_share_of_close_pairs_are_the_pairs(route):
    gen = torch.Generator().manual_seed(2)
    rows = torch.randn(150, 12, generator=gen) + 1.5 * torch.randn(1, 12, generator=gen)  # correlated
    spec = bg.spectrum(rows, route=route, k=5 if route == "randomized" else None, baseline_draws=0)
    squared, above = _pairs(rows)
    assert 0.2 < above < 0.9  # a case where the share says something
    assert spec.pair_rows == 150
    assert spec.mean_squared_cosine == pytest.approx(squared, rel=1e-9)
    assert spec.abs_cosine_above_half == pytest.approx(above, abs=1e-12)
    if route != "randomized":  # the summary's dims need every singular value
        summary = spec.summary()
        assert summary["mean_squared_cosine"] == spec.mean_squared_cosine
        assert summary["random_mean_squared_cosine"] == pytest.approx(1 / 12)


def test_a_seeded_choice_of_rows_when_the_pairs_are_many(monkeypatch):
    monkeypatch.setattr(spectrum_module, "_PAIR_WORK", 60.0**2 * 30)  # 60 of the 400 rows
    rows = torch.randn(400, 30, generator=torch.Generator().manual_seed(3)) + 0.7
    spec = bg.spectrum(rows, baseline_draws=0)
    squared, above = _pairs(rows)
    assert spec.pair_rows == 60
    assert spec.mean_squared_cosine == pytest.approx(squared, rel=1e-9)  # exact from the spectrum
    assert spec.abs_cosine_above_half == pytest.approx(above, abs=0.05)  # estimated from the rows
    again = bg.spectrum(rows, baseline_draws=0)
    assert again.abs_cosine_above_half == spec.abs_cosine_above_half  # seeded
    sampled = bg.spectrum(rows, route="randomized", k=3, baseline_draws=0)
    assert sampled.mean_squared_cosine == pytest.approx(squared, rel=0.1)


def test_affine_two_class_normals_have_mean_squared_cosine_one():
    gen = torch.Generator().manual_seed(4)
    from tests.conftest import Affine

    clf = bg.Classifier(Affine(torch.randn(2, 16, generator=gen), torch.zeros(2)).eval(), bounds=(-100, 100))
    spec = bg.spectrum(bg.deepfool(clf, torch.randn(80, 16, generator=gen), clip=False), baseline_draws=0)
    assert spec.mean_squared_cosine == pytest.approx(1.0, abs=1e-9)
    assert spec.abs_cosine_above_half == 1.0


def test_random_unit_vectors_meet_the_random_baselines():
    spec = bg.spectrum(torch.randn(2000, 8, generator=torch.Generator().manual_seed(5)), baseline_draws=0)
    assert spec.mean_squared_cosine == pytest.approx(spec.random_mean_squared_cosine, rel=0.03)
    assert spec.abs_cosine_above_half == pytest.approx(spec.random_abs_cosine_above_half, rel=0.03)
    # the closed form of P(|cos| > 1/2) at d = 3: cos is uniform on [-1, 1]
    assert bg.spectrum(torch.randn(5, 3), baseline_draws=0).random_abs_cosine_above_half == pytest.approx(0.5)


def test_a_spectrum_saved_before_the_correlation_numbers_still_loads(tmp_path):
    spec = bg.spectrum(torch.randn(30, 6), baseline_draws=1)
    spec.save(tmp_path / "s")
    record = json.loads((tmp_path / "s.json").read_text())
    for name in ("mean_squared_cosine", "abs_cosine_above_half", "pair_rows"):
        record["fields"].pop(name), record["kinds"].pop(name, None)
    (tmp_path / "s.json").write_text(json.dumps(record))
    old = bg.Spectrum.load(tmp_path / "s")
    assert np.isnan(old.mean_squared_cosine) and old.pair_rows == 0
    assert bg.Spectrum.load(tmp_path / "s").n == 30
    spec.save(tmp_path / "t")
    assert bg.Spectrum.load(tmp_path / "t").abs_cosine_above_half == spec.abs_cosine_above_half


# ------------------------------------------------------------------------------ per-class spectra
def _orthogonal_classes(per_class: int = 40, classes: int = 4, d: int = 10):
    """logits (0, x_1, ..., x_{C-1}): an input of label k (x_k = 1, the others -5) is nearest to
    class 0, across the face of normal -e_k. Each label's normals are one direction, orthogonal
    to every other label's."""
    from tests.conftest import Affine

    weight = torch.zeros(classes, d)
    weight[1:, 1:classes] = torch.eye(classes - 1)
    clf = bg.Classifier(Affine(weight, torch.zeros(classes)).eval(), bounds=(-100, 100))
    gen = torch.Generator().manual_seed(6)
    x = -5 + 0.3 * torch.rand(per_class * (classes - 1), d, generator=gen)
    for k in range(1, classes):
        x[(k - 1) * per_class : k * per_class, k] = 1 + 0.5 * torch.rand(per_class, generator=gen)
    return clf, x


def test_per_class_spectra_of_orthogonal_classes_separate_cleanly():
    clf, x = _orthogonal_classes()
    pts = bg.deepfool(clf, x, clip=False)
    specs = bg.spectrum(pts, by="label", baseline_draws=2)
    assert list(specs) == [1, 2, 3]
    tops = []
    for k, spec in specs.items():
        assert spec.n == 40
        assert spec.energy(1) == pytest.approx(1.0, abs=1e-9)  # one direction per class
        assert spec.mean_squared_cosine == pytest.approx(1.0, abs=1e-9)
        assert abs(float(spec.components[0, k])) == pytest.approx(1.0, abs=1e-6)  # ± e_k
        assert spec.settings['baseline_draws'] == 2 and spec.energy(1, baseline=True) < 0.5  # its own baseline
        tops.append(spec.components[0])
    tops = torch.stack(tops).double()
    torch.testing.assert_close(tops @ tops.T, torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)
    # all classes together: three orthogonal directions, none holding more than a third
    whole = bg.spectrum(pts, baseline_draws=0)
    assert whole.energy(3) == pytest.approx(1.0) and whole.energy(1) == pytest.approx(1 / 3, abs=1e-6)
    assert bg.alignment(pts.directions()[:40], specs[1], 1) == pytest.approx(1.0)
    assert bg.alignment(pts.directions()[:40], specs[2], 1) == pytest.approx(0.0, abs=1e-12)
    assert list(bg.spectrum(pts, by="target", baseline_draws=0)) == [0]
    assert list(bg.spectrum(pts, by="pair", baseline_draws=0)) == [(1, 0), (2, 0), (3, 0)]


def test_per_class_spectra_from_a_directory_and_bad_groupings(tmp_path):
    clf, x = _orthogonal_classes(per_class=10)
    pts = bg.boundary_normals(clf, x, out=tmp_path / "run", clip=False, progress=False)
    specs = bg.spectrum(tmp_path / "run", by="label", baseline_draws=0, k=50)
    assert [spec.n for spec in specs.values()] == [10, 10, 10]
    assert all(len(spec.components) == 10 for spec in specs.values())  # k capped at each group's rank
    with pytest.raises(bg.BoundgeoError, match="by must be one of"):
        bg.spectrum(pts, by="class")
    with pytest.raises(bg.BoundgeoError, match="groups boundary points by class"):
        bg.spectrum(pts.directions(), by="label")


def test_alignment_is_the_share_inside_the_subspace():
    gen = torch.Generator().manual_seed(7)
    spec = bg.spectrum(torch.randn(200, 50, generator=gen) * torch.linspace(3, 0.1, 50), baseline_draws=0)
    basis = spec.basis(5)
    inside = (torch.randn(5, generator=gen) @ basis)
    assert bg.alignment(inside, spec, 5) == pytest.approx(1.0)
    assert bg.alignment(inside, spec, 50) == pytest.approx(1.0)
    outside = spec.basis(50)[10] * 3.0
    assert bg.alignment(outside, spec, 5) == pytest.approx(0.0, abs=1e-12)
    assert bg.alignment(torch.stack([inside, outside]), spec, 5) == pytest.approx(0.5)
    random = torch.randn(4000, 50, generator=gen)
    assert bg.alignment(random, spec, 5) == pytest.approx(5 / 50, rel=0.05)  # k/d for random directions
    with pytest.raises(bg.BoundgeoError, match="zero"):
        bg.alignment(torch.zeros(50), spec, 5)
    with pytest.raises(bg.BoundgeoError, match="dimension 50"):
        bg.alignment(torch.ones(49), spec, 5)
    with pytest.raises(bg.BoundgeoError, match="dimension 50"):  # 100 values, but no rows of 50
        bg.alignment(torch.ones(100), spec, 5)
    with pytest.raises(bg.BoundgeoError, match="dimension 50"):  # 100 values, in rows of 20
        bg.alignment(torch.ones(5, 20), spec, 5)
    assert bg.alignment(torch.ones(2, 5, 10), spec, 5) == pytest.approx(bg.alignment(torch.ones(50), spec, 5))
    with pytest.raises(bg.BoundgeoError, match="k must be"):
        bg.alignment(inside, spec, 0)


def test_alignment_takes_vectors_in_the_inputs_shape_and_nothing_else():
    gen = torch.Generator().manual_seed(3)
    normals = torch.nn.functional.normalize(torch.randn(60, 1, 4, 4, generator=gen).flatten(1), dim=1)
    spec = bg.spectrum(normals.reshape(60, 1, 4, 4), baseline_draws=0)
    v = torch.randn(1, 4, 4, generator=gen)
    share = bg.alignment(v, spec, 3)
    assert bg.alignment(v.flatten(), spec, 3) == pytest.approx(share)
    assert bg.alignment(torch.stack([v, v]), spec, 3) == pytest.approx(share)
    assert bg.alignment(torch.stack([v, v]).flatten(1), spec, 3) == pytest.approx(share)
    assert bg.alignment(v.reshape(4, 4), spec, 3) == pytest.approx(share)  # d values: one vector
    for wrong in (torch.randn(32), torch.randn(2, 4, 4), torch.randn(2, 2, 4, 4), torch.randn(4, 8)):
        with pytest.raises(bg.BoundgeoError, match="dimension 16"):
            bg.alignment(wrong, spec, 3)


def test_summary_names_the_energy_it_was_asked_for():
    spec = bg.spectrum(torch.randn(40, 20, generator=torch.Generator().manual_seed(0)), baseline_draws=1)
    assert "dim_57" in spec.summary(0.57) and "random_dim_57" in spec.summary(0.57)
