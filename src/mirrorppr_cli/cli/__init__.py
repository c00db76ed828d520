"""The ``mirrorppr`` command line: parse arguments, call the library, print results.

One module per verb family (:mod:`.retouch`: retouch, apply, explain; :mod:`.bench`;
:mod:`.dataset`; :mod:`.info`: ops, backends; :mod:`.train`; :mod:`.convert`;
:mod:`.review`), all printing through :mod:`.console`; this module only makes the app and
registers them. Exit codes are those of :mod:`mirrorppr_cli.errors` (0 ok, 1 some batch items
failed, 2 usage, 3 bad input, 4 output exists or unwritable, 5 missing weights or extra,
6 out of memory, 7 written but flagged for review).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .. import __version__
from ..errors import MirrorError
from ..native_stderr import quiet_libraries
from .bench import bench_command
from .console import VerboseOption, out, print_error, set_verbose, verbose_requested
from .convert import convert_weights_command
from .dataset import build_dataset_command
from .info import backends_command, ops_command
from .retouch import apply_command, explain_command, retouch_command
from .review import review_command
from .train import train_app

app = typer.Typer(
    name="mirrorppr",
    help="Exemplar-based structural portrait retouching.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_READABLE_TYPES = {"<int>": "N", "<float>": "NUMBER", "<str>": "TEXT", "<path>": "PATH",
                   "<list[str]>": "TEXT", "<list[int]>": "N", "<int range>": "N",
                   "<float range>": "NUMBER"}

def readable_metavars_in_help() -> None:
    """Show words a person reads (FILE, N, BEFORE AFTER) in ``--help``, not Python types.

    Typer 0.29 prints an option's or argument's annotation (``<list[str]>``, ``<bool>`` for
    every flag) unless a metavar is set, and prints an argument's type even then; its API
    offers no hook for this. Flags get no metavar, the remaining bare types a word
    (``_READABLE_TYPES``); tests/test_cli.py fails if a Typer update changes the methods.
    """
    from typer.core import TyperArgument, TyperOption

    option_type = TyperOption.display_type_rich

    def option_display(self, ctx):
        if self.is_flag and self.metavar is None:
            return ""
        shown = option_type(self, ctx)
        return _READABLE_TYPES.get(shown, shown) if self.metavar is None else shown

    def argument_display(self, ctx):
        return ""  # the argument's name column shows its metavar already

    TyperOption.display_type_rich = option_display
    TyperArgument.display_type_rich = argument_display

readable_metavars_in_help()

def _version(value: bool) -> None:
    if value:
        out.print(f"mirrorppr {__version__}")
        raise typer.Exit(0)

@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.", metavar="")
    ] = False,
    verbose: VerboseOption = False,
) -> None:
    """Exemplar-based structural portrait retouching."""
    set_verbose(verbose)


app.command("ops")(ops_command)
app.command("backends")(backends_command)
app.command("apply")(apply_command)
app.command("retouch")(retouch_command)
app.command("explain")(explain_command)
app.command("build-dataset")(build_dataset_command)
app.command("bench")(bench_command)
app.add_typer(train_app, name="train")
app.command("convert-weights")(convert_weights_command)
app.command("review")(review_command)


def main() -> None:
    """Console-script entry point."""
    from ..memory import keep_freed_memory
    from ..threads import single_threaded_blas

    single_threaded_blas()  # before any command imports numpy

    keep_freed_memory()  # a process that ends soon: reuse freed memory rather than re-fault it
    if not verbose_requested():
        quiet_libraries()
    from ..extras import extra_of, missing_extra

    try:
        app()
    except MirrorError as error:  # errors raised outside a command's own handling
        print_error(error)
        sys.exit(error.exit_code)
    except ImportError as error:  # an optional extra a code path needs and did not check for
        extra = extra_of(error)
        if extra is None:
            raise  # not an extra's module: a bug, keep its traceback
        missing = missing_extra(extra, "this command", error.name.partition(".")[0])
        print_error(missing)
        sys.exit(missing.exit_code)
