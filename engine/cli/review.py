"""``cai review``: people accept, flip or drop a run's AI-labelled pairs in a local web page.

The web app is :mod:`engine.review`; when the server stops, the run's dataset
is rebuilt with the decisions (:mod:`engine.reviewed`).
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("run_dir", metavar="DIR", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback lets other machines in (they still need the token).",
)
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Port (default: a free one).")
@click.option(
    "--token",
    envvar="CAI_REVIEW_TOKEN",
    help="The secret in the page's URL (default: a new random one each start). Env: CAI_REVIEW_TOKEN.",
)
def review(run_dir: Path, host: str, port: int, token: str | None) -> None:
    """Review a run's AI-labelled pairs in a local web page: accept, flip or drop them, add notes.

    Prints the page's URL (it carries a random token; nothing opens by itself)
    and serves until Ctrl-C, SIGTERM or SIGHUP (a closed terminal). The list filters by category, principle, judge
    status, judge margin, disagreement between the judge's two orders,
    unparsed judge output, and review state; a pair's view shows the
    conversation, each critique, each revision as a diff against the version
    before, and the judge's probabilities in both orders. Keys: j/k next and
    previous, a accept, f flip, d drop, u undo, n note.

    Decisions are appended to DIR/reviews.jsonl as you click. When the server
    stops, the dataset is rebuilt with them: dropped pairs are left out,
    flipped ones swapped, and `human_label` says what a person decided (if
    that rebuild never happens, `cai export` and `cai train` do it first).
    `cai judge-eval DIR` then scores the judge against those decisions.
    A --token of your own must be at least 16 URL-safe characters.

    \b
    Example:
        cai review runs/demo
    """
    import contextlib
    import os
    import secrets
    import signal

    import uvicorn

    from engine.cli.output import Interrupted
    from engine.dataset import DATASET_DIR
    from engine.errors import UserError
    from engine.records import REVIEWS
    from engine.review.server import create_app, listen, token_problem
    from engine.reviewed import decisions_pending, rebuild
    from engine.rundir import RunDir, RunDirError

    if token is not None and (problem := token_problem(token)):
        raise click.BadParameter(problem, param_hint="'--token' (or CAI_REVIEW_TOKEN)")
    token = token or secrets.token_urlsafe(18)
    loopback = host in ("127.0.0.1", "localhost", "::1")
    app = create_app(run_dir, token, hosts=("127.0.0.1", "localhost") if loopback else ())
    try:
        RunDir.read_manifest(run_dir)
    except RunDirError as exc:
        click.echo(f"warning: {exc}; decisions are saved, but no dataset can be built with them until then", err=True)
    try:
        sock = listen(host, port)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    caught: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        # SIGTERM (a scheduler, `kill`) and SIGHUP (a closed terminal) stop the server as Ctrl-C does. After
        # it has stopped they are only noted: the rebuild below is not cut short by a second one.
        caught.append(signum)
        server.should_exit = True

    def say(text: str, err: bool = False) -> None:
        try:
            click.echo(text, err=err)
        except OSError:  # the terminal is gone (hung up, or the pipe's reader died): go on without it
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            os.close(quiet)

    # Before the URL is printed: from then on a signal must find the handlers in place.
    before = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else ("127.0.0.1" if host in ("0.0.0.0", "localhost") else host)
        index = app.state.index
        say(f"{len(index.entries)} pairs to review ({index.rows} rows) in {run_dir}")
        say(f"open: http://{shown}:{bound}/?token={token}")
        if not loopback:
            say(f"warning: listening on {host}: whoever reaches this machine with the URL can write", err=True)
        say("Ctrl-C stops the server; the dataset is then rebuilt with your decisions.")
        # uvicorn takes over SIGINT and SIGTERM while it serves, stops gracefully, puts the handlers back
        # and raises the signal it caught again: Ctrl-C as KeyboardInterrupt, SIGTERM into stop().
        with contextlib.suppress(KeyboardInterrupt):
            server.run(sockets=[sock])
        if caught:
            say(f"stopped by {signal.Signals(caught[0]).name}")
        if not (app.state.decided or decisions_pending(run_dir)):
            return
        if not (run_dir / DATASET_DIR).is_dir():
            say(f"{run_dir} has no dataset yet: `cai generate --out {run_dir}` builds it with your decisions")
            return
        kept = (
            f"your decisions are kept in {run_dir / REVIEWS}, and `cai export {run_dir}` or "
            f"`cai train ... --data {run_dir}` applies them first"
        )
        try:
            done = rebuild(run_dir)
        except RunDirError as exc:
            raise UserError(f"the dataset was not rebuilt: {exc} ({kept})") from None
        except KeyboardInterrupt:
            raise Interrupted(f"stopped before the dataset was rebuilt; {kept}") from None
        say(done.summary())
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
