"""BLEU / ROUGE: hand-computed values, tokenisation, and agreement with torchmetrics.text."""

from __future__ import annotations

import math
import random

import pytest
from torchmetrics.text import BLEUScore
from torchmetrics.text.rouge import ROUGEScore

from mmrec.text_metrics import bleu, rouge, tokenize


def test_tokenize() -> None:
    assert tokenize("The CAT, sat!  on the-mat.") == ["the", "cat", "sat", "on", "the", "mat"]
    assert tokenize("size_M 2x café") == ["size", "m", "2x", "café"]
    assert tokenize(" ,;! ") == []
    with pytest.raises(TypeError):
        tokenize(3)  # type: ignore[arg-type]


def test_bleu_identity_and_case_insensitive() -> None:
    assert bleu(["The cat sat on the mat."], ["the cat sat on the mat"]) == pytest.approx(1.0)


def test_bleu_clipping_and_zero_without_smoothing() -> None:
    # Hyp: "the" x7 (7 words) vs ref "the cat is on the mat" (6 words).
    # p1 = clipped 2/7; no matching bigram -> p2 = 0 -> BLEU = 0 without smoothing.
    hyp, ref = ["the the the the the the the"], ["the cat is on the mat"]
    assert bleu(hyp, ref) == 0.0
    # add1 on n >= 2: p2 = 1/7, p3 = 1/6, p4 = 1/5; c = 7 > r = 6 -> BP = 1.
    expected = (2 / 7 * 1 / 7 * 1 / 6 * 1 / 5) ** 0.25
    assert bleu(hyp, ref, smoothing="add1") == pytest.approx(expected)


def test_bleu_brevity_penalty() -> None:
    # Hyp is a 5-word prefix of the 6-word ref: all precisions 1, BP = exp(1 - 6/5).
    assert bleu(["the cat sat on the"], ["the cat sat on the mat"]) == pytest.approx(math.exp(-0.2))
    # Longer hypothesis: no penalty. "w x y z q r" vs "w x y z q": p = 5/6, 4/5, 3/4, 2/3.
    assert bleu(["w x y z q r"], ["w x y z q"]) == pytest.approx((5 / 6 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25)


def test_bleu_corpus_versus_sentence_level() -> None:
    hyps = ["a b c d", "w x y z q"]
    refs = ["a b c d", "w x y z r"]
    # Corpus: matches (4+4, 3+3, 2+2, 1+1) over totals (4+5, 3+4, 2+3, 1+2); c = r = 9 -> BP = 1.
    corpus = (8 / 9 * 6 / 7 * 4 / 5 * 2 / 3) ** 0.25
    assert bleu(hyps, refs) == pytest.approx(corpus)
    # Sentence: mean of 1 and (4/5 * 3/4 * 2/3 * 1/2)^(1/4) = 0.2^(1/4).
    assert bleu(hyps, refs, level="sentence") == pytest.approx((1 + 0.2**0.25) / 2)


def test_bleu_multi_reference_clipping_and_closest_length() -> None:
    # Hyp (5 words) vs refs of 4 and 6 words: both at distance 1, the shorter (4) is used -> c > r,
    # BP = 1; every n-gram of the hyp is in the 6-word ref -> BLEU 1 (BP with r=6 would be exp(-0.2)).
    assert bleu(["a b c d e"], [["a b c d", "a b c d e f"]]) == pytest.approx(1.0)
    # Clipping takes the max count over references: "the" x2 in hyp, at most 1 per ref -> 1 match.
    score = bleu(["the the cat"], [["the cat", "cat the"]], max_order=2)
    # p1 = 2/3 (one "the" clipped + "cat"), p2 = 1/2 ("the cat"); c = 3 > r = 2.
    assert score == pytest.approx(math.sqrt(2 / 3 * 1 / 2))


def test_bleu_short_and_empty_hypotheses() -> None:
    assert bleu(["hello there"], ["hello there"]) == 0.0  # no 4-gram at all
    assert bleu([""], ["hello there"]) == 0.0
    assert bleu(["hello there"], ["hello there"], max_order=2) == pytest.approx(1.0)


def test_rouge_hand_computed() -> None:
    # hyp (7 words): the cat is on the mat today; ref (6): the cat sat on the mat.
    # F1 = 2 * overlap / (|hyp| + |ref|).
    # ROUGE-1 overlap: the x2, cat, on, mat = 5 -> 10/13.
    # ROUGE-2: hyp bigrams 6, ref 5, common {the cat, on the, the mat} = 3 -> 6/11.
    # ROUGE-L: LCS "the cat on the mat" = 5 -> 10/13.
    out = rouge(["the cat is on the mat today"], ["The cat sat on the mat."])
    assert out["rouge1"] == pytest.approx(10 / 13)
    assert out["rouge2"] == pytest.approx(6 / 11)
    assert out["rougeL"] == pytest.approx(10 / 13)


def test_rouge_l_uses_subsequence_not_substring() -> None:
    # LCS of "a b c d e" and "a x c y e" is "a c e" (3): F1 = 6/10; no common bigram.
    out = rouge(["a b c d e"], ["a x c y e"])
    assert out["rougeL"] == pytest.approx(0.6)
    assert out["rouge1"] == pytest.approx(0.6)
    assert out["rouge2"] == 0.0
    # Order matters for L, not for 1: "e d c b a" vs "a b c d e": LCS 1 -> 2/10.
    rev = rouge(["e d c b a"], ["a b c d e"])
    assert rev["rouge1"] == pytest.approx(1.0) and rev["rougeL"] == pytest.approx(0.2)


def test_rouge_averages_pairs_and_best_reference() -> None:
    # Pair 1 identical -> 1; pair 2 disjoint -> 0; mean 0.5 for every measure.
    out = rouge(["good fit", "nice colour"], ["good fit", "too small"])
    assert out == pytest.approx({"rouge1": 0.5, "rouge2": 0.5, "rougeL": 0.5})
    # The best of several references counts.
    assert rouge(["too small"], [["nice colour", "too small"]])["rouge2"] == pytest.approx(1.0)
    # Empty hypothesis scores 0.
    assert rouge([""], ["too small"]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


@pytest.mark.parametrize(
    ("hyps", "refs", "match"),
    [
        (["a"], ["a", "b"], "1 hypotheses but 2 references"),
        ([], [], "at least one"),
        ("a b", ["a b"], "sequences of strings"),
        (["a"], [[]], "empty list of references"),
    ],
)
def test_errors(hyps, refs, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        bleu(hyps, refs)
    with pytest.raises((ValueError, TypeError), match=match):
        rouge(hyps, refs)
    with pytest.raises(ValueError, match="level"):
        bleu(["a"], ["a"], level="document")  # type: ignore[arg-type]


def _random_corpus(seed: int, n: int = 30) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(12)]
    hyps = [" ".join(rng.choices(vocab, k=rng.randint(4, 15))) for _ in range(n)]
    refs = [" ".join(rng.choices(vocab, k=rng.randint(4, 15))) for _ in range(n)]
    # Make some pairs overlap a lot so that 4-grams match.
    for i in range(0, n, 3):
        hyps[i] = refs[i] + " " + rng.choice(vocab)
    return hyps, refs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bleu_matches_torchmetrics(seed: int) -> None:
    hyps, refs = _random_corpus(seed)
    expected = BLEUScore(n_gram=4)(hyps, [[r] for r in refs]).item()
    assert expected > 0
    assert bleu(hyps, refs) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_rouge_matches_torchmetrics(seed: int) -> None:
    hyps, refs = _random_corpus(seed)
    tm = ROUGEScore(rouge_keys=("rouge1", "rouge2", "rougeL"))(hyps, refs)
    ours = rouge(hyps, refs)
    for key in ("rouge1", "rouge2", "rougeL"):
        assert ours[key] == pytest.approx(tm[f"{key}_fmeasure"].item(), abs=1e-6), key
