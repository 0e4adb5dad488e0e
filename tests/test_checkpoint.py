"""Tests of process/checkpoint.py: exact round trips (variables, optimizer slots, generator state,
counters), strict refusal of missing/extra/mis-shaped variables with nothing changed, partial
policy loads, the on-disk layout (pointer, keep 3, incomplete folders ignored) and backups.
Writes only under tmp_path."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import util
import valuerl
import worldmodel
from process import checkpoint
from process.checkpoint import CheckpointError

OBS, ACT = 3, 2
CONFIG = {
    "env": {"obs_dims": OBS, "action_dims": ACT, "reward_scale": 1.0, "discount": 0.99},
    "policy_config": {
        "hidden_dim": 8, "hidden_layers": 2,
        "bayesian": {"ensemble_size": 2, "train_sample_count": 2, "eval_sample_count": 2},
        "value_expansion": {"rollout_len": 2, "steve_reweight": True},
    },
    "model_config": {
        "transition_hidden_dim": 8, "transition_layers": 2, "aux_hidden_dim": 4, "aux_layers": 2,
        "bayesian": {
            "transition": {"ensemble_size": 2, "train_sample_count": 2, "eval_sample_count": 2},
            "reward": {"ensemble_size": 2, "train_sample_count": 1, "eval_sample_count": 1},
        },
    },
}
COUNTERS = {"epoch": 3, "updates": 1500, "frames": 2**40 + 7, "hours": 1.25}


def build(seed, config=CONFIG):
    wm = worldmodel.WorldModel(config, seed=seed, jit_compile=False)
    agent = valuerl.ValueRL(config, seed=seed, jit_compile=False)
    return wm, agent


@pytest.fixture
def trained(make_batch):
    """A world model and an agent (seed 0) after two updates each."""
    wm, agent = build(0)
    for i in range(2):
        wm.train_step(make_batch(OBS, ACT, seed=i))
        agent.train_step(make_batch(OBS, ACT, seed=i), wm)
    return wm, agent


def test_layout_functions_import_no_tensorflow(tmp_path):
    """is_complete and latest_checkpoint read files only, so the visualizer can find a checkpoint
    (and report a wrong folder) before it loads TensorFlow quietly."""
    code = ("import sys; from process import checkpoint; "
            "assert checkpoint.latest_checkpoint(sys.argv[1]) is None; "
            "assert checkpoint.latest_counters(sys.argv[1]) is None; "
            "assert 'tensorflow' not in sys.modules, 'checkpoint imported tensorflow'")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True,
                   cwd=Path(__file__).resolve().parents[1])


def snapshot(module):
    return {v.name + str(i): v.numpy().copy() for i, v in enumerate(module.variables)}


def assert_equal_vars(a, b):
    va, vb = a.variables, b.variables
    assert len(va) == len(vb)
    for x, y in zip(va, vb, strict=True):
        np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=x.name)


def test_round_trip_is_exact_and_training_continues_identically(tmp_path, trained, make_batch):
    wm, agent = trained
    path = checkpoint.save_checkpoint(str(tmp_path), {"valuerl": agent, "worldmodel": wm},
                                      COUNTERS)
    assert path == str(tmp_path / "ckpt-1")
    wm2, agent2 = build(seed=9)  # different initial weights and generator state
    counters = checkpoint.restore_checkpoint(path, {"valuerl": agent2, "worldmodel": wm2})
    assert counters == COUNTERS and isinstance(counters["frames"], int)
    assert_equal_vars(agent, agent2)  # weights, both Adam slots and step counters, generator
    assert_equal_vars(wm, wm2)
    assert int(agent2.q_optimizer.iterations.numpy()) == 2
    assert np.any(agent2.q_optimizer.m[0].numpy() != 0)
    # the next updates are the same, random member draws included
    batch = make_batch(OBS, ACT, seed=5)
    for a, w in ((agent, wm), (agent2, wm2)):
        w.train_step(batch)
        a.train_step(batch, w)
    assert_equal_vars(agent, agent2)
    assert_equal_vars(wm, wm2)


def test_strict_restore_refuses_extra_and_missing_variables_and_changes_nothing(tmp_path,
                                                                              trained):
    wm, agent = trained
    both = checkpoint.save_checkpoint(str(tmp_path / "both"), {"valuerl": agent, "worldmodel": wm},
                                      COUNTERS)
    only = checkpoint.save_checkpoint(str(tmp_path / "only"), {"valuerl": agent}, COUNTERS)
    wm2, agent2 = build(seed=1)
    before = snapshot(agent2), snapshot(wm2)
    with pytest.raises(CheckpointError) as extra:
        checkpoint.restore_checkpoint(both, {"valuerl": agent2})
    message = str(extra.value)
    assert both in message and "nothing matches" in message and "worldmodel/" in message
    assert "strict=False" in message
    with pytest.raises(CheckpointError) as missing:
        checkpoint.restore_checkpoint(only, {"valuerl": agent2, "worldmodel": wm2})
    message = str(missing.value)
    assert only in message and "lacks" in message and "worldmodel/" in message
    after = snapshot(agent2), snapshot(wm2)
    for b, a in zip(before, after, strict=True):
        assert b.keys() == a.keys() and all(np.array_equal(b[k], a[k]) for k in b)


def test_shape_mismatch_is_refused_even_when_not_strict(tmp_path):
    _, agent = build(seed=0)
    path = checkpoint.save_checkpoint(str(tmp_path), {"valuerl": agent}, COUNTERS)
    bigger = {**CONFIG, "policy_config": {**CONFIG["policy_config"], "hidden_dim": 16}}
    other = valuerl.ValueRL(bigger, seed=0, jit_compile=False)
    for strict in (True, False):
        with pytest.raises(CheckpointError, match="other shapes"):
            checkpoint.restore_checkpoint(path, {"valuerl": other}, strict=strict)


def test_partial_loads_for_actors(tmp_path, trained, make_batch):
    wm, agent = trained
    path = checkpoint.save_checkpoint(str(tmp_path), {"valuerl": agent, "worldmodel": wm},
                                      COUNTERS)
    # the whole agent from a checkpoint that holds more
    _, actor = build(seed=2)
    assert checkpoint.restore_checkpoint(path, {"valuerl": actor}, strict=False) == COUNTERS
    assert_equal_vars(agent, actor)
    # the policy alone: Q, target, optimizers and generator stay as they were
    _, actor = build(seed=3)
    q_before = snapshot(actor.q)
    gen_before = actor.generator.state.numpy().copy()
    checkpoint.restore_checkpoint(path, {"valuerl": actor.policy_view()}, strict=False)
    assert_equal_vars(agent.policy, actor.policy)
    assert all(np.array_equal(q_before[k], v) for k, v in snapshot(actor.q).items())
    np.testing.assert_array_equal(actor.generator.state.numpy(), gen_before)
    obs = make_batch(OBS, ACT, seed=1).obs
    np.testing.assert_array_equal(actor.policy(obs).numpy(), agent.policy(obs).numpy())
    # a checkpoint of something else entirely is refused
    with pytest.raises(CheckpointError, match="holds none of the variables"):
        checkpoint.restore_checkpoint(path, {"other": actor.policy_view()}, strict=False)


def test_layout_pointer_keep_three_and_incomplete_folders(tmp_path):
    directory = str(tmp_path / "ckpts")
    assert checkpoint.latest_checkpoint(directory) is None
    _, agent = build(seed=0)
    for i in range(1, 6):
        path = checkpoint.save_checkpoint(directory, {"valuerl": agent}, {**COUNTERS, "epoch": i})
        assert path == os.path.join(directory, f"ckpt-{i}")
        assert checkpoint.latest_checkpoint(directory) == path
    names = sorted(os.listdir(directory))
    assert names == ["ckpt-3", "ckpt-4", "ckpt-5", "latest.json"]
    assert sorted(os.listdir(os.path.join(directory, "ckpt-5"))) == [
        "counters.json", "variables.data-00000-of-00001", "variables.index"]
    with open(os.path.join(directory, "latest.json")) as f:
        pointer = json.load(f)
    assert pointer == {"checkpoint": "ckpt-5", "counters": {**COUNTERS, "epoch": 5}}
    assert checkpoint.latest_counters(directory) == {**COUNTERS, "epoch": 5}
    # a crashed save (temporary folder) and a later folder without its index are ignored
    os.makedirs(os.path.join(directory, ".tmp-ckpt-6-123"))
    os.makedirs(os.path.join(directory, "ckpt-7"))
    os.remove(os.path.join(directory, "latest.json"))
    assert checkpoint.latest_checkpoint(directory) == os.path.join(directory, "ckpt-5")
    assert checkpoint.latest_counters(directory) is None  # the counters live in the pointer
    with open(os.path.join(directory, "latest.json"), "w") as f:
        json.dump({"checkpoint": "ckpt-2", "counters": COUNTERS}, f)  # names a deleted folder
    assert checkpoint.latest_counters(directory) is None
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        checkpoint.restore_checkpoint(os.path.join(directory, "ckpt-7"), {"valuerl": agent})


def test_a_failed_save_leaves_no_folder_and_dead_saves_are_cleared(tmp_path, monkeypatch):
    directory = str(tmp_path / "ckpts")
    _, agent = build(seed=0)
    first = checkpoint.save_checkpoint(directory, {"valuerl": agent}, COUNTERS)
    write_json = util.atomic_write_json

    def full_disk(path, data):
        if os.path.basename(path) == "counters.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        write_json(path, data)

    monkeypatch.setattr(util, "atomic_write_json", full_disk)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save_checkpoint(directory, {"valuerl": agent}, {**COUNTERS, "epoch": 2})
    monkeypatch.undo()
    assert sorted(os.listdir(directory)) == ["ckpt-1", "latest.json"]  # no partial folder
    assert checkpoint.latest_checkpoint(directory) == first
    # a save killed mid-way leaves its folder; the next save deletes it once its process is gone
    child = subprocess.Popen(["true"])
    child.wait()  # a pid that no longer runs
    os.makedirs(os.path.join(directory, f".tmp-ckpt-2-{child.pid}"))
    os.makedirs(os.path.join(directory, f".tmp-ckpt-2-{os.getppid()}"))  # a live process's
    checkpoint.save_checkpoint(directory, {"valuerl": agent}, {**COUNTERS, "epoch": 2})
    assert sorted(os.listdir(directory)) == [
        f".tmp-ckpt-2-{os.getppid()}", "ckpt-1", "ckpt-2", "latest.json"]


def test_backup_copies_the_latest_complete_checkpoint(tmp_path):
    directory, backups = str(tmp_path / "ckpts"), str(tmp_path / "backups")
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        checkpoint.backup_checkpoint(directory, backups)
    _, agent = build(seed=0)
    checkpoint.save_checkpoint(directory, {"valuerl": agent}, COUNTERS)
    checkpoint.save_checkpoint(directory, {"valuerl": agent}, {**COUNTERS, "updates": 2000})
    made = checkpoint.backup_checkpoint(directory, backups)
    assert made == (os.path.join(backups, "2000"), None)  # named by the updates it holds
    _, other = build(seed=4)
    assert checkpoint.restore_checkpoint(made.path, {"valuerl": other})["updates"] == 2000
    assert_equal_vars(agent, other)
    # the same checkpoint again (a resume reached it again): kept, nothing to say
    assert checkpoint.backup_checkpoint(directory, backups) == made
    # another checkpoint of the same update (a resume from an older one redid the updates):
    # the backup there is kept, and the note says so
    _, changed = build(seed=5)
    newer = checkpoint.save_checkpoint(directory, {"valuerl": changed},
                                       {**COUNTERS, "updates": 2000})
    again = checkpoint.backup_checkpoint(directory, backups)
    assert again.path == made.path and "kept it" in again.note and newer in again.note
    assert checkpoint.restore_checkpoint(made.path, {"valuerl": other})["updates"] == 2000
    assert_equal_vars(agent, other)  # still the first one
    assert sorted(os.listdir(backups)) == ["2000"]


def stub_learner(tmp_path, epoch_every_n=25, backup_every_n=10, config=None, cls=None):
    """A policy learner of a run in tmp_path/run, for calling its methods by hand: by default
    one without networks (pipeline_stubs.StubLearner) and a config of its counters alone."""
    import threading
    import time

    from pipeline_stubs import StubLearner
    from process.roles import ProcessSpec
    from process.rundir import Progress, RunDir

    run = RunDir(root=str(tmp_path / "run"), name="run")
    run.log.mkdir(parents=True, exist_ok=True)
    Progress(run.progress_file, create=True)
    if config is None:
        config = {"policy_config": {"log_every_n": 10, "epoch_every_n": epoch_every_n,
                                    "backup_every_n": backup_every_n}}
    spec = ProcessSpec(role="policy", index=0, run=run, config=config, seed=0,
                       cuda_visible_devices="", hours_base=0.0, start_time=time.time())
    return (cls or StubLearner)(spec, threading.Event(), threading.Event())


def test_backups_between_epochs_are_named_by_the_update_they_hold_and_resume_over_them(
        tmp_path):
    """backup_every_n 10, epoch_every_n 25: the backup at update 30 holds the checkpoint of
    update 25, so it is backups/policy/25; after a kill and a resume from that checkpoint,
    reaching update 30 again backs up the same checkpoint again without an error."""
    import tensorflow as tf

    module = tf.Module()
    module.w = tf.Variable([1.0, 2.0])
    objects = {"net": module}
    learner = stub_learner(tmp_path)
    backups = learner.run.backup_dir("policy")
    learner.updates, learner.epoch = 25, 1
    learner.save(objects)  # the epoch at update 25
    learner.updates = 30
    learner.backup()
    assert sorted(os.listdir(backups)) == ["25"]
    assert checkpoint.read_counters(backups / "25")["updates"] == 25
    learner.updates = 40
    learner.backup()  # still the checkpoint of update 25
    assert sorted(os.listdir(backups)) == ["25"]
    # killed here (no final checkpoint): the resume starts from update 25
    resumed = stub_learner(tmp_path)
    resumed.restore(objects)
    assert resumed.updates == 25
    resumed.updates = 30
    resumed.backup()
    assert sorted(os.listdir(backups)) == ["25"]
    log = (learner.run.log / learner.row.log).read_text()
    assert log.count("\n") == 1 and "resumed from" in log  # the same content: nothing to say
    # a different checkpoint of update 25 (redone after a resume from an older one): kept, one line
    module.w.assign([3.0, 4.0])
    resumed.updates = 25
    resumed.save(objects)
    resumed.backup()
    assert sorted(os.listdir(backups)) == ["25"]
    lines = (learner.run.log / learner.row.log).read_text().splitlines()
    assert len(lines) == 2 and "kept it" in lines[1] and str(backups / "25") in lines[1], lines


# ------------------------------------------------------------------ damaged checkpoints


def damage(path, how):
    """Damage the data file of the checkpoint folder `path`: cut it short, or flip one byte of a
    variable's value (its checksum then fails)."""
    data = os.path.join(path, "variables.data-00000-of-00001")
    with open(data, "r+b") as f:
        if how == "truncate":
            f.truncate(100)
        else:
            f.seek(100)
            byte = f.read(1)[0]
            f.seek(100)
            f.write(bytes([byte ^ 0xFF]))


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_restore_falls_back_to_the_newest_readable_checkpoint_and_says_so(tmp_path, how):
    learner = stub_learner(tmp_path)
    directory = str(learner.run.checkpoint_dir("policy"))
    _, old = build(seed=0)
    _, new = build(seed=1)
    older = checkpoint.save_checkpoint(directory, {"valuerl": old}, COUNTERS)
    newest = checkpoint.save_checkpoint(directory, {"valuerl": new},
                                        {**COUNTERS, "epoch": 4, "updates": 2000})
    damage(newest, how)
    _, fresh = build(seed=2)
    learner.restore({"valuerl": fresh})
    assert (learner.updates, learner.epoch) == (1500, 3)
    assert_equal_vars(old, fresh)
    (line,) = (learner.run.log / learner.row.log).read_text().splitlines()
    assert line.startswith(f"resumed from {older}, not from the newer {newest} (")
    assert line.endswith("), which cannot be read")
    with pytest.raises(checkpoint.UnreadableCheckpoint):  # not a mismatch
        checkpoint.restore_checkpoint(newest, {"valuerl": fresh})


def fake_checkpoints(directory, n):
    """ckpt-1..ckpt-n folders that look complete (empty files), for a fake `load`."""
    for i in range(1, n + 1):
        folder = directory / f"ckpt-{i}"
        folder.mkdir(parents=True)
        (folder / "variables.index").write_bytes(b"")
        (folder / "counters.json").write_text(json.dumps({**COUNTERS, "updates": i}))
    return [str(directory / f"ckpt-{i}") for i in range(1, n + 1)]


def test_load_newest_retries_in_place_follows_a_replaced_one_and_refuses_a_mismatch(
        tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "RETRY_SECONDS", 0.0)
    one, two = fake_checkpoints(tmp_path, 2)
    calls = []

    def flaky(path):  # the newest fails twice while it stays in place, then reads
        calls.append(path)
        if len(calls) <= checkpoint.RETRIES - 1:
            raise checkpoint.UnreadableCheckpoint("busy", path, "busy")
        return checkpoint.read_counters(path)

    loaded = checkpoint.load_newest(str(tmp_path), flaky)
    assert loaded.path == two and loaded.skipped == () and calls == [two] * checkpoint.RETRIES

    calls.clear()

    def pruned(path):  # a newer save deletes the newest while it is read
        calls.append(path)
        if path == two:
            import shutil

            shutil.rmtree(path)
            raise FileNotFoundError(path)
        return checkpoint.read_counters(path)

    loaded = checkpoint.load_newest(str(tmp_path), pruned)
    assert loaded.path == one and loaded.skipped == () and calls == [two, one]

    def mismatch(path):
        calls.append(path)
        raise CheckpointError("other shapes")

    calls.clear()
    with pytest.raises(CheckpointError, match="other shapes") as error:
        checkpoint.load_newest(str(tmp_path), mismatch)
    assert not isinstance(error.value, checkpoint.UnreadableCheckpoint) and calls == [one]


def test_no_readable_checkpoint_is_one_error_naming_each(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "RETRY_SECONDS", 0.0)
    one, two = fake_checkpoints(tmp_path, 2)

    def broken(path):
        raise checkpoint.UnreadableCheckpoint("damaged", path, "DataLossError: checksum")

    with pytest.raises(checkpoint.UnreadableCheckpoint) as error:
        checkpoint.load_newest(str(tmp_path), broken)
    assert error.value.skipped == ((two, "DataLossError: checksum"),
                                   (one, "DataLossError: checksum"))
    assert f"no checkpoint in {tmp_path} can be read" in str(error.value)
    assert checkpoint.load_newest(str(tmp_path), broken, skip={one, two}) is None
    assert checkpoint.load_newest(str(tmp_path / "none"), broken) is None


def test_save_fsyncs_every_file_and_the_folders_before_the_pointer_moves(tmp_path, monkeypatch):
    events = []
    fsync, rename, replace = os.fsync, os.rename, os.replace

    def recording_fsync(fd):
        events.append(("fsync", os.path.realpath(os.readlink(f"/proc/self/fd/{fd}"))))
        fsync(fd)

    def recording_move(move):
        def moved(src, dst, **kw):
            events.append(("move", os.path.realpath(src), os.path.realpath(dst)))
            move(src, dst, **kw)
        return moved

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "rename", recording_move(rename))
    monkeypatch.setattr(os, "replace", recording_move(replace))
    directory = os.path.realpath(tmp_path / "ckpts")
    _, agent = build(seed=0)
    final = checkpoint.save_checkpoint(directory, {"valuerl": agent}, COUNTERS)
    (to_final,) = [i for i, e in enumerate(events) if e[0] == "move" and e[2] == final]
    tmp = events[to_final][1]
    (to_pointer,) = [i for i, e in enumerate(events) if e[0] == "move"
                     and e[2] == os.path.join(directory, "latest.json")]
    synced_before = {e[1] for e in events[:to_final] if e[0] == "fsync"}
    for name in os.listdir(final):  # every file of the checkpoint, and its folder
        assert os.path.join(tmp, name) in synced_before, name
    assert tmp in synced_before
    # the rename itself (the parent folder) before the pointer names it
    assert ("fsync", directory) in events[to_final:to_pointer]


def test_policy_learner_reloads_the_newest_readable_world_model(tmp_path, monkeypatch):
    """The policy learner's world-model reload passes over a damaged newest world model for the
    older one, says so once, and does not read the damaged one again at the next epoch."""
    import config as config_lib
    from valuerl_learner import ValueRLLearner

    monkeypatch.setattr(checkpoint, "RETRY_SECONDS", 0.0, raising=False)
    config = config_lib.load_config(Path(__file__).parent / "configs/tiny_steve.json")
    learner = stub_learner(tmp_path, config=config, cls=ValueRLLearner)
    learner.build()
    directory = str(learner.run.checkpoint_dir("worldmodel"))
    pretrained = {**COUNTERS, "updates": config["model_config"]["pretrain_n"]}
    old = worldmodel.WorldModel(config, seed=3)
    older = checkpoint.save_checkpoint(directory, {"worldmodel": old}, pretrained)
    newest = checkpoint.save_checkpoint(directory, {"worldmodel": worldmodel.WorldModel(
        config, seed=4)}, {**pretrained, "updates": pretrained["updates"] + 25})
    (Path(newest) / "variables.data-00000-of-00001").write_bytes(b"")
    assert learner._reload_worldmodel()
    assert_equal_vars(old, learner.worldmodel)
    reads = []
    restore = checkpoint.restore_checkpoint
    monkeypatch.setattr(checkpoint, "restore_checkpoint",
                        lambda path, *a, **k: reads.append(path) or restore(path, *a, **k))
    assert learner._reload_worldmodel() and reads == []  # the next epoch: nothing new to read
    (line,) = (learner.run.log / learner.row.log).read_text().splitlines()
    assert line.startswith(f"world model: using {older}, not the newer {newest} (")
    assert line.endswith("), which cannot be read")
