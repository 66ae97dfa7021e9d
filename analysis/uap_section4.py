"""Reproduce Section 4 of Moosavi-Dezfooli et al. 2017 on MNIST and on digits.

    python analysis/uap_section4.py [--datasets mnist digits] [--data-dir data/mnist]

For each dataset and each reference model (affine, MLP, CNN):
  1. normals: DeepFool boundary points (MNIST: 1,000 held-out images, of the last 2,000, chosen
     with seed 0; digits: the 1,257 images the model was trained on);
  2. spectrum: singular values of the matrix of unit normals and of r/‖r‖ (the paper's N)
     against n random unit vectors in R^d (5 draws) and the Marchenko-Pastur prediction;
  3. subspace fooling: random vectors of growing radius inside the span of the top d' principal
     directions (d' in {10, 50, 100}) against random vectors in the full space, measured on the
     *other* held-out inputs (MNIST: the remaining 1,000; digits: the 540 test images).
Writes to analysis/results/: section4_spectrum_<dataset>.png, section4_fooling_<dataset>.png,
section4_directions_<dataset>.png, section4.json (``{"environment": ..., "rows": [one per dataset
and model]}``) and section4.md (the table). ``--quick``: digits only, 300 inputs for the normals
and 300 for the fooling, 2 draws per radius, into analysis/results/quick/.
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

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "analysis" / "results"
SUBSPACE_DIMS = (10, 50, 100)
RADIUS_MULTIPLES = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


def split_for(dataset: str, root):
    """(x_normals, y_normals, x_eval, y_eval): disjoint inputs for the basis and for fooling."""
    x_tr, y_tr, x_te, y_te = zoo.reference_split(dataset, root=root)
    if dataset == "mnist":
        order = torch.randperm(len(x_te), generator=torch.Generator().manual_seed(0))
        a, b = order[:1000], order[1000:]
        return x_te[a], y_te[a], x_te[b], y_te[b]
    return x_tr, y_tr, x_te, y_te


def analyse(dataset: str, arch: str, root, draws: int, limit: int | None = None) -> dict:
    start = time.perf_counter()
    trained = zoo.train_reference(dataset, arch, root=root)
    clf = bg.Classifier(trained.model)
    x_n, y_n, x_e, y_e = split_for(dataset, root)
    if limit is not None:  # a quick look: the first `limit` inputs of each part
        x_n, y_n, x_e, y_e = x_n[:limit], y_n[:limit], x_e[:limit], y_e[:limit]
    pts = bg.boundary_normals(clf, (x_n, y_n), progress=False)
    ok = pts.converged
    rho_adv = float((pts.margin[ok] / x_n[pts.index[ok]].flatten(1).norm(dim=1)).mean())
    spec_normal = bg.spectrum(pts, kind="normal", seed=0)
    spec_pert = bg.spectrum(pts, kind="perturbation", seed=0)
    median_margin = float(pts.margin[ok].median())
    radii = [m * median_margin for m in RADIUS_MULTIPLES]
    fooling = {}
    for k in SUBSPACE_DIMS:
        if k > spec_pert.d:
            continue
        fooling[k] = bg.subspace_fooling(clf, x_e, spec_pert.basis(k), radii=radii, draws=draws, seed=1)
    # the paper's comparison: at radii where random full-space vectors fool fewer than 10%
    first = next(iter(fooling.values()))
    low = (first.full_rate < 0.10).nonzero().squeeze(1)
    at = int(low[-1]) if len(low) else 0
    row = {
        "dataset": dataset,
        "model": arch,
        "accuracy": trained.accuracy,
        "n_normals": int(ok.sum()),
        "skipped_misclassified": pts.settings["skipped_misclassified"],
        "d": spec_pert.d,
        "median_margin_l2": median_margin,
        "rho_adv": rho_adv,
        "normals": spec_normal.summary(),
        "perturbations": spec_pert.summary(),
        "energy_top10_perturbation": spec_pert.energy(10),
        "random_energy_top10": spec_pert.energy(10, baseline=True),
        "radii": radii,
        "full_rate": first.full_rate.tolist(),
        "subspace_rate": {str(k): r.subspace_rate.tolist() for k, r in fooling.items()},
        "comparison_radius": radii[at],
        "comparison": {
            str(k): {
                "subspace_rate": float(r.subspace_rate[at]),
                "full_rate": float(r.full_rate[at]),
                "ratio": float(r.ratio()[at]),
            }
            for k, r in fooling.items()
        },
        "seconds": time.perf_counter() - start,
        "torch_threads": torch.get_num_threads(),
    }
    print(f"{dataset} {arch}: acc {trained.accuracy:.4f}, n={row['n_normals']}, "
          f"median ‖r‖ {median_margin:.3f}, ρ_adv {rho_adv:.3f}, "
          f"dim90 {spec_pert.dim(0.9)} vs random {spec_pert.dim(0.9, baseline=True)}; "
          f"at radius {radii[at]:.2f}: " + ", ".join(
              f"d'={k}: {v['subspace_rate']:.3f} vs {v['full_rate']:.3f}" for k, v in row["comparison"].items())
          + f" ({row['seconds']:.0f} s)")
    return row, spec_normal, spec_pert, fooling


def figures(dataset: str, results: dict, out: Path) -> None:
    archs = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    plot.plot_spectrum({a: results[a][1] for a in archs}, ax=axes[0])
    axes[0].set_title(f"{dataset}: unit boundary normals")
    plot.plot_spectrum({a: results[a][2] for a in archs}, ax=axes[1])
    axes[1].set_title(f"{dataset}: r(x)/‖r(x)‖ (the paper's N)")
    fig.tight_layout()
    fig.savefig(out / f"section4_spectrum_{dataset}.png", dpi=130)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(archs), figsize=(4.6 * len(archs), 4), sharey=True)
    for ax, arch in zip(np.ravel(axes), archs):
        plot.plot_subspace_fooling({f"subspace d'={k}": r for k, r in results[arch][3].items()}, ax=ax)
        ax.set_title(f"{dataset} {arch}")
    fig.tight_layout()
    fig.savefig(out / f"section4_fooling_{dataset}.png", dpi=130)
    plt.close(fig)

    spec = results["cnn"][2]
    axes = plot.plot_directions(spec.basis(10, reshape=True), titles=[f"v{i + 1}" for i in range(10)])
    fig = np.ravel(axes)[0].figure
    fig.suptitle(f"{dataset} CNN: top principal directions of r/‖r‖", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / f"section4_directions_{dataset}.png", dpi=130)
    plt.close(fig)


def markdown(rows: list[dict]) -> str:
    lines = [
        "| data | model | acc. | n | median ‖r‖₂ | ρ_adv | dim 90% (N) | random dim 90% | energy top-10 (N / random) | radius | d'=10 | d'=50 | d'=100 | full space |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        comp = r["comparison"]
        cell = lambda k: f"{comp[k]['subspace_rate']:.1%}" if k in comp else "n/a (d'>d)"
        full = next(iter(comp.values()))["full_rate"]
        p = r["perturbations"]
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['accuracy']:.1%} | {r['n_normals']} | "
            f"{r['median_margin_l2']:.3f} | {r['rho_adv']:.3f} | {p['dim_90']} | {p['random_dim_90']} | "
            f"{r['energy_top10_perturbation']:.2f} / {r['random_energy_top10']:.2f} | "
            f"{r['comparison_radius']:.2f} | {cell('10')} | {cell('50')} | {cell('100')} | {full:.1%} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist", "digits"])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--limit", type=int, default=None, help="only the first N inputs of each part")
    parser.add_argument("--quick", action="store_true",
                        help="digits only, --limit 300, 2 draws, into analysis/results/quick/ (unless --out)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default analysis/results)")
    args = parser.parse_args()
    env = environment()
    if args.quick:
        args.datasets, args.draws, args.limit = ["digits"], 2, args.limit or 300
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for dataset in args.datasets:
        results = {}
        for arch in zoo.ARCHITECTURES:
            row, *rest = analyse(dataset, arch, args.data_dir, args.draws, args.limit)
            rows.append(row)
            results[arch] = (row, *rest)
        figures(dataset, results, out)
    result = {"environment": finish(env), "draws": args.draws, "limit": args.limit, "rows": rows}
    (out / "section4.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(rows)
    (out / "section4.md").write_text(table)
    print(table)
    print(f"wrote {out / 'section4.json'} ({result['environment']['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
