"""Universal perturbations: boundgeo's three methods against ART on the same MNIST CNN.

    python analysis/benchmarks/bench_universal.py [--data-dir data/mnist] [--skip-art]
        [--reuse-art [--rerun-art linf:0.1 ...]] [--seeds 5]
    python analysis/benchmarks/bench_universal.py --art-seeds 1 2 --art-settings l2:3 --threads 1 --out A.json
    python analysis/benchmarks/bench_universal.py --merge A.json        # add those ART rows
    python analysis/benchmarks/bench_universal.py --add-faithful 3      # Algorithm 1, keep_best=False
    python analysis/benchmarks/bench_universal.py --art-orders          # the same on ART's shuffles
    python analysis/benchmarks/bench_universal.py --table
    python analysis/benchmarks/bench_universal.py --quick    # l2 ξ = 3, 1 seed, 100 images, 1 pass

Setup: the reference MNIST CNN (trained on the first 8,000 images of the MNIST test split); the
perturbation is fitted on images [8000, 9000) and evaluated on the held-out [9000, 10000) by one
evaluator for everyone (``bg.fooling_rate``: prediction changes after adding v and clipping).
boundgeo's methods run with seeds 0..seeds-1 (the order of the inputs in each pass), since one
run of Algorithm 1 is chaotic: the order alone moves its held-out rate by ten points or more.
ART runs with one torch thread, its fastest: its single-image DeepFool call takes 0.19 s at one
thread and 0.24 s at two on this machine (``--art-call-cost``). boundgeo runs at the
default threads (2 here). ART's run at ``random.seed(0)`` (its shuffle) is the timed one;
``--art-seeds`` adds runs at other seeds (two processes at a time, one thread each; with
``--timing concurrent`` their times are kept out of the speed-ups), and ART's held-out rate is
the mean over its seeds. ``--art-orders`` runs boundgeo's Algorithm 1
on exactly the shuffles of ART's runs, for a comparison seed by seed.
Settings: ℓ2 ξ in {3, 5} and ℓ∞ ξ in {0.1, 0.2}; δ = 0.2; 5 passes. ART runs
``UniversalPerturbation(attacker="deepfool", delta=0.2, max_iter=5, eps=ξ, norm=...)`` with its
default DeepFool. Every library gets the same images; the results are written to
analysis/results/bench_universal.json after every row (ART's rows take minutes each), with the
top-level "environment" (analysis/_environment.py) of the main run and "peer_settings" (each
library's torch threads and batch size, and why). ART's held-out rate is the mean over its seeds,
each seed counted once (a seed run at two thread counts is averaged first). ``--quick``: ℓ2 ξ = 3,
one seed, 100 fitting images, 1 pass, into analysis/results/quick/.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import boundgeo as bg
from boundgeo import zoo
from boundgeo.attacks.universal import METHODS

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "analysis"))
from _environment import environment, finish  # noqa: E402

SETTINGS = [("l2", 3.0), ("l2", 5.0), ("linf", 0.1), ("linf", 0.2)]
PASSES, DELTA = 5, 0.2


def run_art(model, x_fit, norm, xi, seed=0, threads=1):
    from art.attacks.evasion import UniversalPerturbation
    from art.estimators.classification import PyTorchClassifier

    classifier = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x_fit.shape[1:]),
                                   nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
    random.seed(seed)  # ART shuffles with the global random module
    attack = UniversalPerturbation(classifier, attacker="deepfool", delta=DELTA, max_iter=PASSES, eps=xi,
                                   norm=2 if norm == "l2" else np.inf, verbose=False)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # ART's batch-of-one calls are fastest on one thread
    try:
        start = time.perf_counter()
        attack.generate(x_fit.numpy())
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(before)
    return torch.from_numpy(attack.noise[0]).float(), seconds, attack.fooling_rate


def boundgeo_row(uap, method: str, seed: int) -> dict:
    return {"library": "boundgeo", "method": method, "norm": uap.norm, "xi": uap.xi, "seed": seed,
            "eval_fooling_rate": uap.eval_fooling_rate, "fit_fooling_rate": uap.fooling_rate,
            "norm_of_v": _size(uap.perturbation, uap.norm),
            "seconds": uap.seconds, "passes": uap.passes, "history": uap.history}


def art_row(model, x_fit, x_eval, norm, xi, *, seed, threads, timing) -> dict:
    """One ART run, evaluated by boundgeo's evaluator like every other row."""
    clf = bg.Classifier(model)
    v, seconds, art_rate = run_art(model, x_fit, norm, xi, seed=seed, threads=threads)
    return {"library": "art", "method": "deepfool", "norm": norm, "xi": xi, "seed": seed,
            "eval_fooling_rate": bg.fooling_rate(clf, x_eval, v), "fit_fooling_rate": bg.fooling_rate(clf, x_fit, v),
            "art_reported_fooling_rate": art_rate, "norm_of_v": _size(v, norm), "seconds": seconds,
            "passes": PASSES, "threads": threads, "timing": timing,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


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
    """The summary, and each boundgeo row's speed-up and fooling difference against ART's reference
    (its mean rate over all runs and its timed one-thread time), in place."""
    result["summary"] = summarise(result["rows"])
    reference = {(line["norm"], line["xi"]): line for line in result["summary"] if line["library"] == "art"}
    for row in result["rows"]:
        art = reference.get((row["norm"], row["xi"]))
        if art is not None and row["library"] == "boundgeo":
            row["speedup_vs_art"] = art["median_seconds"] / row["seconds"]
            row["fooling_minus_art"] = row["eval_fooling_rate"] - art["eval_fooling_mean"]


def _threads(row: dict) -> int:
    return row.get("threads", 2)  # the first ART rows ran at the machine's 2 threads and did not say


def _art_seconds(runs: list[dict]) -> float:
    timed = [r for r in runs if r.get("timing") != "concurrent"]
    fastest = min(_threads(r) for r in timed)
    return float(np.median([r["seconds"] for r in timed if _threads(r) == fastest]))


def summarise(rows: list[dict]) -> list[dict]:
    """One line per (setting, library, method): held-out rates over seeds and the median time."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["norm"], row["xi"], row["library"], row["method"]), []).append(row)
    by_seed: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["library"] == "art":
            by_seed.setdefault((r["norm"], r["xi"], r.get("seed", 0)), []).append(r)
    # a seed run at 1 and at 2 threads counts once: its runs are averaged first
    art_by_seed = {k: float(np.mean([r["eval_fooling_rate"] for r in v])) for k, v in by_seed.items()}
    art_fit_by_seed = {k: float(np.mean([r["fit_fooling_rate"] for r in v])) for k, v in by_seed.items()}

    def per_seed(norm, xi, table):
        return np.array([v for (n, x, _), v in sorted(table.items(), key=lambda kv: kv[0][2]) if (n, x) == (norm, xi)])

    # ART's reference: its held-out rate averaged over its seeds; its time from the runs timed at
    # one thread (its fastest; the first runs, at two threads, took up to twice as long)
    art = {(norm, xi): {"eval_fooling_rate": float(per_seed(norm, xi, art_by_seed).mean()),
                        "seconds": _art_seconds(runs)}
           for (norm, xi, lib, _), runs in groups.items() if lib == "art"}
    out = []
    for (norm, xi, library, method), runs in groups.items():
        rates = np.array([r["eval_fooling_rate"] for r in runs])
        fits = [r["fit_fooling_rate"] for r in runs]
        if library == "art":  # one value per seed
            rates, fits = per_seed(norm, xi, art_by_seed), per_seed(norm, xi, art_fit_by_seed)
        seconds = _art_seconds(runs) if library == "art" else float(np.median([r["seconds"] for r in runs]))
        line = {"norm": norm, "xi": xi, "library": library, "method": method, "runs": len(runs),
                "seeds": len(rates),
                "eval_fooling_mean": float(rates.mean()), "eval_fooling_min": float(rates.min()),
                "eval_fooling_max": float(rates.max()),
                "fit_fooling_mean": float(np.mean(fits)),
                "median_seconds": seconds}
        ref = art.get((norm, xi))
        if ref is not None and library == "boundgeo":
            line["speedup_vs_art"] = ref["seconds"] / seconds
            line["mean_minus_art"] = line["eval_fooling_mean"] - ref["eval_fooling_rate"]
            line["runs_at_or_above_art"] = int((rates >= ref["eval_fooling_rate"]).sum())
            paired = [r["eval_fooling_rate"] - art_by_seed[(norm, xi, r["seed"])] for r in runs
                      if method.endswith("art-orders") and (norm, xi, r["seed"]) in art_by_seed]
            if paired:  # the same shuffles as ART's runs: differences seed by seed
                line["paired_minus_art"] = paired
        out.append(line)
    return out


NAMES = {"deepfool": "Algorithm 1", "deepfool-last": "Algorithm 1, last v (keep_best=False)",
         "deepfool-last-art-orders": "Algorithm 1, last v, on ART's shuffles", "batched": "batched", "sgd": "SGD"}


def table(result: dict) -> str:
    """The README's Markdown table, built from the JSON (seed 0 and the spread over seeds)."""
    lines = ["| norm | ξ | method | held-out fooling: seed 0 | mean over seeds (min–max) | fit (mean) "
             "| seconds (median) | speed-up vs ART |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    first = {(r["norm"], r["xi"], r["library"], r["method"]): r for r in reversed(result["rows"])
             if r.get("seed", 0) == 0}
    for norm, xi in SETTINGS:
        order = list(NAMES)
        here = [s for s in result["summary"] if (s["norm"], s["xi"]) == (norm, xi)]
        for line in sorted(here, key=lambda s: -1 if s["library"] == "art" else order.index(s["method"])):
            row = first[(norm, xi, line["library"], line["method"])]
            if line["library"] == "art":  # the timed run: seed 0 at ART's fastest thread count
                timed = [r for r in result["rows"] if r["library"] == "art" and (r["norm"], r["xi"]) == (norm, xi)
                         and r.get("seed", 0) == 0 and r.get("timing") != "concurrent"]
                row = min(timed, key=_threads)
            versions = result.get("environment") or result["machine"]  # "machine": files before the environment
            name = (f"boundgeo {NAMES[line['method']]}" if line["library"] == "boundgeo"
                    else f"ART {versions['art']} (Algorithm 1)")
            spread = (f"{line['eval_fooling_mean']:.1%} ({line['eval_fooling_min']:.1%}–{line['eval_fooling_max']:.1%})"
                      if line.get("seeds", line["runs"]) > 1 else "one run")
            speed = f"**{line['speedup_vs_art']:.0f}x**" if "speedup_vs_art" in line else "—"
            lines.append(f"| {'ℓ2' if norm == 'l2' else 'ℓ∞'} | {xi:g} | {name} | {row['eval_fooling_rate']:.1%} | "
                         f"{spread} | {line['fit_fooling_mean']:.1%} | {line['median_seconds']:.1f} | {speed} |")
    return "\n".join(lines)


def art_orders(seed: int, n: int) -> list[list[int]]:
    """The shuffles ART's UniversalPerturbation draws after ``random.seed(seed)``, one per pass."""
    state = random.getstate()
    random.seed(seed)
    orders = [random.sample(range(n), n) for _ in range(PASSES)]
    random.setstate(state)
    return orders


def add_faithful(args) -> None:
    """Algorithm 1 exactly as published: the v at the end of the last pass.

    With ``--art-orders`` it replays the shuffles of ART's runs in the JSON instead (seed by seed),
    so that the two implementations are compared on the same orders of the inputs.
    """
    env = environment()
    out = Path(args.out)
    result = json.loads(out.read_text())
    trained, x_fit, x_eval = load_split(args.data_dir, args.fit)
    clf = bg.Classifier(trained.model.eval())
    method = "deepfool-last-art-orders" if args.art_orders else "deepfool-last"
    result["rows"] = [r for r in result["rows"] if r["method"] != method]
    for norm, xi in SETTINGS:
        seeds = (sorted(r.get("seed", 0) for r in result["rows"]
                        if r["library"] == "art" and (r["norm"], r["xi"]) == (norm, xi))
                 if args.art_orders else range(args.add_faithful))
        for seed in seeds:
            orders = art_orders(seed, len(x_fit)) if args.art_orders else None
            uap = bg.universal_perturbation(clf, x_fit, xi=xi, norm=norm, delta=DELTA, max_passes=PASSES,
                                            method="deepfool", keep_best=False, eval_data=x_eval, seed=seed,
                                            orders=orders, progress=False)
            row = boundgeo_row(uap, method, seed)
            row["threads"] = torch.get_num_threads()
            result["rows"].append(row)
            print(f"{method} {norm} xi={xi} seed={seed}: held-out {row['eval_fooling_rate']:.3f} "
                  f"(fit {row['fit_fooling_rate']:.3f}), {row['seconds']:.1f} s", flush=True)
    attach_ratios(result)
    note_step(result, "--art-orders" if args.art_orders else "--add-faithful", env)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


def load_split(data_dir, fit: int = 1000):
    trained = zoo.train_reference("mnist", "cnn", root=data_dir)
    _, _, x_te, _ = zoo.reference_split("mnist", root=data_dir)
    return trained, x_te[:min(fit, 1000)].contiguous(), x_te[1000:].contiguous()


def art_seeds(args) -> None:
    """ART at more shuffling seeds, to see how much one run of it varies; rows go to --out alone.

    These runs may share the machine (two at once, one thread each), so their times are marked
    ``"timing": "concurrent"`` and kept out of the speed-ups unless ``--timing own-core`` says
    that each process had a core to itself and nothing else ran.
    """
    torch.set_num_threads(args.threads)
    trained, x_fit, x_eval = load_split(args.data_dir, args.fit)
    model = trained.model.eval()
    env = environment(art=_art_version())
    result = {"environment": env, "benchmark": "universal (ART seeds)", "rows": []}
    out = Path(args.out)
    for norm, xi in parse_settings(args.art_settings):
        for seed in args.art_seeds:
            row = art_row(model, x_fit, x_eval, norm, xi, seed=seed, threads=args.threads, timing=args.timing)
            result["rows"].append(row)
            finish(env)
            out.write_text(json.dumps(result, indent=2) + "\n")
            print(f"ART {norm} xi={xi} seed={seed}: held-out {row['eval_fooling_rate']:.3f} "
                  f"(fit {row['fit_fooling_rate']:.3f}), {row['seconds']:.0f} s", flush=True)


def art_call_cost(args) -> None:
    """ART's single-image DeepFool call (what its UniversalPerturbation makes per update), timed
    over 150 MNIST images at 1 and at 2 torch threads; stored in the JSON in --out."""
    from art.attacks.evasion import DeepFool
    from art.estimators.classification import PyTorchClassifier

    env = environment()
    trained, x_fit, _ = load_split(args.data_dir, args.fit)
    classifier = PyTorchClassifier(model=trained.model.eval(), loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28),
                                   nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
    attack = DeepFool(classifier, verbose=False)
    x = x_fit[:150].numpy()
    before = torch.get_num_threads()
    cost = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        attack.generate(x[:5])  # warm-up
        start = time.perf_counter()
        for i in range(len(x)):
            attack.generate(x[i : i + 1])
        cost[str(threads)] = (time.perf_counter() - start) / len(x)
        print(f"ART DeepFool, one image per call, {threads} thread(s): {cost[str(threads)]:.3f} s per call")
    torch.set_num_threads(before)
    out = Path(args.out)
    result = json.loads(out.read_text())
    result["art_seconds_per_call_by_threads"] = cost
    note_step(result, "--art-call-cost", env)
    out.write_text(json.dumps(result, indent=2) + "\n")


def merge(args) -> None:
    """Add the rows of other result files to --out (a row with the same run key is replaced)."""
    env = environment()
    out = Path(args.out)
    result = json.loads(out.read_text())

    def key(r):  # ART's seed-0 run is kept at both thread counts: its result depends on them
        return r["library"], r["method"], r["norm"], r["xi"], r.get("seed", 0), _threads(r) if r["library"] == "art" else 0

    rows = {key(r): r for r in result["rows"]}
    for path in args.merge:
        for row in json.loads(Path(path).read_text())["rows"]:
            if key(row) in rows:  # keep what it replaces, for the record
                result.setdefault("replaced_rows", []).append(rows[key(row)])
            rows[key(row)] = row
    result["rows"] = list(rows.values())
    attach_ratios(result)
    note_step(result, "--merge", env)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


def parse_settings(items: list[str]) -> list[tuple[str, float]]:
    settings = [(norm, float(xi)) for norm, xi in (item.split(":") for item in items)]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise SystemExit(f"unknown settings {unknown}; the benchmark's are {SETTINGS}")
    return settings


def main() -> None:
    global PASSES
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT / "data" / "mnist"))
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
    parser.add_argument("--timing", default="concurrent", choices=["concurrent", "own-core"],
                        help="with --art-seeds: 'own-core' when each ART process has a core to itself "
                             "(at most as many one-thread processes as cores, nothing else running); "
                             "those times count for the speed-ups")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of ART in --art-seeds")
    parser.add_argument("--merge", nargs="+", default=[], metavar="JSON",
                        help="add the rows of these files to --out and rebuild its summary")
    parser.add_argument("--art-call-cost", action="store_true",
                        help="time ART's single-image DeepFool at 1 and 2 threads into --out")
    parser.add_argument("--table", action="store_true", help="print the Markdown table of --out and exit")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per boundgeo method")
    parser.add_argument("--settings", nargs="+", default=None, metavar="NORM:XI",
                        help="only these settings in the main run (default: all four)")
    parser.add_argument("--fit", type=int, default=1000, help="fit on the first N of images [8000, 9000)")
    parser.add_argument("--passes", type=int, default=PASSES, help="passes of every method and of ART")
    parser.add_argument("--quick", action="store_true",
                        help="--settings l2:3 --seeds 1 --fit 100 --passes 1, into analysis/results/quick/ "
                             "(unless --out)")
    parser.add_argument("--out", default=None, help="default analysis/results/bench_universal.json")
    args = parser.parse_args()
    if args.quick:
        args.settings, args.seeds, args.fit, args.passes = args.settings or ["l2:3"], 1, min(args.fit, 100), 1
    args.out = args.out or str(ROOT / "analysis" / "results" / ("quick" if args.quick else "")
                               / "bench_universal.json")
    PASSES = args.passes
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
    settings = parse_settings(args.settings) if args.settings else SETTINGS
    trained, x_fit, x_eval = load_split(args.data_dir, args.fit)
    model = trained.model.eval()
    clf = bg.Classifier(model)
    print(f"MNIST CNN (held-out accuracy {trained.accuracy:.4f}); fit on {len(x_fit)} images, evaluate on "
          f"{len(x_eval)} held-out; {PASSES} passes, delta {DELTA}; torch threads {torch.get_num_threads()}")

    result = {
        "environment": env,
        "benchmark": "universal",
        "setup": {"model": "reference MNIST CNN, trained on MNIST test images [0, 8000)",
                  "fit": f"MNIST test images [8000, {8000 + len(x_fit)})", "eval": "MNIST test images [9000, 10000)",
                  "passes": PASSES, "delta": DELTA, "evaluator": "bg.fooling_rate (prediction change, clipped)",
                  "settings": [{"norm": n, "xi": xi} for n, xi in settings]},
        "peer_settings": {
            "boundgeo": {"torch_threads": torch.get_num_threads(), "batch_size": "boundgeo's default",
                         "why": "the machine's default threads; its batched DeepFool uses both cores"},
            "art": {"torch_threads": 1, "batch_size": 1,
                    "why": "UniversalPerturbation calls DeepFool on one image at a time (batch 1 is ART's "
                           "algorithm); one thread is its fastest (art_seconds_per_call_by_threads, from "
                           "--art-call-cost)"}},
        "rows": [],
    }
    out = Path(args.out)
    reused = []
    if args.reuse_art:
        previous = json.loads(out.read_text())
        when = previous.get("environment", {}).get("date_utc_finished") or previous.get("finished_at") or time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(out.stat().st_mtime))
        rerun = set(parse_settings(args.rerun_art))
        reused = [dict(r, reused_from_run_at=r.get("reused_from_run_at", when)) for r in previous["rows"]
                  if r["library"] == "art" and (r["norm"], r["xi"]) not in rerun]
        if not reused:
            raise SystemExit(f"--reuse-art: {out} holds no ART rows")

    def record(row):
        result["rows"].append(row)
        finish(env)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"{row['library']:>10} {row['method']:>9} {row['norm']:>4} xi={row['xi']:<4} "
              f"seed={row.get('seed', '-')}: held-out fooling "
              f"{row['eval_fooling_rate']:.3f} (fit {row['fit_fooling_rate']:.3f}), ‖v‖ {row['norm_of_v']:.3f}, "
              f"{row['seconds']:.1f} s", flush=True)

    for row in reused:  # first, so that an interrupted run still has them in the JSON
        record(row)
    for norm, xi in settings:
        for method in METHODS:
            for seed in range(args.seeds):
                uap = bg.universal_perturbation(clf, x_fit, xi=xi, norm=norm, delta=DELTA, max_passes=PASSES,
                                                method=method, eval_data=x_eval, seed=seed, progress=False)
                record({**boundgeo_row(uap, method, seed), "threads": torch.get_num_threads()})
    have = {(r["norm"], r["xi"]) for r in reused}
    if not args.skip_art:  # ART's missing settings (all of them without --reuse-art)
        for norm, xi in [setting for setting in settings if setting not in have]:
            record(art_row(model, x_fit, x_eval, norm, xi, seed=0, threads=1, timing="alone"))
    attach_ratios(result)
    finish(env)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
