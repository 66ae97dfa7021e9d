import gzip
import pickle

import numpy as np
import pytest
import torch

import boundgeo as bg
from boundgeo._data import as_source, as_tensors

from .conftest import MNIST_DIR, requires_mnist


def _check(x, y, shape):
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert tuple(x.shape[1:]) == shape and x.shape[0] == y.shape[0]
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_digits_shapes_and_fixed_split():
    x_tr, y_tr = bg.load_dataset("digits", split="train")
    x_te, y_te = bg.load_dataset("digits", split="test")
    x_all, _ = bg.load_dataset("digits", split="all")
    for x, y in ((x_tr, y_tr), (x_te, y_te)):
        _check(x, y, (1, 8, 8))
    assert len(x_tr) + len(x_te) == len(x_all) == 1797
    assert len(x_te) == 540 and float(x_all.max()) == 1.0
    again, _ = bg.load_dataset("digits", split="test")
    assert torch.equal(again, x_te)
    assert sorted(torch.bincount(y_te).tolist())[0] >= 50  # stratified: every class present


@requires_mnist
def test_mnist_test_split():
    x, y = bg.load_dataset("mnist", root=MNIST_DIR)
    _check(x, y, (1, 28, 28))
    assert torch.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _write_idx(path, array, code=0x08):
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape
    )
    data = header + array.astype(">u1").tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def test_mnist_reads_raw_and_gz_idx(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 28, 28))
    labels = np.arange(6) % 10
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    x, y = bg.load_dataset("mnist", root=tmp_path)
    _check(x, y, (1, 28, 28))
    np.testing.assert_allclose(x[:, 0].numpy() * 255, images, atol=1e-4)
    assert y.tolist() == labels.tolist()


def test_missing_files_name_what_was_expected(tmp_path):
    with pytest.raises(bg.BoundgeoError, match=r"t10k-images-idx3-ubyte\.gz.*" + tmp_path.name):
        bg.load_dataset("mnist", root=tmp_path)
    with pytest.raises(bg.BoundgeoError, match="test_batch"):
        bg.load_dataset("cifar10", root=tmp_path)
    with pytest.raises(bg.BoundgeoError, match="unknown dataset"):
        bg.load_dataset("imagenet")
    with pytest.raises(bg.BoundgeoError, match="split"):
        bg.load_dataset("digits", split="val")


def test_bad_idx_is_refused(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"not an idx file")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big"))
    with pytest.raises(bg.BoundgeoError, match="IDX"):
        bg.load_dataset("mnist", root=tmp_path)


def _cifar_batch(path, n, seed):
    rng = np.random.default_rng(seed)
    batch = {
        b"batch_label": b"testing batch",
        b"labels": rng.integers(0, 10, size=n).tolist(),
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [b"x.png"] * n,
    }
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=2)
    return batch


def test_cifar10_reads_python_batches(tmp_path):
    batch = _cifar_batch(tmp_path / "test_batch", 7, 0)
    x, y = bg.load_dataset("cifar10", root=tmp_path)
    _check(x, y, (3, 32, 32))
    assert y.tolist() == batch[b"labels"]
    np.testing.assert_allclose(x.reshape(7, -1).numpy() * 255, batch[b"data"], atol=1e-4)
    for i in range(1, 6):
        _cifar_batch(tmp_path / f"data_batch_{i}", 3, i)
    x_tr, _ = bg.load_dataset("cifar10", root=tmp_path, split="train")
    assert x_tr.shape == (15, 3, 32, 32)


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_cifar10_refuses_anything_but_a_dict_of_arrays(tmp_path):
    with open(tmp_path / "test_batch", "wb") as handle:
        pickle.dump({b"data": _Exploit(), b"labels": [0]}, handle, protocol=2)
    with pytest.raises(bg.BoundgeoError, match="refusing to unpickle"):
        bg.load_dataset("cifar10", root=tmp_path)
    with open(tmp_path / "test_batch", "wb") as handle:
        pickle.dump([1, 2, 3], handle, protocol=2)
    with pytest.raises(bg.BoundgeoError, match="not a dict"):
        bg.load_dataset("cifar10", root=tmp_path)


def test_every_data_form_is_accepted():
    x = torch.rand(10, 1, 4, 4)
    y = torch.arange(10) % 3
    dataset = torch.utils.data.TensorDataset(x, y)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, shuffle=True)
    for data in (x, x.numpy(), (x, y), (x.numpy(), y.numpy()), dataset, loader):
        xs, ys = as_tensors(data)
        torch.testing.assert_close(xs, x)
        if ys is not None:
            assert torch.equal(ys, y)
    src = as_source((x, y))
    xi, yi = src.get(torch.tensor([3, 1]))
    assert torch.equal(xi, x[[3, 1]]) and yi.tolist() == [0, 1]
    with pytest.raises(bg.BoundgeoError, match="labels of shape"):
        as_source((x, y[:4]))
    with pytest.raises(bg.BoundgeoError, match="must be a tensor"):
        as_source("digits")
