"""Reference models: small architectures, deterministic CPU training and safe checkpoints.

The three architectures span the range the paper's Section 4 compares: an affine model (the
boundary normals of a C-class affine model span at most C-1 dimensions), an MLP and a small CNN.

Checkpoints are plain dicts of tensors and JSON-like metadata, read back with
``torch.load(weights_only=True)``: no code is ever unpickled.
"""

from __future__ import annotations

import os
import pickle
import re
import time
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._checks import check_choice, check_count, check_device, check_real, check_seed
from ._errors import BoundgeoError

ARCHITECTURES = ("affine", "mlp", "cnn")
# Built by build_model too, but kept out of ARCHITECTURES: the scripts that loop over the
# reference models of digits and MNIST have no recipe for it there.
CIFAR_ARCHITECTURES = ("resnet",)
RESNET_WIDTHS = (16, 32, 64)
WEIGHTS = "weights"  # package data: boundgeo/weights/, installed with the package
DIGITS_CNN = "digits_cnn.pt"
MAX_CLASSES = 100_000  # a sanity bound for num_classes (ImageNet-21k has 21,841)
# torch's CPU thread count while :func:`train` runs: the weights depend on it, so every process
# trains the same reference model at this count, whatever its own (two: the count at which the
# digits and MNIST reference models of every published result were trained on the 2-core
# machine; the CIFAR-10 ResNet's checkpoint was trained at one, which its recipe says)
TRAIN_THREADS = 2


def _check_architecture(input_shape, num_classes, what: str = "") -> tuple[tuple[int, ...], int]:
    """input_shape as whole numbers >= 1 and num_classes in [2, MAX_CLASSES]."""
    if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__len__") or len(input_shape) == 0:
        raise BoundgeoError(f"{what}input_shape must be a non-empty sequence such as (C, H, W), got {input_shape!r}")
    shape = tuple(check_count(s, f"{what}input_shape[{i}]") for i, s in enumerate(input_shape))
    classes = check_count(num_classes, f"{what}num_classes", minimum=2, maximum=MAX_CLASSES)
    return shape, classes


def build_model(
    arch: str, input_shape: tuple[int, ...] = (1, 8, 8), num_classes: int = 10
) -> nn.Module:
    """Build an untrained reference model.

    Args:
        arch: ``"affine"`` (softmax regression), ``"mlp"`` (two hidden ReLU layers, 256-128)
            or ``"cnn"`` (two 3x3 conv-ReLU-maxpool blocks with 16 and 32 channels, a 64-unit
            hidden layer). ``"resnet"``: a ResNet-8 for CIFAR-sized colour images (see
            :func:`resnet8`).
        input_shape: (C, H, W) of one input.
        num_classes: number of logits.
    """
    if arch not in ARCHITECTURES + CIFAR_ARCHITECTURES:
        raise BoundgeoError(
            f"unknown architecture {arch!r}; choose one of {ARCHITECTURES + CIFAR_ARCHITECTURES}"
        )
    input_shape, num_classes = _check_architecture(input_shape, num_classes)
    if arch == "resnet":
        if len(input_shape) != 3:
            raise BoundgeoError(f"the resnet needs inputs (C, H, W), got {input_shape}")
        return resnet8(input_shape[0], num_classes)
    features = 1
    for s in input_shape:
        features *= s
    if arch == "affine":
        return nn.Sequential(nn.Flatten(), nn.Linear(features, num_classes))
    if arch == "mlp":
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(features, 256),
            nn.ReLU(),
            nn.Linear(256, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )
    if len(input_shape) != 3 or input_shape[1] < 4 or input_shape[2] < 4:
        raise BoundgeoError(f"the cnn needs inputs (C, H, W) with H, W >= 4, got {input_shape}")
    c, h, w = input_shape
    return nn.Sequential(
        nn.Conv2d(c, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (h // 4) * (w // 4), 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


class BasicBlock(nn.Module):
    """Two 3x3 conv-BatchNorm layers plus a shortcut, then ReLU (He et al. 2016).

    The shortcut is the identity, or a 1x1 conv-BatchNorm where the block changes the width or
    the resolution.

    Shape:
        (N, in_channels, H, W) → (N, out_channels, ⌈H/stride⌉, ⌈W/stride⌉).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class _ToChannelsLast(torch.autograd.Function):
    """x in channels-last layout; the gradient goes back in the standard layout, so that
    gradients with respect to the inputs can be ``.view``-ed as usual."""

    generate_vmap_rule = True  # for is_grads_batched backward passes

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


class ChannelsLast(nn.Module):
    """Hands the input on in channels-last memory layout (the same values), so that the
    convolutions after it run their faster NHWC kernels; gradients come back in the standard
    layout.

    Shape:
        (N, C, H, W) → (N, C, H, W).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            return _ToChannelsLast.apply(x)
        except RuntimeError:  # inside torch.func.vmap, which cannot set a memory layout
            return x


def resnet8(in_channels: int = 3, num_classes: int = 10) -> nn.Sequential:
    """A ResNet-8 for 32x32 images: the CIFAR ResNet of He et al. (2016) with one basic block per
    stage instead of three (ResNet-20), about 78,000 weights, small enough to train on a CPU.

    A 3x3 conv-BatchNorm-ReLU stem with 16 channels, three :class:`BasicBlock` stages of
    :data:`RESNET_WIDTHS` (16, 32, 64) channels (the last two halve the resolution), global
    average pooling and a linear layer. Inputs stay in [0, 1]: the BatchNorm after the stem
    standardises them, so the model needs no mean/std of its own. Weights and activations are
    kept channels-last (:class:`ChannelsLast`), a third faster on the CPU; inputs may come in
    either layout, and gradients with respect to them come back in the standard one.

    Shape:
        (N, in_channels, H, W) → (N, num_classes) for any H, W ≥ 1.
    """
    first, *rest = RESNET_WIDTHS
    layers: list[nn.Module] = [
        ChannelsLast(),
        nn.Conv2d(in_channels, first, 3, 1, 1, bias=False),
        nn.BatchNorm2d(first),
        nn.ReLU(),
        BasicBlock(first, first, 1),
    ]
    width = first
    for out in rest:
        layers.append(BasicBlock(width, out, 2))
        width = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes)]
    return nn.Sequential(*layers).to(memory_format=torch.channels_last)


@dataclass(frozen=True)
class TrainedModel:
    """A trained reference model with what it takes to rebuild and judge it.

    Fields:
        model: the trained module, in eval mode.
        arch, input_shape, num_classes: what :func:`build_model` needs to rebuild it.
        accuracy: accuracy on the held-out inputs given to :func:`train` (None if none were).
        seed, epochs, seconds: how it was trained.
        meta: free-form notes (dataset, split) saved with the checkpoint.
    """

    model: nn.Module
    arch: str
    input_shape: tuple[int, ...]
    num_classes: int
    accuracy: float | None
    seed: int
    epochs: int
    seconds: float
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | os.PathLike) -> Path:
        """Write a checkpoint that :func:`load_checkpoint` reads with ``weights_only=True``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "arch": self.arch,
                "input_shape": list(self.input_shape),
                "num_classes": self.num_classes,
                "accuracy": self.accuracy,
                "seed": self.seed,
                "epochs": self.epochs,
                "seconds": self.seconds,
                "meta": dict(self.meta),
                "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            },
            path,
        )
        return path


def load_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> TrainedModel:
    """Load a checkpoint written by :meth:`TrainedModel.save`.

    The file is read with ``torch.load(weights_only=True)``, so no code is ever run, and its
    metadata (arch, input_shape, num_classes) are checked against the tensors it holds before
    any model is built: a checkpoint that claims a billion classes is refused, not allocated.

    Raises:
        BoundgeoError: a missing or unreadable file, one that holds code (pickled objects other
            than tensors and plain data), or metadata that do not match its weights.
    """
    device = check_device(device)
    path = Path(path)
    if not path.is_file():
        raise BoundgeoError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found is None:  # the weights-only unpickler met bytes that are no pickle at all
            raise BoundgeoError(f"{path} is not a readable torch checkpoint (not a pickle torch can read)") from exc
        raise BoundgeoError(
            f"{path} holds code ({found.group(1)}, a pickled Python object other than tensors and "
            "plain data) and was not loaded: boundgeo reads checkpoints with weights_only=True. "
            "Save a state_dict and metadata instead, as TrainedModel.save does"
        ) from exc
    except Exception as exc:  # torch raises KeyError, EOFError, RuntimeError... for a damaged file
        raise BoundgeoError(f"{path} is not a readable torch checkpoint ({type(exc).__name__}: {exc})") from exc
    arch, input_shape, num_classes = _check_checkpoint(ckpt, path)
    model = build_model(arch, input_shape, num_classes)
    model.load_state_dict(ckpt["state_dict"])
    model.to(device).eval()
    return TrainedModel(
        model=model,
        arch=arch,
        input_shape=input_shape,
        num_classes=num_classes,
        accuracy=ckpt.get("accuracy"),
        seed=ckpt.get("seed", 0),
        epochs=ckpt.get("epochs", 0),
        seconds=ckpt.get("seconds", 0.0),
        meta=ckpt.get("meta", {}),
    )


def crop_flip(x: torch.Tensor, generator: torch.Generator, *, padding: int = 4) -> torch.Tensor:
    """Random crops of the zero-padded inputs and random horizontal flips (the standard CIFAR
    augmentation), drawn from ``generator``: the same generator state gives the same batch.

    Shape:
        x: (N, C, H, W) → (N, C, H, W).
    """
    n, c, h, w = x.shape
    padded = nn.functional.pad(x, (padding,) * 4)
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = (top[:, None] + torch.arange(h))[:, None, :, None].expand(n, c, h, w + 2 * padding)
    cols = left[:, None] + torch.arange(w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :].expand(n, c, h, w)
    return padded.gather(2, rows).gather(3, cols)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1024) -> float:
    """Share of ``x`` that ``model`` classifies as ``y``."""
    batch_size = check_count(batch_size, "batch_size")
    model.eval()
    correct = sum(
        int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(batch_size), y.split(batch_size))
    )
    return correct / len(y)


def train(
    arch: str,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    x_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
    progress: bool = False,
    optimizer: str = "adam",
    schedule: str | None = None,
    augment: bool = False,
    threads: int | None = TRAIN_THREADS,
) -> TrainedModel:
    """Train a reference model with Adam (or SGD), deterministically on the CPU.

    The same seed, data and settings give bit-identical weights: initialisation, shuffling and
    augmentation draw from generators seeded here, the global RNG state is restored afterwards,
    and torch's CPU thread count is fixed while training (``threads``), since how a sum is split
    across threads changes its rounding, and ten epochs make that a different model (the MNIST
    CNN trained at one thread and at two disagree on some held-out images).

    Args:
        arch: one of :data:`ARCHITECTURES`.
        x, y: training inputs (N, C, H, W) in [0, 1] and int64 labels (N,).
        x_val, y_val: held-out data for the reported accuracy.
        epochs, batch_size, lr, weight_decay: optimisation settings.
        seed: seeds initialisation, shuffling and augmentation.
        meta: notes saved with the checkpoint (for example the dataset and split).
        progress: print the loss and held-out accuracy after each epoch.
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9, Nesterov).
        schedule: None (constant ``lr``) or ``"onecycle"`` (``lr`` is the peak of a one-cycle
            schedule over all steps, Smith & Topin 2019).
        augment: random crops of the 4-pixel zero-padded inputs and horizontal flips
            (:func:`crop_flip`), drawn afresh for every batch.
        threads: torch's CPU thread count while training, restored afterwards (default
            :data:`TRAIN_THREADS`, whatever the process's own count, so that every process trains
            the same model); None trains at the process's count.
    """
    epochs, batch_size, seed = check_count(epochs, "epochs"), check_count(batch_size, "batch_size"), check_seed(seed)
    if threads is not None:
        threads = check_count(threads, "threads")
    lr = check_real(lr, "lr", low=0, low_open=True)
    weight_decay = check_real(weight_decay, "weight_decay", low=0)
    if x.dim() != 4 or y.dim() != 1 or x.shape[0] != y.shape[0]:
        raise BoundgeoError(
            f"train needs x (N, C, H, W) and y (N,); got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    num_classes = int(y.max()) + 1
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(arch, tuple(x.shape[1:]), max(num_classes, 2))
    generator = torch.Generator().manual_seed(seed)
    check_choice(optimizer, "optimizer", ("adam", "sgd"))
    check_choice(schedule, "schedule", (None, "onecycle"))
    if optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                                    weight_decay=weight_decay)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = None
    if schedule == "onecycle":
        steps = epochs * -(-x.shape[0] // batch_size)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps,
                                                        pct_start=0.25)
    loss_fn = nn.CrossEntropyLoss()
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(x.shape[0], generator=generator)
            total = 0.0
            for batch in order.split(batch_size):
                optimizer.zero_grad()
                inputs = crop_flip(x[batch], generator) if augment else x[batch]
                loss = loss_fn(model(inputs), y[batch])
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                total += float(loss.detach()) * len(batch)
            if progress:
                val = accuracy(model, x_val, y_val) if x_val is not None else float("nan")
                print(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}, held-out acc {val:.4f}")
    finally:
        torch.set_num_threads(before)
    model.eval()
    acc = accuracy(model, x_val, y_val) if x_val is not None and y_val is not None else None
    return TrainedModel(
        model=model,
        arch=arch,
        input_shape=tuple(x.shape[1:]),
        num_classes=max(num_classes, 2),
        accuracy=acc,
        seed=seed,
        epochs=epochs,
        seconds=time.perf_counter() - start,
        meta={**(meta or {}), "threads": threads if threads is not None else before},  # the count it trained at
    )


# Settings that reach the accuracies quoted in the README; scripts and tests share them.
RECIPES: dict[tuple[str, str], dict[str, Any]] = {
    ("digits", "affine"): {"epochs": 60, "lr": 1e-2},
    ("digits", "mlp"): {"epochs": 40},
    ("digits", "cnn"): {"epochs": 40},
    ("mnist", "affine"): {"epochs": 15, "lr": 3e-3},
    ("mnist", "mlp"): {"epochs": 15},
    ("mnist", "cnn"): {"epochs": 10},
    ("cifar10", "resnet"): {"epochs": 15, "batch_size": 128, "lr": 0.1, "weight_decay": 5e-4,
                            "optimizer": "sgd", "schedule": "onecycle", "augment": True,
                            # the count analysis/results/cifar10_resnet.pt was trained at
                            "threads": 1},
}
MNIST_TRAIN = 8000  # the training split is not shipped: train on the first 8,000 test images
CIFAR10_TRAIN_PER_CLASS = 800  # likewise: the first 800 test images of each class train, 200 test


def reference_split(
    dataset: str, *, root: str | os.PathLike | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (x_train, y_train, x_test, y_test) split every reference model uses.

    digits: scikit-learn's digits with boundgeo's fixed 70/30 split. mnist: the first 8,000
    images of the MNIST test split for training and the last 2,000 for testing, since only the
    test split is at hand. cifar10: likewise only the test split is at hand (the JPEG image
    folder, or the ``test_batch`` file); the first 800 images of each class in test order train,
    the other 200 of each class (2,000) test. Both parts keep the loader's order.
    """
    from .io.datasets import load_dataset

    if dataset == "digits":
        x_tr, y_tr = load_dataset("digits", split="train")
        x_te, y_te = load_dataset("digits", split="test")
        return x_tr, y_tr, x_te, y_te
    if dataset == "mnist":
        x, y = load_dataset("mnist", root=root, split="test")
        return x[:MNIST_TRAIN], y[:MNIST_TRAIN], x[MNIST_TRAIN:], y[MNIST_TRAIN:]
    if dataset == "cifar10":
        x, y = load_dataset("cifar10", root=root, split="test")
        train_part = torch.zeros(len(y), dtype=torch.bool)
        for c in y.unique():
            train_part[(y == c).nonzero().squeeze(1)[:CIFAR10_TRAIN_PER_CLASS]] = True
        return x[train_part], y[train_part], x[~train_part], y[~train_part]
    raise BoundgeoError(f"reference models exist for 'digits', 'mnist' and 'cifar10', not {dataset!r}")


def train_reference(
    dataset: str,
    arch: str,
    *,
    root: str | os.PathLike | None = None,
    seed: int = 0,
    progress: bool = False,
) -> TrainedModel:
    """Train a reference model on :func:`reference_split` with the settings in :data:`RECIPES`."""
    if (dataset, arch) not in RECIPES:
        raise BoundgeoError(f"no recipe for {arch!r} on {dataset!r}; see boundgeo.zoo.RECIPES")
    x_tr, y_tr, x_te, y_te = reference_split(dataset, root=root)
    split = {
        "digits": "digits: sklearn load_digits, stratified 70/30 split (seed 0)",
        "mnist": "mnist: trained on test images [0, 8000), evaluated on [8000, 10000)",
        "cifar10": "cifar10: trained on the first 800 test images of each class, evaluated on the "
                   "other 200 of each class (the training split is not at hand)",
    }[dataset]
    return train(
        arch,
        x_tr,
        y_tr,
        x_val=x_te,
        y_val=y_te,
        seed=seed,
        meta={"dataset": dataset, "split": split},
        progress=progress,
        **RECIPES[(dataset, arch)],
    )


def pretrained_digits_cnn(*, device: str | torch.device = "cpu", verbose: bool = False) -> TrainedModel:
    """The digits CNN shipped inside the package, ``boundgeo/weights/digits_cnn.pt``.

    It is read from the installed package (``importlib.resources``), never from the working
    directory, so a ``data/digits_cnn.pt`` lying in the current folder does not replace it. Should
    the file be missing from a broken install, the CNN is trained on the spot with a warning.
    The checkpoint is regenerated by ``python analysis/train_reference.py --dataset digits``.
    """
    device = check_device(device)
    shipped = resources.files(__package__).joinpath(WEIGHTS, DIGITS_CNN)
    if shipped.is_file():
        with resources.as_file(shipped) as path:
            return load_checkpoint(path, device=device)
    warnings.warn(
        f"{WEIGHTS}/{DIGITS_CNN} is missing from the installed boundgeo package; training the "
        "digits CNN instead (a few seconds); its numbers may differ slightly from the shipped one's",
        stacklevel=2,
    )
    if verbose:
        print(f"{DIGITS_CNN} not found; training the digits CNN (a few seconds)")
    trained = train_reference("digits", "cnn")
    trained.model.to(device)
    return trained


def _check_checkpoint(ckpt: Any, path: Path) -> tuple[str, tuple[int, ...], int]:
    """The metadata of a loaded checkpoint, checked against its own tensors.

    The model is first built on the meta device, which allocates nothing, and its parameter
    shapes compared with the state_dict's; only a checkpoint whose weights fit is built for real.
    """
    if not isinstance(ckpt, dict):
        raise BoundgeoError(f"{path} is not a boundgeo checkpoint: it holds a {type(ckpt).__name__}, not a dict")
    missing = {"arch", "input_shape", "num_classes", "state_dict"} - set(ckpt)
    if missing:
        raise BoundgeoError(f"{path} is not a boundgeo checkpoint: it lacks {sorted(missing)}")
    arch, state = ckpt["arch"], ckpt["state_dict"]
    if not isinstance(arch, str):
        raise BoundgeoError(f"{path}: arch must be a string, got {arch!r}")
    input_shape, num_classes = _check_architecture(ckpt["input_shape"], ckpt["num_classes"], f"{path}: ")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BoundgeoError(f"{path}: state_dict must map names to tensors")
    with torch.device("meta"):
        skeleton = build_model(arch, input_shape, num_classes)
    expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    given = {name: tuple(t.shape) for name, t in state.items()}
    if expected != given:
        wrong = sorted(set(expected) ^ set(given)) or [k for k in expected if expected[k] != given[k]]
        name = wrong[0]
        raise BoundgeoError(
            f"{path}: the weights do not fit arch={arch!r}, input_shape={input_shape}, "
            f"num_classes={num_classes}: {name!r} is {given.get(name, 'missing')} in the file, "
            f"{expected.get(name, 'not a parameter')} in the model"
        )
    return arch, input_shape, num_classes
