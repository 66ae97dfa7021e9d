"""Regenerate every published result: each analysis script and benchmark in its own process.

    python analysis/reproduce.py                      # everything (about 4 hours on 2 cores: --list)
    python analysis/reproduce.py --quick              # every script at a small size, about 9 minutes
    python analysis/reproduce.py --only curvature --only bench_deepfool
    python analysis/reproduce.py --list               # the names, with estimated durations

A full run writes into analysis/results/ and refuses to start when the code that computes results
has uncommitted changes (``--allow-dirty`` overrides): every JSON records the commit it was
computed on and the version of the code it depends on (its top-level "environment",
analysis/_environment.py: ``scope_version`` hashes the scope of a result, boundgeo/,
pyproject.toml and the studies in analysis/ that every result shares, plus a benchmark's own
script and the benchmark scripts it imports; not the READMEs, the tests, this file or the
renderer). A result is current while its scope is unchanged, so a change to one benchmark script
makes only its own result stale. A regeneration takes longer than one sitting (``--list``), so it
may span commits: ``--resume`` skips the scripts whose JSON files are current, and ``--list``
says which those are. ``--quick`` runs each script with its own ``--quick`` flag, which
shrinks the work and writes into analysis/results/quick/ (git-ignored), so a quick run never
touches the published results.

The scripts run in the order of STEPS, cheapest first, one after the other. A failing script is
reported and the rest still run; the exit status is then 1. After each script its JSON files are
checked: written during this run, with a top-level "environment" (in a full run, with the
current scope version, and with that code committed). The
per-script wall seconds and exit codes go to analysis/results/reproduce.json (quick:
analysis/results/quick/reproduce.json), with the environment of the whole run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from _environment import (RESULTS_DIR, environment, finish, model_files_changed, result_script, scope_version,
                          uncommitted_code)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "analysis" / "results"
QUICK = RESULTS / "quick"


@dataclass(frozen=True)
class Step:
    """One script: its full and quick command lines (argv after the Python interpreter, paths
    relative to the repository; ``{tmp}`` is a scratch folder of the run), the JSON files it
    writes (relative to the results folder) and estimated seconds on the shared 2-core machine:
    quick ones measured by ``--quick`` at a load average of about 2, full ones by the
    regeneration of code version 4b24a80bd7ae78ab on the idle machine (bench_deepfool's by that of
    8cd265bad3998bcb, at best of 5; bench_universal's on a
    machine shared with its own ART seeds and low-priority tests: its ART settings at one
    thread dominate)."""

    name: str
    full: tuple[tuple[str, ...], ...]
    quick: tuple[tuple[str, ...], ...]
    outputs: tuple[str, ...]
    full_seconds: float
    quick_seconds: float
    note: str = ""


BU = "analysis/benchmarks/bench_universal.py"
# ART's runs for bench_universal, in committed parts that a later regeneration keeps where they are
# current (bench_universal --art-seeds is resumable): per model, seed 0 timed at one thread (ART's
# fastest whole runs; each process on a core of its own) at every setting; seeds 1-2 untimed, a part
# per setting; and seed 0 at two threads, alone on the machine, at one setting: the whole runs that
# show which thread count is ART's fastest (peer_settings)
ART_PART_SETTINGS = {"mnist": ("l2:3", "l2:5", "linf:0.1", "linf:0.2"),
                     "cifar10": ("l2:1.12", "linf:8/255", "linf:10/255")}
ART_TWO_THREADS = {"mnist": "l2:5", "cifar10": "l2:1.12"}


def _art_parts() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(part path, bench_universal arguments) of every ART part, in the order they run."""
    parts = []
    for model, settings in ART_PART_SETTINGS.items():
        def part(tag: str, seeds: tuple[str, ...], chosen: tuple[str, ...], timing: str, threads: str = "1"):
            path = f"analysis/results/parts/bench_universal.art-{model}-{tag}.json"
            parts.append((path, ("--model", model, "--threads", threads, "--art-seeds", *seeds, "--art-settings",
                                 *chosen, "--timing", timing, "--out", path)))

        def tag(setting: str) -> str:
            return setting.replace(":", "_").replace("/", "-")

        part("seed0", ("0",), settings, "own-core")
        for setting in settings:
            part(f"{tag(setting)}-seeds12", ("1", "2"), (setting,), "concurrent")
        part(f"{tag(ART_TWO_THREADS[model])}-seed0-2threads", ("0",), (ART_TWO_THREADS[model],), "alone", "2")
    return tuple(parts)


_ART = _art_parts()
ART_PARTS = tuple(path for path, _ in _ART)
ART_PART_COMMANDS = tuple((BU, *argv) for _, argv in _ART)
STEPS = (
    Step("train_reference",
         (("analysis/train_reference.py", "--dataset", "digits", "mnist", "--all", "--check-checkpoint"),),
         (("analysis/train_reference.py", "--dataset", "digits", "mnist", "--all", "--quick"),),
         ("reference_models.json",), 55, 50,
         "accuracies of the six reference models; compares the retrained digits CNN with the shipped "
         "boundgeo/weights/digits_cnn.pt instead of overwriting it"),
    Step("uap_section4", (("analysis/uap_section4.py",),), (("analysis/uap_section4.py", "--quick"),),
         ("section4.json",), 165, 20),
    Step("categories", (("analysis/categories.py",),), (("analysis/categories.py", "--quick"),),
         ("categories.json",), 80, 25),
    Step("curvature", (("analysis/curvature.py",),), (("analysis/curvature.py", "--quick"),),
         ("curvature.json",), 95, 20),
    Step("geometry", (("analysis/geometry.py",),), (("analysis/geometry.py", "--quick"),),
         ("geometry.json",), 140, 15),
    Step("transfer", (("analysis/transfer.py",),), (("analysis/transfer.py", "--quick"),),
         ("transfer.json",), 275, 75),
    Step("cifar10", (("analysis/cifar10.py",),), (("analysis/cifar10.py", "--quick"),),
         ("cifar10.json",), 1000, 60,
         "+630 s when analysis/results/cifar10_resnet.pt is missing or stale (the quick run then stops)"),
    Step("bench_deepfool", (("analysis/benchmarks/bench_deepfool.py",),),
         (("analysis/benchmarks/bench_deepfool.py", "--quick"),), ("bench_deepfool.json",), 1750, 200),
    Step("bench_spectrum",
         (("analysis/benchmarks/bench_spectrum.py", "--only", "memory,memory_cnn,float16,speed"),),
         (("analysis/benchmarks/bench_spectrum.py", "--quick"),), ("bench_spectrum.json",), 620, 110),
    Step("bench_universal",
         ((BU, "--skip-art", "--out", "{tmp}/bu.json"),
          (BU, "--model", "cifar10", "--skip-art", "--out", "{tmp}/bu_cifar10.json"),
          *ART_PART_COMMANDS,
          (BU, "--fresh", "--merge", "{tmp}/bu.json", "{tmp}/bu_cifar10.json", *ART_PARTS),
          (BU, "--add-faithful", "3"),
          (BU, "--art-orders")),
         ((BU, "--quick"),), ("bench_universal.json",), 23500, 70,
         "boundgeo's methods (5 seeds x 6 methods x 4 settings on the MNIST CNN, 20 min; on the CIFAR-10 "
         "ResNet at 3 settings, 6 min); ART at seeds 0-2 at every setting at one thread (10-21 min a run on "
         "either model; seed 0 timed, seeds 1-2 untimed) and seed 0 at two threads at one setting a model "
         "(alone; about 30 min for both) into the parts in analysis/results/parts/, which "
         "are resumable: a run whose fingerprint (model, fit images, ART's settings, threads, versions, "
         "machine) matches is kept and not run again, so with current parts the step takes about 50 min, "
         "and about 6.5 h without them, one command after another (sessions 18-20 ran ART two at a time, "
         "one process per core, about 3.4 h); then merged (ART's runs evaluated again by this code), and "
         "Algorithm 1 as published and on ART's shuffles (about 25 min)"),
    Step("bench_uap_methods", (("analysis/benchmarks/bench_uap_methods.py",),),
         (("analysis/benchmarks/bench_uap_methods.py", "--quick"),), ("bench_uap_methods.json",), 2700, 150,
         "boundgeo's sgd against the published SGD-UAP update (MNIST CNN, 6 settings x 5 fit sets, with the "
         "ablation; CIFAR-10 ResNet at l-inf 8/255 and 10/255), every method with alignment, the fit-size "
         "curve, sgd's cost against its forward and backward passes, and targeted perturbations to each class"),
    Step("bench_imagenet_scale", (("analysis/benchmarks/bench_imagenet_scale.py",),),
         (("analysis/benchmarks/bench_imagenet_scale.py", "--quick"),), ("bench_imagenet_scale.json",), 910, 40),
    Step("bench_distributed", (("analysis/benchmarks/bench_distributed.py",),),
         (("analysis/benchmarks/bench_distributed.py", "--quick"),), ("bench_distributed.json",), 220, 115,
         "normals of 4,000 MNIST images in 1 process (1 and 2 threads) and in 2 (gloo), best of 2"),
)
NAMES = tuple(step.name for step in STEPS)


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def current_version(name: str) -> str:
    """The scope version (analysis/_environment.py) a result file must record to be current."""
    return scope_version(result_script(name))


def output_problems(step: Step, folder: Path, version: Callable[[str], str] | None = current_version,
                    started: float | None = None) -> list[str]:
    """What keeps ``step``'s JSON files from counting as current results: missing, older than
    ``started``, no environment, a scope version other than ``version(name)`` (None: any version,
    for quick runs), or computed with uncommitted code."""
    problems = []
    for name in step.outputs:
        path = folder / name
        if not path.exists():
            problems.append(f"{path} was not written")
            continue
        if started is not None and path.stat().st_mtime < started:
            problems.append(f"{path} was not rewritten by this run")
            continue
        try:
            env = json.loads(path.read_text()).get("environment")
        except (ValueError, AttributeError):
            problems.append(f"{path} is not a JSON object")
            continue
        if not isinstance(env, dict):
            problems.append(f"{path} has no top-level \"environment\"")
        elif version is not None and env.get("scope_version") != version(name):
            problems.append(f"{path}: environment.scope_version is {env.get('scope_version')!r}, not "
                            f"{version(name)}: the code of its scope has changed since")
        elif version is not None and env.get("code_clean") is not True:
            problems.append(f"{path} was computed with uncommitted code ({env.get('uncommitted')})")
        elif version is not None and (changed := model_files_changed(env)):  # hashes the checkpoint once
            problems.append(f"{path}: {changed}")
    return problems


def list_steps(version: Callable[[str], str] | None = None) -> str:
    lines = [f"{'name':<22} {'full':>8} {'quick':>8}  " + ("status   " if version else "") + "writes"]
    for step in STEPS:
        status = ""
        if version:
            status = f"{'current' if not output_problems(step, RESULTS, version) else 'stale':<9}"
        lines.append(f"{step.name:<22} {duration(step.full_seconds):>8} {duration(step.quick_seconds):>8}  "
                     + status + ", ".join(step.outputs) + (f"  ({step.note})" if step.note else ""))
    total_full = sum(s.full_seconds for s in STEPS)
    total_quick = sum(s.quick_seconds for s in STEPS)
    lines.append(f"{'total':<22} {duration(total_full):>8} {duration(total_quick):>8}")
    return "\n".join(lines)


def check_outputs(step: Step, folder: Path, started: float, version: Callable[[str], str] | None) -> list[str]:
    """What is wrong with the JSON files ``step`` should have written in this run (empty when
    nothing); ``version``: the scope version each one's environment must name, by file name
    (None: any, for quick runs, during which a shared checkout may move on)."""
    return output_problems(step, folder, version, started)


def run_step(step: Step, quick: bool, tmp: str, version: Callable[[str], str]) -> dict:
    folder = QUICK if quick else RESULTS
    commands = step.quick if quick else step.full
    started_wall = time.time()
    start = time.perf_counter()
    record: dict = {"commands": [], "exit_code": 0}
    for argv in commands:
        argv = [part.replace("{tmp}", tmp) for part in argv]
        print(f"\n=== {step.name}: python {' '.join(argv)}", flush=True)
        t0 = time.perf_counter()
        code = subprocess.run([sys.executable, *argv], cwd=ROOT).returncode
        record["commands"].append({"argv": argv, "exit_code": code, "seconds": round(time.perf_counter() - t0, 1)})
        if code:
            record["exit_code"] = code
            break  # the later commands of a step build on the earlier ones
    record["seconds"] = round(time.perf_counter() - start, 1)
    if not record["exit_code"]:
        record["problems"] = check_outputs(step, folder, started_wall - 1, None if quick else version)
        if record["problems"]:
            record["exit_code"] = 1
    status = "ok" if not record["exit_code"] else f"FAILED (exit {record['exit_code']})"
    print(f"=== {step.name}: {status}, {duration(record['seconds'])}"
          + "".join(f"\n    {p}" for p in record.get("problems", [])), flush=True)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=list_steps())
    parser.add_argument("--quick", action="store_true",
                        help="every script at a small size, writing into analysis/results/quick/")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this script (repeatable); names from --list")
    parser.add_argument("--list", action="store_true", help="print the names and estimated durations, and stop")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run in full even with uncommitted changes to the code (the results then say so)")
    parser.add_argument("--resume", action="store_true",
                        help="skip the scripts whose JSON files already carry the current version of their code")
    args = parser.parse_args(argv)
    unknown = [name for name in args.only if name not in NAMES]
    if unknown:
        parser.error(f"--only: unknown name(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    version = current_version
    if args.list:
        print(list_steps(version))
        return 0
    if args.quick and args.resume:
        parser.error("--resume applies to full runs (quick results are not kept)")
    if not args.quick and not args.allow_dirty:
        dirty = uncommitted_code()
        if dirty:
            print("reproduce.py: refusing a full run: the code that computes results has uncommitted "
                  "changes (the results would name a version that does not hold the code that made them):\n  "
                  + "\n  ".join(dirty[:20]) + ("\n  ..." if len(dirty) > 20 else "")
                  + "\nCommit them, or pass --allow-dirty, or use --quick.", file=sys.stderr)
            return 2

    steps = [step for step in STEPS if not args.only or step.name in args.only]
    if args.resume:
        done = [step.name for step in steps if not output_problems(step, RESULTS, version)]
        if done:
            print(f"--resume: {', '.join(done)} already carry the current version of their code; skipped")
        steps = [step for step in steps if step.name not in done]
    env = environment(quick=args.quick)
    folder = QUICK if args.quick else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "reproduce.json"
    previous = json.loads(out.read_text()).get("scripts", {}) if out.exists() else {}
    records = {}
    with tempfile.TemporaryDirectory(prefix="boundgeo-reproduce-") as tmp:
        for step in steps:
            records[step.name] = {**run_step(step, args.quick, tmp, version), "commit": env["commit"],
                                  "code_version": env["code_version"]}
            result = {"environment": finish(env), "quick": args.quick, "only": args.only,
                      "scripts": {**previous, **records}}
            out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"\n{'script':<22} {'seconds':>9}  exit")
    for name, record in records.items():
        print(f"{name:<22} {record['seconds']:>9.1f}  {record['exit_code']}")
    failed = [name for name, record in records.items() if record["exit_code"]]
    print(f"total {env['wall_seconds']:.0f} s; wrote {out}"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
