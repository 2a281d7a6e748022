"""docs/custom_env.md's example runs as documented: training on a user's env with callbacks,
evaluation and observation normalization, then replaying its checkpoint from the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_custom_env_example_trains_and_its_checkpoint_replays(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "custom_env.py"),
                           "--iterations", "5"], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, check=True)
    lines = done.stdout.splitlines()
    assert sum(line.startswith("iter ") for line in lines) == 5
    assert "comfortable" in lines[0] and "evaluation" in lines[4]  # evaluation_interval=5
    checkpoint = next(line.split()[1] for line in lines if line.startswith("checkpoint:"))
    replay = subprocess.run(
        [sys.executable, "-m", "flowrl.cli", "rollout", checkpoint, "--episodes", "2",
         "--env-module", "examples/custom_env.py", "--out", str(tmp_path / "episodes.json")],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert replay.returncode == 0, replay.stderr[-2000:]
    assert "mean return over 2 episodes" in replay.stdout
