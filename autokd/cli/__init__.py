"""The ``autokd`` command line: one module per command group, shared pieces in ``_common``.

Only this package prints. Every user error surfaces as one line on stderr and exit code 2
(``AutokdError``); Ctrl-C exits 130 and SIGTERM 143 after the library has saved what was
finished; anything unexpected is one line too, with the traceback only under ``--debug``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from autokd.cli import latency, outputs, search, train, worker
from autokd.cli._common import COMMANDS
from autokd.errors import AutokdError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autokd", description="Search student networks and "
                                "distillation recipes for a teacher; report and export them.")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for module in (search, train, outputs, latency, worker):  # one per command group
        module.add_parsers(sub)
    return p


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("fvcore", "iopath"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    import warnings

    import optuna

    # our progress lines carry failure reasons; Optuna's own warnings add tracebacks
    optuna.logging.set_verbosity(logging.INFO if verbose else logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so the running trial is recorded as interrupted."""


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM must not cut cleanup short
    raise _Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (kill, systemd, Kubernetes) like Ctrl-C while a command runs.

    Why: the default action kills the process at once, leaving the running trial RUNNING and a
    temp file behind; as an exception, every ``except KeyboardInterrupt`` cleanup runs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    _setup_logging(args.verbose)
    try:
        with _sigterm_as_interrupt():
            return COMMANDS.get(args.command)(args)
    except AutokdError as exc:
        if args.debug:
            raise
        print(f"autokd: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, _Terminated) else "interrupted"
        print(f"autokd: {what}; everything finished so far is saved", file=sys.stderr)
        return 143 if isinstance(exc, _Terminated) else 130
    except Exception as exc:  # last resort: one line, traceback only with --debug
        if args.debug:
            raise
        print(f"autokd: internal error: {type(exc).__name__}: {exc} (rerun with --debug for "
              "the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
