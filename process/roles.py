"""The process roles of a run in one table, what one child process is given, and the frame-ratio
rule that the learners and the interactors share.

A run is a master (master.py) and four roles of child process, one row of `TABLE` each:

    role        entry function        reads             process             log / checkpoint key
    policy      learner:run_learner   policy_config     policy-learner      valuerl.log / valuerl
    worldmodel  learner:run_learner   model_config      worldmodel-learner  worldmodel.log /
                                                                            worldmodel
    interactor  agent:run_interactor  agent_config      interactor-<i>      -
    evaluator   agent:run_evaluator   evaluator_config  evaluator-<i>       -

The learners' updates follow their block's `frames_per_update`; interactors wait while a learner
lags behind it (`agent_config.wait_for_learners`); evaluators run free.

The role's name is its one identifier in the code; every other name is read from its row. The
names on disk are the 2018 ones: the policy learner writes `log/valuerl.log` and the checkpoint
key `valuerl`, beside `checkpoints/policy/` (a learner's checkpoint folder, its backups and its
TensorBoard folder carry the role's name; an acting process's TensorBoard folder carries its
process name). See process/rundir.py for the whole layout.

Every process of a run imports this module; it reads and writes nothing on disk, and imports no
other module of the project. master.py builds the topology from the table (`Role.count`,
`Role.gpu`) and runtime.child_main dispatches from it: the entry function and the class it
builds (`impl`) are named "module:name" and imported only in the child that needs them, so
learner.py and process/actors.py import this module and nothing imports them back.

The frame-ratio rule (docs/algorithm.md section 5) is `frame_ratio`: with `frames_per_update` = f
a learner may do update number u (counted after its `pretrain_n` unthrottled pretraining updates)
only when frames - frames_before_learning > f * u, and interactors with
`agent_config.wait_for_learners` pause while a learner is behind that rule by more than their slack
(`learners_behind`). A learner that waits for another learner (the policy learner of a
model-based config, until the world model's first pretrained checkpoint) holds no one: it cannot
update however many frames arrive, and the learner it waits for may still need frames for its own
`frames_before_learning`. So each learner waits only for its own warm-up, and whenever the
interactors pause, some learner can update (tests/test_roles.py checks this on random settings).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

POLICY, WORLDMODEL, INTERACTOR, EVALUATOR = "policy", "worldmodel", "interactor", "evaluator"

# How a role obeys the frame ratio.
UPDATES = "updates"  # a learner: its updates follow its block's frames_per_update
WAITS = "waits"  # an interactor: pauses while a learner is behind (agent_config.wait_for_learners)
FREE = "free"  # an evaluator: never throttled


@dataclass(frozen=True)
class Role:
    """One row of the role table (see the module docstring)."""

    name: str
    entry: str  # "module:function" the child runs, as function(spec, stop, finish)
    impl: str  # "module:Class" the entry builds: the learner class, or the actor that acts
    config_block: str  # the config block the role reads (its `count` too, for acting roles)
    ratio: str  # UPDATES, WAITS or FREE
    process: str  # the process name ({index}: the process's index within the role)
    tensorboard: str  # its folder under tensorboard/
    seed_stream: int  # keeps the random streams of the roles apart for one run seed
    model_only: bool = False  # runs only for model-based configs (those with a model_config)
    collects: bool = False  # appends frames to the replay buffer; leaves at the frame budget
    gpu: int | None = None  # learners: the offset from master.py's GPU argument
    log: str | None = None  # learners: their log under log/
    checkpoint_key: str | None = None  # learners: the name of their object in a checkpoint
    summarises_config: bool = False  # writes the resolved config to its TensorBoard folder

    @property
    def learner(self) -> bool:
        return self.ratio == UPDATES

    def count(self, config: dict, model_based: bool) -> int:
        """How many processes of this role a run of `config` has: one per learner (none of a
        model-only one in a model-free run), and its block's `count` of an acting role."""
        if self.learner:
            return 0 if self.model_only and not model_based else 1
        return int(config[self.config_block]["count"])

    def process_name(self, index: int) -> str:
        return self.process.format(index=index)

    def tensorboard_name(self, index: int) -> str:
        return self.tensorboard.format(index=index)


TABLE = (
    Role(POLICY, entry="learner:run_learner", impl="valuerl_learner:ValueRLLearner",
         config_block="policy_config", ratio=UPDATES, process="policy-learner",
         tensorboard="policy", seed_stream=1, gpu=0, log="valuerl.log",
         checkpoint_key="valuerl", summarises_config=True),
    Role(WORLDMODEL, entry="learner:run_learner", impl="worldmodel_learner:WorldModelLearner",
         config_block="model_config", ratio=UPDATES, process="worldmodel-learner",
         tensorboard="worldmodel", seed_stream=2, model_only=True, gpu=1, log="worldmodel.log",
         checkpoint_key="worldmodel"),
    Role(INTERACTOR, entry="process.actors:run_interactor", impl="process.actors:PolicyActor",
         config_block="agent_config", ratio=WAITS, process="interactor-{index}",
         tensorboard="interactor-{index}", seed_stream=7, collects=True),
    Role(EVALUATOR, entry="process.actors:run_evaluator", impl="process.actors:PolicyActor",
         config_block="evaluator_config", ratio=FREE, process="evaluator-{index}",
         tensorboard="evaluator-{index}", seed_stream=8),
)
ROLE = {role.name: role for role in TABLE}
LEARNERS = tuple(role.name for role in TABLE if role.learner)
DEFAULT_IMPL = {role.name: role.impl for role in TABLE}


def role(name: str) -> Role:
    """The table's row for `name`; ValueError for a name that is not a role."""
    try:
        return ROLE[name]
    except KeyError:
        raise ValueError(f"unknown process role {name!r}; the roles are "
                         f"{', '.join(ROLE)}") from None


def learners(config: dict) -> list[Role]:
    """The learner roles a resolved config runs: the policy learner, and the world-model learner
    when the config has a `model_config`."""
    model_based = bool(config.get("model_config"))
    return [r for r in TABLE if r.learner and r.count(config, model_based)]


def load(name: str):
    """The object a "module:name" string of the table names (imported now)."""
    # Strings, not the functions and classes themselves: the master builds and reads the table
    # but must never import the learners' and actors' modules, which import TensorFlow; only a
    # child imports them, after runtime.child_main has set its CUDA_VISIBLE_DEVICES.
    module_name, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


@dataclass(frozen=True)
class ProcessSpec:
    """Everything one child needs, as plain picklable values."""

    role: str  # a name of the role table
    index: int
    run: Any  # a rundir.RunDir (not imported: this module stays a leaf)
    config: dict
    seed: int
    cuda_visible_devices: str  # "" hides every GPU
    hours_base: float  # run hours already spent before this start (resume)
    start_time: float  # time.time() of this start, so every process shares one clock
    total_frames: int | None = None
    # "module:Class" per role name (DEFAULT_IMPL); a test may swap in stand-ins. When it names
    # no class for the acting roles, they act with the policy learner class's `make_actor`.
    impl: dict = field(default_factory=lambda: dict(DEFAULT_IMPL))
    threads: int | None = None  # TensorFlow threads; None lets the role choose
    verbose: bool = False  # keep TensorFlow's start-up lines and library warnings in the .out

    @property
    def row(self) -> Role:
        return role(self.role)

    @property
    def name(self) -> str:
        return self.row.process_name(self.index)

    @property
    def tensorboard_name(self) -> str:
        return self.row.tensorboard_name(self.index)

    def hours(self) -> float:
        return self.hours_base + (time.time() - self.start_time) / 3600.0

    @property
    def model_based(self) -> bool:
        return bool(self.config.get("model_config"))

    def implementation(self, role_name: str | None = None):
        """The class `impl` names for a role (this process's own by default)."""
        return load(self.impl[role_name or self.role])


# ------------------------------------------------------------------------------ the frame ratio


class Ratio(NamedTuple):
    may_update: bool  # the learner may do its next `n` updates now
    must_wait: bool  # interactors must pause: the learner is behind by more than the slack


def frame_ratio(frames: int, updates: int, cfg: dict, n: int = 1, slack: int = 0) -> Ratio:
    """The frames_per_update rule for one learner whose replay buffer holds `frames` frames after
    `updates` updates; `cfg` is its config block (policy_config or model_config).

    Update number u (0 first) may run when it is a pretraining update (u < pretrain_n) or when
    frames - frames_before_learning > frames_per_update * (u - pretrain_n); `may_update` asks
    that of the next `n` updates (updates_per_call runs n at once only when the last of them may
    run). Interactors must wait when the next update would be allowed even with `slack` frames
    fewer: the learner lags by more than the frames in flight (`slack`, one step of every
    interactor). While pretraining they wait as soon as `slack` frames are owed. `false` (or no)
    frames_per_update runs free: the learner never waits, nor makes anyone wait.
    """
    ratio = cfg.get("frames_per_update")
    if ratio is False or ratio is None:
        return Ratio(may_update=True, must_wait=False)
    pretrain = int(cfg.get("pretrain_n") or 0)
    owed = frames - cfg["frames_before_learning"]
    last = updates + n - 1
    may_update = last < pretrain or owed > ratio * (last - pretrain)
    must_wait = owed > ratio * max(updates - pretrain, 0) + slack
    return Ratio(may_update, must_wait)


def learners_behind(config: dict, frames: int, updates_of: Callable[[str], int],
                    waiting_for_learner: Callable[[str], bool], slack: int) -> bool:
    """True when some learner of `config` lags behind its frame ratio by more than `slack`
    frames (frame_ratio's must_wait) and is not waiting for another learner;
    `updates_of(role name)` gives its updates so far, `waiting_for_learner(role name)` whether it
    waits for another learner (rundir.Progress.waiting_for_learner: the policy learner waiting
    for the world model). Such a learner is left out: holding the interactors for it would
    deadlock a config whose world model starts later than the policy learner."""
    return any(frame_ratio(frames, updates_of(r.name), config[r.config_block],
                           slack=slack).must_wait and not waiting_for_learner(r.name)
               for r in learners(config))
