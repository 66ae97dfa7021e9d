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
    and ``uncommitted`` (those lines), ``torch``, ``numpy``, ``python``, ``boundgeo``,
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
