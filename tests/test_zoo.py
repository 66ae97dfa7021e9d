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


def test_the_same_model_whatever_the_thread_count_of_the_process():
    """The weights depend on torch's thread count (its sums split differently), so training fixes
    it: a process at one thread and one at two train the same model, and keep their own count."""
    x, y = bg.load_dataset("digits", split="train")
    before = torch.get_num_threads()
    models = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            models[threads] = zoo.train("cnn", x, y, epochs=3, seed=0)
            models[threads, None] = zoo.train("cnn", x, y, epochs=3, seed=0, threads=None)
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)

    def same(a, b):
        return all(torch.equal(u, v) for u, v in zip(a.model.state_dict().values(), b.model.state_dict().values()))

    assert same(models[1], models[2])
    assert not same(models[1, None], models[2, None])  # what the fixed count prevents
    with pytest.raises(bg.BoundgeoError, match="threads"):
        zoo.train("affine", x[:10], y[:10], epochs=1, threads=0)


def test_global_rng_is_left_alone():
    x, y = bg.load_dataset("digits", split="train")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    zoo.train("affine", x[:50], y[:50], epochs=1, seed=0)
    assert torch.equal(torch.rand(3), expected)


SHIPPED = ROOT / "boundgeo" / zoo.WEIGHTS / zoo.DIGITS_CNN


def test_committed_digits_checkpoint_scores_97_percent():
    path = SHIPPED
    assert path.exists(), "boundgeo/weights/digits_cnn.pt is committed; regenerate with analysis/train_reference.py"
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
    with pytest.raises(bg.BoundgeoError, match=r"bad.pt holds code .* was not loaded"):
        zoo.load_checkpoint(tmp_path / "bad.pt")


def test_build_model_shapes_and_errors():
    for arch in zoo.ARCHITECTURES:
        model = zoo.build_model(arch, (1, 28, 28), 10)
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(bg.BoundgeoError, match="unknown architecture"):
        zoo.build_model("resnet50")
    with pytest.raises(bg.BoundgeoError, match="train needs"):
        zoo.train("mlp", torch.rand(4, 8), torch.zeros(4, dtype=torch.long))


def test_shipped_checkpoint_is_not_replaced_by_one_in_the_working_directory(tmp_path, monkeypatch):
    """A data/digits_cnn.pt in the current folder was loaded instead of the shipped model."""
    shipped = zoo.load_checkpoint(SHIPPED)
    decoy = zoo.train("cnn", *bg.load_dataset("digits", split="train"), epochs=1, seed=5)
    decoy.save(tmp_path / "data" / zoo.DIGITS_CNN)
    monkeypatch.chdir(tmp_path)
    loaded = zoo.pretrained_digits_cnn()
    for (name, value), expected in zip(loaded.model.state_dict().items(), shipped.model.state_dict().values()):
        assert torch.equal(value, expected), name
    assert not torch.equal(loaded.model[0].weight, decoy.model[0].weight)


def test_a_missing_shipped_checkpoint_is_trained_with_a_warning(monkeypatch):
    monkeypatch.setattr(zoo, "WEIGHTS", "no-such-folder")
    with pytest.warns(UserWarning, match="missing from the installed boundgeo package"):
        trained = zoo.pretrained_digits_cnn()
    assert trained.arch == "cnn" and trained.accuracy >= 0.95


def _checkpoint(tmp_path, name, **changes):
    ckpt = {"arch": "mlp", "input_shape": [1, 8, 8], "num_classes": 10,
            "state_dict": zoo.build_model("mlp").state_dict()}
    ckpt.update(changes)
    torch.save(ckpt, tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize(
    "changes, match",
    [
        # num_classes=1e9 made build_model try to allocate 256 GB before the weights were compared
        (dict(num_classes=1e9), r"num_classes must be between 2 and 100000, got 1000000000.0"),
        (dict(num_classes=12), r"'5.weight' is \(10, 128\) in the file, \(12, 128\) in the model"),
        (dict(input_shape=[1, 28, 28]), r"'1.weight' is \(256, 64\) in the file, \(256, 784\)"),
        (dict(input_shape=[1, -8, 8]), r"input_shape\[1\] must be >= 1"),
        (dict(input_shape="abc"), "input_shape"),
        (dict(arch="resnet50"), "unknown architecture 'resnet50'"),
        (dict(arch=3), "arch must be a string"),
        (dict(state_dict={"1.weight": "x"}), "state_dict must map names to tensors"),
        (dict(state_dict={}), r"'1.bias' is missing in the file"),
    ],
)
def test_checkpoint_metadata_is_checked_before_building(tmp_path, changes, match):
    with pytest.raises(bg.BoundgeoError, match=match):
        zoo.load_checkpoint(_checkpoint(tmp_path, "m.pt", **changes))


def test_unreadable_checkpoints_raise(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(bg.BoundgeoError, match="junk.pt is not a readable torch checkpoint"):
        zoo.load_checkpoint(tmp_path / "junk.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(bg.BoundgeoError, match="holds a list, not a dict"):
        zoo.load_checkpoint(tmp_path / "list.pt")
    with pytest.raises(bg.BoundgeoError, match="does not exist"):
        zoo.load_checkpoint(tmp_path)
    with pytest.raises(bg.BoundgeoError, match="device 'bogus'"):
        zoo.load_checkpoint(SHIPPED, device="bogus")


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(epochs=2.5), "epochs must be a whole number"), (dict(batch_size=0), "batch_size must be >= 1"),
     (dict(lr=float("nan")), "lr must be a finite"), (dict(lr=0.0), r"lr must be in \(0"),
     (dict(weight_decay=-1.0), "weight_decay"), (dict(seed=-1), "seed must be between")],
)
def test_bad_training_settings_raise(kwargs, match):
    with pytest.raises(bg.BoundgeoError, match=match):
        zoo.train("affine", torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]), **kwargs)


def test_accuracy_checks_its_batch_size():
    with pytest.raises(bg.BoundgeoError, match="batch_size must be >= 1, got 0"):  # a RuntimeError from split before
        zoo.accuracy(zoo.build_model("affine"), torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), batch_size=0)


def test_build_model_checks_its_shape_and_classes():
    with pytest.raises(bg.BoundgeoError, match="num_classes must be between 2 and 100000"):
        zoo.build_model("affine", (1, 8, 8), 10**9)
    with pytest.raises(bg.BoundgeoError, match="num_classes must be a whole number"):
        zoo.build_model("affine", (1, 8, 8), 2.5)
    with pytest.raises(bg.BoundgeoError, match=r"input_shape\[0\] must be a whole number"):
        zoo.build_model("mlp", (1.5, 8, 8))
