"""Which tokens made a local transformers judge decide: gradient x input saliency of one pairwise judgment.

The quantity
    For one judge prompt (the pair in one order under one principle) the judge's answer is read as the
    margin ``m = log P("(A)" | prompt) - log P("(B)" | prompt)`` (each option's tokens' log-probabilities
    summed, exactly as :meth:`~engine.backends.hf.HFBackend.score` does). With ``e_t`` the input embedding of
    prompt token ``t``, the token's saliency is ``s_t = sum_d e_t[d] * dm/de_t[d]``: the first-order
    (linear) estimate of how much ``m`` would fall if that token's embedding were zeroed. Scores of all the
    prompt's tokens sum to the linear estimate of ``m`` itself, relative to an all-zero input.

Orientation and averaging
    In the first order the first response is (A), so a positive ``s_t`` pushes toward the first response; in
    the second order it is (B), so that order's scores are negated. Both then mean "toward the FIRST
    response", the sign :mod:`.occlusion` uses. Each token's score is spread evenly over its characters in
    the rendered prompt (tokens tile the text: a token owns the characters after the previous token's end
    up to its own end, so the space of a ``" word"`` token is its own), the characters inside each quoted
    response are mapped back to the response's own characters (the ``quote`` filter may have broken
    ``<<<`` runs with spaces: an inserted character counts for the one before it), and the per-character
    scores are averaged over the two orders (and the principles). A response token is a token of the first
    order's prompt clipped to the response; its score is the sum over its characters, so the tokens of a
    response tile its text exactly, and a sentence's score is the sum over its characters.

Against occlusion
    :func:`rank_correlation` is Spearman's rho between the per-sentence saliency sums and the occlusion
    pushes of the same sentences. It is a sanity number, not a faithfulness check: +1 says the gradient
    ranks the sentences as removing them does; near 0 or negative says the judge is far from linear over
    the sentences (removing a sentence is a large step, the gradient an infinitesimal one), so trust the
    occlusion ranking, which the deletion curve checks.

Only a :class:`~engine.judge.pairwise.Judge` over an :class:`~engine.backends.hf.HFBackend` without chain of
thought can be differentiated; :func:`saliency_judge` refuses the others in one message. ``torch`` is imported
inside the functions that need it, so importing this module stays cheap.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from engine.explain.errors import ExplainError
from engine.explain.occlusion import Attribution, Side
from engine.explain.sentences import split_sentences
from engine.judge.pairwise import Judge, Pair
from engine.judge.verdicts import OPTIONS
from engine.prompts import neutralise
from engine.records.base import SCHEMA_VERSION

if TYPE_CHECKING:
    import torch

    from engine.backends.hf import HFBackend
    from engine.judge.panel import PairJudge

SHOWN_TOKENS = 8
"""Tokens of each response the terminal view lists."""
SIDES: tuple[Side, Side] = ("first", "second")


@dataclass(frozen=True)
class TokenScore:
    """One token of one response: ``text`` is ``response[start:end]``; ``score`` > 0 pushed toward the first."""

    side: Side
    start: int
    end: int
    text: str
    score: float


@dataclass(frozen=True)
class SentenceScore:
    """One sentence's saliency sum, and its occlusion push when one was given (None: none, or unread)."""

    side: Side
    index: int
    start: int
    end: int
    score: float
    push: float | None


@dataclass(frozen=True)
class Margin:
    """The judge's margin log P((A)) - log P((B)) on one prompt: ``first_as`` is the slot of the first response."""

    principle: str
    first_as: str
    margin: float


@dataclass
class Saliency:
    """Token saliency of one pair (see the module docstring for the sign and the averaging)."""

    judge: str
    first_name: str
    second_name: str
    margins: list[Margin]
    tokens: list[TokenScore]
    sentences: list[SentenceScore]
    rank_correlation: float | None
    """Spearman's rho of sentence sums against occlusion pushes; None: no pushes (or occlusion found no signal,
    so its pushes are noise), fewer than 2 sentences, or no spread."""

    def top(self, side: Side, n: int = SHOWN_TOKENS) -> list[TokenScore]:
        """The ``n`` tokens of one response with the largest scores in size."""
        return sorted((t for t in self.tokens if t.side == side), key=lambda t: -abs(t.score))[:n]

    def to_dict(self) -> dict[str, Any]:
        """The ``saliency`` section of ``cai explain --json``."""
        return {
            "schema_version": SCHEMA_VERSION,
            "method": "gradient x input on the input embeddings, both orders, toward the first response",
            "judge": self.judge,
            "margins": [vars(m) for m in self.margins],
            "tokens": [vars(t) for t in self.tokens],
            "sentences": [vars(s) for s in self.sentences],
            "rank_correlation": self.rank_correlation,
        }


# ------------------------------------------------------------------ the judge


def saliency_judge(judge: PairJudge) -> tuple[Judge, HFBackend]:
    """The judge and its transformers backend, when ``judge`` can be differentiated.

    Raises:
        ExplainError: A panel, a preference model, a judge on a server or scripted backend, or chain of thought.
    """
    backend = getattr(judge, "backend", None)
    hf = sys.modules.get("engine.backends.hf")  # not imported: no judge can be an HFBackend
    if not isinstance(judge, Judge) or hf is None or not isinstance(backend, hf.HFBackend):
        raise ExplainError(
            f"--saliency needs the gradient of one judge on a local transformers model, and {judge.model} is "
            "not that (a panel, a preference model, a server or the scripted backend); give one "
            "--judge-model PATH of a local model, or leave --saliency out (occlusion works with every judge)"
        )
    if judge.settings.cot:
        raise ExplainError(
            "--saliency reads the judge's direct answer, and this judge thinks aloud first (chain of thought); "
            "leave --saliency out"
        )
    return judge, backend


# ------------------------------------------------------------------ the gradient


def _option_logprob(backend: HFBackend, embeds: torch.Tensor, option: Sequence[int]) -> torch.Tensor:
    """log P(option | prompt) with the prompt given as embeddings ``(tokens, hidden)``; differentiable."""
    import torch

    table = backend.model.get_input_embeddings()
    device = embeds.device
    if not option:
        return embeds.sum() * 0.0
    fed = torch.tensor(list(option[:-1]), dtype=torch.long, device=device)
    rows = torch.cat([embeds, table(fed).detach().to(embeds.dtype)], dim=0).unsqueeze(0)
    mask = torch.ones(rows.shape[:2], dtype=torch.long, device=device)
    out = backend.model(inputs_embeds=rows, attention_mask=mask, use_cache=False)
    logits = out.logits[0, -len(option) :].float()  # the positions that predict the option's tokens
    picked = torch.log_softmax(logits, dim=-1).gather(-1, torch.tensor(list(option), device=device).unsqueeze(-1))
    return picked.sum()


def margin_at(backend: HFBackend, embeds: torch.Tensor, options: Sequence[Sequence[int]]) -> torch.Tensor:
    """``log P(options[0]) - log P(options[1])`` given the prompt's input embeddings (differentiable)."""
    return _option_logprob(backend, embeds, options[0]) - _option_logprob(backend, embeds, options[1])


def prompt_embeddings(backend: HFBackend, ids: Sequence[int]) -> torch.Tensor:
    """The input embeddings of a prompt's token ids, ``(tokens, hidden)``, detached from the model."""
    import torch

    table = backend.model.get_input_embeddings()
    with torch.no_grad():
        found: torch.Tensor = table(torch.tensor(list(ids), dtype=torch.long, device=backend.device))
    return found.detach()


def embedding_gradient(
    backend: HFBackend, ids: Sequence[int], options: Sequence[Sequence[int]]
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """The margin of :func:`margin_at`, the prompt's embeddings and the margin's gradient with respect to them.

    Each option runs its own forward and backward pass (one graph at a time), and only the embeddings
    get a gradient: the model's parameters are left without one.
    """
    import torch

    embeds = prompt_embeddings(backend, ids).requires_grad_(True)
    total = 0.0
    grad = torch.zeros_like(embeds, dtype=torch.float32)
    with torch.enable_grad():
        for option, sign in zip(options[:2], (1.0, -1.0), strict=True):
            value = _option_logprob(backend, embeds, option)
            if value.requires_grad:
                (found,) = torch.autograd.grad(value, embeds)
                grad += sign * found.float()
            total += sign * float(value.detach())
    return total, embeds.detach(), grad


def token_saliency(
    backend: HFBackend, ids: Sequence[int], options: Sequence[Sequence[int]]
) -> tuple[float, list[float]]:
    """The margin and each prompt token's gradient x input score (summed over the hidden dimension)."""
    margin, embeds, grad = embedding_gradient(backend, ids, options)
    return margin, (grad * embeds.float()).sum(-1).cpu().tolist()


# ------------------------------------------------------------------ tokens back to characters


def _tiles(offsets: Sequence[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """Each token's characters: from the previous token's end to its own (a token inside the previous one's
    characters, as the pieces of one multi-byte character are, gets none of its own; the last reaches ``length``)."""
    out: list[tuple[int, int]] = []
    done = 0
    for n, (_, end) in enumerate(offsets):
        end = length if n == len(offsets) - 1 else max(end, done)
        out.append((done, end))
        done = end
    return out


def _boundaries(original: str, shown: str) -> list[int]:
    """For each position ``j`` of ``shown`` (``0..len(shown)``): how many characters of ``original`` its
    first ``j`` characters hold (``shown`` is ``original`` with characters inserted, as :func:`neutralise` does)."""
    out = [0]
    i = 0
    for char in shown:
        if i < len(original) and original[i] == char:
            i += 1
        out.append(i)
    return out


def _locate(rendered: str, shown_a: str, shown_b: str) -> tuple[int, int]:
    """Where the quoted responses start in the rendered prompt: the last ``shown_b``, the last ``shown_a`` before it.

    Raises:
        ExplainError: The template does not quote the responses as they are (a custom one that alters them).
    """
    b = rendered.rfind(shown_b)
    a = rendered.rfind(shown_a, 0, b if b >= 0 else 0) if shown_a else -1
    if a < 0 or b < 0 or a + len(shown_a) > b:
        raise ExplainError(
            "--saliency cannot find the two responses in the judge's rendered prompt (does the constitution's "
            "comparison template alter them?); leave --saliency out"
        )
    return a, b


def _character_scores(
    backend: HFBackend, rendered: str, first_as_a: bool, texts: dict[Side, str]
) -> tuple[float, dict[Side, list[float]], dict[Side, list[tuple[int, int]]]]:
    """One prompt's margin, per-character scores of each response (toward the first) and its token tiles."""
    encoded = backend.tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    if ids != backend.encode([rendered])[0]:  # pragma: no cover - a tokenizer whose two paths disagree
        raise ExplainError(f"{backend.name}: the tokenizer's offsets do not match its tokens; leave --saliency out")
    options = backend.option_ids(rendered, ids, OPTIONS)
    margin, scores = token_saliency(backend, ids, options)
    sign = 1.0 if first_as_a else -1.0
    tiles = _tiles([tuple(o) for o in encoded["offset_mapping"]], len(rendered))
    density = [0.0] * len(rendered)
    last = (0, 0)
    for (start, end), score in zip(tiles, scores, strict=True):
        if end > start:
            last = (start, end)
        for c in range(*last):  # a token with no characters of its own counts for the one before it
            density[c] += sign * score / (last[1] - last[0])
    order: tuple[Side, Side] = ("first", "second") if first_as_a else ("second", "first")
    shown = {side: neutralise(texts[side]) for side in order}
    starts = dict(zip(order, _locate(rendered, shown[order[0]], shown[order[1]]), strict=True))
    chars: dict[Side, list[float]] = {}
    spans: dict[Side, list[tuple[int, int]]] = {}
    for side in order:
        text, at = texts[side], starts[side]
        bounds = _boundaries(text, shown[side])
        chars[side] = [0.0] * len(text)
        for j in range(len(shown[side])):
            chars[side][max(bounds[j + 1] - 1, 0)] += density[at + j]
        spans[side] = []
        for start, end in tiles:
            lo, hi = max(start - at, 0), min(end - at, len(shown[side]))
            if lo < hi and bounds[lo] < bounds[hi]:
                spans[side].append((bounds[lo], bounds[hi]))
    return margin, chars, spans


# ------------------------------------------------------------------ the whole pair


def rank_correlation(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rho (average ranks for ties); None with fewer than 2 values or no spread in either."""
    if len(xs) != len(ys) or len(xs) < 2:
        return None

    def ranks(values: Sequence[float]) -> list[float]:
        order = sorted(range(len(values)), key=lambda i: values[i])
        out = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return float(sxy / (sxx * syy) ** 0.5)


def saliency(
    judge: PairJudge,
    pair: Pair,
    *,
    names: tuple[str, str] = ("first", "second"),
    occlusion: Attribution | None = None,
) -> Saliency:
    """Gradient x input saliency of the judge's decision on ``pair``, both orders, every principle.

    Args:
        judge: A language-model judge on a local transformers model, without chain of thought.
        pair: The pair; its responses must each hold text.
        names: What to call the first and second response.
        occlusion: The occlusion attribution of the same pair, for :func:`rank_correlation` (not computed
            when it found no signal).

    Raises:
        ExplainError: A judge that cannot be differentiated, an empty response, or a prompt whose responses
            cannot be found.
    """
    found_judge, backend = saliency_judge(judge)
    texts: dict[Side, str] = {"first": pair.first, "second": pair.second}
    for side, name in zip(SIDES, names, strict=True):
        if not texts[side].strip():
            raise ExplainError(f"the {name} response is empty: there is nothing to explain")
    if not pair.principles:
        raise ExplainError("--saliency needs a principle to judge under; give --principle ID")
    totals: dict[Side, list[float]] = {side: [0.0] * len(text) for side, text in texts.items()}
    tokens: dict[Side, list[tuple[int, int]]] = {}
    margins: list[Margin] = []
    for principle in pair.principles:
        for first_as_a in (True, False):
            a, b = (pair.first, pair.second) if first_as_a else (pair.second, pair.first)
            rendered = backend.render(found_judge.prompt(principle, pair.conversation, a, b))
            margin, chars, spans = _character_scores(backend, rendered, first_as_a, texts)
            margins.append(Margin(principle.id, "A" if first_as_a else "B", margin))
            for side in texts:
                totals[side] = [t + c for t, c in zip(totals[side], chars[side], strict=True)]
            if not tokens:
                tokens = spans
    count = len(margins)
    per_char = {side: [v / count for v in values] for side, values in totals.items()}
    token_scores = [
        TokenScore(side, start, end, texts[side][start:end], sum(per_char[side][start:end]))
        for side in SIDES
        for start, end in tokens[side]
    ]
    pushes = {(s.side, s.index): s.push for s in occlusion.sentences} if occlusion is not None else {}
    sentences = [
        SentenceScore(side, i, s.start, s.end, sum(per_char[side][s.start : s.end]), pushes.get((side, i)))
        for side in SIDES
        for i, s in enumerate(split_sentences(texts[side]))
    ]
    known = [s for s in sentences if s.push is not None] if occlusion is not None and occlusion.signal else []
    rho = rank_correlation([s.score for s in known], [s.push or 0.0 for s in known])
    return Saliency(found_judge.model, names[0], names[1], margins, token_scores, sentences, rho)


# ------------------------------------------------------------------ the terminal


def render(s: Saliency) -> str:
    """The terminal view: each order's margin, the top tokens of each response, the correlation."""
    lines = [
        "",
        click.style("token saliency", bold=True) + " (gradient x input of log P(A) - log P(B), both orders; "
        f"+ toward {s.first_name}, - toward {s.second_name})",
    ]
    for m in s.margins:
        lines.append(f"  margin with {s.first_name} as ({m.first_as}) under {m.principle}: {m.margin:+.3f}")
    for side, name in zip(SIDES, (s.first_name, s.second_name), strict=True):
        lines.append(f"top tokens of {name}:")
        for t in s.top(side):
            colour = "green" if t.score > 0 else "red"
            lines.append("  " + click.style(f"{t.score:+.3e}", fg=colour) + f"  {t.text!r}")
    if s.rank_correlation is None:
        why = "no occlusion signal, fewer than 2 sentences, or no spread"
        lines.append(f"rank correlation with occlusion: undefined ({why})")
    else:
        lines.append(
            f"rank correlation of sentence sums with occlusion pushes (Spearman): {s.rank_correlation:+.2f} "
            "(+1: the gradient ranks sentences as removing them does; near 0: trust occlusion's checked ranking)"
        )
    return "\n".join(lines)


__all__ = [
    "Margin",
    "Saliency",
    "SentenceScore",
    "TokenScore",
    "embedding_gradient",
    "margin_at",
    "prompt_embeddings",
    "rank_correlation",
    "render",
    "saliency",
    "saliency_judge",
    "token_saliency",
]
