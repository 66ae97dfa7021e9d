"""A non-editable install (issue 13, item 8): built as a wheel, installed into a folder of its own
and run from a folder that holds a decoy ``data/digits_cnn.pt`` and a decoy ``boundgeo/``
package, it gives the same demo numbers as the editable install.

The wheel is built offline (``pip wheel --no-build-isolation --no-index``) from a copy of the
tracked files, so that nothing is written into the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from boundgeo import zoo

ROOT = Path(__file__).resolve().parent.parent

# what the demo reports first: the shipped model, its held-out accuracy and DeepFool margins
SCRIPT = """
import hashlib, json, torch
torch.set_num_threads(1)
import boundgeo as bg

trained = bg.zoo.pretrained_digits_cnn()
digest = hashlib.sha256()
for name, value in sorted(trained.model.state_dict().items()):
    digest.update(name.encode() + value.detach().cpu().contiguous().numpy().tobytes())
x, y = bg.load_dataset("digits", split="test")
clf = bg.Classifier(trained.model)
points = bg.deepfool(clf, x[:50])
print(json.dumps({
    "module": bg.__file__,
    "weights": digest.hexdigest(),
    "accuracy": float((clf.predict(x) == y).double().mean()),
    "median_margin": float(points.margin.median()),
    "margins": points.margin.tolist(),
}))
"""


def _pip(*args: str, cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def _demo_numbers(cwd: Path, script: Path, pythonpath: str | None) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _decoy_folder(folder: Path) -> None:
    """A working directory that would fool a package reading from it: another digits CNN in
    data/digits_cnn.pt, and a boundgeo/ that fails when imported."""
    shipped = zoo.pretrained_digits_cnn()
    with torch.no_grad():
        for parameter in shipped.model.parameters():
            parameter.mul_(-1.0)  # a valid checkpoint of the same architecture that classifies badly
    (folder / "data").mkdir(parents=True)
    shipped.save(folder / "data" / zoo.DIGITS_CNN)
    (folder / "boundgeo").mkdir()
    (folder / "boundgeo" / "__init__.py").write_text("raise ImportError('the decoy boundgeo/ was imported')\n")


def test_a_wheel_installed_elsewhere_gives_the_editable_installs_demo_numbers(tmp_path):
    source, site, decoy, scripts = (tmp_path / name for name in ("source", "site", "decoy", "scripts"))
    for name in ["pyproject.toml", "README.md"]:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "boundgeo", source / "boundgeo", ignore=shutil.ignore_patterns("__pycache__"))
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(tmp_path / "wheel"),
         str(source), cwd=tmp_path)
    wheels = list((tmp_path / "wheel").glob("boundgeo-*.whl"))
    assert len(wheels) == 1, wheels
    _pip("install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheels[0]), cwd=tmp_path)
    assert (site / "boundgeo" / "weights" / zoo.DIGITS_CNN).is_file()  # the checkpoint is package data

    _decoy_folder(decoy)
    scripts.mkdir()
    (scripts / "demo_numbers.py").write_text(SCRIPT)
    installed = _demo_numbers(decoy, scripts / "demo_numbers.py", str(site))
    editable = _demo_numbers(decoy, scripts / "demo_numbers.py", None)

    assert Path(installed["module"]).is_relative_to(site), installed["module"]
    assert Path(editable["module"]).is_relative_to(ROOT), editable["module"]
    assert installed["weights"] == editable["weights"]
    assert installed["accuracy"] == editable["accuracy"] >= 0.95  # the decoy would score far less
    assert installed["margins"] == editable["margins"]
    assert installed["median_margin"] == editable["median_margin"] > 0
