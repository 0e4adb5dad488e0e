"""Every paper config keeps its 2018 behaviour: its resolved config against a snapshot.

`tests/data/paper_configs.json` was taken before issue 14 added config keys (commit ca621d1): the
output of `python master.py CONFIG 0 --print-config` for every config under
config/experiments/goodruns, speedruns and ablations, and the list of keys config.SCHEMA declared
then. Here each config is printed again through master.main (the same code path, in-process):
- every key the snapshot printed keeps its value;
- every key printed now that the snapshot did not print is listed in NEW_KEYS with the value that
  reproduces the 2018 behaviour, and has that value;
- every key the schema declares now that it did not declare then is listed in NEW_KEYS, so that
  adding a key forces a decision about its paper value (ABSENT: the paper configs must not set
  it, the code's behaviour without it is the paper's).
Writes nothing to disk.
"""

import json
from pathlib import Path

import pytest

import config as config_lib
import master

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = json.loads((ROOT / "tests/data/paper_configs.json").read_text())
PAPER_CONFIGS = sorted(SNAPSHOT["configs"])
ABSENT = object()  # the key must not be set by a paper config

# Keys added since the snapshot, with the value that reproduces the 2018 code. Blocks that are
# absent in every paper config stand for all the keys inside them.
NEW_KEYS = {
    # Ensembles drawn as 2018 did: Glorot over the stacked [E, in, out] shape.
    "policy_config.ensemble_init": "stacked",
    "model_config.ensemble_init": "stacked",
    "policy_config.ensemble_batch": "split",
    "model_config.ensemble_batch": "split",
    # The paper's backbone: DDPG's targets and updates, hard target copies at epochs.
    "policy_config.backbone": "ddpg",
    # Exploration as 2018 (explore_chance's pre-tanh noise), no Gaussian noise on every step.
    "policy_config.explore_noise": False,
    # TD3's settings, read only with backbone "td3".
    "policy_config.td3": ABSENT,
    "policy_config.td3.target_noise": ABSENT,
    "policy_config.td3.target_noise_clip": ABSENT,
    "policy_config.td3.policy_delay": ABSENT,
    "policy_config.td3.tau": ABSENT,
    # The learned world model, as 2018 (not the simulator as an oracle, learning/oracle.py).
    "policy_config.value_expansion.oracle": ABSENT,
}


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; a block set to false stays one entry."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def schema_keys(schema: dict, prefix: str = "") -> set:
    keys = set()
    for key, spec in schema.items():
        keys.add(f"{prefix}{key}")
        if isinstance(spec, dict):
            keys |= schema_keys(spec, f"{prefix}{key}.")
    return keys


def printed_config(path: str, capsys) -> dict:
    assert master.main([str(ROOT / path), "0", "--print-config"]) == 0
    return json.loads(capsys.readouterr().out)


def test_snapshot_covers_every_paper_config():
    now = sorted(p.relative_to(ROOT).as_posix()
                 for folder in ("goodruns", "speedruns", "ablations")
                 for p in (ROOT / "config/experiments" / folder).rglob("*.json"))
    assert now == PAPER_CONFIGS and len(PAPER_CONFIGS) == 36


@pytest.mark.parametrize("path", PAPER_CONFIGS)
def test_paper_config_keeps_its_values(path, capsys):
    old = flatten(SNAPSHOT["configs"][path])
    new = flatten(printed_config(path, capsys))
    for key, value in old.items():
        assert key in new, f"{path}: '{key}' ({value!r}) is no longer printed"
        assert new[key] == value and type(new[key]) is type(value), (
            f"{path}: '{key}' changed from {value!r} to {new[key]!r}")
    for key in sorted(set(new) - set(old)):
        assert key in NEW_KEYS, (
            f"{path}: the new key '{key}' = {new[key]!r} is not in NEW_KEYS; add it there with "
            f"the value that reproduces the 2018 behaviour")
        expected = NEW_KEYS[key]
        assert expected is not ABSENT, f"{path}: '{key}' must not be set by a paper config"
        assert new[key] == expected and type(new[key]) is type(expected), (
            f"{path}: the new key '{key}' is {new[key]!r}; the 2018 behaviour needs {expected!r}")
    # every new key with a paper value is printed (so the paper's value is explicit)
    model_based = "model_config" in new or any(k.startswith("model_config.") for k in new)
    for key, expected in NEW_KEYS.items():
        if expected is ABSENT:
            assert key not in new and not any(k.startswith(key + ".") for k in new), key
        elif key.startswith("policy_config.") or model_based:
            assert key in new, f"{path}: the new key '{key}' is not printed"


def test_every_new_schema_key_has_a_decision():
    before = set(SNAPSHOT["schema_keys"])
    now = schema_keys(config_lib.SCHEMA)
    # the snapshot listed leaves only; blocks new since then are listed in NEW_KEYS too
    added = {k for k in now - before
             if not any(old.startswith(k + ".") for old in before)}
    assert added == set(NEW_KEYS), (
        f"keys added to config.SCHEMA without a paper value in NEW_KEYS: "
        f"{sorted(added - set(NEW_KEYS))}; listed but not in the schema: "
        f"{sorted(set(NEW_KEYS) - added)}")
    assert not before - {k for k in now}, "a key of the snapshot's schema was removed"
