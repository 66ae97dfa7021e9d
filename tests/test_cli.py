import subprocess
import sys

import pytest

from boundgeo.cli import main


def test_help_lists_commands(capsys):
    assert main([]) == 0
    assert "demo" in capsys.readouterr().out


def test_module_entry_point():
    done = subprocess.run([sys.executable, "-m", "boundgeo", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "demo" in done.stdout


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    assert main(["demo", "--out", str(out)]) == 0
    return out


def test_demo_runs_end_to_end(demo_dir):
    import boundgeo as bg

    for name in ("spectrum.png", "spectrum.pdf", "subspace_fooling.png", "margins.png", "universal.png",
                 "profile.png", "principal_directions.png", "spectrum.json", "subspace_fooling.npz",
                 "universal.json", "profile.npz", "examples.png", "curvature.png", "section_curvature.png",
                 "curvature.npz", "report.md", "report.html"):
        assert (demo_dir / name).stat().st_size > 0, name
    spec = bg.Spectrum.load(demo_dir / "spectrum")
    pts = bg.BoundaryPoints.load(demo_dir / "normals")
    assert spec.n == int(pts.converged.sum()) and spec.d == 64
    report = (demo_dir / "report.md").read_text()
    # the report states the saved numbers
    assert f"in {spec.dim(0.9)} dimensions" in report
    uap = bg.UniversalPerturbation.load(demo_dir / "universal")
    assert f"{uap.fooling_rate:.1%}" in report
    prof = bg.RobustnessProfile.load(demo_dir / "profile")
    assert f"ε₂ = {prof.eps2:.4g}" in report and "not proofs" in report
    curv = bg.Curvature.load(demo_dir / "curvature")
    assert int(curv.valid.sum()) == min(200, spec.n) and curv.along_names[0].startswith("top-10")
    assert f"At {int(curv.valid.sum())} boundary points" in report
    assert "data:image/png;base64," in (demo_dir / "report.html").read_text()
    # the geometry stage: margins in four DCT bands, per-class spectra, the adversarial dimension
    # and steps along curved directions, each saved, drawn and stated in the report
    margins = bg.SubspaceMargins.load(demo_dir / "subspace_margins")
    assert margins.subspaces == ("0-2", "2-4", "4-6", "6-8") and margins.margin.shape == (200, 4)
    medians = margins.median()
    assert f"0-2 (k = 4): {medians['0-2']:.3g}" in report
    classes = sorted((demo_dir / "class_spectra").glob("label_*.json"))
    assert len(classes) == 10 and "## Spectra per class" in report
    dim = bg.AdversarialDimension.load(demo_dir / "adversarial_dimension")
    assert dim.dimension.shape == (100, 4) and "## Dimension of the adversarial subspace" in report
    curved = bg.CurvatureFooling.load(demo_dir / "curvature_fooling")
    assert int(curved.valid.sum()) == int(curv.valid.sum()) and "## Curved against flat directions" in report
    for name in ("subspace_margins.png", "class_directions.png"):
        assert (demo_dir / name).stat().st_size > 5000, name


def test_report_re_renders_identical_numbers(demo_dir, capsys):
    before = (demo_dir / "report.md").read_text()
    (demo_dir / "spectrum.png").unlink()
    assert main(["report", str(demo_dir)]) == 0
    assert (demo_dir / "report.md").read_text() == before
    assert (demo_dir / "spectrum.png").stat().st_size > 0
    assert "report.md" in capsys.readouterr().out


def test_report_of_an_empty_directory_is_an_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no saved boundgeo results" in capsys.readouterr().err


def test_errors_are_reported_not_raised(capsys):
    assert main(["demo", "--dataset", "mnist", "--data-dir", "/nonexistent"]) == 2
    assert "t10k-images-idx3-ubyte" in capsys.readouterr().err


@pytest.fixture
def user_model(tmp_path, monkeypatch):
    """A user's own model: a factory in an importable module and a state dict on disk."""
    import torch

    import boundgeo as bg

    (tmp_path / "my_nets.py").write_text(
        "from torch import nn\n\n"
        "def make():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    my_nets = importlib.import_module("my_nets")
    model = my_nets.make()
    x, y = bg.load_dataset("digits", split="train")
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        idx = torch.randint(0, len(x), (128,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    return "my_nets:make", str(tmp_path / "weights.pt")


def test_normals_with_box_aware_steps(user_model, tmp_path, capsys):
    import torch

    import boundgeo as bg

    factory, weights = user_model
    common = ["--model", factory, "--weights", weights, "--dataset", "digits", "--n", "40"]
    plain = tmp_path / "plain"
    assert main(["normals", "--out", str(plain), *common]) == 0
    for choice, setting in (("on", True), ("after_first", "after_first")):
        out = tmp_path / choice
        assert main(["normals", "--out", str(out), "--box-step", choice, *common]) == 0
        assert f"box-aware steps: {choice}" in capsys.readouterr().out
        pts = bg.BoundaryPoints.load(out / "normals")
        assert pts.settings["box_step"] == setting
        assert pts.converged.all()
    # the same run as "off" reads back its own settings: --box-step changes what is computed
    assert bg.BoundaryPoints.load(plain / "normals").settings["box_step"] is False
    refined = tmp_path / "refined"
    assert main(["normals", "--out", str(refined), "--box-step", "after_first", "--refine", "2", *common]) == 0
    assert "box-aware steps: after_first, refined 2x" in capsys.readouterr().out
    shorter = bg.BoundaryPoints.load(refined / "normals")
    assert shorter.settings["refine"] == 2 and shorter.converged.all()
    hybrid = bg.BoundaryPoints.load(tmp_path / "after_first" / "normals")  # the same inputs, unrefined
    assert torch.equal(shorter.index, hybrid.index)
    assert (shorter.margin <= hybrid.margin).all() and float(shorter.margin.sum()) < float(hybrid.margin.sum())
    assert main(["normals", "--out", str(tmp_path / "bad"), "--refine", "-1", *common]) != 0
    assert "refine must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["normals", "--out", str(plain), "--box-step", "sideways", *common])
    assert info.value.code == 2 and "invalid choice: 'sideways'" in capsys.readouterr().err


def test_analyze_and_stage_commands_on_a_users_model(user_model, tmp_path, capsys):
    import boundgeo as bg

    factory, weights = user_model
    common = ["--model", factory, "--weights", weights, "--dataset", "digits", "--n", "80"]
    out = tmp_path / "analysis"
    assert main(["analyze", "--out", str(out), *common]) == 0
    assert (out / "report.md").exists() and (out / "profile.json").exists()
    first = bg.Spectrum.load(out / "spectrum")

    stages = tmp_path / "stages"
    assert main(["normals", "--out", str(stages), *common]) == 0
    assert main(["spectrum", "--out", str(stages)]) == 0
    assert main(["curvature", "--out", str(stages), "--points", "20", "-k", "3", *common]) == 0
    assert bg.Curvature.load(stages / "curvature").curvature.shape == (20, 3)
    assert main(["uap", "--out", str(stages), "--xi", "0.5", "--norm", "linf", *common]) == 0
    assert main(["profile", "--out", str(stages), "--epsilons", "0.5", "1", "2", *common]) == 0
    assert main(["report", str(stages)]) == 0
    again = bg.Spectrum.load(stages / "spectrum")
    assert (again.singular_values == first.singular_values).all()  # same model, data and seed
    uap = bg.UniversalPerturbation.load(stages / "universal")
    assert uap.xi == 0.5 and uap.norm == "linf"
    assert bg.RobustnessProfile.load(stages / "profile").epsilons.tolist() == [0.5, 1.0, 2.0]
    text = (stages / "report.md").read_text()
    assert "Universal perturbation" in text and "Robustness categories" in text
    # a targeted perturbation by the margin loss, reported with its share sent to the class
    assert main(["uap", "--out", str(stages), "--xi", "0.5", "--norm", "linf", "--target", "3", "--loss", "margin",
                 *common]) == 0
    assert "to class 3" in capsys.readouterr().out
    targeted = bg.UniversalPerturbation.load(stages / "universal")
    assert targeted.target == 3 and targeted.settings["loss"] == "margin" and 0 <= targeted.eval_target_rate <= 1
    assert main(["report", str(stages)]) == 0
    assert f"It is targeted at class 3: it sends {targeted.target_rate:.1%}" in (stages / "report.md").read_text()
    assert main(["uap", "--out", str(stages), "--xi", "0.5", "--target", "3", "--method", "batched", *common]) == 2
    assert "target= is implemented for method='sgd' and 'singular'" in capsys.readouterr().err


def test_bad_model_arguments_are_reported(tmp_path, capsys, user_model):
    assert main(["normals", "--out", str(tmp_path), "--model", "no_such_module:make"]) == 2
    assert "cannot import" in capsys.readouterr().err
    assert main(["normals", "--out", str(tmp_path), "--model", "my_nets"]) == 2
    assert "MODULE:FACTORY" in capsys.readouterr().err
    torch_file = tmp_path / "wrong.pt"
    import torch

    torch.save({"weight": torch.zeros(3)}, torch_file)
    assert main(["normals", "--out", str(tmp_path), "--model", "my_nets:make", "--weights", str(torch_file)]) == 2
    err = capsys.readouterr().err
    assert "do not fit" in err and "missing from the file" in err and "unexpected in the file (1): weight" in err


def test_n_limits_the_reference_digits_split_too():
    import argparse

    from boundgeo.cli import _split

    args = argparse.Namespace(dataset="digits", data_dir=None, seed=0, n=30)
    data = _split(args)
    x, y, x_eval, y_eval = data.x, data.y, data.x_eval, data.y_eval
    assert len(x) == len(y) == 30 and len(x_eval) == len(y_eval) == 30
    again = _split(args)
    assert all((a == b).all() for a, b in zip((again.x, again.y, again.x_eval, again.y_eval),
                                               (x, y, x_eval, y_eval)))  # seeded
    full = _split(argparse.Namespace(dataset="digits", data_dir=None, seed=0, n=None))
    assert (len(full.x), len(full.x_eval)) == (1257, 540)
    # the normals come from the training images and the held-out ones from the test images
    train_rows = {tuple(row.flatten().tolist()) for row in full.x}
    assert all(tuple(row.flatten().tolist()) in train_rows for row in x)
    assert not any(tuple(row.flatten().tolist()) in train_rows for row in x_eval)


def test_demo_takes_n_for_a_quick_look(tmp_path):
    import boundgeo as bg

    assert main(["demo", "--n", "40", "--out", str(tmp_path / "quick")]) == 0
    pts = bg.BoundaryPoints.load(tmp_path / "quick" / "normals")
    assert len(pts) + pts.settings["skipped_misclassified"] == 40  # misclassified inputs are skipped
    assert (tmp_path / "quick" / "report.md").exists()


def test_demo_with_fewer_than_ten_inputs_clamps_to_the_directions_that_exist(tmp_path, capsys):
    import boundgeo as bg

    out = tmp_path / "tiny"
    assert main(["demo", "--num-inputs", "3", "--out", str(out)]) == 0  # exited 2 at the subspace stage
    spec = bg.Spectrum.load(out / "spectrum")
    assert bg.SubspaceFooling.load(out / "subspace_fooling").k == len(spec.components) <= 3
    assert bg.Curvature.load(out / "curvature").along_names[0].startswith(f"top-{len(spec.components)}")
    # 3 held-out inputs are too few for the profile (half fit, half evaluate): said, not crashed
    assert not (out / "profile.json").exists()
    assert "profile was skipped" in (out / "report.md").read_text()
    assert "profile was skipped" in capsys.readouterr().out


def test_num_inputs_has_n_as_an_alias():
    from boundgeo.cli import build_parser

    parser = build_parser()
    for command in (["demo"], ["analyze"], ["normals", "--out", "o"], ["curvature", "--out", "o"],
                    ["uap", "--out", "o"], ["profile", "--out", "o"]):
        assert parser.parse_args(command + ["--num-inputs", "7"]).n == 7
        assert parser.parse_args(command + ["--n", "7"]).n == 7


def test_presets_set_mean_and_std_and_explicit_values_win():
    from boundgeo.cli import PRESETS, _normalisation, build_parser

    parse = build_parser().parse_args
    assert _normalisation(parse(["analyze", "--preset", "imagenet"])) == PRESETS["imagenet"]
    assert PRESETS["imagenet"] == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert PRESETS["cifar10"] == ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    assert _normalisation(parse(["analyze", "--preset", "none"])) == (None, None)
    mean, std = _normalisation(parse(["analyze", "--preset", "cifar10", "--mean", "0.5", "0.5", "0.5"]))
    assert mean == (0.5, 0.5, 0.5) and std == PRESETS["cifar10"][1]


# ------------------------------------------------------------------- image folders, real networks
def _image_folder(root, classes, per_class: int, size: int, seed: int = 0):
    """A folder of synthetic colour images, one sub-folder per class, PNG and JPEG mixed: class c
    is a colour gradient of its own hue, with noise."""
    import colorsys

    import torch
    from torchvision.io import write_jpeg, write_png

    gen = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, size)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        colour = torch.tensor(colorsys.hsv_to_rgb(c / len(classes), 0.9, 0.9))[:, None, None]
        for i in range(per_class):
            shade = (ramp[None, :, None] if c % 2 else ramp[None, None, :]) * 0.5 + 0.5
            image = (colour * shade + 0.1 * torch.rand(3, size, size, generator=gen)).clamp(0, 1)
            image = (255 * image).to(torch.uint8)
            if i % 2:
                write_png(image, str(root / name / f"{i}.png"))
            else:
                write_jpeg(image, str(root / name / f"{i}.jpg"), quality=95)
    return root


def _colourful_share(png) -> float:
    """Share of the pixels of a PNG whose channels differ (text and axes are grey, white or black)."""
    import matplotlib.image as mpimg

    image = mpimg.imread(png)[..., :3]
    return float(((image.max(-1) - image.min(-1)) > 0.1).mean())


CIFAR_LIKE = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TINY_NET = """from torch import nn


def make_net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                         nn.Flatten(), nn.Linear(128, 10))
"""


@pytest.fixture(scope="module")
def cifar_like(tmp_path_factory):
    """A 32x32 colour folder of 10 classes, a factory file and weights trained on the folder,
    saved as a DataParallel checkpoint: {"state_dict": {"module.<key>": ...}}."""
    import importlib.util

    import torch

    import boundgeo as bg
    from boundgeo.cli import PRESETS

    root = tmp_path_factory.mktemp("cifar_like")
    folder = _image_folder(root / "images", CIFAR_LIKE, per_class=3, size=32)
    (root / "nets.py").write_text(TINY_NET)
    spec = importlib.util.spec_from_file_location("tiny_nets_for_training", root / "nets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = module.make_net()
    data = bg.ImageFolder(folder)
    x = torch.stack([data[i][0] for i in range(len(data))])
    y = torch.tensor(data.targets)
    mean, std = (torch.tensor(v)[:, None, None] for v in PRESETS["cifar10"])
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model((x - mean) / std), y).backward()
        opt.step()
    assert (model((x - mean) / std).argmax(1) == y).all()
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3},
               root / "ckpt.pt")
    return folder, root / "nets.py", root / "ckpt.pt"


def test_analyze_a_factory_file_on_a_32x32_colour_folder(cifar_like, tmp_path, capsys):
    import json

    import boundgeo as bg

    folder, nets, ckpt = cifar_like
    out = tmp_path / "out"
    assert main(["analyze", "--model", f"{nets}:make_net", "--weights", str(ckpt), "--preset", "cifar10",
                 "--dataset", f"folder:{folder}", "--num-inputs", "8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "held-out accuracy 1.0000" in printed and "are random" not in printed
    run = json.loads((out / "setup.json").read_text())
    assert run["classes"] == list(CIFAR_LIKE) and run["labels_compared"] is True
    assert (run["mean"], run["std"]) == ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])
    assert run["input_shape"] == [3, 32, 32] and run["notes"] == {}
    pts = bg.BoundaryPoints.load(out / "normals")
    assert len(pts) == 8 and pts.true_label is not None
    report = (out / "report.md").read_text()
    assert "Classes: airplane, automobile, bird" in report and "preset cifar10" in report
    for name in ("universal", "examples", "principal_directions"):
        assert _colourful_share(out / f"{name}.png") > 0.05, name
    assert bg.RobustnessProfile.load(out / "profile").n == 4


def test_a_model_with_other_classes_than_the_folder_runs_without_labels(cifar_like, tmp_path, capsys):
    import json

    import boundgeo as bg

    _, nets, ckpt = cifar_like
    two = _image_folder(tmp_path / "two", ("cat", "dog"), per_class=3, size=32, seed=1)
    out = tmp_path / "out"
    assert main(["normals", "--model", f"{nets}:make_net", "--weights", str(ckpt), "--preset", "cifar10",
                 "--dataset", f"folder:{two}", "--n", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "10 classes and the data 2 (cat, dog)" in printed and "held-out accuracy" not in printed
    pts = bg.BoundaryPoints.load(out / "normals")
    assert len(pts) == 3 and pts.settings["skipped_misclassified"] == 0  # none skipped as "misclassified"
    assert sorted(set(pts.true_label.tolist())) <= [0, 1]  # the folder's classes are kept beside
    assert json.loads((out / "setup.json").read_text())["labels_compared"] is False


def test_only_the_chosen_images_are_decoded_and_a_large_folder_needs_num_inputs(cifar_like, tmp_path,
                                                                              monkeypatch, capsys):
    import boundgeo.cli as cli
    from boundgeo.io import ImageFolder

    folder, nets, ckpt = cifar_like
    decoded = []
    original = ImageFolder.__getitem__
    monkeypatch.setattr(ImageFolder, "__getitem__", lambda self, i: decoded.append(i) or original(self, i))
    common = ["normals", "--model", f"{nets}:make_net", "--weights", str(ckpt), "--dataset", f"folder:{folder}",
              "--out", str(tmp_path / "o")]
    assert main(common + ["--num-inputs", "2"]) == 0
    assert len(set(decoded)) == 4 and len(decoded) == 4  # 2 + 2 of the 30 images, each once
    monkeypatch.setattr(cli, "DECODE_LIMIT_BYTES", 20 * 3 * 32 * 32 * 4)  # 20 images
    capsys.readouterr()
    assert main(common) == 2
    err = capsys.readouterr().err
    assert "30 images of 3x32x32" in err and "--num-inputs N (at most 10" in err
    assert main(common + ["--num-inputs", "10"]) == 0


def test_model_file_and_checkpoint_errors_are_one_line(cifar_like, tmp_path, capsys):
    import torch

    folder, nets, _ = cifar_like
    common = ["normals", "--out", str(tmp_path / "o"), "--dataset", f"folder:{folder}", "--n", "2"]
    code = tmp_path / "whole_model.pt"
    torch.save(torch.nn.Linear(2, 2), code)  # a pickled module: code, which weights_only=True refuses
    assert main(common + ["--model", f"{nets}:make_net", "--weights", str(code)]) == 2
    err = capsys.readouterr().err
    assert "holds code" in err and "NOT loaded" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    (tmp_path / "broken.py").write_text("def make():\n    raise RuntimeError('no GPU here')\n")
    assert main(common + ["--model", f"{tmp_path / 'broken.py'}:make"]) == 2
    assert "raised RuntimeError: no GPU here" in capsys.readouterr().err
    assert main(common + ["--model", f"{tmp_path / 'absent.py'}:make"]) == 2
    assert "no file" in capsys.readouterr().err
    assert main(common + ["--model", "torchvision.models:resnet18", "--weights", str(tmp_path / "x.pt")]) == 2
    assert "x.pt" in capsys.readouterr().err


@pytest.mark.slow
def test_analyze_a_random_torchvision_resnet_on_a_224_folder(tmp_path, capsys):
    """The issue's "done when": resnet18 without weights, ImageNet normalisation, a 2-class folder
    of 224x224 images; the report names the classes and says that the weights are random, and
    the pictures of images and perturbations are in colour."""
    folder = _image_folder(tmp_path / "pets", ("cat", "dog"), per_class=3, size=224)
    out = tmp_path / "out"
    assert main(["analyze", "--model", "torchvision.models:resnet18", "--preset", "imagenet",
                 "--dataset", f"folder:{folder}", "--num-inputs", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "weights of torchvision.models:resnet18 are random" in printed
    assert "1000 classes and the data 2 (cat, dog)" in printed
    report = (out / "report.md").read_text()
    assert "are random" in report and "Classes: cat, dog" in report and "cannot be compared" in report
    assert "3x224x224" in report
    for name in ("universal", "examples", "principal_directions"):
        assert _colourful_share(out / f"{name}.png") > 0.05, name


def test_cifar10_reads_either_layout_from_data_dir(cifar_like, tmp_path, capsys):
    import json
    import pickle

    import numpy as np

    import boundgeo as bg

    folder, nets, ckpt = cifar_like
    images = bg.ImageFolder(folder)
    batches = tmp_path / "batches" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    pixels = np.stack([(255 * images[i][0].numpy()).round().astype(np.uint8).reshape(-1) for i in range(len(images))])
    with open(batches / "test_batch", "wb") as handle:
        pickle.dump({b"data": pixels, b"labels": list(images.targets)}, handle)
    split_layout = tmp_path / "splits"
    split_layout.mkdir()
    (split_layout / "test").symlink_to(folder, target_is_directory=True)
    model = ["--model", f"{nets}:make_net", "--weights", str(ckpt), "--preset", "cifar10"]
    for data_dir, says in ((folder, "CIFAR-10 image folder"), (split_layout, f"image folder {split_layout / 'test'}"),
                           (tmp_path / "batches", "CIFAR-10 test batch")):
        out = tmp_path / f"out_{data_dir.name}"
        assert main(["normals", *model, "--dataset", "cifar10", "--data-dir", str(data_dir), "--n", "4",
                     "--out", str(out)]) == 0
        assert says in capsys.readouterr().out
        run = json.loads((out / "setup.json").read_text())
        assert run["classes"] == list(CIFAR_LIKE) and run["labels_compared"] is True
    assert main(["normals", *model, "--dataset", "cifar10", "--data-dir", str(tmp_path / "batches"), "--size", "8",
                 "--out", str(tmp_path / "o")]) == 2
    assert "apply to image folders" in capsys.readouterr().err


def test_skipped_stages_are_said_and_leave_no_earlier_results_behind(cifar_like, tmp_path):
    folder, nets, ckpt = cifar_like
    out = tmp_path / "out"
    out.mkdir()
    for stale in ("profile.json", "profile.npz", "curvature.png", "universal.json", "subspace_fooling.json",
                  "subspace_margins.json", "adversarial_dimension.npz", "curvature_fooling.json"):
        (out / stale).write_text("from an earlier run")
    (out / "class_spectra").mkdir()
    (out / "class_spectra" / "label_0.json").write_text("from an earlier run")
    assert main(["analyze", "--model", f"{nets}:make_net", "--weights", str(ckpt), "--preset", "cifar10",
                 "--dataset", f"folder:{folder}", "--n", "4", "--out", str(out),
                 "--skip", "subspace", "curvature", "geometry", "uap", "profile"]) == 0
    assert not [p.name for p in out.iterdir() if p.name.startswith(("profile", "curvature", "universal", "subspace",
                                                                    "class_", "adversarial"))]
    report = (out / "report.md").read_text()
    assert "Left out with --skip: subspace, curvature, geometry, uap, profile." in report and "## Spectrum" in report


def test_one_process_leaves_the_model_where_its_factory_put_it(monkeypatch):
    # torchrun's ranks move the model to their GPU; one process must not move a model (a factory
    # may have placed it on a GPU of its choice): a module on the meta device stays there
    import torch

    from boundgeo.cli import _on_rank_device

    for name in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(name, raising=False)
    model = torch.nn.Linear(3, 2, device="meta")
    assert _on_rank_device(model) is model and model.weight.device.type == "meta"
