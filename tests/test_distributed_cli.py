"""The command line under torchrun (2 CPU processes) gives one process's results; rank 0 alone prints."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import boundgeo as bg

pytest.importorskip("torch.distributed.run")


def _run(*argv: str, processes: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                 "-m", "boundgeo"] if processes > 1 else [sys.executable, "-m", "boundgeo"])
    done = subprocess.run([*launcher, *argv], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("torchrun")
    printed = {}
    for processes in (1, 2):
        out = folder / f"p{processes}"
        for command in (("normals", "--num-inputs", "60"), ("spectrum",),
                        ("uap", "--num-inputs", "60", "--xi", "1.5", "--method", "sgd"),
                        ("profile", "--num-inputs", "60", "--epsilons", "0.5", "1", "2")):
            done = _run(command[0], "--out", str(out), *command[1:], processes=processes)
            printed[processes, command[0]] = done.stdout
    return folder, printed


def test_normals_spectrum_and_uap_under_torchrun_equal_one_process(outputs):
    folder, _ = outputs
    one, two = bg.BoundaryPoints.load(folder / "p1" / "normals"), bg.BoundaryPoints.load(folder / "p2" / "normals")
    for name in ("perturbation", "normal", "margin", "index", "status"):
        assert torch.equal(getattr(one, name), getattr(two, name)), name
    spec_one, spec_two = bg.Spectrum.load(folder / "p1" / "spectrum"), bg.Spectrum.load(folder / "p2" / "spectrum")
    torch.testing.assert_close(spec_two.singular_values, spec_one.singular_values, rtol=1e-6, atol=0)
    uap_one = bg.UniversalPerturbation.load(folder / "p1" / "universal")
    uap_two = bg.UniversalPerturbation.load(folder / "p2" / "universal")
    assert (uap_one.perturbation - uap_two.perturbation).abs().max() <= 1e-5
    assert uap_two.settings["processes"] == 2
    profile_one = bg.RobustnessProfile.load(folder / "p1" / "profile")
    profile_two = bg.RobustnessProfile.load(folder / "p2" / "profile")
    for name in ("per_image_rate", "universal_rate", "random_rate", "category"):
        assert torch.equal(getattr(profile_one, name), getattr(profile_two, name)), name


def test_rank_zero_alone_prints(outputs):
    _, printed = outputs
    # the summary line of the normals stage appears once, as in one process
    assert printed[2, "normals"].count("[normals]") == printed[1, "normals"].count("[normals]") == 1


def test_the_whole_demo_under_torchrun_writes_one_report(tmp_path):
    done = _run("demo", "--out", str(tmp_path / "demo"), "--num-inputs", "40", processes=2)
    assert (tmp_path / "demo" / "report.md").is_file() and (tmp_path / "demo" / "report.html").is_file()
    assert done.stdout.count("report: ") == 1


def test_analyze_under_torchrun_writes_one_report(tmp_path):
    # analyze is the demo's pipeline on a model of the user's; the embedded model stands in for it
    done = _run("analyze", "--out", str(tmp_path / "analysis"), "--num-inputs", "40", "--skip", "curvature",
                processes=2)
    assert (tmp_path / "analysis" / "report.md").is_file()
    assert done.stdout.count("report: ") == 1
