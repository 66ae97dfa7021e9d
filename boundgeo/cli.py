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


def _split(args: argparse.Namespace):
    """Inputs for the normals and disjoint held-out inputs for the fooling rates."""
    from . import zoo

    x_tr, y_tr, x_te, y_te = zoo.reference_split(args.dataset, root=args.data_dir)
    if args.dataset == "digits":  # normals on the 1,257 training images, fooling on the 540 test ones
        return x_tr, y_tr, x_te, y_te
    order = torch.randperm(len(x_te), generator=torch.Generator().manual_seed(args.seed))
    half = len(order) // 2
    return x_te[order[:half]], y_te[order[:half]], x_te[order[half:]], y_te[order[half:]]


def _save_figure(ax, out: Path, name: str) -> None:
    fig = ax.figure
    fig.tight_layout()
    for suffix in ("png", "pdf"):
        fig.savefig(out / f"{name}.{suffix}", dpi=130)
    import matplotlib.pyplot as plt

    plt.close(fig)


def cmd_demo(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from . import plot
    from .boundary import boundary_normals
    from .classifier import Classifier
    from .spectrum import spectrum
    from .subspace import subspace_fooling
    from .zoo import accuracy

    _seed_everything(args.seed)
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    trained, x_te, y_te = _load_model(args)
    clf = Classifier(trained.model)
    acc = accuracy(trained.model, x_te, y_te)
    print(f"model: {args.dataset} {trained.arch}, {sum(p.numel() for p in trained.model.parameters())} "
          f"parameters, held-out accuracy {acc:.4f} on {len(y_te)} images")
    x_n, y_n, x_e, _ = _split(args)

    print(f"[1/3] boundary normals of {len(x_n)} inputs (DeepFool, l2)")
    pts = boundary_normals(clf, (x_n, y_n), out=out / "normals", resume=False, seed=args.seed)
    ok = pts.converged
    median = float(pts.margin[ok].median())
    print(f"      {int(ok.sum())} converged, {pts.settings['skipped_misclassified']} misclassified "
          f"skipped; median margin ‖r‖₂ = {median:.3f}")

    print("[2/3] spectrum of r/‖r‖ against random unit vectors")
    spec = spectrum(pts, kind="perturbation", seed=args.seed)
    spec.save(out / "spectrum")
    summary = spec.summary()
    print(f"      90% of the energy in {summary['dim_90']} of {spec.d} dimensions "
          f"(random: {summary['random_dim_90']}); top 10 hold {spec.energy(10):.0%} "
          f"(random: {spec.energy(10, baseline=True):.0%})")

    k = min(10, spec.d)
    radii = [m * median for m in (0.5, 1, 1.5, 2, 3, 4, 6)]
    print(f"[3/3] random vectors in the top-{k} subspace vs the full space, {len(x_e)} held-out inputs")
    fool = subspace_fooling(clf, x_e, spec.basis(k), radii=radii, draws=10, seed=args.seed)
    fool.save(out / "subspace_fooling")
    low = (fool.full_rate < 0.10).nonzero().squeeze(1)
    at = int(low[-1]) if len(low) else 0
    print(f"      at radius {radii[at]:.2f}: subspace {float(fool.subspace_rate[at]):.1%} vs "
          f"full space {float(fool.full_rate[at]):.1%}")

    _save_figure(plot.plot_spectrum(spec), out, "spectrum")
    _save_figure(plot.plot_subspace_fooling(fool), out, "subspace_fooling")
    _save_figure(plot.plot_margins(pts), out, "margins")
    axes = plot.plot_directions(spec.basis(k, reshape=True), titles=[f"v{i + 1}" for i in range(k)])
    _save_figure(np.ravel(axes)[0], out, "principal_directions")
    print(f"results and figures in {out}/ ({time.perf_counter() - start:.0f} s)")
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
