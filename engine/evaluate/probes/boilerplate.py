"""Boilerplate: the stock phrases a trained model repeats across many answers (:func:`repeated_phrases`)."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise

__all__ = ["RepeatedPhrase", "repeated_phrases"]


_WORD = re.compile(r"\w+")
_APOSTROPHES = re.compile(r"['\u2019]")


@dataclass(frozen=True)
class RepeatedPhrase:
    """A phrase many answers share.

    Attributes:
        phrase: The words, lower case, punctuation stripped, joined by single spaces.
        answers: How many answers contain it.
        share: ``answers`` over the number of answers.
    """

    phrase: str
    answers: int
    share: float


def _words(text: str) -> list[str]:
    return _WORD.findall(_APOSTROPHES.sub("", text.lower()))


def repeated_phrases(
    answers: Sequence[str],
    *,
    n_min: int = 4,
    n_max: int = 8,
    top: int | None = 10,
    min_share: float = 0.1,
) -> list[RepeatedPhrase]:
    """The word sequences that recur across answers: a model's stock phrases.

    Words are lower-cased with punctuation stripped (``can't`` reads as
    ``cant``). Every ``n_min``- to ``n_max``-word sequence is counted once per
    answer that contains it, and kept when at least ``max(2, min_share *
    len(answers))`` answers do. A run of words longer than ``n_max`` that is
    covered by such sequences is kept whole when enough answers contain it.
    A phrase is dropped when a longer kept phrase contains it and is in at least
    80% as many answers, so a boilerplate sentence is reported once, not as
    its pieces.

    Sequences are extended only from frequent shorter ones, so the cost stays
    near linear in the total number of words.

    Args:
        answers: The answers.
        n_min: Fewest words in a phrase.
        n_max: Most words in a counted sequence (longer runs are joined, see above).
        top: Keep only this many phrases (all when None).
        min_share: Smallest share of answers a phrase must be in.

    Returns:
        The phrases, most answers first, then longest first, then alphabetically.

    Raises:
        ValueError: ``n_min`` is below 1, ``n_max`` below ``n_min``, ``top``
            negative or ``min_share`` outside [0, 1].
    """
    if n_min < 1 or n_max < n_min:
        raise ValueError(f"need 1 <= n_min <= n_max, got n_min={n_min}, n_max={n_max}")
    if top is not None and top < 0:
        raise ValueError(f"top must be 0 or more, not {top}")
    if not 0.0 <= min_share <= 1.0:
        raise ValueError(f"min_share must be between 0 and 1, not {min_share}")
    if not answers:
        return []
    threshold = max(2, math.ceil(min_share * len(answers) - 1e-9))
    texts = [_words(answer) for answer in answers]

    counts: dict[tuple[str, ...], int] = {}
    level: Counter[tuple[str, ...]] = Counter()
    for words in texts:
        level.update(set(_grams(words, n_min)))
    kept = {gram: count for gram, count in level.items() if count >= threshold}
    counts.update(kept)
    # starts[a]: where in answer a the sequences of the current length that are frequent begin, in order.
    starts = [[i for i, gram in enumerate(_grams(words, n_min)) if gram in kept] for words in texts]

    for n in range(n_min + 1, n_max + 1):
        if not kept:
            break
        level = Counter()
        # A sequence of n words can be frequent only if both its (n-1)-word halves are.
        starts = [[i for i, j in pairwise(here) if j == i + 1] for here in starts]
        for words, here in zip(texts, starts, strict=True):
            if here:
                level.update({tuple(words[i : i + n]) for i in here})
        kept = {gram: count for gram, count in level.items() if count >= threshold}
        counts.update(kept)
        starts = [
            [i for i in here if tuple(words[i : i + n]) in kept] if here else here
            for words, here in zip(texts, starts, strict=True)
        ]

    if kept:
        counts.update(_long_runs(texts, starts, n_max, threshold))
    return _prune(counts, len(answers), n_min, n_max, top)


def _grams(words: list[str], n: int) -> Iterator[tuple[str, ...]]:
    """The ``n``-word sequences of ``words``, in order."""
    return zip(*(words[k:] for k in range(n)), strict=False)  # shorter tails end it


def _long_runs(texts: list[list[str]], starts: list[list[int]], n: int, threshold: int) -> dict[tuple[str, ...], int]:
    """Runs longer than ``n`` words covered by overlapping frequent ``n``-word sequences, with exact counts."""
    runs: Counter[tuple[str, ...]] = Counter()
    for words, here in zip(texts, starts, strict=True):
        found: set[tuple[str, ...]] = set()
        k = 0
        while k < len(here):
            end = k
            while end + 1 < len(here) and here[end + 1] == here[end] + 1:
                end += 1
            if end > k:
                found.add(tuple(words[here[k] : here[end] + n]))
            k = end + 1
        runs.update(found)
    # A run counted as a whole in enough answers; count every answer that contains it anywhere.
    candidates = [run for run, count in runs.items() if count >= threshold]
    if not candidates:
        return {}
    joined = [f" {' '.join(words)} " for words in texts]
    exact: dict[tuple[str, ...], int] = {}
    for run in candidates:
        needle = f" {' '.join(run)} "
        exact[run] = sum(needle in text for text in joined)
    return exact


def _prune(
    counts: dict[tuple[str, ...], int], total: int, n_min: int, n_max: int, top: int | None
) -> list[RepeatedPhrase]:
    """Drop phrases a longer phrase with >= 80% of their count contains; sort; cut to ``top``."""
    best_super: dict[tuple[str, ...], int] = {}

    def cover(sub: tuple[str, ...], count: int) -> None:
        if sub in counts and count > best_super.get(sub, -1):
            best_super[sub] = count

    long = [gram for gram in counts if len(gram) > n_max]
    for gram, count in counts.items():
        for n in range(n_min, min(len(gram) - 1, n_max) + 1):
            for i in range(len(gram) - n + 1):
                cover(gram[i : i + n], count)
    # Long runs inside longer runs (few of them: compare as text).
    padded = {gram: f" {' '.join(gram)} " for gram in long}
    for inner in long:
        for outer in long:
            if len(outer) > len(inner) and padded[inner] in padded[outer]:
                cover(inner, counts[outer])
    phrases = [
        RepeatedPhrase(" ".join(gram), count, count / total)
        for gram, count in counts.items()
        if best_super.get(gram, -1) < 0.8 * count
    ]
    phrases.sort(key=lambda p: (-p.answers, -len(p.phrase.split()), p.phrase))
    return phrases if top is None else phrases[:top]
