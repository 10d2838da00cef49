"""Peak extra memory of one CA-ToMe matching, measured in a fresh process (CPU).

torch's CPU allocations are invisible to tracemalloc, so a child process compares its peak RSS
(VmHWM) after building the input with its peak after matching: the difference bounds the memory
the matching itself needed at its peak. VmHWM, unlike ru_maxrss, starts afresh at exec, so a
large parent (the benchmark) does not hide the child's peak.
"""

from __future__ import annotations

import json
import subprocess
import sys

from .host import REPO_ROOT

_CHILD = r"""
import json, re, sys, torch
from ca_tome import plan_merge
height, width, channels, batch, threshold = json.loads(sys.argv[1])
torch.set_num_threads(1)
def peak():
    return int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read())[1])
metric = torch.randn(batch, height * width, channels, generator=torch.Generator().manual_seed(0))
metric[:, 1::2] = metric[:, 0::2]  # horizontal neighbours identical: a quarter of tokens merge
before = peak()
plan = plan_merge(metric, height, width, threshold=threshold)
after = peak()
print(json.dumps({"extra_bytes": (after - before) * 1024, "merged": plan.merged_count}))
"""


def peak_matching_memory(height: int, width: int, channels: int = 320, batch: int = 2, threshold: float = 0.7) -> dict:
    """{"extra_bytes": peak extra RSS of plan_merge, "merged": r} for a random metric of that shape."""
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps([height, width, channels, batch, threshold])],
                         cwd=REPO_ROOT, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
