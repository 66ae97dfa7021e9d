"""The paper's ImageNet architectures at full size (RANDOM weights) through every boundgeo stage.

    python analysis/benchmarks/bench_imagenet_scale.py [--n 4] [--heldout 4] [--archs alexnet,vgg16]
    python analysis/benchmarks/bench_imagenet_scale.py --table     # reprint the tables from the JSON

Moosavi-Dezfooli et al. (CVPR 2017) measured VGG-16, VGG-19, GoogLeNet, ResNet-152 and CaffeNet on
ImageNet. Here the same architectures from ``torchvision.models`` (alexnet stands in for CaffeNet)
run at 3x224x224 with RANDOM weights (``weights=None``): nothing can be downloaded on these
machines, so no figure below says anything about trained ImageNet models. The batch-norm networks
(googlenet, resnet152) get their running statistics recomputed on 8 other images first (weights
untouched; see ``calibrate_batchnorm``). The inputs are real photographs, small ones: CIFAR-10 test
JPEGs (32x32) from data/cifar10, upscaled to 224x224 by ``bg.ImageFolder(size=224)`` (bilinear,
antialiased). Each classifier is ``bg.Classifier(model, mean=IMAGENET_MEAN, std=IMAGENET_STD)``.

Per architecture, in its own subprocess (so that peak memory does not mix), on the same inputs:
- DeepFool (l2, overshoot 0.02, 50 steps, 10 candidates): boundgeo's ``boundary_normals(out=DIR)``
  (timed as a whole: reading the JPEGs, DeepFool, writing the shards and the memory-mapped result)
  beside foolbox's ``L2DeepFoolAttack`` on ``fb.PyTorchModel`` with the same preprocessing, on the
  same images, already decoded; success rates and median ||r|| of both;
- the spectrum of the normals streamed from DIR (``bg.spectrum(DIR)``: its own route, and the
  ``stream`` route forced), the disk taken per 1,000 normals in float32 and float16, and the
  relative error of the singular values when the normals are stored in float16;
- ``bg.subspace_fooling`` on held-out images, one SGD pass of ``bg.universal_perturbation`` and
  ``bg.robustness_profile`` at a few budgets, all scaled by the median margin;
- the memory one image takes in DeepFool's forward and backward, counted from the tensors autograd
  saves and the largest layer, for the GPU estimates (computed, not measured on a GPU).
Every stage records its seconds, its peak RSS (VmHWM, reset before the stage) and os.getloadavg().

Each peer is timed at its best setting: first, on ``--sweep-n`` images of ``--sweep-archs``
(default: alexnet, the cheapest), both libraries run at 1 and 2 torch threads and batch sizes 1
and 2; the setting with the smallest total time is then used for every architecture. On alexnet,
``--float16-n`` more normals (default 50) give the float16-storage error of the top-50 singular
values, and boundgeo's own ``dtype=torch.float16`` storage is checked against rounding. Results:
analysis/results/bench_imagenet_scale.json, with the top-level "environment" (analysis/_environment.py).
``--quick``: alexnet alone on 2 + 4 images, no sweep, no float16 check, into analysis/results/quick/.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import inspect
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import boundgeo as bg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "analysis"))
from _environment import environment as _environment, finish  # noqa: E402

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIZE = 224
D = 3 * SIZE * SIZE
DEEPFOOL = dict(overshoot=0.02, steps=50, candidates=10)
# (torch threads, batch size) tried for each peer before the timed runs
SWEEP = ((1, 1), (1, 2), (2, 1), (2, 2))
CALIBRATION_IMAGES = 8
# glibc's dynamic mmap threshold lets freed 224x224 gradient buffers pile up in the heap (README,
# "Benchmark: speed and memory"); a fixed one keeps RSS flat, for both libraries alike
WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": "1048576"}
RANDOM_WEIGHTS = ("RANDOM weights (torchvision weights=None; nothing can be downloaded here): "
                  "these figures time the machinery, they say nothing about trained ImageNet models")

ARCHITECTURES = {
    # name: (paper's network, constructor)
    "alexnet": ("CaffeNet (alexnet stands in)", lambda: _tv().alexnet(weights=None)),
    "googlenet": ("GoogLeNet", lambda: _tv().googlenet(weights=None, aux_logits=False, init_weights=True)),
    "resnet152": ("ResNet-152", lambda: _tv().resnet152(weights=None)),
    "vgg16": ("VGG-16", lambda: _tv().vgg16(weights=None)),
    "vgg19": ("VGG-19", lambda: _tv().vgg19(weights=None)),
}


def _tv():
    import torchvision.models

    return torchvision.models


# ============================================================================== models
def calibrate_batchnorm(model: nn.Module, x: torch.Tensor, *, batch_size: int = 8) -> int:
    """Recompute every batch-norm layer's running mean and variance on ``x`` (no weight changes).

    A freshly initialised network in eval mode normalises with mean 0 and variance 1. Through
    googlenet's 0.01-std initialisation the signal then shrinks to nothing: at 224x224 its logits
    vary across inputs by ~1e-15, a constant function to float32, and in a first try DeepFool
    crossed for none of 2 inputs in 50 steps (‖r‖ ~200, clipped). Through resnet152 the signal
    grows to logits of ~1e8. With statistics measured on real inputs (cumulative average,
    ``momentum=None``) both behave like ordinary networks. Returns the number of batch-norm layers.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        return 0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
        layer.train()
    with torch.no_grad():
        for chunk in x.split(batch_size):
            model((chunk - mean) / std)
    model.eval()
    return len(layers)


def build_model(name: str, calibration: torch.Tensor | None) -> nn.Module:
    """``name``'s torchvision network with seeded random weights, in eval mode, batch norm
    calibrated on ``calibration`` when given."""
    if name not in ARCHITECTURES:
        raise bg.BoundgeoError(f"unknown architecture {name!r}; choose from {sorted(ARCHITECTURES)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ARCHITECTURES[name][1]().eval()
    if calibration is not None:
        calibrate_batchnorm(model, calibration)
    return model


def classifier(model: nn.Module) -> bg.Classifier:
    return bg.Classifier(model, mean=IMAGENET_MEAN, std=IMAGENET_STD)


# ============================================================================== measuring
def rss_mib(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> bool:
    """Reset VmHWM (the peak RSS) to the current RSS; False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


@contextlib.contextmanager
def stage(record: dict, name: str, threads: int):
    """Time a stage at ``threads`` torch threads; record seconds, peak RSS and the load."""
    torch.set_num_threads(threads)
    gc.collect()
    entry: dict = {"threads": threads, "rss_before_mib": rss_mib(), "peak_reset": reset_peak(),
                   "loadavg_before": os.getloadavg()}
    start = time.perf_counter()
    yield entry
    entry["seconds"] = time.perf_counter() - start
    entry["peak_rss_mib"] = rss_mib("VmHWM")
    entry["loadavg_after"] = os.getloadavg()
    record[name] = entry
    print(f"  {name}: {entry['seconds']:.1f} s, peak RSS {entry['peak_rss_mib']:.0f} MiB, "
          f"load {entry['loadavg_after'][0]:.1f}", flush=True)


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def l2_norms(delta: torch.Tensor) -> torch.Tensor:
    return delta.flatten(1).norm(dim=1)


def run_foolbox(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, batch: int):
    """foolbox's L2 DeepFool with boundgeo's settings and preprocessing; (adv, success)."""
    import foolbox as fb

    fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0),
                             preprocessing=dict(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), axis=-3))
    attack = fb.attacks.L2DeepFoolAttack(**DEEPFOOL)
    advs, successes = [], []
    for xb, yb in zip(x.split(batch), labels.split(batch)):
        _, adv, success = attack(fmodel, xb, fb.criteria.Misclassification(yb), epsilons=None)
        advs.append(adv)
        successes.append(success)
    return torch.cat(advs), torch.cat(successes)


def run_boundgeo(clf: bg.Classifier, x: torch.Tensor, batch: int) -> bg.BoundaryPoints:
    return bg.deepfool(clf, x, norm="l2", overshoot=DEEPFOOL["overshoot"], max_iter=DEEPFOOL["steps"],
                       candidates=DEEPFOOL["candidates"], batch_size=batch)


def warm_up(clf: bg.Classifier, x: torch.Tensor) -> None:
    """One forward and backward, untimed: the first call of a network sets up its kernels."""
    for threads in (1, 2):
        torch.set_num_threads(threads)
        probe = x[:1].clone().requires_grad_()
        clf.forward(probe).max().backward()


def activation_profile(clf: bg.Classifier, x1: torch.Tensor) -> dict:
    """Memory of one image in DeepFool's forward and backward, counted, not timed.

    ``saved``: the tensors autograd keeps for the backward (the retained graph DeepFool takes its
    candidate gradients from), parameters excluded, each storage counted once. ``largest_layer``:
    the largest input plus output of one leaf module, which a backward holds at once per gradient
    row (rows are backpropagated together when vmapped, one at a time in the loop).
    """
    model = clf.model
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    largest = [0]

    def hook(module, inputs, output):
        size = sum(t.numel() * t.element_size() for t in inputs if isinstance(t, torch.Tensor))
        if isinstance(output, torch.Tensor):
            size += output.numel() * output.element_size()
        largest[0] = max(largest[0], size)

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        probe = x1[:1].clone().requires_grad_()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            clf.forward(probe)
    finally:
        for handle in handles:
            handle.remove()
    return {"saved_mib": sum(saved.values()) / 2**20, "largest_layer_mib": largest[0] / 2**20,
            "weights_mib": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20,
            "parameters": sum(p.numel() for p in model.parameters())}


# ============================================================================== float16 storage
def float16_copy(source: Path, target: Path) -> None:
    """``source``'s finished points with ``normal`` and ``perturbation`` rounded to float16, as
    ``boundary_normals(dtype=torch.float16)`` stores them; everything else copied as is."""
    shutil.rmtree(target, ignore_errors=True)
    (target / "points").mkdir(parents=True)
    for item in (source / "points").iterdir():
        if item.suffix == ".npy" and item.stem in ("normal", "perturbation"):
            np.save(target / "points" / item.name, np.load(item, mmap_mode="r").astype(np.float16))
        else:
            shutil.copy2(item, target / "points" / item.name)


def sigma_error(reference: torch.Tensor, other: torch.Tensor, top: int) -> dict:
    k = min(top, len(reference), len(other))
    rel = ((other[:k] - reference[:k]).abs() / reference[:k].abs().clamp_min(1e-300)).double()
    return {"top": k, "max_relative_error": float(rel.max()), "median_relative_error": float(rel.median())}


def float16_spectrum_check(clf, data, indices, work: Path, stages: dict, threads: int, batch: int,
                           deepfool_kwargs: dict) -> dict:
    """The spectrum of the same normals stored in float32 and rounded to float16, both streamed:
    relative error of the top-50 singular values and agreement of the top-10 directions."""
    subset = torch.utils.data.Subset(data, [int(i) for i in indices])
    dir32, dir16 = work / "float16_check_float32", work / "float16_check_float16"
    with stage(stages, "float16_check_deepfool", threads):
        bg.boundary_normals(clf, subset, out=dir32, batch_size=batch, keep_misclassified=True,
                            progress=False, resume=False, **deepfool_kwargs)
    float16_copy(dir32, dir16)
    with stage(stages, "float16_check_spectrum_float32", threads):
        spec32 = bg.spectrum(dir32, route="stream")
    with stage(stages, "float16_check_spectrum_float16", threads):
        spec16 = bg.spectrum(dir16, route="stream")
    k = min(10, len(spec32.components), len(spec16.components))
    cosines = (spec32.basis(k) * spec16.basis(k)).sum(dim=1).abs()
    return {"n": spec32.n, "route": spec32.route, **sigma_error(spec32.singular_values, spec16.singular_values, 50),
            "top10_directions_min_abs_cosine": float(cosines.min()),
            "float32_mib_per_1000": (dir32 / "points" / "normal.npy").stat().st_size / spec32.n * 1000 / 2**20,
            "float16_mib_per_1000": (dir16 / "points" / "normal.npy").stat().st_size / spec16.n * 1000 / 2**20}


# ============================================================================== workers
def _data(args) -> tuple:
    data = bg.ImageFolder(args.data_dir, size=SIZE)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    return data, order


def _images(data, indices) -> torch.Tensor:
    return torch.stack([data[int(i)][0] for i in indices])


def worker_sweep(args) -> dict:
    """Both peers at every (threads, batch) of SWEEP on the same ``sweep_n`` images."""
    data, order = _data(args)
    model = build_model(args.worker, _images(data, order[-CALIBRATION_IMAGES:]))
    clf = classifier(model)
    x = _images(data, order[: args.sweep_n])
    warm_up(clf, x)
    labels = clf.predict(x)
    rows = []
    for threads, batch in SWEEP:
        torch.set_num_threads(threads)
        start = time.perf_counter()
        pts = run_boundgeo(clf, x, batch)
        t_bg = time.perf_counter() - start
        start = time.perf_counter()
        adv, success = run_foolbox(model, x, labels, batch)
        t_fb = time.perf_counter() - start
        rows.append({"threads": threads, "batch_size": batch, "boundgeo_seconds": t_bg,
                     "foolbox_seconds": t_fb, "boundgeo_converged": int(pts.converged.sum()),
                     "foolbox_success": int(success.sum()), "loadavg": os.getloadavg()})
        print(f"  sweep {args.worker} threads {threads} batch {batch}: boundgeo {t_bg:.1f} s, "
              f"foolbox {t_fb:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    return {"architecture": args.worker, "n": len(x), "rows": rows}


def worker_main(args) -> dict:
    """Every stage for one architecture, at the peers' chosen settings."""
    bg_threads, bg_batch = args.boundgeo_setting
    fb_threads, fb_batch = args.foolbox_setting
    work = Path(args.work) / args.worker
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data, order = _data(args)
    fit_idx, held_idx = order[: args.n], order[args.n : args.n + args.heldout]
    stages: dict = {}
    result: dict = {"rss_after_imports_mib": rss_mib(), "architecture": args.worker, "paper_network": ARCHITECTURES[args.worker][0],
                    "n": args.n, "heldout": args.heldout, "stages": stages,
                    "image_indices": [int(i) for i in fit_idx],
                    "heldout_indices": [int(i) for i in held_idx]}

    with stage(stages, "model", bg_threads) as entry:
        calibration = _images(data, order[-CALIBRATION_IMAGES:])
        model = build_model(args.worker, None)
        probe = _images(data, fit_idx[:4])
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        with torch.no_grad():  # what the random network does before calibration, for the record
            raw = model((probe - mean) / std)
        top2 = raw.topk(2, dim=1).values
        entry["uncalibrated_logits"] = {"max_abs": float(raw.abs().max()),
                                        "spread_across_inputs": float(raw.std(0).mean()),
                                        "top2_gap_median": float((top2[:, 0] - top2[:, 1]).median())}
        entry["batchnorm_layers_calibrated"] = calibrate_batchnorm(model, calibration)
        clf = classifier(model)
        warm_up(clf, probe)
    torch.set_num_threads(bg_threads)
    result["model"] = activation_profile(clf, probe)

    subset = torch.utils.data.Subset(data, fit_idx.tolist())
    deepfool_kwargs = dict(norm="l2", overshoot=DEEPFOOL["overshoot"], max_iter=DEEPFOOL["steps"],
                           candidates=DEEPFOOL["candidates"])
    dir32 = work / "normals_float32"
    with stage(stages, "boundgeo_deepfool", bg_threads) as entry:
        pts = bg.boundary_normals(clf, subset, out=dir32, batch_size=bg_batch, keep_misclassified=True,
                                  progress=False, resume=False, **deepfool_kwargs)
        entry["batch_size"] = bg_batch
    with stage(stages, "decode", bg_threads) as entry:  # the share of boundgeo's time spent reading images
        x = _images(data, fit_idx)
    x_held = _images(data, held_idx)

    # boundgeo's result, checked: crossed, unit normals, finite
    converged = pts.converged.bool()
    r = torch.as_tensor(np.asarray(pts.perturbation)).float()
    normals = torch.as_tensor(np.asarray(pts.normal)).float().flatten(1)
    target = torch.as_tensor(np.asarray(pts.target))
    crossed = clf.predict(x + r) == target
    labels = torch.as_tensor(np.asarray(pts.label))
    margins_bg = l2_norms(r)
    result["boundgeo"] = {
        "converged": int(converged.sum()),
        "crossed_where_converged": int((crossed & converged).sum()),
        "unit_normals_max_error": float((normals[converged].norm(dim=1) - 1).abs().max()) if converged.any() else None,
        "finite": bool(torch.isfinite(r).all() and torch.isfinite(normals).all()),
        "median_norm": float(margins_bg[converged].median()) if converged.any() else None,
        "iterations_mean": float(torch.as_tensor(np.asarray(pts.iterations)).float().mean()),
        "cost": dict(pts.cost),
        "labels": labels.tolist(),
    }

    with stage(stages, "foolbox_deepfool", fb_threads) as entry:
        adv, success = run_foolbox(model, x, labels, fb_batch)
        entry["batch_size"] = fb_batch
    norms_fb = l2_norms(adv - x)
    both = success & converged
    result["foolbox"] = {
        "success": int(success.sum()),
        "median_norm": float(norms_fb[success].median()) if success.any() else None,
        "paired_norm_ratio_median": float((norms_fb[both] / margins_bg[both]).median()) if both.any() else None,
    }

    # disk: float32 as run, float16 as boundary_normals(dtype=torch.float16) stores it
    dir16 = work / "normals_float16"
    float16_copy(dir32, dir16)
    n_rows = len(pts)
    result["disk"] = {
        "float32_normal_mib_per_1000": (dir32 / "points" / "normal.npy").stat().st_size / n_rows * 1000 / 2**20,
        "float16_normal_mib_per_1000": (dir16 / "points" / "normal.npy").stat().st_size / n_rows * 1000 / 2**20,
        "float32_run_directory_mib_per_1000": directory_bytes(dir32) / n_rows * 1000 / 2**20,
        "run_directory_holds": "shards (uncompressed .npz) and points/*.npy: normal and perturbation twice",
    }
    if args.float16_n and "dtype" in inspect.signature(bg.boundary_normals).parameters:
        # boundgeo's own float16 storage on the same inputs: the same bytes as the rounded copy?
        dir16_run = work / "normals_float16_run"
        with stage(stages, "boundgeo_deepfool_float16", bg_threads):
            bg.boundary_normals(clf, subset, out=dir16_run, batch_size=bg_batch, keep_misclassified=True,
                                progress=False, resume=False, dtype=torch.float16, **deepfool_kwargs)
        ours = np.load(dir16_run / "points" / "normal.npy")
        rounded = np.load(dir16 / "points" / "normal.npy")
        result["disk"]["float16_run"] = {
            "normal_mib_per_1000": (dir16_run / "points" / "normal.npy").stat().st_size / n_rows * 1000 / 2**20,
            "max_abs_difference_to_rounded_float32": float(np.abs(ours.astype(np.float64) - rounded).max()),
        }
    if args.float16_n:
        result["float16_spectrum"] = float16_spectrum_check(clf, data, order[: args.float16_n], work, stages,
                                                            bg_threads, bg_batch, deepfool_kwargs)

    with stage(stages, "spectrum", bg_threads) as entry:
        spec = bg.spectrum(dir32)
        entry["route"] = spec.route
    with stage(stages, "spectrum_stream", bg_threads) as entry:
        spec_stream = bg.spectrum(dir32, route="stream")
        entry["route"] = spec_stream.route
    spec16 = bg.spectrum(dir16, route=spec.route)
    result["spectrum"] = {
        "n": spec.n, "d": spec.d, "route": spec.route,
        "singular_values": spec.singular_values.tolist(),
        "stream_vs_route_max_relative_difference":
            sigma_error(spec.singular_values, spec_stream.singular_values, 50)["max_relative_error"],
        "float16_vs_float32": sigma_error(spec.singular_values, spec16.singular_values, 50),
    }

    median = result["boundgeo"]["median_norm"]
    k = min(10, len(spec.components))
    radii = [10 * median, 100 * median]
    with stage(stages, "subspace_fooling", bg_threads) as entry:
        fool = bg.subspace_fooling(clf, x_held, spec.basis(k), radii=radii, draws=args.draws,
                                   batch_size=max(bg_batch, 4))
    result["subspace_fooling"] = {"k": k, "radii": radii, "radii_in_median_margins": [10, 100],
                                  "subspace_rate": fool.subspace_rate.tolist(),
                                  "full_rate": fool.full_rate.tolist(), "draws": args.draws}

    xi = 10 * median
    with stage(stages, "universal_sgd_pass", bg_threads) as entry:
        uap = bg.universal_perturbation(clf, x, xi=xi, norm="l2", method="sgd", max_passes=1,
                                        eval_data=x_held, batch_size=bg_batch, progress=False)
    result["universal"] = {"xi": xi, "xi_in_median_margins": 10, "fooling_rate": uap.fooling_rate,
                           "eval_fooling_rate": uap.eval_fooling_rate}

    epsilons = [median, 10 * median, 100 * median]
    profile_x = x_held  # half fits the universal witnesses, half is evaluated
    with stage(stages, "robustness_profile", bg_threads) as entry:
        prof = bg.robustness_profile(clf, profile_x, epsilons=epsilons, norm="l2", draws=args.draws,
                                     universal_passes=1, batch_size=max(bg_batch, 4))
    result["profile"] = {"inputs": len(profile_x), "epsilons": epsilons, "epsilons_in_median_margins": [1, 10, 100],
                         "per_image_rate": np.asarray(prof.per_image_rate).tolist(),
                         "universal_rate": np.asarray(prof.universal_rate).tolist(),
                         "random_rate": np.asarray(prof.random_rate).tolist(),
                         "category": np.asarray(prof.category).tolist()}
    # every stage resets VmHWM (and with it ru_maxrss), so the process peak is the largest stage peak
    result["peak_rss_process_mib"] = max(entry["peak_rss_mib"] for entry in stages.values())
    return result


# ============================================================================== parent
def run_worker(args, mode: str, name: str, extra: list[str]) -> dict:
    out = Path(args.work) / f"{mode}_{name}.json"
    out.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--worker", name, "--mode", mode, "--worker-out", str(out),
               "--n", str(args.n), "--heldout", str(args.heldout), "--sweep-n", str(args.sweep_n),
               "--draws", str(args.draws), "--data-dir", args.data_dir, "--work", args.work, *extra]
    subprocess.run(command, check=True, env={**os.environ, **WORKER_ENV})
    return json.loads(out.read_text())


def best_setting(sweeps: list[dict], peer: str) -> dict:
    totals = {}
    for sweep in sweeps:
        for row in sweep["rows"]:
            key = (row["threads"], row["batch_size"])
            totals[key] = totals.get(key, 0.0) + row[f"{peer}_seconds"]
    (threads, batch), seconds = min(totals.items(), key=lambda item: item[1])
    return {"threads": threads, "batch_size": batch, "sweep_total_seconds": seconds,
            "all_totals": {f"threads={t} batch={b}": s for (t, b), s in totals.items()}}


def environment() -> dict:
    """analysis/_environment.py's block, with the peers' versions and the workers' environment."""
    import foolbox
    import torchvision

    return _environment(torchvision=torchvision.__version__, foolbox=foolbox.__version__, worker_env=WORKER_ENV)


def gpu_estimates(arch: dict, candidates: int = DEEPFOOL["candidates"]) -> dict:
    """Memory per image at 224 for DeepFool on a GPU, from counted tensors and the CPU run.

    Counted: the first DeepFool step backpropagates ``candidates - 1`` gradient rows together
    (vmapped, boundgeo's CUDA path), each holding about the largest layer's input and output, on
    top of the retained forward graph. DeepFool's own buffers are about 7 + 2 (candidates - 1)
    input-sized float32 tensors per image: x, x + r, r, the normal, the iterate with its gradient
    and step, and the gradient rows, which are copied once when only some inputs of the batch step.
    Measured: the rise of the peak RSS in the CPU run, per image of the batch; at batch sizes up to
    4 the CPU takes the same vmapped backward as CUDA, so it sees the intermediate gradients the
    count leaves out. The plan takes the larger of the two, plus a round GiB for the CUDA context,
    cuDNN workspace and allocator slack.
    """
    m = arch["model"]
    rows = candidates - 1
    buffers = (7 + 2 * rows) * D * 4 / 2**20
    counted = m["saved_mib"] + rows * m["largest_layer_mib"] + buffers
    run = arch["stages"]["boundgeo_deepfool"]
    measured = (run["peak_rss_mib"] - run["rss_before_mib"]) / run["batch_size"]
    per_image = max(counted, measured)
    overhead = 1024.0
    batches = {f"{gib}GiB": max(0, int((gib * 1024 - m["weights_mib"] - overhead) // per_image))
               for gib in (16, 24, 80)}
    return {"counted_per_image_mib": counted, "deepfool_buffers_mib": buffers,
            "measured_cpu_rise_per_image_mib": measured, "cpu_batch_size": run["batch_size"],
            "per_image_mib": per_image, "weights_mib": m["weights_mib"], "overhead_mib": overhead,
            "batch_size_fitting": batches}


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| --- " * len(header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def table(result: dict) -> str:
    header = ["network (paper's)", "torchvision", "params", "boundgeo ms / image", "foolbox ms / image",
              "foolbox / boundgeo", "median ‖r‖ boundgeo / foolbox", "converged / success",
              "peak RSS MiB: boundgeo DeepFool / foolbox / whole process", "spectrum: route, s (stream forced, s)",
              "disk per 1,000 normals MiB: float32 / float16", "subspace fooling s", "SGD pass s", "profile s"]
    rows = []
    for arch in result["architectures"]:
        s, n, m = arch["stages"], arch["n"], arch["model"]
        t_bg = s["boundgeo_deepfool"]["seconds"] / n * 1e3
        t_fb = s["foolbox_deepfool"]["seconds"] / n * 1e3
        rows.append([
            arch["paper_network"], arch["architecture"], f"{m['parameters'] / 1e6:.0f}M", f"{t_bg:,.0f}",
            f"{t_fb:,.0f}", f"{t_fb / t_bg:.2f}x",
            f"{arch['boundgeo']['median_norm']:.3g} / {arch['foolbox']['median_norm']:.3g}",
            f"{arch['boundgeo']['converged']}/{n} / {arch['foolbox']['success']}/{n}",
            f"{s['boundgeo_deepfool']['peak_rss_mib']:,.0f} / {s['foolbox_deepfool']['peak_rss_mib']:,.0f} "
            f"/ {arch['peak_rss_process_mib']:,.0f}",
            f"{arch['spectrum']['route']}, {s['spectrum']['seconds']:.2f} ({s['spectrum_stream']['seconds']:.2f})",
            f"{arch['disk']['float32_normal_mib_per_1000']:.0f} / {arch['disk']['float16_normal_mib_per_1000']:.0f}",
            f"{s['subspace_fooling']['seconds']:.0f}", f"{s['universal_sgd_pass']['seconds']:.0f}",
            f"{s['robustness_profile']['seconds']:.0f}"])
    return markdown(header, rows)


def gpu_table(result: dict) -> str:
    header = ["network", "weights MiB", "counted per image MiB: forward graph + 9 x largest layer + DeepFool buffers",
              "measured per image on the CPU MiB", "planned per image MiB", "batch in 16 GiB", "in 24 GiB", "in 80 GiB"]
    rows = []
    for arch in result["architectures"]:
        m, g = arch["model"], gpu_estimates(arch)
        fits = g["batch_size_fitting"]
        rows.append([arch["architecture"], f"{m['weights_mib']:.0f}",
                     f"{g['counted_per_image_mib']:.0f} = {m['saved_mib']:.0f} + 9 x {m['largest_layer_mib']:.1f} "
                     f"+ {g['deepfool_buffers_mib']:.0f}", f"{g['measured_cpu_rise_per_image_mib']:.0f}",
                     f"{g['per_image_mib']:.0f}", str(fits["16GiB"]), str(fits["24GiB"]), str(fits["80GiB"])])
    return markdown(header, rows)


def sweep_table(result: dict) -> str:
    rows = [[f"{sweep['architecture']} ({sweep['n']} images)", str(row["threads"]), str(row["batch_size"]),
             f"{row['boundgeo_seconds']:.1f}", f"{row['foolbox_seconds']:.1f}"]
            for sweep in result["sweeps"] for row in sweep["rows"]]
    return markdown(["network", "torch threads", "batch", "boundgeo s", "foolbox s"], rows)


def print_tables(result: dict) -> None:
    setup = result["setup"]
    loads = [a["loadavg_before"][0] for a in result["architectures"]] + [a["loadavg_after"][0] for a in result["architectures"]]
    shared = (f"Timed on a shared 2-core machine: 1-minute load average {min(loads):.1f}-{max(loads):.1f} "
              "around the networks." if setup["shared_machine"] else "Timed on an idle machine.")
    print(f"\n{setup['weights']}.\nBatch norm: {setup['batchnorm']}.\nInputs: {setup['inputs']}.\n{shared}\n")
    print(table(result))
    if result["sweeps"]:
        chosen = setup["chosen"]
        print(f"\nSettings tried (boundgeo chose {chosen['boundgeo']['threads']} thread(s), batch "
              f"{chosen['boundgeo']['batch_size']}; foolbox {chosen['foolbox']['threads']} thread(s), batch "
              f"{chosen['foolbox']['batch_size']}):\n")
        print(sweep_table(result))
    print("\nGPU (computed estimates, not GPU measurements):\n")
    print(gpu_table(result))
    print(f"\nwall time {result['environment']['wall_seconds']:.0f} s; load average per architecture "
          + ", ".join(f"{a['architecture']} {a['loadavg_before'][0]:.1f}->{a['loadavg_after'][0]:.1f}"
                      for a in result["architectures"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=",".join(ARCHITECTURES))
    parser.add_argument("--n", type=int, default=4, help="images per architecture for DeepFool and the fit")
    parser.add_argument("--heldout", type=int, default=4, help="held-out images (subspace, universal, profile)")
    parser.add_argument("--sweep-archs", default="alexnet")
    parser.add_argument("--sweep-n", type=int, default=2)
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--data-dir", default=str(ROOT / "data" / "cifar10"))
    parser.add_argument("--work", default="/tmp/bench_imagenet_scale")
    parser.add_argument("--quick", action="store_true",
                        help="--archs alexnet --n 2 --heldout 4 --draws 2, no sweep, --float16-n 0, into "
                             "analysis/results/quick/ (unless --out)")
    parser.add_argument("--out", default=None, help="default analysis/results/bench_imagenet_scale.json")
    parser.add_argument("--table", action="store_true", help="print the tables from --out and stop")
    # worker side
    parser.add_argument("--worker")
    parser.add_argument("--mode", choices=("sweep", "main"))
    parser.add_argument("--worker-out")
    parser.add_argument("--boundgeo-setting", type=int, nargs=2, default=(2, 1))
    parser.add_argument("--foolbox-setting", type=int, nargs=2, default=(2, 1))
    parser.add_argument("--float16-n", type=int, default=50,
                        help="alexnet only: normals for the float16 vs float32 spectrum check (0: none)")
    args = parser.parse_args()
    if args.quick:
        args.archs, args.n, args.heldout, args.draws = "alexnet", 2, 4, 2  # a profile needs 4 inputs
        args.sweep_archs, args.float16_n = "", 0
    args.out = args.out or str(ROOT / "analysis" / "results" / ("quick" if args.quick else "")
                               / "bench_imagenet_scale.json")

    if args.worker:
        work = worker_sweep(args) if args.mode == "sweep" else worker_main(args)
        Path(args.worker_out).write_text(json.dumps(work, indent=2) + "\n")
        return
    if args.table:
        print_tables(json.loads(Path(args.out).read_text()))
        return

    Path(args.work).mkdir(parents=True, exist_ok=True)
    env = environment()
    archs = [a for a in args.archs.split(",") if a]
    sweeps = []
    for name in [a for a in args.sweep_archs.split(",") if a]:
        print(f"sweep: {name}", flush=True)
        sweeps.append(run_worker(args, "sweep", name, []))
    if sweeps:
        chosen = {peer: best_setting(sweeps, peer) for peer in ("boundgeo", "foolbox")}
    else:  # no sweep (quick runs): the settings given
        chosen = {peer: {"threads": setting[0], "batch_size": setting[1], "swept": False}
                  for peer, setting in (("boundgeo", args.boundgeo_setting), ("foolbox", args.foolbox_setting))}
    print(f"best settings: {chosen}", flush=True)
    results, failures = [], []
    for name in archs:
        print(f"{name}:", flush=True)
        before = os.getloadavg()
        extra = ["--boundgeo-setting", str(chosen["boundgeo"]["threads"]), str(chosen["boundgeo"]["batch_size"]),
                 "--foolbox-setting", str(chosen["foolbox"]["threads"]), str(chosen["foolbox"]["batch_size"])]
        # the cheapest network checks boundgeo's own float16 storage and its spectrum
        extra += ["--float16-n", str(args.float16_n if name == "alexnet" else 0)]
        try:
            arch = run_worker(args, "main", name, extra)
        except subprocess.CalledProcessError as error:  # recorded, and the other networks still run
            failures.append({"architecture": name, "error": str(error)})
            continue
        arch["loadavg_before"], arch["loadavg_after"] = before, os.getloadavg()
        arch["gpu_estimate"] = gpu_estimates(arch)
        results.append(arch)
    finish(env)
    loads = [a["loadavg_before"][0] for a in results] + [a["loadavg_after"][0] for a in results]
    result = {
        "benchmark": "imagenet_scale",
        "setup": {
            "weights": RANDOM_WEIGHTS,
            "batchnorm": f"running statistics recomputed on {CALIBRATION_IMAGES} other images, weights untouched "
                         "(uncalibrated, on the first 4 images: " + "; ".join(
                             f"{a['architecture']} logits vary across inputs by "
                             f"{a['stages']['model']['uncalibrated_logits']['spread_across_inputs']:.1g}, largest "
                             f"{a['stages']['model']['uncalibrated_logits']['max_abs']:.2g}"
                             for a in results if a["stages"]["model"]["batchnorm_layers_calibrated"]) + ")",
            "inputs": (f"CIFAR-10 test JPEGs (32x32) from data/cifar10 upscaled to 3x{SIZE}x{SIZE} by "
                       f"bg.ImageFolder(size={SIZE}); {args.n} images per architecture for DeepFool and the fit, "
                       f"{args.heldout} held-out; the same images for every architecture and library"),
            "deepfool": {**DEEPFOOL, "norm": "l2", "boundgeo_nearest": 3, "foolbox": "L2DeepFoolAttack"},
            "normalisation": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD},
            "sweep": {"architectures": args.sweep_archs.split(","), "images": args.sweep_n,
                      "settings_tried": [{"threads": t, "batch_size": b} for t, b in SWEEP]},
            "chosen": chosen,
            "draws": args.draws,
            "shared_machine": max(loads, default=0.0) > 1,
        },
        "environment": env,
        "sweeps": sweeps,
        "architectures": results,
        "failures": failures,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if failures:  # written for the record, but the run failed
        raise SystemExit(f"wrote {out}; FAILED: " + "; ".join(f"{f['architecture']}: {f['error']}" for f in failures))
    print_tables(result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
