"""``mirrorppr convert-weights``: the official MirrorPPR release → this project's weights folder.

Every tensor of the release's ``mae`` / ``rformer`` / ``connector`` / ``lora`` files is checked
against our modules (names and shapes) and written once in the layout ``--weights`` reads
fastest (see :mod:`mirrorppr_cli.model.official`). ``retouch --weights`` also reads the release
folder directly; converting only saves the check and renaming at every start.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..errors import MirrorError, OutputError
from ..extras import extra_imports, require_extra


def convert_weights_command(
    source: Annotated[Path, typer.Argument(
        help="The release folder (holding mirrorppr_face/ and qwen_image_edit/) or its "
        "mirrorppr_face/ folder.", metavar="DIR")],
    out_dir: Annotated[Path, typer.Option("--out", help="The weights folder to write.", metavar="DIR")],
    dit: Annotated[str | None, typer.Option(
        "--dit", help="Qwen-Image-Edit-2511 folder, if not qwen_image_edit/ beside it.", metavar="DIR|ID")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a non-empty --out.", metavar="")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.", metavar="")] = False,
) -> None:
    """Check the official release tensor by tensor and write it in this project's layout."""
    from .console import fail, out, plain

    what = "mirrorppr convert-weights"
    try:
        with extra_imports("neural", what):
            require_extra("neural", what)
            from ..model.official import convert_release
        if out_dir.exists() and any(out_dir.iterdir()) and not force:
            raise OutputError(f"{out_dir} is not empty; add --force to write into it")
        with extra_imports("neural", what):
            summary = convert_release(source, out_dir, dit=dit)
    except MirrorError as error:
        raise fail(error) from None
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    parts = ", ".join(f"{k} {v['tensors']} tensors" for k, v in summary["parts"].items())
    out.print(f"converted ({parts}) → {plain(summary['out'])}; DiT: {plain(summary['dit'])}",
              highlight=False, soft_wrap=True)
