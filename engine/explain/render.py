"""An attribution in the terminal: each response with its sentences coloured by push, the ranking, the check."""

from __future__ import annotations

import click

from engine.explain.occlusion import NO_SIGNAL, Attribution, Sentence

TOWARD = "green"
"""Colour of a sentence that pushed toward the first (chosen) response."""
AGAINST = "red"
"""Colour of a sentence that pushed toward the second response."""


def _styled(s: Sentence) -> str:
    body = s.text.rstrip()
    tail = s.text[len(body) :]
    if s.push is None:
        return click.style(body, dim=True) + click.style(" [unread]", dim=True) + tail
    if abs(s.push) < NO_SIGNAL:
        return body + click.style(f" [{s.push:+.2f}]", dim=True) + tail
    colour = TOWARD if s.push > 0 else AGAINST
    return click.style(body, fg=colour) + click.style(f" [{s.push:+.2f}]", fg=colour, bold=True) + tail


def render(a: Attribution, note: str = "") -> str:
    """The attribution as text with ANSI colours (``click.echo`` drops them where the output is no terminal)."""
    lines = [
        f"judge: {a.judge}" + (f"  principles: {', '.join(a.principles)}" if a.principles else ""),
        f"P({a.first_name} better) = {a.p_first:.3f}  (log-odds {a.log_odds:+.3f}); {a.variants} variants scored",
        "push of a sentence = log-odds of the pair minus log-odds without it; "
        + click.style(f"+ toward {a.first_name}", fg=TOWARD)
        + ", "
        + click.style(f"- toward {a.second_name}", fg=AGAINST),
    ]
    if note:
        lines.append(note)
    for side, name in (("first", a.first_name), ("second", a.second_name)):
        lines += ["", click.style(name, bold=True), "".join(_styled(s) for s in a.sentences if s.side == side)]
    lines.append("")
    if a.signal:
        winner = a.first_name if a.winner == "first" else a.second_name
        lines.append(f"sentences that pushed hardest toward the winner ({winner}):")
        names = {"first": a.first_name, "second": a.second_name}
        for s in a.ranked()[: a.top]:
            short = s.text.strip()
            short = short if len(short) <= 70 else short[:69] + "…"
            lines.append(f"  {s.rank}. {s.push:+.3f}  {names[s.side]} #{s.index + 1}: {short}")
        lines.append("deletion curve: how far the winner's log-odds fell with k sentences removed")
        for k, top, rand in zip(a.deletion_k, a.deletion_top, a.deletion_random, strict=True):
            lines.append(f"  k={k}  top-k {top:+.3f}  random-k {rand:+.3f}")
    verdict = a.verdict
    if a.faithful is False:
        verdict = click.style(verdict, fg=AGAINST, bold=True)
    lines.append(verdict)
    return "\n".join(lines)
