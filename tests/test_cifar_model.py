"""The CIFAR-10 ResNet of the zoo, its augmentation and its reference split (fast: no JPEGs read)."""

import pytest
import torch

import boundgeo as bg
from boundgeo import zoo
from boundgeo.io import datasets


def test_resnet_maps_images_of_any_size_to_logits():
    model = zoo.build_model("resnet", (3, 32, 32), 10).eval()
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert zoo.build_model("resnet", (1, 28, 28), 7).eval()(torch.rand(3, 1, 28, 28)).shape == (3, 7)
    assert zoo.build_model("resnet", (3, 5, 9), 4).eval()(torch.rand(1, 3, 5, 9)).shape == (1, 4)
    assert 70_000 < sum(p.numel() for p in model.parameters()) < 90_000  # ResNet-8, 16-32-64
    assert sum(isinstance(m, zoo.BasicBlock) for m in model.modules()) == 3
    with pytest.raises(bg.BoundgeoError, match=r"resnet needs inputs \(C, H, W\)"):
        zoo.build_model("resnet", (3072,), 10)


def test_channels_last_layout_changes_no_value_and_no_gradient_layout():
    torch.manual_seed(0)
    model = zoo.build_model("resnet", (3, 16, 16), 10).eval()
    plain = torch.nn.Sequential(*list(model)[1:]).to(memory_format=torch.contiguous_format)
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    grad, = torch.autograd.grad(model(x)[:, 3].sum(), x)
    expected, = torch.autograd.grad(plain(x)[:, 3].sum(), x)
    torch.testing.assert_close(model(x), plain(x))
    torch.testing.assert_close(grad, expected)
    assert grad.is_contiguous()  # so that callers may .view() it
    rows, = torch.autograd.grad(model(x), x, torch.eye(10)[:2, None].expand(2, 4, 10), is_grads_batched=True)
    assert rows.shape == (2, 4, 3, 16, 16) and rows.is_contiguous()
    batched = torch.func.vmap(model)(x.detach().view(2, 2, 3, 16, 16))
    torch.testing.assert_close(batched.view(4, 10), model(x))


def test_resnet_is_not_among_the_digits_and_mnist_references():
    # scripts loop over ARCHITECTURES with digits/MNIST recipes; the resnet has none there
    assert "resnet" not in zoo.ARCHITECTURES and "resnet" in zoo.CIFAR_ARCHITECTURES
    with pytest.raises(bg.BoundgeoError, match="no recipe"):
        zoo.train_reference("mnist", "resnet")


def test_crop_flip_is_seeded_and_moves_pixels_only():
    x = torch.rand(16, 3, 8, 8)
    a = zoo.crop_flip(x, torch.Generator().manual_seed(1))
    b = zoo.crop_flip(x, torch.Generator().manual_seed(1))
    c = zoo.crop_flip(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    # each output is a window of the zero-padded input at an offset in [0, 2·padding], perhaps mirrored
    padded = torch.nn.functional.pad(x, (4,) * 4)
    for out, src in zip(a, padded):
        windows = [src[:, i : i + 8, j : j + 8] for i in range(9) for j in range(9)]
        assert any(torch.equal(out, w) or torch.equal(out, w.flip(2)) for w in windows)
    # without padding, each image is either itself or its mirror image, and both occur
    flipped = zoo.crop_flip(x, torch.Generator().manual_seed(0), padding=0)
    same = [torch.equal(f, s) for f, s in zip(flipped, x)]
    mirrored = [torch.equal(f, s.flip(2)) for f, s in zip(flipped, x)]
    assert all(p or q for p, q in zip(same, mirrored)) and any(same) and any(mirrored)


def _tiny_cifar(n=32):
    generator = torch.Generator().manual_seed(0)  # 16x16 keeps three trainings to a few seconds
    return torch.rand(n, 3, 16, 16, generator=generator), torch.arange(n) % 10


@pytest.fixture
def one_thread():
    # determinism holds at any fixed thread count; one thread keeps this fast on a busy shared CPU
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_resnet_training_is_deterministic_under_a_seed(one_thread):
    x, y = _tiny_cifar()
    settings = dict(epochs=1, batch_size=16, lr=0.05, optimizer="sgd", schedule="onecycle", augment=True)
    a = zoo.train("resnet", x, y, seed=3, **settings)
    b = zoo.train("resnet", x, y, seed=3, **settings)
    c = zoo.train("resnet", x, y, seed=4, **settings)
    for (name, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), name  # weights and BatchNorm running statistics
    assert not torch.equal(a.model[1].weight, c.model[1].weight)
    assert a.arch == "resnet" and a.input_shape == (3, 16, 16) and not a.model.training


def test_training_settings_are_checked():
    x, y = _tiny_cifar(8)
    with pytest.raises(bg.BoundgeoError, match="optimizer"):
        zoo.train("resnet", x, y, epochs=1, optimizer="adamw")
    with pytest.raises(bg.BoundgeoError, match="schedule"):
        zoo.train("resnet", x, y, epochs=1, schedule="cosine")


def test_cifar10_reference_split_takes_the_first_of_each_class(monkeypatch):
    # 3 classes interleaved as a loader may return them; the first k of each class train
    y = torch.tensor([0, 1, 2, 0, 0, 1, 2, 2, 1, 0, 2, 1])
    x = torch.arange(len(y), dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 2, 2)
    monkeypatch.setattr(datasets, "load_dataset", lambda name, root=None, split="test": (x, y))
    monkeypatch.setattr(zoo, "CIFAR10_TRAIN_PER_CLASS", 2)
    x_tr, y_tr, x_te, y_te = zoo.reference_split("cifar10")
    assert x_tr[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 5, 6]  # in the loader's order
    assert x_te[:, 0, 0, 0].tolist() == [4, 7, 8, 9, 10, 11]
    assert y_tr.bincount().tolist() == [2, 2, 2] and y_te.bincount().tolist() == [2, 2, 2]

