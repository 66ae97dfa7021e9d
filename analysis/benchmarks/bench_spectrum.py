"""Spectrum: speed on 10,000 MNIST normals and bounded memory on ImageNet-sized normals.

    python analysis/benchmarks/bench_spectrum.py [--data-dir data/mnist] [--skip-memory]

Speed: the boundary normals of all 10,000 MNIST test images under the reference MNIST CNN
(d = 784), then ``bg.spectrum`` with its 5-draw random baseline, timed over 3 runs, for the
automatic route and for every forced route. Target: <= 3 s.

Memory: 2,000 boundary normals of dimension 3 x 224 x 224 = 150,528 (ImageNet-sized) from a small
CNN on smooth random images, collected with ``bg.boundary_normals(out=DIR)`` and then streamed
from disk by ``bg.spectrum(DIR)``. Each stage runs in its own process and reports its own peak
resident memory (ru_maxrss). Target: the spectrum's peak RSS < 2 GB.
Results go to analysis/results/bench_spectrum.json.
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
IMAGENET_SHAPE = (3, 224, 224)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def imagenet_sized_model() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
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


def child_collect(out: str, n: int) -> dict:
    import boundgeo as bg

    clf = bg.Classifier(imagenet_sized_model())
    start = time.perf_counter()
    data = SmoothImages(n, seed=1)
    pts = bg.boundary_normals(clf, data, out=out, batch_size=50, shard_size=100, progress=False)
    return {"n": len(pts), "converged": int(pts.converged.sum()), "seconds": time.perf_counter() - start,
            "dataset_mb": n * 150528 * 4 / 2**20, "peak_rss_mb": peak_rss_mb()}


def child_spectrum(out: str) -> dict:
    import boundgeo as bg

    start = time.perf_counter()
    spec = bg.spectrum(out, baseline_draws=5)
    seconds = time.perf_counter() - start
    return {"route": spec.route, "n": spec.n, "d": spec.d, "seconds": seconds,
            "sigma_1": float(spec.singular_values[0]), "dim_90": spec.dim(0.9),
            "random_dim_90": spec.dim(0.9, baseline=True), "components": list(spec.components.shape),
            "peak_rss_mb": peak_rss_mb()}


def run_child(*args: str, env: dict | None = None) -> dict:
    import os

    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if done.returncode:
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def speed(data_dir: str) -> dict:
    import boundgeo as bg
    from boundgeo import zoo

    trained = zoo.train_reference("mnist", "cnn", root=data_dir)
    x, y = bg.load_dataset("mnist", root=data_dir)
    clf = bg.Classifier(trained.model)
    start = time.perf_counter()
    pts = bg.boundary_normals(clf, x, progress=False)  # all 10,000 images, no labels: none skipped
    collect = time.perf_counter() - start
    rows = {"normals": len(pts), "converged": int(pts.converged.sum()), "collect_seconds": collect,
            "routes": {}}
    for route in (None, "gram", "exact", "stream", "randomized"):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            spec = bg.spectrum(pts, baseline_draws=5, route=route, k=100 if route == "randomized" else None)
            times.append(time.perf_counter() - start)
        rows["routes"][route or "auto"] = {"route": spec.route, "seconds_min": min(times),
                                           "seconds_median": sorted(times)[1],
                                           "sigma_1": float(spec.singular_values[0])}
        print(f"spectrum of {spec.n} x {spec.d} with 5 baseline draws, route {route or 'auto'} "
              f"({spec.route}): {min(times):.2f} s (median {sorted(times)[1]:.2f} s)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT / "data" / "mnist"))
    parser.add_argument("--n-large", type=int, default=2000)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = child_collect(rest[0], int(rest[1])) if kind == "collect" else child_spectrum(rest[0])
        print(json.dumps(result))
        return

    result = {"benchmark": "spectrum", "torch_threads": torch.get_num_threads(),
              "speed": speed(args.data_dir)}
    if not args.skip_memory:
        work = Path(tempfile.mkdtemp(prefix="boundgeo-bench-"))
        try:
            collect = run_child("collect", str(work / "normals"), str(args.n_large))
            print(f"collected {collect['n']} normals of {IMAGENET_SHAPE} in {collect['seconds']:.0f} s, "
                  f"peak RSS {collect['peak_rss_mb']:.0f} MB (the dataset would take {collect['dataset_mb']:.0f} MB)")
            disk = sum(p.stat().st_size for p in (work / "normals" / "points").glob("*.npy"))
            spectrum = run_child("spectrum", str(work / "normals"))
            print(f"streamed spectrum of {spectrum['n']} x {spectrum['d']} ({spectrum['route']}): "
                  f"{spectrum['seconds']:.0f} s, peak RSS {spectrum['peak_rss_mb']:.0f} MB")
            # glibc's dynamic mmap threshold lets freed ~30 MB tensors pile up in the heap; a fixed
            # threshold returns them at once. Same collection, other allocator setting:
            fixed = run_child("collect", str(work / "normals-fixed"), str(args.n_large),
                              env={"MALLOC_MMAP_THRESHOLD_": str(2**20)})
            print(f"same collection with MALLOC_MMAP_THRESHOLD_=1048576: peak RSS {fixed['peak_rss_mb']:.0f} MB")
            result["memory"] = {"collect": collect, "collect_fixed_mmap_threshold": fixed,
                                "spectrum": spectrum, "points_on_disk_mb": disk / 2**20,
                                "normal_matrix_mb": spectrum["n"] * spectrum["d"] * 4 / 2**20}
        finally:
            shutil.rmtree(work, ignore_errors=True)
    out = ROOT / "analysis" / "results" / "bench_spectrum.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
