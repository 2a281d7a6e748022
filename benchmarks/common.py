"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_json_subprocess(code: str, timeout: float) -> dict | None:
    """Runs `code` in a fresh interpreter (one intra-op thread) and parses its last stdout line
    as JSON; prints the tail of stderr and returns None when it fails."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=timeout)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])
