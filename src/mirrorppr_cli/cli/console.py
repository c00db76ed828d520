"""What the command line prints, and how: the two consoles, one-line errors, progress, status lines, and the
--verbose switch. Every verb module prints through these."""

from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import MirrorError

out = Console()

err = Console(stderr=True)

def plain(text: object) -> str:
    """``text`` with Rich markup escaped: messages and file names are printed as they are
    (``pip install 'mirrorppr[metrics]'`` keeps its brackets, so does ``photo[final].jpg``)."""
    return escape(str(text))

def print_error(error: object) -> None:
    """``error: MESSAGE`` on stderr, the message verbatim."""
    err.print(f"[bold red]error:[/] {plain(error)}", highlight=False, soft_wrap=True)

def fail(error: MirrorError) -> typer.Exit:
    print_error(error)
    return typer.Exit(error.exit_code)

#: Set by ``--verbose`` (or $MIRRORPPR_VERBOSE=1): libraries' own warnings and notices reach
#: stderr, and an item that fails unexpectedly has its traceback printed.
VERBOSE_ENV = "MIRRORPPR_VERBOSE"

_verbose = False

VerboseOption = Annotated[bool, typer.Option(
    "--verbose", help="Also show the libraries' own warnings and notices (Pillow, libjpeg, "
    "TFLite, absl) and the traceback of an unexpected failure.", metavar="")]

def verbose_requested() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0") or "--verbose" in sys.argv[1:]

def set_verbose(flag: bool) -> None:
    """``--verbose``: undo :func:`quiet_libraries`."""
    global _verbose
    if not flag:
        return
    from ..native_stderr import give_back_to_native

    _verbose = True
    give_back_to_native()
    if not sys.warnoptions:
        warnings.resetwarnings()
        warnings.simplefilter("default")
    import logging

    logging.basicConfig(level=logging.WARNING, force=True)

def status_printer(quiet: bool):
    """A status-line printer on stderr (silent with --json)."""
    def show(message: str) -> None:
        if not quiet:
            err.print(f"[dim]{plain(message)}[/]", highlight=False, soft_wrap=True)
    return show

#: Exit code when every output was written but some were flagged for review (artefacts).
REVIEW_EXIT_CODE = 7

@contextmanager
def stage_line(what: str, *, quiet: bool):
    """A progress line on stderr for one long step: a spinner naming its current stage on a
    terminal, one plain line otherwise (logs); nothing with ``quiet`` (--json). Yields the
    stage callback."""
    if quiet:
        yield lambda _: None
        return
    if not err.is_terminal:
        err.print(f"measuring {what} …", highlight=False, soft_wrap=True, markup=False)
        yield lambda _: None
        return
    with err.status(f"{plain(what)}: …") as spinner:
        yield lambda stage: spinner.update(f"{plain(what)}: {plain(stage)} …")

def progress_bar(*, disable: bool) -> Progress:
    """A transient progress bar on stderr (hidden for one item or when not a terminal)."""
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=True, disable=disable or not err.is_terminal,
    )


def is_verbose() -> bool:
    """Whether --verbose (or $MIRRORPPR_VERBOSE=1) asked for libraries' output and tracebacks."""
    return _verbose
