"""Cross-model transfer of universal perturbations on MNIST (the paper's Table 2, "doubly universal").

    python analysis/transfer.py [--data-dir data/mnist] [--method batched] [--seeds 3]

Four models trained on MNIST test images [0, 8000) with the recipes of ``boundgeo.zoo``: the
affine (softmax regression), MLP and CNN references, and a second CNN trained from another seed
(same architecture and data, different initialisation and batch order). On each, a universal
perturbation is fitted on images [8000, 9000) at ℓ2 ξ = 5 and ℓ∞ ξ = 0.2 (5 passes, δ = 0.2),
and every perturbation is then tested on every model over the held-out images [9000, 10000),
which none of the models or perturbations has seen. Every cell is the mean over ``--seeds``
seeds (the order of the inputs when fitting). A random row gives the baseline: random vectors of
the same size (uniform on the ℓ2 sphere of radius ξ; random signs times ξ for ℓ∞), one per seed.

Writes analysis/results/transfer.json (``{"environment", "setup", "settings"}``), transfer.md (the
Markdown tables in the README) and transfer_mnist.png. ``--quick``: one seed, 200 fitting images,
2 passes, into analysis/results/quick/.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

import boundgeo as bg
from _environment import environment, finish
from boundgeo import plot, zoo
from boundgeo.attacks.universal import METHODS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "analysis" / "results"
SETTINGS = [("l2", 5.0), ("linf", 0.2)]
PASSES, DELTA = 5, 0.2
MODELS = [("affine", "affine", 0), ("MLP", "mlp", 0), ("CNN", "cnn", 0), ("CNN, seed 1", "cnn", 1)]


def random_perturbation(shape, norm: str, xi: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1000 + seed)
    if norm == "l2":
        v = torch.randn(shape, generator=generator)
        return v * (xi / v.norm())
    return xi * (2 * torch.randint(0, 2, shape, generator=generator) - 1).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT / "data" / "mnist"))
    parser.add_argument("--method", default="batched", choices=METHODS)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--fit", type=int, default=1000, help="fit on the first N of images [8000, 9000)")
    parser.add_argument("--passes", type=int, default=PASSES)
    parser.add_argument("--quick", action="store_true",
                        help="1 seed, --fit 200, 2 passes, into analysis/results/quick/ (unless --out)")
    parser.add_argument("--out", default=None, help="results folder (default analysis/results)")
    args = parser.parse_args()
    env = environment()
    if args.quick:
        args.seeds, args.fit, args.passes = 1, min(args.fit, 200), 2
    out = Path(args.out) if args.out else (RESULTS / "quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)

    _, _, x_te, _ = zoo.reference_split("mnist", root=args.data_dir)
    x_fit, x_eval = x_te[:min(args.fit, 1000)].contiguous(), x_te[1000:].contiguous()
    classifiers, accuracy = {}, {}
    for name, arch, seed in MODELS:
        trained = zoo.train_reference("mnist", arch, root=args.data_dir, seed=seed)
        classifiers[name] = bg.Classifier(trained.model.eval())
        accuracy[name] = trained.accuracy
        print(f"{name}: held-out accuracy {trained.accuracy:.4f}", flush=True)

    result = {"setup": {"models": {name: {"arch": arch, "seed": seed, "accuracy": accuracy[name]}
                                   for name, arch, seed in MODELS},
                        "fit": f"MNIST test images [8000, {8000 + len(x_fit)})",
                        "eval": "MNIST test images [9000, 10000)",
                        "method": args.method, "passes": args.passes, "delta": DELTA, "seeds": args.seeds},
              "settings": []}
    fig, axes = plt.subplots(1, len(SETTINGS), figsize=(6.2 * len(SETTINGS), 5.2))
    tables = []
    for ax, (norm, xi) in zip(axes, SETTINGS):
        frames, fitted = [], {}
        for seed in range(args.seeds):
            perturbations = {}
            for name, clf in classifiers.items():
                uap = bg.universal_perturbation(clf, x_fit, xi=xi, norm=norm, delta=DELTA, max_passes=args.passes,
                                                method=args.method, seed=seed, progress=False)
                perturbations[name] = uap
                fitted.setdefault(name, []).append({"seed": seed, "fit_fooling_rate": uap.fooling_rate,
                                                    "seconds": uap.seconds, "passes": uap.passes,
                                                    "torch_threads": torch.get_num_threads()})
            perturbations["random"] = random_perturbation(x_fit.shape[1:], norm, xi, seed)
            frames.append(bg.transfer_matrix(classifiers, perturbations, x_eval))
        mean = sum(frames) / len(frames)
        spread = pd.concat(frames).groupby(level=0).agg(lambda s: s.max() - s.min()).reindex(mean.index)
        mean.index.name, mean.columns.name = "perturbation from", "fooling rate on"
        symbol = "ℓ2" if norm == "l2" else "ℓ∞"
        plot.plot_transfer(mean, ax=ax, title=f"{symbol} ξ = {xi:g}: held-out fooling rate "
                                              f"(mean of {args.seeds} seeds, {args.method})")
        result["settings"].append({"norm": norm, "xi": xi, "mean": mean.to_dict(orient="index"),
                                   "range": spread.to_dict(orient="index"),
                                   "per_seed": [f.to_dict(orient="index") for f in frames], "fitted": fitted})
        header = "| perturbation from \\ tested on | " + " | ".join(mean.columns) + " |"
        lines = [f"**{symbol} ξ = {xi:g}** (held-out fooling rate, mean of {args.seeds} seeds)", "", header,
                 "| --- |" + " --- |" * len(mean.columns)]
        for name, row in mean.iterrows():
            cells = [f"**{row[c]:.1%}**" if c == name else f"{row[c]:.1%}" for c in mean.columns]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        tables.append("\n".join(lines))
        print("\n" + tables[-1], flush=True)
    fig.tight_layout()
    fig.savefig(out / "transfer_mnist.png", dpi=130)
    result = {"environment": finish(env), **result}
    (out / "transfer.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "transfer.md").write_text("\n\n".join(tables) + "\n")
    print(f"wrote {out / 'transfer.json'}, transfer.md and transfer_mnist.png "
          f"({result['environment']['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
