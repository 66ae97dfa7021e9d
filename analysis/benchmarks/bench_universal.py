"""Universal perturbations: every boundgeo method against ART, on the MNIST CNN and the CIFAR-10 ResNet.

    python analysis/benchmarks/bench_universal.py [--model mnist|cifar10] [--skip-art] [--seeds 5]
        [--reuse-art [--rerun-art linf:0.1 ...]] [--out PART.json]
    python analysis/benchmarks/bench_universal.py --art-seeds 0 --art-settings l2:3 l2:5 --timing own-core --out A.json
    python analysis/benchmarks/bench_universal.py --merge A.json B.json ...   # add those rows to --out
    python analysis/benchmarks/bench_universal.py --merge MAIN.json A.json ... --fresh  # --out anew
    python analysis/benchmarks/bench_universal.py --add-faithful 3      # Algorithm 1, keep_best=False
    python analysis/benchmarks/bench_universal.py --art-orders          # the same on ART's shuffles
    python analysis/benchmarks/bench_universal.py --art-call-cost [--model cifar10]
    python analysis/benchmarks/bench_universal.py --table
    python analysis/benchmarks/bench_universal.py --quick    # one setting, 1 seed, 100 images, 1 pass

Models and images (``--model``):
- ``mnist``: the reference MNIST CNN (trained on MNIST test images [0, 8000)); v is fitted on
  images [8000, 9000) and evaluated on the held-out [9000, 10000). Settings: ℓ2 ξ in {3, 5} and
  ℓ∞ ξ in {0.1, 0.2}.
- ``cifar10``: the CIFAR-10 ResNet-8 of analysis/cifar10.py (trained on part of the CIFAR-10
  *test* split); fitted on the first 250 of its 2,000 held-out images, evaluated on the last
  1,000. Settings: the paper's two budgets rescaled to [0, 1] inputs of 32×32×3, ℓ∞ 10/255
  (its 10 on [0, 255]) and ℓ2 1.12 (its 2,000 on 224×224×3 images in [0, 255]: 2000/255 at the
  same root-mean-square per pixel, times √(3072/150528) = 1/7), and ℓ∞ 8/255. ART's
  single-image DeepFool takes over a second a call on this ResNet, so 250 fit images keep one ART
  run under about 20 minutes at its best setting.

One evaluator for everyone (``bg.fooling_rate``: prediction changes after adding v and
clipping). Methods: boundgeo's Algorithm 1 (``"deepfool"``) and ``"batched"`` (5 passes, as ART),
``"sgd"`` (10 passes), ``"singular"`` (from the first 64 fit images, 10 power iterations),
``"spectral"`` and a random direction (on the sphere of the ℓ2 ball, at a corner of the ℓ∞ ball),
all with δ = 0.2, each at seeds 0..seeds-1 (one run of Algorithm 1 is chaotic: the order alone
moves its held-out rate by ten points or more) except ``spectral``, which does not depend on the
seed and runs once; and ART's
``UniversalPerturbation(attacker="deepfool", delta=0.2, max_iter=5, eps=ξ, norm=...)`` with its
default DeepFool. Every row records the images it used, its seconds and its *alignment*: the
share of ‖v‖² in the top-10 principal subspace of the unit DeepFool normals of the held-out
images (``bg.alignment``; 10/d for a random vector).

ART is timed at its fastest torch thread count on each model: one on both, from its whole runs
(``--threads``; ``--art-call-cost`` times a single call at 1 and 2 threads, which on the
CIFAR-10 ResNet pointed to two, wrongly);
boundgeo at the default threads (2 here). ``--art-seeds`` runs ART at the given seeds (its
``random.seed``, with which it shuffles) and settings into a file of its own; with ``--timing
own-core`` (each process on a core of its own, nothing else running: at most two one-thread
processes here) or ``alone`` (the only process) their times count for the speed-ups, with
``concurrent`` they do not. ART's held-out rate is the mean over its seeds, each seed counted
once; its time is the median of its timed runs at its fastest thread count. ``--merge`` adds such
parts to --out; it, ``--add-faithful``, ``--art-orders`` and ``--art-call-cost`` refuse to write
into an --out that other code computed (another scope version, analysis/_environment.py).
ART's runs are the exception: each keeps its v and a fingerprint of what ART read (the model,
the fit images, ART's settings, thread count and versions), so ``--merge`` (and ``--reuse-art``)
takes over a part of ART's runs from another scope version when the fingerprint is the same
here, and evaluates each v again with this code. A change to boundgeo then reruns boundgeo's
methods (about 26 min) and not ART (hours). ``--art-seeds`` is resumable the same way: the runs
already in its --out that are current here (fingerprint, setting, seed, timing; a timed run only
on the same machine) are kept, and only the others run.
``--art-orders`` runs boundgeo's Algorithm 1 on
exactly the shuffles of ART's runs, for a comparison seed by seed. Results go to
analysis/results/bench_universal.json (every row as it comes), with the top-level "environment"
of the main run, the environments of the merged parts and later steps, and "peer_settings".
``--quick``: the model's first setting, one seed, 100 fitting images, 1 pass, into
analysis/results/quick/.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import random
import sys
import time
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import nn

import boundgeo as bg
from boundgeo import zoo
from boundgeo.attacks.boundary import _hash_value, _model_config, _model_fingerprint
from boundgeo.attacks.universal import METHODS

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "analysis"))
sys.path.insert(0, str(ROOT / "analysis" / "benchmarks"))
from _environment import environment, finish  # noqa: E402
from _uap import random_direction  # noqa: E402

SETTINGS = [("l2", 3.0), ("l2", 5.0), ("linf", 0.1), ("linf", 0.2)]
# the paper's ℓ2 budget, 2,000 on 224×224×3 images in [0, 255], at the same root-mean-square per
# pixel on [0, 1] inputs of 32×32×3: 2000/255 × √(3072/150528) = 2000/255/7 = 1.1204...
PAPER_L2_CIFAR = 1.12
# the CIFAR-10 ResNet at the paper's budgets rescaled to [0, 1] (ℓ∞ 10/255, ℓ2 1.12) and at ℓ∞
# 8/255; ART's single-image DeepFool takes 1.4-1.7 s a call on it (against 0.3 s on the MNIST
# CNN), so it fits on 250 images there: one ART run of 5 passes stays under 20 minutes
CIFAR_SETTINGS = [("l2", PAPER_L2_CIFAR), ("linf", 8 / 255), ("linf", 10 / 255)]
MODEL_SETTINGS = {"mnist": SETTINGS, "cifar10": CIFAR_SETTINGS}
FIT = {"mnist": 1000, "cifar10": 250}
# ART's fastest torch thread count for a whole run, per model: one on both (session 18, whole runs
# of seed 0 on the CIFAR-10 ResNet: 15 min at one thread against 20-21 at two, although a single
# call had timed faster at two; on the MNIST CNN a call takes 0.27 s at one and 0.31 s at two).
# The JSON's peer_settings checks the runs of each result against its own timings
ART_THREADS = {"mnist": 1, "cifar10": 1}
PASSES, DELTA = 5, 0.2
# the fast methods run their own default number of passes (sgd's epochs, singular's power
# iterations); singular fits on a few dozen images, as Khrulkov & Oseledets do (64 there)
FAST_PASSES, SINGULAR_FIT = 10, 64
ALL_METHODS = (*METHODS, "random")
SEEDLESS = ("spectral",)  # the best of the top principal directions: the same v at every seed
UNTIMED = ("random",)  # a draw of noise: a speed-up against ART would say nothing
# ART runs whose times the speed-ups do not use: beside other work, or taken over from a result
# measured on another machine (reuse_art)
UNTIMED_ART = ("concurrent", "other machine")
TOP_K = 10  # alignment: the share of ‖v‖² in the top-10 principal subspace of the held-out normals


def run_art(model, x_fit, norm, xi, seed=0, threads=1):
    from art.attacks.evasion import UniversalPerturbation
    from art.estimators.classification import PyTorchClassifier

    classifier = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x_fit.shape[1:]),
                                   nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
    random.seed(seed)  # ART shuffles with the global random module
    attack = UniversalPerturbation(classifier, attacker="deepfool", delta=DELTA, max_iter=PASSES, eps=xi,
                                   norm=2 if norm == "l2" else np.inf, verbose=False)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # its fastest count on each model, from --art-call-cost
    try:
        start = time.perf_counter()
        attack.generate(x_fit.numpy())
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(before)
    return torch.from_numpy(attack.noise[0]).float(), seconds, attack.fooling_rate


def boundgeo_row(uap, method: str, seed: int, split: Split, images: int) -> dict:
    return {"model": split.model_name, "library": "boundgeo", "method": method, "norm": uap.norm, "xi": uap.xi,
            "seed": seed, "eval_fooling_rate": uap.eval_fooling_rate, "fit_fooling_rate": uap.fooling_rate,
            "norm_of_v": _size(uap.perturbation, uap.norm), "images": images,
            "alignment": bg.alignment(uap.perturbation, split.spectrum, TOP_K),
            "seconds": uap.seconds, "passes": uap.passes, "history": uap.history}


def art_row(split: Split, norm, xi, *, seed, threads, timing) -> dict:
    """One ART run, evaluated by boundgeo's evaluator like every other row. The row keeps ART's v
    and the fingerprint of what ART read (:func:`art_inputs`), so that a later version of the
    benchmark can take the run over, re-evaluated, instead of running ART again (:func:`reuse_art`)."""
    v, seconds, art_rate = run_art(split.model, split.x_fit, norm, xi, seed=seed, threads=threads)
    return {"model": split.model_name, "library": "art", "method": "deepfool", "norm": norm, "xi": xi, "seed": seed,
            **_evaluate(split, v, norm), "art_reported_fooling_rate": art_rate, "images": len(split.x_fit),
            "seconds": seconds, "passes": PASSES, "threads": threads, "timing": timing,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "inputs": art_inputs(split, threads), "v": pack(v)}


def _evaluate(split: Split, v: torch.Tensor, norm: str) -> dict:
    """What boundgeo's code says of a v: its held-out and fit fooling, size and alignment."""
    return {"eval_fooling_rate": bg.fooling_rate(split.clf, split.x_eval, v),
            "fit_fooling_rate": bg.fooling_rate(split.clf, split.x_fit, v), "norm_of_v": _size(v, norm),
            "alignment": bg.alignment(v, split.spectrum, TOP_K)}


def pack(v: torch.Tensor) -> dict:
    """``v`` as JSON, exactly: its float32 bytes, zlib-compressed, in base64 (an ℓ∞ v at a corner of
    the ball compresses to almost nothing; an MNIST ℓ2 v takes about 4 KB)."""
    a = v.detach().to("cpu", torch.float32).contiguous().numpy()
    return {"dtype": "float32", "shape": list(a.shape),
            "zlib_base64": base64.b64encode(zlib.compress(a.tobytes(), 9)).decode("ascii")}


def unpack(packed: dict) -> torch.Tensor:
    """The tensor :func:`pack` stored."""
    raw = zlib.decompress(base64.b64decode(packed["zlib_base64"]))
    return torch.from_numpy(np.frombuffer(raw, dtype=np.float32).copy()).reshape(packed["shape"])


def art_inputs(split: Split, threads: int) -> str:
    """A fingerprint of everything an ART run reads besides its setting and seed (which its row
    names): the model's parameters and buffers, the fit images, ART's settings (passes, δ), torch's
    thread count (its sums, and so v, can depend on it) and the versions of ART, torch and numpy.
    Two runs with the same fingerprint, setting and seed compute the same v, whatever boundgeo's
    code around them; boundgeo's evaluator and the alignment's normals are not in it, because a
    reused row is evaluated again (:func:`reuse_art`)."""
    h = hashlib.sha256(model_fingerprint(split.clf).encode())
    _hash_value(h, split.x_fit)
    h.update(json.dumps({"passes": PASSES, "delta": DELTA, "threads": threads, "art": _art_version(),
                         "torch": torch.__version__, "numpy": np.__version__}, sort_keys=True).encode())
    return h.hexdigest()[:16]


def model_fingerprint(clf: bg.Classifier) -> str:
    """The classifier's fingerprint as boundary_normals' resumable runs record it (module types,
    weights and buffers, normalisation, bounds), shortened: two parts of one result must have
    attacked the same model (``--merge`` checks it), which a training at another thread count once broke."""
    return _model_fingerprint(clf)[:16]


# what a setup records of its model: the weights' fingerprint, and what else fixes the outputs
# (boundgeo's _model_config: outputs=, every module's hyperparameters, every buffer)
MODEL_KEYS = ("model_fingerprint", "model_config")


def model_config(clf: bg.Classifier) -> str:
    return _model_config(clf)[:16]


def other_model(recorded: dict, loaded: dict) -> str | None:
    """The first of MODEL_KEYS on which two setups of one model name disagree, as "key recorded
    (loaded)", or None. A setup written before a key was recorded is not checked on that key."""
    for key in MODEL_KEYS:
        if recorded.get(key) and loaded.get(key) and recorded[key] != loaded[key]:
            return f"{key} {recorded[key]} ({loaded[key]})"
    return None


def reuse_art(rows: list[dict], origin: dict, split: Split, env: dict) -> list[dict]:
    """ART's ``rows`` from a result of other code (``origin``: its part name and environment),
    taken over by this code: each must be an ART run of ``split``'s model that kept its v and
    read exactly what ART would read here (the same :func:`art_inputs`); its fooling rates, size
    and alignment are then computed again by this code, and what the run recorded stays under
    ``"reused"``. A run timed on another machine (CPU model or count) keeps its rates but not its
    time: its timing becomes ``"other machine"``, which the speed-ups do not use. Anything else
    stops with the reason, before any file is written."""
    theirs = origin["environment"]
    machine = all(theirs.get(k) == env.get(k) for k in ("cpu_model", "cpu_count"))
    out = []
    for r in rows:
        where = f"{origin['part']}: {r.get('library')} {r.get('method')} {r.get('norm')} {r.get('xi')} seed {r.get('seed')}"
        if r.get("library") != "art":
            raise SystemExit(f"{where}: only ART's runs can be taken over from other code (scope version "
                             f"{origin['environment'].get('scope_version')!r}); run boundgeo's methods again")
        if "v" not in r or "inputs" not in r:
            raise SystemExit(f"{where}: the row did not keep ART's v and inputs (run before they were "
                             "recorded), so it cannot be checked against this code; run ART again")
        if _model(r) != split.model_name or r["images"] != len(split.x_fit):
            raise SystemExit(f"{where}: a run on {_model(r)} with {r['images']} fit images, not on this split")
        here = art_inputs(split, _threads(r))
        if r["inputs"] != here:
            raise SystemExit(f"{where}: ART read other inputs then (fingerprint {r['inputs']}, here {here}: "
                             "the model, the fit images, ART's settings or a version changed); run ART again")
        v = unpack(r["v"])
        if _size(v, r["norm"]) > r["xi"] * (1 + 1e-5):
            raise SystemExit(f"{where}: its v is larger than ξ = {r['xi']}")
        again = _evaluate(split, v, r["norm"])
        recorded = {k: r.get(k) for k in (*again, "timing")}
        if not machine and r.get("timing") not in UNTIMED_ART:
            again["timing"] = "other machine"
        out.append({**r, **again, "reused": {"part": origin["part"], "recorded": recorded,
                                             "scope_version": theirs.get("scope_version"),
                                             "commit": theirs.get("commit")}})
    return out


def _art_version() -> str:
    import art

    return art.__version__


def note_step(result: dict, step: str, env: dict) -> None:
    """Record, beside the main run's "environment", the environment of a later step that changed the file."""
    steps = [s for s in result.get("later_steps", []) if s["step"] != step]
    result["later_steps"] = [*steps, {"step": step, "environment": finish(env)}]


def _size(v: torch.Tensor, norm: str) -> float:
    return float(v.norm()) if norm == "l2" else float(v.abs().max())


def attach_ratios(result: dict) -> None:
    """The summary, ART's settings as timed, and each boundgeo row's speed-up and fooling
    difference against ART's reference (its mean rate over its seeds and its time at its fastest
    thread count), in place."""
    result["summary"] = summarise(result["rows"])
    result["peer_settings"] = peer_settings(result)
    reference = {(line["model"], line["norm"], line["xi"]): line for line in result["summary"]
                 if line["library"] == "art"}
    for row in result["rows"]:
        art = reference.get((_model(row), row["norm"], row["xi"]))
        if art is not None and row["library"] == "boundgeo":
            row["fooling_minus_art"] = row["eval_fooling_rate"] - art["eval_fooling_mean"]
            if row["method"] not in UNTIMED and row["seconds"] > 0 and art["median_seconds"] is not None:
                row["speedup_vs_art"] = art["median_seconds"] / row["seconds"]


def peer_settings(result: dict) -> dict:
    """How each library ran: boundgeo at the machine's threads; ART at the thread count of its
    timed runs on each model (``fastest``: whether that count is its fastest there). The evidence
    is its whole runs where some setting was timed at more than one count (the summary's
    ``median_seconds_by_threads``); else its single-image call at 1 and 2 threads when
    ``--art-call-cost`` measured it, which predicted the whole runs wrongly once (session 18); else
    none, and ``fastest`` is absent."""
    boundgeo_threads = sorted({r["threads"] for r in result["rows"] if r["library"] == "boundgeo" and "threads" in r})
    art = {}
    cost = result.get("art_seconds_per_call", {})
    runs: dict[str, list[dict]] = {}
    for line in result["summary"]:
        if line["library"] != "art":
            continue
        entry = art.setdefault(line["model"], {"batch_size": 1, "torch_threads": set()})
        entry["torch_threads"].add(line["timed_run"]["threads"])
        if len(line.get("median_seconds_by_threads", {})) > 1:
            runs.setdefault(line["model"], []).append(line)
    for model, entry in art.items():
        entry["torch_threads"] = sorted(entry["torch_threads"])
        if model in runs:  # whole runs at more than one count decide
            best = {min(line["median_seconds_by_threads"], key=line["median_seconds_by_threads"].get)
                    for line in runs[model]}
            entry["fastest"] = best == {str(t) for t in entry["torch_threads"]}
            entry["why"] = ("UniversalPerturbation calls DeepFool on one image at a time (batch 1 is ART's "
                            "algorithm); its whole runs were timed at "
                            + ", ".join(f"{_xi_text(line['xi'])} ({line['norm']}): "
                                        + ", ".join(f"{m:.0f} s at {t} thread(s)"
                                                    for t, m in line["median_seconds_by_threads"].items())
                                        for line in runs[model])
                            + " (median of the timed runs)")
        elif model in cost:
            best = min(cost[model], key=cost[model].get)
            entry["seconds_per_call"] = cost[model]
            entry["fastest"] = entry["torch_threads"] == [int(best)]
            entry["why"] = (f"UniversalPerturbation calls DeepFool on one image at a time (batch 1 is ART's "
                            f"algorithm); {best} thread(s) is its fastest per call on this model "
                            f"(art_seconds_per_call, from --art-call-cost; no setting was timed as whole "
                            f"runs at more than one count)")
    return {"boundgeo": {"torch_threads": boundgeo_threads, "batch_size": "boundgeo's default",
                         "why": "the machine's default threads; its batched DeepFool uses both cores"},
            "art": art}


def _model(row: dict) -> str:
    return row.get("model", "mnist")


def _threads(row: dict) -> int:
    return row.get("threads", 2)  # the first ART rows ran at the machine's 2 threads and did not say


def _art_timed(runs: list[dict]) -> tuple[dict[int, float], dict]:
    """ART's times at one setting: the median of its timed runs (not :data:`UNTIMED_ART`) at each
    thread count, and the run shown in the table: one of the count where that median is smallest
    (seed 0 if it ran there). ART's time is that count's median. With no timed run, no times (and
    no speed-ups), and the lowest seed's run is shown."""
    by_threads: dict[int, list[dict]] = {}
    for r in runs:
        if r.get("timing") not in UNTIMED_ART:
            by_threads.setdefault(_threads(r), []).append(r)
    medians = {t: float(np.median([r["seconds"] for r in rs])) for t, rs in sorted(by_threads.items())}
    if not medians:
        return {}, min(runs, key=lambda r: r.get("seed", 0))
    fastest = min(medians, key=medians.get)
    shown = min(by_threads[fastest], key=lambda r: r.get("seed", 0))
    return medians, shown


def _art_seconds(runs: list[dict]) -> float | None:
    """ART's time at one setting (:func:`_art_timed`), None when no run of it was timed."""
    medians = _art_timed(runs)[0]
    return min(medians.values()) if medians else None


def summarise(rows: list[dict]) -> list[dict]:
    """One line per (model, setting, library, method): held-out rates over seeds, the median time,
    the images used and the mean alignment."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((_model(row), row["norm"], row["xi"], row["library"], row["method"]), []).append(row)
    by_seed: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["library"] == "art":
            by_seed.setdefault((_model(r), r["norm"], r["xi"], r.get("seed", 0)), []).append(r)
    # a seed run at 1 and at 2 threads counts once: its runs are averaged first
    art_by_seed = {k: float(np.mean([r["eval_fooling_rate"] for r in v])) for k, v in by_seed.items()}
    art_fit_by_seed = {k: float(np.mean([r["fit_fooling_rate"] for r in v])) for k, v in by_seed.items()}

    def per_seed(model, norm, xi, table):
        return np.array([v for (m, n, x, _), v in sorted(table.items(), key=lambda kv: kv[0][3])
                         if (m, n, x) == (model, norm, xi)])

    # ART's reference: its held-out rate averaged over its seeds; its time at its fastest thread count
    art = {(model, norm, xi): {"eval_fooling_rate": float(per_seed(model, norm, xi, art_by_seed).mean()),
                               "seconds": _art_seconds(runs)}
           for (model, norm, xi, lib, _), runs in groups.items() if lib == "art"}
    out = []
    for (model, norm, xi, library, method), runs in groups.items():
        rates = np.array([r["eval_fooling_rate"] for r in runs])
        fits = [r["fit_fooling_rate"] for r in runs]
        if library == "art":  # one value per seed
            rates, fits = per_seed(model, norm, xi, art_by_seed), per_seed(model, norm, xi, art_fit_by_seed)
        seconds = _art_seconds(runs) if library == "art" else float(np.median([r["seconds"] for r in runs]))
        line = {"model": model, "norm": norm, "xi": xi, "xi_text": _xi_text(xi), "library": library,
                "method": method, "runs": len(runs),
                "seeds": len(rates),
                "eval_fooling_mean": float(rates.mean()), "eval_fooling_min": float(rates.min()),
                "eval_fooling_max": float(rates.max()),
                "fit_fooling_mean": float(np.mean(fits)),
                "median_seconds": seconds}
        if all("alignment" in r for r in runs):
            line["alignment_mean"] = float(np.mean([r["alignment"] for r in runs]))
        if all(r.get("images") is not None for r in runs):
            line["images"] = sorted({r["images"] for r in runs})
        if library == "art":  # the run the table shows: its time is ART's time at this setting
            by_threads, shown = _art_timed(runs)
            line["median_seconds_by_threads"] = {str(t): m for t, m in by_threads.items()}
            line["timed_run"] = {k: shown.get(k) for k in ("seed", "threads", "timing", "seconds",
                                                           "eval_fooling_rate", "measured_at")}
            line["timed_run"]["threads"] = _threads(shown)
        else:
            first = min(runs, key=lambda r: r.get("seed", 0))
            line["seed0_eval_fooling_rate"] = first["eval_fooling_rate"] if first.get("seed", 0) == 0 else None
        if method in SEEDLESS and library == "boundgeo":
            line["seedless"] = True
        ref = art.get((model, norm, xi))
        if (ref is not None and ref["seconds"] is not None and library == "boundgeo" and method not in UNTIMED
                and seconds > 0):
            line["speedup_vs_art"] = ref["seconds"] / seconds
        if ref is not None and library == "boundgeo":
            line["mean_minus_art"] = line["eval_fooling_mean"] - ref["eval_fooling_rate"]
            line["runs_at_or_above_art"] = int((rates >= ref["eval_fooling_rate"]).sum())
            paired = [r["eval_fooling_rate"] - art_by_seed[(model, norm, xi, r["seed"])] for r in runs
                      if method.endswith("art-orders") and (model, norm, xi, r["seed"]) in art_by_seed]
            if paired:  # the same shuffles as ART's runs: differences seed by seed
                line["paired_minus_art"] = paired
        out.append(line)
    return out


NAMES = {"deepfool": "Algorithm 1", "deepfool-last": "Algorithm 1, last v (keep_best=False)",
         "deepfool-last-art-orders": "Algorithm 1, last v, on ART's shuffles", "batched": "batched", "sgd": "sgd",
         "singular": "singular", "spectral": "spectral", "random": "random direction"}


def _xi_text(xi: float) -> str:
    """ξ as written: 0.2 or 3, or n/255 when that is what it is (8/255, not 0.0313725)."""
    plain = f"{xi:g}"
    if len(plain) > 5 and xi < 1 and abs(xi * 255 - round(xi * 255)) < 1e-9:
        return f"{round(xi * 255)}/255"
    return plain


def table(result: dict) -> str:
    """The README's Markdown table, built from the JSON: every method at every model and setting,
    held-out fooling at seed 0 and over seeds, images used, time, speed-up and alignment."""
    lines = ["| model | norm | ξ | method | held-out fooling: seed 0 | mean over seeds (min–max) | images "
             "| seconds (median) | speed-up vs ART | alignment |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    versions = result.get("environment") or result["machine"]  # "machine": files before the environment
    order = list(NAMES)
    for model, settings in MODEL_SETTINGS.items():
        for norm, xi in settings:
            here = [s for s in result["summary"] if (s["model"], s["norm"], s["xi"]) == (model, norm, xi)]
            for line in sorted(here, key=lambda s: -1 if s["library"] == "art" else order.index(s["method"])):
                # ART: the run its time comes from; boundgeo: seed 0
                shown = (line["timed_run"]["eval_fooling_rate"] if line["library"] == "art"
                         else line["seed0_eval_fooling_rate"])
                name = (f"boundgeo {NAMES[line['method']]}" if line["library"] == "boundgeo"
                        else f"ART {versions['art']} (Algorithm 1)")
                spread = (f"{line['eval_fooling_mean']:.1%} ({line['eval_fooling_min']:.1%}–"
                          f"{line['eval_fooling_max']:.1%})" if line.get("seeds", line["runs"]) > 1
                          else "the same v at every seed" if line.get("seedless") else "one run")
                speed = f"**{line['speedup_vs_art']:.0f}x**" if "speedup_vs_art" in line else "—"
                images = ", ".join(f"{n:,}" for n in line.get("images", [])) or "—"
                align = f"{line['alignment_mean']:.1%}" if "alignment_mean" in line else "—"
                seconds = "untimed" if line["median_seconds"] is None else f"{line['median_seconds']:.1f}"
                lines.append(f"| {'MNIST CNN' if model == 'mnist' else 'CIFAR-10 ResNet'} | "
                             f"{'ℓ2' if norm == 'l2' else 'ℓ∞'} | {line['xi_text']} | {name} | "
                             f"{'—' if shown is None else f'{shown:.1%}'} | {spread} | {images} | "
                             f"{seconds} | {speed} | {align} |")
    return "\n".join(lines)


def art_orders(seed: int, n: int) -> list[list[int]]:
    """The shuffles ART's UniversalPerturbation draws after ``random.seed(seed)``, one per pass."""
    state = random.getstate()
    random.seed(seed)
    orders = [random.sample(range(n), n) for _ in range(PASSES)]
    random.setstate(state)
    return orders


def _refuse_other_code(result: dict, out: Path, env: dict, step: str) -> None:
    """Stop ``step`` before it writes into ``out`` (its JSON ``result``) when ``out`` was computed by
    other code than this process runs: another scope version, or uncommitted code on either side."""
    ours, theirs = env, result.get("environment", {})
    if (theirs.get("scope_version") != ours.get("scope_version") or theirs.get("code_clean") is not True
            or ours.get("code_clean") is not True):
        raise SystemExit(f"{step}: {out} comes from scope version {theirs.get('scope_version')!r} (clean: "
                         f"{theirs.get('code_clean')}), this code is {ours.get('scope_version')!r} (clean: "
                         f"{ours.get('code_clean')}); rows of other code cannot be added to it (run its main "
                         "run again, or --merge ... --fresh)")


def add_faithful(args) -> None:
    """Algorithm 1 exactly as published: the v at the end of the last pass.

    With ``--art-orders`` it replays the shuffles of ART's runs in the JSON instead (seed by seed),
    so that the two implementations are compared on the same orders of the inputs.
    """
    env = environment()
    out = Path(args.out)
    result = json.loads(out.read_text())
    _refuse_other_code(result, out, env, "--art-orders" if args.art_orders else "--add-faithful")
    split = load_split(args.model, args.data_dir, args.fit)
    differs = other_model(result.get("setup", {}).get(args.model, {}), split.setup)
    if differs:
        raise SystemExit(f"{out} attacked another {args.model} model than this process loaded: {differs}; "
                         "its rows cannot be compared with these")
    method = "deepfool-last-art-orders" if args.art_orders else "deepfool-last"
    result["rows"] = [r for r in result["rows"] if not (r["method"] == method and _model(r) == args.model)]
    for norm, xi in MODEL_SETTINGS[args.model]:
        # each seed once: ART's seed 0 may have run at one and at two threads, with the same shuffles
        seeds = (sorted({r.get("seed", 0) for r in result["rows"]
                         if r["library"] == "art" and _model(r) == args.model and (r["norm"], r["xi"]) == (norm, xi)})
                 if args.art_orders else range(args.add_faithful))
        for seed in seeds:
            orders = art_orders(seed, len(split.x_fit)) if args.art_orders else None
            uap = bg.universal_perturbation(split.clf, split.x_fit, xi=xi, norm=norm, delta=DELTA,
                                            max_passes=PASSES, method="deepfool", keep_best=False,
                                            eval_data=split.x_eval, seed=seed, orders=orders, progress=False)
            row = boundgeo_row(uap, method, seed, split, len(split.x_fit))
            row["threads"] = torch.get_num_threads()
            result["rows"].append(row)
            print(f"{method} {args.model} {norm} xi={xi:g} seed={seed}: held-out {row['eval_fooling_rate']:.3f} "
                  f"(fit {row['fit_fooling_rate']:.3f}), {row['seconds']:.1f} s", flush=True)
    attach_ratios(result)
    note_step(result, ("--art-orders" if args.art_orders else "--add-faithful") + f" --model {args.model}", env)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


@dataclass
class Split:
    """A model with its fit and held-out images, and the principal subspace of the held-out
    images' boundary normals that every v's alignment is measured against."""

    model_name: str
    model: nn.Module
    clf: bg.Classifier
    x_fit: torch.Tensor
    x_eval: torch.Tensor
    setup: dict
    spectrum: object = None
    spectrum_seconds: float = 0.0


def load_split(model_name: str, data_dir: str | None, fit: int | None = None, spectrum: bool = True) -> Split:
    """The model and images of ``model_name``: the reference MNIST CNN (trained on MNIST test
    images [0, 8000)), fit on the first ``fit`` of [8000, 9000), held out [9000, 10000); or the
    CIFAR-10 ResNet of analysis/cifar10.py (trained on part of the CIFAR-10 test split), fit on
    the first ``fit`` of its 2,000 held-out images, held out the last 1,000 of them."""
    fit = min(fit or FIT[model_name], 1000)
    if model_name == "mnist":
        trained = zoo.train_reference("mnist", "cnn", root=data_dir or str(ROOT / "data" / "mnist"))
        _, _, x_te, _ = zoo.reference_split("mnist", root=data_dir or str(ROOT / "data" / "mnist"))
        setup = {"model": "reference MNIST CNN, trained on MNIST test images [0, 8000)",
                 "fit": f"MNIST test images [8000, {8000 + fit})", "eval": "MNIST test images [9000, 10000)"}
    else:
        from cifar10 import CHECKPOINT

        if not CHECKPOINT.exists():
            raise SystemExit(f"{CHECKPOINT} is missing: run analysis/cifar10.py first (it trains the ResNet)")
        trained = zoo.load_checkpoint(CHECKPOINT)
        _, _, x_te, _ = zoo.reference_split("cifar10", root=data_dir or str(ROOT / "data" / "cifar10"))
        setup = {"model": "the CIFAR-10 ResNet-8 of analysis/cifar10.py, trained on part of the CIFAR-10 test split",
                 "fit": f"the first {fit} of its 2,000 held-out test images",
                 "eval": "the last 1,000 of its 2,000 held-out test images"}
    model = trained.model.eval()
    clf = bg.Classifier(model, bounds=(0.0, 1.0))
    setup["model_fingerprint"] = model_fingerprint(clf)
    setup["model_config"] = model_config(clf)
    split = Split(model_name, model, clf, x_te[:fit].contiguous(), x_te[1000:].contiguous(), setup)
    if not spectrum:  # --art-call-cost measures no alignment
        return split
    tick = time.perf_counter()
    normals = bg.deepfool(clf, split.x_eval, progress=False).directions("normal")
    split.spectrum = bg.spectrum(normals, k=TOP_K, baseline_draws=1)
    split.spectrum_seconds = time.perf_counter() - tick
    split.setup.update(accuracy=getattr(trained, "accuracy", None), images_fit=fit, images_eval=len(split.x_eval),
                       alignment=f"share of ‖v‖² in the top-{TOP_K} principal subspace of the unit DeepFool "
                                 f"normals of the {len(split.x_eval)} held-out images ({TOP_K}/d = "
                                 f"{TOP_K / normals.shape[1]:.4f} for a random vector)",
                       alignment_random_share=TOP_K / normals.shape[1])
    return split


def method_row(split: Split, method: str, norm: str, xi: float, seed: int) -> dict:
    """One run of boundgeo's ``method`` (or a random v) on ``split``, with its alignment."""
    if method == "random":
        tick = time.perf_counter()
        v = random_direction(split.x_fit.shape[1:], xi, norm, seed)
        seconds = time.perf_counter() - tick
        return {"model": split.model_name, "library": "boundgeo", "method": "random", "norm": norm, "xi": xi,
                "seed": seed, "eval_fooling_rate": bg.fooling_rate(split.clf, split.x_eval, v),
                "fit_fooling_rate": bg.fooling_rate(split.clf, split.x_fit, v), "norm_of_v": _size(v, norm),
                "images": 0, "alignment": bg.alignment(v, split.spectrum, TOP_K), "seconds": seconds, "passes": 0}
    fit = split.x_fit[:SINGULAR_FIT] if method == "singular" else split.x_fit
    passes = PASSES if method in ("deepfool", "batched") else FAST_PASSES
    uap = bg.universal_perturbation(split.clf, fit, xi=xi, norm=norm, delta=DELTA, max_passes=passes,
                                    method=method, eval_data=split.x_eval, seed=seed, progress=False)
    return {**boundgeo_row(uap, method, seed, split, len(fit)), "threads": torch.get_num_threads()}




def art_seeds(args) -> None:
    """ART at the given shuffling seeds and settings; rows go to --out alone (a part), to be added
    to the main JSON with --merge.

    These runs may share the machine (two at once, one thread each), so their times are marked
    ``"timing": "concurrent"`` and kept out of the speed-ups unless ``--timing own-core`` says
    that each process had a core to itself and nothing else ran.

    A part is resumable: runs already in --out that read what ART would read here (the same
    :func:`art_inputs`), at the same setting, seed and timing, on this machine, are kept,
    evaluated again by this code (:func:`reuse_art`), and only the others run; when every run is
    kept, --out is left as it is. --out must be a part of ART's runs of this model, and hold no run
    that was not asked for (nothing in it is dropped).
    """
    torch.set_num_threads(args.threads)
    env = environment(art=_art_version())
    out = Path(args.out)
    wanted = [(norm, xi, seed) for norm, xi in parse_settings(args.art_settings, args.model)
              for seed in args.art_seeds]
    previous = _previous_art_part(out, args.model, wanted)
    split = load_split(args.model, args.data_dir, args.fit)
    kept = _current_art_runs(previous, out, split, env, args.threads, args.timing)
    missing = [run for run in wanted if run not in kept]
    if not missing and previous is not None and len(previous.get("rows", [])) == len(kept):  # nothing stale
        print(f"{out}: all {len(wanted)} ART runs are current here (model, fit images, settings, versions, "
              "machine); nothing to run, the file is left as it is")
        return
    result = {"environment": env, "benchmark": "universal (ART seeds)", "setup": {args.model: split.setup},
              "rows": [kept[run] for run in wanted if run in kept]}
    if kept:
        print(f"{out}: keeping {len(kept)} current ART runs, evaluated again; running {len(missing)}")
    for norm, xi, seed in missing:
        row = art_row(split, norm, xi, seed=seed, threads=args.threads, timing=args.timing)
        result["rows"].append(row)
        finish(env)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"ART {args.model} {norm} xi={xi:g} seed={seed}: held-out {row['eval_fooling_rate']:.3f} "
              f"(fit {row['fit_fooling_rate']:.3f}), {row['seconds']:.0f} s", flush=True)
    finish(env)
    out.write_text(json.dumps(result, indent=2) + "\n")


def _previous_art_part(out: Path, model: str, wanted: list[tuple[str, float, int]]) -> dict | None:
    """--out of ``--art-seeds`` as it stands, checked before any work: None when it does not exist;
    else it must be a part of ART's runs on ``model`` whose every run is among ``wanted``, since
    the file is written anew (a run not asked for would be dropped)."""
    if not out.exists():
        return None
    try:
        previous = json.loads(out.read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"--out {out} exists but is not readable JSON ({error}); move it away or name another --out")
    if not isinstance(previous, dict) or previous.get("benchmark") != "universal (ART seeds)":
        raise SystemExit(f"--out {out} exists and is not a part of ART's runs (--art-seeds); it is left "
                         "as it is: name another --out")
    rows = previous.get("rows", [])
    other = sorted({_model(r) for r in rows} - {model})
    if other:
        raise SystemExit(f"--out {out} holds ART runs on {other}, not only on {model}: name another --out")
    extra = sorted({(r["norm"], r["xi"], r.get("seed", 0)) for r in rows} - set(wanted))
    if extra:
        raise SystemExit(f"--out {out} holds ART runs that were not asked for ({', '.join(f'{n} {_xi_text(x)} seed {s}' for n, x, s in extra)}); "
                         "writing it anew would drop them: ask for them too (--art-seeds, --art-settings) or name another --out")
    return previous


def _current_art_runs(previous: dict | None, out: Path, split: "Split", env: dict, threads: int,
                      timing: str) -> dict[tuple[str, float, int], dict]:
    """The runs of ``previous`` that need not run again, by (norm, ξ, seed): ART read exactly what
    it would read here (:func:`art_inputs` at ``threads``), with the same ``timing`` and, for a
    timed run, on this machine; each evaluated again by this code (:func:`reuse_art`)."""
    if previous is None:
        return {}
    here = art_inputs(split, threads)
    candidates = [r for r in previous.get("rows", []) if r.get("library") == "art" and r.get("inputs") == here
                  and "v" in r and r.get("images") == len(split.x_fit) and r.get("timing") == timing
                  and _threads(r) == threads]
    theirs = previous.get("environment", {})
    if theirs.get("code_clean") is not True:  # the runs of uncommitted code are not kept
        return {}
    if other_model(previous.get("setup", {}).get(split.model_name, {}), split.setup):
        return {}  # same weights, but another configuration (a stride, a buffer): ART read another model
    taken = reuse_art(candidates, {"part": out.name, "environment": theirs}, split, env)
    return {(r["norm"], r["xi"], r.get("seed", 0)): r for r in taken if r.get("timing") == timing}


def art_call_cost(args) -> None:
    """ART's single-image DeepFool call (what its UniversalPerturbation makes per update), timed
    over 150 images (40 on CIFAR-10) at 1 and at 2 torch threads; stored in the JSON in --out.
    A JSON of other code is refused before ART is imported, so the refusal is what a user without
    the peers extra sees."""
    env = environment()
    out = Path(args.out)
    _refuse_other_code(json.loads(out.read_text()), out, env, "--art-call-cost")
    from art.attacks.evasion import DeepFool
    from art.estimators.classification import PyTorchClassifier

    split = load_split(args.model, args.data_dir, args.fit, spectrum=False)
    classifier = PyTorchClassifier(model=split.model, loss=nn.CrossEntropyLoss(),
                                   input_shape=tuple(split.x_fit.shape[1:]), nb_classes=10, clip_values=(0.0, 1.0),
                                   device_type="cpu")
    attack = DeepFool(classifier, verbose=False)
    x = split.x_fit[:150 if args.model == "mnist" else 40].numpy()
    before = torch.get_num_threads()
    cost = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            attack.generate(x[:3])  # warm-up
            start = time.perf_counter()
            for i in range(len(x)):
                attack.generate(x[i : i + 1])
            cost[str(threads)] = (time.perf_counter() - start) / len(x)
            print(f"ART DeepFool on {args.model}, one image per call, {threads} thread(s): "
                  f"{cost[str(threads)]:.3f} s per call")
    finally:
        torch.set_num_threads(before)
    result = json.loads(out.read_text())
    result.setdefault("art_seconds_per_call", {})[args.model] = cost
    attach_ratios(result)  # peer_settings checks ART's thread count against these costs
    note_step(result, f"--art-call-cost --model {args.model}", env)
    out.write_text(json.dumps(result, indent=2) + "\n")


def merge(args) -> None:
    """Add the rows (and model setups) of part files to --out (a row with the same run key is
    replaced), or with ``--fresh`` build --out anew from them, the first part first. --out (or the
    first part) must come from this code: the same scope version of a clean, committed tree
    (analysis/_environment.py). So must every other part, with one exception: a part of ART's runs
    only, computed by a clean tree of another scope version, whose runs kept their v and read
    exactly what ART would read here (:func:`reuse_art`: they are evaluated again by this code).
    ART's runs do not depend on boundgeo's code, so a change to it need not run ART again."""
    env = environment()
    out = Path(args.out)
    parts = list(args.merge)
    # --fresh: --out starts anew as the first part (its environment is the result's)
    result = json.loads(Path(parts.pop(0) if args.fresh else out).read_text())
    _refuse_other_code(result, out, env, "--merge")
    loaded = {path: json.loads(Path(path).read_text()) for path in parts}
    splits: dict[tuple[str, int], Split] = {}
    # the model each part attacked, by model name: one model per name in the result
    attacked = {path: dict(part.get("setup", {})) for path, part in loaded.items()}
    for path, part in loaded.items():  # every check before the first write
        theirs = part.get("environment", {})
        if theirs.get("scope_version") == env.get("scope_version") or not part.get("rows") or any(
                r.get("library") != "art" for r in part["rows"]):
            _refuse_other_code(part, Path(path), env, "--merge")
            continue
        if theirs.get("code_clean") is not True or env.get("code_clean") is not True:
            _refuse_other_code(part, Path(path), env, "--merge")  # says which side is not clean
        taken = []
        for model, images in sorted({(_model(r), r.get("images", 0)) for r in part["rows"]}):
            if (model, images) not in splits:
                splits[model, images] = load_split(model, getattr(args, "data_dir", None), images)
            taken += reuse_art([r for r in part["rows"] if (_model(r), r.get("images", 0)) == (model, images)],
                               {"part": Path(path).name, "environment": theirs}, splits[model, images], env)
        for (m, _), s in splits.items():  # what the part recorded of its model (model_config, from 2026-11-27)
            differs = other_model(part.get("setup", {}).get(m, {}), s.setup)
            if differs:
                raise SystemExit(f"--merge: {path} attacked another {m} model than this process loaded: {differs}")
        part["rows"] = taken  # re-evaluated on the model loaded here, whose setup the result keeps if it has one
        part["setup"] = {m: s.setup for (m, _), s in splits.items() if m not in result.get("setup", {})}
        attacked[path] = {m: s.setup for (m, _), s in splits.items()}
        print(f"{Path(path).name}: {len(taken)} ART runs of scope version {theirs.get('scope_version')} taken over, "
              "evaluated again by this code")

    models = {m: {k: s[k] for k in MODEL_KEYS if s.get(k)} for m, s in result.get("setup", {}).items()}
    for path in loaded:
        for m, setup in attacked[path].items():
            differs = other_model(setup, models.get(m, {}))
            if differs:
                raise SystemExit(f"--merge: {path} attacked another {m} model than "
                                 f"{args.merge[0] if args.fresh else out}: {differs}; its rows cannot be "
                                 "compared with those")
            models.setdefault(m, {}).update({k: setup[k] for k in MODEL_KEYS if setup.get(k) and k not in models[m]})

    def key(r):  # ART's seed-0 run is kept at both thread counts: its result depends on them
        return (_model(r), r["library"], r["method"], r["norm"], r["xi"], r.get("seed", 0),
                _threads(r) if r["library"] == "art" else 0)

    rows = {key(r): r for r in result["rows"]}
    for path, part in loaded.items():
        result.setdefault("setup", {}).update(part.get("setup", {}))
        for row in part["rows"]:
            if key(row) in rows:  # keep what it replaces, for the record
                result.setdefault("replaced_rows", []).append(rows[key(row)])
            rows[key(row)] = row
        result.setdefault("merged", []).append({"part": Path(path).name, "environment": part["environment"]})
    result["rows"] = list(rows.values())
    attach_ratios(result)
    note_step(result, "--merge", env)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


def parse_settings(items: list[str], model: str = "mnist") -> list[tuple[str, float]]:
    """``norm:xi`` items (ξ may be a fraction such as 8/255), each one of the model's settings."""
    try:
        settings = [(norm, float(Fraction(xi))) for norm, xi in (item.split(":") for item in items)]
    except ValueError as error:
        raise SystemExit(f"settings must read norm:xi, such as l2:3 or linf:8/255 ({error})")
    unknown = [s for s in settings if s not in MODEL_SETTINGS[model]]
    if unknown:
        raise SystemExit(f"unknown settings {unknown} for {model}; the benchmark's are {MODEL_SETTINGS[model]}")
    return settings


def main() -> None:
    global PASSES
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnist", choices=sorted(MODEL_SETTINGS),
                        help="the MNIST CNN (default) or the CIFAR-10 ResNet of analysis/cifar10.py")
    parser.add_argument("--data-dir", default=None, help="default data/mnist or data/cifar10")
    parser.add_argument("--skip-art", action="store_true", help="run no ART setting (with --reuse-art: "
                        "report only the ART rows already measured)")
    parser.add_argument("--reuse-art", action="store_true",
                        help="take ART's rows from the existing JSON (same model, images and settings) "
                             "instead of running ART again; they are marked as reused")
    parser.add_argument("--rerun-art", nargs="+", default=[], metavar="NORM:XI",
                        help="with --reuse-art: run these ART settings again instead of reusing them")
    parser.add_argument("--add-faithful", type=int, default=0, metavar="SEEDS",
                        help="only add Algorithm 1 with keep_best=False (the last v, as the paper and ART "
                             "return it) for this many seeds to the JSON in --out, keeping its other rows")
    parser.add_argument("--art-orders", action="store_true",
                        help="like --add-faithful, but replaying the shuffles of every ART run in --out "
                             "(paired with it seed by seed)")
    parser.add_argument("--art-seeds", nargs="+", type=int, default=[], metavar="SEED",
                        help="only run ART at these shuffling seeds (settings from --art-settings), writing "
                             "their rows alone to --out; add them to the main JSON with --merge")
    parser.add_argument("--art-settings", nargs="+", default=["l2:3"], metavar="NORM:XI")
    parser.add_argument("--timing", default="concurrent", choices=["concurrent", "own-core", "alone"],
                        help="with --art-seeds: 'own-core' when each ART process has a core to itself "
                             "(at most as many one-thread processes as cores, nothing else running), "
                             "'alone' when it is the only process; those times count for the speed-ups")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of ART (default: its fastest count per call on the model, "
                             f"{ART_THREADS})")
    parser.add_argument("--merge", nargs="+", default=[], metavar="JSON",
                        help="add the rows of these files to --out and rebuild its summary")
    parser.add_argument("--fresh", action="store_true",
                        help="with --merge: write --out anew from the parts, starting from the first (the "
                             "main run's)")
    parser.add_argument("--art-call-cost", action="store_true",
                        help="time ART's single-image DeepFool at 1 and 2 threads into --out")
    parser.add_argument("--table", action="store_true", help="print the Markdown table of --out and exit")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per boundgeo method")
    parser.add_argument("--settings", nargs="+", default=None, metavar="NORM:XI",
                        help="only these settings in the main run (default: all of the model's)")
    parser.add_argument("--fit", type=int, default=None,
                        help="fit on the first N fit images (default 1,000 on MNIST, 250 on CIFAR-10)")
    parser.add_argument("--passes", type=int, default=PASSES, help="passes of Algorithm 1, batched and ART")
    parser.add_argument("--quick", action="store_true",
                        help="one setting, --seeds 1 --fit 100 --passes 1, into analysis/results/quick/ "
                             "(unless --out)")
    parser.add_argument("--out", default=None, help="default analysis/results/bench_universal.json")
    args = parser.parse_args()
    if args.quick:
        args.settings = args.settings or [f"{n}:{_xi_text(x)}" for n, x in MODEL_SETTINGS[args.model][:1]]
        args.seeds, args.fit, args.passes = 1, min(args.fit or 100, 100), 1
    args.out = args.out or str(ROOT / "analysis" / "results" / ("quick" if args.quick else "")
                               / "bench_universal.json")
    PASSES = args.passes
    if args.threads is None:
        args.threads = ART_THREADS[args.model]
    elif args.threads < 1:
        raise SystemExit(f"--threads must be at least 1, got {args.threads}")
    if args.table:
        print(table(json.loads(Path(args.out).read_text())))
        return

    if args.art_seeds:
        art_seeds(args)
        return
    if args.merge:
        merge(args)
        return
    if args.art_call_cost:
        art_call_cost(args)
        return
    if args.add_faithful or args.art_orders:
        add_faithful(args)
        return
    env = environment(art=_art_version())
    settings = parse_settings(args.settings, args.model) if args.settings else MODEL_SETTINGS[args.model]
    split = load_split(args.model, args.data_dir, args.fit)
    print(f"{split.setup['model']} (held-out accuracy {split.setup['accuracy']}); fit on {len(split.x_fit)} images, "
          f"evaluate on {len(split.x_eval)} held-out; {PASSES} passes, delta {DELTA}; torch threads "
          f"{torch.get_num_threads()}")

    result = {
        "environment": env,
        "benchmark": "universal",
        "setup": {args.model: {**split.setup, "passes": PASSES, "fast_passes": FAST_PASSES, "delta": DELTA,
                               "singular_fit": SINGULAR_FIT, "settings": [{"norm": n, "xi": xi} for n, xi in settings],
                               "evaluator": "bg.fooling_rate (prediction change, clipped)"}},
        "rows": [],
    }
    out = Path(args.out)
    reused = []
    if args.reuse_art:
        previous = json.loads(out.read_text())
        when = previous.get("environment", {}).get("date_utc_finished") or previous.get("finished_at") or time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(out.stat().st_mtime))
        rerun = set(parse_settings(args.rerun_art, args.model))
        reused = [dict(r, reused_from_run_at=r.get("reused_from_run_at", when)) for r in previous["rows"]
                  if r["library"] == "art" and _model(r) == args.model and (r["norm"], r["xi"]) in settings
                  and (r["norm"], r["xi"]) not in rerun]
        if not reused:
            raise SystemExit(f"--reuse-art: {out} holds no ART rows for {args.model}")
        theirs = previous.get("environment", {})
        if not (theirs.get("scope_version") == env.get("scope_version") and theirs.get("code_clean") is True
                and env.get("code_clean") is True):  # runs of other code: checked and evaluated again
            reused = reuse_art(reused, {"part": out.name, "environment": theirs}, split, env)

    def record(row):
        result["rows"].append(row)
        finish(env)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"{row['library']:>10} {row['method']:>9} {row['norm']:>4} xi={row['xi']:<6.4g} "
              f"seed={row.get('seed', '-')}: held-out fooling "
              f"{row['eval_fooling_rate']:.3f} (fit {row['fit_fooling_rate']:.3f}), ‖v‖ {row['norm_of_v']:.3f}, "
              f"alignment {row['alignment']:.3f}, {row['seconds']:.1f} s", flush=True)

    for row in reused:  # first, so that an interrupted run still has them in the JSON
        record(row)
    for norm, xi in settings:
        for method in ALL_METHODS:
            for seed in range(1 if method in SEEDLESS else args.seeds):
                record(method_row(split, method, norm, xi, seed))
    have = {(r["norm"], r["xi"]) for r in reused}
    if not args.skip_art:  # ART's missing settings (all of them without --reuse-art)
        for norm, xi in [setting for setting in settings if setting not in have]:
            record(art_row(split, norm, xi, seed=0, threads=args.threads, timing="alone"))
    attach_ratios(result)
    finish(env)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
