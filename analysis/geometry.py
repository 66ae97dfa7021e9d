"""Boundary geometry beyond the 2017 paper on the reference MNIST CNN: margins inside DCT
subspaces, per-class spectra and one-number correlations of the normals.

    python analysis/geometry.py [--data-dir data/mnist] [--inputs 1000]
    python analysis/geometry.py --quick        # the digits CNN, 200 inputs, into analysis/results/quick/

For the MNIST CNN (boundgeo.zoo, trained on MNIST test images [0, 8000)) and 1,000 of the held-out
images [8000, 10000) (the seeded choice of analysis/curvature.py):
  1. **Margins in subspaces** (Ortiz-Jiménez et al., NeurIPS 2020, "Hold me tight!"): DeepFool with
     its gradients projected onto bands of the 2-D DCT, from low to high frequency, in two
     families: the paper's diagonal blocks (16 dimensions each) and rings lo ≤ max(u, v) < hi, which
     partition the space. Against the full-space DeepFool margin (unclipped, as the subspace ones).
  2. **Correlation numbers** of all the unit normals: the mean of cos² over pairs and the share of
     pairs with |cos| > 0.5, against 1/d and the closed form for random unit vectors.
  3. **Per-class spectra** (Jetley et al., NeurIPS 2018): one spectrum per predicted class with its
     own random baseline; the top principal direction of each class as an image; how much of each
     class's normal energy lies in the global top-10 subspace (10/d for random directions).
  4. **Dimension of the adversarial subspace** (Tramèr et al. 2017): for 300 of the inputs, how many
     orthogonal gradient-aligned directions (up to 128) fool at each step size ε.
  5. **Curved against flat directions** (Fawzi et al., CVPR 2018): at 200 boundary points, the top-10
     principal curvatures (finite differences at h = 0.1·‖r‖, as analysis/curvature.py), then how
     often a step x ± ε u fools along the most curved direction, the least curved of the ten, and
     ten random tangent directions.
Writes analysis/results/geometry.json and the figures geometry_margins_<dataset>.png,
geometry_classes_<dataset>.png, geometry_dimension_<dataset>.png and geometry_curved_<dataset>.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import boundgeo as bg
from _environment import environment, finish
from boundgeo import plot, zoo
from boundgeo.attacks.boundary import ZERO_NORMAL
from boundgeo.geometry.curvature import FOOLING_GROUPS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "analysis" / "results"
TOP_K = 10  # the global principal subspace whose share of each class's energy is reported
DIMENSION_EPS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0)  # ℓ2 steps, around the full-space margins (~2)
CURVED_EPS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)


def inputs_for(dataset: str, root, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out inputs: a seeded choice of ``count`` (MNIST, as analysis/curvature.py), or the
    digits test split."""
    _, _, x_te, y_te = zoo.reference_split(dataset, root=root)
    order = torch.randperm(len(x_te), generator=torch.Generator().manual_seed(0))[:count]
    return x_te[order], y_te[order]


def margins_record(result: bg.SubspaceMargins) -> list[dict]:
    return [{k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in row.items()}
            for row in result.summary_frame().to_dict("records")]


def margin_study(clf: bg.Classifier, xs: torch.Tensor, band_width: int,
                 kinds: tuple[str, ...] = ("block", "ring")) -> tuple[dict, dict, float]:
    """Margins of ``xs`` inside DCT bands of ``band_width`` frequencies (the paper's diagonal blocks
    and the rings that partition the space) and in the full space, unclipped like them."""
    shape = tuple(xs.shape[1:])
    tick = time.perf_counter()
    families = {kind: bg.subspace_margins(clf, xs, bg.dct_bands(shape, band_width, kind=kind)) for kind in kinds}
    seconds = time.perf_counter() - tick
    full = bg.deepfool(clf, xs, clip=False)
    full_median = float(full.margin[full.converged].median())
    record = {"inputs": len(xs), "band_width": band_width, "full_space_median": full_median,
              "full_space_converged": float(full.converged.double().mean()),
              "max_iter": families[kinds[0]].settings["max_iter"],
              "families": {kind: margins_record(result) for kind, result in families.items()},
              "seconds": seconds}
    return record, families, full_median


def margin_figure(families: dict, full_median: float, what: str, path: Path, note: str = "") -> None:
    """The median margin per band with quartiles, one panel per family; ``note`` goes on top."""
    fig, axes = plt.subplots(1, len(families), figsize=(5.5 * len(families), 4), squeeze=False)
    for ax, (kind, result) in zip(axes[0], families.items()):
        plot.plot_subspace_margins(result, ax=ax, reference=full_median)
        title = ("diagonal blocks of the DCT spectrum (Hold me tight!)" if kind == "block"
                 else "rings lo ≤ max(u, v) < hi (they partition the space)")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("DCT frequencies lo-hi (dimension of the subspace)")
    fig.suptitle(f"{what}: margins inside subspaces" + (f"\n{note}" if note else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def correlation_record(spec: bg.Spectrum) -> dict:
    summary = spec.summary()
    return {key: summary[key] for key in ("n", "mean_squared_cosine", "random_mean_squared_cosine",
                                          "abs_cosine_above_half", "random_abs_cosine_above_half", "dim_90",
                                          "random_dim_90")} | {"pair_rows": spec.pair_rows}


def class_study(pts: bg.BoundaryPoints, spec: bg.Spectrum, shape: tuple[int, ...], top_k: int = TOP_K,
                names=None) -> tuple[list[dict], torch.Tensor, list[str]]:
    """One spectrum per predicted class: a table row each, and its top principal direction (signed
    the way the class's normals point) with a title, for the figure."""
    classes = bg.spectrum(pts, kind="normal", seed=0, by="label")
    directions, titles, rows = [], [], []
    usable = pts.converged & (pts.status != ZERO_NORMAL)
    for c, class_spec in classes.items():
        normals = pts.select((pts.label == c) & usable).directions()
        top = class_spec.components[0]
        sign = 1.0 if float((normals @ top).sum()) >= 0 else -1.0  # the way the class's normals point
        directions.append(sign * top.reshape(shape))
        titles.append(f"{names[c] if names else f'class {c}'} (n = {class_spec.n})")
        summary = class_spec.summary()
        rows.append({"class": int(c), "n": class_spec.n, "dim_90": summary["dim_90"],
                     "random_dim_90": summary["random_dim_90"], "energy_top1": class_spec.energy(1),
                     "random_energy_top1": class_spec.energy(1, baseline=True),
                     "mean_squared_cosine": class_spec.mean_squared_cosine,
                     "abs_cosine_above_half": class_spec.abs_cosine_above_half,
                     "in_global_top": bg.alignment(normals, spec, top_k),
                     "top_direction_alignment_with_global": bg.alignment(top, spec, top_k)})
    return rows, torch.stack(directions), titles


def class_figure(directions: torch.Tensor, titles: list[str], what: str, path: Path, note: str = "") -> None:
    columns = (len(directions) + 1) // 2
    fig, axes = plt.subplots(2, columns, figsize=(1.7 * columns, 4.2), squeeze=False)
    plot.plot_directions(directions, titles=titles, axes=axes)
    shown = ("blue < 0 < red" if directions.shape[1] != 3 else "each channel in colour, grey = 0")
    fig.suptitle(f"{what}: the top principal direction of each predicted class's unit normals "
                 f"(pointing the way its normals do; {shown})" + (f"\n{note}" if note else ""), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def analyse(dataset: str, root, count: int, band_width: int, out: Path, dimension_inputs: int, max_k: int,
            curved_points: int) -> dict:
    start = time.perf_counter()
    if dataset == "digits":
        trained = zoo.pretrained_digits_cnn()
    else:
        trained = zoo.train_reference(dataset, "cnn", root=root)
    clf = bg.Classifier(trained.model.eval())
    x, y = inputs_for(dataset, root, count)
    shape = tuple(x.shape[1:])
    trained_seconds = time.perf_counter() - start

    # 1. margins in DCT subspaces, on the correctly classified inputs
    right = clf.predict(x) == y
    xs = x[right]
    margins, families, full_median = margin_study(clf, xs, band_width)
    margin_figure(families, full_median, f"{dataset} CNN, {len(xs)} inputs", out / f"geometry_margins_{dataset}.png")
    for kind, result in families.items():
        medians = result.median()
        print(f"  {dataset} margins ({kind}): " + ", ".join(f"{k} {v:.3g}" for k, v in medians.items())
              + f"; full space {full_median:.3g}", flush=True)

    # 2. and 3. the normals: correlation numbers of all of them, spectra per predicted class
    pts = bg.boundary_normals(clf, (x, y), progress=False)
    spec = bg.spectrum(pts, kind="normal", seed=0)
    rows, directions, titles = class_study(pts, spec, shape)
    class_figure(directions, titles, f"{dataset} CNN", out / f"geometry_classes_{dataset}.png")

    # 4. the dimension of the adversarial subspace, on correctly classified inputs
    tick = time.perf_counter()
    eps = list(DIMENSION_EPS) if dataset == "mnist" else [0.25, 0.5, 1.0, 2.0]
    dim = bg.adversarial_dimension(clf, xs[:dimension_inputs], eps, max_k=max_k, seed=0)
    dimension_seconds = time.perf_counter() - tick
    quartiles = torch.quantile(dim.dimension.double(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64),
                               dim=0, interpolation="lower")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(eps, quartiles[1].numpy(), "o-", color=plot.COLORS["per_image"], label=f"median of {len(dim.dimension)} inputs")
    ax.fill_between(eps, quartiles[0].numpy(), quartiles[2].numpy(), color=plot.COLORS["per_image"], alpha=0.2,
                    linewidth=0, label="quartiles")
    ax.axhline(max_k, color="0.5", linestyle=":", linewidth=1, label=f"the most tried (k = {max_k})")
    if dataset == "mnist":  # the published order of magnitude, for another MNIST model
        ax.axhline(25, color=plot.COLORS["random"], linestyle="--", linewidth=1,
                   label="about 25: published for MNIST (Tramèr et al. 2017)")
    ax.set_xlabel("step norm ε (ℓ2)")
    ax.set_ylabel("orthogonal directions that fool (k)")
    ax.set_title(f"{dataset} CNN: dimension of the adversarial subspace (GAAS)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"geometry_dimension_{dataset}.png", dpi=130)
    plt.close(fig)
    print(f"  {dataset} adversarial dimension, median by ε: "
          + ", ".join(f"{e:g}: {int(m)}" for e, m in zip(eps, quartiles[1].tolist()))
          + f" ({dimension_seconds:.0f} s)", flush=True)

    # 5. curved against flat: steps along principal and random tangent directions
    tick = time.perf_counter()
    converged = pts.converged.nonzero().squeeze(1)
    chosen = converged[torch.randperm(len(converged), generator=torch.Generator().manual_seed(0))[:curved_points]]
    curv = bg.boundary_curvature(clf, pts.select(chosen.sort().values), inputs=x, k=10, seed=0)
    curved_eps = list(CURVED_EPS) if dataset == "mnist" else [0.25, 0.5, 1.0, 2.0]
    fooling = bg.curvature_fooling(clf, curv, x, curved_eps, random=10, seed=0)
    curved_seconds = time.perf_counter() - tick
    colors = {FOOLING_GROUPS[0]: plot.COLORS["principal"], FOOLING_GROUPS[1]: "#c39bd3",
              FOOLING_GROUPS[2]: plot.COLORS["random"]}
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for g, name in enumerate(fooling.groups):
        ax.plot(curved_eps, fooling.rate[g].numpy(), "o-", color=colors[name], label=name)
    ax.set_xlabel("step norm ε (ℓ2) of x ± ε u, u tangent at the boundary point")
    ax.set_ylabel("share of inputs whose prediction changes")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{dataset} CNN, {int(fooling.valid.sum())} boundary points: curved against flat directions",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"geometry_curved_{dataset}.png", dpi=130)
    plt.close(fig)
    print(f"  {dataset} curved against flat: " + "; ".join(
        f"{name}: " + ", ".join(f"{r:.0%}" for r in fooling.rate[g].tolist()) for g, name in enumerate(fooling.groups))
        + f" at ε = {curved_eps} ({curved_seconds:.0f} s)", flush=True)
    kappa = fooling.curvature[fooling.valid]

    record = {
        "dataset": dataset, "model_accuracy": trained.accuracy, "d": spec.d, "inputs": len(x),
        "margins": margins,
        "correlation": correlation_record(spec),
        "top_k": TOP_K,
        "classes": rows,
        "dimension": {"inputs": len(dim.dimension), "max_k": max_k, "ks": dim.ks.tolist(), "epsilons": eps,
                      "q25": quartiles[0].tolist(), "median": quartiles[1].tolist(), "q75": quartiles[2].tolist(),
                      "mean": dim.dimension.double().mean(0).tolist(),
                      "all_of_max_k": (dim.dimension == max_k).double().mean(0).tolist(),
                      "no_gradient": int(dim.no_gradient.sum()), "seconds": dimension_seconds},
        "curved": {"points": int(fooling.valid.sum()), "k": curv.k, "random": fooling.settings["random"],
                   "epsilons": curved_eps, "groups": list(fooling.groups),
                   "rate": fooling.rate.tolist(),
                   "kappa_median": [float(kappa[:, 0].median()), float(kappa[:, 1].median())],
                   "kappa_abs_median": [float(kappa[:, 0].abs().median()), float(kappa[:, 1].abs().median())],
                   "kappa1_positive": float((kappa[:, 0] > 0).double().mean()),
                   "seconds": curved_seconds},
        "seconds": {"model": trained_seconds, "total": time.perf_counter() - start},
        "torch_threads": torch.get_num_threads(),
    }
    print(f"  {dataset}: mean cos² {spec.mean_squared_cosine:.3g} (random {spec.random_mean_squared_cosine:.3g}), "
          f"|cos| > 0.5 for {spec.abs_cosine_above_half:.1%} of pairs "
          f"(random {spec.random_abs_cosine_above_half:.2g}); classes in the global top-{TOP_K}: "
          + ", ".join(f"{r['class']} {r['in_global_top']:.0%}" for r in rows), flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT / "data" / "mnist"))
    parser.add_argument("--inputs", type=int, default=1000)
    parser.add_argument("--quick", action="store_true",
                        help="the digits CNN, 200 inputs, into analysis/results/quick/ (unless --out)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default analysis/results)")
    args = parser.parse_args()
    env = environment()
    dataset, width = ("digits", 2) if args.quick else ("mnist", 4)
    count = 200 if args.quick else args.inputs
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    record = analyse(dataset, args.data_dir if dataset == "mnist" else None, count, width, out,
                     dimension_inputs=50 if args.quick else 300, max_k=32 if args.quick else 128,
                     curved_points=40 if args.quick else 200)
    result = {"environment": finish(env), "boundgeo": bg.__version__, "records": [record]}
    (out / "geometry.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out / 'geometry.json'} and the figures ({result['environment']['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
