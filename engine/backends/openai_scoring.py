"""How the OpenAI-compatible backend scores options: log-probabilities read off a short greedy reply.

The backend (:mod:`engine.backends.openai_compat`) asks the server for the
reply; this module only reads it, so it needs no server to test.

Scoring (an approximation, unlike the ``hf`` backend's exact sums)
    A chat API cannot score a given continuation, so ``score`` asks for a
    short greedy completion with ``logprobs`` and ``top_logprobs`` (20
    alternatives per token) and reads the options off it. Options usually
    share a prefix (``"("`` in ``"(A)"``/``"(B)"``): the greedy tokens are
    followed while they stay inside that shared prefix, and at each of those
    positions every alternative token whose text reaches past the shared
    prefix is credited to the option(s) its text agrees with. An option's
    log-probability is the log-sum of its credited alternatives, each plus
    the log-probability of the greedy path before it; the tokens of an
    option after the one that tells the options apart are taken as certain.
    When the options share at most a short prefix (``"("``), a first token
    that skips it and starts with an option's distinctive part (``A`` for
    ``(A)``, ``Yes`` for ``(Yes)``), followed by nothing, the shared ending
    or punctuation, is credited to that option too: a small chat model
    served by llama-server mostly answers ``A``/``B`` or opens with a quote
    of the prompt, and ``(`` alone among its alternatives does not tell
    which letter would follow it. (Unlike a written verdict, a lone token
    ``A`` may also be the article of "A response...": an approximation.)
    An option none of whose tokens is among the alternatives gets an upper
    bound: the smaller of the least likely alternative shown and the mass
    not shown. When no option is found at all (the reply starts otherwise
    and no alternative matches), every score is NaN, which the judge marks
    unparsed. The same holds when the options share a long prefix (the
    chain-of-thought judge's reasoning) and the greedy reply does not repeat
    it word for word: for that judge through a server prefer the ``parse``
    reader.

    A server that returns no log-probabilities is an error, unless
    ``score_mode="parse"`` (``CAI_OPENAI_SCORE=parse``): then the options are
    scored from a short greedy reply, 0 for the option it starts with and
    -inf for the others (NaN for all when it starts with none), i.e. a hard
    label per order instead of a probability.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

S = TypeVar("S", str, bytes)


@dataclass(frozen=True)
class TokenLogprobs:
    """One generated token with its log-probability and the top alternatives at its position."""

    token: bytes
    logprob: float
    top: tuple[tuple[bytes, float], ...]


def _logsumexp(values: Sequence[float]) -> float:
    peak = max(values)
    if peak == -math.inf:
        return -math.inf
    return peak + math.log(sum(math.exp(v - peak) for v in values))


def option_logprobs(options: Sequence[str], tokens: Sequence[TokenLogprobs]) -> list[float]:
    """Approximate log-probabilities of ``options`` as the start of a reply, from a greedy reply's token logprobs.

    See "Scoring" in the module docstring.
    """
    if not options:
        return []
    targets = [option.encode() for option in options]
    shared = common_prefix(targets)
    bare = _bare_cores(targets, shared)
    credited: list[list[float]] = [[] for _ in options]
    path, path_logprob = b"", 0.0
    floor = -math.inf
    for position in tokens:
        alternatives = list(position.top)
        if all(text != position.token for text, _ in alternatives):
            alternatives.append((position.token, position.logprob))
        for text, logprob in alternatives:
            reply = path + text
            if len(reply) <= len(shared):
                continue  # does not tell the options apart
            for i, target in enumerate(targets):
                if target.startswith(reply) or reply.startswith(target):
                    credited[i].append(path_logprob + logprob)
        if bare and not path:  # the first token: one that skips the shared prefix ("A" for "(A)")
            for text, logprob in alternatives:
                for i in _bare_matches(text, bare):
                    credited[i].append(logprob)
        shown = [logprob for _, logprob in alternatives]
        unshown = 1.0 - sum(math.exp(v) for v in shown)
        floor = path_logprob + min(min(shown), math.log(unshown) if unshown > 0 else -math.inf)
        reply = path + position.token
        if len(reply) > len(shared) or not shared.startswith(reply):
            break  # the greedy reply has left the shared prefix: the options were told apart here
        path, path_logprob = reply, path_logprob + position.logprob
    if not any(credited):
        return [math.nan] * len(options)
    return [_logsumexp(found) if found else floor for found in credited]


_BARE_ENDS = b".,:;!?)]\n\t"


def _bare_cores(targets: Sequence[bytes], shared: bytes) -> tuple[bytes, list[bytes]] | None:
    """The options' shared ending and distinctive parts, when they share a short non-empty prefix (``"("``)."""
    if len(targets) < 2 or not 0 < len(shared) <= 2:
        return None
    suffix = common_prefix([t[len(shared) :][::-1] for t in targets])[::-1]
    cores = [t[len(shared) : len(t) - len(suffix)].strip() for t in targets]
    if not all(cores) or len(set(cores)) < len(cores):
        return None
    return suffix, cores


def _bare_matches(text: bytes, bare: tuple[bytes, list[bytes]]) -> list[int]:
    """Options whose distinctive part ``text`` starts with, followed by nothing, the shared ending or punctuation."""
    suffix, cores = bare
    text = text.lstrip()
    found = []
    for i, core in enumerate(cores):
        after = text[len(core) :]
        if text.startswith(core) and (not after or (suffix and after.startswith(suffix)) or after[:1] in _BARE_ENDS):
            found.append(i)
    return found


def common_prefix(items: Sequence[S]) -> S:
    """The longest common prefix of strings (or of byte strings); ``items`` must not be empty."""
    if not items:
        raise ValueError("no items")
    first, last = min(items), max(items)
    size = 0
    while size < len(first) and first[size] == last[size]:
        size += 1
    return first[:size]


def verdict_logprobs(options: Sequence[str], reply: str) -> list[float]:
    """Scores from a written reply: 0 for the option it starts with, -inf for the others, NaN when none.

    Leading whitespace is skipped. When the reply does not start with an
    option, and the options share at most a short prefix (such as ``"("``),
    it may also start with an option's distinctive part (``A`` of ``(A)``)
    followed by the options' shared ending, punctuation, nothing, or (for a
    part longer than one letter) a space: ``"A) ..."``, ``"Yes, ..."``,
    ``"No it does not"``. The longest matching option wins.
    """
    if not options:
        return []
    text = reply.lstrip()
    matches = [i for i, option in enumerate(options) if option and text.startswith(option)]
    prefix = common_prefix(list(options))
    if not matches and len(options) > 1 and len(prefix) <= 2:
        suffix = common_prefix([o[len(prefix) :][::-1] for o in options])[::-1]
        rest_of_reply = text.removeprefix(prefix).lstrip()
        for i, option in enumerate(options):
            core = option[len(prefix) : len(option) - len(suffix)].strip()
            if not core or not rest_of_reply.startswith(core):
                continue
            after = rest_of_reply[len(core) :]
            ends = ".,:;!?)]\n\t" + (" " if len(core) > 1 else "")  # "A response" is no verdict, "Yes it is" is
            if not after or (suffix and after.startswith(suffix)) or after[0] in ends:
                matches.append(i)
    if not matches:
        return [math.nan] * len(options)
    best = max(matches, key=lambda i: len(options[i]))
    return [0.0 if i == best else -math.inf for i in range(len(options))]
