"""Boundary geometry of a small CIFAR-10 ResNet (issue 12, item 4).

    python analysis/cifar10.py [--data-dir data/cifar10] [--threads 1] [--retrain]

The model is bg.zoo's ResNet-8 (``zoo.train_reference("cifar10", "resnet")``). Only the CIFAR-10
*test* split is at hand (data/cifar10: the JPEG image folder), so the model is trained on the
first 800 test images of each class and everything below runs on the other 200 of each class
(2,000 held-out test images). Its checkpoint is analysis/results/cifar10_resnet.pt (325 KiB); the
script retrains it (deterministically, 10.5 minutes on one core of the shared 2-core machine) when
the file is absent, was trained with another recipe, or with ``--retrain``. The whole study took
51 minutes there (``--threads 1``; wall seconds per stage are in the JSON); ``--limit 200`` takes a
quick look in a few minutes, and ``--quick`` (``--limit 100``, fewer draws, points, seeds, passes
and budgets, SGD only) writes it to analysis/results/quick/. Every figure's title says what the model was trained
and evaluated on.

The held-out images are split in two halves (seed 0): A (1,000) and B (1,000).
  1. normals: DeepFool (ℓ2, and ℓ∞ for the margins) on all 2,000; ρ_adv = mean ‖r‖₂/‖x‖₂ against
     DeepFool's published CIFAR-10 figures (NIN 0.023, LeNet 0.030; CVPR 2016, Table 1);
  2. spectrum: singular values of the unit normals and of r/‖r‖ (the paper's N) of A against
     random unit vectors in R^3072;
  3. subspace fooling: random vectors in the top-d' principal directions of N (d' = 10, 50, 100;
     from A) against random vectors in the full space, on B, 10 draws per radius;
  4. universal perturbations at ℓ∞ ξ = 8/255 and 10/255 and ℓ2 ξ = 1 and 2, fitted on 500 images
     of A and evaluated on B, seeds 0-2: "sgd" (5 passes) and "batched" (3 passes) at all four,
     Algorithm 1 ("deepfool", 3 passes) at ℓ∞ 10/255 and ℓ2 2; beside random vectors and a
     chessboard (Co et al. 2021) of the same size;
  5. robustness profile (ℓ2, τ = 0.5) over 14 budgets on B (half fits the universal witnesses);
  6. curvature at 300 of A's boundary points (h = 0.1·‖r‖), along the top-10 principal
     directions of the normals against 10 random directions;
  7. geometry beyond the paper (as analysis/geometry.py on MNIST): margins inside DCT bands of 4
     frequencies (diagonal blocks of 48 dimensions, and rings) for 500 correctly classified images
     of B, against the full-space margin; one spectrum per predicted class of A's normals, the top
     direction of each, and the share of each class's normal energy in the global top-10 subspace.
Writes analysis/results/cifar10.json and the figures analysis/results/cifar10_*.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import boundgeo as bg
from _environment import environment, finish
from geometry import TOP_K, class_figure, class_study, correlation_record, margin_figure, margin_study
from boundgeo import plot, zoo
from boundgeo._perturb import scale_to_norm
from boundgeo.io.datasets import CIFAR10_CLASSES

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "analysis" / "results"
CHECKPOINT = RESULTS / "cifar10_resnet.pt"
SUBSPACE_DIMS = (10, 50, 100)
RADIUS_MULTIPLES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
UNIVERSAL_SETTINGS = (("linf", 8 / 255), ("linf", 10 / 255), ("l2", 1.0), ("l2", 2.0))
UNIVERSAL_METHODS = ("sgd", "batched", "deepfool")
PASSES = {"sgd": 5, "batched": 3, "deepfool": 3}  # DeepFool-based passes cost 5-10 SGD passes here
ALGORITHM1_SETTINGS = (("linf", 10 / 255), ("l2", 2.0))  # Algorithm 1 is the slowest: two settings
UNIVERSAL_FIT = 500  # of A; the paper: 500 images already fool > 30% on ImageNet
SEEDS = (0, 1, 2)
MARGIN_BAND = 4  # DCT frequencies per band: 8 bands over 32; a diagonal block holds 4 x 4 x 3 = 48 dims
PROFILE_EPSILONS = np.geomspace(0.02, 20.0, 14)
CHESSBOARD_PERIODS = (1, 2, 4, 8, 16)
PUBLISHED_RHO = {"NIN": 0.023, "LeNet": 0.030}  # DeepFool (CVPR 2016), Table 1, CIFAR-10
TRAINED_ON = ("trained on part of the CIFAR-10 test split (its first 800 images per class), "
              "evaluated on the other 2,000")


class Stages:
    """Wall seconds per stage, printed as each ends."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.seconds[name] = round(time.perf_counter() - start, 1)
        print(f"[{name}: {self.seconds[name]:.0f} s]", flush=True)
        return out


def reference_model(data_dir, retrain: bool, quick: bool = False) -> zoo.TrainedModel:
    """The checkpoint if it holds the current recipe, else a fresh (deterministic) training.

    A quick run never trains (10 minutes) nor overwrites the published checkpoint: it stops instead.
    """
    recipe = zoo.RECIPES[("cifar10", "resnet")]
    if CHECKPOINT.exists() and not retrain:
        trained = zoo.load_checkpoint(CHECKPOINT)
        # the recipe it was trained with, and the thread count it trained at (the weights depend
        # on it: the recipe names the count, and a checkpoint records the one it used)
        used = {**trained.meta.get("recipe", {}), "threads": trained.meta.get("threads")}
        if used == recipe and trained.seed == 0:
            return trained
        print(f"{CHECKPOINT.name} was trained with another recipe or thread count ({used}, not {recipe}); retraining")
    if quick:
        raise SystemExit(f"--quick uses the checkpoint {CHECKPOINT}, which is missing or holds another recipe "
                         "than boundgeo.zoo.RECIPES; run without --quick (or with --retrain) to train it")
    trained = zoo.train_reference("cifar10", "resnet", root=data_dir, seed=0, progress=True)
    meta = dict(trained.meta, recipe={k: v for k, v in recipe.items() if k != "threads"}, torch=str(torch.__version__))
    trained = dataclasses.replace(trained, meta=meta)
    trained.save(CHECKPOINT)
    print(f"wrote {CHECKPOINT} ({CHECKPOINT.stat().st_size / 1024:.0f} KiB), trained in {trained.seconds:.0f} s")
    return trained


def margins_part(clf, x, y, halves) -> tuple[dict, bg.BoundaryPoints]:
    pts = bg.boundary_normals(clf, (x, y), progress=False, seed=0)
    pts_inf = bg.boundary_normals(clf, (x, y), norm="linf", progress=False, seed=0)
    ok = pts.converged
    x_norm = x[pts.index].flatten(1).norm(dim=1)
    rho = pts.margin[ok] / x_norm[ok]
    ok_inf = pts_inf.converged
    rho_inf = pts_inf.margin[ok_inf] / x[pts_inf.index[ok_inf]].flatten(1).abs().amax(dim=1)
    assert torch.isfinite(rho).all() and (rho > 0).all(), "ρ_adv must be positive and finite"
    record = {
        "n_inputs": len(x),
        "skipped_misclassified": pts.settings["skipped_misclassified"],
        "n_converged": int(ok.sum()),
        "l2": {"median_margin": float(pts.margin[ok].median()), "mean_margin": float(pts.margin[ok].mean()),
               "rho_adv": float(rho.mean()), "rho_adv_median": float(rho.median()),
               "mean_iterations": float(pts.iterations[ok].float().mean()),
               "mean_input_norm": float(x_norm[ok].mean())},
        "linf": {"n_converged": int(ok_inf.sum()), "median_margin": float(pts_inf.margin[ok_inf].median()),
                 "median_margin_255": float(255 * pts_inf.margin[ok_inf].median()),
                 "mean_margin": float(pts_inf.margin[ok_inf].mean()), "rho_adv_inf": float(rho_inf.mean()),
                 "share_below_8_255": float((pts_inf.margin[ok_inf] <= 8 / 255).double().mean())},
        "published_rho_adv": PUBLISHED_RHO,
    }
    in_a = torch.isin(pts.index, halves["A"])
    print(f"normals: {int(ok.sum())} of {len(x)} held-out images (skipped {record['skipped_misclassified']} "
          f"misclassified); median ‖r‖₂ {record['l2']['median_margin']:.3f}, ρ_adv {record['l2']['rho_adv']:.4f} "
          f"(published NIN 0.023, LeNet 0.030); median ‖r‖∞ {record['linf']['median_margin_255']:.2f}/255",
          flush=True)
    return record, pts, pts.select(in_a.nonzero().squeeze(1))


def spectrum_part(pts_a) -> tuple[dict, bg.Spectrum, bg.Spectrum]:
    spec_normal = bg.spectrum(pts_a, kind="normal", seed=0)
    spec_pert = bg.spectrum(pts_a, kind="perturbation", seed=0)
    record = {"normals": spec_normal.summary(), "perturbations": spec_pert.summary(),
              "energy": {str(k): {"N": spec_pert.energy(k), "random": spec_pert.energy(k, baseline=True)}
                         for k in (1, 10, 50, 100, 500)},
              "singular_values_top20": spec_pert.singular_values[:20].tolist()}
    print(f"spectrum of N ({spec_pert.n} × {spec_pert.d}): 90% of Σσ² in {spec_pert.dim(0.9)} dims "
          f"(random {spec_pert.dim(0.9, baseline=True)}), top-10 energy {spec_pert.energy(10):.3f} "
          f"(random {spec_pert.energy(10, baseline=True):.3f})", flush=True)
    return record, spec_normal, spec_pert


def subspace_part(clf, x_b, spec_pert, median_margin, draws) -> tuple[dict, dict]:
    radii = [m * median_margin for m in RADIUS_MULTIPLES]
    fooling = {k: bg.subspace_fooling(clf, x_b, spec_pert.basis(k), radii=radii, draws=draws, seed=1)
               for k in SUBSPACE_DIMS if k <= min(spec_pert.n, spec_pert.d)}
    first = fooling[SUBSPACE_DIMS[0]]
    low = (first.full_rate < 0.10).nonzero().squeeze(1)
    at = int(low[-1]) if len(low) else 0  # the paper's comparison: full-space fooling below 10%
    record = {
        "n_eval": first.n, "draws": draws, "radius_multiples_of_median_margin": list(RADIUS_MULTIPLES),
        "radii": radii,
        "full_rate": {str(k): r.full_rate.tolist() for k, r in fooling.items()},
        "subspace_rate": {str(k): r.subspace_rate.tolist() for k, r in fooling.items()},
        "comparison_radius": radii[at],
        "comparison": {str(k): {"subspace_rate": float(r.subspace_rate[at]), "full_rate": float(r.full_rate[at])}
                       for k, r in fooling.items()},
    }
    print(f"subspace fooling at ‖v‖₂ = {radii[at]:.2f}: " + ", ".join(
        f"d'={k}: {v['subspace_rate']:.1%} (full {v['full_rate']:.1%})" for k, v in record["comparison"].items()),
        flush=True)
    return record, fooling


def universal_part(clf, x_a, x_b, passes: dict, methods, seeds=SEEDS) -> tuple[list[dict], dict]:
    rows, kept = [], {}
    for norm, xi in UNIVERSAL_SETTINGS:
        for method in methods:
            if method == "deepfool" and (norm, xi) not in ALGORITHM1_SETTINGS:
                continue
            for seed in seeds:
                uap = bg.universal_perturbation(clf, x_a, xi=xi, norm=norm, method=method,
                                                max_passes=passes[method], eval_data=x_b, seed=seed,
                                                progress=False)
                size = float(uap.perturbation.abs().max() if norm == "linf" else uap.perturbation.norm())
                assert size <= xi * (1 + 1e-5), f"‖v‖ = {size} exceeds ξ = {xi}"
                rows.append({"norm": norm, "xi": xi, "method": method, "seed": seed,
                             "fit_rate": uap.fooling_rate, "eval_rate": uap.eval_fooling_rate,
                             "passes": uap.passes, "reached": uap.reached, "seconds": uap.seconds, "size": size})
                if seed == 0:
                    kept[(norm, xi, method)] = uap
            runs = [r for r in rows if (r["norm"], r["xi"], r["method"]) == (norm, xi, method)]
            rates = [r["eval_rate"] for r in runs]
            print(f"universal {norm} ξ={xi:.4g} {method}: held-out {np.mean(rates):.1%} "
                  f"({min(rates):.1%}–{max(rates):.1%}), {np.mean([r['seconds'] for r in runs]):.0f} s per run",
                  flush=True)
    # random vectors of the same size: uniform on the ℓ2 sphere; random signs for ℓ∞
    generator = torch.Generator().manual_seed(0)
    for norm, xi in UNIVERSAL_SETTINGS:
        for seed in seeds:
            v = torch.randn(x_b.shape[1:], generator=generator)
            v = xi * (v.sign() if norm == "linf" else v / v.norm())
            rows.append({"norm": norm, "xi": xi, "method": "random", "seed": seed, "fit_rate": None,
                         "eval_rate": bg.fooling_rate(clf, x_b, v), "passes": 0, "reached": False,
                         "seconds": 0.0, "size": float(v.abs().max() if norm == "linf" else v.norm())})
    # Co et al. (ICIP 2021): a plain chessboard of the same size, its square size chosen on A
    for norm, xi in UNIVERSAL_SETTINGS:
        boards = {p: chessboard(tuple(x_b.shape[1:]), p, xi, norm) for p in CHESSBOARD_PERIODS}
        fit = {p: bg.fooling_rate(clf, x_a, v) for p, v in boards.items()}
        best = max(fit, key=fit.get)
        rows.append({"norm": norm, "xi": xi, "method": "chessboard", "seed": None, "square": best,
                     "fit_rate": fit[best], "eval_rate": bg.fooling_rate(clf, x_b, boards[best]), "passes": 0,
                     "reached": False, "seconds": 0.0, "size": xi})
    return rows, kept


def chessboard(shape: tuple[int, int, int], square: int, xi: float, norm: str) -> torch.Tensor:
    """±1 squares of ``square`` pixels, the same in every channel, scaled to ‖v‖ = ξ."""
    c, h, w = shape
    rows, cols = torch.arange(h) // square, torch.arange(w) // square
    board = ((rows[:, None] + cols[None, :]) % 2 * 2 - 1).float().expand(c, h, w)
    return xi * board if norm == "linf" else xi * board / board.norm()


def summarise_universal(rows: list[dict]) -> list[dict]:
    table = []
    for norm, xi in UNIVERSAL_SETTINGS:
        for method in (*UNIVERSAL_METHODS, "chessboard", "random"):
            runs = [r for r in rows if (r["norm"], r["xi"], r["method"]) == (norm, xi, method)]
            if not runs:
                continue
            rates = np.array([r["eval_rate"] for r in runs])
            table.append({"norm": norm, "xi": xi, "method": method, "seeds": len(runs),
                          "eval_mean": float(rates.mean()), "eval_min": float(rates.min()),
                          "eval_max": float(rates.max()),
                          "fit_mean": (float(np.mean([r["fit_rate"] for r in runs]))
                                       if runs[0]["fit_rate"] is not None else None),
                          "seconds_mean": float(np.mean([r["seconds"] for r in runs]))})
    return table


def profile_part(clf, x_b, budgets: int = len(PROFILE_EPSILONS)) -> tuple[dict, bg.RobustnessProfile]:
    epsilons = np.geomspace(PROFILE_EPSILONS[0], PROFILE_EPSILONS[-1], budgets)
    prof = bg.robustness_profile(clf, x_b, epsilons=epsilons, norm="l2", threshold=0.5, seed=0)
    record = {"n_eval": prof.n, "d": prof.d, "sqrt_d": math.sqrt(prof.d), "eps2": prof.eps2, "eps3": prof.eps3,
              "eps4": prof.eps4, "ratio_32": prof.ratio_32, "ratio_42": prof.ratio_42,
              "margin_median": prof.margin_median, "epsilons": prof.epsilons.tolist(),
              "per_image_rate": prof.per_image_rate.tolist(), "universal_rate": prof.universal_rate.tolist(),
              "random_rate": prof.random_rate.tolist(), "category": prof.category.tolist(),
              "settings": prof.settings}
    fmt = lambda v: "—" if v is None else f"{v:.3g}"
    print(f"profile: ε₂ {fmt(prof.eps2)}, ε₃ {fmt(prof.eps3)}, ε₄ {fmt(prof.eps4)}, ε₃/ε₂ {fmt(prof.ratio_32)}, "
          f"ε₄/ε₂ {fmt(prof.ratio_42)} (√d = {math.sqrt(prof.d):.3g})", flush=True)
    return record, prof


def curvature_part(clf, pts_a, x, spec_normal, n_points: int) -> tuple[dict, bg.Curvature]:
    converged = pts_a.converged.nonzero().squeeze(1)
    generator = torch.Generator().manual_seed(0)
    chosen = converged[torch.randperm(len(converged), generator=generator)[:n_points]].sort().values
    along = {"top-10 principal directions of the normals": spec_normal.basis(10),
             "random directions": scale_to_norm(torch.randn(10, spec_normal.d, generator=generator), "l2")}
    curv = bg.boundary_curvature(clf, pts_a.select(chosen), inputs=x, k=10, relative_step=0.1, along=along, seed=0)
    frame = curv.to_frame()
    top = frame[frame["rank"] == 1].curvature
    groups = {g: {"mean": float(r.curvature.mean()), "median": float(r.curvature.median()),
                  "positive": float((r.curvature > 0).mean())}
              for g, r in curv.along_frame().groupby("group", sort=False)}
    record = {"points": int(curv.valid.sum()), "k": 10, "relative_step": 0.1,
              "on_boundary": float(curv.on_boundary[curv.valid].float().mean()),
              "top_abs_median": float(top.abs().median()), "top_positive": float((top > 0).mean()),
              "all_positive": float((frame.curvature > 0).mean()),
              "rank_medians": frame.groupby("rank").curvature.median().round(5).tolist(),
              "residual_median": float(frame.residual.median()),
              "step_median": float(curv.step[curv.valid].median()), "along": groups, "cost": curv.cost}
    print(f"curvature at {record['points']} points: median |κ₁| {record['top_abs_median']:.3g}, κ₁ > 0 at "
          f"{record['top_positive']:.0%}; " + "; ".join(f"{g}: mean {v['mean']:.3g} ({v['positive']:.0%} > 0)"
                                                      for g, v in groups.items()), flush=True)
    return record, curv


def geometry_part(clf, x_b, y_b, pts_a, spec_normal, inputs: int, out: Path) -> tuple[dict, list[str]]:
    """Margins inside DCT bands for correctly classified images of B; per-class spectra of A's normals."""
    right = (clf.predict(x_b) == y_b.to(x_b.device)).cpu()
    xs = x_b[right][:inputs]
    margins, families, full_median = margin_study(clf, xs, MARGIN_BAND)
    what = f"CIFAR-10 ResNet-8, {len(xs)} held-out images"
    margin_figure(families, full_median, what, out / "cifar10_margins.png", note=f"ResNet-8 {TRAINED_ON}")
    rows, directions, titles = class_study(pts_a, spec_normal, tuple(x_b.shape[1:]), names=CIFAR10_CLASSES)
    class_figure(directions, titles, "CIFAR-10 ResNet-8", out / "cifar10_classes.png", note=f"ResNet-8 {TRAINED_ON}")
    for kind, result in families.items():
        print(f"margins in DCT bands ({kind}): " + ", ".join(f"{k} {v:.3g}" for k, v in result.median().items())
              + f"; full space {full_median:.3g}", flush=True)
    print("share of each class's normal energy in the global top-10: "
          + ", ".join(f"{CIFAR10_CLASSES[r['class']]} {r['in_global_top']:.0%}" for r in rows), flush=True)
    record = {"dataset": "cifar10", "model": "ResNet-8", "d": spec_normal.d, "top_k": TOP_K, "margins": margins,
              "classes": rows, "class_names": list(CIFAR10_CLASSES), "correlation": correlation_record(spec_normal)}
    return record, ["cifar10_margins.png", "cifar10_classes.png"]


def figures(out: Path, spec_normal, spec_pert, fooling, kept, x_b, clf, prof, curv) -> list[str]:
    written = []

    def save(fig, name):
        # every figure's title says what the model was trained and evaluated on
        above = fig.get_suptitle() + "\n" if fig.get_suptitle() else ""
        fig.suptitle(f"{above}ResNet-8 {TRAINED_ON}", fontsize=9 if above else 8.5)
        fig.tight_layout()
        fig.savefig(out / name, dpi=130)
        plt.close(fig)
        written.append(name)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    plot.plot_spectrum({"ResNet-8": spec_normal}, ax=axes[0])
    axes[0].set_title("CIFAR-10 ResNet-8: unit boundary normals", fontsize=10)
    plot.plot_spectrum({"ResNet-8": spec_pert}, ax=axes[1])
    axes[1].set_title("CIFAR-10 ResNet-8: r(x)/‖r(x)‖ (the paper's N)", fontsize=10)
    fig.tight_layout()
    save(fig, "cifar10_spectrum.png")

    axes = plot.plot_directions(spec_pert.basis(10, reshape=True), titles=[f"v{i + 1}" for i in range(10)])
    fig = np.ravel(axes)[0].figure
    fig.suptitle("CIFAR-10 ResNet-8: top principal directions of r/‖r‖ (each scaled to its own range)",
                 fontsize=9)
    fig.tight_layout()
    save(fig, "cifar10_directions.png")

    fig, ax = plt.subplots(figsize=(6.5, 4.3))
    plot.plot_subspace_fooling({f"subspace d'={k}": r for k, r in fooling.items()}, ax=ax)
    ax.set_title("CIFAR-10 ResNet-8: random vectors in the principal subspace\nagainst the full space "
                 f"({fooling[SUBSPACE_DIMS[0]].n} held-out images)", fontsize=10)
    fig.tight_layout()
    save(fig, "cifar10_subspace.png")

    settings = [s for s in UNIVERSAL_SETTINGS]
    methods = [m for m in UNIVERSAL_METHODS if any((n, xi, m) in kept for n, xi in settings)]
    fig, axes = plt.subplots(len(methods), len(settings), figsize=(4.2 * len(settings), 3.7 * len(methods)),
                             squeeze=False)
    for r, method in enumerate(methods):
        for c, (norm, xi) in enumerate(settings):
            uap = kept.get((norm, xi, method))
            ax = axes[r, c]
            if uap is None:
                ax.axis("off")
                continue
            size = f"{xi * 255:.0f}/255" if norm == "linf" else f"{xi:g}"
            plot.plot_perturbation(uap, ax=ax, title=f"{method}, {'ℓ∞' if norm == 'linf' else 'ℓ2'} ξ = {size}: "
                                   f"held-out fooling {uap.eval_fooling_rate:.1%}")
            ax.title.set_fontsize(7.5)
    fig.suptitle("Universal perturbations of the CIFAR-10 ResNet-8 (seed 0; colours scaled to each one's range)",
                 fontsize=10)
    fig.tight_layout()
    save(fig, "cifar10_universal.png")

    uap = kept[("linf", 10 / 255, "sgd")]
    examples = bg.perturbed_examples(clf, x_b, uap.perturbation, k=8, seed=0)
    axes = plot.plot_examples(examples, class_names=CIFAR10_CLASSES)
    fig = axes[0][0].figure
    fig.suptitle(f"Held-out images with the SGD universal perturbation (ℓ∞ ξ = 10/255) added; "
                 f"it changes {uap.eval_fooling_rate:.0%} of the held-out predictions", fontsize=9)
    fig.tight_layout()
    save(fig, "cifar10_examples.png")

    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    plot.plot_profile(prof, ax=ax, log_eps=True)
    ax.set_title("CIFAR-10 ResNet-8: robustness profile (ℓ2, τ = 0.5)", fontsize=10)
    fig.tight_layout()
    save(fig, "cifar10_profile.png")

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    plot.plot_curvature(curv, ax=axes[0])
    axes[0].set_title("CIFAR-10 ResNet-8: " + axes[0].get_title(), fontsize=9)
    plot.plot_section_curvature(curv, ax=axes[1])
    axes[1].set_title("CIFAR-10 ResNet-8: " + axes[1].get_title(), fontsize=9)
    fig.tight_layout()
    save(fig, "cifar10_curvature.png")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT / "data" / "cifar10"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--retrain", action="store_true", help="retrain even if the checkpoint exists")
    parser.add_argument("--draws", type=int, default=10, help="random directions per radius (subspace fooling)")
    parser.add_argument("--passes", type=int, default=None,
                        help=f"passes of every universal perturbation (default {PASSES})")
    parser.add_argument("--fit", type=int, default=UNIVERSAL_FIT, help="images of A that fit them")
    parser.add_argument("--points", type=int, default=300, help="boundary points for the curvature")
    parser.add_argument("--margin-inputs", type=int, default=500,
                        help="correctly classified images of B whose margins in DCT bands are measured")
    parser.add_argument("--methods", nargs="+", default=list(UNIVERSAL_METHODS), choices=UNIVERSAL_METHODS)
    parser.add_argument("--limit", type=int, default=None,
                        help="a quick look: only this many held-out images (seeded choice)")
    parser.add_argument("--seeds", type=int, default=len(SEEDS), help="seeds of every universal perturbation")
    parser.add_argument("--budgets", type=int, default=len(PROFILE_EPSILONS), help="budgets of the profile")
    parser.add_argument("--quick", action="store_true",
                        help="--limit 100, 2 draws, 20 points, 30 margin inputs, SGD only, 1 pass, 50 fitting images, 1 seed, "
                             "6 budgets, into analysis/results/quick/ (unless --out)")
    parser.add_argument("--out", type=Path, default=None, help="where the JSON and figures go (default "
                        "analysis/results)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    env = environment()
    if args.quick:
        args.limit, args.draws, args.points, args.margin_inputs = args.limit or 100, 2, 20, 30
        args.methods, args.passes, args.fit, args.seeds, args.budgets = ["sgd"], 1, 50, 1, 6
    args.out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    args.out.mkdir(parents=True, exist_ok=True)
    stages = Stages()
    started = time.perf_counter()

    trained = stages.run("model", reference_model, args.data_dir, args.retrain, args.quick)
    _, _, x, y = zoo.reference_split("cifar10", root=args.data_dir)
    accuracy = zoo.accuracy(trained.model, x, y)
    print(f"ResNet-8: held-out accuracy {accuracy:.2%} on {len(y)} CIFAR-10 test images "
          f"(trained on the other 8,000 test images; the training split is not at hand)", flush=True)
    clf = bg.Classifier(trained.model, bounds=(0.0, 1.0))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    if args.limit is not None:
        x, y = x[order[:args.limit]], y[order[:args.limit]]
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    halves = {"A": order[: len(x) // 2].sort().values, "B": order[len(x) // 2:].sort().values}
    x_a, x_b, y_b = x[halves["A"]], x[halves["B"]], y[halves["B"]]

    margins, pts, pts_a = stages.run("normals", margins_part, clf, x, y, halves)
    spectra, spec_normal, spec_pert = stages.run("spectrum", spectrum_part, pts_a)
    subspace, fooling = stages.run("subspace", subspace_part, clf, x_b, spec_pert, margins["l2"]["median_margin"],
                                   args.draws)
    passes = {m: args.passes or PASSES[m] for m in UNIVERSAL_METHODS}
    seeds = SEEDS[: args.seeds] if args.seeds <= len(SEEDS) else tuple(range(args.seeds))
    universal_rows, kept = stages.run("universal", universal_part, clf, x_a[: args.fit], x_b, passes,
                                      args.methods, seeds)
    profile, prof = stages.run("profile", profile_part, clf, x_b, args.budgets)
    curvature, curv = stages.run("curvature", curvature_part, clf, pts_a, x, spec_normal, args.points)
    geometry, geometry_figures = stages.run("geometry", geometry_part, clf, x_b, y_b, pts_a, spec_normal,
                                            args.margin_inputs, args.out)
    written = stages.run("figures", figures, args.out, spec_normal, spec_pert, fooling, kept, x_b, clf, prof, curv)
    written += geometry_figures

    record = {
        "what": "boundary geometry of a ResNet-8 on CIFAR-10 (analysis/cifar10.py)",
        "data": {"dataset": "CIFAR-10 test split, JPEG image folder (data/cifar10, quality 75)",
                 "caveat": "the model was trained on part of the CIFAR-10 TEST split (the first 800 images "
                           "of each class); the training split is not available here",
                 "train": "first 800 test images of each class (8,000)",
                 "heldout": "last 200 test images of each class (2,000)",
                 "limit": args.limit,
                 "halves": f"held-out images (normals and ρ_adv: all {len(x)}) split with seed 0 into "
                           f"A ({len(x_a)}: spectrum, universal fit, curvature) and "
                           f"B ({len(x_b)}: subspace fooling, universal evaluation, profile)"},
        "model": {"arch": "resnet (ResNet-8: stem 16, basic blocks 16-32-64, BatchNorm)",
                  "parameters": sum(p.numel() for p in trained.model.parameters()),
                  "recipe": zoo.RECIPES[("cifar10", "resnet")], "seed": trained.seed,
                  "heldout_accuracy": accuracy, "checkpoint_accuracy": trained.accuracy,
                  "train_seconds": trained.seconds, "trained_with_threads": trained.meta.get("threads"),
                  "checkpoint": str(CHECKPOINT.relative_to(ROOT))},
        "margins": margins,
        "spectrum": spectra,
        "subspace_fooling": subspace,
        "universal": {"fit": f"the first {len(x_a[: args.fit])} of A", "eval": f"B ({len(x_b)} held-out images)",
                      "max_passes": passes, "delta": 0.2, "seeds": list(seeds),
                      "settings": [{"norm": n, "xi": xi} for n, xi in UNIVERSAL_SETTINGS],
                      "algorithm1_settings": [{"norm": n, "xi": xi} for n, xi in ALGORITHM1_SETTINGS],
                      "random": "uniform on the ℓ2 sphere; random signs (a corner of the ℓ∞ ball)",
                      "chessboard": f"±ξ squares of {CHESSBOARD_PERIODS} pixels (Co et al. 2021), the "
                                    "square size chosen on the fit images",
                      "table": summarise_universal(universal_rows), "runs": universal_rows},
        "profile": profile,
        "curvature": curvature,
        "geometry": geometry,
        "figures": written,
        "seconds": {**stages.seconds, "total": round(time.perf_counter() - started, 1)},
        "torch_threads": torch.get_num_threads(),
    }
    record = {"environment": finish(env), **record}
    (args.out / "cifar10.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out / 'cifar10.json'} and {', '.join(written)} ({record['seconds']['total']:.0f} s)")


if __name__ == "__main__":
    main()
