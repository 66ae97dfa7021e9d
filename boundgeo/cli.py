"""Command line: maps arguments onto the public functions and writes their results.

    boundgeo demo                  # the analysis on the embedded digits CNN
    boundgeo normals --out DIR     # boundary points of a dataset, saved as shards
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from . import __version__


def _seed_everything(seed: int) -> None:
    # Only the CLI touches global RNG state; library functions take seed= and local generators.
    torch.manual_seed(seed)


def _load_model(args: argparse.Namespace):
    """Return (TrainedModel, x_test, y_test) for the dataset the arguments name."""
    from . import zoo

    if args.dataset == "digits":
        trained = zoo.pretrained_digits_cnn(verbose=True)
        _, _, x_te, y_te = zoo.reference_split("digits")
    else:
        print(f"training the {args.dataset} cnn on its reference split (about 10 s)")
        trained = zoo.train_reference(args.dataset, "cnn", root=args.data_dir)
        _, _, x_te, y_te = zoo.reference_split(args.dataset, root=args.data_dir)
    return trained, x_te, y_te


def cmd_demo(args: argparse.Namespace) -> int:
    from .classifier import Classifier
    from .zoo import accuracy

    _seed_everything(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    trained, x_te, y_te = _load_model(args)
    clf = Classifier(trained.model)
    acc = accuracy(trained.model, x_te, y_te)
    print(f"model: {args.dataset} {trained.arch}, {sum(p.numel() for p in trained.model.parameters())} "
          f"parameters, held-out accuracy {acc:.4f} on {len(y_te)} images")
    print(f"classifier: {clf}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boundgeo",
        description="Measure the geometry of a classifier's decision boundaries.",
    )
    parser.add_argument("--version", action="version", version=f"boundgeo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="the whole analysis on the embedded digits CNN")
    demo.add_argument("--out", default="boundgeo-demo", help="output directory")
    demo.add_argument("--dataset", choices=["digits", "mnist"], default="digits")
    demo.add_argument("--data-dir", default=None, help="directory of the MNIST files")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from ._errors import BoundgeoError

    try:
        return args.func(args)
    except BoundgeoError as exc:
        print(f"boundgeo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
