"""The config system: the ported tree, merge semantics, strictness and --print-config."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import config as config_lib
from config import ConfigError, load_config
from master_runs import run_master

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config"
ALL_FILES = sorted(CONFIG.rglob("*.json"))
EXPERIMENTS = sorted((CONFIG / "experiments").rglob("*.json"))


def write(path: Path, obj: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def test_tree_is_complete():
    # The 54 files of the 2018 tree (docs/configs.md), plus cpu.json, the InvertedPendulum env,
    # the quick-starts, the benchmark's configs and the TD3 backbone's files.
    names = {str(p.relative_to(CONFIG)) for p in ALL_FILES}
    ported = {n for n in names
              if not n.startswith(("experiments/quickstart/", "experiments/benchmark/"))}
    ported -= {"experimental_setups/cpu.json", "envs/invertedpendulum.json"}
    ported -= {"core/td3.json", "algos/td3.json", "algos/steve_td3.json",  # issue 14
               "experimental_setups/cpu2.json"}
    assert len(ported) == 54
    assert len([n for n in ported if n.startswith("experiments/")]) == 36
    for name in ("core/basic.json", "core/model.json", "core/bayesian.json",
                 "experimental_setups/speedrun.json", "algos/steve_cov.json",
                 "envs/rshum.json", "experiments/goodruns/hopper/steve3.json",
                 "experiments/speedruns/humanoid/speedy_steve1.json",
                 "experiments/ablations/horizons/steve_2h1.json"):
        assert name in names
    assert list((CONFIG / "experiments" / "quickstart").glob("*.json"))


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(CONFIG)))
def test_every_config_resolves(path):
    complete = "experiments" in path.parts
    resolved = load_config(path, complete=complete)
    json.dumps(resolved)  # plain JSON
    assert type(resolved) is dict


def test_resolves_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    resolved = load_config(CONFIG / "experiments/goodruns/hopper/steve3.json")
    assert resolved["env"]["name"] == "Hopper-v5"


def test_steve_carries_model_ensembles():
    for path in EXPERIMENTS:
        if path.stem.rstrip("0123456789").endswith("steve"):
            c = load_config(path)
            assert c["policy_config"]["value_expansion"]["steve_reweight"] is True
            assert c["policy_config"]["bayesian"] == {
                "ensemble_size": 4, "train_sample_count": 4, "eval_sample_count": 4}
            for part in ("transition", "reward"):
                assert c["model_config"]["bayesian"][part]["ensemble_size"] == 4


def test_paper_values():
    c = load_config(CONFIG / "experiments/goodruns/humanoid/steve1.json")
    assert c["env"] == {"name": "Humanoid-v5", "obs_dims": 348, "action_dims": 17,
                        "reward_scale": 1.0, "discount": 0.99, "max_frames": 1000}
    pc, mc = c["policy_config"], c["model_config"]
    assert (pc["hidden_dim"], pc["hidden_layers"], pc["batch_size"]) == (128, 4, 512)
    assert (pc["frames_per_update"], pc["epoch_every_n"], pc["replay_size"]) == (0.25, 500, 10**6)
    assert (pc["learning_rate"], pc["pretanh_penalty"]) == (3e-4, 1e-3)
    assert (pc["variance_epsilon"], pc["covariance_ridge"]) == (1e-8, 1e-3)
    assert (mc["transition_hidden_dim"], mc["transition_layers"]) == (512, 8)
    assert (mc["aux_hidden_dim"], mc["aux_layers"], mc["weight_decay"]) == (128, 4, 1e-4)
    assert (mc["pretrain_n"], mc["learning_rate"]) == (10000, 3e-4)
    assert c["agent_config"]["full_random_n"] == 10000
    assert c["evaluator_config"] == {"count": 2, "batch_size": 1, "episodes_per_policy": False}


def test_speedruns():
    ddpg = load_config(CONFIG / "experiments/speedruns/humanoid/speedy_ddpg1.json")
    assert "model_config" not in ddpg  # the speedrun ghost block never creates a model
    assert ddpg["policy_config"]["frames_per_update"] is False
    steve = load_config(CONFIG / "experiments/speedruns/flagrun/speedy_steve1.json")
    assert steve["model_config"]["frames_per_update"] is False
    assert steve["model_config"]["pretrain_n"] is False
    assert steve["model_config"]["transition_hidden_dim"] == 512  # the rest kept


def test_ablations_differ_exactly():
    base = CONFIG / "experiments/ablations"
    steve = load_config(CONFIG / "experiments/goodruns/humanoid/steve1.json")
    mve = load_config(CONFIG / "experiments/goodruns/humanoid/mve_tdk3.json")

    def ve(c):
        return c["policy_config"]["value_expansion"]

    ens = load_config(base / "baselines/ensemble_mve_tdk2.json")
    assert ve(ens) == ve(mve) == {"rollout_len": 3, "tdk_trick": True}
    assert ens["policy_config"]["bayesian"] == steve["policy_config"]["bayesian"]
    assert ens["model_config"]["bayesian"] == steve["model_config"]["bayesian"]
    assert ve(load_config(base / "baselines/mve_25tdlambda2.json")) == {
        "rollout_len": 3, "lambda_return": 0.25}
    assert ve(load_config(base / "baselines/mve_75tdlambda2.json")) == {
        "rollout_len": 3, "lambda_return": 0.75}
    assert ve(load_config(base / "baselines/mve_meank2.json")) == {
        "rollout_len": 3, "mean_k_return": True}
    cov = load_config(base / "baselines/steve_cov1.json")
    assert ve(cov) == {"rollout_len": 3, "steve_reweight": True, "covariances": True}
    h1 = load_config(base / "horizons/steve_2h1.json")
    assert ve(h1) == {"rollout_len": 1, "steve_reweight": True}
    # Apart from value_expansion, each ablation equals its algorithm on the same environment.
    for c, ref in ((cov, steve), (h1, steve)):
        a, b = dict(c), dict(ref)
        a["policy_config"] = {k: v for k, v in c["policy_config"].items() if k != "value_expansion"}
        b["policy_config"] = {k: v for k, v in ref["policy_config"].items()
                              if k != "value_expansion"}
        assert a == b


def test_cpu_setup_shrinks_without_adding_a_model():
    ddpg = load_config(CONFIG / "experiments/quickstart/ddpg_pendulum.json")
    assert not config_lib.is_model_based(ddpg)
    assert ddpg["policy_config"]["hidden_dim"] < 128
    steve = load_config(CONFIG / "experiments/quickstart/steve_pendulum.json")
    assert steve["model_config"]["transition_hidden_dim"] < 512
    assert steve["model_config"]["transition_layers"] < 8


def test_quickstart_trains_the_cpu_win_headline_config():
    # The README promises that the quick-start is exactly the held-out benchmark's headline config.
    script = (ROOT / "scripts/quickstart.sh").read_text()
    default = re.search(r"CONFIG=\$\{QUICKSTART_CONFIG:-([^}]+)\}", script).group(1)
    assert default == "config/experiments/quickstart/steve_td3_pendulum.json"
    headline = CONFIG / "experiments/benchmark/cpu_win/invertedpendulum/steve_td3.json"
    assert load_config(ROOT / default) == load_config(headline)
    assert load_config(headline)["policy_config"]["backbone"] == "td3"


# ---------------------------------------------------------------- merge semantics


def test_deep_merge_and_replacement(tmp_path):
    write(tmp_path / "a.json", {"updates": {"policy_config": {"hidden_dim": 1, "batch_size": 2},
                                            "env": {"name": "A", "max_frames": 5}}})
    write(tmp_path / "b.json", {"inherits": ["a.json"],
                                "updates": {"policy_config": {"hidden_dim": 3},
                                            "env": {"name": "B"}}})
    c = load_config(tmp_path / "b.json", complete=False)
    assert c == {"policy_config": {"hidden_dim": 3, "batch_size": 2},
                 "env": {"name": "B", "max_frames": 5}}


def test_inherit_order_later_wins_and_false_replaces(tmp_path):
    write(tmp_path / "a.json", {"updates": {"policy_config": {"frames_per_update": 0.25}}})
    write(tmp_path / "b.json", {"updates": {"policy_config": {"frames_per_update": False}}})
    write(tmp_path / "ab.json", {"inherits": ["a.json", "b.json"]})
    write(tmp_path / "ba.json", {"inherits": ["b.json", "a.json"]})
    assert load_config(tmp_path / "ab.json", complete=False)["policy_config"][
        "frames_per_update"] is False
    assert load_config(tmp_path / "ba.json", complete=False)["policy_config"][
        "frames_per_update"] == 0.25


def test_false_block_is_absent(tmp_path):
    steve = str(CONFIG / "experiments/goodruns/hopper/steve3.json")
    write(tmp_path / "x.json", {"inherits": [steve],
                                "updates": {"model_config": False,
                                            "policy_config": {"value_expansion": False}}})
    c = load_config(tmp_path / "x.json")
    assert not config_lib.is_model_based(c)


def test_ghost_is_order_sensitive(tmp_path):
    model = str(CONFIG / "core/model.json")
    bayes = str(CONFIG / "core/bayesian.json")
    write(tmp_path / "model_first.json", {"inherits": [model, bayes]})
    write(tmp_path / "bayes_first.json", {"inherits": [bayes, model]})
    first = load_config(tmp_path / "model_first.json", complete=False)
    assert first["model_config"]["bayesian"]["transition"]["ensemble_size"] == 4
    later = load_config(tmp_path / "bayes_first.json", complete=False)
    assert "bayesian" not in later["model_config"]
    assert later["policy_config"]["bayesian"]["ensemble_size"] == 4  # plain keys still apply


def test_ghost_never_creates(tmp_path):
    write(tmp_path / "g.json", {"updates": {"*model_config": {"pretrain_n": 5}}})
    write(tmp_path / "top.json", {"inherits": ["g.json"]})
    assert "model_config" not in load_config(tmp_path / "top.json", complete=False)


def test_ghost_sees_blocks_inherited_earlier_by_the_parent(tmp_path):
    # "Earlier" is the linear merge order: a ghost in a nested file sees what the top file's
    # earlier parents created.
    write(tmp_path / "g.json", {"updates": {"*model_config": {"pretrain_n": 5}}})
    write(tmp_path / "mid.json", {"inherits": ["g.json"]})
    write(tmp_path / "top.json", {"inherits": [str(CONFIG / "core/model.json"), "mid.json"]})
    assert load_config(tmp_path / "top.json", complete=False)["model_config"]["pretrain_n"] == 5


def test_root_ghost_applies(tmp_path):
    c = load_config(CONFIG / "experimental_setups/speedrun.json", complete=False)
    assert c["model_config"] == {"frames_per_update": False, "pretrain_n": False}
    write(tmp_path / "root.json", {"updates": {"*model_config": {"pretrain_n": 7}}})
    assert load_config(tmp_path / "root.json", complete=False) == {
        "model_config": {"pretrain_n": 7}}


# ---------------------------------------------------------------- strictness


def test_unknown_key_names_file_and_key(tmp_path):
    bad = write(tmp_path / "bad.json", {"inherits": [str(CONFIG / "algos/ddpg.json"),
                                                    str(CONFIG / "envs/hopper.json")],
                                        "updates": {"policy_config": {"hiden_dim": 64}}})
    with pytest.raises(ConfigError, match=r"bad\.json sets 'policy_config\.hiden_dim', which no "
                                          r"part of the program reads"):
        load_config(bad)


def test_unknown_key_in_inherited_file_names_that_file(tmp_path):
    write(tmp_path / "parent.json", {"updates": {"ddpg_explore_chance": 0.1}})
    write(tmp_path / "child.json", {"inherits": ["parent.json"]})
    with pytest.raises(ConfigError, match=r"parent\.json sets 'ddpg_explore_chance'"):
        load_config(tmp_path / "child.json", complete=False)


@pytest.mark.parametrize("key,value,kind", [
    (("policy_config", "batch_size"), "512", "an integer"),
    (("policy_config", "batch_size"), 1.5, "an integer"),
    (("policy_config", "frames_per_update"), True, "a number or false"),
    (("policy_config", "explore_chance"), "0.05", "a number or false"),
    (("policy_config", "value_expansion"), 3, "an object"),
    (("env", "discount"), None, "a number"),
    (("agent_config", "wait_for_learners"), 1, "true or false"),
    (("model_config", "ensemble_init"), "glorot", 'one of "stacked", "per_member"'),
])
def test_wrong_type(tmp_path, key, value, kind):
    updates = {key[0]: {key[1]: value}}
    write(tmp_path / "t.json", {"updates": updates})
    pattern = rf"t\.json sets '{key[0]}\.{key[1]}' to .*must be {kind}"
    with pytest.raises(ConfigError, match=pattern):
        load_config(tmp_path / "t.json", complete=False)


def test_inherits_must_be_a_list(tmp_path):
    write(tmp_path / "t.json", {"inherits": "config/core/basic.json"})
    with pytest.raises(ConfigError, match="must be a list"):
        load_config(tmp_path / "t.json", complete=False)


def test_missing_inherited_file(tmp_path):
    write(tmp_path / "t.json", {"inherits": ["config/algos/stev.json"]})
    with pytest.raises(ConfigError, match=r"t\.json inherits 'config/algos/stev\.json', which does "
                                          r"not exist"):
        load_config(tmp_path / "t.json")


def test_missing_file_and_bad_json(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.json")
    (tmp_path / "broken.json").write_text('{"updates": {')
    with pytest.raises(ConfigError, match=r"broken\.json is not valid JSON"):
        load_config(tmp_path / "broken.json")


def test_incomplete_experiment_names_missing_key():
    with pytest.raises(ConfigError, match=r"does not set 'env'"):
        load_config(CONFIG / "algos/steve.json")


def test_inheritance_loop(tmp_path):
    write(tmp_path / "a.json", {"inherits": ["b.json"]})
    write(tmp_path / "b.json", {"inherits": ["a.json"]})
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "a.json", complete=False)


def test_incompatible_options_named(tmp_path):
    ddpg = str(CONFIG / "experiments/goodruns/hopper/ddpg0.json")
    write(tmp_path / "t.json", {"inherits": [ddpg],
                                "updates": {"policy_config": {"value_expansion": {
                                    "rollout_len": 3}}}})
    with pytest.raises(ConfigError, match="value_expansion needs a world model"):
        load_config(tmp_path / "t.json")
    write(tmp_path / "c.json", {"inherits": [str(CONFIG / "algos/mve_tdk.json"),
                                             str(CONFIG / "envs/hopper.json")],
                                "updates": {"policy_config": {"value_expansion": {
                                    "covariances": True}}}})
    with pytest.raises(ConfigError, match="covariances only applies together with"):
        load_config(tmp_path / "c.json")


@pytest.mark.parametrize("block, key", [("policy_config", "frames_before_learning"),
                                        ("model_config", "frames_before_learning"),
                                        ("model_config", "pretrain_n")])
def test_negative_warm_up_is_refused(tmp_path, block, key):
    # A negative warm-up owes frames before the first one exists: the interactors would wait
    # at frame 0 for a learner that waits for frame 1.
    steve = str(CONFIG / "experiments/quickstart/steve_pendulum.json")
    write(tmp_path / "t.json", {"inherits": [steve], "updates": {block: {key: -1}}})
    with pytest.raises(ConfigError, match=rf"{block}\.{key} is -1, but it must be 0 or more\."):
        load_config(tmp_path / "t.json")
    write(tmp_path / "z.json", {"inherits": [steve], "updates": {block: {key: 0}}})
    assert load_config(tmp_path / "z.json")[block][key] == 0


def test_import_has_no_side_effects(tmp_path):
    out = subprocess.run([sys.executable, "-c", "import config, util, master, sys; "
                          "print(len(sys.argv))", "--bogus"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "2"


# ---------------------------------------------------------------- --print-config


@pytest.mark.slow
def test_print_config_every_experiment():
    # One process resolving all 36+ files is fast; the subprocess check uses a sample below.
    for path in EXPERIMENTS:
        load_config(path)
    out = run_master(str(EXPERIMENTS[0]), "0", "--print-config")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == load_config(EXPERIMENTS[0])


@pytest.mark.slow
def test_print_config_from_another_folder(tmp_path):
    out = run_master("config/experiments/goodruns/hopper/steve3.json", "0", "--print-config")
    assert out.returncode == 0
    out2 = run_master(str(CONFIG / "experiments/goodruns/hopper/steve3.json"), "0",
                      "--print-config", cwd=tmp_path)
    assert out2.returncode == 0 and json.loads(out2.stdout) == json.loads(out.stdout)


@pytest.mark.slow
def test_print_config_bad_config_is_one_sentence(tmp_path):
    write(tmp_path / "bad.json", {"updates": {"polcy_config": {}}})
    out = run_master(str(tmp_path / "bad.json"), "0", "--print-config")
    assert out.returncode != 0
    assert out.stdout == ""
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "polcy_config" in lines[0] and "bad.json" in lines[0]


@pytest.mark.parametrize("block", ["policy_config", "model_config"])
def test_full_batch_with_fewer_trained_members_is_refused_before_start(tmp_path, block):
    # Before, only the learner processes refused it (valuerl_settings, WorldModel), after the
    # run had started; the config check now says it in one sentence.
    steve = str(CONFIG / "experiments/benchmark/cpu_win/hopper/steve_td3.json")
    bayes = {"ensemble_size": 4, "train_sample_count": 2, "eval_sample_count": 4}
    ens = {"bayesian": bayes} if block == "policy_config" else {
        "bayesian": {"transition": bayes, "reward": dict(bayes, train_sample_count=4)}}
    write(tmp_path / "f.json", {"inherits": [steve], "updates": {block: ens}})
    key = "policy_config.bayesian" if block == "policy_config" else \
        "model_config.bayesian.transition"
    with pytest.raises(ConfigError, match=rf"{block}\.ensemble_batch is \"full\" .* "
                       rf"{re.escape(key)}\.train_sample_count \(2\) is below"):
        load_config(tmp_path / "f.json")
