"""sweep.py on a local Ray cluster (127.0.0.1 only): a grid, a lost node, Ctrl-C, bad input.

One Ray cluster (`ray.cluster_utils.Cluster`, a head and a second node with one CPU each) is
started for the module and stopped through its handle at the end; a third node joins for the
fault test and is removed mid-run. Runs are tiny model-free configs of a few hundred frames,
each reserving one CPU (`cpus_per_run=1`).
"""

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sweep
from config import ConfigError

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
TINY_DDPG = TESTS / "configs/tiny_ddpg.json"
TINY_STEVE = TESTS / "configs/tiny_steve.json"
FRAMES = 200
FAULT_FRAMES = 2000  # long enough to stop it, resume it and lose a node before it ends
ENV = "InvertedPendulum-v5"


# Every Ray process of this module stays on 127.0.0.1 (conftest.py's loopback_ray); the tests
# that need a cluster take conftest.py's `cluster`, started once for the module.
pytestmark = pytest.mark.usefixtures("loopback_ray")


def tiny_configs(folder: Path) -> list[Path]:
    """Two tiny model-free configs with different names (and widths)."""
    a, b = folder / "tiny_a.json", folder / "tiny_b.json"
    a.write_text(json.dumps({"inherits": [str(TINY_DDPG)]}))
    b.write_text(json.dumps({"inherits": [str(TINY_DDPG)],
                             "updates": {"policy_config": {"hidden_dim": 8}}}))
    return [a, b]


def greedy_rows(run: Path) -> list[tuple[int, float]]:
    path = run / "log" / f"{run.name}.greedy.csv"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(int(ln.split(",")[2]), float(ln.split(",")[3])) for ln in lines]


def counters(run: Path) -> dict:
    return json.loads((run / "checkpoints/policy/latest.json").read_text())["counters"]


def snapshot(folder: Path) -> dict:
    if not folder.exists():
        return {}
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*")}


# ------------------------------------------------------------------------------ bad input


def test_unknown_config_is_refused_before_anything(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(sweep.SweepError, match=r"nope\.json does not exist"):
        sweep.run_sweep([TINY_DDPG, tmp_path / "nope.json"], 1, total_frames=FRAMES,
                        output_root=out)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"inherits": [str(TINY_DDPG)],
                                  "updates": {"policy_config": {"hiden_dim": 8}}}))
    with pytest.raises(ConfigError, match="hiden_dim"):
        sweep.run_sweep([broken], 1, total_frames=FRAMES, output_root=out)
    assert not out.exists()


def test_cli_reports_one_sentence(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "sweep.py"), str(tmp_path / "nope.json"),
                          "--seeds", "2", "--output-root", str(tmp_path / "out")],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith("error: Config file") and out.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_address_without_cluster_fails_fast(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.time()
    with pytest.raises(sweep.SweepError, match=f"No Ray cluster answers at 127.0.0.1:{port}"):
        sweep.run_sweep([TINY_DDPG], 1, total_frames=FRAMES, output_root=tmp_path / "out",
                        address=f"127.0.0.1:{port}")
    assert time.time() - t0 < 10
    assert not (tmp_path / "out").exists()
    with pytest.raises(sweep.SweepError, match="HOST:PORT"):
        sweep.check_address("not-an-address")


def test_check_fits_names_the_missing_resource(tmp_path):
    [req] = sweep.plan_runs([TINY_STEVE], 1, output_root=tmp_path)
    assert req.processes == 4 and req.cpus == 4 and req.memory == 4 * sweep.MEMORY_PER_PROCESS
    req = sweep.dataclasses.replace(req, gpus=sweep.gpus_per_run(True, 1.0))
    node = {"CPU": 8.0, "GPU": 1.0, "memory": 64 * 2**30}
    with pytest.raises(sweep.SweepError, match="needs 2 GPUs but the largest node has 1"):
        sweep.check_fits([req], [node])
    sweep.check_fits([req], [node, dict(node, GPU=2.0)])
    with pytest.raises(sweep.SweepError, match="lower --cpus-per-run to 2"):
        sweep.check_fits([req], [dict(node, CPU=2.0, GPU=2.0)])
    assert sweep.gpus_per_run(True, 0) == 0 and sweep.gpus_per_run(False, 4) == 1


@pytest.mark.slow
def test_run_needing_more_gpus_than_any_node_is_refused(cluster, tmp_path):
    gpu_node = cluster.add_node(num_cpus=0, num_gpus=1)
    cluster.wait_for_nodes()
    try:
        t0 = time.time()
        with pytest.raises(sweep.SweepError, match="needs 2 GPUs but the largest node has 1"):
            sweep.run_sweep([TINY_STEVE], 1, total_frames=FRAMES, output_root=tmp_path / "out",
                            address=cluster.address, cpus_per_run=1)
        assert time.time() - t0 < 30
        assert not (tmp_path / "out").exists()
    finally:
        cluster.remove_node(gpu_node)


# ------------------------------------------------------------------------------ a grid


@pytest.mark.slow
def test_grid_on_two_nodes_then_nothing_to_do(cluster, tmp_path):
    configs = tiny_configs(tmp_path)
    out = tmp_path / "out"
    lines: list[str] = []
    results = sweep.run_sweep(configs, 2, total_frames=FRAMES, output_root=out,
                              address=cluster.address, cpus_per_run=1, status_seconds=3,
                              out=lines.append)
    text = "\n".join(lines)
    assert [(r.experiment, r.seed, r.state) for r in results] == [
        ("tiny_a", 0, "done"), ("tiny_a", 1, "done"), ("tiny_b", 0, "done"),
        ("tiny_b", 1, "done")], text
    node_ids = {n.node_id for n in cluster.list_all_nodes()}
    assert {n for r in results for n in r.nodes} == node_ids  # both nodes ran runs
    runs = sorted((out / ENV).glob("tiny_*"))
    assert [r.name for r in runs] == ["tiny_a.seed0", "tiny_a.seed1", "tiny_b.seed0",
                                      "tiny_b.seed1"]
    for run in runs:
        for rel in ("log/hps.json", "log/valuerl.log", f"log/{run.name}.greedy.csv",
                    "checkpoints/policy/latest.json", "replay/header.bin",
                    "state/progress.bin", "state/finished.json"):
            assert (run / rel).is_file(), f"{run.name}/{rel}"
        hps = json.loads((run / "log/hps.json").read_text())
        assert hps["seed"] == int(run.name[-1]) and hps["name"] == run.name
        finished = json.loads((run / "state/finished.json").read_text())
        assert finished["total_frames"] == FRAMES and finished["frames"] >= FRAMES
    for config in ("tiny_a", "tiny_b"):  # distinct seeds, distinct curves
        assert greedy_rows(out / ENV / f"{config}.seed0") != greedy_rows(
            out / ENV / f"{config}.seed1")
    assert all(r.frames >= FRAMES and r.score is not None for r in results)
    assert "starting 4 new run(s)" in text
    assert "running" in text and "127.0.0.1" in text and "upd/frame" in text, text
    heads = [ln for ln in lines if ln.startswith("sweep 0:")]
    assert heads and not any(f"{n} running" in h for h in heads for n in (3, 4)), text  # 1 CPU
    assert "sweep finished in" in lines[-1] and "4 done (0 retried)" in lines[-1]
    figures = [out / "sweep_tiny_a-tiny_b_frames.png", out / "sweep_tiny_a-tiny_b_hours.png"]
    assert all(f.stat().st_size > 0 for f in figures)

    before = snapshot(out)
    again: list[str] = []
    t0 = time.time()
    results = sweep.run_sweep(configs, 2, total_frames=FRAMES, output_root=out,
                              address=cluster.address, cpus_per_run=1, out=again.append)
    assert time.time() - t0 < 5
    assert again == [f"Nothing to do: all 4 run(s) already reached {FRAMES} frames "
                     f"(e.g. {out / ENV / 'tiny_a.seed0'})."]
    assert [r.state for r in results] == ["skipped"] * 4 and all(r.attempts == 0
                                                                  for r in results)
    assert snapshot(out) == before


# ------------------------------------------------------------------------------ faults


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_interrupted_sweep_resumes_and_survives_a_lost_node(cluster, tmp_path):
    """Ctrl-C stops the run cleanly; the next start resumes it; a lost node is survived."""
    [config, _] = tiny_configs(tmp_path)
    out = tmp_path / "out"
    run = out / ENV / "tiny_a.seed0"
    cmd = [sys.executable, str(ROOT / "sweep.py"), str(config), "--seeds", "1",
           "--total-frames", str(FAULT_FRAMES), "--output-root", str(out), "--address",
           cluster.address, "--cpus-per-run", "1", "--status-every", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        wait_for(lambda: (run / "checkpoints/policy/latest.json").exists() and greedy_rows(run),
                 150, "a first checkpoint and evaluation")
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        text, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, text
    assert "Ctrl-C: stopping 1 run(s)" in text and "1 stopped" in text
    assert not (run / "state/finished.json").exists()
    console = (out / ENV / ".sweep/tiny_a.seed0.out").read_text()
    assert "SIGTERM: stopping" in console  # master.py got SIGTERM and stopped cleanly
    assert "--seed 0 --cpus 1" in console  # the run's reservation sizes its thread pools
    stopped_at = counters(run)
    rows_before = greedy_rows(run)
    assert stopped_at["updates"] > 0 and rows_before

    # Restart on a cluster with a third node; remove the node running the run once it resumed
    # and checkpointed again: the run continues on another node from its checkpoint.
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    extra = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    head_id = cluster.head_node.node_id
    ray.init(address=cluster.address)  # run_sweep uses this connection
    # An actor holding the head node's CPU keeps the run on a node that can be removed.
    blocker = ray.remote(num_cpus=1)(sweep._Board).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(head_id, soft=False)).remote()
    assert ray.get(blocker.placements.remote(), timeout=60) == {}
    removed: list[str] = []
    lines: list[str] = []
    at_removal: dict = {}

    def watch(text: str) -> None:
        lines.append(text)
        if removed or "running" not in text:
            return
        row = next((ln for ln in text.splitlines() if "tiny_a.seed0" in ln), "")
        if counters(run)["updates"] <= stopped_at["updates"]:
            return  # not yet checkpointed past the stop: wait, but not longer (budget race)
        for node in cluster.list_all_nodes():
            if node.node_id != head_id and node.node_id[:6] in row:
                removed.append(node.node_id)
                at_removal.update(counters(run), rows=greedy_rows(run))
                cluster.remove_node(node)
                return

    try:
        [result] = sweep.run_sweep([config], 1, total_frames=FAULT_FRAMES, output_root=out,
                                   address=cluster.address, cpus_per_run=1, status_seconds=1,
                                   out=watch)
    finally:
        ray.kill(blocker)
        ray.shutdown()
        if extra in cluster.worker_nodes:
            cluster.remove_node(extra)
    text = "\n".join(lines)
    assert "resuming 1 unfinished run(s): InvertedPendulum-v5/tiny_a.seed0" in text
    assert removed, "the run never ran on a node that could be removed:\n" + text
    assert result.state == "done", text
    assert result.attempts == 2 and result.modes == ["resume"], result  # attempt 1 was lost
    assert result.nodes[0] == removed[0] and result.nodes[1] != removed[0], (
        result.nodes, removed, result.message, text)
    assert "attempt 1 failed" in text and "retrying" in text and "(retry 1)" in text, text
    finished = json.loads((run / "state/finished.json").read_text())
    assert finished["frames"] >= FAULT_FRAMES
    assert finished["policy_updates"] >= at_removal["updates"] > stopped_at["updates"]
    rows = greedy_rows(run)
    assert rows[: len(rows_before)] == rows_before  # earlier rows kept
    assert rows[: len(at_removal["rows"])] == at_removal["rows"]
    assert len(rows) > len(at_removal["rows"])
    updates = [int(part.split("=")[1]) for line in (run / "log/valuerl.log").read_text()
               .splitlines() for part in line.split() if part.startswith("updates=")]
    assert updates == sorted(updates) and updates[0] == 25  # counters never went back
    console = (out / ENV / ".sweep/tiny_a.seed0.out").read_text()
    assert console.count("=== attempt") == 3 and "attempt 2 (resume)" in console
