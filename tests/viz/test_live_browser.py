"""The live plan viewer in a real browser: Debian's headless chromium against a short PPO run.

Skipped (with the reason) only where chromium is not installed; `.ci/run` installs it.
"""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser

import pytest

import flowrl
from flowrl.viz import live

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install -y chromium; .ci/run installs it)")

PPO_TINY = {"num_workers": 0, "num_envs_per_worker": 2, "rollout_fragment_length": 50,
            "train_batch_size": 100, "sgd_minibatch_size": 50, "num_sgd_iter": 1, "seed": 1,
            "model": {"fcnet_hiddens": [16]}}


def chromium(*args: str, profile: str) -> subprocess.Popen:
    """Headless chromium; the page's scripts get 3 s of (virtual) time before it reports."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=3000",
               *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class RenderedViewer(HTMLParser):
    """What the rendered page shows: operator boxes, curve points, status, result rows."""

    def __init__(self) -> None:
        super().__init__()
        self.operators: dict[str, float | None] = {}
        self.stats_lines: list[str] = []
        self.curve_points: int | None = None
        self.circles = 0
        self.status = ""
        self.result_keys: list[str] = []
        self._text_target: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if tag == "g" and "node" in classes:
            rate = attributes.get("data-items-per-s")
            self.operators[attributes["data-label"]] = float(rate) if rate else None
        elif tag == "svg" and attributes.get("id") == "curve":
            self.curve_points = int(attributes["data-points"])
        elif tag == "circle" and "point" in classes:
            self.circles += 1
        elif tag == "text" and "stats" in classes:
            self._text_target = "stats"
        elif tag == "span" and attributes.get("id") == "status":
            self._text_target = "status"
        elif tag == "th":
            self._text_target = "th"

    def handle_endtag(self, tag: str) -> None:
        self._text_target = None

    def handle_data(self, data: str) -> None:
        if self._text_target == "stats":
            self.stats_lines.append(data)
        elif self._text_target == "status":
            self.status += data
        elif self._text_target == "th":
            self.result_keys.append(data)


def test_the_live_page_shows_operators_with_throughput_and_a_learning_curve(
        local_executor, tmp_path):
    run_dir = tmp_path / "run"
    trainer = flowrl.Trainer("PPO", env="CartPole-v1", config=PPO_TINY, log_dir=str(run_dir))
    try:
        url = trainer.serve_viewer()
        for _ in range(2):
            trainer.train()
        browser = chromium("--dump-dom", url, profile=str(tmp_path / "profile"))
        trainer.train()  # the run goes on while the browser loads the page
        dom, errors = browser.communicate(timeout=180)
        assert browser.returncode == 0, errors[-2000:]
        labels = {attrs["label"] for _, attrs in trainer.plan_graph().nodes(data=True)}

        screenshot = tmp_path / "viewer.png"
        shot = chromium(f"--screenshot={screenshot}", "--window-size=1400,900",
                        "--hide-scrollbars", url, profile=str(tmp_path / "profile"))
        _, errors = shot.communicate(timeout=180)
        assert shot.returncode == 0, errors[-2000:]
    finally:
        trainer.stop()

    page = RenderedViewer()
    page.feed(dom)
    assert set(page.operators) == labels, dom[:3000]
    assert all(rate and rate > 0 for rate in page.operators.values()), page.operators
    assert len(page.stats_lines) == len(labels)
    assert all("items/s" in line and "% of iter" in line for line in page.stats_lines)
    assert page.curve_points is not None and page.curve_points >= 2
    assert page.circles == min(page.curve_points, 300)
    assert page.status == "live"
    assert {"training_iteration", "timesteps_total", "episode_reward_mean"} <= set(
        page.result_keys)
    png = screenshot.read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000

    # `flowrl view RUN_DIR`: the same page over the run's records, after the run ended
    server = live.serve_run_dir(run_dir)
    try:
        browser = chromium("--dump-dom", server.url, profile=str(tmp_path / "profile"))
        dom, errors = browser.communicate(timeout=180)
        assert browser.returncode == 0, errors[-2000:]
    finally:
        server.close()
    records = RenderedViewer()
    records.feed(dom)
    assert records.status == "run records"
    assert set(records.operators) == labels
    assert all(rate and rate > 0 for rate in records.operators.values())
    assert records.curve_points == page.curve_points
