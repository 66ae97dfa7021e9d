"""Command line: maps arguments onto the public functions and writes their results.

    boundgeo demo                         # the whole analysis on the embedded digits CNN
    boundgeo analyze --model pkg.mod:make_net --weights net.pt --dataset mnist --out DIR
    boundgeo analyze --model torchvision.models:resnet50 --preset imagenet --dataset folder:DIR \
        --size 256 --crop 224 --num-inputs 50
    boundgeo normals | spectrum | curvature | uap | profile ...   # one stage, reading/writing DIR
    boundgeo report DIR                   # re-render the report from the results saved in DIR

Every command that runs the model writes ``DIR/setup.json``: the model, the data (description and
class names), the normalisation and the notes that qualify the results (random weights, labels
not compared). The report reads it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import __version__
from ._checks import check_count
from ._errors import BoundgeoError
from ._results import read_json
from .attacks.universal import LOSSES
from .attacks.universal import METHODS as UNIVERSAL_METHODS
from .distributed import launched_by_torchrun, single_process, world

# Normalisation presets (mean, std per channel) for inputs in [0, 1].
PRESETS = {
    # the normalisation of torchvision's ImageNet weights (its documented transforms)
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # mean and standard deviation over all pixels of the 50,000 CIFAR-10 training images, per
    # channel (as computed in kuangliu/pytorch-cifar issue #19 and Lightning Bolts'
    # cifar10_normalization)
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "none": (None, None),
}
# at most this much of float32 images is decoded at once; beyond it --num-inputs is needed
DECODE_LIMIT_BYTES = 2 * 2**30
RUN_FILE = "setup.json"
EXAMPLES = 8  # perturbed examples shown in the report


def _seed_everything(seed: int) -> None:
    # Only the CLI touches global RNG state; library functions take seed= and local generators.
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- run record
def _record(out: Path, **fields) -> None:
    """Merge ``fields`` into ``out/setup.json`` (notes are merged by topic); under torchrun
    rank 0 writes it."""
    if not world().main:
        return
    out.mkdir(parents=True, exist_ok=True)
    path = out / RUN_FILE
    run = read_json(path) if path.exists() else {}
    if not isinstance(run, dict) or not isinstance(run.get("notes", {}), dict):
        raise BoundgeoError(f"{path} is not a setup.json written by boundgeo (an object with a 'notes' "
                            "object); remove it or choose another --out")
    notes = {**run.get("notes", {}), **fields.pop("notes", {})}
    run.update(fields)
    run["notes"] = {k: v for k, v in notes.items() if v}
    path.write_text(json.dumps(run, indent=2) + "\n")


def _save(result, path: Path) -> None:
    """Save a result; under torchrun rank 0 writes it while the others wait, so that every rank
    can read it in the next stage."""
    world().run_on_main(lambda: result.save(path))


def _saved(result, path: Path):
    result.save(path)
    return result


def _say(notes: dict[str, str]) -> None:
    for text in notes.values():
        if text:
            print(f"note: {text}")


# ----------------------------------------------------------------------------- models
@dataclass
class _Model:
    clf: object
    name: str
    notes: dict[str, str] = field(default_factory=dict)
    record: dict = field(default_factory=dict)


def _reference_model(args: argparse.Namespace) -> _Model:
    """The reference CNN of the dataset: committed for digits, trained for mnist."""
    from . import zoo
    from .classifier import Classifier

    if args.dataset not in ("digits", "mnist"):
        raise BoundgeoError(f"--dataset {args.dataset} needs --model MODULE:FACTORY; reference models "
                            "exist for digits and mnist only")
    if args.dataset == "digits":
        trained = zoo.pretrained_digits_cnn(verbose=True)
    else:
        print(f"training the {args.dataset} cnn on its reference split (about 10 s)")
        trained = zoo.train_reference(args.dataset, "cnn", root=args.data_dir)
    name = f"{args.dataset} {trained.arch} (boundgeo.zoo)"
    record = {"model": name, "weights": "trained by boundgeo.zoo", "preset": None, "mean": None, "std": None,
              "parameters": sum(p.numel() for p in trained.model.parameters())}
    return _Model(Classifier(_on_rank_device(trained.model)), name, record=record)


def _on_rank_device(model: torch.nn.Module) -> torch.nn.Module:
    """Under torchrun with GPUs, the model on this rank's GPU (LOCAL_RANK); otherwise the model
    where it is: one process never moves a model its factory placed."""
    if world().active and torch.cuda.is_available():
        return model.to(torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))))
    return model


def _import_factory(spec: str):
    """The callable named by MODULE:FACTORY or path/to/file.py:FACTORY."""
    location, _, attr = spec.rpartition(":")
    if not location or not attr or not attr.isidentifier():
        raise BoundgeoError(f"--model must be MODULE:FACTORY or path/to/file.py:FACTORY, got {spec!r}")
    try:
        if location.endswith(".py") or "/" in location or os.sep in location:
            path = Path(location)
            if not path.is_file():
                raise BoundgeoError(f"--model {spec}: no file {path}")
            # the file's own folder first, so that it can import the files beside it
            folder = str(path.resolve().parent)
            if folder not in sys.path:
                sys.path.insert(0, folder)
            name = f"_boundgeo_user_{path.stem}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module  # as an import would, for dataclasses and pickling inside it
            try:
                module_spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
        else:
            if str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            module = importlib.import_module(location)
        return getattr(module, attr)
    except BoundgeoError:
        raise
    except Exception as exc:  # the user's module may raise anything while it is imported
        raise BoundgeoError(f"cannot import {spec}: {type(exc).__name__}: {exc}") from exc


def _normalisation(args: argparse.Namespace):
    """Mean and std from --preset, each replaced by --mean/--std when given."""
    mean, std = PRESETS[args.preset] if args.preset else (None, None)
    if args.mean is not None:
        mean = tuple(args.mean)
    if args.std is not None:
        std = tuple(args.std)
    return mean, std


def _user_model(args: argparse.Namespace) -> _Model:
    """Import the factory, call it, load --weights (weights_only=True) and wrap the model."""
    from .classifier import Classifier
    from .io import load_weights

    factory = _import_factory(args.model)
    try:
        model = factory()
    except Exception as exc:  # the user's code: report it in one line, as every other error
        raise BoundgeoError(f"{args.model}() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, torch.nn.Module):
        raise BoundgeoError(f"{args.model}() returned a {type(model).__name__}, not a torch.nn.Module")
    notes = {}
    if args.weights:
        load_weights(model, args.weights)
        weights = str(args.weights)
    elif args.model.rpartition(":")[0].split(".")[0] == "torchvision":
        weights = "random (torchvision factory called without weights)"
        notes["weights"] = (f"the weights of {args.model} are random: the torchvision factory was called "
                            "without weights (none are downloaded) and no --weights was given, so the "
                            "results describe an untrained network")
    else:
        weights = f"as returned by {args.model}()"
    model = _on_rank_device(model.eval())
    mean, std = _normalisation(args)
    clf = Classifier(model, bounds=tuple(args.bounds), mean=mean, std=std, outputs=args.outputs)
    record = {"model": args.model, "weights": weights, "preset": args.preset, "outputs": args.outputs,
              "mean": None if mean is None else list(mean), "std": None if std is None else list(std),
              "bounds": list(args.bounds), "parameters": sum(p.numel() for p in model.parameters())}
    return _Model(clf, args.model, notes, record)


def _classifier(args: argparse.Namespace) -> _Model:
    return _user_model(args) if getattr(args, "model", None) else _reference_model(args)


# ----------------------------------------------------------------------------- data
@dataclass
class _Data:
    """Inputs for the normals, disjoint held-out inputs, class names and what they are."""

    x: torch.Tensor
    y: torch.Tensor
    x_eval: torch.Tensor
    y_eval: torch.Tensor
    classes: tuple[str, ...]
    description: str


def _dataset_argument(value: str) -> str:
    if value in ("digits", "mnist", "cifar10") or (value.startswith("folder:") and len(value) > 7):
        return value
    raise argparse.ArgumentTypeError(f"choose digits, mnist, cifar10 or folder:DIR, got {value!r}")


def _halves(x, y, n: int | None, seed: int, classes, description: str) -> _Data:
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    if n:
        order = order[: 2 * n]
    half = len(order) // 2
    return _Data(x[order[:half]], y[order[:half]], x[order[half:]], y[order[half:]], tuple(classes), description)


def _cifar10_folder(root: Path) -> Path | None:
    """The class folders of CIFAR-10's test split under ``root`` (``root/test/`` or ``root``
    itself), or None when ``root`` holds the python batches, as ``load_dataset`` tells them apart."""
    batches = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    names = ["test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]
    if not root.is_dir() or any((batches / name).exists() for name in names):
        return None
    return root / "test" if (root / "test").is_dir() else root


def _folder(root: Path, args: argparse.Namespace, what: str) -> _Data:
    """A seeded choice of 2n images of an image folder (all of them without --num-inputs),
    decoding only those: the first half for the normals, the second held out."""
    from .io import ImageFolder

    dataset = ImageFolder(root, size=args.size, crop=args.crop, grayscale=args.grayscale)
    total = len(dataset)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(args.seed))
    if args.n:
        order = order[: 2 * args.n]
    if len(order) < 2:
        raise BoundgeoError(f"{what}: {total} image(s); the analysis needs at least 2 (normals and held-out)")
    first, _ = dataset[int(order[0])]
    need = len(order) * first.numel() * first.element_size()
    if need > DECODE_LIMIT_BYTES:
        shape = "x".join(map(str, first.shape))
        fits = max(1, DECODE_LIMIT_BYTES // (2 * first.numel() * first.element_size()))
        raise BoundgeoError(
            f"{what}: {len(order)} images of {shape} would take {need / 2**30:.1f} GiB as float32 "
            f"(limit {DECODE_LIMIT_BYTES / 2**30:g} GiB); pass --num-inputs N (at most {fits} at this "
            f"size) to analyse a seeded choice of N + N images, or --size/--crop for smaller ones"
        )
    x = torch.empty((len(order), *first.shape), dtype=torch.float32)
    y = torch.empty(len(order), dtype=torch.int64)
    for row, index in enumerate(order.tolist()):
        image, label = dataset[index] if row else (first, dataset.targets[index])
        if image.shape != first.shape:
            raise BoundgeoError(
                f"{what}: {dataset.samples[index][0]} is {'x'.join(map(str, image.shape))} but "
                f"{dataset.samples[int(order[0])][0]} is {'x'.join(map(str, first.shape))}; pass "
                f"--size and --crop to give every image one size"
            )
        x[row], y[row] = image, label
    half = len(order) // 2
    shape = "x".join(map(str, first.shape))
    description = (f"{what}: {total} images in {len(dataset.classes)} classes, "
                   f"{len(order)} decoded (seed {args.seed}) at {shape}"
                   + "".join(f", {name}={value}" for name, value in (("size", args.size), ("crop", args.crop))
                             if value))
    return _Data(x[:half], y[:half], x[half:], y[half:], tuple(dataset.classes), description)


def _split(args: argparse.Namespace) -> _Data:
    """The data of the analysis, split into inputs for the normals and disjoint held-out ones."""
    from . import zoo
    from .io.datasets import CIFAR10_CLASSES, load_dataset

    digit_names = tuple(str(i) for i in range(10))
    image_options = [f"--{name}" for name in ("size", "crop", "grayscale") if getattr(args, name, None)]
    if image_options and not (args.dataset.startswith("folder:") or args.dataset == "cifar10"):
        raise BoundgeoError(f"{', '.join(image_options)} apply to image folders (--dataset folder:DIR "
                            f"or cifar10's folder layout), not to --dataset {args.dataset}")
    if args.dataset.startswith("folder:"):
        root = Path(args.dataset[len("folder:"):])
        return _folder(root, args, f"image folder {root}")
    if args.dataset == "cifar10":
        root = Path(args.data_dir) if args.data_dir else Path("data") / "cifar10"
        folder = _cifar10_folder(root)
        if folder is not None:  # decoded lazily, as any image folder
            data = _folder(folder, args, f"CIFAR-10 image folder {folder}")
            if data.classes != CIFAR10_CLASSES:
                raise BoundgeoError(f"--dataset cifar10: {folder} has class folders {list(data.classes)}, not "
                                    f"CIFAR-10's {list(CIFAR10_CLASSES)}; use --dataset folder:{folder}")
            return data
        if image_options:
            raise BoundgeoError(f"{', '.join(image_options)} apply to image folders; {root} holds "
                                "CIFAR-10's python batches")
        x, y = load_dataset("cifar10", root=root, split="test")
        return _halves(x, y, args.n, args.seed, CIFAR10_CLASSES, f"CIFAR-10 test batch in {root}")
    if not getattr(args, "model", None):
        x_tr, y_tr, x_te, y_te = zoo.reference_split(args.dataset, root=args.data_dir)
        if args.dataset == "digits":  # normals on the 1,257 training images, fooling on the 540 test ones
            description = "scikit-learn digits (8x8): normals on the training split, held-out test split"
            if not args.n:
                return _Data(x_tr, y_tr, x_te, y_te, digit_names, description)
            generator = torch.Generator().manual_seed(args.seed)
            fit = torch.randperm(len(x_tr), generator=generator)[: args.n]
            held = torch.randperm(len(x_te), generator=generator)[: args.n]
            return _Data(x_tr[fit], y_tr[fit], x_te[held], y_te[held], digit_names,
                         description + f" ({args.n} + {args.n} of them, seed {args.seed})")
        return _halves(x_te, y_te, args.n, args.seed, digit_names,
                       "MNIST: the reference model's 2,000 test images")
    x, y = load_dataset(args.dataset, root=args.data_dir, split="test")
    what = "scikit-learn digits (8x8), test split" if args.dataset == "digits" else "MNIST test split"
    return _halves(x, y, args.n, args.seed, digit_names, what)


# ----------------------------------------------------------------------------- setup
@dataclass
class _Setup:
    """What every stage needs: the classifier, the data, whether labels mean the model's
    classes, batch sizes that keep memory bounded at the input size, and the notes."""

    clf: object
    data: _Data
    labelled: bool
    batches: dict[str, int]
    notes: dict[str, str]


def batch_sizes(shape, *, k: int = 10) -> dict[str, int]:
    """Rows per pass for inputs of ``shape``, so that memory stays bounded at any size.

    ``grad``: inputs per batch with gradients (DeepFool holds candidates x d per input, the
    network its activations); ``forward``: inputs per batch without. ``curvature``: points per
    batch, whose Lanczos basis holds steps x d values each and whose finite differences run
    2 rows each. At 8x8 and 32x32 these are the library's defaults; at 224x224x3 they are 6,
    27 and 3. ``points``: default count of curvature points, whose k principal directions
    (points x k x d) are kept within 512 MB.
    """
    d = 1
    for s in shape:
        d *= int(s)
    steps = min(max(2 * k + 10, 30), max(d - 1, 1))
    grad = max(1, min(256, 2**20 // d))
    return {"grad": grad, "forward": max(1, min(512, 2**22 // d)),
            "curvature": max(1, min(64, grad // 2, 2**24 // (steps * d))),
            "points": max(1, min(200, 2**27 // (k * d)))}


def _prepare(args: argparse.Namespace, out: Path) -> _Setup:
    """Load the model and the data, decide whether the labels can be compared with the
    predictions, print what was loaded and record it in ``out/setup.json``."""
    model = _classifier(args)
    data = _split(args)
    clf = model.clf
    classes = clf.logits(data.x_eval[:1]).shape[1]
    notes = {"weights": "", "labels": "", **model.notes}  # clear what an earlier run noted
    labelled = classes == len(data.classes)
    if not labelled:
        shown = ", ".join(data.classes[:5]) + (", …" if len(data.classes) > 5 else "")
        notes["labels"] = (f"the model has {classes} classes and the data {len(data.classes)} ({shown}): the "
                           "labels cannot be compared with the predictions, so the analysis runs without "
                           "labels (no accuracy, no misclassified input skipped; classes are the model's "
                           "predictions)")
    parameters = sum(p.numel() for p in clf.model.parameters())
    line = f"model: {model.name}, {parameters:,} parameters, {classes} classes"
    if labelled:
        acc = float((clf.predict(data.x_eval).cpu() == data.y_eval).float().mean())
        line += f", held-out accuracy {acc:.4f} on {len(data.y_eval)} inputs"
    print(line)
    print(f"data: {data.description}")
    _say(notes)
    _record(out, **model.record, num_classes=classes, dataset=args.dataset, description=data.description,
            classes=list(data.classes), input_shape=list(data.x.shape[1:]), labels_compared=labelled,
            notes=notes)
    return _Setup(clf, data, labelled, batch_sizes(data.x.shape[1:]), notes)


# ----------------------------------------------------------------------------- stages
BOX_STEPS = {"off": False, "on": True, "after_first": "after_first"}  # --box-step → deepfool(box_step=)


def stage_normals(setup: _Setup, out: Path, seed: int, box_step: str = "off", refine: int = 0):
    from .attacks.boundary import boundary_normals

    x, y = setup.data.x, setup.data.y
    how = ("" if box_step == "off" else f", box-aware steps: {box_step}") + (f", refined {refine}x" if refine else "")
    print(f"[normals] boundary normals of {len(x)} inputs (DeepFool, l2{how})")
    # a run of the same model, data and settings in out/normals (interrupted, or on another
    # rank count) is continued; anything else starts over
    pts = boundary_normals(setup.clf, (x, y), out=out / "normals", resume="auto", seed=seed,
                           batch_size=setup.batches["grad"], keep_misclassified=not setup.labelled,
                           box_step=BOX_STEPS[box_step], refine=refine)
    ok = pts.converged
    if not ok.any():
        raise BoundgeoError(f"DeepFool reached the boundary for none of the {len(pts)} inputs; nothing to analyse")
    skipped = (f"{pts.settings['skipped_misclassified']} misclassified skipped" if setup.labelled
               else "labels not compared, none skipped")
    print(f"      {int(ok.sum())} converged, {skipped}; median margin ‖r‖₂ = {float(pts.margin[ok].median()):.4g}")
    return pts


def stage_spectrum(out: Path, seed: int):
    from .attacks.boundary import BoundaryPoints
    from .geometry.spectral import spectrum

    pts = BoundaryPoints.load(out / "normals")
    print("[spectrum] spectrum of r/‖r‖ against random unit vectors")
    spec = spectrum(pts, kind="perturbation", seed=seed)
    _save(spec, out / "spectrum")
    summary = spec.summary()
    top = min(10, len(spec.components))
    print(f"      90% of the energy in {summary['dim_90']} of {spec.d} dimensions "
          f"(random: {summary['random_dim_90']}); top {top} hold {spec.energy(top):.0%} "
          f"(random: {spec.energy(min(top, len(spec.baseline_mean)), baseline=True):.0%})")
    if spec.pair_rows >= 2:
        print(f"      mean cos² over pairs {spec.mean_squared_cosine:.3g} (random: {spec.random_mean_squared_cosine:.3g}); "
              f"|cos| > 0.5 for {spec.abs_cosine_above_half:.1%} of pairs "
              f"(random: {spec.random_abs_cosine_above_half:.2g})")
    return spec


def _median_margin(out: Path) -> float:
    from .attacks.boundary import BoundaryPoints

    pts = BoundaryPoints.load(out / "normals")
    return float(pts.margin[pts.converged].median())


def stage_subspace(setup: _Setup, out: Path, seed: int):
    from .geometry.spectral import Spectrum
    from .geometry.subspace import subspace_fooling

    x_eval = setup.data.x_eval
    spec = Spectrum.load(out / "spectrum")
    median = _median_margin(out)
    k = min(10, len(spec.components))  # fewer normals than 10 give fewer principal directions
    radii = [m * median for m in (0.5, 1, 1.5, 2, 3, 4, 6)]
    print(f"[subspace] random vectors in the top-{k} subspace vs the full space, {len(x_eval)} held-out inputs")
    fool = subspace_fooling(setup.clf, x_eval, spec.basis(k), radii=radii, draws=10, seed=seed, progress=True,
                            batch_size=setup.batches["forward"])
    _save(fool, out / "subspace_fooling")
    low = (fool.full_rate < 0.10).nonzero().squeeze(1)
    at = int(low[-1]) if len(low) else 0
    print(f"      at radius {radii[at]:.3g}: subspace {float(fool.subspace_rate[at]):.1%} vs "
          f"full space {float(fool.full_rate[at]):.1%}")
    return fool


def stage_curvature(setup: _Setup, out: Path, seed: int, n: int | None = None, k: int = 10):
    """Principal curvatures at up to ``n`` of the saved boundary points (seeded choice), and the
    curvature along the top-10 principal directions of the normals beside random directions.

    ``n=None`` takes 200 points, fewer for large inputs (``batch_sizes(...)["points"]``), so
    that their principal directions stay within 512 MB; the batch of points is lowered too."""
    from ._perturb import scale_to_norm
    from .attacks.boundary import BoundaryPoints
    from .geometry.curvature import boundary_curvature
    from .geometry.spectral import Spectrum

    pts = BoundaryPoints.load(out / "normals")
    spec = Spectrum.load(out / "spectrum")
    sizes = batch_sizes(pts.input_shape, k=k)
    converged = pts.converged.nonzero().squeeze(1)
    if n is None:
        n = sizes["points"]
        if n < min(200, len(converged)):
            print(f"[curvature] {n} points rather than 200: the principal directions of more would "
                  f"exceed 512 MB at {'x'.join(map(str, pts.input_shape))} (--points on `boundgeo "
                  "curvature` chooses)")
    generator = torch.Generator().manual_seed(seed)
    chosen = converged[torch.randperm(len(converged), generator=generator)[:n]].sort().values
    subset = pts.select(chosen)
    m = min(10, len(spec.components))
    kind = "normals" if spec.kind == "normal" else "directions r(x)/‖r(x)‖"
    along = {f"top-{m} principal directions of the {kind}": spec.basis(m),
             "random directions": scale_to_norm(torch.randn(m, spec.d, generator=generator), "l2")}
    print(f"[curvature] top-{k} principal curvatures at {len(chosen)} boundary points (finite differences, "
          f"{sizes['curvature']} per batch)")
    # not split across ranks yet: under torchrun rank 0 measures and saves, the others wait
    def measure():
        with single_process():
            return _saved(boundary_curvature(setup.clf, subset, inputs=setup.data.x, k=k, along=along, seed=seed,
                                             progress=True, batch_size=sizes["curvature"]), out / "curvature")

    curv = world().run_on_main(measure)
    frame = curv.along_frame()
    means = frame.groupby("group", sort=False).curvature.mean()
    print("      mean curvature along " + "; ".join(f"{g}: {v:.3g}" for g, v in means.items())
          + f" ({curv.seconds:.1f} s)")
    return curv


GEOMETRY_INPUTS = 200  # held-out inputs for the margins in DCT subspaces
DIMENSION_INPUTS = 100  # and for the dimension of the adversarial subspace
BASIS_BYTES = 2**28  # the dense rows of one DCT band stay within this


def dct_bands_for(shape) -> dict[str, torch.Tensor] | None:
    """Four diagonal DCT blocks from low to high frequency for image inputs (None otherwise): of
    width side/4, narrower where a band's dense rows would exceed BASIS_BYTES (at 224x224x3,
    12 frequencies: 432 rows of 150,528 values), so that the bands then sample the diagonal."""
    from .geometry.margins import dct_bands

    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or min(shape[-2:]) < 4:
        return None
    side, channels = min(shape[-2:]), 1
    for s in shape[:-2]:
        channels *= s
    d = channels * shape[-1] * shape[-2]
    width = max(1, min(side // 4, int((BASIS_BYTES / (4 * d * channels)) ** 0.5)))
    return dct_bands(shape, width, count=4)


def stage_geometry(setup: _Setup, out: Path, seed: int):
    """Geometry beyond the paper: margins in DCT subspaces, one spectrum per predicted class, the
    dimension of the adversarial subspace and, when the curvature stage ran, steps along curved
    against flat directions."""
    import dataclasses
    import shutil

    from .attacks.boundary import BoundaryPoints, deepfool
    from .geometry.curvature import Curvature, curvature_fooling
    from .geometry.margins import subspace_margins
    from .geometry.spectral import spectrum
    from .geometry.subspace import adversarial_dimension

    x_eval = setup.data.x_eval
    median = _median_margin(out)
    bands = dct_bands_for(x_eval.shape[1:])
    if bands is None:
        print("[geometry] no DCT margins: the inputs are not images (…, H, W) of at least 4x4")
        _forget_one(out, "subspace_margins")
    else:
        xs = x_eval[:GEOMETRY_INPUTS]
        print(f"[geometry] margins inside {len(bands)} DCT bands, {len(xs)} held-out inputs")

        def margins():
            with single_process():
                found = subspace_margins(setup.clf, xs, bands, batch_size=setup.batches["grad"], progress=True)
                full = deepfool(setup.clf, xs, clip=False, batch_size=setup.batches["grad"])
                reference = float(full.margin[full.converged].median()) if bool(full.converged.any()) else None
                return _saved(dataclasses.replace(found, settings={**found.settings, "full_space_median": reference}),
                              out / "subspace_margins")

        found = world().run_on_main(margins)
        print("      median margin by band: " + ", ".join(f"{k} {v:.3g}" for k, v in found.median().items()))
    pts = BoundaryPoints.load(out / "normals")
    classes = spectrum(pts, kind="perturbation", seed=seed, by="label", baseline_draws=2)
    folder = out / "class_spectra"
    if world().main:
        shutil.rmtree(folder, ignore_errors=True)
        for label, spec in classes.items():
            spec.save(folder / f"label_{label}")
    print(f"[geometry] one spectrum per predicted class ({len(classes)} classes): 90% of the energy in "
          + ", ".join(f"{spec.summary()['dim_90']}" for spec in classes.values()) + " dimensions")
    xd = x_eval[:DIMENSION_INPUTS]
    epsilons = [m * median for m in (1, 2, 4, 8)]
    print(f"[geometry] dimension of the adversarial subspace, {len(xd)} held-out inputs, ε = "
          + ", ".join(f"{e:.3g}" for e in epsilons))

    def dimension():
        with single_process():
            return _saved(adversarial_dimension(setup.clf, xd, epsilons, max_k=min(64, int(xd[0].numel())), seed=seed,
                                                batch_size=setup.batches["grad"]), out / "adversarial_dimension")

    dim = world().run_on_main(dimension)
    print("      median k by ε: " + ", ".join(f"{int(m)}" for m in dim.median().tolist()))
    if (out / "curvature.json").exists():
        curv = Curvature.load(out / "curvature")

        def fooling():
            with single_process():
                return _saved(curvature_fooling(setup.clf, curv, setup.data.x, epsilons, seed=seed,
                                                batch_size=setup.batches["grad"]), out / "curvature_fooling")

        fool = world().run_on_main(fooling)
        print("      steps along tangent directions fool, at ε = 8 x median margin: " + "; ".join(
            f"{name} {float(fool.rate[g, -1]):.0%}" for g, name in enumerate(fool.groups)))
    else:
        _forget_one(out, "curvature_fooling")


def stage_uap(setup: _Setup, out: Path, seed: int, xi: float | None = None, norm: str = "l2",
              method: str = "sgd", target: int | None = None, loss: str | None = None):
    from .attacks.universal import perturbed_examples, universal_perturbation

    clf, data = setup.clf, setup.data
    if xi is None:
        xi = 3 * _median_margin(out)
    aim = "" if target is None else f", to class {target}"
    print(f"[uap] universal perturbation ({method}{aim}), {norm} ξ = {xi:.3g}")
    uap = universal_perturbation(clf, data.x, xi=xi, norm=norm, method=method, eval_data=data.x_eval,
                                 seed=seed, progress=True, max_batch=setup.batches["grad"], target=target,
                                 loss=loss)
    _save(uap, out / "universal")
    # a seeded choice of held-out inputs, whose true classes go into setup.json for the figure
    pick = torch.randperm(len(data.x_eval), generator=torch.Generator().manual_seed(seed))[:EXAMPLES]
    examples = perturbed_examples(clf, data.x_eval[pick], uap, k=len(pick), seed=seed)
    _save(examples, out / "examples")
    same = (examples.clean.flatten(1)[:, None] == data.x_eval[pick].cpu().flatten(1)[None]).all(2)
    _record(out, examples_true_label=data.y_eval[pick][same.float().argmax(1)].tolist())
    print(f"      fools {uap.fooling_rate:.1%} of the fit inputs and {uap.eval_fooling_rate:.1%} of the "
          f"held-out ones ({uap.seconds:.1f} s)")
    if target is not None:
        text = uap.held_out_target_text()
        held = "" if text is None else f"; {text}"
        print(f"      sends {uap.target_rate:.1%} of the fit inputs not already in class {target} to it{held}")
    return uap


def stage_profile(setup: _Setup, out: Path, seed: int, epsilons=None):
    import numpy as np

    from .geometry.categories import robustness_profile

    x_eval = setup.data.x_eval
    if len(x_eval) < 4:
        note = (f"the robustness profile was skipped: it needs at least 4 held-out inputs (half to fit "
                f"universal perturbations, half to evaluate) and there are {len(x_eval)}; raise --num-inputs")
        print(f"[profile] {note}")
        setup.notes["profile"] = note
        _record(out, notes={"profile": note})
        _forget(out, "profile")
        return None
    _record(out, notes={"profile": ""})
    if epsilons is None:
        median = _median_margin(out)
        epsilons = np.geomspace(0.1 * median, 25 * median, 12)
    print(f"[profile] robustness profile over {len(epsilons)} budgets (ℓ2, τ = 0.5), held-out inputs")
    profile = robustness_profile(setup.clf, x_eval, epsilons=epsilons, norm="l2", threshold=0.5, seed=seed,
                                 progress=True, batch_size=setup.batches["grad"])
    _save(profile, out / "profile")
    print("      " + profile.summary().replace("\n", "\n      "))
    return profile


# the results (and figures) each optional stage writes, removed when it is skipped so that the
# report never shows an earlier run's results beside this one's
_OUTPUTS = {"subspace": ("subspace_fooling",), "curvature": ("curvature", "section_curvature"),
            "geometry": ("subspace_margins", "class_spectra", "class_directions", "adversarial_dimension",
                         "curvature_fooling"),
            "uap": ("universal", "examples"), "profile": ("profile",)}


def _forget(out: Path, stage: str) -> None:
    for name in _OUTPUTS[stage]:
        _forget_one(out, name)


def _forget_one(out: Path, name: str) -> None:
    import shutil

    if not world().main:
        return
    for suffix in (".json", ".npz", ".png", ".pdf"):
        (out / name).with_suffix(suffix).unlink(missing_ok=True)
    if (out / name).is_dir():
        shutil.rmtree(out / name)


def _whole_analysis(args: argparse.Namespace) -> int:
    import time

    from .report import render

    _seed_everything(args.seed)
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    skip = set(getattr(args, "skip", None) or ())
    setup = _prepare(args, out)
    stage_normals(setup, out, args.seed, args.box_step, args.refine)
    stage_spectrum(out, args.seed)
    stages = (("subspace", lambda: stage_subspace(setup, out, args.seed)),
              ("curvature", lambda: stage_curvature(setup, out, args.seed)),
              ("geometry", lambda: stage_geometry(setup, out, args.seed)),
              ("uap", lambda: stage_uap(setup, out, args.seed)),
              ("profile", lambda: stage_profile(setup, out, args.seed)))
    for name, run in stages:
        if name in skip:
            print(f"[{name}] skipped (--skip)")
            _forget(out, name)
        else:
            run()
    left_out = [name for name, _ in stages if name in skip]
    setup.notes["skipped"] = f"left out with --skip: {', '.join(left_out)}" if left_out else ""
    _record(out, notes={"skipped": setup.notes["skipped"]})
    if world().main:  # the report and the figures: rank 0 alone under torchrun
        md, page = render(out)
        print(f"report: {md} and {page}")
    print(f"results and figures in {out}/ ({time.perf_counter() - start:.0f} s)")
    _say(setup.notes)  # once more at the end, where it is read
    return 0


# ----------------------------------------------------------------------------- commands
def cmd_demo(args: argparse.Namespace) -> int:
    args.model = None
    return _whole_analysis(args)


def cmd_analyze(args: argparse.Namespace) -> int:
    return _whole_analysis(args)


def _stage_command(args: argparse.Namespace, run) -> int:
    _seed_everything(args.seed)
    out = Path(args.out)
    setup = _prepare(args, out)
    run(setup, out)
    _say(setup.notes)
    return 0


def cmd_normals(args: argparse.Namespace) -> int:
    return _stage_command(args, lambda setup, out: stage_normals(setup, out, args.seed, args.box_step, args.refine))


def cmd_spectrum(args: argparse.Namespace) -> int:
    stage_spectrum(Path(args.out), args.seed)
    return 0


def cmd_curvature(args: argparse.Namespace) -> int:
    return _stage_command(args, lambda setup, out: stage_curvature(setup, out, args.seed, n=args.points, k=args.k))


def cmd_geometry(args: argparse.Namespace) -> int:
    return _stage_command(args, lambda setup, out: stage_geometry(setup, out, args.seed))


def cmd_uap(args: argparse.Namespace) -> int:
    return _stage_command(args, lambda setup, out: stage_uap(setup, out, args.seed, xi=args.xi, norm=args.norm,
                                                             method=args.method, target=args.target,
                                                             loss=args.loss))


def cmd_profile(args: argparse.Namespace) -> int:
    return _stage_command(args, lambda setup, out: stage_profile(setup, out, args.seed, epsilons=args.epsilons))


def cmd_report(args: argparse.Namespace) -> int:
    from .report import render

    md, page = render(Path(args.dir))
    print(f"report: {md} and {page}")
    return 0


def _positive_int(value: str) -> int:
    try:
        return check_count(int(value), "--num-inputs")
    except (ValueError, BoundgeoError) as exc:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}") from exc


def _num_inputs(parser: argparse.ArgumentParser) -> None:
    # --n stays as an alias; torchrun reads "--n" as an ambiguous abbreviation of its own options
    parser.add_argument("--num-inputs", "--n", dest="n", type=_positive_int, default=None, metavar="N",
                        help="use a seeded choice of N inputs for the normals and N held-out ones")


def _data_arguments(parser: argparse.ArgumentParser, *, model: bool) -> None:
    parser.add_argument("--dataset", type=_dataset_argument, default="digits",
                        help="digits, mnist, cifar10 (python batches or the image-folder layout in "
                             "--data-dir) or folder:DIR (one sub-folder of images per class)")
    parser.add_argument("--data-dir", default=None, help="directory of the dataset's files")
    parser.add_argument("--size", type=int, default=None,
                        help="image folders: resize the shorter side to SIZE first")
    parser.add_argument("--crop", type=int, default=None, help="image folders: then center-crop to CROP x CROP")
    parser.add_argument("--grayscale", action="store_true", help="image folders: one channel")
    parser.add_argument("--seed", type=int, default=0)
    _num_inputs(parser)
    if model:
        parser.add_argument("--model", default=None,
                            help="MODULE:FACTORY or path/to/file.py:FACTORY returning an nn.Module "
                                 "(default: the reference CNN), e.g. torchvision.models:resnet50")
        parser.add_argument("--weights", default=None,
                            help="checkpoint, read with weights_only=True (state dict, {'state_dict': ...}, "
                                 "'module.' keys)")
        parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                            help="normalisation: imagenet or cifar10 mean and std, or none")
        parser.add_argument("--mean", type=float, nargs="+", default=None,
                            help="per-channel mean (wins over --preset)")
        parser.add_argument("--std", type=float, nargs="+", default=None, help="per-channel std (wins over --preset)")
        parser.add_argument("--bounds", type=float, nargs=2, default=(0.0, 1.0), metavar=("LOW", "HIGH"))
        parser.add_argument("--outputs", choices=["auto", "logits", "probabilities"], default="auto",
                            help="what the model returns: auto (logits, checked: softmax outputs are an "
                                 "error), logits, or probabilities (boundgeo works on their log)")


def _deepfool_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--box-step", choices=sorted(BOX_STEPS), default="off",
                        help="DeepFool steps solved inside the bounds (deepfool(box_step=)): on, after_first "
                             "(a plain first step, then box-aware ones), or off (clip after each step)")
    parser.add_argument("--refine", type=int, default=0, metavar="ROUNDS",
                        help="rounds of tangent-plane projection after DeepFool crosses (deepfool(refine=)): "
                             "shorter perturbations, normals at points nearer the input; 0 is DeepFool as "
                             "published")


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
    _num_inputs(demo)
    demo.set_defaults(func=cmd_demo, box_step="off", refine=0)

    analyze = sub.add_parser("analyze", help="the whole analysis on your own model")
    analyze.add_argument("--out", default="boundgeo-analysis", help="output directory")
    _data_arguments(analyze, model=True)
    analyze.add_argument("--skip", nargs="+", choices=sorted(_OUTPUTS), default=(), metavar="STAGE",
                         help="leave out stages (subspace, curvature, geometry, uap, profile): at 224x224 on a "
                              "CPU, curvature costs about 100 forward-backward passes per point")
    _deepfool_options(analyze)
    analyze.set_defaults(func=cmd_analyze)

    for name, func, helptext in (("normals", cmd_normals, "stage 1: boundary points and normals"),
                                 ("curvature", cmd_curvature, "principal curvatures at saved boundary "
                                  "points (needs normals/ and spectrum in --out)"),
                                 ("geometry", cmd_geometry, "margins in DCT subspaces, per-class spectra, "
                                  "the adversarial subspace's dimension, curved against flat directions (needs "
                                  "normals/ in --out; curvature too for the last)"),
                                 ("uap", cmd_uap, "a universal perturbation"),
                                 ("profile", cmd_profile, "the robustness profile")):
        stage = sub.add_parser(name, help=helptext)
        stage.add_argument("--out", required=True, help="results directory (read and written)")
        _data_arguments(stage, model=True)
        if name == "normals":
            _deepfool_options(stage)
        if name == "uap":
            stage.add_argument("--xi", type=float, default=None, help="radius (default: 3 x median margin)")
            stage.add_argument("--norm", choices=["l2", "linf"], default="l2")
            stage.add_argument("--method", choices=list(UNIVERSAL_METHODS), default="sgd")
            stage.add_argument("--target", type=int, default=None,
                               help="a class: a targeted perturbation that sends inputs there (sgd, singular)")
            stage.add_argument("--loss", choices=list(LOSSES), default=None,
                               help="sgd's loss: clipped cross-entropy (ce), the logit margin, or the margin "
                                    "weighted towards the inputs nearest success (focal_margin, the default)")
        if name == "profile":
            stage.add_argument("--epsilons", type=float, nargs="+", default=None)
        if name == "curvature":
            stage.add_argument("--points", type=int, default=None,
                               help="boundary points to measure (default 200, fewer for large inputs)")
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
    with _process_group():
        try:
            return args.func(args)
        except BoundgeoError as exc:
            print(f"boundgeo: error: {exc}", file=sys.stderr)
            return 2


@contextlib.contextmanager
def _process_group():
    """Under torchrun (``WORLD_SIZE`` > 1): join the process group (NCCL with GPUs, else gloo)
    for the command, on this rank's GPU, and let rank 0 alone print. Outside torchrun nothing
    happens and torch.distributed is not imported."""
    if not launched_by_torchrun():
        yield
        return
    import torch.distributed as dist

    started = not dist.is_initialized()
    if started:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    quiet = None
    if dist.get_rank() != 0:  # progress and summaries once, from rank 0; errors from every rank
        quiet = open(os.devnull, "w")
        sys.stdout = quiet
        before = os.environ.get("TQDM_DISABLE")
        os.environ["TQDM_DISABLE"] = "1"  # tqdm's own switch, for the bars of every stage
    try:
        yield
    finally:
        if quiet is not None:
            sys.stdout = sys.__stdout__
            quiet.close()
            if before is None:
                os.environ.pop("TQDM_DISABLE", None)
            else:
                os.environ["TQDM_DISABLE"] = before
        if started:
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
