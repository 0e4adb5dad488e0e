"""The supervision steps one by one: master.Supervisor's rules and sweep._Sweep's settling of an
attempt's outcome, with stand-in processes and runs (no child process, no Ray)."""

import types

import master
from runtime import Flag


def _supervisor(**exitcodes):
    """A Supervisor with stand-in processes: name -> exit code (None while running)."""
    sup = master.Supervisor.__new__(master.Supervisor)
    sup.procs = {name.replace("_", "-"): types.SimpleNamespace(exitcode=code)
                 for name, code in exitcodes.items()}
    sup.learners = {n for n in sup.procs if n.endswith("-learner")}
    sup.collectors = {n for n in sup.procs if n.startswith("interactor-")}
    sup.stop, sup.finish = Flag(), Flag()
    sup.failure = None
    return sup


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
