"""Image folders: bg.ImageFolder, load_dataset("folder") and CIFAR-10 as an image folder."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import boundgeo as bg
from boundgeo.io._sources import as_source
from boundgeo.io.datasets import CIFAR10_CLASSES

from .conftest import ROOT

CIFAR_DIR = ROOT / "data" / "cifar10"
requires_cifar = pytest.mark.skipif(
    not (CIFAR_DIR / "airplane").is_dir(),
    reason=f"CIFAR-10 image folder not found in {CIFAR_DIR} (.ci/run links it)",
)


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)
    return array


def _rgb(seed: int, h: int = 6, w: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _folder(tmp_path: Path, classes=("cat", "ant", "bee"), per_class=2, h=6, w=5) -> Path:
    root = tmp_path / "images"
    for c, name in enumerate(classes):
        for i in range(per_class):
            _save(root / name / f"{i}.png", _rgb(10 * c + i, h, w))
    return root


# ------------------------------------------------------------------ layout and items
def test_classes_sorted_items_exact_and_files_found_in_any_case(tmp_path):
    root = _folder(tmp_path)
    _save(root / "bee" / "upper.PNG", _rgb(7))
    _save(root / "bee" / "nested" / "deep.JpEg", _rgb(8))  # sub-folders of a class count
    (root / "bee" / "notes.txt").write_text("not an image")
    (root / "LICENSE").write_text("top-level files are not classes")
    _save(root / ".ipynb_checkpoints" / "0.png", _rgb(9))  # hidden: never a class
    (root / "ant" / "._0.png").write_bytes(b"macOS resource fork, not a PNG")  # hidden: skipped
    data = bg.ImageFolder(root)
    assert data.classes == ["ant", "bee", "cat"]
    assert data.class_to_idx == {"ant": 0, "bee": 1, "cat": 2}
    assert [Path(p).name for p, _ in data.samples] == [
        "0.png", "1.png", "0.png", "1.png", "upper.PNG", "deep.JpEg", "0.png", "1.png"]
    assert [label for _, label in data.samples] == [0, 0, 1, 1, 1, 1, 2, 2]
    assert [Path(p).name for p in data.ignored] == ["notes.txt"]
    image, label = data[0]
    assert image.dtype == torch.float32 and image.shape == (3, 6, 5) and label == 0
    expected = torch.from_numpy(_rgb(10)).permute(2, 0, 1).float() / 255  # ant/0.png, lossless
    torch.testing.assert_close(image, expected)
    jpeg, _ = data[5]
    assert jpeg.shape == (3, 6, 5) and 0.0 <= float(jpeg.min()) and float(jpeg.max()) <= 1.0


def test_gray_paletted_and_rgba_files_give_rgb_or_one_channel(tmp_path):
    root = tmp_path / "images"
    gray = _save(root / "a" / "gray.png", np.full((4, 4), 200, dtype=np.uint8))
    palette = Image.fromarray(np.zeros((4, 4), dtype=np.uint8), mode="P")
    palette.putpalette([10, 20, 30] + [0] * 765)
    palette.save(root / "a" / "palette.png")
    _save(root / "b" / "deep16.png", np.full((4, 4), 1000, dtype=np.uint16))
    _save(root / "b" / "rgba.png", np.full((4, 4, 4), 100, dtype=np.uint8))
    data = bg.ImageFolder(root)
    images = [data[i][0] for i in range(len(data))]
    assert [tuple(im.shape) for im in images] == [(3, 4, 4)] * 4
    assert all(im.dtype == torch.float32 for im in images)
    torch.testing.assert_close(images[0], torch.full((3, 4, 4), 200 / 255))
    torch.testing.assert_close(images[1][:, 0, 0], torch.tensor([10, 20, 30]) / 255)
    torch.testing.assert_close(images[2], torch.full((3, 4, 4), 1000 / 65535))  # not clipped
    torch.testing.assert_close(images[3], torch.full((3, 4, 4), 100 / 255))  # alpha dropped
    gray_data = bg.ImageFolder(root, grayscale=True)
    assert [tuple(gray_data[i][0].shape) for i in range(4)] == [(1, 4, 4)] * 4
    torch.testing.assert_close(gray_data[0][0], torch.from_numpy(gray)[None].float() / 255)
    torch.testing.assert_close(gray_data[2][0], torch.full((1, 4, 4), 1000 / 65535))
    assert bg.ImageFolder(root, size=(2, 2))[2][0].shape == (3, 2, 2)


def test_size_and_crop(tmp_path):
    root = tmp_path / "images"
    _save(root / "a" / "wide.png", _rgb(0, 20, 40))
    _save(root / "b" / "tall.png", _rgb(1, 30, 10))
    shorter = bg.ImageFolder(root, size=10)
    assert shorter[0][0].shape == (3, 10, 20) and shorter[1][0].shape == (3, 30, 10)
    exact = bg.ImageFolder(root, size=(8, 12))
    assert exact[0][0].shape == exact[1][0].shape == (3, 8, 12)
    cropped = bg.ImageFolder(root, size=12, crop=10)
    assert cropped[0][0].shape == cropped[1][0].shape == (3, 10, 10)
    # the centre crop of the unresized image is its middle pixels
    center = bg.ImageFolder(root, crop=(20, 20))[0][0]
    torch.testing.assert_close(center, torch.from_numpy(_rgb(0, 20, 40)[:, 10:30]).permute(2, 0, 1) / 255)
    for image, _ in (shorter[0], exact[1], cropped[0]):
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    with pytest.raises(bg.BoundgeoError, match=r"tall\.png is 30x10.*smaller than crop=20"):
        bg.ImageFolder(root, crop=20)[1]
    for bad in ({"size": 0}, {"size": (3, 4, 5)}, {"crop": 2.5}, {"size": "big"}, {"grayscale": "yes"}):
        with pytest.raises(bg.BoundgeoError, match="size|crop|grayscale"):
            bg.ImageFolder(root, **bad)


def test_picklable_and_works_with_two_dataloader_workers(tmp_path):
    root = _folder(tmp_path, per_class=3)
    data = bg.ImageFolder(root, size=(4, 4))
    again = pickle.loads(pickle.dumps(data))
    assert again.samples == data.samples and torch.equal(again[4][0], data[4][0])
    loader = torch.utils.data.DataLoader(data, batch_size=4, num_workers=2)
    xs, ys = zip(*loader)
    assert torch.equal(torch.cat(xs), torch.stack([data[i][0] for i in range(len(data))]))
    assert torch.cat(ys).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_decoding_is_lazy_and_a_corrupt_file_is_named_when_read(tmp_path):
    root = _folder(tmp_path)
    (root / "bee" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    data = bg.ImageFolder(root)  # nothing decoded yet, so no error
    assert data[0][0].shape == (3, 6, 5)
    broken = [i for i, (p, _) in enumerate(data.samples) if p.endswith("broken.png")][0]
    with pytest.raises(bg.BoundgeoError, match=r"cannot decode image .*broken\.png"):
        data[broken]
    loader = torch.utils.data.DataLoader(data, batch_size=len(data), num_workers=2)
    with pytest.raises(bg.BoundgeoError, match=r"broken\.png"):  # re-raised from the worker
        next(iter(loader))
    with pytest.raises(bg.BoundgeoError, match=r"broken\.png"):
        bg.load_dataset("folder", root=root)


def test_unreadable_file_is_named(tmp_path):
    root = _folder(tmp_path)
    os.symlink(tmp_path / "nowhere.jpg", root / "cat" / "dangling.jpg")
    data = bg.ImageFolder(root)
    with pytest.raises(bg.BoundgeoError, match=r"dangling\.jpg"):
        data[len(data) - 1]


def test_layout_errors_name_the_folder(tmp_path):
    with pytest.raises(bg.BoundgeoError, match="does not exist"):
        bg.ImageFolder(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(bg.BoundgeoError, match="not a directory"):
        bg.ImageFolder(tmp_path / "file.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(bg.BoundgeoError, match=r"empty: found no class folders"):
        bg.ImageFolder(empty)
    flat = tmp_path / "flat"
    _save(flat / "x.png", _rgb(0))
    with pytest.raises(bg.BoundgeoError, match="holds 1 image files directly"):
        bg.ImageFolder(flat)
    one = _folder(tmp_path / "one", classes=("only",))
    with pytest.raises(bg.BoundgeoError, match=r"only one class folder \('only'\)"):
        bg.ImageFolder(one)
    no_images = _folder(tmp_path / "no_images")
    (no_images / "dog").mkdir()
    (no_images / "dog" / "readme.txt").write_text("no images here")
    with pytest.raises(bg.BoundgeoError, match=r"\['dog'\] hold no images"):
        bg.ImageFolder(no_images)
    for root in (tmp_path / "missing", empty, one):
        with pytest.raises(bg.BoundgeoError, match=str(root.name)):
            bg.load_dataset("folder", root=root)


# ------------------------------------------------------------------ load_dataset("folder")
def test_load_folder_stacks_what_imagefolder_gives(tmp_path):
    root = _folder(tmp_path, per_class=3)
    data = bg.ImageFolder(root, grayscale=True)
    x, y = bg.load_dataset("folder", root=root, grayscale=True)
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (9, 1, 6, 5)
    assert torch.equal(x, torch.stack([data[i][0] for i in range(9)]))
    assert y.tolist() == [label for _, label in data.samples]
    x2, y2 = bg.load_dataset("folder", root=str(root), grayscale=True, num_workers=2)
    assert torch.equal(x2, x) and torch.equal(y2, y)


def test_mixed_sizes_name_two_files_unless_size_is_given(tmp_path):
    root = _folder(tmp_path, per_class=2)
    _save(root / "cat" / "big.png", _rgb(0, 12, 7))
    with pytest.raises(bg.BoundgeoError, match=r"ant/0\.png is 6x5 and .*cat/big\.png is 12x7"):
        bg.load_dataset("folder", root=root)
    with pytest.raises(bg.BoundgeoError, match=r"after size=6"):  # shorter side: still ragged
        bg.load_dataset("folder", root=root, size=6)
    x, _ = bg.load_dataset("folder", root=root, size=(6, 5))
    assert x.shape == (7, 3, 6, 5)
    # lazily, the first stacking that meets a ragged pair names both files
    source = as_source(bg.ImageFolder(root))
    with pytest.raises(bg.BoundgeoError, match=r"ant/0\.png\) is 3x6x5 and .*cat/big\.png\) is 3x12x7"):
        source.all()


def test_memory_limit_refuses_before_decoding_and_points_to_imagefolder(tmp_path):
    root = _folder(tmp_path)
    (root / "cat" / "zz_broken.png").write_bytes(b"not an image")  # would fail if decoded
    need = 7 * 3 * 6 * 5 * 4
    with pytest.raises(bg.BoundgeoError, match=r"7 images of shape \(3, 6, 5\).*bg\.ImageFolder"):
        bg.load_dataset("folder", root=root, max_bytes=need - 1)
    with pytest.raises(bg.BoundgeoError, match="zz_broken"):  # within the limit it decodes
        bg.load_dataset("folder", root=root, max_bytes=need)


def test_folder_arguments_are_checked(tmp_path):
    root = _folder(tmp_path)
    with pytest.raises(bg.BoundgeoError, match="needs root="):
        bg.load_dataset("folder")
    with pytest.raises(bg.BoundgeoError, match="one split's class folders"):
        bg.load_dataset("folder", root=root, split="train")
    with pytest.raises(bg.BoundgeoError, match=r"size apply to load_dataset\('folder'"):
        bg.load_dataset("digits", size=8)
    with pytest.raises(bg.BoundgeoError, match="max_bytes"):
        bg.load_dataset("folder", root=root, max_bytes=0)


# ------------------------------------------------------------------ cifar10 as a folder
def _cifar_folder(root: Path, per_class=1, classes=CIFAR10_CLASSES, h=32) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            _save(root / name / f"{i:04d}.png", _rgb(100 * c + i, h, 32))
    return root


def test_cifar10_folder_single_split_is_test(tmp_path):
    root = _cifar_folder(tmp_path / "c", per_class=2)
    x, y = bg.load_dataset("cifar10", root=root)
    assert x.shape == (20, 3, 32, 32) and y.tolist() == [c for c in range(10) for _ in range(2)]
    torch.testing.assert_close(x[2], torch.from_numpy(_rgb(100, 32, 32)).permute(2, 0, 1) / 255)
    for split in ("train", "all"):
        with pytest.raises(bg.BoundgeoError, match=f"single split.*split='{split}' is not there"):
            bg.load_dataset("cifar10", root=root, split=split)


def test_cifar10_folder_with_train_and_test(tmp_path):
    root = tmp_path / "c"
    _cifar_folder(root / "train", per_class=2)
    _cifar_folder(root / "test", per_class=1)
    assert bg.load_dataset("cifar10", root=root, split="train")[0].shape == (20, 3, 32, 32)
    x_te, y_te = bg.load_dataset("cifar10", root=root)
    assert x_te.shape == (10, 3, 32, 32) and y_te.tolist() == list(range(10))
    x_all, y_all = bg.load_dataset("cifar10", root=root, split="all")
    assert x_all.shape == (30, 3, 32, 32) and torch.equal(x_all[20:], x_te)
    only_test = tmp_path / "t"
    _cifar_folder(only_test / "test")
    with pytest.raises(bg.BoundgeoError, match=r"split 'train' needs .*t/train"):
        bg.load_dataset("cifar10", root=only_test, split="train")


def test_cifar10_folder_must_be_cifar(tmp_path):
    wrong = _cifar_folder(tmp_path / "w", classes=CIFAR10_CLASSES[:9] + ("lorry",))
    with pytest.raises(bg.BoundgeoError, match="expected CIFAR-10's"):
        bg.load_dataset("cifar10", root=wrong)
    big = _cifar_folder(tmp_path / "b", h=40)
    with pytest.raises(bg.BoundgeoError, match=r"decodes to shape \(3, 40, 32\), expected \(3, 32, 32\)"):
        bg.load_dataset("cifar10", root=big)


@requires_cifar
def test_real_cifar10_folder_lazily():
    data = bg.ImageFolder(CIFAR_DIR)
    assert tuple(data.classes) == CIFAR10_CLASSES and len(data) == 10_000
    assert np.bincount([label for _, label in data.samples]).tolist() == [1000] * 10
    assert data.ignored == []
    picks = [0, 999, 1000, 9999]
    source = as_source(data)
    x, y = source.get(picks)
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [0, 0, 1, 9]
    assert Path(data.samples[1000][0]).parts[-2:] == ("automobile", "0000.jpg")
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.std()) > 0.05


@requires_cifar
@pytest.mark.slow
def test_real_cifar10_folder_loads_whole():
    x, y = bg.load_dataset("cifar10", root=CIFAR_DIR)
    assert x.shape == (10_000, 3, 32, 32) and x.dtype == torch.float32
    assert torch.bincount(y).tolist() == [1000] * 10 and y.tolist() == sorted(y.tolist())
    data = bg.ImageFolder(CIFAR_DIR)
    assert torch.equal(x[1234], data[1234][0]) and torch.equal(x[-1], data[9999][0])
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert 0.4 < float(x.mean()) < 0.55  # CIFAR-10's mean pixel is about 0.47


def test_nested_folders_are_ordered_as_torchvision_orders_them(tmp_path):
    """torchvision's make_dataset walks sorted(os.walk(...)): folders by their path as a string,
    so cat/a-b comes before cat/a/x ('-' < '/'); a depth-first walk puts cat/a/x first, and the
    indices of a run would point at other images than a torchvision ImageFolder's."""
    from torchvision.datasets import ImageFolder

    for i, rel in enumerate(["cat/a/1.png", "cat/a/x/3.png", "cat/a-b/2.png", "dog/0.png", "dog/.hidden/9.png"]):
        _save(tmp_path / rel, _rgb(i))
    ours = bg.ImageFolder(tmp_path)
    theirs = ImageFolder(str(tmp_path), is_valid_file=lambda path: "/." not in path)
    assert [Path(p).relative_to(tmp_path).as_posix() for p, _ in ours.samples] == [
        "cat/a/1.png", "cat/a-b/2.png", "cat/a/x/3.png", "dog/0.png"]
    assert [(Path(p).relative_to(tmp_path).as_posix(), c) for p, c in ours.samples] == [
        (Path(p).relative_to(tmp_path).as_posix(), c) for p, c in theirs.samples]
