"""The analysis notebook runs: its code cells are executed in order, headless."""

import json
import os

import matplotlib

from .conftest import ROOT

matplotlib.use("Agg")


def test_spectra_notebook_executes(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    notebook = json.loads((ROOT / "analysis" / "spectra.ipynb").read_text())
    assert notebook["nbformat"] == 4
    # run in a scratch copy of the layout so the test never writes into the checkout
    (tmp_path / "analysis" / "results").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "spectra.ipynb", "exec"), namespace)
    assert set(namespace["spectra"]) == {"digits_affine", "digits_mlp", "digits_cnn"}
    assert os.path.getsize(tmp_path / "analysis" / "results" / "spectra" / "spectra.png") > 10_000
    plt.close("all")
