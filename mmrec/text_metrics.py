"""Text metrics for generated explanations: BLEU-4 and ROUGE-1/2/L on words, dependency-free.

Tokenisation (:func:`tokenize`), used by every metric here: lowercase, then split on every character
that is not a letter or a digit (Unicode-aware; ``_`` and punctuation are separators and are dropped).
``"Great fit, LOVE it!"`` -> ``["great", "fit", "love", "it"]``.

Scores are in ``[0, 1]``; papers often print them multiplied by 100.

* :func:`bleu` — BLEU (Papineni et al., 2002), corpus-level by default: clipped n-gram counts summed over
  the corpus, geometric mean of the 1..4-gram precisions, brevity penalty ``exp(1 - r/c)`` when the total
  hypothesis length ``c`` is below the total reference length ``r`` (closest reference length per
  sentence, the shorter on ties). No smoothing by default (a zero n-gram precision gives 0);
  ``smoothing="add1"`` adds one to numerator and denominator of the 2..4-gram precisions (Lin & Och,
  2004). ``level="sentence"`` averages sentence-level BLEU over pairs instead.
* :func:`rouge` — ROUGE-1, ROUGE-2 (n-gram overlap) and ROUGE-L (longest common subsequence), each the F1
  of precision and recall, per pair then averaged over pairs; with several references a pair takes the
  best reference.

Example:
    >>> from mmrec.text_metrics import bleu, rouge
    >>> round(bleu(["the cat sat on the mat"], ["the cat sat on the mat"]), 4)
    1.0
    >>> {k: round(v, 4) for k, v in rouge(["the cat sat"], ["the cat ran"]).items()}
    {'rouge1': 0.6667, 'rouge2': 0.5, 'rougeL': 0.6667}
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Literal

__all__ = ["bleu", "rouge", "tokenize"]

_TOKEN = re.compile(r"[^\W_]+")

References = Sequence[str | Sequence[str]]


def tokenize(text: str) -> list[str]:
    """Lowercase ``text`` and split it on non-alphanumeric characters.

    Args:
        text: a sentence.

    Returns:
        The list of word tokens (may be empty).

    Example:
        >>> tokenize("Great fit, LOVE it! (size_M)")
        ['great', 'fit', 'love', 'it', 'size', 'm']
    """
    if not isinstance(text, str):
        raise TypeError(f"expected a string to tokenize, got {type(text).__name__}.")
    return _TOKEN.findall(text.lower())


def _ngrams(tokens: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _pairs(hypotheses: Sequence[str], references: References) -> list[tuple[list[str], list[list[str]]]]:
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise TypeError(
            "hypotheses and references must be sequences of strings (wrap a single one in a list)."
        )
    if len(hypotheses) != len(references):
        raise ValueError(
            f"got {len(hypotheses)} hypotheses but {len(references)} references; give one reference "
            "(or a list of references) per hypothesis."
        )
    if len(hypotheses) == 0:
        raise ValueError("no hypotheses given: text metrics need at least one (hypothesis, reference) pair.")
    out = []
    for i, (hyp, ref) in enumerate(zip(hypotheses, references)):
        refs = [ref] if isinstance(ref, str) else list(ref)
        if not refs:
            raise ValueError(f"pair {i} has an empty list of references; give at least one reference.")
        out.append((tokenize(hyp), [tokenize(r) for r in refs]))
    return out


# ----------------------------------------------------------------------------------------------- BLEU
def _bleu_stats(hyp: list[str], refs: list[list[str]], max_order: int) -> tuple[list[int], list[int], int]:
    """Clipped matches and totals per order, and the closest reference length."""
    matches, totals = [0] * max_order, [0] * max_order
    for n in range(1, max_order + 1):
        hyp_counts = _ngrams(hyp, n)
        max_ref: Counter[tuple[str, ...]] = Counter()
        for ref in refs:
            max_ref |= _ngrams(ref, n)  # element-wise max over references (clipping)
        matches[n - 1] = sum(min(c, max_ref[g]) for g, c in hyp_counts.items())
        totals[n - 1] = max(len(hyp) - n + 1, 0)
    closest = min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
    return matches, totals, closest


def _bleu_from_stats(
    matches: Sequence[int], totals: Sequence[int], hyp_len: int, ref_len: int, smoothing: str
) -> float:
    if hyp_len == 0:
        return 0.0
    log_p = 0.0
    for n, (m, t) in enumerate(zip(matches, totals), start=1):
        if smoothing == "add1" and n > 1:
            m, t = m + 1, t + 1
        if m == 0 or t == 0:
            return 0.0
        log_p += math.log(m / t)
    bp = 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / hyp_len)
    return bp * math.exp(log_p / len(matches))


def bleu(
    hypotheses: Sequence[str],
    references: References,
    *,
    max_order: int = 4,
    level: Literal["corpus", "sentence"] = "corpus",
    smoothing: Literal["none", "add1"] = "none",
) -> float:
    """BLEU on words (BLEU-4 by default), in ``[0, 1]``.

    Args:
        hypotheses: generated sentences, one per example.
        references: the reference sentence of each example, or a list of references per example.
        max_order: largest n-gram order (4 for BLEU-4).
        level: ``"corpus"`` (standard: statistics summed over the corpus, one brevity penalty) or
            ``"sentence"`` (mean of per-pair BLEU; without smoothing most short sentences score 0).
        smoothing: ``"none"`` (default) or ``"add1"`` (Lin & Och 2004 add-one on 2..max_order-grams).

    Returns:
        The BLEU score as a float.

    Example:
        >>> round(bleu(["the cat sat on the mat"], [["a cat sat on the mat", "the cat is here"]]), 4)
        0.8034
        >>> bleu(["hello there"], ["hello there"])  # shorter than 4 words: no 4-gram, score 0
        0.0
        >>> round(bleu(["hello there"], ["hello there"], smoothing="add1"), 4)
        1.0
    """
    if max_order < 1:
        raise ValueError(f"max_order must be >= 1 (4 for BLEU-4); got {max_order}.")
    if level not in ("corpus", "sentence"):
        raise ValueError(f"level must be 'corpus' or 'sentence'; got {level!r}.")
    if smoothing not in ("none", "add1"):
        raise ValueError(f"smoothing must be 'none' or 'add1'; got {smoothing!r}.")
    stats = [(_bleu_stats(h, r, max_order), len(h)) for h, r in _pairs(hypotheses, references)]
    if level == "sentence":
        scores = [_bleu_from_stats(m, t, hl, rl, smoothing) for (m, t, rl), hl in stats]
        return sum(scores) / len(scores)
    matches = [sum(s[0][0][n] for s in stats) for n in range(max_order)]
    totals = [sum(s[0][1][n] for s in stats) for n in range(max_order)]
    hyp_len = sum(hl for _, hl in stats)
    ref_len = sum(s[0][2] for s in stats)
    return _bleu_from_stats(matches, totals, hyp_len, ref_len, smoothing)


# ----------------------------------------------------------------------------------------------- ROUGE
def _f1(overlap: int, hyp_total: int, ref_total: int) -> float:
    if overlap == 0 or hyp_total == 0 or ref_total == 0:
        return 0.0
    p, r = overlap / hyp_total, overlap / ref_total
    return 2 * p * r / (p + r)


def _rouge_n(hyp: list[str], ref: list[str], n: int) -> float:
    h, r = _ngrams(hyp, n), _ngrams(ref, n)
    return _f1(sum((h & r).values()), sum(h.values()), sum(r.values()))


def _lcs_length(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge(hypotheses: Sequence[str], references: References) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F1, averaged over (hypothesis, reference) pairs.

    Args:
        hypotheses: generated sentences, one per example.
        references: the reference sentence of each example, or a list of references per example (the
            best-scoring reference counts, per measure).

    Returns:
        ``{"rouge1": ..., "rouge2": ..., "rougeL": ...}``, each in ``[0, 1]``. A pair with an empty
        hypothesis or reference scores 0.

    Example:
        >>> out = rouge(["the cat is on the mat today"], ["the cat sat on the mat"])
        >>> {k: round(v, 4) for k, v in out.items()}
        {'rouge1': 0.7692, 'rouge2': 0.5455, 'rougeL': 0.7692}
    """
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    pairs = _pairs(hypotheses, references)
    for hyp, refs in pairs:
        totals["rouge1"] += max(_rouge_n(hyp, r, 1) for r in refs)
        totals["rouge2"] += max(_rouge_n(hyp, r, 2) for r in refs)
        totals["rougeL"] += max(_f1(_lcs_length(hyp, r), len(hyp), len(r)) for r in refs)
    return {k: v / len(pairs) for k, v in totals.items()}
