"""Strict, inheritable experiment configs (the format of docs/configs.md).

Used by every process: `master.py` resolves the config once and hands the resulting plain dict
to its children; it writes it to `<run>/log/hps.json`. This module reads config files and
writes nothing.

A config file is a JSON object with two optional keys:
- "inherits": a list of other config files, resolved recursively and deep-merged in order;
- "updates": an object merged last, so the file wins over what it inherits.

Merge rules: objects merge key by key; any other value (number, string, list, false) replaces.
An absent key reads as false. A key "*name" is a ghost block: it is merged into "name" only if
something earlier in the merge order already created "name" (it never creates it), except in the
top config itself, where it applies normally.

"Earlier" is defined on the linear merge order: every file contributes its "updates" after those
of all the files it inherits (depth first, in list order), and the resolved config is the fold of
those update blocks in that order. A ghost block applies iff its key exists in the fold of every
block before its own.

Paths in "inherits" are tried, in order, relative to: the inheriting file's folder, the folder
that holds the config tree the file lives in (the parent of its nearest ancestor named
`config`), and this project's root. So the 2018 style "config/core/basic.json" works from any
working directory.

Strictness: every key must be one the program reads (SCHEMA below) and have the right type;
errors name the file and the key. `load_config` returns a plain dict that `json.dumps` accepts.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parent


class ConfigError(UserError, ValueError):
    """A config problem a user can fix; the message is one sentence naming file, key and fix."""


# --------------------------------------------------------------------------------------------
# Schema: every key the program reads, with its type.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    """A scalar key: `check` validates a value, `kind` names the expected type in errors."""

    kind: str
    check: Callable[[object], bool]


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


STR = Leaf("a string", lambda v: isinstance(v, str))
INT = Leaf("an integer", _is_int)
NUMBER = Leaf("a number", _is_number)
BOOL = Leaf("true or false", lambda v: isinstance(v, bool))
INT_OR_FALSE = Leaf("an integer or false", lambda v: v is False or _is_int(v))
NUMBER_OR_FALSE = Leaf("a number or false", lambda v: v is False or _is_number(v))


def choice(*values: str) -> Leaf:
    """A string that must be one of `values`."""
    return Leaf("one of " + ", ".join(json.dumps(v) for v in values), lambda v: v in values)


# How ensembles' stacked weights are drawn (nn.ENSEMBLE_INITS; "stacked" is 2018's).
ENSEMBLE_INIT = choice("stacked", "per_member")
# What each ensemble member trains on: "split" (2018: each example goes to one member, so each
# member learns from its own part of the batch) or "full" (every member on the whole batch).
ENSEMBLE_BATCH = choice("split", "full")

ENSEMBLE = {"ensemble_size": INT, "train_sample_count": INT, "eval_sample_count": INT}
# What both learners (policy_config and model_config) read: learner.Learner's loop settings.
LEARNER = {
    "batch_size": INT,
    "replay_size": INT,
    "frames_before_learning": INT,
    "log_every_n": INT,
    "epoch_every_n": INT,
    "backup_every_n": INT_OR_FALSE,
    "frames_per_update": NUMBER_OR_FALSE,
    "updates_per_call": INT,
    "learning_rate": NUMBER,
}

SCHEMA: dict = {
    "output_root": STR,
    "save_model_path": STR,
    "log_path": STR,
    "seed": INT,
    "env": {
        "name": STR,
        "obs_dims": INT,
        "action_dims": INT,
        "reward_scale": NUMBER,
        "discount": NUMBER,
        "max_frames": INT,
    },
    "agent_config": {
        "count": INT,
        "batch_size": INT,
        "reload_every_n": INT,
        "full_random_n": INT_OR_FALSE,
        "wait_for_learners": BOOL,
    },
    "evaluator_config": {"count": INT, "batch_size": INT, "episodes_per_policy": INT_OR_FALSE},
    "policy_config": {
        "algo": STR,
        "hidden_dim": INT,
        "hidden_layers": INT,
        "ensemble_init": ENSEMBLE_INIT,
        "ensemble_batch": ENSEMBLE_BATCH,
        "backbone": choice("ddpg", "td3"),
        "explore_chance": NUMBER_OR_FALSE,
        "explore_noise": NUMBER_OR_FALSE,
        **LEARNER,
        "pretanh_penalty": NUMBER,
        "variance_epsilon": NUMBER,
        "covariance_ridge": NUMBER,
        "bayesian": ENSEMBLE,
        "td3": {"target_noise": NUMBER, "target_noise_clip": NUMBER, "policy_delay": INT,
                "tau": NUMBER},
        "value_expansion": {
            "rollout_len": INT,
            "mean_k_return": BOOL,
            "tdk_trick": BOOL,
            "lambda_return": NUMBER_OR_FALSE,
            "steve_reweight": BOOL,
            "covariances": BOOL,
            # Roll out the simulator itself (learning/oracle.py) instead of a learned model.
            "oracle": BOOL,
        },
    },
    "model_config": {
        "transition_hidden_dim": INT,
        "transition_layers": INT,
        "aux_hidden_dim": INT,
        "aux_layers": INT,
        "ensemble_init": ENSEMBLE_INIT,
        "ensemble_batch": ENSEMBLE_BATCH,
        **LEARNER,
        "pretrain_n": INT_OR_FALSE,
        "weight_decay": NUMBER,
        "bayesian": {"transition": ENSEMBLE, "reward": ENSEMBLE},
    },
}

# Keys every resolved config must carry (a present-but-false block is "off" and needs nothing).
_LEARNER_KEYS = (
    "batch_size",
    "replay_size",
    "frames_before_learning",
    "log_every_n",
    "epoch_every_n",
    "learning_rate",
)
REQUIRED: dict[str, tuple[str, ...]] = {
    "": ("output_root", "save_model_path", "log_path", "env", "agent_config",
         "evaluator_config", "policy_config"),
    "env": ("name", "obs_dims", "action_dims", "reward_scale", "discount", "max_frames"),
    "agent_config": ("count", "batch_size", "reload_every_n"),
    "evaluator_config": ("count", "batch_size"),
    "policy_config": ("algo", "hidden_dim", "hidden_layers", "pretanh_penalty",
                      "variance_epsilon", "covariance_ridge") + _LEARNER_KEYS,
    "policy_config.bayesian": tuple(ENSEMBLE),
    "policy_config.td3": ("target_noise", "target_noise_clip", "policy_delay", "tau"),
    "policy_config.value_expansion": ("rollout_len",),
    "model_config": ("transition_hidden_dim", "transition_layers", "aux_hidden_dim",
                     "aux_layers", "weight_decay") + _LEARNER_KEYS,
    "model_config.bayesian": ("transition", "reward"),
    "model_config.bayesian.transition": tuple(ENSEMBLE),
    "model_config.bayesian.reward": tuple(ENSEMBLE),
}

ALGOS = ("ddpg",)  # the 2018 key: the policy learner's algorithm (its backbone: see `backbone`)


# --------------------------------------------------------------------------------------------
# Loading and merging.
# --------------------------------------------------------------------------------------------


def _rel(path: Path) -> str:
    """A path as the user would write it: relative to the working directory when possible."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


def _tree_root(path: Path) -> Path | None:
    """The folder holding the config tree `path` lives in (parent of its `config` ancestor)."""
    for parent in path.parents:
        if parent.name == "config":
            return parent.parent
    return None


def _resolve_inherited(entry: str, including: Path) -> Path:
    candidates = [Path(entry)] if os.path.isabs(entry) else []
    if not candidates:
        bases = [including.parent, _tree_root(including), PROJECT_ROOT]
        candidates = [base / entry for base in bases if base is not None]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    looked = ", ".join(_rel(c) for c in dict.fromkeys(candidates))
    raise ConfigError(
        f"{_rel(including)} inherits '{entry}', which does not exist (looked for {looked}); "
        f"fix the path in its \"inherits\" list."
    )


def _read_file(path: Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"Config file {_rel(path)} does not exist; check the path.") from None
    except IsADirectoryError:
        raise ConfigError(f"{_rel(path)} is a folder, not a config file; name a .json file.")\
            from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{_rel(path)} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
            f"fix the syntax there."
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{_rel(path)} must hold a JSON object with \"inherits\" and/or "
                          f"\"updates\"; it holds a {type(data).__name__}.")
    extra = sorted(set(data) - {"inherits", "updates"})
    if extra:
        raise ConfigError(
            f"{_rel(path)} has the top-level key '{extra[0]}'; a config file may only have "
            f"\"inherits\" and \"updates\" (put settings inside \"updates\")."
        )
    inherits = data.get("inherits", [])
    if not isinstance(inherits, list) or not all(isinstance(p, str) for p in inherits):
        raise ConfigError(f"{_rel(path)}: \"inherits\" must be a list of file paths.")
    updates = data.get("updates", {})
    if not isinstance(updates, dict):
        raise ConfigError(f"{_rel(path)}: \"updates\" must be an object.")
    return data


def _check_block(block: dict, schema: dict, path: Path, prefix: str) -> None:
    """Check every key of one file's update block (ghost keys are checked as their target)."""
    for raw_key, value in block.items():
        key = raw_key[1:] if raw_key.startswith("*") else raw_key
        dotted = f"{prefix}{key}"
        if key not in schema:
            raise ConfigError(
                f"{_rel(path)} sets '{prefix}{raw_key}', which no part of the program reads; "
                f"remove it or fix its spelling (known keys here: {', '.join(sorted(schema))})."
            )
        spec = schema[key]
        if raw_key.startswith("*") and not isinstance(value, dict):
            raise ConfigError(
                f"{_rel(path)} sets the ghost block '{prefix}{raw_key}' to a non-object; "
                f"ghost blocks (\"*name\") must hold objects."
            )
        if isinstance(spec, dict):
            if value is False:
                continue  # a block set to false is switched off
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{_rel(path)} sets '{dotted}' to {json.dumps(value)}, but it must be an "
                    f"object (or false to switch it off)."
                )
            _check_block(value, spec, path, dotted + ".")
        elif not spec.check(value):
            raise ConfigError(
                f"{_rel(path)} sets '{dotted}' to {json.dumps(value)}, but it must be "
                f"{spec.kind}."
            )


def _merge(base: dict, block: dict, *, ghosts_apply: bool) -> dict:
    """Deep-merge `block` into a copy of `base` (docs/configs.md)."""
    out = dict(base)
    for raw_key, value in block.items():
        ghost = raw_key.startswith("*")
        key = raw_key[1:] if ghost else raw_key
        if ghost and not ghosts_apply and not isinstance(out.get(key), dict):
            continue  # a ghost never creates its key
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, ghosts_apply=ghosts_apply)
        elif isinstance(value, dict):
            out[key] = _merge({}, value, ghosts_apply=ghosts_apply)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _linearize(path: Path, stack: tuple[Path, ...]) -> list[tuple[Path, dict]]:
    """The (file, updates) blocks of `path` in merge order: inherited first, own last."""
    if path in stack:
        chain = " -> ".join(_rel(p) for p in (*stack, path))
        raise ConfigError(f"Config inheritance loops ({chain}); remove one of these inherits.")
    data = _read_file(path)
    blocks: list[tuple[Path, dict]] = []
    for entry in data.get("inherits", []):
        blocks.extend(_linearize(_resolve_inherited(entry, path), (*stack, path)))
    updates = data.get("updates", {})
    _check_block(updates, SCHEMA, path, "")
    blocks.append((path, updates))
    return blocks


def _check_required(config: dict, top: Path) -> None:
    for block_path, keys in REQUIRED.items():
        block = config
        for part in filter(None, block_path.split(".")):
            block = block.get(part) if isinstance(block, dict) else None
        if not block:  # absent or false: the feature is off
            continue
        for key in keys:
            if key not in block:
                dotted = f"{block_path}.{key}" if block_path else key
                raise ConfigError(
                    f"{_rel(top)} does not set '{dotted}' (nor does anything it inherits); "
                    f"inherit the file that provides it (see config/core/ and config/envs/) "
                    f"or set it in \"updates\"."
                )


def _check_semantics(config: dict, top: Path) -> None:
    """Combinations the program cannot run, refused early with both names."""
    name = _rel(top)
    pc = config["policy_config"]
    if pc["algo"] not in ALGOS:
        raise ConfigError(f"{name}: policy_config.algo is '{pc['algo']}', but only "
                          f"{', '.join(ALGOS)} is implemented.")
    positive = [("agent_config.batch_size", config["agent_config"]["batch_size"]),
                ("evaluator_config.batch_size", config["evaluator_config"]["batch_size"]),
                ("agent_config.count", config["agent_config"]["count"]),
                ("env.max_frames", config["env"]["max_frames"]),
                ("policy_config.hidden_layers", pc["hidden_layers"]),
                ("policy_config.hidden_dim", pc["hidden_dim"])]
    mc = config.get("model_config") or {}
    for cfg, prefix in ((pc, "policy_config"), (mc, "model_config")):
        for key in ("batch_size", "replay_size", "log_every_n", "epoch_every_n",
                    "updates_per_call"):
            if key in cfg:
                positive.append((f"{prefix}.{key}", cfg[key]))
        if cfg.get("frames_per_update") is not False and "frames_per_update" in cfg:
            positive.append((f"{prefix}.frames_per_update", cfg["frames_per_update"]))
    for key, value in positive:
        if value <= 0:
            raise ConfigError(f"{name}: {key} is {value}, but it must be greater than 0.")
    for cfg, prefix in ((pc, "policy_config"), (mc, "model_config")):
        # A negative warm-up would owe frames before the first one exists: the interactors
        # would wait at frame 0 for a learner that waits for frame 1.
        for key in ("frames_before_learning", "pretrain_n"):
            if cfg.get(key) is not False and cfg.get(key, 0) < 0:
                raise ConfigError(f"{name}: {prefix}.{key} is {cfg[key]}, but it must be 0 or "
                                  f"more.")
    if config["evaluator_config"]["count"] < 0:
        raise ConfigError(f"{name}: evaluator_config.count must be 0 or more.")
    _check_ensembles(pc, mc, name)
    _check_backbone(pc, name)
    _check_value_expansion(pc.get("value_expansion"), mc, name)


def _check_ensembles(pc: dict, mc: dict, name: str) -> None:
    """Sample counts within each ensemble, and "full" batches only when every member trains."""
    ensembles = [("policy_config.bayesian", pc.get("bayesian"))]
    if mc.get("bayesian"):
        ensembles += [(f"model_config.bayesian.{k}", mc["bayesian"][k])
                      for k in ("transition", "reward")]
    for key, ens in ensembles:
        if not ens:
            continue
        size = ens["ensemble_size"]
        for count in ("train_sample_count", "eval_sample_count"):
            if not 1 <= ens[count] <= size:
                raise ConfigError(f"{name}: {key}.{count} is {ens[count]}, but it must be "
                                  f"between 1 and {key}.ensemble_size ({size}).")
        block = pc if key.startswith("policy_config") else mc
        if block.get("ensemble_batch") == "full" and ens["train_sample_count"] != size:
            where = key.split(".")[0]
            raise ConfigError(f"{name}: {where}.ensemble_batch is \"full\" (every member "
                              f"trains on the whole batch), but {key}.train_sample_count "
                              f"({ens['train_sample_count']}) is below its ensemble_size "
                              f"({size}); set them equal or use \"split\".")


def _check_value_expansion(ve: dict | None, mc: dict, name: str) -> None:
    """A model (learned or the oracle) for value expansion, and its keys' ranges."""
    if ve and ve.get("oracle") and mc:
        raise ConfigError(
            f"{name}: policy_config.value_expansion.oracle rolls out the simulator instead of a "
            f"learned world model, so the config must not train one; set model_config to false."
        )
    if not ve:
        return
    if not mc and not ve.get("oracle"):
        raise ConfigError(
            f"{name}: policy_config.value_expansion needs a world model, but the config "
            f"has no model_config; inherit config/core/model.json, set value_expansion.oracle "
            f"(the simulator as the model) or drop value_expansion."
        )
    if ve["rollout_len"] < 1:
        raise ConfigError(f"{name}: policy_config.value_expansion.rollout_len must be at "
                          f"least 1.")
    if ve.get("covariances") and not ve.get("steve_reweight"):
        raise ConfigError(f"{name}: value_expansion.covariances only applies together with "
                          f"value_expansion.steve_reweight; set both or neither.")
    lam = ve.get("lambda_return")
    if lam is not False and lam is not None and not 0 <= lam <= 1:
        raise ConfigError(f"{name}: value_expansion.lambda_return is {lam}, but it must be "
                          f"between 0 and 1.")


def _check_backbone(pc: dict, name: str) -> None:
    """The TD3 backbone's settings and exploration noise (docs/BACKBONES.md)."""
    backbone = pc.get("backbone") or "ddpg"
    td3 = pc.get("td3")
    if backbone == "td3":
        if not td3:
            raise ConfigError(f"{name}: policy_config.backbone is \"td3\" but there is no "
                              f"policy_config.td3 block; inherit config/algos/td3.json or set "
                              f"its keys.")
        ens = pc.get("bayesian") or {}
        if ens.get("eval_sample_count", 1) < 2:
            raise ConfigError(f"{name}: backbone td3 takes the min over pairs of target Q "
                              f"members, so policy_config.bayesian.eval_sample_count (and "
                              f"ensemble_size) must be at least 2.")
        checks = (("target_noise", td3["target_noise"] >= 0, "0 or more"),
                  ("target_noise_clip", td3["target_noise_clip"] >= 0, "0 or more"),
                  ("policy_delay", td3["policy_delay"] >= 1, "1 or more"),
                  ("tau", 0 < td3["tau"] <= 1, "in (0, 1]"))
        for key, ok, rule in checks:
            if not ok:
                raise ConfigError(f"{name}: policy_config.td3.{key} is {td3[key]}, but it must "
                                  f"be {rule}.")
    elif td3:
        raise ConfigError(f"{name}: policy_config.td3 is only read with policy_config.backbone "
                          f"\"td3\" (the backbone is \"{backbone}\"); set the backbone or "
                          f"drop the block.")
    noise = pc.get("explore_noise")
    if noise is not False and noise is not None:
        if noise < 0:
            raise ConfigError(f"{name}: policy_config.explore_noise is {noise}, but it must be "
                              f"0 or more (or false).")
        if pc.get("explore_chance"):
            raise ConfigError(f"{name}: policy_config.explore_noise (Gaussian noise on every "
                              f"step) and policy_config.explore_chance (2018's noise) are both "
                              f"set; set explore_chance to false to use explore_noise.")


def load_config(path: str | os.PathLike, complete: bool = True) -> dict:
    """Resolve the config file at `path` into a plain, JSON-serialisable dict.

    With `complete` (the default, what running an experiment needs) the result must hold every
    required key and a runnable combination of options; `complete=False` resolves a partial
    config (an algorithm, an environment, a setup) checking only its keys and types.
    Raises ConfigError (one sentence naming the file, the key and the fix) on any problem.
    """
    top = Path(path).resolve()
    if not top.is_file():
        raise ConfigError(f"Config file {path} does not exist; give the path of a .json file "
                          f"(for example config/experiments/goodruns/hopper/steve3.json).")
    blocks = _linearize(top, ())
    config: dict = {}
    for i, (_, updates) in enumerate(blocks):
        # Only the top file's own block (always the last) applies its ghost blocks normally.
        config = _merge(config, updates, ghosts_apply=(i == len(blocks) - 1))
    if complete:
        _check_required(config, top)
        _check_semantics(config, top)
    return config


def load_resolved(path: str | os.PathLike) -> dict:
    """A resolved config as master.py saved it with a run (`<run>/log/hps.json`: the config plus
    the run's `name` and `seed`), checked as strictly as `load_config`'s result; returned
    without `name`. Raises ConfigError (one sentence) when it is missing or damaged."""
    top = Path(path).resolve()
    try:
        data = json.loads(top.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{_rel(top)} does not exist; give a run folder that master.py "
                          f"made (it holds log/hps.json).") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{_rel(top)} cannot be read as JSON ({e}); restore it from the "
                          f"config the run was made with.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{_rel(top)} must hold a JSON object (a resolved config); it holds "
                          f"a {type(data).__name__}.")
    config = {key: value for key, value in data.items() if key != "name"}
    _check_block(config, SCHEMA, top, "")
    _check_required(config, top)
    _check_semantics(config, top)
    return config


def experiment_name(path: str | os.PathLike) -> str:
    """The 2018 experiment name: the config file's name without `.json`."""
    name = Path(path).name
    return name[: -len(".json")] if name.endswith(".json") else name


def is_model_based(config: dict) -> bool:
    """True when the config trains a world model (has a model_config that is not false)."""
    return bool(config.get("model_config"))


def uses_oracle(config: dict) -> bool:
    """True when value expansion rolls out the simulator (`value_expansion.oracle`), not a
    learned world model."""
    return bool((config["policy_config"].get("value_expansion") or {}).get("oracle"))
