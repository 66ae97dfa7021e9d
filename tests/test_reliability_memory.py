"""Memory of boundary_normals(out=DIR) stays flat over shards (issue 13, durability).

A run writes each shard to disk and keeps only its manifest entry (about 300 bytes) in memory.
The resident memory of a child process is sampled after every shard; past the allocator's
warm-up it must not grow by more than BOUND_MB over 40 shards (the median of the last 5 samples
against the median of the 5 before the warm-up ends: single samples swing by up to 9 MB either
way as the allocator takes and returns memory). A second child that keeps each shard in memory,
as a leak would, shows that the bound catches one.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import textwrap

SHARDS, SHARD_SIZE, WARM_UP = 60, 200, 20
BOUND_MB = 15.0  # measured single-sample growth -9 to +9 MB; keeping every shard: +59 MB
EDGE = 5

CHILD = textwrap.dedent(
    f"""
    import json, sys
    import torch
    from torch import nn
    import boundgeo as bg

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    x = torch.rand({SHARDS * SHARD_SIZE}, 1, 28, 28)
    kept, samples = [], []
    save = bg.BoundaryPoints.save

    def rss_mb():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024

    def sampled_save(self, path):
        stem = save(self, path)
        if "shards" in str(path):
            if sys.argv[2] == "leak":
                kept.append(self)
            samples.append(rss_mb())
        return stem

    bg.BoundaryPoints.save = sampled_save
    bg.boundary_normals(bg.Classifier(model), x, out=sys.argv[1], shard_size={SHARD_SIZE},
                        batch_size={SHARD_SIZE}, progress=False)
    print(json.dumps(samples))
    """
)


def _growth_after_warm_up(tmp_path, mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / mode), mode], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    samples = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(samples) == SHARDS
    return statistics.median(samples[-EDGE:]) - statistics.median(samples[WARM_UP - EDGE:WARM_UP])


def test_resident_memory_is_flat_over_shards_and_a_kept_shard_would_show(tmp_path):
    flat = _growth_after_warm_up(tmp_path, "run")
    assert flat < BOUND_MB, f"RSS grew {flat:.1f} MB over {SHARDS - WARM_UP} shards"
    leaking = _growth_after_warm_up(tmp_path, "leak")
    assert leaking > 2.5 * BOUND_MB, f"a kept shard per step grew RSS by {leaking:.1f} MB only"
