"""Reference models: small architectures, deterministic CPU training and safe checkpoints.

The three architectures span the range the paper's Section 4 compares: an affine model (the
boundary normals of a C-class affine model span at most C-1 dimensions), an MLP and a small CNN.

Checkpoints are plain dicts of tensors and JSON-like metadata, read back with
``torch.load(weights_only=True)``: no code is ever unpickled.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._errors import BoundgeoError

ARCHITECTURES = ("affine", "mlp", "cnn")
PACKAGE_DATA = Path(__file__).resolve().parent.parent / "data"
DIGITS_CNN = "digits_cnn.pt"


def build_model(
    arch: str, input_shape: tuple[int, ...] = (1, 8, 8), num_classes: int = 10
) -> nn.Module:
    """Build an untrained reference model.

    Args:
        arch: ``"affine"`` (softmax regression), ``"mlp"`` (two hidden ReLU layers, 256-128)
            or ``"cnn"`` (two 3x3 conv-ReLU-maxpool blocks with 16 and 32 channels, a 64-unit
            hidden layer).
        input_shape: (C, H, W) of one input.
        num_classes: number of logits.
    """
    if arch not in ARCHITECTURES:
        raise BoundgeoError(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES}")
    input_shape = tuple(int(s) for s in input_shape)
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
    """Load a checkpoint written by :meth:`TrainedModel.save` (``weights_only=True``)."""
    path = Path(path)
    if not path.exists():
        raise BoundgeoError(f"checkpoint {path} does not exist")
    ckpt = torch.load(path, map_location=device, weights_only=True)
    missing = {"arch", "input_shape", "num_classes", "state_dict"} - set(ckpt)
    if missing:
        raise BoundgeoError(f"{path} is not a boundgeo checkpoint: it lacks {sorted(missing)}")
    model = build_model(ckpt["arch"], tuple(ckpt["input_shape"]), ckpt["num_classes"])
    model.load_state_dict(ckpt["state_dict"])
    model.to(device).eval()
    return TrainedModel(
        model=model,
        arch=ckpt["arch"],
        input_shape=tuple(ckpt["input_shape"]),
        num_classes=ckpt["num_classes"],
        accuracy=ckpt.get("accuracy"),
        seed=ckpt.get("seed", 0),
        epochs=ckpt.get("epochs", 0),
        seconds=ckpt.get("seconds", 0.0),
        meta=ckpt.get("meta", {}),
    )


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1024) -> float:
    """Share of ``x`` that ``model`` classifies as ``y``."""
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
) -> TrainedModel:
    """Train a reference model with Adam, deterministically on the CPU.

    The same seed, data and settings give bit-identical weights: initialisation and shuffling
    draw from generators seeded here, and the global RNG state is restored afterwards.

    Args:
        arch: one of :data:`ARCHITECTURES`.
        x, y: training inputs (N, C, H, W) in [0, 1] and int64 labels (N,).
        x_val, y_val: held-out data for the reported accuracy.
        epochs, batch_size, lr, weight_decay: optimisation settings.
        seed: seeds initialisation and shuffling.
        meta: notes saved with the checkpoint (for example the dataset and split).
        progress: print the loss and held-out accuracy after each epoch.
    """
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
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(x.shape[0], generator=generator)
        total = 0.0
        for batch in order.split(batch_size):
            optimizer.zero_grad()
            loss = loss_fn(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        if progress:
            val = accuracy(model, x_val, y_val) if x_val is not None else float("nan")
            print(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}, held-out acc {val:.4f}")
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
        meta=dict(meta or {}),
    )


# Settings that reach the accuracies quoted in the README; scripts and tests share them.
RECIPES: dict[tuple[str, str], dict[str, Any]] = {
    ("digits", "affine"): {"epochs": 60, "lr": 1e-2},
    ("digits", "mlp"): {"epochs": 40},
    ("digits", "cnn"): {"epochs": 40},
    ("mnist", "affine"): {"epochs": 15, "lr": 3e-3},
    ("mnist", "mlp"): {"epochs": 15},
    ("mnist", "cnn"): {"epochs": 10},
}
MNIST_TRAIN = 8000  # the training split is not shipped: train on the first 8,000 test images


def reference_split(
    dataset: str, *, root: str | os.PathLike | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (x_train, y_train, x_test, y_test) split every reference model uses.

    digits: scikit-learn's digits with boundgeo's fixed 70/30 split. mnist: the first 8,000
    images of the MNIST test split for training and the last 2,000 for testing, since only the
    test split is at hand.
    """
    from .datasets import load_dataset

    if dataset == "digits":
        x_tr, y_tr = load_dataset("digits", split="train")
        x_te, y_te = load_dataset("digits", split="test")
        return x_tr, y_tr, x_te, y_te
    if dataset == "mnist":
        x, y = load_dataset("mnist", root=root, split="test")
        return x[:MNIST_TRAIN], y[:MNIST_TRAIN], x[MNIST_TRAIN:], y[MNIST_TRAIN:]
    raise BoundgeoError(f"reference models exist for 'digits' and 'mnist', not {dataset!r}")


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
    split = (
        "digits: sklearn load_digits, stratified 70/30 split (seed 0)"
        if dataset == "digits"
        else "mnist: trained on test images [0, 8000), evaluated on [8000, 10000)"
    )
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
    """The digits CNN shipped in ``data/digits_cnn.pt``; trained on the spot if the file is absent.

    The checkpoint is regenerated by ``python analysis/train_reference.py --dataset digits``.
    """
    for folder in (Path.cwd() / "data", PACKAGE_DATA):
        path = folder / DIGITS_CNN
        if path.exists():
            return load_checkpoint(path, device=device)
    if verbose:
        print(f"{DIGITS_CNN} not found; training the digits CNN (a few seconds)")
    trained = train_reference("digits", "cnn")
    trained.model.to(device)
    return trained
