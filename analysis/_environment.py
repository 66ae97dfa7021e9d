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
    return [line for line in lines if not line[3:].strip('"').startswith(ignore)]


# The code that computes results: a regeneration may span several commits (it takes longer
# than one sitting) as long as none of these files changed. The README, the tests, the tables'
# renderer and reproduce.py itself do not change a result.
CODE_PATHS = ("boundgeo", "analysis", "pyproject.toml")
NOT_CODE = (RESULTS_DIR, "analysis/README.md", "analysis/reproduce.py", "analysis/readme_tables.py")


def _is_code(path: str) -> bool:
    return path.startswith(CODE_PATHS) and not path.startswith(NOT_CODE)


def code_version() -> str:
    """A hash of the committed code that computes results (every file under boundgeo/ and
    analysis/ except the results, the README, the renderer and reproduce.py, and
    pyproject.toml): results with the same code version come from the same code, whichever
    commit they name. "unknown" when git cannot tell."""
    import hashlib

    code, out = _git("ls-tree", "-r", "HEAD", "--", *CODE_PATHS)
    if code:
        return "unknown"
    lines = sorted(line for line in out.splitlines() if _is_code(line.split("\t", 1)[-1]))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


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
    and ``uncommitted`` (those lines), ``code_version`` (:func:`code_version`) and ``code_clean``
    (nothing uncommitted in that code), ``torch``, ``numpy``, ``python``, ``boundgeo``,
    ``torch_threads`` (``torch.get_num_threads()``), ``cpu_count`` (``os.cpu_count()``, logical
    CPUs of the machine), ``cpu_model``, ``date_utc`` (ISO 8601), ``load_average_before`` (1, 5
    and 15 minutes), plus ``extra``.
    """
    import numpy as np
    import torch

    import boundgeo

    code, head = _git("rev-parse", "HEAD")
    dirty = uncommitted()
    env = {
        "commit": head.strip() if not code else "unknown",
        "tree_clean": not dirty,
        "uncommitted": dirty,
        "code_version": code_version(),
        "code_clean": not [line for line in dirty if line == "git status failed" or _is_code(line[3:].strip('"'))],
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
