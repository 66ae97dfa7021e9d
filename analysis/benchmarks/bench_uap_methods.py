"""Universal perturbations, every method side by side, against the published SGD-UAP update.

    python analysis/benchmarks/bench_uap_methods.py [--only sgd,cifar,methods,curve,cost,targeted] [--quick]

Six parts, all on models the project trains (the MNIST CNN of ``boundgeo.zoo``, trained on MNIST
test images [0, 8000); the CIFAR-10 ResNet of analysis/cifar10.py, trained on part of the
CIFAR-10 *test* split); every fooling rate is ``bg.fooling_rate`` on held-out images:

1. ``sgd``: boundgeo's ``method="sgd"`` at its defaults against the published SGD-UAP update
   (Shafahi et al., AAAI 2020; the form of Co et al., ICIP 2021): mean over a mini-batch of 32 of
   the cross-entropy of the true label clipped at β = 12, a sign step (ℓ∞) of 0.8^e ξ in epoch
   e = 1..10 ("decaying") or 0.8 ξ in every epoch (their released code's constant step), then
   clip to the ball; 10 epochs; the last v. For ℓ2 the same with the step along the normalised
   gradient and projection onto the ℓ2 ball. Written here from the papers' description.
   Settings: ℓ∞ ξ ∈ {0.1, 0.15, 0.2, 0.3}, ℓ2 ξ ∈ {3, 5}; five fit sets: 1,000 of the 2,000
   images the model was not trained on, drawn with seeds 100-104, the other 1,000 held out.
   boundgeo runs all 10 passes too (δ = 1e-6). Ablation of boundgeo's choices (the previous
   default: step ξ/10 without decay at mini-batch 64 with the cross-entropy; no decay;
   mini-batch 16 and 64; β = 12; momentum 0.9; each loss but the default's; the plain margin at
   mini-batch 16) on the same fit sets. The table reports the mean difference from the better
   published schedule with the standard error of the paired (same fit set) difference.
2. ``cifar``: the same comparison at ℓ∞ ξ ∈ {8/255, 10/255} on the CIFAR-10 ResNet (five fit
   sets of 1,000 of its 2,000 held-out images, the other 1,000 held out), with the losses other
   than the default's.
3. ``methods``: every method on the split of bench_universal.py (fit on MNIST test images
   [8000, 9000), evaluate on [9000, 10000)), seeds 0-2, at ℓ2 ξ ∈ {3, 5} and ℓ∞ ξ ∈ {0.1, 0.2}:
   ``batched``, ``sgd``, ``singular`` (fit on the first 64 images only), ``spectral``, and
   random directions on the sphere of the ball (ℓ2) or at its corners (ℓ∞), with seconds,
   images used and the alignment of v: the share of ‖v‖² in the top-10 principal subspace of the
   unit DeepFool normals of the held-out images (k/d = 10/784 = 1.3% for a random vector).
   Algorithm 1 and ART on this split are in bench_universal.json.
4. ``curve``: held-out fooling against the number of fit images (16, 64, 256, 1,000; the first n
   of [8000, 9000)) for Algorithm 1 (5 passes), ``sgd`` and ``singular`` at ℓ2 ξ = 5 (the shape
   of the paper's Figure 6), seeds 0-2; figure uap_fit_size.png.
5. ``cost``: the time of ``sgd`` (10 passes over 1,000 images, no early stop) against the time
   of the forward and backward passes it needs (10 × 1,000 rows as plain ``model(x)`` and
   ``autograd.grad`` calls at the same mini-batch), and of the same calls through sgd's own
   loss, and of the same calls through its loss and the clip of x + v to [0, 1] (every op of
   sgd's passes); best of 3, each floor timed right after an sgd run.
6. ``targeted``: targeted perturbations to each class c = 0..9 on the split of ``methods`` (seed
   0), at ℓ2 ξ = 5 and ℓ∞ ξ = 0.3: ``sgd`` with each loss (cross-entropy, margin, focal margin)
   from the 1,000 fit images, and ``singular`` from the first 64; the share of the
   held-out images not predicted as c that v sends to c (mean, lowest and highest over c).
7. ``layers``: ``singular`` from the first 64 fit images with the Jacobian of each layer of the
   CNN in turn (``layer=`` every leaf module but the flatten and the output layer, and None: the
   logits), at the
   settings of ``methods``, seeds 0-2, against ``sgd`` from all 1,000 (read from ``methods``):
   Khrulkov & Oseledets take hidden layers, and which layer serves best is a property of the
   network.

Writes analysis/results/bench_uap_methods.json and uap_fit_size.png. ``--quick``: one fit set
or seed, 200 fit images, two settings, into analysis/results/quick/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

import boundgeo as bg
from boundgeo import zoo
from boundgeo.attacks.universal import SGD_LOSS

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "analysis"))
from _environment import environment, finish  # noqa: E402

sys.path.insert(0, str(ROOT / "analysis" / "benchmarks"))
from _uap import random_direction  # noqa: E402

RESULTS = ROOT / "analysis" / "results"
PARTS = ("sgd", "cifar", "methods", "curve", "cost", "targeted", "layers")
MNIST_SETTINGS = [("linf", 0.1), ("linf", 0.15), ("linf", 0.2), ("linf", 0.3), ("l2", 3.0), ("l2", 5.0)]
CIFAR_SETTINGS = [("linf", 8 / 255), ("linf", 10 / 255)]
METHOD_SETTINGS = [("l2", 3.0), ("l2", 5.0), ("linf", 0.1), ("linf", 0.2)]
SGD_DEFAULTS = {**bg.universal_perturbation.__kwdefaults__, "loss": SGD_LOSS}  # what "boundgeo sgd" runs with
BETA = SGD_DEFAULTS["loss_clip"]
LOSS_VARIANTS = {"cross-entropy loss": dict(loss="ce"), "margin loss": dict(loss="margin"),
                 "focal margin loss": dict(loss="focal_margin")}
ABLATION = {  # boundgeo's sgd with one choice changed
    "previous default (step ξ/10, no decay, mini-batch 64, cross-entropy)": dict(
        step_size="xi/10", step_decay=1.0, batch_size=64, loss="ce"),
    "no decay (step 0.8 ξ)": dict(step_decay=1.0),
    "mini-batch 16": dict(batch_size=16),
    "mini-batch 64": dict(batch_size=64),
    "β = 12": dict(loss_clip=12.0),
    "momentum 0.9": dict(momentum=0.9),
    # each loss but the default's, and the plain margin at mini-batch 16 (session 12's best)
    **{name: changes for name, changes in LOSS_VARIANTS.items() if changes["loss"] != SGD_DEFAULTS["loss"]},
    "margin loss, mini-batch 16": dict(loss="margin", batch_size=16),
}
CIFAR_ABLATION = tuple(name for name, changes in LOSS_VARIANTS.items() if changes["loss"] != SGD_DEFAULTS["loss"])
TARGETED_SETTINGS = [("l2", 5.0), ("linf", 0.3)]
TARGETED_METHODS = {"sgd (cross-entropy)": dict(method="sgd", loss="ce"),
                    "sgd (margin loss)": dict(method="sgd", loss="margin"),
                    "sgd (focal margin loss)": dict(method="sgd", loss="focal_margin"),
                    "singular (64 images)": dict(method="singular")}
EPOCHS, TOP_K = 10, 10
FIT_SETS = 5  # of the sgd and cifar parts: at 3 the published update's own mean moved 2 points between runs
STOP = 1e-6  # δ of boundgeo's sgd beside the published update, which has no stopping rule: all 10 passes


def published_sgd_uap(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, xi: float, norm: str, *,
                      decaying: bool, seed: int, epochs: int = EPOCHS, batch: int = 32, beta: float = 12.0,
                      decay: float = 0.8) -> torch.Tensor:
    """The published SGD-UAP update (see the module docstring), on inputs in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    v = torch.zeros(x.shape[1:])
    for epoch in range(1, epochs + 1):
        step = xi * (decay ** epoch if decaying else decay)
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            v.requires_grad_(True)
            loss = F.cross_entropy(model((x[idx] + v).clamp(0, 1)), y[idx], reduction="none").clamp(max=beta).mean()
            (grad,) = torch.autograd.grad(loss, v)
            with torch.no_grad():
                if norm == "linf":
                    v = (v + step * grad.sign()).clamp(-xi, xi)
                else:
                    v = v + step * grad / grad.norm().clamp_min(1e-12)
                    v = v * min(1.0, xi / max(float(v.norm()), 1e-12))
    return v.detach()


def boundgeo_sgd(clf, x_fit, x_eval, xi, norm, seed, **changes) -> tuple[float, float]:
    if changes.get("step_size") == "xi/10":
        changes["step_size"] = xi / 10
    tick = time.perf_counter()
    uap = bg.universal_perturbation(clf, x_fit, xi=xi, norm=norm, method="sgd", seed=seed, progress=False,
                                    max_passes=EPOCHS, delta=STOP, **changes)
    seconds = time.perf_counter() - tick
    return bg.fooling_rate(clf, x_eval, uap.perturbation), seconds


def fit_sets(x: torch.Tensor, y: torch.Tensor, count: int, fit: int):
    """Fit sets of ``fit`` images drawn with seeds 100, 101, ... from x; the rest held out."""
    for s in range(count):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(100 + s))
        yield s, x[order[:fit]], y[order[:fit]], x[order[fit:]]


def compare_with_published(clf, x, y, settings, sets: int, fit: int, ablation: Sequence[str]) -> list[dict]:
    """Both published schedules, boundgeo's sgd and the ``ablation`` variants (names of ABLATION)
    on each fit set of each setting."""
    rows = []
    for norm, xi in settings:
        for s, x_fit, y_fit, x_eval in fit_sets(x, y, sets, fit):
            runs = {}
            for name, decaying in (("published SGD-UAP (decaying step)", True),
                                   ("published SGD-UAP (constant step)", False)):
                tick = time.perf_counter()
                v = published_sgd_uap(clf.model, x_fit, y_fit, xi, norm, decaying=decaying, seed=s)
                seconds = time.perf_counter() - tick  # the fit alone, as boundgeo_sgd times it
                runs[name] = (bg.fooling_rate(clf, x_eval, v), seconds)
            runs["boundgeo sgd"] = boundgeo_sgd(clf, x_fit, x_eval, xi, norm, s)
            for name in ablation:
                runs[f"sgd, {name}"] = boundgeo_sgd(clf, x_fit, x_eval, xi, norm, s, **ABLATION[name])
            for name, (rate, seconds) in runs.items():
                rows.append({"norm": norm, "xi": xi, "fit_set": s, "method": name, "eval_fooling": rate,
                             "seconds": seconds})
            print(f"{norm} ξ={xi:.4g} fit set {s}: " + ", ".join(f"{k} {r:.3f}" for k, (r, _) in runs.items()),
                  flush=True)
    return rows


def summarise(rows: list[dict], key: str = "eval_fooling") -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["norm"], row["xi"], row["method"]), []).append(row)
    out = []
    for (norm, xi, method), group in groups.items():
        values = [r[key] for r in group]
        entry = {"norm": norm, "xi": xi, "method": method, "runs": len(group), "mean": float(np.mean(values)),
                 "min": float(np.min(values)), "max": float(np.max(values)),
                 "seconds_mean": float(np.mean([r["seconds"] for r in group]))}
        for extra in ("alignment", "images"):
            if extra in group[0]:
                entry[extra] = float(np.mean([r[extra] for r in group]))
        out.append(entry)
    return out


def every_method(clf, x_fit, x_eval, settings, seeds, singular_fit: int) -> tuple[list[dict], dict]:
    tick = time.perf_counter()
    normals = bg.deepfool(clf, x_eval, progress=False).directions("normal")
    spec = bg.spectrum(normals, k=TOP_K, baseline_draws=1)
    reference = {"normals": len(normals), "seconds": time.perf_counter() - tick, "k": TOP_K,
                 "random_share": TOP_K / normals.shape[1]}
    rows = []
    for norm, xi in settings:
        for seed in seeds:
            for method in ("batched", "sgd", "singular", "spectral", "random"):
                fit = x_fit[:singular_fit] if method == "singular" else x_fit
                tick = time.perf_counter()
                if method == "random":
                    v = random_direction(x_fit.shape[1:], xi, norm, seed)
                else:
                    v = bg.universal_perturbation(clf, fit, xi=xi, norm=norm, method=method, seed=seed,
                                                  progress=False, max_passes=EPOCHS if method != "batched" else 5
                                                  ).perturbation
                seconds = time.perf_counter() - tick
                rows.append({"norm": norm, "xi": xi, "seed": seed, "method": method,
                             "eval_fooling": bg.fooling_rate(clf, x_eval, v), "seconds": seconds,
                             "images": 0 if method == "random" else len(fit),
                             "alignment": bg.alignment(v, spec, TOP_K)})
                print(f"{norm} ξ={xi:g} seed {seed} {method}: {rows[-1]['eval_fooling']:.3f} "
                      f"({seconds:.1f} s, alignment {rows[-1]['alignment']:.3f})", flush=True)
    return rows, reference


def targeted(clf, x_fit, x_eval, settings, classes, singular_fit: int = 64) -> list[dict]:
    """Each method sent to each class in turn (seed 0): the held-out share sent there."""
    rows = []
    for norm, xi in settings:
        for target in classes:
            for name, changes in TARGETED_METHODS.items():
                fit = x_fit[:singular_fit] if changes["method"] == "singular" else x_fit
                tick = time.perf_counter()
                uap = bg.universal_perturbation(clf, fit, xi=xi, norm=norm, target=target, eval_data=x_eval,
                                                seed=0, progress=False, max_passes=EPOCHS, delta=STOP, **changes)
                rows.append({"norm": norm, "xi": xi, "target": target, "method": name, "images": len(fit),
                             "eval_target": uap.eval_target_rate, "fit_target": uap.target_rate,
                             "eval_fooling": uap.eval_fooling_rate, "seconds": time.perf_counter() - tick})
            print(f"{norm} ξ={xi:g} to class {target}: " + ", ".join(
                f"{r['method']} {r['eval_target']:.3f}" for r in rows[-len(TARGETED_METHODS):]), flush=True)
    return rows


def singular_layers(clf, x_fit, x_eval, settings, seeds, singular_fit: int = 64) -> list[dict]:
    """``singular`` with the Jacobian of each leaf layer of the model (and of the logits, None).

    A leaf whose output is the model's output (the reference CNN's last Linear) is the logits
    that None gives, and is left out; so is the flatten, which only reshapes its input."""
    outputs = {}
    hooks = [module.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o))
             for name, module in clf.model.named_modules() if name and not list(module.children())]
    try:
        with torch.no_grad():
            logits = clf.model(x_fit[:1])
    finally:
        for hook in hooks:
            hook.remove()
    layers = [name for name, out in outputs.items()
              if out is not logits and not isinstance(clf.model.get_submodule(name), torch.nn.Flatten)]
    rows = []
    fit = x_fit[:singular_fit]
    for norm, xi in settings:
        for layer in [*layers, None]:
            for seed in seeds:
                tick = time.perf_counter()
                uap = bg.universal_perturbation(clf, fit, xi=xi, norm=norm, method="singular", layer=layer,
                                                seed=seed, progress=False, max_passes=EPOCHS)
                rows.append({"norm": norm, "xi": xi, "seed": seed, "layer": layer,
                             "module": type(clf.model.get_submodule(layer)).__name__ if layer else "logits",
                             "images": len(fit), "eval_fooling": bg.fooling_rate(clf, x_eval, uap.perturbation),
                             "seconds": time.perf_counter() - tick})
            print(f"{norm} ξ={xi:g} singular at layer {layer}: " + ", ".join(
                f"{r['eval_fooling']:.3f}" for r in rows[-len(seeds):]), flush=True)
    return rows


def fit_size_curve(clf, x_fit, x_eval, sizes, seeds, xi: float = 5.0, norm: str = "l2") -> list[dict]:
    rows = []
    for n in sizes:
        for seed in seeds:
            for method, passes in (("deepfool", 5), ("sgd", EPOCHS), ("singular", EPOCHS)):
                tick = time.perf_counter()
                uap = bg.universal_perturbation(clf, x_fit[:n], xi=xi, norm=norm, method=method, seed=seed,
                                                progress=False, max_passes=passes)
                rows.append({"norm": norm, "xi": xi, "images": n, "seed": seed, "method": method,
                             "eval_fooling": bg.fooling_rate(clf, x_eval, uap.perturbation),
                             "seconds": time.perf_counter() - tick})
                print(f"n={n} seed {seed} {method}: {rows[-1]['eval_fooling']:.3f} ({rows[-1]['seconds']:.1f} s)",
                      flush=True)
    return rows


def curve_figure(rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.2, 4.2))
    labels = {"deepfool": "Algorithm 1 (DeepFool, 5 passes)", "sgd": "sgd (10 passes)",
              "singular": "singular (power method, 10 iterations)"}
    for method, label in labels.items():
        sizes = sorted({r["images"] for r in rows if r["method"] == method})
        values = [[r["eval_fooling"] for r in rows if r["method"] == method and r["images"] == n] for n in sizes]
        mean = [np.mean(v) for v in values]
        ax.plot(sizes, mean, marker="o", label=label)
        ax.fill_between(sizes, [min(v) for v in values], [max(v) for v in values], alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("fit images")
    ax.set_ylabel("held-out fooling rate")
    ax.set_ylim(0, 1)
    ax.set_title(f"MNIST CNN, ℓ2 ξ = {rows[0]['xi']:g}: mean and range over {len({r['seed'] for r in rows})} seeds")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _floor_pass(model, x_fit, batch: int, loss: str | None, clean: torch.Tensor, clip=None) -> float:
    """Seconds of EPOCHS passes of plain ``model(x + v)`` and ``autograd.grad`` at ``batch``: the
    gradient of the logits' sum (``loss`` None), or of sgd's own per-input loss (the same ops);
    with ``clip`` (the classifier's ``clip``), of ``model(clip(x + v))``, the input sgd
    differentiates through. The last is every op of sgd's forward and backward passes, without its
    bookkeeping and steps."""
    from boundgeo.attacks.universal import _sgd_loss

    v = torch.zeros(x_fit.shape[1:])
    tick = time.perf_counter()
    for _ in range(EPOCHS):
        for start in range(0, len(x_fit), batch):
            v.requires_grad_(True)
            inputs = x_fit[start:start + batch] + v
            logits = model(inputs if clip is None else clip(inputs))
            if loss is None:
                total = logits.sum()
            else:
                part = clean[start:start + batch]
                total = _sgd_loss(logits, logits.detach().argmax(1), part, None, loss, BETA).sum()
            torch.autograd.grad(total, v)
    return time.perf_counter() - tick


def sgd_cost(clf, x_fit, xi: float = 0.2, norm: str = "linf", repeats: int = 7) -> dict:
    """sgd's time against the forward and backward passes it needs, at its mini-batch (32), each
    floor timed right after an sgd run: the passes alone (the logits' sum), with sgd's own loss,
    and with its own loss through the clip to [0, 1] (every op of sgd's passes)."""
    model, batch = clf.model, 32
    loss = SGD_DEFAULTS["loss"]
    clean = clf.predict(x_fit)
    best_sgd = best_floor = best_loss = best_clip = float("inf")
    for _ in range(repeats):
        tick = time.perf_counter()
        uap = bg.universal_perturbation(clf, x_fit, xi=xi, norm=norm, method="sgd", progress=False,
                                        max_passes=EPOCHS, delta=1e-9, keep_best=False)
        best_sgd = min(best_sgd, time.perf_counter() - tick)
        best_floor = min(best_floor, _floor_pass(model, x_fit, batch, None, clean))
        best_loss = min(best_loss, _floor_pass(model, x_fit, batch, loss, clean))
        best_clip = min(best_clip, _floor_pass(model, x_fit, batch, loss, clean, clip=clf.clip))
    return {"norm": norm, "xi": xi, "passes": EPOCHS, "images": len(x_fit), "batch": batch, "loss": loss,
            "gradient_rows": uap.to_frame()["gradient_evaluations"].sum().item(),
            "sgd_seconds": best_sgd, "floor_seconds": best_floor, "ratio": best_sgd / best_floor,
            "floor_with_loss_seconds": best_loss, "ratio_to_floor_with_loss": best_sgd / best_loss,
            "floor_with_loss_and_clip_seconds": best_clip, "ratio_to_floor_with_loss_and_clip": best_sgd / best_clip,
            "timing": f"best of {repeats}, interleaved, torch threads {torch.get_num_threads()}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT / "data" / "mnist"))
    parser.add_argument("--cifar-dir", default=str(ROOT / "data" / "cifar10"))
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {PARTS}")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    parts = [p for p in args.only.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--only: unknown parts {unknown}; choose from {PARTS}")
    out_dir = RESULTS / "quick" if args.quick else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else out_dir / "bench_uap_methods.json"
    sets, fit, seeds = (1, 200, (0,)) if args.quick else (FIT_SETS, 1000, (0, 1, 2))
    env = environment()
    trained = zoo.train_reference("mnist", "cnn", root=args.data_dir)
    clf = bg.Classifier(trained.model.eval())
    _, _, x_te, y_te = zoo.reference_split("mnist", root=args.data_dir)
    result: dict = {"benchmark": "uap_methods", "environment": env, "quick": args.quick, "parts": parts,
                    "setup": {"model": "reference MNIST CNN, trained on MNIST test images [0, 8000)",
                              "epochs": EPOCHS, "evaluator": "bg.fooling_rate (prediction change, clipped)",
                              "published": "Shafahi et al. 2020 / Co et al. 2021: batch 32, beta 12, true "
                                           "labels, sign step 0.8^e xi (decaying) or 0.8 xi (constant), last v",
                              "boundgeo_sgd": "defaults of bg.universal_perturbation(method='sgd'), 10 passes "
                                              f"(delta={STOP}: no early stop)",
                              "sgd_loss": SGD_DEFAULTS["loss"], "fit_sets": sets}}
    if "sgd" in parts:
        settings = MNIST_SETTINGS[2:3] + MNIST_SETTINGS[4:5] if args.quick else MNIST_SETTINGS
        rows = compare_with_published(clf, x_te, y_te, settings, sets, min(fit, 1000), ablation=list(ABLATION))
        result["sgd_vs_published"] = {"rows": rows, "summary": summarise(rows),
                                      "fit_sets": f"1,000 of MNIST test images [8000, 10000) (seeds 100-{99 + sets}), "
                                                  "the other 1,000 held out"}
    if "cifar" in parts:
        sys.path.insert(0, str(ROOT / "analysis"))
        from cifar10 import CHECKPOINT

        if not CHECKPOINT.exists():
            raise SystemExit(f"{CHECKPOINT} is missing: run analysis/cifar10.py first (it trains the ResNet)")
        resnet = zoo.load_checkpoint(CHECKPOINT)
        cifar = bg.Classifier(resnet.model.eval(), bounds=(0.0, 1.0))
        _, _, xc, yc = zoo.reference_split("cifar10", root=args.cifar_dir)
        rows = compare_with_published(cifar, xc, yc, CIFAR_SETTINGS, sets, min(fit, 1000),
                                      ablation=CIFAR_ABLATION)
        result["cifar"] = {"rows": rows, "summary": summarise(rows),
                           "model": "the CIFAR-10 ResNet of analysis/cifar10.py (trained on part of the "
                                    "CIFAR-10 test split)",
                           "fit_sets": f"1,000 of its 2,000 held-out test images (seeds 100-{99 + sets}), the other "
                                       "1,000 held out"}
    x_fit, x_eval = x_te[:min(fit, 1000)], x_te[1000:]
    if "methods" in parts:
        settings = METHOD_SETTINGS[1:2] if args.quick else METHOD_SETTINGS
        rows, reference = every_method(clf, x_fit, x_eval, settings, seeds, singular_fit=64)
        result["methods"] = {"rows": rows, "summary": summarise(rows), "alignment_reference": reference,
                             "split": "fit MNIST test images [8000, 9000), evaluate [9000, 10000) (as "
                                      "bench_universal.json)", "singular_fit": 64}
    if "curve" in parts:
        sizes = (16, 64, 200) if args.quick else (16, 64, 256, 1000)
        rows = fit_size_curve(clf, x_fit, x_eval, sizes, seeds)
        figure = out_dir / "uap_fit_size.png"
        curve_figure(rows, figure)
        result["curve"] = {"rows": rows, "figure": figure.name,
                           "summary": [{"method": m, "images": n, "mean": float(np.mean(
                               [r["eval_fooling"] for r in rows if r["method"] == m and r["images"] == n]))}
                               for m in ("deepfool", "sgd", "singular") for n in sizes]}
    if "cost" in parts:
        result["cost"] = sgd_cost(clf, x_fit)
        cost = result["cost"]
        print(f"sgd {cost['sgd_seconds']:.2f} s against {cost['floor_seconds']:.2f} s of forward and backward "
              f"passes ({cost['ratio']:.2f}x), {cost['floor_with_loss_seconds']:.2f} s with its loss "
              f"({cost['ratio_to_floor_with_loss']:.2f}x) and {cost['floor_with_loss_and_clip_seconds']:.2f} s "
              f"with its loss and clip ({cost['ratio_to_floor_with_loss_and_clip']:.2f}x)", flush=True)
    if "targeted" in parts:
        settings, classes = (TARGETED_SETTINGS[:1], (0, 1)) if args.quick else (TARGETED_SETTINGS, range(10))
        rows = targeted(clf, x_fit, x_eval, settings, classes)
        result["targeted"] = {"rows": rows, "summary": summarise(rows, key="eval_target"),
                              "split": "fit MNIST test images [8000, 9000) (singular: the first 64), "
                                       "evaluate [9000, 10000); seed 0; one run per target class",
                              "rate": "share of the held-out images not predicted as the target without v "
                                      "that v sends to it"}
    if "layers" in parts:
        settings = METHOD_SETTINGS[1:2] if args.quick else METHOD_SETTINGS
        rows = singular_layers(clf, x_fit, x_eval, settings, seeds)
        result["layers"] = {"rows": rows, "singular_fit": 64,
                            "split": "fit the first 64 of MNIST test images [8000, 9000), evaluate [9000, 10000)",
                            "layer": "the module whose output's Jacobian singular takes (None: the logits)"}
    result["environment"] = finish(env)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
