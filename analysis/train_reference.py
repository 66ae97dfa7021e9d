"""Train the reference models and (for digits) regenerate the committed checkpoint.

    python analysis/train_reference.py --dataset digits           # writes boundgeo/weights/digits_cnn.pt
    python analysis/train_reference.py --dataset mnist --all      # accuracies for the README

MNIST models train on the first 8,000 images of the MNIST test split and are evaluated on the
last 2,000 (the training split is not at hand). Results go to analysis/results/reference_models.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from boundgeo import zoo

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["digits", "mnist"], default="digits")
    parser.add_argument("--data-dir", default=None, help="MNIST directory (default data/mnist)")
    parser.add_argument("--all", action="store_true", help="train affine, mlp and cnn")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    archs = zoo.ARCHITECTURES if args.all else ("cnn",)
    results_path = ROOT / "analysis" / "results" / "reference_models.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for arch in archs:
        trained = zoo.train_reference(args.dataset, arch, root=args.data_dir, seed=args.seed)
        print(f"{args.dataset} {arch}: held-out accuracy {trained.accuracy:.4f} "
              f"({trained.seconds:.1f} s, {trained.meta['split']})")
        results[f"{args.dataset}/{arch}"] = {
            "accuracy": trained.accuracy,
            "seconds": round(trained.seconds, 2),
            "seed": args.seed,
            "epochs": trained.epochs,
            "split": trained.meta["split"],
        }
        if args.dataset == "digits" and arch == "cnn":
            # into the package: shipped as package data, read with importlib.resources
            path = trained.save(ROOT / "boundgeo" / zoo.WEIGHTS / zoo.DIGITS_CNN)
            print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
