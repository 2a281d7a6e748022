"""The live plan viewer: rates, the state document, the server, run records, the CLI (local mode).

The real-browser test is in test_live_browser.py.
"""

from __future__ import annotations

import doctest
import json
import math
import re
import socket
import threading
import urllib.error
import urllib.request

import pytest

import flowrl
import flowrl.iter
from flowrl import cli
from flowrl.iter import executor as flow_executor
from flowrl.testing import CorridorEnv
from flowrl.viz import live
from flowrl.viz.html import from_json

TINY = {"num_workers": 0, "num_envs_per_worker": 1, "rollout_fragment_length": 10,
        "train_batch_size": 20, "seed": 3, "num_cpus_per_worker": 0.5,
        "model": {"fcnet_hiddens": [8]}}


@pytest.fixture(scope="module", autouse=True)
def corridor_registered():
    flowrl.register_env("viewer_corridor", CorridorEnv)


def fetch(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def state(url: str) -> dict:
    status, content_type, body = fetch(url + "state.json")
    assert status == 200 and content_type == "application/json"
    return json.loads(body)


def ran_plan(items: int = 6):
    plan = flowrl.iter.LocalIterator(lambda: range(items), name="numbers").for_each(abs)
    assert plan.take(items) == list(range(items))
    return plan


# -- rates and the state document ---------------------------------------------------------------


def test_rates_over_the_last_iteration_use_the_previous_operator_counts(local_executor):
    plan = ran_plan(6)
    graph = plan.graph()
    source, mapped = list(graph.nodes)
    graph.nodes[mapped]["time_s"] = 1.5
    previous = {str(source): {"items_out": 2, "time_s": 0.0},
                str(mapped): {"items_out": 2, "time_s": 0.5}}
    live.annotate_rates(graph, {"time_this_iter_s": 2.0, "time_total_s": 10.0}, previous)
    assert graph.nodes[source]["items_per_s"] == pytest.approx(4 / 2.0)
    assert graph.nodes[mapped]["items_per_s"] == pytest.approx(4 / 2.0)
    assert graph.nodes[mapped]["time_share"] == pytest.approx(1.0 / 2.0)


def test_rates_without_a_previous_iteration_average_over_the_whole_run(local_executor):
    graph = ran_plan(6).graph()
    live.annotate_rates(graph, {"time_this_iter_s": 1.0, "time_total_s": 3.0})
    assert [graph.nodes[n]["items_per_s"] for n in graph.nodes] == [2.0, 2.0]


def test_no_result_or_no_time_leaves_the_graph_without_rates(local_executor):
    graph = ran_plan(3).graph()
    live.annotate_rates(graph, None)
    live.annotate_rates(graph, {"time_total_s": 0.0})
    assert not any("items_per_s" in attrs for _, attrs in graph.nodes(data=True))


def test_queue_fills_are_found_anywhere_in_info_and_on_queue_nodes():
    result = {"info": {"learner": {"inqueue_size": 3, "inqueue_maxsize": 16,
                                   "outqueue_size": 0, "outqueue_maxsize": 128,
                                   "batch_size": 500},  # a size without a capacity: not a queue
                       "replay": {"queue_size": 7, "queue_maxsize": 0},
                       "learner_thread": {"queue_fill": 0.5, "inqueue_size": 8}}}
    assert live.queue_fills(result) == [
        {"name": "learner/inqueue", "size": 3, "maxsize": 16},
        {"name": "learner/outqueue", "size": 0, "maxsize": 128},
        {"name": "replay/queue", "size": 7, "maxsize": 0},
        {"name": "learner_thread/queue", "fraction": 0.5},
    ]
    assert live.queue_fills({}) == [] and live.queue_fills(None) == []


def test_state_document_is_strict_json_with_the_stats_line_of_a_running_plan(local_executor):
    graph = ran_plan(4).graph()
    node = list(graph.nodes)[1]
    graph.nodes[node].update(queue_size=2, queue_maxsize=8)
    result = {"training_iteration": 1, "timesteps_total": 40, "episode_reward_mean": math.nan,
              "time_total_s": 2.0, "ops": {"n0": {}}, "info": {}}
    document = live.state_document(graph, title="t", result=result, curve=[])
    text = json.dumps(document, allow_nan=False)  # JavaScript's JSON.parse rejects NaN
    assert "ops" not in document["result"] and document["result"]["training_iteration"] == 1
    stats = document["plan"]["layout"]["nodes"][node]["stats"]
    assert re.fullmatch("2 items/s \u00b7 [0-9.]+ [mµ]?s each \u00b7 0% of iter \u00b7 queue 2/8",
                        stats), text
    assert live.curve_point(result) is None  # no finished episode: no point
    assert live.curve_point({"timesteps_total": 40, "episode_reward_mean": 9.5}) == [40.0, 9.5]


def test_long_curves_are_thinned_keeping_the_first_and_last_points():
    points = [[float(i), float(i)] for i in range(5 * live.MAX_CURVE_POINTS)]
    thinned = live.state_document(None, title="t", curve=points)["curve"]
    assert len(thinned) == live.MAX_CURVE_POINTS
    assert thinned[0] == points[0] and thinned[-1] == points[-1]


# -- the server ---------------------------------------------------------------------------------


def test_live_viewer_serves_the_page_and_each_published_state_on_loopback(local_executor):
    viewer = live.LiveViewer("demo <plan>")
    try:
        assert viewer.url.startswith("http://127.0.0.1:")
        status, content_type, page = fetch(viewer.url)
        assert status == 200 and content_type.startswith("text/html")
        assert b"demo &lt;plan&gt;" in page and b'"format":"flowrl-live"' in page
        assert state(viewer.url)["status"] == "starting"

        plan = ran_plan(5)
        viewer.publish(plan.graph(), {"training_iteration": 1, "timesteps_total": 5,
                                      "episode_reward_mean": 1.0, "time_this_iter_s": 1.0,
                                      "time_total_s": 1.0, "ops": plan.stats()})
        first = state(viewer.url)
        assert first["version"] == 1 and first["curve"] == [[5.0, 1.0]]
        assert [n["items_per_s"] for n in first["plan"]["graph"]["nodes"]] == [5.0, 5.0]

        plan.take(0)
        viewer.publish(plan.graph(), {"training_iteration": 2, "timesteps_total": 9,
                                      "episode_reward_mean": 2.0, "time_this_iter_s": 1.0,
                                      "time_total_s": 2.0, "ops": plan.stats()})
        second = state(viewer.url)
        assert second["version"] == 2 and len(second["curve"]) == 2
        # nothing new went through the plan in the second iteration
        assert [n["items_per_s"] for n in second["plan"]["graph"]["nodes"]] == [0.0, 0.0]
        status, _, body = fetch(viewer.url + "nothing-here")
        assert status == 404 and b"/state.json" in body
    finally:
        viewer.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(viewer.url, timeout=2)


def test_a_taken_port_is_a_clear_error_and_a_bad_one_is_rejected():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(live.ViewerPortError, match=f"127.0.0.1:{port}.*another port"):
            live.ViewerServer(lambda: b"{}", port=port)
    with pytest.raises(ValueError, match="0 to 65535"):
        live.ViewerServer(lambda: b"{}", port=70000)


def test_the_server_thread_only_reads_published_snapshots(local_executor):
    viewer = live.LiveViewer("t")
    reads: list[int] = []

    def poll() -> None:
        for _ in range(30):
            reads.append(state(viewer.url)["version"])

    try:
        plan = ran_plan(4)
        poller = threading.Thread(target=poll)
        poller.start()
        for iteration in range(1, 31):
            viewer.publish(plan.graph(), {"training_iteration": iteration, "time_total_s": 1.0})
        poller.join()
    finally:
        viewer.close()
    assert reads == sorted(reads)  # every read is one whole snapshot, versions never go back


# -- a trainer, its run records, and `flowrl view` ----------------------------------------------


@pytest.fixture
def trained_run(local_executor, tmp_path):
    """A tiny PG run on a corridor with its viewer, 3 iterations; yields (trainer, url, dir)."""
    run_dir = tmp_path / "run"
    trainer = flowrl.Trainer("pg", env="viewer_corridor", config=TINY, log_dir=str(run_dir))
    try:
        url = trainer.serve_viewer()
        assert trainer.serve_viewer() == url  # one viewer per trainer
        before = state(url)
        assert before["result"] is None and before["plan"]["graph"]["nodes"]
        for _ in range(3):
            trainer.train()
        yield trainer, url, run_dir
    finally:
        trainer.stop()


def test_a_trainer_publishes_its_plan_curve_and_result_after_every_train(trained_run):
    trainer, url, _ = trained_run
    document = state(url)
    assert document["version"] == 4 and document["status"] == "running"
    assert document["title"] == "PG on viewer_corridor"
    nodes = document["plan"]["graph"]["nodes"]
    assert nodes and all(node["items_per_s"] > 0 for node in nodes)
    assert all(0 <= node["time_share"] for node in nodes)
    assert document["result"]["training_iteration"] == 3
    assert len(document["curve"]) >= 1
    steps = [point[0] for point in document["curve"]]
    assert steps == sorted(steps) and steps[-1] == document["result"]["timesteps_total"]


def test_the_viewer_goes_on_when_a_worker_is_replaced(executor):
    trainer = flowrl.Trainer("pg", env="viewer_corridor", config={**TINY, "num_workers": 1})
    try:
        url = trainer.serve_viewer()
        trainer.train()
        flow_executor.kill(trainer.workers.remote_workers()[0])
        versions: list[int] = []
        recovering = threading.Event()

        def watch() -> None:  # the page keeps polling while the worker is replaced
            while not recovering.is_set():
                versions.append(state(url)["version"])
                recovering.wait(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            trainer.train()
            trainer.train()
        finally:
            recovering.set()
            watcher.join()
        document = state(url)
    finally:
        trainer.stop()
    assert versions and versions == sorted(versions) and document["version"] == 4
    assert document["result"]["num_worker_restarts"] >= 1
    assert document["result"]["training_iteration"] == 3
    assert all(node["items_per_s"] > 0 for node in document["plan"]["graph"]["nodes"])


def test_stop_closes_the_viewer(local_executor):
    trainer = flowrl.Trainer("pg", env="viewer_corridor", config=TINY)
    url = trainer.serve_viewer()
    trainer.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)


def test_run_records_hold_the_plan_and_flowrl_view_serves_them(trained_run):
    trainer, url, run_dir = trained_run
    graph = from_json((run_dir / "plan.json").read_text())
    assert sorted(graph.nodes) == sorted(trainer.plan_graph().nodes)
    assert all(attrs["items_out"] > 0 for _, attrs in graph.nodes(data=True))

    server = live.serve_run_dir(run_dir)
    try:
        offline = state(server.url)
        assert offline["status"] == "records" and offline["title"] == "run"
        assert offline["result"]["training_iteration"] == 3
        assert offline["curve"] == state(url)["curve"]
        assert all(node["items_per_s"] > 0 for node in offline["plan"]["graph"]["nodes"])
        trainer.train()  # a run that is still writing: the page follows it
        assert state(server.url)["result"]["training_iteration"] == 4
    finally:
        server.close()


def test_run_records_source_skips_a_cut_off_line_and_works_without_a_plan(tmp_path):
    lines = [{"training_iteration": i, "timesteps_total": 10 * i, "episode_reward_mean": i,
              "time_total_s": float(i)} for i in (1, 2)]
    (tmp_path / "result.json").write_text(
        "".join(json.dumps(line) + "\n" for line in lines) + '{"training_iter')
    document = live.RunRecordsSource(tmp_path).document()
    assert document["plan"] is None and document["result"]["training_iteration"] == 2
    assert document["curve"] == [[10.0, 1.0], [20.0, 2.0]]


def test_flowrl_view_writes_a_self_contained_page(trained_run, tmp_path, capsys):
    _, _, run_dir = trained_run
    output = tmp_path / "run.html"
    assert cli.main(["view", str(run_dir), "--output", str(output)]) == 0
    page = output.read_text()
    assert '"format":"flowrl-live"' in page and '"state":' in page
    assert "\"state_url\"" not in page and "http://" not in page
    assert str(output) in capsys.readouterr().out


@pytest.mark.parametrize("make_dir, fragment", [
    (lambda p: p / "missing", "is not a directory"),
    (lambda p: p, "has no result.json"),
])
def test_flowrl_view_of_something_that_is_not_a_run_dir_is_a_usage_error(
        tmp_path, capsys, make_dir, fragment):
    assert cli.main(["view", str(make_dir(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flowrl view: error:") and fragment in err


def test_flowrl_view_serves_until_interrupted(tmp_path, monkeypatch, capsys):
    (tmp_path / "result.json").write_text(json.dumps({"training_iteration": 1}) + "\n")
    served: list[dict] = []

    def look_then_press_ctrl_c() -> None:
        url = capsys.readouterr().out.split(": ", 1)[1].split(" ")[0]
        served.append(state(url))
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_block_until_interrupted", look_then_press_ctrl_c)
    assert cli.main(["view", str(tmp_path), "--port", "0"]) == 0
    assert served[0]["result"] == {"training_iteration": 1}


def test_flowrl_train_viewer_prints_the_url(local_executor, tmp_path, capsys):
    code = cli.main(["train", "--run", "PG", "--env", "viewer_corridor", "--local-mode",
                     "--viewer", "--log-dir", str(tmp_path / "run"), "--config", json.dumps(TINY),
                     "--stop", '{"training_iteration": 1}'])
    assert code == 0
    out = capsys.readouterr().out
    assert "Live plan viewer: http://127.0.0.1:" in out
    assert (tmp_path / "run" / "plan.json").is_file()


def test_flowrl_train_with_a_bad_viewer_port_is_a_usage_error(capsys):
    assert cli.main(["train", "--run", "PG", "--env", "CartPole-v1", "--viewer-port",
                     "99999"]) == 2
    assert "--viewer-port must be a port" in capsys.readouterr().err


def test_flowrl_plan_iterations_puts_throughput_into_the_dot_labels(local_executor, capsys):
    code = cli.main(["plan", "--run", "PG", "--env", "viewer_corridor", "--config",
                     json.dumps(TINY), "--iterations", "2", "--format", "dot"])
    assert code == 0
    dot = capsys.readouterr().out
    labels = [line for line in dot.splitlines() if "[label=" in line]
    assert labels and all("items/s" in line and "% of time" in line for line in labels), dot


def test_flowrl_plan_without_iterations_shows_no_throughput(local_executor, capsys):
    assert cli.main(["plan", "--run", "PG", "--env", "viewer_corridor", "--format", "dot"]) == 0
    assert "items/s" not in capsys.readouterr().out


def test_run_with_viewer_serves_while_training(local_executor, tmp_path, capsys):
    result = flowrl.run("pg", env="viewer_corridor", config=TINY, local_mode=True,
                        stop={"training_iteration": 1}, log_dir=str(tmp_path / "r"),
                        viewer=True)
    assert result["training_iteration"] == 1
    assert "Live plan viewer: http://127.0.0.1:" in capsys.readouterr().out


def test_page_marks_are_filled_once():
    page = live.live_page("x", state={"format": "flowrl-live"})
    assert "__FLOWRL_" not in page


def test_docstring_examples(local_executor):
    assert doctest.testmod(live, optionflags=doctest.ELLIPSIS).failed == 0


def test_learner_thread_queues_show_their_fill(local_executor):
    if "IMPALA" not in flowrl.list_algorithms():
        pytest.skip("IMPALA is not a built-in algorithm in this checkout")
    trainer = flowrl.Trainer("IMPALA", env="viewer_corridor", config=TINY)
    try:
        url = trainer.serve_viewer()
        trainer.train()
        trainer.train()
        document = state(url)
    finally:
        trainer.stop()
    assert any(queue["name"].startswith("learner_thread/") for queue in document["queues"])
    queue_nodes = [node["id"] for node in document["plan"]["graph"]["nodes"]
                   if "queue_size" in node]
    assert queue_nodes  # Enqueue(learner.inqueue), Dequeue(learner.outqueue)
    for node in queue_nodes:
        assert "queue " in document["plan"]["layout"]["nodes"][node]["stats"]
