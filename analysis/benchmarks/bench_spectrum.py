"""Spectrum: bounded memory on ImageNet-sized normals, float16 storage, speed on MNIST normals.

    python analysis/benchmarks/bench_spectrum.py [--only memory,float16,speed] [--data-dir data/mnist]

Every figure of memory is in MiB (2**20 bytes): the peak resident set size (``ru_maxrss``) of a
process of its own that does one thing.

memory: 2,000 boundary normals of dimension 3 x 224 x 224 = 150,528 of a linear model
(``Flatten`` + ``Linear(150528, 10)``, seeded) on smooth random images that a Dataset makes on
demand, collected with ``bg.boundary_normals(out=DIR)``; then the streamed spectrum with its
5-draw random baseline through the public API, ``bg.spectrum(DIR)`` and
``bg.spectrum(bg.BoundaryPoints.load(DIR))``, and once more with DIR made to look written before
zero normals were flagged (its rows then found by a scan in bounded blocks). Also the floor
(``import torch, boundgeo`` alone) and the disk per 1,000 normals in float32 and in float16.
Target: every spectrum below 1,000 MiB. memory_cnn (not run by default): the same with a small
CNN, whose normals are of full rank, so that the spectrum keeps 256 components (147 MiB).

float16: the relative error of the top-50 singular values of the spectrum of normals stored in
float16 against float32, for the MNIST reference CNN (2,000 held-out test images) and for a
random-weights torchvision resnet18 on 64 smooth random 3 x 224 x 224 images.

speed: the boundary normals of all 10,000 MNIST test images under the reference MNIST CNN
(d = 784), then ``bg.spectrum`` with its 5-draw baseline, best of 3, for the automatic route and
every forced one. Target: <= 3 s.

Each section that runs replaces its own entry in analysis/results/bench_spectrum.json, with the
environment it ran in (versions, threads, CPU, date, commit, load average before and after:
the machine may be shared, which slows the timings but not the memory); the top-level
"environment" (analysis/_environment.py) is that of the last run. ``--quick``: memory with 100
normals and speed on 2,000 MNIST images, into analysis/results/quick/.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "analysis"))
from _environment import environment, finish  # noqa: E402

RESULTS = ROOT / "analysis" / "results" / "bench_spectrum.json"
IMAGENET_SHAPE = (3, 224, 224)
D = 3 * 224 * 224
SECTIONS = ("memory", "memory_cnn", "float16", "speed")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# ------------------------------------------------------------------------------ inputs and models
MODELS = {
    # rank <= 9: the spectrum keeps 7 components (those above 1e-6 sigma_1)
    "linear": "Flatten + Linear(150528, 10), torch.manual_seed(0)",
    # full rank: the spectrum keeps 256 components, 147 MiB in float32
    "cnn": "Conv(3->8, 5, stride 4) ReLU Conv(8->16, 3, stride 2) ReLU AvgPool(4) Linear(256, 10), seed 0",
}


def imagenet_sized_model(kind: str) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if kind == "linear":
            return nn.Sequential(nn.Flatten(), nn.Linear(D, 10)).eval()
        return nn.Sequential(
            nn.Conv2d(3, 8, 5, stride=4, padding=2), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(256, 10),
        ).eval()


class SmoothImages(torch.utils.data.Dataset):
    """Low-frequency random images in [0, 1] (upsampled 14x14 noise), made on demand so that
    the collection never holds the dataset in memory; image i is seeded by i."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        small = torch.rand(1, 3, 14, 14, generator=gen)
        return nn.functional.interpolate(small, size=IMAGENET_SHAPE[1:], mode="bilinear",
                                         align_corners=False)[0]


def folder_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


# ------------------------------------------------------------------------------ children
def child_collect(out: str, n: int, dtype: str, model: str) -> dict:
    import boundgeo as bg

    start = time.perf_counter()
    pts = bg.boundary_normals(bg.Classifier(imagenet_sized_model(model)), SmoothImages(n, seed=1), out=out,
                              batch_size=50, shard_size=100, dtype=getattr(torch, dtype), progress=False)
    return {"n": len(pts), "converged": int(pts.converged.sum()), "dtype": dtype,
            "seconds": time.perf_counter() - start, "peak_rss_mib": peak_rss_mib()}


def child_spectrum(out: str, how: str) -> dict:
    import boundgeo as bg

    start = time.perf_counter()
    source = out if how == "directory" else bg.BoundaryPoints.load(out)
    spec = bg.spectrum(source, baseline_draws=5)
    return {"call": "bg.spectrum(DIR)" if how == "directory" else "bg.spectrum(bg.BoundaryPoints.load(DIR))",
            "route": spec.route, "n": spec.n, "d": spec.d, "seconds": time.perf_counter() - start,
            "sigma_1": float(spec.singular_values[0]), "dim_90": spec.dim(0.9),
            "random_dim_90": spec.dim(0.9, baseline=True), "components": list(spec.components.shape),
            "peak_rss_mib": peak_rss_mib()}


def child_import() -> dict:
    import boundgeo  # noqa: F401

    return {"peak_rss_mib": peak_rss_mib()}


def run_child(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ sections
def memory(n_large: int, work: Path, model: str) -> dict:
    normals = work / "normals"
    floor = run_child("import")
    print(f"import torch, boundgeo alone: peak RSS {floor['peak_rss_mib']:.0f} MiB")
    collect = run_child("collect", str(normals), str(n_large), "float32", model)
    print(f"collected {collect['n']} normals of {IMAGENET_SHAPE} in {collect['seconds']:.0f} s, "
          f"peak RSS {collect['peak_rss_mib']:.0f} MiB")
    spectra = {how: run_child("spectrum", str(normals), how) for how in ("directory", "points")}
    meta_path = normals / "points" / "meta.json"
    original = meta_path.read_text()
    meta = json.loads(original)
    del meta["format"]  # as written before zero normals were flagged in status
    meta_path.write_text(json.dumps(meta))
    try:
        spectra["directory_written_before_flags"] = run_child("spectrum", str(normals), "directory")
    finally:
        meta_path.write_text(original)
    for key, row in spectra.items():
        print(f"{row['call']} ({key}), {row['route']} route, {row['n']} x {row['d']}: {row['seconds']:.0f} s, "
              f"peak RSS {row['peak_rss_mib']:.0f} MiB")
    if model != "linear":
        return {"model": MODELS[model], "import_only": floor, "collect": collect, "spectrum": spectra,
                "target_mib": 1000}
    half = work / "normals-float16"
    collect_half = run_child("collect", str(half), "1000", "float16", model)
    per_1000 = lambda folder, count: {"points_mib": folder_mib(folder / "points") * 1000 / count,
                                      "shards_mib": folder_mib(folder / "shards") * 1000 / count}
    disk = {"float32": per_1000(normals, collect["n"]), "float16": per_1000(half, collect_half["n"])}
    for dtype, row in disk.items():
        print(f"disk per 1,000 normals at d = {D}, {dtype}: points/ {row['points_mib']:.0f} MiB, "
              f"shards/ {row['shards_mib']:.0f} MiB")
    return {"model": MODELS[model],
            "inputs": f"{n_large} smooth random 3x224x224 images (14x14 noise upsampled), made on demand",
            "import_only": floor, "collect": collect, "spectrum": spectra,
            "disk_per_1000_normals": disk, "normal_matrix_mib": collect["n"] * D * 4 / 2**20,
            "target_mib": 1000}


def _relative_error(points32, points16, k: int) -> dict:
    import boundgeo as bg

    a = bg.spectrum(points32, baseline_draws=0).singular_values[:k]
    b = bg.spectrum(points16, baseline_draws=0).singular_values[:k]
    rel = (b - a).abs() / a
    return {"k": len(a), "max_relative_error": float(rel.max()), "median_relative_error": float(rel.median()),
            "sigma_1_float32": float(a[0]), "sigma_k_float32": float(a[-1])}


def float16_error(data_dir: str) -> dict:
    import dataclasses

    import boundgeo as bg
    from boundgeo import zoo

    rows = {}
    trained = zoo.train_reference("mnist", "cnn", root=data_dir)
    x, _ = bg.load_dataset("mnist", root=data_dir)
    held_out = x[zoo.MNIST_TRAIN:]
    clf = bg.Classifier(trained.model)
    wide = bg.boundary_normals(clf, held_out, progress=False)
    half = bg.boundary_normals(clf, held_out, dtype=torch.float16, progress=False)
    assert torch.equal(half.normal, wide.normal.half()), "float16 storage is the float32 run rounded"
    rows["mnist_cnn"] = {"inputs": f"MNIST test images [{zoo.MNIST_TRAIN}, 10000) ({len(held_out)})",
                         **_relative_error(wide, half, 50)}
    print(f"MNIST CNN, {len(held_out)} normals: top-50 singular values from float16, max relative error "
          f"{rows['mnist_cnn']['max_relative_error']:.2e}")

    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        resnet = torchvision.models.resnet18(weights=None).eval()
    images = torch.stack([SmoothImages(64, seed=2)[i] for i in range(64)])
    start = time.perf_counter()
    wide = bg.boundary_normals(bg.Classifier(resnet), images, batch_size=16, progress=False)
    seconds = time.perf_counter() - start
    # dtype=torch.float16 stores exactly these values rounded (checked above on MNIST)
    half = dataclasses.replace(wide, normal=wide.normal.half(), perturbation=wide.perturbation.half())
    rows["resnet18_random_224"] = {
        "inputs": "64 smooth random 3x224x224 images; torchvision resnet18(weights=None), torch.manual_seed(0)",
        "converged": int(wide.converged.sum()), "collect_seconds": seconds, **_relative_error(wide, half, 50)}
    print(f"resnet18 (random weights), {int(wide.converged.sum())} normals at 3x224x224: top-50 singular values "
          f"from float16, max relative error {rows['resnet18_random_224']['max_relative_error']:.2e}")
    return rows


def speed(data_dir: str, n: int | None = None) -> dict:
    import boundgeo as bg
    from boundgeo import zoo

    trained = zoo.train_reference("mnist", "cnn", root=data_dir)
    x, _ = bg.load_dataset("mnist", root=data_dir)
    x = x[:n] if n is not None else x
    clf = bg.Classifier(trained.model)
    start = time.perf_counter()
    pts = bg.boundary_normals(clf, x, progress=False)  # all 10,000 images (or --speed-n), no labels: none skipped
    collect = time.perf_counter() - start
    rows = {"normals": len(pts), "converged": int(pts.converged.sum()), "collect_seconds": collect,
            "torch_threads": torch.get_num_threads(),
            "routes": {}}
    for route in (None, "gram", "exact", "stream", "randomized"):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            spec = bg.spectrum(pts, baseline_draws=5, route=route, k=100 if route == "randomized" else None)
            times.append(time.perf_counter() - start)
        rows["routes"][route or "auto"] = {"route": spec.route, "seconds_min": min(times), "repeats": len(times),
                                           "seconds_median": sorted(times)[1],
                                           "sigma_1": float(spec.singular_values[0])}
        print(f"spectrum of {spec.n} x {spec.d} with 5 baseline draws, route {route or 'auto'} "
              f"({spec.route}): {min(times):.2f} s (median {sorted(times)[1]:.2f} s)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="memory,float16,speed",
                        help="comma-separated sections: " + ", ".join(SECTIONS) + " (default: all but memory_cnn)")
    parser.add_argument("--data-dir", default=str(ROOT / "data" / "mnist"))
    parser.add_argument("--n-large", type=int, default=2000)
    parser.add_argument("--speed-n", type=int, default=None, help="MNIST images of the speed section (default all)")
    parser.add_argument("--quick", action="store_true",
                        help="--only memory,speed --n-large 100 --speed-n 2000, into analysis/results/quick/ "
                             "(unless --out)")
    parser.add_argument("--out", type=Path, default=None, help="default analysis/results/bench_spectrum.json")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "collect":
            result = child_collect(rest[0], int(rest[1]), rest[2], rest[3])
        elif kind == "spectrum":
            result = child_spectrum(rest[0], rest[1])
        else:
            result = child_import()
        print(json.dumps(result))
        return

    run_env = environment()
    if args.quick:
        args.only, args.n_large, args.speed_n = "memory,speed", min(args.n_large, 100), args.speed_n or 2000
    out = args.out or (RESULTS.parent / "quick" / RESULTS.name if args.quick else RESULTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    only = [s for s in args.only.split(",") if s]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}")
    result = json.loads(out.read_text()) if out.exists() else {}
    result = {key: value for key, value in result.items() if key in SECTIONS}  # one entry per section
    for section in only:
        env = environment()
        if section.startswith("memory"):
            work = Path(tempfile.mkdtemp(prefix="boundgeo-bench-"))
            try:
                rows = memory(args.n_large, work, "cnn" if section == "memory_cnn" else "linear")
            finally:
                shutil.rmtree(work, ignore_errors=True)
        elif section == "float16":
            rows = float16_error(args.data_dir)
        else:
            rows = speed(args.data_dir, args.speed_n)
        result[section] = {"environment": finish(env), **rows}
        out.write_text(json.dumps({"environment": finish(run_env), "benchmark": "spectrum",
                                   "memory_unit": "MiB (2**20 bytes)", "sections_run": only,
                                   **{k: result[k] for k in SECTIONS if k in result}}, indent=2) + "\n")
        print(f"wrote the {section} section of {out}")


if __name__ == "__main__":
    main()
