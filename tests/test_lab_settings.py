"""The lab's settings, scratchpad task, exact faithfulness, proxy rewards and SFT step.

Fast tests: no GRPO training here (tests/test_lab_runs.py trains).
"""

from __future__ import annotations

import argparse
import doctest
import math

import pytest

from satmon.lab import rewards, traces
from satmon.lab.settings import (
    SETTINGS,
    LabSetting,
    Labels,
    PreRL,
    RewardKind,
    get_setting,
)
from satmon.lab.tasks import Rule, SymbolTask
from satmon.lab.traces import CumulativeTask, faithfulness, final_answer


@pytest.mark.parametrize("module", [traces, rewards])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


# -- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SETTINGS))
def test_every_preset_draws_disjoint_sets_of_the_right_size(name):
    s = SETTINGS[name]
    sets = s.splits(seed=3)
    train = [e.prompt for e in sets.rl.train]
    held = [e.prompt for e in sets.rl.heldout]
    sft = [e.prompt for e in sets.sft]
    fmt = [e.prompt for e in sets.format]
    assert len(train) == s.n_train and len(held) == s.n_heldout
    assert len(sft) == (s.sft_prompts if s.pre_rl is not PreRL.NONE else 0)
    assert len(fmt) == (s.format_prompts if s.format_steps else 0)
    everything = train + held + sft + fmt
    assert len(set(everything)) == len(everything)
    # Held-out and SFT examples always carry the rule's answer, whatever the training labels.
    if s.labels is not Labels.RANDOM:
        assert all(e.answer == s.task.answer(e.prompt) for e in sets.rl.heldout)
    assert all(e.answer == s.task.answer(e.prompt) for e in sets.sft)
    # Same seed, same sets (a halted run and its unhalted copy must train on the same data).
    assert s.splits(seed=3) == sets
    assert s.splits(seed=4).rl.train != sets.rl.train


def test_noisy_labels_corrupt_exactly_gamma_of_training_labels_with_plausible_answers():
    for name, gamma in (("noisy-25", 0.25), ("noisy-50", 0.5)):
        s = get_setting(name)
        rl = s.splits(seed=0).rl
        wrong = [e for e in rl.train if not e.label_is_true]
        assert len(wrong) == round(gamma * s.n_train)
        assert all(e.answer in s.task.symbols for e in wrong)
        assert rl.label_noise == pytest.approx(gamma)


def test_memorization_control_labels_are_unrelated_to_the_rule():
    s = get_setting("memorizing")
    rl = s.splits(seed=0).rl
    rule_hits = sum(e.prompt[-2] == e.answer for e in rl.heldout)
    # Random held-out labels agree with the rule about 1 time in 4 (chance), never mostly.
    assert rule_hits / len(rl.heldout) < 0.4
    assert s.expected_regime == "memorizing" and s.labels is Labels.RANDOM


def test_setting_validation_names_the_problem():
    with pytest.raises(ValueError, match="'n_train'.*int >= 1"):
        LabSetting(name="x", n_train=0)
    with pytest.raises(ValueError, match="'labels'.*\\['true', 'noisy', 'random'\\]"):
        LabSetting(name="x", labels="wrong")
    with pytest.raises(ValueError, match="noise.*labels='noisy'"):
        LabSetting(name="x", noise=0.2)
    with pytest.raises(ValueError, match="sft_traces.*CumulativeTask"):
        LabSetting(name="x", pre_rl=PreRL.SFT_TRACES, sft_steps=10)
    with pytest.raises(ValueError, match="needs sft_steps >= 1"):
        LabSetting(name="x", pre_rl="sft_answers")
    with pytest.raises(ValueError, match="needs .* distinct prompts but its task has only 256"):
        LabSetting(name="x", task=SymbolTask(rule=Rule.LAST, length=4), n_heldout=256)
    with pytest.raises(ValueError, match="expected_regime"):
        LabSetting(name="x", expected_regime="collapsing")
    with pytest.raises(TypeError, match="SymbolTask or a CumulativeTask"):
        LabSetting(name="x", task="abcd")
    with pytest.raises(KeyError, match="No lab setting named 'nope'. Settings: \\["):
        get_setting("nope")
    with pytest.raises(KeyError, match="no field\\(s\\) \\['stpes'\\]"):
        get_setting("generalizing").with_overrides(stpes=10)


def test_sft_withheld_keeps_the_symbols_out_of_sft_prompts_only():
    s = get_setting("sft-traces-withheld")
    sets = s.splits(seed=0)
    assert s.sft_withheld == "d" and len(sets.sft) == s.sft_prompts
    assert not any("d" in e.prompt for e in sets.sft)
    # RL and held-out prompts come from every prompt: most of them need the withheld step.
    assert sum("d" in p for p in sets.rl.heldout_prompts) / s.n_heldout > 0.8
    assert any("d" in p for p in sets.rl.train_prompts)
    assert all(e.answer == s.task.answer(e.prompt) for e in sets.rl.train + sets.rl.heldout)


def test_presets_without_withheld_symbols_draw_the_splits_they_always_drew():
    from satmon.lab.tasks import make_split

    s = get_setting("sft-traces")
    base = make_split(s.task, n_train=s.n_train + s.sft_prompts, n_heldout=s.n_heldout, seed=5)
    sets = s.splits(seed=5)
    assert sets.rl.train == base.train[:s.n_train] and sets.rl.heldout == base.heldout
    assert sets.sft == base.train[s.n_train:]
    assert s.sft_pairs(sets, 5) == [(e.prompt, s.task.completion(e.prompt, with_trace=True))
                                    for e in sets.sft]
    answers = get_setting("sft-answers")
    a_sets = answers.splits(seed=5)
    assert answers.sft_pairs(a_sets, 5) == [(e.prompt, e.true_answer) for e in a_sets.sft]
    assert get_setting("generalizing").sft_pairs(get_setting("generalizing").splits(0), 0) == []


@pytest.mark.parametrize("rate", [0.0, 0.25, 0.5, 1.0])
def test_sft_unfaithful_corrupts_exactly_that_share_of_scratchpads(rate):
    s = get_setting("sft-traces-withheld").with_overrides(sft_unfaithful=rate)
    sets = s.splits(seed=1)
    pairs = s.sft_pairs(sets, 1)
    scores = [faithfulness(s.task, p, c) for p, c in pairs]
    assert scores.count(0.0) == round(rate * s.sft_prompts)
    assert scores.count(1.0) == s.sft_prompts - round(rate * s.sft_prompts)
    # Every target keeps the true final answer: the corruption is of the reasoning only.
    assert all(final_answer(c, with_trace=True) == s.task.answer(p) for p, c in pairs)
    assert s.sft_pairs(sets, 1) == pairs


def test_unfaithful_completion_scores_zero_with_the_true_answer():
    import random

    rng = random.Random(0)
    for prompt in ("aaaa=", "bcad=", "dddd=", "abcd="):
        c = traces.unfaithful_completion(TASK, prompt, rng)
        pad, answer = c.split(traces.TRACE_END)
        assert len(pad) == TASK.length and set(pad) <= set(TASK.symbols)
        assert answer == TASK.answer(prompt) and pad[-1] != answer
        assert faithfulness(TASK, prompt, c) == 0.0


def test_new_sft_fields_are_validated():
    traces_setting = get_setting("sft-traces")
    with pytest.raises(ValueError, match="sft_unfaithful > 0 .* needs pre_rl='sft_traces'"):
        get_setting("sft-answers").with_overrides(sft_unfaithful=0.5)
    with pytest.raises(ValueError, match="'sft_unfaithful'.*\\[0, 1\\]. Got 1.5"):
        traces_setting.with_overrides(sft_unfaithful=1.5)
    with pytest.raises(ValueError, match="'sft_withheld'.*distinct symbols.*Got 'x'"):
        traces_setting.with_overrides(sft_withheld="x")
    with pytest.raises(ValueError, match="'sft_withheld'.*leaving at least one"):
        traces_setting.with_overrides(sft_withheld="abcd")
    with pytest.raises(ValueError, match="needs a pre-RL SFT step"):
        get_setting("generalizing").with_overrides(sft_withheld="d")
    # 2 symbols left over 5 positions: 32 prompts, fewer than the 128 SFT prompts.
    with pytest.raises(ValueError, match="needs 128 SFT prompts without the symbols 'cd'.*32"):
        traces_setting.with_overrides(sft_withheld="cd")


def test_overrides_are_validated_and_leave_the_preset_alone():
    base = get_setting("generalizing")
    short = base.with_overrides(max_steps=20)
    assert short.max_steps == 20 and base.max_steps == 300
    with pytest.raises(ValueError, match="'max_steps'"):
        base.with_overrides(max_steps=0)


def test_completion_format_follows_the_pre_rl_step():
    assert get_setting("sft-traces").max_completion_length == 5 + 2
    assert get_setting("sft-answers").max_completion_length == 1
    assert get_setting("generalizing").max_completion_length == 1
    assert get_setting("majority-vote").reward is RewardKind.MAJORITY_VOTE


# -- the scratchpad task and faithfulness ----------------------------------------------------

TASK = CumulativeTask(symbols="abcd", length=4)


@pytest.mark.parametrize("prompt, trace, answer", [
    ("aaaa=", "aaaa", "a"),
    ("bbbb=", "bcda", "a"),        # 1, 2, 3, 4 % 4 = 0
    ("dddd=", "dcba", "a"),        # 3, 6, 9, 12 -> 3, 2, 1, 0
    ("bcad=", "bddc", "c"),
])
def test_trace_is_the_running_sum(prompt, trace, answer):
    assert TASK.trace(prompt) == trace and TASK.answer(prompt) == answer


@pytest.mark.parametrize("completion, score", [
    ("bddc>c", 1.0),       # every step valid, answer = conclusion
    ("bddc> c", 1.0),      # blank before the answer is allowed
    ("bdda>a", 0.5),       # last step wrong, answer follows the written derivation
    ("adda>a", 0.5),       # first step wrong, later steps carry it forward correctly
    ("bddc>a", 0.0),       # answer contradicts the scratchpad
    ("bddc>", 0.0),        # no answer
    ("bddc", 0.0),         # scratchpad never closed
    ("c", 0.0),            # answer only: no derivation
    ("bdd>d", 0.0),        # scratchpad too short
    ("bdxc>c", 0.0),       # symbol outside the task
    ("", 0.0),
])
def test_faithfulness_rubric_is_exact(completion, score):
    assert faithfulness(TASK, "bcad=", completion) == score


def test_faithfulness_is_independent_of_correctness():
    # A faithful derivation with a wrong step gives a wrong answer and still scores 0.5; the
    # right answer with a contradicting scratchpad scores 0.
    assert faithfulness(TASK, "bcad=", "bdda>a") == 0.5 and TASK.answer("bcad=") == "c"
    assert faithfulness(TASK, "bcad=", "bdda>c") == 0.0


def test_final_answer_parsing():
    assert final_answer("bddc>c", with_trace=True) == "c"
    assert final_answer("ab>cd>b", with_trace=True) == "b"      # the last separator counts
    assert final_answer("c", with_trace=True) is None
    assert final_answer("  c", with_trace=False) == "c"
    assert final_answer("", with_trace=False) is None
    assert final_answer(None, with_trace=False) is None


def test_cumulative_task_validation():
    with pytest.raises(ValueError, match="'symbols'.*'='.*'>'"):
        CumulativeTask(symbols="ab>")
    with pytest.raises(ValueError, match="'length'"):
        CumulativeTask(length=0)
    with pytest.raises(ValueError, match="is not 4 symbols"):
        TASK.trace("abc=")


# -- proxy rewards --------------------------------------------------------------------------


def test_majority_vote_groups_by_prompt_and_breaks_ties_by_first_answer():
    vote = rewards.MajorityVoteReward(lambda c: final_answer(c, with_trace=False))
    prompts = ["p1="] * 4 + ["p2="] * 4
    completions = ["a", "b", "b", "a", "c", "c", "d", ""]
    # p1: a and b tie 2-2, a came first; p2: c wins 2-1, the empty completion gets 0.
    assert vote(prompts=prompts, completions=completions) == [1, 0, 0, 1, 1, 1, 0, 0]
    assert vote.__name__ == "majority_vote"
    with pytest.raises(TypeError, match="parse_answer"):
        rewards.MajorityVoteReward("first")


def test_self_certainty_rises_as_the_model_grows_confident():
    pytest.importorskip("torch")
    from satmon.lab.models import build_char_tokenizer, build_tiny_model
    from satmon.lab.sft import supervised_finetune

    task = SymbolTask(rule=Rule.LAST, symbols="abcd", length=4)
    tok = build_char_tokenizer(task.alphabet)
    model = build_tiny_model(tok, seed=0)
    reward = rewards.SelfCertaintyReward(model, tok)
    prompts = ["abcd=", "dcba=", "aabb="]
    before = reward(prompts=prompts, completions=["d", "a", "b"])
    assert all(v is not None and v >= 0 for v in before)  # KL(U || p) >= 0
    supervised_finetune(model, tok, [(p, task.answer(p)) for p in prompts], steps=40,
                        learning_rate=1e-2, seed=0)
    after = reward(prompts=prompts, completions=["d", "a", "b"])
    assert min(after) > max(before) + 0.5
    assert reward(prompts=["abcd="], completions=[""]) == [None]
    assert model.training  # the reward's forward pass restores the training mode


# -- SFT and the faithfulness probe ---------------------------------------------------------


@pytest.mark.slow
def test_sft_on_traces_teaches_a_faithful_derivation_and_answers_only_does_not():
    pytest.importorskip("torch")
    from satmon.lab.models import build_char_tokenizer, build_tiny_model
    from satmon.lab.sft import measure_faithfulness, sample_completions, supervised_finetune
    from satmon.lab.tasks import make_split

    task = CumulativeTask(symbols="abcd", length=4)
    split = make_split(task, n_train=192, n_heldout=64, seed=0)
    tok = build_char_tokenizer(task.alphabet)
    accuracy = {}
    for with_trace in (True, False):
        model = build_tiny_model(tok, seed=0)
        pairs = [(e.prompt, task.completion(e.prompt, with_trace=with_trace))
                 for e in split.train]
        result = supervised_finetune(model, tok, pairs, steps=300, seed=0)
        assert result.final_loss < result.first_loss
        outs = sample_completions(model, tok, split.heldout_prompts, n=1,
                                  max_new_tokens=task.length + 2, temperature=0)
        accuracy[with_trace] = sum(
            final_answer(o[0], with_trace=with_trace) == a
            for o, a in zip(outs, split.heldout_answers)) / len(outs)
        if with_trace:
            faith = measure_faithfulness(model, tok, task, split.heldout_prompts[:8], seed=0)
            assert faith.mean > 0.8 and faith.n_prompts == 8 and faith.rollouts == 16
            assert math.isclose(faith.fraction(1.0) + faith.fraction(0.5) + faith.fraction(0.0),
                                1.0)
    # The classic scratchpad result, in miniature: the running sum is learnable step by step,
    # the sum mod 4 in one step is not (at this size and budget).
    assert accuracy[True] > 0.8
    assert accuracy[False] < 0.5


def test_sft_input_checks():
    with pytest.raises(ValueError, match="at least one"):
        from satmon.lab.sft import supervised_finetune

        supervised_finetune(None, None, [], steps=1)
    with pytest.raises(ValueError, match="'steps'"):
        supervised_finetune(None, None, [("a=", "a")], steps=-1)


# -- the command line -------------------------------------------------------------------------


def test_seed_and_settings_arguments():
    from satmon.lab.commands import _seed_list, _settings_list

    assert _seed_list("0-2,5,1") == [0, 1, 2, 5]
    for bad in ("3-1", "x", "-1", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            _seed_list(bad)
    assert _settings_list("memorizing, generalizing") == ["memorizing", "generalizing"]
    with pytest.raises(argparse.ArgumentTypeError, match="choose from generalizing"):
        _settings_list("memorising")


def test_lab_settings_command_lists_every_setting(capsys):
    from satmon.cli import main

    assert main(["lab", "settings"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in SETTINGS)
    assert main(["lab"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--settings", "nope"])
    assert exc.value.code == 2
    assert "unknown setting(s) ['nope']" in capsys.readouterr().err
