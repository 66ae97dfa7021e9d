"""What tests/test_distributed.py runs in each of its processes (and once in one process).

Kept in a module of its own so that ``torch.multiprocessing.spawn`` can import it in the
child processes. Every scenario returns plain tensors and numbers, saved per rank.
"""

from __future__ import annotations

import datetime
import os
import sys
from pathlib import Path

import torch

import boundgeo as bg

spectrum_module = sys.modules["boundgeo.geometry.spectral"]


def model_and_data():
    trained = bg.zoo.pretrained_digits_cnn()
    x, y = bg.load_dataset("digits", split="test")
    return bg.Classifier(trained.model.eval()), x[:200], y[:200]


def _points(pts: bg.BoundaryPoints) -> dict:
    return {name: getattr(pts, name).clone() for name in
            ("perturbation", "normal", "margin", "converged", "status", "label", "target", "index", "iterations")
            if isinstance(getattr(pts, name, None), torch.Tensor)} | {"skipped": pts.settings["skipped_misclassified"]}


def _spectrum(spec: bg.Spectrum) -> dict:
    return {"values": spec.singular_values.clone(), "components": spec.components[:5].clone(), "route": spec.route}


def _uap(found: bg.UniversalPerturbation) -> dict:
    return {"v": found.perturbation.cpu().clone(), "rate": found.fooling_rate, "eval": found.eval_fooling_rate,
            "history": [(h["fooling_rate"], h["gradient_evaluations"], h["updates"]) for h in found.history]}


def compute(folder: Path, block_bytes: int) -> dict:
    """Every result the distributed tests compare, from normals to universal perturbations."""
    torch.set_num_threads(1)
    spectrum_module._BLOCK_BYTES = block_bytes  # several blocks, so that each rank gets some
    clf, x, y = model_and_data()
    out: dict = {}
    # normals: every input, on disk (7 shards of 32 for 2 ranks), and n= with labels in memory
    on_disk = bg.boundary_normals(clf, (x, y), out=folder / "all", batch_size=16, shard_size=32,
                                  keep_misclassified=True, progress=False)
    out["normals_out"] = _points(on_disk)
    out["normals_n"] = _points(bg.boundary_normals(clf, (x, y), n=150, seed=3, batch_size=16, shard_size=24,
                                                   progress=False))
    # spectra: streamed from the directory (n x n Gram over column blocks), and the gram route in
    # memory both ways (d x d from rows, n x n from columns)
    out["spectrum_stream"] = _spectrum(bg.spectrum(folder / "all", route="stream", baseline_draws=0))
    rows = on_disk.normal.reshape(len(on_disk), -1)
    out["spectrum_gram_rows"] = _spectrum(bg.spectrum(rows, route="gram", baseline_draws=0))
    out["spectrum_gram_columns"] = _spectrum(bg.spectrum(rows[:40], route="gram", baseline_draws=0))
    # universal perturbations: SGD in pieces (exact), SGD split per rank, batched, Algorithm 1
    fit, held = x[:120], x[120:]
    out["uap_sgd_pieces"] = _uap(bg.universal_perturbation(clf, fit, xi=0.3, norm="linf", method="sgd",
                                                           max_passes=3, batch_size=32, max_batch=8,
                                                           eval_data=held, progress=False))
    out["uap_sgd"] = _uap(bg.universal_perturbation(clf, fit, xi=2.0, norm="l2", method="sgd", max_passes=3,
                                                    batch_size=32, progress=False))
    out["uap_batched"] = _uap(bg.universal_perturbation(clf, fit, xi=2.0, norm="l2", method="batched",
                                                        max_passes=2, batch_size=32, max_batch=8,
                                                        progress=False))
    out["uap_algorithm1"] = _uap(bg.universal_perturbation(clf, fit[:40], xi=2.0, norm="l2", method="deepfool",
                                                           max_passes=2, progress=False))
    out["fooling_rate"] = bg.fooling_rate(clf, x, torch.full(x.shape[1:], 0.2), batch_size=16)
    # robustness profile (per-image, universal, random and PGD witnesses) and subspace fooling
    profile = bg.robustness_profile(clf, x[:60], epsilons=[0.5, 1.0, 2.0], draws=3, universal_passes=2,
                                    batch_size=8, refine=True, pgd_steps=3)
    out["profile"] = {name: getattr(profile, name).clone() for name in
                      ("per_image_rate", "universal_rate", "random_rate", "category")}
    basis = torch.linalg.qr(torch.randn(64, 5, generator=torch.Generator().manual_seed(0)))[0].T
    fool = bg.subspace_fooling(clf, x[:100], basis, radii=[0.5, 1.0, 2.0], draws=3, batch_size=16)
    out["subspace"] = {"sub": fool.subspace_rates.clone(), "full": fool.full_rates.clone()}
    return out


def compute_mismatch(folder: Path, rank: int) -> dict:
    """The ranks ask for another seed, out= or n: every rank must refuse, naming the setting."""
    clf, x, y = model_and_data()
    messages = {}
    for name, kwargs in {"seed": {"seed": rank, "n": 20}, "out": {"out": folder / f"rank{rank}", "n": 20},
                         "n": {"n": 20 + rank}}.items():
        try:
            bg.boundary_normals(clf, x, progress=False, **kwargs)
        except bg.BoundgeoError as exc:
            messages[name] = str(exc)
    try:
        bg.universal_perturbation(clf, x[:40], xi=0.1 + rank, method="sgd", max_passes=1, progress=False)
    except bg.BoundgeoError as exc:
        messages["xi"] = str(exc)

    def fails_on_rank_1(start, stop):
        if bg.distributed.world().rank == 1:
            raise RuntimeError("out of memory on rank 1")
        return torch.ones(stop - start)

    try:  # an error inside a split computation reaches every rank: none waits forever
        bg.distributed.map_rows(bg.distributed.world(), 8, 2, fails_on_rank_1, dtype=torch.float32, device="cpu")
    except (RuntimeError, bg.BoundgeoError) as exc:
        messages["map_rows"] = f"{type(exc).__name__}: {exc}"
    return messages


class FailOnce(torch.nn.Module):
    """The digits CNN, failing on rank 1 in the middle of the collection while ``flag`` exists."""

    def __init__(self, model: torch.nn.Module, flag: Path, rank: int) -> None:
        super().__init__()
        self.model, self.flag, self.rank, self.calls = model, flag, rank, 0

    def forward(self, x):
        self.calls += 1
        if self.rank == 1 and self.flag.exists() and self.calls > 40:
            raise RuntimeError("simulated crash of rank 1")
        return self.model(x)


def compute_resume(folder: Path, rank: int) -> dict:
    """A collection that fails on rank 1 part-way, then the same job started again."""
    torch.set_num_threads(1)
    trained = bg.zoo.pretrained_digits_cnn()
    x, _ = bg.load_dataset("digits", split="test")
    flag = folder / "crash"
    failing = FailOnce(trained.model.eval(), flag, rank).eval()
    import torch.distributed as dist

    if rank == 0:
        flag.touch()
    dist.barrier()
    error = None
    try:
        bg.boundary_normals(bg.Classifier(failing), x[:200], out=folder / "resume", batch_size=16, shard_size=32,
                            progress=False)
    except (bg.BoundgeoError, RuntimeError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    dist.barrier()
    finished = sorted(p.name for p in (folder / "resume" / "shards").glob("*.npz"))
    stamps = {p.name: p.stat().st_mtime_ns for p in (folder / "resume" / "shards").glob("*.npz")}
    if rank == 0:
        flag.unlink()
    dist.barrier()
    again = bg.boundary_normals(bg.Classifier(failing), x[:200], out=folder / "resume", batch_size=16,
                                shard_size=32, progress=False)
    kept = sorted(name for name, stamp in stamps.items()
                  if (folder / "resume" / "shards" / name).stat().st_mtime_ns == stamp)
    return {"error": error, "finished_before": finished, "kept": kept, "points": _points(again)}


class FailsWithGradients(torch.nn.Module):
    """The digits CNN, failing on rank 1 whenever its input needs a gradient: in DeepFool and in
    the SGD pieces, never in the plain predictions."""

    def __init__(self, model: torch.nn.Module, rank: int) -> None:
        super().__init__()
        self.model, self.rank = model, rank

    def forward(self, x):
        if self.rank == 1 and x.requires_grad:
            raise RuntimeError("CUDA out of memory (simulated) on rank 1")
        return self.model(x)


def compute_failures(folder: Path, rank: int) -> dict:
    """Errors on rank 1 in the middle of split computations: every rank must raise, none may wait.
    (The process group's timeout turns a hang into a failure of this test.)"""
    torch.set_num_threads(1)
    clf, x, y = model_and_data()
    failing = bg.Classifier(FailsWithGradients(clf.model, rank).eval())
    messages = {}

    def attempt(name, fn):
        try:
            fn()
            messages[name] = "no error"
        except Exception as exc:
            messages[name] = f"{type(exc).__name__}: {exc}"

    attempt("sgd", lambda: bg.universal_perturbation(failing, x[:64], xi=1.0, norm="l2", method="sgd",
                                                     max_passes=1, batch_size=32, progress=False))
    attempt("batched", lambda: bg.universal_perturbation(failing, x[:64], xi=1.0, norm="l2", method="batched",
                                                         max_passes=1, batch_size=32, progress=False))
    pts = bg.boundary_normals(clf, x[:80], out=folder / "normals", batch_size=16, shard_size=16, progress=False)
    if rank == 1:  # rank 1's disk fails while the Gram matrix is summed
        def unreadable(self, size, world):
            raise OSError("read error (simulated) on rank 1")
            yield  # pragma: no cover - a generator, as the real one

        for rows in (spectrum_module._Rows, spectrum_module._FileRows):
            rows.column_blocks = rows.row_blocks = unreadable
    attempt("spectrum", lambda: bg.spectrum(folder / "normals", route="stream", baseline_draws=0))
    categories = sys.modules["boundgeo.geometry.categories"]
    real = categories.universal_perturbation
    if rank == 1:  # the universal witness of the second ε, which rank 1 fits, fails
        def witness(*args, xi, **kwargs):
            if xi > 0.7:
                raise RuntimeError("witness failed (simulated) on rank 1")
            return real(*args, xi=xi, **kwargs)

        categories.universal_perturbation = witness
    attempt("profile", lambda: bg.robustness_profile(clf, x[:40], epsilons=[0.5, 1.0], draws=2,
                                                     universal_passes=1, batch_size=8, refine=False))
    categories.universal_perturbation = real
    messages["rows"] = len(pts)
    return messages


SCENARIOS = {"compute": None, "mismatch": compute_mismatch, "resume": compute_resume, "failures": compute_failures}


def worker(rank: int, world_size: int, folder: str, scenario: str, block_bytes: int) -> None:
    import torch.distributed as dist

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    folder = Path(folder)
    # a short timeout: a rank left waiting by a bug fails the test rather than hanging it
    dist.init_process_group("gloo", init_method=f"file://{folder / 'rendezvous'}", rank=rank,
                            world_size=world_size, timeout=datetime.timedelta(seconds=90))
    try:
        if scenario == "compute":
            result = compute(folder / "distributed", block_bytes)
        else:
            result = SCENARIOS[scenario](folder, rank)
        torch.save(result, folder / f"{scenario}.rank{rank}.pt")
    finally:
        dist.destroy_process_group()
