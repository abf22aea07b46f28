"""``cai explain --saliency``: gradient x input token saliency of a judgment on a local transformers judge."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from constitution import load
from engine.backends.base import Chat, ScoreRequest
from engine.backends.scripted import ScriptedBackend
from engine.cli import cli
from engine.explain import explain, split_sentences
from engine.explain.errors import ExplainError
from engine.explain.saliency import (
    embedding_gradient,
    margin_at,
    rank_correlation,
    saliency,
)
from engine.judge.pairwise import Judge, Pair
from engine.judge.verdicts import OPTIONS
from tests.models import tiny_model_dir

RULES = load("default")
PRINCIPLES = (RULES.principles[0],)
CHAT: Chat = [{"role": "user", "content": "What do I do about a deep cut?"}]
FIRST = "Press on the wound. Apply a tourniquet if it will not stop. Call for help."
SECOND = "Cuts heal. Wait a while <<<here>>>. It is fine."  # the quote filter breaks the <<< runs


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def judge(tiny_dir: Path) -> Judge:
    from engine.backends.hf import HFBackend

    return Judge(HFBackend(str(tiny_dir), dtype="float32", device="cpu"))


def test_every_response_token_has_a_score_and_the_tokens_tile_each_response(judge: Judge) -> None:
    pair = Pair(CHAT, FIRST, SECOND, PRINCIPLES)
    s = saliency(judge, pair, occlusion=explain(judge, pair))
    assert [m.first_as for m in s.margins] == ["A", "B"]  # both orders were read
    for side, text in (("first", FIRST), ("second", SECOND)):
        tokens = [t for t in s.tokens if t.side == side]
        assert tokens and "".join(t.text for t in tokens) == text  # spans inside the response, covering it
        assert all(0 <= t.start < t.end <= len(text) and text[t.start : t.end] == t.text for t in tokens)
        assert all(math.isfinite(t.score) for t in tokens) and any(t.score != 0 for t in tokens)
        sentences = [x for x in s.sentences if x.side == side]
        assert len(sentences) == len(split_sentences(text))
        assert all(math.isfinite(x.score) and x.push is not None for x in sentences)
        # Both are sums over the same characters: the sentences' total is the tokens' total.
        assert sum(x.score for x in sentences) == pytest.approx(sum(t.score for t in tokens), abs=1e-6)
    assert s.rank_correlation is None or -1.0 <= s.rank_correlation <= 1.0
    data = s.to_dict()
    assert {"tokens", "sentences", "margins", "rank_correlation"} <= set(data)


def test_the_two_orders_are_combined_toward_the_first_response(judge: Judge) -> None:
    # Swapping the pair swaps the prompts of the two orders and flips their orientation: every character's
    # averaged score changes sign, so the token scores of a response are the negatives of the swapped ones.
    s = saliency(judge, Pair(CHAT, FIRST, SECOND, PRINCIPLES))
    swapped = saliency(judge, Pair(CHAT, SECOND, FIRST, PRINCIPLES))
    mine = {(t.side, t.start): t.score for t in s.tokens}
    theirs = {("first" if t.side == "second" else "second", t.start): t.score for t in swapped.tokens}
    common = set(mine) & set(theirs)
    assert len(common) > 10
    for key in common:
        assert mine[key] == pytest.approx(-theirs[key], abs=1e-5)
    # The margins are the judge's own scores of the two prompts.
    backend = judge.backend
    for m, (a, b) in zip(s.margins, ((FIRST, SECOND), (SECOND, FIRST)), strict=True):
        (scores,) = backend.score([ScoreRequest(judge.prompt(PRINCIPLES[0], CHAT, a, b), OPTIONS)])
        assert m.margin == pytest.approx(scores[0] - scores[1], abs=1e-4)


def test_the_gradient_matches_a_finite_difference(judge: Judge) -> None:
    import torch

    from engine.backends.hf import HFBackend

    backend = judge.backend
    assert isinstance(backend, HFBackend)
    rendered = backend.render(judge.prompt(PRINCIPLES[0], CHAT, FIRST, SECOND))
    ids = backend.encode([rendered])[0]
    options = backend.option_ids(rendered, ids, OPTIONS)
    margin, embeds, grad = embedding_gradient(backend, ids, options)
    # The token the margin is most sensitive to, of those with an embedding (the padding token's is zero,
    # where the first layer's RMS norm is singular and no finite difference is smooth).
    position = int((grad.norm(dim=-1) * (embeds.norm(dim=-1) > 0)).argmax())
    torch.manual_seed(0)
    direction = torch.zeros_like(embeds)
    direction[position] = torch.randn(embeds.shape[-1])
    direction[position] += grad[position] / grad[position].norm()  # so the derivative is not near zero
    direction /= direction.norm()
    h = 3e-3  # small against the embedding's norm (~0.15), large against fp32 rounding of the margin
    with torch.no_grad():
        up = float(margin_at(backend, embeds + h * direction, options))
        down = float(margin_at(backend, embeds - h * direction, options))
        here = float(margin_at(backend, embeds, options))
    numeric = (up - down) / (2 * h)
    analytic = float((grad * direction).sum())
    assert here == pytest.approx(margin, abs=1e-5)
    assert abs(analytic) > 1e-3
    assert numeric == pytest.approx(analytic, rel=0.05, abs=1e-3)


def test_rank_correlation() -> None:
    assert rank_correlation([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert rank_correlation([1, 1, 1], [1, 2, 3]) is None
    assert rank_correlation([1.0], [2.0]) is None


def test_a_scripted_judge_is_refused() -> None:
    with pytest.raises(ExplainError, match="local transformers model"):
        saliency(Judge(ScriptedBackend()), Pair(CHAT, FIRST, SECOND, PRINCIPLES))
    args = ["explain", "--prompt", "Hi?", "--first", "One. Two.", "--second", "Three.", "--judge-model", "scripted"]
    result = CliRunner().invoke(cli, [*args, "--saliency"])
    assert result.exit_code == 1, result.output
    assert "--saliency needs the gradient" in result.output and "Traceback" not in result.output


def test_cli_writes_a_saliency_section(tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "why.json"
    args = ["explain", "--prompt", "Hi?", "--first", "One. Two.", "--second", "Three.", "--saliency"]
    args += ["--judge-model", str(tiny_dir), "--device", "cpu", "--dtype", "float32", "--json", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "token saliency" in result.output and "top tokens of first" in result.output
    data = json.loads(out.read_text())["saliency"]
    assert "".join(t["text"] for t in data["tokens"] if t["side"] == "first") == "One. Two."
    assert [s["side"] for s in data["sentences"]] == ["first", "first", "second"]
