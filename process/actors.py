"""Interactors and evaluators: the processes that play the environment.

Both run on the CPU (master.py hides every GPU from them).
- An interactor steps `agent_config.batch_size` environments, acts uniformly at random for the
  first `agent_config.full_random_n` frames and until a policy checkpoint exists, then with the
  exploring policy (docs/algorithm.md section 5), and appends every frame to the shared replay
  buffer (`replay/`). With `agent_config.wait_for_learners` it pauses while a learner is behind its
  `frames_per_update` ratio, so the update-per-frame ratio holds on any hardware (a learner that
  waits for another learner holds no one: roles.learners_behind). It checks for
  a newer policy checkpoint every `reload_every_n` steps (a stat of the pointer file; the
  checkpoint itself is read only when it changed). It exits when the buffer holds the frame
  budget (`--total-frames`).
- An evaluator runs the greedy policy on `evaluator_config.batch_size` environments and, at the
  end of every episode, appends `hours,epoch,frames,score` to `log/<EXPERIMENT>.greedy.csv`
  (under a lock) and picks up the newest policy. With `evaluator_config.episodes_per_policy` N
  it plays at most N episodes with each policy and then waits for the next checkpoint (so that
  evaluation does not take a whole core from the learners on a small machine); false (the
  2018 behaviour) evaluates without pause.
Both act with `PolicyActor`: a numpy copy of the policy, restored from the policy learner's
checkpoints (`checkpoints/policy/`, object `valuerl`) without its optimizers. Both write
TensorBoard summaries under `tensorboard/<process>/`, with frames as the x-axis: the interactor
one `charts/episodic_return` and `charts/episodic_length` point per finished training episode
(written in bulk every SUMMARY_SECONDS and at exit), `charts/episodes` and
`charts/frames_per_s`; the evaluator `eval/episodic_return`, `eval/episodic_length` and
`eval/episodes` per evaluation episode.

Why a plain loop over environments (envwrap.EnvBatch) and not gymnasium's vector envs: see
envwrap.EnvBatch; in short the replay needs the true successor of every step and a time-out that
is not terminal, and a plain loop on one core is as fast as a synchronous vector env.
"""

from __future__ import annotations

import os
import time

import numpy as np

from process import runtime
from process.roles import POLICY, ProcessSpec, learners_behind, role
from process.rundir import Progress, append_greedy_row
from replay import ReplayBuffer

THROTTLE_SECONDS = 0.001  # how long an interactor waits for the learners before looking again
SUMMARY_SECONDS = 10.0  # how often an interactor writes its TensorBoard summaries


def process_seed(spec: ProcessSpec) -> int:
    """A distinct, reproducible seed for each process of a run."""
    stream = [spec.seed, spec.row.seed_stream, spec.index]
    return int(np.random.SeedSequence(stream).generate_state(1)[0])


class PolicyActor:
    """The acting view of a policy checkpoint: the one implementation of acting, used by the
    interactors, the evaluators and the visualizer.

    It restores only the policy (a partial restore) and then acts with a numpy copy of its
    weights (docs/algorithm.md section 5: greedy tanh(pi(s)); exploring with 2018's per-dimension
    noise or TD3's Gaussian noise), at a few microseconds per call instead of the ~1 ms a
    TensorFlow call costs at batch size 8, so acting costs little beyond the simulator.
    """

    def __init__(self, config: dict, seed: int):
        import valuerl

        self.valuerl = valuerl.ValueRL(config, seed=seed)
        self.explore_noise = self.valuerl.settings.explore_noise
        self.rng = np.random.default_rng(seed)
        self.layers: list[tuple[np.ndarray, np.ndarray]] = []

    def restore(self, path: str) -> dict:
        from process import checkpoint
        key = role(POLICY).checkpoint_key
        counters = checkpoint.restore_checkpoint(path, {key: self.valuerl.policy_view()},
                                                 strict=False)
        policy = self.valuerl.policy
        self.layers = [(w.numpy(), b.numpy()) for w, b in zip(policy.w, policy.b, strict=True)]
        return counters

    def pre_tanh(self, obs: np.ndarray) -> np.ndarray:
        """pi(obs): obs [B, obs] -> [B, act], ReLU between layers, linear output."""
        h = np.asarray(obs, np.float32)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                np.maximum(h, 0.0, out=h)
        return h

    def greedy_action(self, obs: np.ndarray) -> np.ndarray:
        return np.tanh(self.pre_tanh(obs))  # [B, act]

    def explore_action(self, obs: np.ndarray, explore_chance: float) -> np.ndarray:
        pre = self.pre_tanh(obs)  # [B, act]
        if self.explore_noise:  # policy_config.explore_noise: Gaussian noise on every step
            noise = self.explore_noise * self.rng.standard_normal(pre.shape, np.float32)
            return np.clip(np.tanh(pre) + noise, -1.0, 1.0).astype(np.float32)  # [B, act]
        noisy = self.rng.random(pre.shape) < explore_chance  # [B, act]
        pre = np.where(noisy, pre + self.rng.standard_normal(pre.shape, np.float32), pre)
        return np.clip(np.tanh(pre), -1.0, 1.0).astype(np.float32)  # [B, act]


def make_actor(spec: ProcessSpec, seed: int):
    """What this acting process acts with: the class `spec.impl` names for its role (PolicyActor
    by default), or else the policy learner class's `make_actor` (a stand-in learner of a test
    brings its own actor)."""
    if spec.impl.get(spec.role):
        return spec.implementation()(spec.config, seed)
    return spec.implementation(POLICY).make_actor(spec.config, seed)


class PolicyWatcher:
    """Loads the policy learner's newest checkpoint into an actor when it changes.

    A checkpoint that cannot be read (damaged, or gone while being read) does not stop it:
    checkpoint.load_newest reads it again briefly, then loads the next older one, and the
    process's output (`log/<process>.out`) says which was passed over; it is not tried again.
    """

    def __init__(self, spec: ProcessSpec, seed: int):
        from process import checkpoint
        self.spec = spec
        self.directory = spec.run.checkpoint_dir(POLICY)
        self.pointer = checkpoint.pointer_file(self.directory)
        self.seed = seed
        self.actor = None
        self.epoch = 0
        self.loaded = False
        self._stamp = None
        self.stamp = None  # identifies the loaded checkpoint's pointer version
        self.unreadable: set[str] = set()  # checkpoints passed over: never read again

    def poll(self) -> bool:
        """Load a newer checkpoint if the pointer changed; True once a policy is loaded."""
        from process import checkpoint
        try:
            st = os.stat(self.pointer)
        except FileNotFoundError:
            return self.loaded
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return self.loaded
        if self.actor is None:
            self.actor = make_actor(self.spec, self.seed)
        try:
            loaded = checkpoint.load_newest(self.directory, self.actor.restore,
                                            skip=self.unreadable)
        except checkpoint.UnreadableCheckpoint as e:
            # nothing readable that is new: keep acting as before until the next save
            self._pass_over(e.skipped, "acting as before")
            self._stamp = stamp
            return self.loaded
        if loaded is None:  # none, or only those passed over before: wait for the next save
            self._stamp = stamp
            return self.loaded
        self._pass_over(loaded.skipped, f"acting with {loaded.path}")
        self.epoch = int(loaded.counters.get("epoch", 0))
        self._stamp = self.stamp = stamp
        self.loaded = True
        return True

    def _pass_over(self, skipped: tuple[tuple[str, str], ...], doing: str) -> None:
        """Remember checkpoints that cannot be read, and say so once (one line)."""
        from process import checkpoint
        if skipped:
            self.unreadable.update(path for path, _ in skipped)
            print(f"{self.spec.name}: {doing}, not with the newer "
                  f"{checkpoint.describe_skipped(skipped)}, which cannot be read", flush=True)


def _wait_for_replay(spec: ProcessSpec, stop) -> ReplayBuffer | None:
    while not ReplayBuffer.exists(spec.run.replay):
        runtime.beat()
        if stop.wait(0.05):
            return None
    # sync=False: no msync per append. A frame is still visible only once whole and survives
    # any process crash (it is in the page cache); only an OS crash could lose recent frames,
    # and a resume after one starts from checkpoints that never depend on them.
    return ReplayBuffer.open(spec.run.replay, sync=False)


def _summary_writer(spec: ProcessSpec):
    import tensorflow as tf

    return tf.summary.create_file_writer(str(spec.run.tensorboard(spec.tensorboard_name)))


def run_interactor(spec: ProcessSpec, stop, finish) -> None:
    """Entry function of an interactor process."""
    import envwrap
    import nn

    nn.configure_tensorflow(spec.threads or 1)
    config = spec.config
    ac = config["agent_config"]
    seed = process_seed(spec)
    rng = np.random.default_rng(seed)
    envs = envwrap.EnvBatch(config["env"], ac["batch_size"], seed=seed)
    replay = _wait_for_replay(spec, stop)
    if replay is None:
        return
    progress = Progress(spec.run.progress_file)
    watcher = PolicyWatcher(spec, seed)
    explore = config["policy_config"].get("explore_chance") or 0.0
    full_random = ac.get("full_random_n") or 0
    throttle = bool(ac.get("wait_for_learners"))
    slack = ac["batch_size"] * ac["count"]
    reload_every = max(1, ac["reload_every_n"])
    writer = _summary_writer(spec)
    total = spec.total_frames
    obs = envs.reset()
    steps, have_policy = 0, False
    episodes = 0  # training episodes finished by this interactor since it started
    pending: list[tuple[int, float, int]] = []  # (frames, return, length) not yet in TensorBoard
    t0, f0 = time.time(), replay.count
    while not stop.is_set():
        runtime.beat()  # also while paused for the learners: a paused interactor is alive
        frames = replay.count
        if total is not None and frames >= total:
            break  # the budget is reached: the master sets `finish` once every interactor left
        if throttle and learners_behind(config, frames, progress.updates,
                                        progress.waiting_for_learner, slack):
            time.sleep(THROTTLE_SECONDS)
            continue
        if steps % reload_every == 0:
            loaded = watcher.poll()
            if loaded and not have_policy:
                runtime.started()  # the first policy is loaded (the actor built)
            have_policy = loaded
        if not have_policy or frames < full_random:
            actions = rng.uniform(-1.0, 1.0, size=(envs.n, envs.action_dims)).astype(np.float32)
        else:
            actions = watcher.actor.explore_action(obs, explore)
        step = envs.step(actions)
        states = (step.state, step.next_state) if replay.state_dims else ()
        frames = replay.append(obs, step.next_obs, actions, step.reward, step.terminal, *states)
        obs = step.obs
        steps += 1
        if steps == 1:
            runtime.holding_work()  # summaries to write at exit: its start-up is over
        pending.extend((frames, float(ret), int(length)) for _, ret, length in step.finished)
        episodes += len(step.finished)
        pending, t0, f0 = _summaries_when_due(writer, pending, episodes, frames, t0, f0)
    _last_summaries(writer, pending, episodes, replay.count, f0, t0)
    print(f"{spec.name}: {episodes} training episodes finished; {steps} steps of {envs.n} "
          f"environments", flush=True)


def _summaries_when_due(writer, pending: list[tuple[int, float, int]], episodes: int,
                        frames: int, t0: float, f0: int) -> tuple[list, float, int]:
    """Write the pending episodes and the frame rate every SUMMARY_SECONDS (in bulk: a
    TensorFlow call costs ~0.1 ms); returns what is still pending and the new time origin."""
    now = time.time()
    if now - t0 < SUMMARY_SECONDS:
        return pending, t0, f0
    write_training_episodes(writer, pending, episodes)
    _write_frame_rate(writer, frames, (frames - f0) / (now - t0))
    return [], now, frames


def _last_summaries(writer, pending: list[tuple[int, float, int]], episodes: int, frames: int,
                    f0: int, t0: float) -> None:
    """The interactor's last, partial summary window (training episodes and frames per second
    since frame f0 at time t0), then flush."""
    write_training_episodes(writer, pending, episodes)
    if frames > f0:
        _write_frame_rate(writer, frames, (frames - f0) / max(time.time() - t0, 1e-9))
    writer.flush()


def _write_frame_rate(writer, frames: int, rate: float) -> None:
    import tensorflow as tf

    with writer.as_default(step=frames):
        tf.summary.scalar("charts/frames_per_s", rate)


def write_training_episodes(writer, finished: list[tuple[int, float, int]], count: int) -> None:
    """One `charts/episodic_return` and `charts/episodic_length` point per finished training
    episode (x: the frame count when it ended), and `charts/episodes`, the episodes finished so
    far (`count`, including these)."""
    import tensorflow as tf

    if not finished:
        return
    with writer.as_default():
        for frames, episode_return, length in finished:
            tf.summary.scalar("charts/episodic_return", episode_return, step=frames)
            tf.summary.scalar("charts/episodic_length", length, step=frames)
        tf.summary.scalar("charts/episodes", count, step=finished[-1][0])


def run_evaluator(spec: ProcessSpec, stop, finish) -> None:
    """Entry function of an evaluator process."""
    import envwrap
    import nn

    nn.configure_tensorflow(spec.threads or 1)
    import tensorflow as tf

    config = spec.config
    seed = process_seed(spec)
    envs = envwrap.EnvBatch(config["env"], config["evaluator_config"]["batch_size"], seed=seed)
    replay = _wait_for_replay(spec, stop)
    if replay is None:
        return
    watcher = PolicyWatcher(spec, seed)
    while not watcher.poll():
        runtime.beat()
        if stop.wait(0.2):
            return
    runtime.started()
    runtime.holding_work()  # its start-up is over: a SIGTERM now ends its loop
    writer = _summary_writer(spec)
    per_policy = config["evaluator_config"].get("episodes_per_policy") or 0
    done_with_policy = 0
    episodes = 0  # evaluation episodes finished by this evaluator since it started
    obs = envs.reset()
    while not stop.is_set():
        runtime.beat()
        if per_policy and done_with_policy >= per_policy:
            # This policy has had its episodes: wait for a newer one, then start afresh.
            stamp = watcher.stamp
            while watcher.stamp == stamp and not stop.wait(0.2):
                runtime.beat()
                watcher.poll()
            done_with_policy = 0
            obs = envs.reset()
            continue
        step = envs.step(watcher.actor.greedy_action(obs))
        obs = step.obs
        if not step.finished:
            continue
        frames = replay.count
        for _, episode_return, length in step.finished:
            append_greedy_row(spec.run.greedy_csv, spec.hours(), watcher.epoch, frames,
                              float(episode_return))
            episodes += 1
            with writer.as_default(step=frames):
                tf.summary.scalar("eval/episodic_return", episode_return)
                tf.summary.scalar("eval/episodic_length", length)
                tf.summary.scalar("eval/episodes", episodes)
        done_with_policy += len(step.finished)
        writer.flush()
        if not per_policy:
            watcher.poll()
