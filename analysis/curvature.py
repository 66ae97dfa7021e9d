"""Curvature of the decision boundary of the reference CNNs (MNIST and digits).

    python analysis/curvature.py [--datasets mnist digits] [--data-dir data/mnist] [--points 300]

For each dataset's reference CNN:
  1. DeepFool boundary points of the inputs whose normals analysis/uap_section4.py uses (MNIST:
     1,000 held-out images; digits: the 1,257 images the digits CNN was trained on, since its 540
     test images are kept for the fooling test) and the spectrum of their unit normals;
  2. the top-10 principal curvatures at ``--points`` of those boundary points (seeded choice) by
     Lanczos on finite differences of gradients at h = 0.1·‖r(x)‖ (ReLU networks have no useful
     Hessian), with the curvature along the top-10 principal directions of the normals and along
     10 random directions;
  3. how the numbers depend on the scale h (0.05, 0.1, 0.2 and 0.5 times ‖r(x)‖), since for a
     piecewise-linear network the curvature is that of the boundary seen at the scale h.
Writes to analysis/results/: curvature_<dataset>.png (principal curvatures by rank),
curvature_along_<dataset>.png (principal against random directions), curvature_scale.png and
curvature.json (``{"environment", "boundgeo", "points", "records"}``). The principal and random
directions have the colours of ``boundgeo.plot.COLORS`` in every figure. ``--quick``: digits only,
30 points, into analysis/results/quick/.
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
from boundgeo._perturb import scale_to_norm

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "analysis" / "results"
SCALES = (0.05, 0.1, 0.2, 0.5)


def split_for(dataset: str, root):
    """The inputs whose normals span the principal subspace (as in analysis/uap_section4.py)."""
    x_tr, y_tr, x_te, y_te = zoo.reference_split(dataset, root=root)
    if dataset == "mnist":
        order = torch.randperm(len(x_te), generator=torch.Generator().manual_seed(0))[:1000]
        return x_te[order], y_te[order]
    return x_tr, y_tr


def summarise(curv: bg.Curvature) -> dict:
    frame = curv.to_frame()
    top = frame[frame["rank"] == 1].curvature
    along = curv.along_frame()
    groups = {}
    for group, rows in along.groupby("group", sort=False):
        groups[group] = {"mean": float(rows.curvature.mean()), "median": float(rows.curvature.median()),
                         "positive": float((rows.curvature > 0).mean())}
    return {
        "points": int(curv.valid.sum()),
        "on_boundary": float(curv.on_boundary[curv.valid].float().mean()),
        "top_abs_median": float(top.abs().median()),
        "top_positive": float((top > 0).mean()),
        "all_positive": float((frame.curvature > 0).mean()),
        "rank_medians": frame.groupby("rank").curvature.median().round(5).tolist(),
        "residual_median": float(frame.residual.median()),
        "step_median": float(curv.step[curv.valid].median()),
        "along": groups,
        "seconds": curv.seconds,
        "torch_threads": torch.get_num_threads(),
        "cost": curv.cost,
    }


def analyse(dataset: str, root, n_points: int) -> tuple[dict, bg.Curvature, dict]:
    trained = zoo.train_reference(dataset, "cnn", root=root)
    clf = bg.Classifier(trained.model)
    x, y = split_for(dataset, root)
    pts = bg.boundary_normals(clf, (x, y), progress=False)
    spec = bg.spectrum(pts, kind="normal", seed=0)
    converged = pts.converged.nonzero().squeeze(1)
    generator = torch.Generator().manual_seed(0)
    chosen = converged[torch.randperm(len(converged), generator=generator)[:n_points]].sort().values
    subset = pts.select(chosen)
    along = {"top-10 principal directions of the normals": spec.basis(10),
             "random directions": scale_to_norm(torch.randn(10, spec.d, generator=generator), "l2")}
    by_scale = {}
    main = None
    for scale in SCALES:
        curv = bg.boundary_curvature(clf, subset, inputs=x, k=10, relative_step=scale, along=along, seed=0)
        by_scale[scale] = summarise(curv)
        if scale == 0.1:
            main = curv
        print(f"  {dataset} h = {scale}·‖r‖: top |κ| median {by_scale[scale]['top_abs_median']:.3g}, "
              f"positive {by_scale[scale]['top_positive']:.0%}; along "
              + "; ".join(f"{g}: mean {v['mean']:.3g} ({v['positive']:.0%} > 0)"
                          for g, v in by_scale[scale]["along"].items())
              + f" ({curv.seconds:.1f} s)", flush=True)
    record = {"dataset": dataset, "model_accuracy": trained.accuracy, "d": spec.d,
              "normals": int(pts.converged.sum()), "median_margin": float(pts.margin[pts.converged].median()),
              "main": by_scale[0.1], "by_scale": {str(k): v for k, v in by_scale.items()}}
    return record, main, by_scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist", "digits"], choices=["mnist", "digits"])
    parser.add_argument("--data-dir", default=str(ROOT / "data" / "mnist"))
    parser.add_argument("--points", type=int, default=300)
    parser.add_argument("--quick", action="store_true",
                        help="digits only, 30 points, into analysis/results/quick/ (unless --out)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default analysis/results)")
    args = parser.parse_args()
    env = environment()
    if args.quick:
        args.datasets, args.points = ["digits"], 30
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    records, scales = [], {}
    for dataset in args.datasets:
        start = time.perf_counter()
        record, curv, by_scale = analyse(dataset, args.data_dir if dataset == "mnist" else None, args.points)
        record["seconds_total"] = time.perf_counter() - start
        record["torch_threads"] = torch.get_num_threads()
        records.append(record)
        scales[dataset] = by_scale
        ax = plot.plot_curvature(curv)
        ax.set_title(f"{dataset} CNN: " + ax.get_title(), fontsize=9)
        ax.figure.tight_layout()
        ax.figure.savefig(out / f"curvature_{dataset}.png", dpi=130)
        plt.close(ax.figure)
        ax = plot.plot_section_curvature(curv)
        ax.set_title(f"{dataset} CNN: " + ax.get_title(), fontsize=9)
        ax.figure.tight_layout()
        ax.figure.savefig(out / f"curvature_along_{dataset}.png", dpi=130)
        plt.close(ax.figure)

    fig, axes = plt.subplots(2, len(scales), figsize=(5 * len(scales), 6.4), squeeze=False, sharex=True)
    for column, (dataset, by_scale) in enumerate(scales.items()):
        h = np.array(SCALES)
        top, bottom = axes[0, column], axes[1, column]
        top.plot(h, [by_scale[s]["top_abs_median"] for s in SCALES], marker="o", color="0.3")
        top.set_ylabel("median |κ₁| (largest principal curvature)", fontsize=8)
        top.set_title(f"{dataset} CNN", fontsize=10)
        for group in next(iter(by_scale.values()))["along"]:
            # the colours of plot_section_curvature (curvature_along_*.png): one per role
            color = plot.role_color(group)
            if color is None:
                raise ValueError(f"no colour in boundgeo.plot.COLORS for the direction group {group!r}")
            bottom.plot(h, [by_scale[s]["along"][group]["mean"] for s in SCALES], marker="s", color=color,
                        label=f"along {group}")
        bottom.axhline(0, color="0.5", lw=0.8)
        bottom.set_ylabel("mean curvature κ(u)", fontsize=8)
        bottom.set_xscale("log")
        bottom.set_xticks(h, [f"{s:g}" for s in SCALES])
        bottom.minorticks_off()
        bottom.set_xlabel("finite-difference scale h / ‖r(x)‖")
        bottom.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curvature_scale.png", dpi=130)
    plt.close(fig)
    result = {"environment": finish(env), "boundgeo": bg.__version__, "points": args.points, "records": records}
    (out / "curvature.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out / 'curvature.json'} and the figures ({result['environment']['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
