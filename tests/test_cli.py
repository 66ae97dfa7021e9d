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


def test_bad_model_arguments_are_reported(tmp_path, capsys, user_model):
    assert main(["normals", "--out", str(tmp_path), "--model", "no_such_module:make"]) == 2
    assert "cannot import" in capsys.readouterr().err
    assert main(["normals", "--out", str(tmp_path), "--model", "my_nets"]) == 2
    assert "MODULE:FACTORY" in capsys.readouterr().err
    torch_file = tmp_path / "wrong.pt"
    import torch

    torch.save({"weight": torch.zeros(3)}, torch_file)
    assert main(["normals", "--out", str(tmp_path), "--model", "my_nets:make", "--weights", str(torch_file)]) == 2
    assert "does not fit" in capsys.readouterr().err


def test_n_limits_the_reference_digits_split_too():
    import argparse

    from boundgeo.cli import _split

    args = argparse.Namespace(dataset="digits", data_dir=None, seed=0, n=30)
    x, y, x_eval, y_eval = _split(args)
    assert len(x) == len(y) == 30 and len(x_eval) == len(y_eval) == 30
    again = _split(args)
    assert all((a == b).all() for a, b in zip(again, (x, y, x_eval, y_eval)))  # seeded
    full = _split(argparse.Namespace(dataset="digits", data_dir=None, seed=0, n=None))
    assert (len(full[0]), len(full[2])) == (1257, 540)
    # the normals come from the training images and the held-out ones from the test images
    train_rows = {tuple(row.flatten().tolist()) for row in full[0]}
    assert all(tuple(row.flatten().tolist()) in train_rows for row in x)
    assert not any(tuple(row.flatten().tolist()) in train_rows for row in x_eval)


def test_demo_takes_n_for_a_quick_look(tmp_path):
    import boundgeo as bg

    assert main(["demo", "--n", "40", "--out", str(tmp_path / "quick")]) == 0
    pts = bg.BoundaryPoints.load(tmp_path / "quick" / "normals")
    assert len(pts) + pts.settings["skipped_misclassified"] == 40  # misclassified inputs are skipped
    assert (tmp_path / "quick" / "report.md").exists()
