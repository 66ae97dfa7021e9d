"""The four robustness categories: toy models and the profiles of the reference models.

    python analysis/categories.py [--data-dir data/mnist]

1. The four 2-D toys (one per category) drawn with their regions and the category measured at
   the budget each was built for; the same toys in 100 dimensions, measured too.
2. Robustness profiles (ℓ2, τ = 0.5) of the affine, MLP and CNN reference models on digits (the
   540 test images) and on MNIST (1,000 of the last 2,000 images; half fit the universal
   perturbations, half are evaluated), side by side.
Writes analysis/results/categories_toys.png, categories_profiles.png, categories_mnist_cnn.png
(with MNIST) and categories.json (``{"environment", "limit", "toys", "profiles"}``).
``--quick``: the toys and the digits profiles on 100 test images over 6 budgets, into
analysis/results/quick/.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import boundgeo as bg
from _environment import environment, finish
from boundgeo import plot, toys, zoo

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "analysis" / "results"
GRIDS = {"digits": np.geomspace(0.05, 12.0, 16), "mnist": np.geomspace(0.1, 40.0, 16)}


def toy_part(out: Path) -> list[dict]:
    rows = []
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.3))
    for dim in (2, 100):
        for i, toy in enumerate(toys.all_toys(dim=dim)):
            found = bg.categorize(toy.classifier, toy.x, eps=toy.eps)
            rows.append({"toy": toy.name, "dim": dim, "eps": toy.eps, "built": toy.category,
                         "measured": found.value, "per_image_rate": found.per_image_rate,
                         "universal_rate": found.universal_rate, "random_rate": found.random_rate,
                         "formula": found.formula})
            print(f"toy {toy.name:>17} d={dim:<3}: built {toy.category}, measured {found.value} "
                  f"(per-image {found.per_image_rate:.2f}, universal {found.universal_rate:.2f}, "
                  f"random {found.random_rate:.2f})")
            if dim == 2:
                plot.plot_regions_2d(toy, ax=axes[i], category=found)
    fig.tight_layout()
    fig.savefig(out / "categories_toys.png", dpi=120)
    plt.close(fig)
    return rows


def profile_part(data_dir, out: Path, datasets=("digits", "mnist"), limit: int | None = None,
                 budgets: int = 16) -> tuple[list[dict], dict]:
    rows, profiles = [], {}
    for dataset in datasets:
        _, _, x_te, _ = zoo.reference_split(dataset, root=data_dir)
        if dataset == "mnist":
            order = torch.randperm(len(x_te), generator=torch.Generator().manual_seed(0))
            x_te = x_te[order[:1000]]
        if limit is not None:
            x_te = x_te[:limit]
        grid = np.geomspace(GRIDS[dataset][0], GRIDS[dataset][-1], budgets)
        for arch in zoo.ARCHITECTURES:
            start = time.perf_counter()
            trained = zoo.train_reference(dataset, arch, root=data_dir)
            prof = bg.robustness_profile(bg.Classifier(trained.model), x_te, epsilons=grid,
                                         norm="l2", threshold=0.5, seed=0)
            profiles[(dataset, arch)] = prof
            row = {"dataset": dataset, "model": arch, "accuracy": trained.accuracy, "n_eval": prof.n,
                   "d": prof.d, "sqrt_d": math.sqrt(prof.d), "eps2": prof.eps2, "eps3": prof.eps3,
                   "eps4": prof.eps4, "ratio_42": prof.ratio_42, "ratio_32": prof.ratio_32,
                   "margin_median": prof.margin_median, "epsilons": prof.epsilons.tolist(),
                   "per_image_rate": prof.per_image_rate.tolist(), "universal_rate": prof.universal_rate.tolist(),
                   "random_rate": prof.random_rate.tolist(), "category": prof.category.tolist(),
                   "seconds": time.perf_counter() - start, "torch_threads": torch.get_num_threads()}
            rows.append(row)
            fmt = lambda v: "—" if v is None else f"{v:.3g}"
            print(f"{dataset} {arch}: ε₂ {fmt(prof.eps2)}, ε₃ {fmt(prof.eps3)}, ε₄ {fmt(prof.eps4)}, "
                  f"ε₄/ε₂ {fmt(prof.ratio_42)} (√d = {math.sqrt(prof.d):.3g}), ε₃/ε₂ {fmt(prof.ratio_32)} "
                  f"({row['seconds']:.0f} s)")
    fig, axes = plt.subplots(len(datasets), 3, figsize=(16, 4.25 * len(datasets)), sharey=True, squeeze=False)
    legend: dict = {}  # every panel's entries: a category shaded in one panel only is listed too
    for r, dataset in enumerate(datasets):
        for c, arch in enumerate(zoo.ARCHITECTURES):
            ax = plot.plot_profile(profiles[(dataset, arch)], ax=axes[r, c], log_eps=True)
            ax.set_title(f"{dataset} {arch}", fontsize=10)
            for handle, label in zip(*ax.get_legend_handles_labels()):
                legend.setdefault(label, handle)
            ax.get_legend().remove()
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=4, frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(out / "categories_profiles.png", dpi=120)
    plt.close(fig)
    if ("mnist", "cnn") not in profiles:
        return rows, profiles
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    plot.plot_profile(profiles[("mnist", "cnn")], ax=ax, log_eps=True)
    ax.set_title("MNIST CNN: robustness profile (ℓ2, τ = 0.5)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "categories_mnist_cnn.png", dpi=130)
    plt.close(fig)
    return rows, profiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist"], choices=["digits", "mnist"])
    parser.add_argument("--limit", type=int, default=None, help="only the first N evaluation images")
    parser.add_argument("--budgets", type=int, default=16, help="budgets ε in each profile's grid")
    parser.add_argument("--quick", action="store_true",
                        help="digits only, --limit 100, 6 budgets, into analysis/results/quick/ (unless --out)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default analysis/results)")
    args = parser.parse_args()
    env = environment()
    if args.quick:
        args.datasets, args.limit, args.budgets = ["digits"], args.limit or 100, 6
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    toy_rows = toy_part(out)
    profile_rows, _ = profile_part(args.data_dir, out, args.datasets, args.limit, args.budgets)
    result = {"environment": finish(env), "limit": args.limit, "toys": toy_rows, "profiles": profile_rows}
    (out / "categories.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out / 'categories.json'} ({result['environment']['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
