"""Boundary normals in one process against two under torch.distributed, on this 2-core machine.

    python analysis/benchmarks/bench_distributed.py [--num-inputs 4000] [--data-dir data/mnist] [--quick]

The reference MNIST CNN (boundgeo.zoo, trained on MNIST test images [0, 8000)); its boundary
normals (DeepFool l2, batch 256, shards of 256) of the first N MNIST test images (N = 4,000:
mostly images it was trained on, which does not matter for a timing), written to a run
directory with ``bg.boundary_normals(out=DIR)``:

- one process at one thread, and at two threads (what a user gets without torchrun);
- two processes of one thread each (gloo, ``torch.multiprocessing.spawn``, a file rendezvous),
  each computing every other shard, rank 0 then writing points/.

The time of each is the wall time of the ``boundary_normals`` call (the processes' start-up,
torch's import and the model's training are outside it; the two ranks are lined up by a
barrier first, and the slower rank's time counts). The "communication share" is the time the
ranks spend inside boundgeo's collectives (exchanging shard counts and summaries, and rank 0's
run.json and points/ while the other waits), as a share of the call: it includes waiting for
the slower rank. The two-process result is checked to be bit-identical to the one-process one.
Best of ``--repeats`` runs each (default 2). Writes analysis/results/bench_distributed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "analysis"))
from _environment import environment, finish  # noqa: E402

RESULTS = ROOT / "analysis" / "results" / "bench_distributed.json"
BATCH = 256


def _model_and_data(data_dir: str, n: int):
    import boundgeo as bg

    trained = bg.zoo.train_reference("mnist", "cnn", root=data_dir)
    x, y = bg.load_dataset("mnist", root=data_dir, split="test")
    return bg.Classifier(trained.model.eval()), x[:n], y[:n], trained.accuracy


def _timed_collectives():
    """Wrap the World collectives so that the time spent in them is summed (seconds)."""
    from boundgeo.distributed import World

    spent = {"seconds": 0.0}
    for name in ("all_gather", "broadcast", "all_reduce_sum"):
        original = getattr(World, name)

        def timed(self, *args, _original=original, **kwargs):
            start = time.perf_counter()
            try:
                return _original(self, *args, **kwargs)
            finally:
                spent["seconds"] += time.perf_counter() - start

        setattr(World, name, timed)
    return spent


def _collect(clf, x, y, out: Path):
    import boundgeo as bg

    return bg.boundary_normals(clf, (x, y), out=out, resume=False, batch_size=BATCH, progress=False)


def _fields(pts) -> dict:
    return {name: getattr(pts, name).clone() for name in ("perturbation", "normal", "margin", "index", "status")}


def _worker(rank: int, size: int, folder: str, data_dir: str, n: int, repeats: int) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    folder = Path(folder)
    clf, x, y, _ = _model_and_data(data_dir, n)
    dist.init_process_group("gloo", init_method=f"file://{folder / 'rendezvous'}", rank=rank, world_size=size)
    spent = _timed_collectives()
    runs = []
    try:
        for _ in range(repeats):
            dist.barrier()
            spent["seconds"] = 0.0
            start = time.perf_counter()
            pts = _collect(clf, x, y, folder / "two")
            runs.append({"seconds": time.perf_counter() - start, "collectives": spent["seconds"]})
        torch.save({"runs": runs, "points": _fields(pts)}, folder / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def one_process(data_dir: str, n: int, threads: int, folder: Path, repeats: int) -> tuple[list[float], dict]:
    torch.set_num_threads(threads)
    clf, x, y, _ = _model_and_data(data_dir, n)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pts = _collect(clf, x, y, folder / f"one_{threads}")
        times.append(time.perf_counter() - start)
    return times, _fields(pts)


def two_processes(data_dir: str, n: int, folder: Path, repeats: int) -> tuple[list[dict], list[dict]]:
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(2, str(folder), data_dir, n, repeats), nprocs=2, join=True)
    saved = [torch.load(folder / f"rank{rank}.pt", weights_only=False) for rank in range(2)]
    return [s["runs"] for s in saved], [s["points"] for s in saved]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-inputs", type=int, default=4000)
    parser.add_argument("--data-dir", default=str(ROOT / "data" / "mnist"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="500 inputs, one repeat, into analysis/results/quick/")
    parser.add_argument("--out", default=None, help="the JSON to write")
    args = parser.parse_args(argv)
    n, repeats = (500, 1) if args.quick else (args.num_inputs, args.repeats)
    out = Path(args.out) if args.out else (RESULTS.parent / "quick" / RESULTS.name if args.quick else RESULTS)
    env = environment()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = []
        reference = None
        for threads in (1, 2):
            times, points = one_process(args.data_dir, n, threads, folder, repeats)
            reference = reference or points
            rows.append({"setting": f"1 process, {threads} thread{'s' if threads > 1 else ''}", "processes": 1,
                         "threads_per_process": threads, "seconds": min(times), "all_seconds": times})
            print(f"{rows[-1]['setting']}: {min(times):.1f} s")
        runs, points = two_processes(args.data_dir, n, folder, repeats)
        identical = all(torch.equal(p[name], reference[name]) for p in points for name in reference)
        per_repeat = [max(r[i]["seconds"] for r in runs) for i in range(repeats)]
        best = min(range(repeats), key=lambda i: per_repeat[i])
        collectives = max(r[best]["collectives"] for r in runs)
        rows.append({"setting": "2 processes (torch.distributed, gloo), 1 thread each", "processes": 2,
                     "threads_per_process": 1, "seconds": per_repeat[best], "all_seconds": per_repeat,
                     "collective_seconds_per_rank": [r[best]["collectives"] for r in runs],
                     "communication_share": collectives / per_repeat[best],
                     "bit_identical_to_one_process": identical})
        print(f"{rows[-1]['setting']}: {per_repeat[best]:.1f} s, collectives {collectives:.2f} s, "
              f"bit-identical: {identical}")
    one = rows[0]["seconds"]
    result = {
        "environment": finish(env),
        "benchmark": "boundary normals, 1 process against 2 (torch.distributed)",
        "setup": {"model": "reference MNIST CNN (boundgeo.zoo), trained on MNIST test images [0, 8000)",
                  "inputs": f"the first {n} MNIST test images", "deepfool": f"l2, batch {BATCH}, shards of {BATCH}",
                  "timing": f"best of {repeats}; the call to boundary_normals(out=DIR) only"},
        "rows": rows,
        "speedup_two_processes_vs_one_thread": one / rows[2]["seconds"],
        "speedup_two_processes_vs_two_threads": rows[1]["seconds"] / rows[2]["seconds"],
        "seconds_per_input_one_process": one / n,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"speed-up of 2 processes: {result['speedup_two_processes_vs_one_thread']:.2f}x against 1 process at "
          f"1 thread, {result['speedup_two_processes_vs_two_threads']:.2f}x against 1 process at 2 threads; "
          f"communication share {rows[2]['communication_share']:.1%}; wrote {out}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
