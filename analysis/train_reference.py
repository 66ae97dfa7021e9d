"""Train the reference models and (for digits) regenerate the committed checkpoint.

    python analysis/train_reference.py --dataset digits           # writes boundgeo/weights/digits_cnn.pt
    python analysis/train_reference.py --dataset mnist --all      # accuracies for the README
    python analysis/train_reference.py --dataset digits mnist --all --check-checkpoint   # reproduce.py

MNIST models train on the first 8,000 images of the MNIST test split and are evaluated on the
last 2,000 (the training split is not at hand). Results go to analysis/results/reference_models.json
(``{"environment": ..., "models": {"<dataset>/<arch>": {...}}}``; a run updates the models it
trained and keeps the others). ``--check-checkpoint`` leaves the shipped digits checkpoint alone
and records whether the retrained CNN has exactly its weights. ``--quick`` writes to
analysis/results/quick/ instead (the same training: it takes about 25 s for both datasets).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from _environment import environment, finish
from boundgeo import zoo

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "analysis" / "results"


def compare_weights(trained: zoo.TrainedModel, path: Path) -> dict:
    """Whether ``trained`` has exactly the weights of the checkpoint at ``path``, and how far off."""
    shipped = zoo.load_checkpoint(path)
    theirs, ours = shipped.model.state_dict(), trained.model.state_dict()
    if theirs.keys() != ours.keys():
        return {"matches_shipped_checkpoint": False, "shipped_keys_differ": True}
    diff = max(float((theirs[k].double() - ours[k].double()).abs().max()) for k in ours if ours[k].numel())
    return {"matches_shipped_checkpoint": diff == 0.0, "max_abs_weight_difference": diff,
            "shipped_checkpoint_accuracy": shipped.accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", nargs="+", choices=["digits", "mnist"], default=["digits"])
    parser.add_argument("--data-dir", default=None, help="MNIST directory (default data/mnist)")
    parser.add_argument("--all", action="store_true", help="train affine, mlp and cnn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-checkpoint", action="store_true",
                        help="compare the digits CNN with boundgeo/weights/digits_cnn.pt instead of overwriting it")
    parser.add_argument("--quick", action="store_true", help="write to analysis/results/quick/")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default analysis/results)")
    args = parser.parse_args()
    env = environment()
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)

    archs = zoo.ARCHITECTURES if args.all else ("cnn",)
    results_path = out / "reference_models.json"
    saved = json.loads(results_path.read_text()) if results_path.exists() else {}
    models = saved.get("models", {}) if "environment" in saved else {}  # older files: one entry per model
    for dataset in args.dataset:
        for arch in archs:
            start = time.perf_counter()
            trained = zoo.train_reference(dataset, arch, root=args.data_dir, seed=args.seed)
            print(f"{dataset} {arch}: held-out accuracy {trained.accuracy:.4f} "
                  f"({trained.seconds:.1f} s, {trained.meta['split']})")
            entry = {"accuracy": trained.accuracy, "seconds": round(trained.seconds, 2),
                     "seed": args.seed, "epochs": trained.epochs, "split": trained.meta["split"],
                     "torch_threads": torch.get_num_threads(), "commit": env["commit"]}
            if dataset == "digits" and arch == "cnn":
                # into the package: shipped as package data, read with importlib.resources
                shipped = ROOT / "boundgeo" / zoo.WEIGHTS / zoo.DIGITS_CNN
                if args.check_checkpoint or args.quick:
                    entry.update(compare_weights(trained, shipped))
                    print(f"retrained digits CNN has the weights of {shipped}: "
                          f"{entry['matches_shipped_checkpoint']} "
                          f"(largest difference {entry.get('max_abs_weight_difference')})")
                else:
                    path = trained.save(shipped)
                    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
            entry["wall_seconds"] = round(time.perf_counter() - start, 2)
            models[f"{dataset}/{arch}"] = entry
    out.mkdir(parents=True, exist_ok=True)
    result = {"environment": finish(env), "models": dict(sorted(models.items()))}
    results_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {results_path}")


if __name__ == "__main__":
    main()
