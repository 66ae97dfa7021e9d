"""Tiny deterministic models and data shared by the tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import boundgeo as bg

ROOT = Path(__file__).resolve().parent.parent
MNIST_DIR = ROOT / "data" / "mnist"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "peers: needs the peer libraries of the `peers` extra (foolbox, ART); skips without them. "
        ".ci/run runs the suite as the README installs it, then these tests again with the extra.")


def mnist_available() -> bool:
    return (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists() or (
        MNIST_DIR / "t10k-images-idx3-ubyte"
    ).exists()


requires_mnist = pytest.mark.skipif(
    not mnist_available(),
    reason=f"MNIST files not found in {MNIST_DIR} (link ../shared/data/mnist there; .ci/run does)",
)


class Affine(nn.Module):
    """f(x) = W flatten(x) + b with known W, b: DeepFool's closed-form case."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            self.linear.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


@pytest.fixture
def affine_model() -> Affine:
    gen = torch.Generator().manual_seed(0)
    d, c = 16, 5
    return Affine(torch.randn(c, d, generator=gen, dtype=torch.float64).float(),
                  0.1 * torch.randn(c, generator=gen))


@pytest.fixture(scope="session")
def digits_cnn():
    """The committed digits CNN checkpoint (trained if absent) and the digits test split."""
    trained = bg.zoo.pretrained_digits_cnn()
    x, y = bg.load_dataset("digits", split="test")
    return trained, x, y


@pytest.fixture(scope="session")
def small_net():
    """A small MLP trained for a few epochs on digits: fast, nonlinear, deterministic."""
    x, y = bg.load_dataset("digits", split="train")
    trained = bg.zoo.train("mlp", x, y, epochs=5, seed=1)
    x_te, y_te = bg.load_dataset("digits", split="test")
    return trained.model, x_te, y_te


@pytest.fixture
def forward_sizes(monkeypatch) -> list[int]:
    """The number of inputs of every ``Classifier.forward`` call made after this fixture starts."""
    seen: list[int] = []
    forward = bg.Classifier.forward

    def counting(self, inputs):
        seen.append(len(inputs))
        return forward(self, inputs)

    monkeypatch.setattr(bg.Classifier, "forward", counting)
    return seen
