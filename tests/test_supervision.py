"""The supervision steps one by one: master.Supervisor's rules and sweep._Sweep's settling of an
attempt's outcome, with stand-in processes and runs (no child process, no Ray)."""

import time
import types

import master
from process.runtime import Flag, Heartbeats


def _supervisor(**exitcodes):
    """A Supervisor with stand-in processes: name -> exit code (None while running)."""
    sup = master.Supervisor.__new__(master.Supervisor)
    sup.procs = {name.replace("_", "-"): types.SimpleNamespace(exitcode=code)
                 for name, code in exitcodes.items()}
    sup.learners = {n for n in sup.procs if n.endswith("-learner")}
    sup.collectors = {n for n in sup.procs if n.startswith("interactor-")}
    sup.stop, sup.finish = Flag(), Flag()
    sup.failure = None
    sup.stalled = None
    sup.hurried = False
    return sup


def _watched(stall_timeout=5.0, **silent):
    """A Supervisor whose running stand-in children (name -> (seconds since the last beat, or
    None for no beat yet; started)) beat at those times; the master started 1000 s ago."""
    sup = _supervisor(**dict.fromkeys(silent))
    sup.stall_timeout, sup.stall_kill_at = stall_timeout, None
    sup.heartbeats = Heartbeats(len(silent))
    now = time.monotonic_ns()
    sup.counted_from_ns = now - 1000 * 10**9
    sup.checked_ns = now - 10**9  # the master's last look, a second ago
    signals = []
    for slot, (name, (quiet, started)) in enumerate(silent.items()):
        p = sup.procs[name.replace("_", "-")]
        p.pid, p.name = 100 + slot, name
        p.terminate = lambda name=p.name: signals.append(("TERM", name))
        p.kill = lambda name=p.name: signals.append(("KILL", name))
        heart = sup.heartbeats.heart(slot)
        if started:
            heart.started()
        if quiet is not None:
            heart._array[2 * slot] = now - int(quiet * 1e9)
    return sup, signals


def test_a_silent_child_is_named_stopped_and_then_killed():
    sup, signals = _watched(policy_learner=(9.0, True), interactor_0=(0.1, True),
                            evaluator_0=(7.0, True))
    sup._check_stalls()
    # The one silent longest is named (the evaluator may only wait for it), with its pid.
    assert sup.stalled[:2] == ("policy-learner", 100) and sup.stalled[2] >= 9.0
    assert sup.stop.is_set() and signals == [("TERM", "policy_learner")]
    sup._kill_stalled()
    assert signals == [("TERM", "policy_learner")]  # not yet: it may still exit after SIGTERM
    sup.stall_kill_at -= master.STALL_KILL_SECONDS + 1
    sup._kill_stalled()
    assert signals[-1] == ("KILL", "policy_learner")
    # Its end is no failure of its own; the report names the stall and asks for a resume.
    sup.procs["policy-learner"].exitcode = -9
    sup._note_failure(budget_reached=False)
    assert sup.failure is None


def test_beating_children_and_children_still_starting_are_not_stalled():
    sup, signals = _watched(policy_learner=(4.0, True), interactor_0=(0.0, True),
                            evaluator_0=(500.0, False))  # the evaluator is still starting
    sup._check_stalls()
    assert sup.stalled is None and not sup.stop.is_set() and not signals
    sup, _ = _watched(evaluator_0=(None, False))  # no beat at all since the start
    sup._check_stalls()
    assert sup.stalled[0] == "evaluator-0"
    sup, _ = _watched(policy_learner=(master.STARTUP_STALL_SECONDS + 1, False))
    sup._check_stalls()
    assert sup.stalled[0] == "policy-learner"  # the start-up allowance ends too
    sup, _ = _watched(stall_timeout=0.0, policy_learner=(10**6, True))
    sup._check_stalls()
    assert sup.stalled is None  # --stall-timeout 0: never


def test_after_the_master_itself_was_stopped_every_child_gets_a_fresh_allowance():
    # Ctrl-Z stops the whole process group for an hour; `fg` wakes the master first.
    sup, signals = _watched(policy_learner=(3600.0, True), evaluator_0=(None, False))
    sup.checked_ns -= 3600 * 10**9
    sup._check_stalls()
    assert sup.stalled is None and not signals
    sup.counted_from_ns -= 6 * 10**9  # six seconds on, still silent: now it counts
    sup.checked_ns -= 6 * 10**9
    sup._check_stalls()
    assert sup.stalled[0] == "policy-learner"


def test_no_stall_check_while_stopping():
    sup, signals = _watched(policy_learner=(9.0, True))
    sup.stop.set()  # Ctrl-C, a dead child, the budget: GRACE_SECONDS governs the rest
    sup._check_stalls()
    assert sup.stalled is None and not signals


def test_an_interactor_leaving_at_the_budget_is_no_failure():
    sup = _supervisor(policy_learner=None, interactor_0=0, evaluator_0=None)
    sup._note_failure(budget_reached=True)
    assert sup.failure is None and not sup.stop.is_set()
    sup._advance(budget_reached=True)
    assert sup.finish.is_set() and not sup.stop.is_set()  # the learner still owes updates
    sup.procs["policy-learner"].exitcode = 0
    sup._note_failure(budget_reached=True)
    assert sup.failure is None
    sup._advance(budget_reached=True)
    assert sup.stop.is_set()  # learners done: the evaluators may go


def test_finish_waits_for_every_interactor():
    sup = _supervisor(policy_learner=None, interactor_0=0, interactor_1=None)
    sup._advance(budget_reached=True)
    assert not sup.finish.is_set()


def test_a_child_leaving_early_is_a_failure_that_stops_the_rest():
    sup = _supervisor(policy_learner=None, interactor_0=0, evaluator_0=None)
    sup._note_failure(budget_reached=False)
    assert sup.failure == ("interactor-0", 0) and sup.stop.is_set()
    sup = _supervisor(policy_learner=1, interactor_0=None)
    sup._note_failure(budget_reached=True)
    assert sup.failure == ("policy-learner", 1) and not sup.finish.is_set()


def test_after_stop_an_exit_is_expected():
    sup = _supervisor(policy_learner=0, interactor_0=None)
    sup.stop.set()
    sup._note_failure(budget_reached=False)
    assert sup.failure is None


def test_a_stop_but_the_budgets_sends_every_running_child_sigterm_once():
    sup, signals = _watched(policy_learner=(0.0, False), interactor_0=(0.0, True),
                            evaluator_0=(0.0, False))
    sup._hurry()
    assert not signals  # nothing stops yet
    sup.procs["interactor-0"].exitcode = 1  # it dies: a failure, which sets `stop`
    sup._note_failure(budget_reached=False)
    sup._hurry()
    sup._hurry()
    assert signals == [("TERM", "policy_learner"), ("TERM", "evaluator_0")]
    assert sup.failure == ("interactor-0", 1)
    # Ctrl-C: a child SIGTERMed before it took the signal over exits -15, which is no failure
    sup, signals = _watched(policy_learner=(0.0, True), evaluator_0=(0.0, False))
    sup.stop.set()
    sup._hurry()
    sup.procs["evaluator-0"].exitcode = -15
    sup.procs["policy-learner"].exitcode = 0
    sup._note_failure(budget_reached=False)
    assert sup.failure is None and len(signals) == 2
    # the budget's end sets `stop` after `finish`: the evaluators are let go, not signalled
    sup, signals = _watched(evaluator_0=(0.0, True))
    sup.finish.set()
    sup.stop.set()
    sup._hurry()
    assert not signals


def test_children_are_killed_after_the_grace_period(monkeypatch):
    killed = []
    sup = _supervisor(policy_learner=None, evaluator_0=0)
    for name, p in sup.procs.items():
        p.name, p.kill = name, (lambda name=name: killed.append(name))
    sup.deadline, sup.killed = None, False
    sup._kill_after_grace()
    assert sup.deadline is None  # nothing asked to stop yet
    sup.stop.set()
    sup._kill_after_grace()
    assert sup.deadline is not None and not killed
    sup.deadline -= master.GRACE_SECONDS + 1
    sup._kill_after_grace()
    sup._kill_after_grace()
    assert killed == ["policy-learner"] and sup.killed  # once, and only the one still running


# ---------------------------------------------------------------- sweep._Sweep, step by step


def _sweep(tmp_path, monkeypatch, retries=2, nodes=({"CPU": 8.0, "memory": 2**34},)):
    import sweep
    from process.rundir import RunDir

    monkeypatch.setattr(sweep, "alive_nodes", lambda: [dict(n) for n in nodes])
    monkeypatch.setattr(sweep, "run_progress", lambda run: {"frames": 7})
    run = RunDir(root=str(tmp_path / "Env" / "exp.seed0"), name="exp.seed0")
    req = sweep.RunRequest(config="c.json", experiment="exp", seed=0, run=run,
                           model_based=False, processes=3, cpus=3.0, memory=2**30)
    results = {req.key: sweep.RunResult(config="c.json", experiment="exp", seed=0,
                                        path=run.root, state="pending", attempts=1)}
    said = []
    driver = sweep._Sweep([req], [req], results, total_frames=100, max_parallel=None,
                          retries=retries, status_seconds=5.0, lock_wait=1.0, say=said.append)
    driver.placements = lambda: {req.key: (1, "node-a", "10.0.0.1")}
    return driver, req, results[req.key], said


def test_settle_done(tmp_path, monkeypatch):
    driver, req, res, _ = _sweep(tmp_path, monkeypatch)
    driver.settle(req, {"node_id": "n1", "mode": "new", "returncode": 0})
    assert res.state == "pending"  # status 0 but the run is not at its budget: retried
    assert list(driver.pending) == [req]
    driver.pending.clear()
    driver.settle(req, {"node_id": "n1", "mode": "done", "returncode": 0})
    assert (res.state, res.nodes, res.modes, res.frames) == ("done", ["n1", "n1"],
                                                             ["new", "done"], 7)


def test_settle_user_error_is_not_retried(tmp_path, monkeypatch):
    driver, req, res, said = _sweep(tmp_path, monkeypatch)
    driver.settle(req, {"node_id": "n1", "mode": "new", "returncode": 2,
                        "message": "error: bad config"})
    assert (res.state, res.message) == ("failed", "error: bad config")
    assert not driver.pending and "failed after 1 attempt(s)" in said[-1]


def test_settle_lost_node_retries_until_the_retries_are_spent(tmp_path, monkeypatch):
    driver, req, res, said = _sweep(tmp_path, monkeypatch, retries=1)
    driver.settle(req, RuntimeError("node died\nmore"))
    assert res.state == "pending" and list(driver.pending) == [req]
    assert res.nodes == ["node-a"] and "retrying" in said[-1]
    driver.pending.clear()
    res.attempts = 2
    driver.settle(req, RuntimeError("node died"))
    assert (res.state, res.message) == ("failed", "RuntimeError: node died")


def test_settle_without_a_node_that_fits_fails(tmp_path, monkeypatch):
    driver, req, res, _ = _sweep(tmp_path, monkeypatch, nodes=({"CPU": 1.0},))
    driver.settle(req, {"node_id": "n1", "mode": "resume", "returncode": 1})
    assert res.state == "failed"
    assert res.message.endswith("; no live node can hold it any more")


def test_settle_while_stopping(tmp_path, monkeypatch):
    driver, req, res, _ = _sweep(tmp_path, monkeypatch)
    driver.settle(req, {"node_id": "n1", "mode": "resume", "returncode": 0,
                        "stop_requested": True})
    assert (res.state, res.message) == ("stopped", "stopped cleanly")
    driver.stopping = True
    driver.settle(req, RuntimeError("cancelled"))
    assert (res.state, res.message) == ("stopped", "RuntimeError: cancelled")


def test_show_counts_a_started_attempt_as_running(tmp_path, monkeypatch):
    driver, req, res, said = _sweep(tmp_path, monkeypatch)
    driver.running = {"ref": req}
    driver.show()
    assert res.state == "running"
    assert "1 running" in said[-1] and "10.0.0.1 node-a" in said[-1]
    res.attempts = 2  # a retry queued on Ray: the board still names attempt 1
    res.state = "pending"
    driver.show()
    assert res.state == "pending"
