"""The ``"environment"`` block every results JSON in analysis/results/ carries at its top level.

    from _environment import environment, finish

    env = environment()            # at the start: commit, versions, threads, CPU, date, load
    ...                            # the work
    result = {"environment": finish(env), ...}   # adds wall_seconds and load_average_after

Scripts in analysis/ import it directly (Python puts the script's folder first on sys.path);
scripts in analysis/benchmarks/ put analysis/ on sys.path first. Times are in seconds.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = "analysis/results/"
_STARTED: dict[int, float] = {}


def _git(*args: str) -> tuple[int, str]:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return 1, ""
    return done.returncode, done.stdout


def uncommitted(ignore: str = RESULTS_DIR) -> list[str]:
    """``git status --porcelain`` lines, without those under ``ignore`` (the results being written).

    Returns ``["git status failed"]`` when git cannot tell, so that an unknown tree never passes
    for a clean one.
    """
    code, out = _git("status", "--porcelain", "--untracked-files=all")
    if code:
        return ["git status failed"]
    lines = [line for line in out.splitlines() if line.strip()]
    return [line for line in lines if not line[3:].strip('"').startswith(ignore)
            or any(path in MODEL_FILES for path in _paths(line))]


# The code that computes results: a regeneration may span several commits (it takes longer
# than one sitting) as long as none of these files changed. The README, the tests, the tables'
# renderer and reproduce.py itself do not change a result.
CODE_PATHS = ("boundgeo", "analysis", "pyproject.toml")
NOT_CODE = (RESULTS_DIR, "analysis/README.md", "analysis/reproduce.py", "analysis/readme_tables.py")
# Trained models that results load, kept beside the results: a retrained checkpoint is another
# model under the same name. They stay out of code_version and scope_version (whose definitions
# the recorded versions of past results are checked against); instead every result records their
# sha256 (``model_files``), a result whose record differs from the files now is not current
# (:func:`model_files_changed`), and an uncommitted change to one makes the tree dirty.
MODEL_FILES = ("analysis/results/cifar10_resnet.pt",)


def _is_code(path: str) -> bool:
    return path.startswith(CODE_PATHS) and not path.startswith(NOT_CODE)


def model_files() -> dict[str, str | None]:
    """sha256 of each of :data:`MODEL_FILES` as it is now on disk (None where it is missing)."""
    import hashlib

    found = {}
    for path in MODEL_FILES:
        try:
            found[path] = hashlib.sha256((ROOT / path).read_bytes()).hexdigest()
        except OSError:
            found[path] = None
    return found


def model_files_changed(env: dict) -> str | None:
    """Why the trained model files a result loaded may not be those on disk now, or None: they
    differ from the ``model_files`` its environment recorded, or it recorded none (computed
    before they were recorded)."""
    recorded = env.get("model_files")
    if not isinstance(recorded, dict):
        return "it records no fingerprint of the trained model files it may load (computed before they were recorded)"
    now = model_files()
    changed = [path for path in now if recorded.get(path) != now[path]]
    return f"{', '.join(changed)} changed since it was computed" if changed else None


def code_version(commit: str = "HEAD") -> str:
    """A hash of the code that computes results (every file under boundgeo/ and analysis/ except
    the results, the README, the renderer and reproduce.py, and pyproject.toml) as committed at
    ``commit``: results with the same code version come from the same code, whichever commit they
    name. "unknown" when git cannot tell (no repository, or the commit is not at hand)."""
    import hashlib

    code, out = _git("ls-tree", "-r", commit, "--", *CODE_PATHS)
    if code:
        return "unknown"
    lines = sorted(line for line in out.splitlines() if _is_code(line.split("\t", 1)[-1]))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


# The code a result depends on, its *scope*: what every result shares (boundgeo/, pyproject.toml
# and the studies in analysis/, which also train the models the benchmarks load) and, for a
# benchmark, its own script in analysis/benchmarks/ and the scripts there it imports. A change to
# one benchmark script then leaves the other results current; code_version (the whole code)
# stays recorded as well. This file records the environment and computes nothing, so it is in no
# scope: changing how results are recorded does not make them stale.
BENCHMARKS = "analysis/benchmarks/"
NOT_SCOPE = NOT_CODE + ("analysis/_environment.py",)
# ``from m import ...`` names one module, ``import a, b as c`` several
_LOCAL_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+(\w+)|import[ \t]+([\w \t,.]+))", re.M)


def _imported(text: str) -> list[str]:
    """The top-level module names a Python source imports at the start of a line."""
    names = []
    for single, several in _LOCAL_IMPORT.findall(text):
        if single:
            names.append(single)
        else:
            names += [part.split()[0].split(".")[0] for part in several.split(",") if part.strip()]
    return names


def _shared(path: str) -> bool:
    if path.startswith(NOT_SCOPE):
        return False
    if path.startswith("boundgeo/") or path == "pyproject.toml":
        return True
    rest = path[len("analysis/"):]
    return path.startswith("analysis/") and "/" not in rest and rest.endswith(".py")


def result_script(name: str) -> str | None:
    """The benchmark script whose scope a result file in analysis/results/ has (``bench_x.json``:
    ``analysis/benchmarks/bench_x.py``), or None for the shared scope of every other result."""
    stem = Path(name).name.split(".")[0]
    return f"{BENCHMARKS}{stem}.py" if stem.startswith("bench_") else None


def running_script() -> str | None:
    """The script this process runs, relative to the repository, when it is a benchmark; else None."""
    import sys

    try:
        path = Path(sys.argv[0]).resolve().relative_to(ROOT).as_posix()
    except (ValueError, IndexError, OSError):
        return None
    return path if path.startswith(BENCHMARKS) else None


def scope(script: str | None, commit: str = "HEAD") -> list[str] | None:
    """The files (paths) of the scope of ``script`` (None: the shared scope) at ``commit``, sorted;
    None when git cannot tell (no repository, or the commit is not at hand)."""
    code, out = _git("ls-tree", "-r", "--name-only", commit, "--", *CODE_PATHS)
    if code:
        return None
    listed = set(out.splitlines())
    files = {path for path in listed if _shared(path)}
    todo = [script] if script else []
    while todo:
        path = todo.pop()
        if path in files or path not in listed:
            continue
        files.add(path)
        code, text = _git("show", f"{commit}:{path}")
        if code:
            return None
        todo += [f"{BENCHMARKS}{module}.py" for module in _imported(text)]
    if script and script not in files:
        return None
    return sorted(files)


def scope_version(script: str | None, commit: str = "HEAD", files: list[str] | None = None) -> str:
    """A hash of the committed files of ``script``'s scope (:func:`scope`) at ``commit``: a result
    is current when the scope version it records equals this at HEAD. "unknown" when git cannot
    tell. ``files``: the scope, when the caller has it already."""
    import hashlib

    files = scope(script, commit) if files is None else files
    if files is None:
        return "unknown"
    code, out = _git("ls-tree", commit, "--", *files)
    if code or len(out.splitlines()) != len(files):
        return "unknown"
    return hashlib.sha256(("\n".join(sorted(out.splitlines())) + "\n").encode()).hexdigest()[:16]


def _paths(line: str) -> list[str]:
    """The paths of a ``git status --porcelain`` line: one, or both sides of a rename."""
    return [part.strip().strip('"') for part in line[3:].split(" -> ")]


def scope_clean(lines: list[str], script: str | None, commit: str = "HEAD", files: list[str] | None = None) -> bool:
    """Whether none of the ``git status --porcelain`` ``lines`` (:func:`uncommitted`) touches the
    code of ``script``'s scope at ``commit``: a file of the scope, a file the shared scope would
    take in (under boundgeo/, pyproject.toml, a study in analysis/), or a benchmark file that is
    not committed (the script may import it). Other lines, such as another benchmark's script, this
    module, the renderer or the README, leave the scope clean. False when git cannot tell.
    ``files``: the scope, when the caller has it already."""
    if "git status failed" in lines:
        return False
    files = scope(script, commit) if files is None else files
    code, out = _git("ls-tree", "-r", "--name-only", commit, "--", BENCHMARKS)
    if files is None or code:
        return False
    tracked = set(out.splitlines())
    for line in lines:
        for path in _paths(line):
            if (path in files or _shared(path) or path in MODEL_FILES
                    or (path.startswith(BENCHMARKS) and path not in tracked)):
                return False
    return True


def uncommitted_code() -> list[str]:
    """Those of :func:`uncommitted` lines that touch the code :func:`code_version` covers."""
    return [line for line in uncommitted() if line == "git status failed" or _is_code(line[3:].strip('"'))]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(**extra) -> dict:
    """Where and with what a result was computed; pass it to :func:`finish` when the work is done.

    Keys: ``commit`` (full hash), ``tree_clean`` (nothing uncommitted outside analysis/results/)
    and ``uncommitted`` (those lines), ``code_version`` (:func:`code_version`, the whole code) and
    ``whole_code_clean`` (nothing uncommitted in that code), ``scope`` (the benchmark script this
    process runs, or "shared"), ``scope_version`` (:func:`scope_version` of that scope) and
    ``code_clean`` (:func:`scope_clean`: nothing uncommitted in the code of that scope, which is
    what makes the scope version the code that ran), ``torch``, ``numpy``, ``python``, ``boundgeo``,
    ``torch_threads`` (``torch.get_num_threads()``), ``cpu_count`` (``os.cpu_count()``, logical
    CPUs of the machine), ``cpu_model``, ``date_utc`` (ISO 8601), ``load_average_before`` (1, 5
    and 15 minutes), plus ``extra``.
    """
    import numpy as np
    import torch

    import boundgeo

    code, head = _git("rev-parse", "HEAD")
    dirty = uncommitted()
    script = running_script()
    files = scope(script)  # once, for both the scope version and its cleanliness
    env = {
        "commit": head.strip() if not code else "unknown",
        "tree_clean": not dirty,
        "uncommitted": dirty,
        "code_version": code_version(),
        "scope": script or "shared",
        "scope_version": scope_version(script, files=files) if files is not None else "unknown",
        "code_clean": scope_clean(dirty, script, files=files) if files is not None else False,
        "whole_code_clean": not [line for line in dirty if line == "git status failed"
                                 or any(_is_code(path) or path in MODEL_FILES for path in _paths(line))],
        "model_files": model_files(),
        "boundgeo": boundgeo.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_before": list(os.getloadavg()),
        **extra,
    }
    _STARTED[id(env)] = time.perf_counter()
    return env


def finish(env: dict) -> dict:
    """``env`` with ``wall_seconds`` (since :func:`environment` made it) and ``load_average_after``."""
    started = _STARTED.get(id(env))
    if started is None:
        raise ValueError("finish() takes the dict environment() returned")
    env["wall_seconds"] = round(time.perf_counter() - started, 2)
    env["load_average_after"] = list(os.getloadavg())
    env["date_utc_finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return env
