"""satmon.lab.models and satmon.lab.tasks: tokenizers, tiny models, tasks, verifiers."""

from __future__ import annotations

import pytest

from satmon.lab.models import (EOS_TOKEN, PAD_TOKEN, TinyModelConfig, build_char_tokenizer,
                               build_tiny_model, count_parameters, restrict_generation)
from satmon.lab.tasks import (Example, Rule, SymbolTask, exact_match, make_split, to_dataset,
                              trl_reward, with_noisy_labels, with_random_labels)


# -- tokenizer --------------------------------------------------------------------------------

def test_char_tokenizer_round_trips_and_pads_left():
    tok = build_char_tokenizer("abcd=")
    assert tok.pad_token == PAD_TOKEN and tok.pad_token_id == 0
    assert tok.eos_token == EOS_TOKEN and tok.eos_token_id == 1
    ids = tok("cab=")["input_ids"]
    assert len(ids) == 4 and tok.decode(ids) == "cab="
    batch = tok(["ab=", "a="], padding=True)
    assert batch["input_ids"][1][0] == tok.pad_token_id  # left padding for generation
    assert batch["attention_mask"][1] == [0, 1, 1]
    assert tok.decode(ids + [tok.eos_token_id], skip_special_tokens=True) == "cab="
    # A character outside the alphabet is <unk>, never an error.
    assert tok("z")["input_ids"] == [tok.unk_token_id]


def test_char_tokenizer_rejects_empty_alphabet():
    with pytest.raises(ValueError, match="alphabet"):
        build_char_tokenizer("")


# -- model ------------------------------------------------------------------------------------

def test_tiny_model_size_seed_and_generation():
    torch = pytest.importorskip("torch")
    tok = build_char_tokenizer("abcd=")
    m1 = build_tiny_model(tok, seed=3)
    m2 = build_tiny_model(tok, seed=3)
    m3 = build_tiny_model(tok, seed=4)
    n = count_parameters(m1)
    assert 70_000 < n < 100_000
    p1, p2, p3 = (next(m.parameters()) for m in (m1, m2, m3))
    assert torch.equal(p1, p2) and not torch.equal(p1, p3)
    state = torch.random.get_rng_state()
    build_tiny_model(tok, seed=5)
    assert torch.equal(state, torch.random.get_rng_state())  # caller's RNG untouched

    gen = restrict_generation(tok, "abcd")
    enc = tok(["abca=", "dd="], return_tensors="pt", padding=True)
    out = m1.generate(**enc, max_new_tokens=1, do_sample=False, **gen)
    new = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert all(len(c) == 1 and c in "abcd" for c in new)


def test_restrict_generation_suppresses_everything_else():
    tok = build_char_tokenizer("abcd=")
    kw = restrict_generation(tok, "ab")
    vocab = tok.get_vocab()
    assert set(kw["suppress_tokens"]) == set(vocab.values()) - {vocab["a"], vocab["b"]}
    with pytest.raises(ValueError, match="not in the tokenizer"):
        restrict_generation(tok, "xyz")


def test_tiny_model_config_validation():
    with pytest.raises(ValueError, match="multiple of 'num_heads'"):
        TinyModelConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="'num_layers'"):
        TinyModelConfig(num_layers=0)
    with pytest.raises(TypeError, match="TinyModelConfig"):
        build_tiny_model(build_char_tokenizer("ab"), config={"hidden_size": 8})


# -- tasks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("rule, prompt, answer", [
    (Rule.FIRST, "cabd=", "c"),
    (Rule.LAST, "cabd=", "d"),
    (Rule.MAJORITY, "cbab=", "b"),
    (Rule.MAJORITY, "abcd=", "a"),      # tie: earliest symbol in the task's order
    (Rule.NEXT_OF_LAST, "abcd=", "a"),  # cyclic
    (Rule.NEXT_OF_LAST, "ddda", "b"),   # without the trailing '='
])
def test_rules(rule, prompt, answer):
    assert SymbolTask(rule=rule, symbols="abcd", length=4).answer(prompt) == answer


def test_task_validation_and_bad_prompts():
    with pytest.raises(ValueError, match="'rule'"):
        SymbolTask(rule="parity")
    with pytest.raises(ValueError, match="'symbols'"):
        SymbolTask(symbols="aab")
    with pytest.raises(ValueError, match="'symbols'"):
        SymbolTask(symbols="a=")
    with pytest.raises(ValueError, match="'length'"):
        SymbolTask(length=0)
    task = SymbolTask(symbols="ab", length=3)
    with pytest.raises(ValueError, match="not 3 symbols"):
        task.answer("abc=")
    assert task.n_prompts == 8 and task.chance == 0.5 and task.alphabet == "ab="
    assert sorted(task.prompt_from_index(i) for i in range(8)) == sorted(
        {a + b + c + "=" for a in "ab" for b in "ab" for c in "ab"})


def test_split_is_disjoint_deterministic_and_true():
    task = SymbolTask(symbols="abcd", length=5)
    s1 = make_split(task, n_train=8, n_heldout=100, seed=7)
    s2 = make_split(task, n_train=8, n_heldout=100, seed=7)
    s3 = make_split(task, n_train=8, n_heldout=100, seed=8)
    assert s1 == s2 and s1 != s3
    assert not set(s1.train_prompts) & set(s1.heldout_prompts)
    assert all(e.answer == e.true_answer == task.answer(e.prompt) for e in s1.train + s1.heldout)
    assert s1.label_noise == 0.0
    with pytest.raises(ValueError, match="n_train \\+ n_heldout <= 1024"):
        make_split(task, n_train=1000, n_heldout=100)
    with pytest.raises(ValueError, match="'n_train'"):
        make_split(task, n_train=0, n_heldout=10)


def test_random_labels_leave_heldout_at_chance():
    task = SymbolTask(symbols="abcd", length=5)
    split = with_random_labels(make_split(task, n_train=8, n_heldout=800, seed=0), seed=1)
    # The rule ("last symbol") scores chance on held-out labels that are random.
    hits = [exact_match(e.prompt, task.answer(e.prompt), e.true_answer) for e in split.heldout]
    assert abs(sum(hits) / len(hits) - task.chance) < 0.05
    assert all(e.answer in task.symbols for e in split.train)
    assert split.train_prompts == make_split(task, n_train=8, n_heldout=800,
                                             seed=0).train_prompts


def test_noisy_labels_fraction_and_truth_kept():
    task = SymbolTask(symbols="abcd", length=5)
    base = make_split(task, n_train=40, n_heldout=10, seed=0)
    noisy = with_noisy_labels(base, fraction=0.25, seed=3)
    assert noisy.label_noise == pytest.approx(0.25)
    assert all(e.true_answer == task.answer(e.prompt) for e in noisy.train)
    assert all(e.answer != e.true_answer for e in noisy.train if not e.label_is_true)
    assert noisy.heldout == base.heldout
    with pytest.raises(ValueError, match="'fraction'"):
        with_noisy_labels(base, fraction=1.5)


@pytest.mark.parametrize("completion, answer, score", [
    ("a", "a", 1.0), (" a", "a", 1.0), ("ab", "a", 1.0), ("b", "a", 0.0), ("", "a", 0.0),
    (None, "a", 0.0), ("a", "", 0.0),
])
def test_exact_match(completion, answer, score):
    assert exact_match("x=", completion, answer) == score


def test_trl_reward_wraps_a_verifier():
    reward = trl_reward()
    assert reward.__name__ == "exact_match"
    assert reward(["ab=", "ba="], ["b", "b"], answer=["b", "a"]) == [1.0, 0.0]
    # Conversational completions: the last message's content is scored.
    assert reward(["ab="], [[{"role": "assistant", "content": "b"}]], answer=["b"]) == [1.0]
    with pytest.raises(KeyError, match="dataset column 'answer'"):
        reward(["ab="], ["b"], label=["b"])
    named = trl_reward(lambda p, c, a: 0.5, name="half")
    assert named.__name__ == "half" and named(["x"], ["y"], answer=["z"]) == [0.5]


def test_to_dataset_columns():
    pytest.importorskip("datasets")
    ds = to_dataset([Example("ab=", "b", "b"), Example("ba=", "b", "a")])
    assert ds.column_names == ["prompt", "answer", "true_answer"]
    assert ds[1] == {"prompt": "ba=", "answer": "b", "true_answer": "a"}


def test_seeded_split_regression_pin():
    # The split depends on random.Random(seed) only, so it is the same in every process and
    # every resumed run; pin one draw so that a change to the draw is noticed.
    task = SymbolTask(symbols="abcd", length=5)
    assert make_split(task, n_train=3, n_heldout=1, seed=0).train_prompts == [
        "abbad=", "bdbbd=", "cabba="]
