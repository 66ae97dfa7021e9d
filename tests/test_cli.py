import subprocess
import sys

from boundgeo.cli import main


def test_help_lists_commands(capsys):
    assert main([]) == 0
    assert "demo" in capsys.readouterr().out


def test_module_entry_point():
    done = subprocess.run([sys.executable, "-m", "boundgeo", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "demo" in done.stdout


def test_demo_runs_end_to_end(tmp_path, capsys):
    import boundgeo as bg

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "held-out accuracy 0.9796" in printed and "subspace" in printed
    for name in ("spectrum.png", "spectrum.pdf", "subspace_fooling.png", "margins.png",
                 "principal_directions.png", "spectrum.json", "subspace_fooling.npz"):
        assert (out / name).stat().st_size > 0, name
    spec = bg.Spectrum.load(out / "spectrum")
    pts = bg.BoundaryPoints.load(out / "normals")
    assert spec.n == int(pts.converged.sum()) and spec.d == 64
    assert f"{spec.dim(0.9)} of 64 dimensions" in printed


def test_errors_are_reported_not_raised(capsys):
    assert main(["demo", "--dataset", "mnist", "--data-dir", "/nonexistent"]) == 2
    assert "t10k-images-idx3-ubyte" in capsys.readouterr().err
