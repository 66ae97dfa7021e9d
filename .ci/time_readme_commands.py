"""Run the README's two commands in a fresh clone and a fresh virtual environment, timed.

    python .ci/time_readme_commands.py            # writes analysis/results/readme_commands.json

The README starts with two commands: one installs the project and runs the demo, one runs the
tests. This clones the committed HEAD into a temporary folder (nothing uncommitted comes
along), creates a virtual environment there, links the shared data as `.ci/run` does, and runs
the README's first command part by part (each `&&` part timed: the torch/torchvision pair, the
project, the demo), the demo once more (warm), and the README's second command (the test
suite, what CI runs). The commands are read from the README itself, so what is timed is what a
user types. The seconds, exit codes and pytest's summary go to
analysis/results/readme_commands.json with the environment block of analysis/_environment.py;
the README's "First run and CI" figures are rendered from it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "analysis"))
from _environment import environment, finish  # noqa: E402

OUT = ROOT / "analysis" / "results" / "readme_commands.json"


def readme_commands(readme: Path) -> list[str]:
    """The two command lines of the README's first ```bash block."""
    match = re.search(r"```bash\n(.*?)```", readme.read_text(), re.S)
    if match is None:
        raise SystemExit(f"{readme} has no ```bash block")
    lines = [line.strip() for line in match.group(1).splitlines() if line.strip()]
    if len(lines) != 2:
        raise SystemExit(f"the README's first bash block should hold two commands, not {len(lines)}")
    return lines


def run(command: str, cwd: Path, env: dict[str, str], log: Path) -> dict:
    print(f"$ {command}", flush=True)
    start = time.perf_counter()
    with log.open("a") as handle:
        handle.write(f"\n$ {command}\n")
        handle.flush()
        code = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, stdout=handle,
                              stderr=subprocess.STDOUT).returncode
    seconds = round(time.perf_counter() - start, 1)
    print(f"  exit {code}, {seconds} s", flush=True)
    return {"command": command, "exit_code": code, "seconds": seconds}


def main() -> int:
    install_and_demo, tests = readme_commands(ROOT / "README.md")
    record = {"environment": environment(), "commands": [], "what": (
        "the README's two commands in a fresh clone of HEAD and a fresh virtual environment, "
        "each part of the first command timed; then the demo once more, warm")}
    with tempfile.TemporaryDirectory(prefix="boundgeo-readme-") as tmp:
        clone = Path(tmp) / "boundgeo"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        log = Path(tmp) / "log.txt"
        venv = Path(tmp) / "venv"
        env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
        env.pop("PYTHONPATH", None)
        # the suite timed here checks which code version every result comes from; the file this
        # run is about to rewrite still holds the previous run's (tests/test_readme.py)
        env["BOUNDGEO_TIMING_README_COMMANDS"] = "1"
        steps = [("venv", f"python3 -m venv {venv} && python -m pip install --quiet --upgrade pip")]
        parts = [part.strip() for part in install_and_demo.split("&&")]
        names = ["torch_pair", "project", "demo_first_run"]
        if len(parts) != len(names):
            raise SystemExit(f"expected the first command in {len(names)} parts, found {parts}")
        steps += list(zip(names, parts))
        steps.append(("demo_warm", parts[-1]))
        shared = (ROOT.parent / "shared" / "data").resolve()
        steps.append(("link_data", f"mkdir -p data && ln -sfn {shared / 'mnist'} data/mnist && "
                                   f"ln -sfn {shared / 'cifar10-test-jpeg'} data/cifar10"))
        steps.append(("tests", tests))
        for name, command in steps:
            entry = {"step": name, **run(command, clone, env, log)}
            record["commands"].append(entry)
            if entry["exit_code"]:
                break
        text = log.read_text()
        summary = re.findall(r"^=*\s*(\d+ passed.*?)\s*=*$", text, re.M)
        record["pytest_summary"] = summary[-1] if summary else None
        record["log_tail"] = text[-3000:]
    record["environment"] = finish(record["environment"])
    OUT.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {OUT}")
    return max(entry["exit_code"] for entry in record["commands"])


if __name__ == "__main__":
    sys.exit(main())
