import gzip
import pickle

import numpy as np
import pytest
import torch

import boundgeo as bg
from boundgeo.io._sources import as_source, as_tensors
from boundgeo.io.datasets import IDX_TYPES

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
    data = header + array.astype(IDX_TYPES[code]).tobytes()
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


def _mnist_files(root, images, labels, image_code=0x08, label_code=0x08):
    _write_idx(root / "t10k-images-idx3-ubyte.gz", images, image_code)
    _write_idx(root / "t10k-labels-idx1-ubyte.gz", labels, label_code)


def test_mnist_images_must_be_bytes_and_labels_integers_0_to_9(tmp_path):
    good_images, good_labels = np.zeros((3, 28, 28)), np.array([0, 9, 4])
    floats = good_images.copy()
    floats[0, 0, 0], floats[1, 0, 0] = np.nan, 300.0  # both came through as pixel values
    _mnist_files(tmp_path, floats, good_labels, image_code=0x0D)
    with pytest.raises(bg.BoundgeoError, match=r"t10k-images.*unsigned bytes .*got >f4"):
        bg.load_dataset("mnist", root=tmp_path)
    _mnist_files(tmp_path, good_images, np.array([0.0, 9.7, 4.2]), label_code=0x0D)
    with pytest.raises(bg.BoundgeoError, match=r"t10k-labels.*labels must be integers"):
        bg.load_dataset("mnist", root=tmp_path)
    _mnist_files(tmp_path, good_images, np.array([0, 12, 4]))
    with pytest.raises(bg.BoundgeoError, match=r"t10k-labels.*0\.\.9, found 0\.\.12"):
        bg.load_dataset("mnist", root=tmp_path)
    _mnist_files(tmp_path, good_images, good_labels, label_code=0x0C)  # int32 labels are fine
    assert bg.load_dataset("mnist", root=tmp_path)[1].tolist() == [0, 9, 4]


def test_corrupt_gzip_and_idx_headers_name_the_file(tmp_path):
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    _write_idx(labels, np.arange(3))
    images = tmp_path / "t10k-images-idx3-ubyte.gz"
    whole = gzip.compress(bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (2, 4, 4)) + bytes(32))
    cases = {
        "truncated gzip": (whole[:-12], "corrupt or truncated gzip"),
        "corrupt gzip": (whole[:10] + b"\x00garbage" * 4, "corrupt or truncated gzip"),
        # 2**31 cubed wraps to 0 in numpy's int64: the empty data then "matched" the header
        "overflowing dims": (gzip.compress(bytes([0, 0, 8, 3]) + (2**31).to_bytes(4, "big") * 3),
                             r"header says \(2147483648, 2147483648, 2147483648\)"),
        "header cut short": (gzip.compress(bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big")), "cut short"),
        "ragged float data": (gzip.compress(bytes([0, 0, 0x0D, 1]) + (2).to_bytes(4, "big") + bytes(7)),
                              "holds 7 bytes"),
    }
    for name, (content, message) in cases.items():
        images.write_bytes(content)
        with pytest.raises(bg.BoundgeoError, match=rf"t10k-images-idx3-ubyte\.gz.*{message}|{message}.*t10k-images"):
            bg.load_dataset("mnist", root=tmp_path)


def test_cifar10_batch_labels_must_be_0_to_9(tmp_path):
    batch = _cifar_batch(tmp_path / "test_batch", 3, 0)
    batch[b"labels"] = [0, 10, 3]
    with open(tmp_path / "test_batch", "wb") as handle:
        pickle.dump(batch, handle, protocol=2)
    with pytest.raises(bg.BoundgeoError, match=r"test_batch: labels must be in 0\.\.9, found 0\.\.10"):
        bg.load_dataset("cifar10", root=tmp_path)


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
    x_all, y_all = bg.load_dataset("cifar10", root=tmp_path, split="all")
    assert torch.equal(x_all[:15], x_tr) and y_all[15:].tolist() == batch[b"labels"]


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
