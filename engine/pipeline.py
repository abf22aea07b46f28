"""Pipelined generation: each row takes its next step as soon as its last request is back.

Against a server (a backend whose :attr:`~engine.backends.base.Backend.serves_concurrently`
is True) the step-by-step loop of :func:`engine.critique.run_loop` leaves the
server's slots idle: every step of a chunk waits for its slowest reply before
the next step starts. :func:`run_pipelined` instead keeps ``in_flight``
requests out at all times: a row whose first answer is back asks for its
critique at once, then its revision, then the next round's critique, and a row
that finishes frees its slot for the next prompt of the stream. Each row has
at most one request out, so at most ``in_flight`` rows are under way.

What a row is asked and how replies are read is :class:`engine.critique.Row`,
the same code the step-by-step loop runs, and every request carries the run's
seed, as the step-by-step loop's calls do: with a backend that answers each
request on its own (the ``openai:`` backend with a server that honours the
seed, the ``scripted`` backend) both ways give the same trajectories. Rows come
out in the order they finish, not the order of the prompts.

Requests run on ``in_flight`` daemon threads, each calling the backend's
``generate`` with one chat (so Ctrl-C returns at once even while a server
hangs). The first request that fails ends the generator with its exception;
requests still out are abandoned and their replies dropped, and rows already
yielded are complete. A row's timing of a step is that row's own request time.

Best-of-n is not pipelined: :func:`generation_path` keeps such runs on the
step-by-step path (its samples are scored together by the preference model).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from constitution import Constitution, Principle
from engine.backends.base import Backend, Chat, SamplingParams
from engine.critique import LoopSettings, Row, loop_models
from engine.errors import USAGE, UserError
from engine.records import ConstitutionRef, Trajectory
from engine.sources import PromptItem

Generation = Literal["batched", "pipelined"]
"""How the loop runs: one batched call per step of a chunk, or rows pipelined through a server."""
PipelineChoice = Literal["auto", "on", "off"]
"""``--pipeline``: by the backends' capability, always, or never."""


def generation_path(choice: PipelineChoice, policy: Backend, critic: Backend, best_of: int) -> Generation:
    """The path a run takes: pipelined when both models serve requests concurrently (``auto``), unless best-of.

    Raises:
        UserError: ``on`` with a model that runs in this process, or with best-of-n.
    """
    serving = policy.serves_concurrently and critic.serves_concurrently
    if choice == "on":
        if not serving:
            local = policy.name if not policy.serves_concurrently else critic.name
            raise UserError(
                f"--pipeline on: {local} runs in this process, one batched call per step; pipelining is for "
                "models behind a server (openai:NAME). Use --pipeline auto or off",
                exit_code=USAGE,
            )
        if best_of > 1:
            raise UserError(
                "--pipeline on: --best-of is not pipelined (its samples are scored together); "
                "use --pipeline auto or off",
                exit_code=USAGE,
            )
        return "pipelined"
    return "pipelined" if choice == "auto" and serving and best_of == 1 else "batched"


@dataclass
class _Step:
    """One request of one row: what to ask, whom, and what to do with the reply."""

    row: Row
    name: str
    """The timing's name: ``initial``, ``critique_N`` or ``revision_N``."""
    backend: Backend
    chat: Chat
    number: int = 0
    """The round (0: the first answer)."""
    principle: Principle | None = None
    critique: str | None = None
    """Set on a revision step: the critique it answers."""


_Done = tuple[_Step, str, float, BaseException | None]


class _Workers:
    """``size`` daemon threads that send one request each at a time."""

    def __init__(self, size: int, params: SamplingParams) -> None:
        self.tasks: queue.Queue[_Step | None] = queue.Queue()
        self.done: queue.Queue[_Done] = queue.Queue()
        self.params = params
        self.size = size
        for _ in range(size):
            threading.Thread(target=self._work, name="cai-pipeline", daemon=True).start()

    def _work(self) -> None:
        while (step := self.tasks.get()) is not None:
            start = time.perf_counter()
            try:
                text = step.backend.generate([step.chat], self.params)[0].text.strip()
            except BaseException as exc:  # handed to the caller, which raises it
                self.done.put((step, "", time.perf_counter() - start, exc))
            else:
                self.done.put((step, text, time.perf_counter() - start, None))

    def close(self) -> None:
        """Let the threads end once their request (if any) is back; nothing waits for them."""
        for _ in range(self.size):
            self.tasks.put(None)


def run_pipelined(
    items: Iterable[PromptItem],
    constitution: Constitution,
    policy: Backend,
    critic: Backend,
    settings: LoopSettings,
    *,
    in_flight: int,
) -> Iterator[list[Trajectory]]:
    """Take every prompt through the loop with ``in_flight`` requests out at a time; yield rows as they finish.

    Each yield is the rows that finished since the last one (one or more;
    several when replies came back while the caller held the last batch),
    after every reply back has had its next request sent. Prompts are read
    from ``items`` only as slots free up. While the caller holds a batch
    (writing it, labelling a chunk) no new request is sent. A failed request
    ends the generator after the rows finished with it are yielded.

    Args:
        items: The prompts.
        constitution: The rules whose principles the rounds sample.
        policy: Answers and revises.
        critic: Critiques.
        settings: Rounds and sampling (``best_of`` must be 1).
        in_flight: Most requests out at once (``--batch-size``).

    Raises:
        ValueError: ``in_flight`` below 1, or best-of-n.
        BackendError: The first request that failed (whatever the backend raised).
    """
    if in_flight < 1:
        raise ValueError(f"in_flight must be at least 1, not {in_flight}")
    if settings.best_of > 1:
        raise ValueError("best-of-n is not pipelined; run it with engine.critique.run_loop")
    params = settings.sampling.model_copy(update={"seed": settings.seed})
    models = loop_models(policy, critic)
    reference = ConstitutionRef.of(constitution)
    prompts = iter(items)
    workers = _Workers(in_flight, params)
    out = 0
    more = True

    def fill() -> None:
        """Start new prompts until ``in_flight`` requests are out or the prompts run out."""
        nonlocal out, more
        while more and out < in_flight:
            item = next(prompts, None)
            if item is None:
                more = False
            else:
                workers.tasks.put(_Step(Row(item), "initial", policy, item.messages))
                out += 1

    try:
        fill()
        while out:
            replies = [workers.done.get()]
            while True:  # everything back by now is moved on before the caller writes anything
                try:
                    replies.append(workers.done.get_nowait())
                except queue.Empty:
                    break
            finished: list[Row] = []
            failed: BaseException | None = None
            for step, text, seconds, error in replies:
                out -= 1
                if error is not None:
                    failed = failed or error
                    continue
                step.row.took(step.name, seconds)
                following = _next_step(step, text, constitution, policy, critic, settings)
                if following is None:
                    finished.append(step.row)
                elif failed is None:
                    workers.tasks.put(following)
                    out += 1
            if failed is None:
                fill()  # freed slots take new prompts before the finished rows are handed over
            if finished:
                yield [row.trajectory(reference, models, settings) for row in finished]
            if failed is not None:
                raise failed
    finally:
        workers.close()


def each_written(
    batches: Iterable[list[Trajectory]],
    write: Callable[[list[Trajectory]], None],
    count: Callable[[int], object] | None,
) -> Iterator[Trajectory]:
    """Pass each row on once ``write`` has its batch (``cai generate``: a kill loses only the rows in flight)."""
    for batch in batches:
        write(batch)
        if count is not None:
            count(len(batch))
        yield from batch


def _next_step(
    step: _Step, reply: str, constitution: Constitution, policy: Backend, critic: Backend, settings: LoopSettings
) -> _Step | None:
    """Record ``reply`` on the step's row; the row's next request, or None when the row is finished."""
    row = step.row
    if step.principle is not None and step.critique is None:  # a critique came back
        critique = row.critiqued(step.principle, reply, settings.stop_early)
        if critique is None:
            return None
        chat = row.revision_request(step.principle, critique, constitution)
        return _Step(row, f"revision_{step.number}", policy, chat, step.number, step.principle, critique)
    if step.principle is None:
        row.answered(reply)
    else:
        assert step.critique is not None
        row.revised(step.principle, step.critique, reply)
    number = step.number + 1
    if number > settings.revisions:
        return None
    principle, chat = row.critique_request(constitution, settings.seed, number)
    return _Step(row, f"critique_{number}", critic, chat, number, principle)
