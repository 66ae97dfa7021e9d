"""Command line: maps arguments onto the public functions and writes their results.

    boundgeo demo                         # the whole analysis on the embedded digits CNN
    boundgeo analyze --model pkg.mod:make_net --weights net.pt --dataset mnist --out DIR
    boundgeo normals | spectrum | curvature | uap | profile ...   # one stage, reading/writing DIR
    boundgeo report DIR                   # re-render the report from the results saved in DIR
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import torch

from . import __version__
from ._errors import BoundgeoError


def _seed_everything(seed: int) -> None:
    # Only the CLI touches global RNG state; library functions take seed= and local generators.
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- models and data
def _reference_model(args: argparse.Namespace):
    """The reference CNN of the dataset: committed for digits, trained for mnist."""
    from . import zoo
    from .classifier import Classifier

    if args.dataset == "digits":
        trained = zoo.pretrained_digits_cnn(verbose=True)
    else:
        print(f"training the {args.dataset} cnn on its reference split (about 10 s)")
        trained = zoo.train_reference(args.dataset, "cnn", root=args.data_dir)
    return Classifier(trained.model), f"{args.dataset} {trained.arch} (boundgeo.zoo)"


def _user_model(args: argparse.Namespace):
    """Import MODULE:FACTORY, call it, load --weights with weights_only=True, wrap it."""
    from .classifier import Classifier

    module_name, _, attr = args.model.partition(":")
    if not module_name or not attr:
        raise BoundgeoError(f"--model must be MODULE:FACTORY, got {args.model!r}")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise BoundgeoError(f"cannot import {args.model}: {exc}") from exc
    model = factory()
    if not isinstance(model, torch.nn.Module):
        raise BoundgeoError(f"{args.model}() returned a {type(model).__name__}, not a torch.nn.Module")
    if args.weights:
        state = torch.load(args.weights, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError) as exc:
            raise BoundgeoError(f"{args.weights} does not fit {args.model}: {exc}") from exc
    model.eval()
    return Classifier(model, bounds=tuple(args.bounds), mean=args.mean, std=args.std), args.model


def _classifier(args: argparse.Namespace):
    return _user_model(args) if getattr(args, "model", None) else _reference_model(args)


def _split(args: argparse.Namespace):
    """Inputs for the normals and disjoint held-out inputs for the fooling rates."""
    from . import zoo
    from .datasets import load_dataset

    if args.dataset in ("digits", "mnist") and not getattr(args, "model", None):
        x_tr, y_tr, x_te, y_te = zoo.reference_split(args.dataset, root=args.data_dir)
        if args.dataset == "digits":  # normals on the 1,257 training images, fooling on the 540 test ones
            if not getattr(args, "n", None):
                return x_tr, y_tr, x_te, y_te
            generator = torch.Generator().manual_seed(args.seed)
            fit = torch.randperm(len(x_tr), generator=generator)[: args.n]
            held = torch.randperm(len(x_te), generator=generator)[: args.n]
            return x_tr[fit], y_tr[fit], x_te[held], y_te[held]
    else:
        x_te, y_te = load_dataset(args.dataset, root=args.data_dir, split="test")
    order = torch.randperm(len(x_te), generator=torch.Generator().manual_seed(args.seed))
    if getattr(args, "n", None):
        order = order[: 2 * args.n]
    half = len(order) // 2
    return x_te[order[:half]], y_te[order[:half]], x_te[order[half:]], y_te[order[half:]]


# ----------------------------------------------------------------------------- stages
def stage_normals(clf, x, y, out: Path, seed: int):
    from .boundary import boundary_normals

    print(f"[normals] boundary normals of {len(x)} inputs (DeepFool, l2)")
    pts = boundary_normals(clf, (x, y), out=out / "normals", resume=False, seed=seed)
    ok = pts.converged
    print(f"      {int(ok.sum())} converged, {pts.settings['skipped_misclassified']} misclassified "
          f"skipped; median margin ‖r‖₂ = {float(pts.margin[ok].median()):.4g}")
    return pts


def stage_spectrum(out: Path, seed: int):
    from .boundary import BoundaryPoints
    from .spectrum import spectrum

    pts = BoundaryPoints.load(out / "normals")
    print("[spectrum] spectrum of r/‖r‖ against random unit vectors")
    spec = spectrum(pts, kind="perturbation", seed=seed)
    spec.save(out / "spectrum")
    summary = spec.summary()
    print(f"      90% of the energy in {summary['dim_90']} of {spec.d} dimensions "
          f"(random: {summary['random_dim_90']}); top 10 hold {spec.energy(min(10, spec.d)):.0%} "
          f"(random: {spec.energy(min(10, spec.d), baseline=True):.0%})")
    return spec


def _median_margin(out: Path) -> float:
    from .boundary import BoundaryPoints

    pts = BoundaryPoints.load(out / "normals")
    return float(pts.margin[pts.converged].median())


def stage_subspace(clf, x_eval, out: Path, seed: int):
    from .spectrum import Spectrum
    from .subspace import subspace_fooling

    spec = Spectrum.load(out / "spectrum")
    median = _median_margin(out)
    k = min(10, spec.d)
    radii = [m * median for m in (0.5, 1, 1.5, 2, 3, 4, 6)]
    print(f"[subspace] random vectors in the top-{k} subspace vs the full space, {len(x_eval)} held-out inputs")
    fool = subspace_fooling(clf, x_eval, spec.basis(k), radii=radii, draws=10, seed=seed, progress=True)
    fool.save(out / "subspace_fooling")
    low = (fool.full_rate < 0.10).nonzero().squeeze(1)
    at = int(low[-1]) if len(low) else 0
    print(f"      at radius {radii[at]:.3g}: subspace {float(fool.subspace_rate[at]):.1%} vs "
          f"full space {float(fool.full_rate[at]):.1%}")
    return fool


def stage_curvature(clf, x, out: Path, seed: int, n: int = 200, k: int = 10):
    """Principal curvatures at up to ``n`` of the saved boundary points (seeded choice), and the
    curvature along the top-10 principal directions of the normals beside random directions."""
    from ._perturb import scale_to_norm
    from .boundary import BoundaryPoints
    from .curvature import boundary_curvature
    from .spectrum import Spectrum

    pts = BoundaryPoints.load(out / "normals")
    spec = Spectrum.load(out / "spectrum")
    converged = pts.converged.nonzero().squeeze(1)
    generator = torch.Generator().manual_seed(seed)
    chosen = converged[torch.randperm(len(converged), generator=generator)[:n]].sort().values
    subset = pts.select(chosen)
    m = min(10, spec.d)
    kind = "normals" if spec.kind == "normal" else "directions r(x)/‖r(x)‖"
    along = {f"top-{m} principal directions of the {kind}": spec.basis(m),
             "random directions": scale_to_norm(torch.randn(m, spec.d, generator=generator), "l2")}
    print(f"[curvature] top-{k} principal curvatures at {len(chosen)} boundary points (finite differences)")
    curv = boundary_curvature(clf, subset, inputs=x, k=k, along=along, seed=seed, progress=True)
    curv.save(out / "curvature")
    frame = curv.along_frame()
    means = frame.groupby("group", sort=False).curvature.mean()
    print("      mean curvature along " + "; ".join(f"{g}: {v:.3g}" for g, v in means.items())
          + f" ({curv.seconds:.1f} s)")
    return curv


def stage_uap(clf, x_fit, x_eval, out: Path, seed: int, xi: float | None = None, norm: str = "l2",
              method: str = "sgd"):
    from .universal import perturbed_examples, universal_perturbation

    if xi is None:
        xi = 3 * _median_margin(out)
    print(f"[uap] universal perturbation ({method}), {norm} ξ = {xi:.3g}")
    uap = universal_perturbation(clf, x_fit, xi=xi, norm=norm, method=method, eval_data=x_eval,
                                 seed=seed, progress=True)
    uap.save(out / "universal")
    perturbed_examples(clf, x_eval, uap, k=8, seed=seed).save(out / "examples")
    print(f"      fools {uap.fooling_rate:.1%} of the fit inputs and {uap.eval_fooling_rate:.1%} of the "
          f"held-out ones ({uap.seconds:.1f} s)")
    return uap


def stage_profile(clf, x_eval, out: Path, seed: int, epsilons=None):
    import numpy as np

    from .categories import robustness_profile

    if epsilons is None:
        median = _median_margin(out)
        epsilons = np.geomspace(0.1 * median, 25 * median, 12)
    print(f"[profile] robustness profile over {len(epsilons)} budgets (ℓ2, τ = 0.5), held-out inputs")
    profile = robustness_profile(clf, x_eval, epsilons=epsilons, norm="l2", threshold=0.5, seed=seed,
                                 progress=True)
    profile.save(out / "profile")
    print("      " + profile.summary().replace("\n", "\n      "))
    return profile


def _whole_analysis(args: argparse.Namespace) -> int:
    import time

    from .report import render

    _seed_everything(args.seed)
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clf, name = _classifier(args)
    x_n, y_n, x_e, y_e = _split(args)
    acc = float((clf.predict(x_e).cpu() == y_e).float().mean())
    print(f"model: {name}, {sum(p.numel() for p in clf.model.parameters())} parameters, "
          f"held-out accuracy {acc:.4f} on {len(y_e)} images")
    stage_normals(clf, x_n, y_n, out, args.seed)
    stage_spectrum(out, args.seed)
    stage_subspace(clf, x_e, out, args.seed)
    stage_curvature(clf, x_n, out, args.seed)
    stage_uap(clf, x_n, x_e, out, args.seed)
    stage_profile(clf, x_e, out, args.seed)
    md, page = render(out)
    print(f"report: {md} and {page}")
    print(f"results and figures in {out}/ ({time.perf_counter() - start:.0f} s)")
    return 0


# ----------------------------------------------------------------------------- commands
def cmd_demo(args: argparse.Namespace) -> int:
    args.model = None
    return _whole_analysis(args)


def cmd_analyze(args: argparse.Namespace) -> int:
    return _whole_analysis(args)


def cmd_normals(args: argparse.Namespace) -> int:
    _seed_everything(args.seed)
    clf, _ = _classifier(args)
    x_n, y_n, _, _ = _split(args)
    stage_normals(clf, x_n, y_n, Path(args.out), args.seed)
    return 0


def cmd_spectrum(args: argparse.Namespace) -> int:
    stage_spectrum(Path(args.out), args.seed)
    return 0


def cmd_curvature(args: argparse.Namespace) -> int:
    _seed_everything(args.seed)
    clf, _ = _classifier(args)
    x_n, _, _, _ = _split(args)
    stage_curvature(clf, x_n, Path(args.out), args.seed, n=args.points, k=args.k)
    return 0


def cmd_uap(args: argparse.Namespace) -> int:
    _seed_everything(args.seed)
    clf, _ = _classifier(args)
    x_n, _, x_e, _ = _split(args)
    stage_uap(clf, x_n, x_e, Path(args.out), args.seed, xi=args.xi, norm=args.norm, method=args.method)
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    _seed_everything(args.seed)
    clf, _ = _classifier(args)
    _, _, x_e, _ = _split(args)
    stage_profile(clf, x_e, Path(args.out), args.seed, epsilons=args.epsilons)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import render

    md, page = render(Path(args.dir))
    print(f"report: {md} and {page}")
    return 0


def _data_arguments(parser: argparse.ArgumentParser, *, model: bool) -> None:
    parser.add_argument("--dataset", choices=["digits", "mnist", "cifar10"], default="digits")
    parser.add_argument("--data-dir", default=None, help="directory of the dataset's files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=None, help="use at most n inputs for the normals and n held-out ones")
    if model:
        parser.add_argument("--model", default=None,
                            help="MODULE:FACTORY returning an nn.Module (default: the reference CNN)")
        parser.add_argument("--weights", default=None, help="state dict, read with weights_only=True")
        parser.add_argument("--mean", type=float, nargs="+", default=None, help="per-channel mean")
        parser.add_argument("--std", type=float, nargs="+", default=None, help="per-channel std")
        parser.add_argument("--bounds", type=float, nargs=2, default=(0.0, 1.0), metavar=("LOW", "HIGH"))


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
    demo.add_argument("--n", type=int, default=None,
                      help="use at most n inputs for the normals and n held-out ones (a quick look)")
    demo.set_defaults(func=cmd_demo)

    analyze = sub.add_parser("analyze", help="the whole analysis on your own model")
    analyze.add_argument("--out", default="boundgeo-analysis", help="output directory")
    _data_arguments(analyze, model=True)
    analyze.set_defaults(func=cmd_analyze)

    for name, func, helptext in (("normals", cmd_normals, "stage 1: boundary points and normals"),
                                 ("curvature", cmd_curvature, "principal curvatures at saved boundary "
                                  "points (needs normals/ and spectrum in --out)"),
                                 ("uap", cmd_uap, "a universal perturbation"),
                                 ("profile", cmd_profile, "the robustness profile")):
        stage = sub.add_parser(name, help=helptext)
        stage.add_argument("--out", required=True, help="results directory (read and written)")
        _data_arguments(stage, model=True)
        if name == "uap":
            stage.add_argument("--xi", type=float, default=None, help="radius (default: 3 x median margin)")
            stage.add_argument("--norm", choices=["l2", "linf"], default="l2")
            stage.add_argument("--method", choices=["deepfool", "batched", "sgd"], default="sgd")
        if name == "profile":
            stage.add_argument("--epsilons", type=float, nargs="+", default=None)
        if name == "curvature":
            stage.add_argument("--points", type=int, default=200, help="boundary points to measure")
            stage.add_argument("-k", type=int, default=10, help="principal curvatures per point")
        stage.set_defaults(func=func)

    spec = sub.add_parser("spectrum", help="the spectrum of saved normals (DIR/normals)")
    spec.add_argument("--out", required=True, help="results directory holding normals/")
    spec.add_argument("--seed", type=int, default=0)
    spec.set_defaults(func=cmd_spectrum)

    report = sub.add_parser("report", help="re-render report.md/report.html and the figures from saved results")
    report.add_argument("dir", help="a directory written by `boundgeo demo` or `analyze`")
    report.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except BoundgeoError as exc:
        print(f"boundgeo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
