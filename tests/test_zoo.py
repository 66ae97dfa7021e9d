import pytest
import torch

import boundgeo as bg
from boundgeo import zoo

from .conftest import ROOT


def test_training_is_deterministic_under_a_seed():
    x, y = bg.load_dataset("digits", split="train")
    x, y = x[:300], y[:300]
    a = zoo.train("cnn", x, y, epochs=2, seed=3)
    b = zoo.train("cnn", x, y, epochs=2, seed=3)
    c = zoo.train("cnn", x, y, epochs=2, seed=4)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.model[0].weight, c.model[0].weight)


def test_global_rng_is_left_alone():
    x, y = bg.load_dataset("digits", split="train")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    zoo.train("affine", x[:50], y[:50], epochs=1, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_committed_digits_checkpoint_scores_97_percent():
    path = ROOT / "data" / zoo.DIGITS_CNN
    assert path.exists(), "data/digits_cnn.pt is committed; regenerate with analysis/train_reference.py"
    trained = zoo.load_checkpoint(path)
    assert path.stat().st_size < 100_000
    x, y = bg.load_dataset("digits", split="test")
    assert zoo.accuracy(trained.model, x, y) >= 0.97
    assert trained.arch == "cnn" and trained.input_shape == (1, 8, 8)


def test_checkpoint_round_trip(tmp_path):
    x, y = bg.load_dataset("digits", split="train")
    trained = zoo.train("mlp", x[:100], y[:100], x_val=x[100:200], y_val=y[100:200], epochs=1)
    path = trained.save(tmp_path / "m.pt")
    loaded = zoo.load_checkpoint(path)
    assert loaded.accuracy == trained.accuracy and loaded.arch == "mlp"
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x[:5]), trained.model(x[:5]))
    # weights_only=True refuses a checkpoint that carries code
    torch.save({"arch": "mlp", "model": torch.nn.Linear(2, 2)}, tmp_path / "bad.pt")
    with pytest.raises(Exception, match="[Ww]eights only"):
        zoo.load_checkpoint(tmp_path / "bad.pt")


def test_build_model_shapes_and_errors():
    for arch in zoo.ARCHITECTURES:
        model = zoo.build_model(arch, (1, 28, 28), 10)
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(bg.BoundgeoError, match="unknown architecture"):
        zoo.build_model("resnet")
    with pytest.raises(bg.BoundgeoError, match="train needs"):
        zoo.train("mlp", torch.rand(4, 8), torch.zeros(4, dtype=torch.long))
