"""Metric-key presets and matching (satmon.keys)."""

from __future__ import annotations

import doctest

import pytest

import satmon.keys
from satmon.keys import KeyMap, detect_preset, format_key_list, heldout_name

TRL_NEW = ["loss", "reward", "reward_std", "rewards/accuracy/mean", "rewards/accuracy/std",
           "rewards/format/mean", "frac_reward_zero_std", "completions/mean_length",
           "completions/clipped_ratio", "entropy", "kl", "eval_reward",
           "eval_rewards/accuracy/mean", "eval_rewards/format/mean", "eval_entropy"]
TRL_OLD = ["loss", "reward", "reward_std", "rewards/accuracy", "completion_length", "kl",
           "eval_rewards/accuracy"]
VERL_NEW = ["critic/score/mean", "critic/rewards/mean", "actor/entropy", "actor/kl_loss",
            "actor/ppo_kl", "response_length/mean", "response_length/clip_ratio",
            "val-core/openai/gsm8k/reward/mean@1", "val-aux/openai/gsm8k/score/mean@1"]
VERL_OLD = ["critic/score/mean", "actor/entropy_loss", "critic/kl", "actor/ppo_kl",
            "response_length/mean", "val/test_score/openai/gsm8k"]
VERL_MLFLOW = ["critic/score/mean", "val-core/math/acc/mean_at_4", "val-core/math/acc/mean_at_1"]
TIDY = ["train_reward", "heldout_acc/gsm8k", "heldout_acc/math", "entropy", "kl"]
# OpenRLHF's TensorBoard tags (pass@4 and the mean over sources are not held-out series).
OPENRLHF_TB = ["train/reward", "train/kl", "train/response_length", "train/entropy",
               "train/policy_loss", "eval/eval_math_pass1", "eval/eval_math_pass4",
               "eval/eval_gsm8k_pass1", "eval/eval_avg_pass1"]
OPENRLHF_WANDB = ["reward", "kl", "eval_aime_pass1"]  # the same without the prefixes


@pytest.mark.parametrize("keys, preset", [
    (TRL_NEW, "trl"), (TRL_OLD, "trl"), (VERL_NEW, "verl"), (VERL_OLD, "verl"),
    (VERL_MLFLOW, "verl"), (TIDY, "tidy"), (["train_reward", "heldout_acc"], "tidy"),
    (OPENRLHF_TB, "openrlhf"), (OPENRLHF_WANDB, "openrlhf"), (["eval_avg_pass1"], "openrlhf"),
    # Only an evaluation key says OpenRLHF: train/reward alone is also a TRL run's TensorBoard
    # tag, and pass@N alone is no accuracy to read.
    (["train/reward", "train/kl"], None), (["eval/eval_math_pass4"], None),
    (["loss", "accuracy"], None), ([], None),
])
def test_detect_preset(keys, preset):
    assert detect_preset(keys) == preset


@pytest.mark.parametrize("keys, train, heldout, aux", [
    (TRL_NEW, "reward",
     (("accuracy", "eval_rewards/accuracy/mean"), ("format", "eval_rewards/format/mean")),
     {"entropy": "entropy", "response_length": "completions/mean_length", "kl": "kl",
      "frac_reward_zero_std": "frac_reward_zero_std", "reward_std": "reward_std",
      "clipped_ratio": "completions/clipped_ratio"}),
    (TRL_OLD, "reward", (("accuracy", "eval_rewards/accuracy"),),
     {"response_length": "completion_length", "kl": "kl", "reward_std": "reward_std"}),
    (VERL_NEW, "critic/score/mean", (("openai/gsm8k", "val-core/openai/gsm8k/reward/mean@1"),),
     {"entropy": "actor/entropy", "response_length": "response_length/mean",
      "kl": "actor/kl_loss", "clipped_ratio": "response_length/clip_ratio"}),
    (VERL_OLD, "critic/score/mean", (("openai/gsm8k", "val/test_score/openai/gsm8k"),),
     {"entropy": "actor/entropy_loss", "response_length": "response_length/mean",
      "kl": "critic/kl"}),
    # The largest N of mean@N wins; MLflow's _at_ spelling is understood.
    (VERL_MLFLOW, "critic/score/mean", (("math", "val-core/math/acc/mean_at_4"),), {}),
    (["critic/rewards/mean"], "critic/rewards/mean", (), {}),
    (TIDY, "train_reward", (("gsm8k", "heldout_acc/gsm8k"), ("math", "heldout_acc/math")),
     {"entropy": "entropy", "kl": "kl"}),
    (OPENRLHF_TB, "train/reward",
     (("gsm8k", "eval/eval_gsm8k_pass1"), ("math", "eval/eval_math_pass1")),
     {"entropy": "train/entropy", "response_length": "train/response_length", "kl": "train/kl"}),
    (OPENRLHF_WANDB, "reward", (("aime", "eval_aime_pass1"),), {"kl": "kl"}),
    # The mean over data sources is read when it is all there is.
    (["train/reward", "eval/eval_avg_pass1"], "train/reward", (("avg", "eval/eval_avg_pass1"),),
     {}),
])
def test_resolve_presets(keys, train, heldout, aux):
    r = KeyMap().resolve(keys)
    assert r.train_key == train
    assert r.heldout == heldout
    assert dict(r.aux) == aux
    # The preset named explicitly resolves the same way as auto.
    assert KeyMap(preset=r.preset).resolve(keys) == r


def test_verl_several_variables_per_dataset_are_named_with_the_variable():
    keys = ["critic/score/mean", "val-core/gsm8k/acc/mean@1", "val-core/gsm8k/reward/mean@1",
            "val-core/math/acc/mean@1"]
    r = KeyMap(preset="verl").resolve(keys)
    assert r.heldout == (("gsm8k/acc", "val-core/gsm8k/acc/mean@1"),
                         ("gsm8k/reward", "val-core/gsm8k/reward/mean@1"),
                         ("math", "val-core/math/acc/mean@1"))


def test_trl_heldout_follows_the_training_reward_function():
    r = KeyMap(train_key="rewards/accuracy/mean").resolve(TRL_NEW)
    assert r.heldout == (("accuracy", "eval_rewards/accuracy/mean"),)


def test_trl_without_combined_reward_uses_a_single_function_only():
    assert KeyMap().resolve(["rewards/acc/mean", "rewards/acc/std"]).train_key == \
        "rewards/acc/mean"
    assert KeyMap().resolve(["rewards/a/mean", "rewards/b/mean"]).train_key is None
    with pytest.raises(KeyError, match="No training-reward key found for preset 'trl'"):
        KeyMap().resolve(["rewards/a/mean", "rewards/b/mean"], require_train=True)


def test_overrides():
    km = KeyMap(train_key="rewards/format/mean",
                heldout_keys=["eval_rewards/accuracy/mean", "eval_entropy"],
                aux_keys={"entropy": "eval_entropy"})
    r = km.resolve(TRL_NEW)
    assert r.train_key == "rewards/format/mean"
    assert r.heldout == (("accuracy", "eval_rewards/accuracy/mean"),
                         ("eval_entropy", "eval_entropy"))
    assert dict(r.aux)["entropy"] == "eval_entropy"
    assert KeyMap(heldout_keys={"acc": "eval_reward"}).resolve(TRL_NEW).heldout == \
        (("acc", "eval_reward"),)
    # A single string is one held-out key.
    assert KeyMap(heldout_keys="eval_reward").heldout_keys == (("eval_reward", "eval_reward"),)


def test_same_benchmark_name_twice_keeps_full_keys():
    km = KeyMap(heldout_keys=["eval_rewards/acc/mean", "eval_rewards/acc"])
    assert km.heldout_keys == (("eval_rewards/acc/mean", "eval_rewards/acc/mean"),
                               ("eval_rewards/acc", "eval_rewards/acc"))


def test_missing_configured_key_lists_the_keys_found():
    with pytest.raises(KeyError) as err:
        KeyMap(train_key="reward/mean").resolve(TRL_NEW)
    msg = err.value.args[0]
    assert "'reward/mean'" in msg and "Keys found (15)" in msg
    assert "'completions/clipped_ratio', 'completions/mean_length'" in msg  # sorted
    with pytest.raises(KeyError, match="held-out key 'eval_acc'.*'eval_reward'"):
        KeyMap(heldout_keys=["eval_acc"]).resolve(TRL_NEW)
    with pytest.raises(KeyError, match="auxiliary 'kl' key 'kl_div'"):
        KeyMap(aux_keys={"kl": "kl_div"}).resolve(TRL_NEW)
    with pytest.raises(KeyError, match="match none of the presets"):
        KeyMap().resolve(["loss", "lr"], require_train=True)


def test_non_strict_resolution_skips_missing_configured_keys():
    km = KeyMap(train_key="reward", heldout_keys=["eval_rewards/accuracy/mean"])
    r = km.resolve(["eval_rewards/accuracy/mean"], strict=False)
    assert r.train_key is None and r.heldout == (("accuracy", "eval_rewards/accuracy/mean"),)


def test_key_list_is_truncated():
    text = format_key_list(f"k{i:03d}" for i in range(100))
    assert text.startswith("'k000', 'k001'") and text.endswith("... and 60 more")
    assert format_key_list([]) == "(none)"


def test_pick_per_log_dict():
    km = KeyMap(preset="trl")
    train_log = {"loss": 0.1, "reward": 0.4, "entropy": None, "kl": 0.01, "epoch": 0.5}
    eval_log = {"eval_loss": 0.2, "eval_rewards/accuracy/mean": 0.3, "eval_entropy": 0.8}
    p = km.pick(train_log)
    assert (p.train, p.has_train, p.heldout, p.aux) == (0.4, True, {},
                                                        {"entropy": None, "kl": 0.01})
    q = km.pick(eval_log)
    assert (q.train, q.has_train, q.heldout, q.aux) == (None, False, {"accuracy": 0.3}, {})
    assert km.pick({"loss": 1.0}).empty
    with pytest.raises(TypeError, match="needs a mapping"):
        km.pick([("reward", 1.0)])


@pytest.mark.parametrize("key, preset, name", [
    ("eval_rewards/acc/mean", None, "acc"),
    ("eval_rewards/acc", "trl", "acc"),
    ("val-core/openai/gsm8k/reward/mean@16", "verl", "openai/gsm8k"),
    ("val/test_score/math", None, "math"),
    ("heldout_acc/aime", "tidy", "aime"),
    ("eval/eval_aime_pass1", "openrlhf", "aime"), ("eval_aime_pass1", None, "aime"),
    ("eval/eval_aime_pass4", "openrlhf", "eval/eval_aime_pass4"),
    ("eval_rewards/acc/mean", "verl", "eval_rewards/acc/mean"),
    ("my_metric", None, "my_metric"),
])
def test_heldout_name(key, preset, name):
    assert heldout_name(key, preset) == name


def test_openrlhf_prefixed_spelling_wins_and_explicit_keys_are_named_by_source():
    keys = ["train/reward", "eval/eval_math_pass1", "eval_math_pass1"]
    assert KeyMap().resolve(keys).heldout == (("math", "eval/eval_math_pass1"),)
    r = KeyMap(preset="openrlhf", heldout_keys=["eval_math_pass1"]).resolve(keys)
    assert r.heldout == (("math", "eval_math_pass1"),)
    picked = KeyMap(preset="openrlhf").pick({"train/reward": 0.4, "train/kl": 0.01})
    assert (picked.train, picked.heldout, picked.aux) == (0.4, {}, {"kl": 0.01})
    assert KeyMap(preset="openrlhf").resolve(VERL_NEW, strict=False).train_key is None


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"preset": "wandb"}, ValueError,
     "must be one of \\['auto', 'trl', 'verl', 'tidy', 'openrlhf'\\]"),
    ({"train_key": 3}, TypeError, "'train_key' parameter of KeyMap must be a non-empty string"),
    ({"train_key": ""}, TypeError, "non-empty string"),
    ({"heldout_keys": 5}, TypeError, "list of keys or a {name: key} mapping"),
    ({"heldout_keys": []}, ValueError, "is empty"),
    ({"heldout_keys": [1]}, TypeError, "'heldout_keys'"),
    ({"aux_keys": ["entropy"]}, TypeError, "'aux_keys'"),
    ({"aux_keys": {"perplexity": "ppl"}}, ValueError, "valid names: \\['entropy'"),
])
def test_invalid_configuration(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        KeyMap(**kwargs)


def test_keymap_is_immutable_and_keyword_only():
    km = KeyMap(preset="verl")
    with pytest.raises(AttributeError):
        km.preset = "trl"
    with pytest.raises(TypeError):
        KeyMap("verl")
    assert KeyMap(heldout_keys={"a": "x"}).to_dict() == {
        "preset": "auto", "train_key": None, "heldout_keys": {"a": "x"}, "aux_keys": None}


def test_doctests():
    result = doctest.testmod(satmon.keys)
    assert result.failed == 0 and result.attempted > 0


def test_satmons_own_keys_read_back_in_every_preset():
    from satmon.keys import KeyMap, satmon_heldout_size_key

    # trainer_state.json of a TRL job with satmon's evaluator: TRL's reward, satmon's held-out.
    r = KeyMap().resolve(["reward", "loss", "satmon/heldout/gsm8k", "satmon/heldout/gsm8k/n"])
    assert (r.preset, r.train_key, r.heldout) == ("trl", "reward",
                                                  (("gsm8k", "satmon/heldout/gsm8k"),))
    # An MLflow run that only satmon's sink wrote to.
    r = KeyMap().resolve(["satmon/train_reward", "satmon/p_saturated",
                          "satmon/heldout/openai/gsm8k", "satmon/heldout/openai/gsm8k/n"])
    assert (r.preset, r.train_key) == ("tidy", "satmon/train_reward")
    assert r.heldout == (("openai/gsm8k", "satmon/heldout/openai/gsm8k"),)
    # The preset's own held-out keys win; satmon's copy is not a second series.
    r = KeyMap().resolve(["train_reward", "heldout_acc", "satmon/heldout/heldout_acc"])
    assert r.heldout == (("heldout_acc", "heldout_acc"),)
    assert satmon_heldout_size_key("satmon/heldout/gsm8k") == "satmon/heldout/gsm8k/n"
    assert satmon_heldout_size_key("satmon/heldout/gsm8k/n") is None


def test_heldout_size_keys_are_sizes_not_series():
    from satmon.keys import heldout_size_key

    # satmon export's tidy layout: heldout_acc/n beside heldout_acc, heldout_acc/<name>/n.
    r = KeyMap().resolve(["train_reward", "heldout_acc", "heldout_acc/n"])
    assert r.heldout == (("heldout_acc", "heldout_acc"),)
    assert r.heldout_sizes == (("heldout_acc", "heldout_acc/n"),)
    r = KeyMap().resolve(["train_reward", "heldout_acc/gsm8k", "heldout_acc/gsm8k/n",
                          "heldout_acc/math"])
    assert r.heldout == (("gsm8k", "heldout_acc/gsm8k"), ("math", "heldout_acc/math"))
    assert r.heldout_sizes == (("gsm8k", "heldout_acc/gsm8k/n"),)
    assert r.to_dict()["heldout_size_keys"] == {"gsm8k": "heldout_acc/gsm8k/n"}
    assert r.used_keys() == {"train_reward", "heldout_acc/gsm8k", "heldout_acc/gsm8k/n",
                             "heldout_acc/math"}
    # A TRL eval key takes the size satmon's callback logs under the benchmark's name.
    r = KeyMap().resolve(["reward", "eval_rewards/acc/mean", "satmon/heldout/acc/n"])
    assert r.heldout_sizes == (("acc", "satmon/heldout/acc/n"),)
    assert heldout_size_key("x", "k", ["k"]) is None


def test_a_train_reward_key_means_the_tidy_preset():
    # An --all-metrics export holds a verl log's other keys beside satmon's tidy names.
    assert detect_preset(["train_reward", "critic/score/max", "actor/pg_loss"]) == "tidy"
    r = KeyMap().resolve(["train_reward", "heldout_acc/openai/gsm8k", "critic/score/max"])
    assert (r.preset, r.train_key) == ("tidy", "train_reward")


def test_unknown_key_error_is_readable_and_suggests():
    import pickle

    from satmon.keys import UnknownKeyError, close_matches

    with pytest.raises(UnknownKeyError) as info:
        KeyMap(heldout_keys=["eval_rewards/acc"]).resolve(
            ["reward", "eval_rewards/acc/mean", "loss"])
    err = info.value
    assert isinstance(err, KeyError)
    assert str(err) == err.args[0] and not str(err).startswith('"')
    assert "Did you mean 'eval_rewards/acc/mean'?" in str(err)
    assert err.key == "eval_rewards/acc" and err.available == ["eval_rewards/acc/mean", "loss",
                                                              "reward"]
    again = pickle.loads(pickle.dumps(err))
    assert (str(again), again.suggestions) == (str(err), err.suggestions)
    # No close match: no suggestion, still the list.
    with pytest.raises(KeyError) as info:
        KeyMap(train_key="zzz").resolve(["reward"])
    assert "Did you mean" not in str(info.value) and "'reward'" in str(info.value)
    # No training-reward key at all: the reward-like keys are suggested (not the eval ones).
    with pytest.raises(KeyError, match=r"Did you mean 'rewards/a/mean' or 'rewards/b/mean'\?"):
        KeyMap().resolve(["rewards/a/mean", "rewards/b/mean", "eval_rewards/a/mean"],
                         require_train=True)
    assert close_matches("Reward", ["reward", "loss"]) == ["reward"]
    assert close_matches("gsm8k", ["heldout_acc/openai/gsm8k", "loss"]) == [
        "heldout_acc/openai/gsm8k"]
