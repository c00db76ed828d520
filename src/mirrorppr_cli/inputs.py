"""Turning input specs (file, folder, glob) into files, and naming the outputs.

Conventions:

* A *spec* is what the user typed: an existing file, an existing folder
  (its image files, not recursive) or a glob pattern (``*``, ``?``, ``[``).
* Folder and glob results skip hidden files (leading ``.``) and the ``.part``
  temporary files that `mirrorppr_cli.io.write_image` creates.
* Output names are ``<stem><suffix><ext>``; ``ext`` follows the output
  format when one is given, else the source suffix in lower case (a source
  without an image suffix gets its format's, read from its first bytes).
* An output named by the user (``-o``) for one input is a folder when it
  exists as one or ends with a path separator (``-o out/``), else a file
  whose suffix names the format written (``--format``, if given, must agree);
  a name without an image suffix (``x.gif``, ``result``) is refused (exit 2):
  the bytes written always match the name.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

from .errors import InputError, UsageError
from .io import FORMAT_SUFFIX, SUFFIX_FORMAT, normalise_format, sniff_format

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp"}
DEFAULT_SUFFIX = "_retouched"
_GLOB_CHARS = ("*", "?", "[")


def _has_glob(text: str) -> bool:
    """True when ``text`` contains a glob wildcard (``*``, ``?`` or ``[``)."""
    return any(char in text for char in _GLOB_CHARS)


def _is_candidate(path: Path) -> bool:
    """True for a visible regular file with an image suffix.

    Our ``.part`` temporary files are excluded twice over: they are hidden and
    ``.part`` is not an image suffix.
    """
    return (
        not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    )


def _suffix_list() -> str:
    """The accepted suffixes, for messages: ".bmp, .jpeg, ..."."""
    return ", ".join(sorted(IMAGE_SUFFIXES))


def expand_inputs(spec: str | os.PathLike[str]) -> list[Path]:
    """Return the image files named by ``spec``.

    An existing file gives ``[file]`` (whatever its suffix; reading will
    judge it).  A folder gives its image files sorted by name.  A glob gives
    the matching image files sorted by path.  Raises `InputError` when
    nothing usable is found, saying what was looked for.
    """
    text = os.path.expanduser(os.fspath(spec))
    path = Path(text)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted((p for p in path.iterdir() if _is_candidate(p)), key=lambda p: p.name)
        if not found:
            raise InputError(
                f"{path}: no image files ({_suffix_list()}) in this folder; check the path"
            )
        return found
    if _has_glob(text):
        found = sorted(
            (Path(m) for m in glob.glob(text, recursive=True) if _is_candidate(Path(m))),
            key=str,
        )
        if not found:
            raise InputError(
                f"{text}: no image files ({_suffix_list()}) match this pattern; "
                "check it, and quote it so the shell does not expand it"
            )
        return found
    if path.exists():
        raise InputError(f"{path}: not a regular file or folder; pass an image file or a folder")
    raise InputError(f"{path}: no such file or folder; check the path")


def is_batch(spec: str | os.PathLike[str]) -> bool:
    """True when ``spec`` is a folder or a glob pattern (even one matching one file).

    An existing file is never a batch, even if its name contains ``[``.
    """
    text = os.path.expanduser(os.fspath(spec))
    path = Path(text)
    if path.is_dir():
        return True
    return not path.exists() and _has_glob(text)


def output_suffix(source: Path, format: str | None = None) -> str:
    """Return the output extension: the format's (".jpg", ".png", ".tif", ".webp",
    ".bmp") when ``format`` is given, else the source suffix in lower case when it names
    a format written, else the extension of the source's format as its first bytes say
    (".png" when they say nothing: the file will be refused when read)."""
    if format:
        return FORMAT_SUFFIX[normalise_format(format)]
    suffix = source.suffix.lower()
    if suffix in SUFFIX_FORMAT:
        return suffix
    return FORMAT_SUFFIX[sniff_format(source) or "PNG"]


def _suffix_names() -> str:
    """The output suffixes, for messages: ".bmp, .jpe, .jpeg, ... or .webp"."""
    names = sorted(SUFFIX_FORMAT)
    return ", ".join(names[:-1]) + f" or {names[-1]}"


def check_output_name(path: Path, format: str | None = None) -> None:
    """`UsageError` (exit 2) unless the file name ``path`` ends with an image suffix that
    names the format to write, agreeing with ``format`` when that is given."""
    named = SUFFIX_FORMAT.get(path.suffix.lower())
    if named is None:
        what = f"{path.suffix} files" if path.suffix else "a file without an image suffix"
        raise UsageError(
            f"{path}: cannot write {what}; name the output {_suffix_names()} (the format "
            "follows it), or end it with / for a folder"
        )
    if format and normalise_format(format) != named:
        raise UsageError(
            f"{path}: the name says {named} but --format says {normalise_format(format)}; "
            "make them agree"
        )


#: Output names with these suffixes name a file, never a folder of several results.
_IMAGE_NAME_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp",
                                  ".bmp", ".gif"})


def output_path_for(
    source: Path,
    out: str | os.PathLike[str] | None,
    *,
    batch: bool,
    suffix: str = DEFAULT_SUFFIX,
    format: str | None = None,
) -> Path:
    """Return where the result for ``source`` goes.

    Single input (``batch=False``): ``out`` is the file to write, unless it is
    an existing folder (or ends with a path separator), then
    ``<out>/<stem><suffix><ext>``; ``out=None`` writes next to the source.
    Batch: ``out`` is a folder (created when writing); ``out=None`` writes next
    to each source.  Raises `UsageError` if the result would be the source
    itself, if a batch ``out`` is an existing file, or if a file ``out`` is not
    named with an image suffix that agrees with ``format`` (`check_output_name`).
    """
    name = f"{source.stem}{suffix}{output_suffix(source, format)}"
    if out is None:
        target = source.parent / name
    else:
        out_text = os.fspath(out)
        out_path = Path(out_text)
        names_folder = out_path.is_dir() or out_text.endswith(("/", os.sep))
        if batch and out_path.exists() and not out_path.is_dir():
            raise UsageError(
                f"{out_path}: is a file, but several inputs need an output folder; pass a folder"
            )
        if batch and not names_folder and out_path.suffix.lower() in _IMAGE_NAME_SUFFIXES:
            raise UsageError(
                f"{out_path}: names an image file, but there are several inputs; give a "
                f"folder (-o {out_path.with_suffix('')}/)"
            )
        if batch or names_folder:
            target = out_path / name
        else:
            check_output_name(out_path, format)
            target = out_path
    if _same_file(target, source):
        raise UsageError(
            f"{source}: the output would overwrite the input; choose another output or suffix"
        )
    return target


def _key(path: Path) -> str:
    """Comparison key for output paths: absolute, normalised, case-folded.

    Case-folding is deliberately conservative: ``A.jpg`` and ``a.jpg`` would
    collide on macOS and Windows file systems.
    """
    return os.path.normcase(os.path.abspath(path)).casefold()


def _same_file(a: Path, b: Path) -> bool:
    """True if ``a`` and ``b`` name the same file (by path, or by inode if both exist)."""
    if _key(a) == _key(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_unique_outputs(pairs: Iterable[tuple[Path, Path]]) -> None:
    """Raise `UsageError` if two sources map to one output, or an output is an input.

    ``pairs`` are ``(source, output)`` tuples, e.g. from `output_path_for`.
    """
    pairs = list(pairs)
    sources = {_key(source) for source, _ in pairs}
    seen: dict[str, Path] = {}
    for source, output in pairs:
        key = _key(output)
        if key in seen and os.path.abspath(seen[key]) != os.path.abspath(source):
            raise UsageError(
                f"{seen[key]} and {source} would both be written to {output}; "
                "rename one, or choose another --format or --out"
            )
        if key in sources:
            raise UsageError(
                f"{source}: its output {output} is also an input; choose another --out or suffix"
            )
        seen[key] = source


def check_detectable_file(path: str | os.PathLike[str], *, max_pixels: int | None = None
                          ) -> str | None:
    """`InputError` (exit 3, one line naming the file) when the image at ``path`` is too small
    or too thin for the face and body detectors, judged from its header alone (cheap; see
    `mirrorppr_cli.geometric.landmarks.detectable`). A file that cannot be read fails as `read_image`
    would (a FIFO, a device or a folder too). Called on exemplar and query files before any
    work is done on them.

    Returns a note for the user when the file holds several frames or pages (only the first
    is used: `mirrorppr_cli.io.frames_note`), else None.
    """
    from .geometric.landmarks import check_detectable
    from .io import frames_note, header_info

    width, height, frames, fmt = header_info(path, max_pixels=max_pixels)
    check_detectable(width, height, name=os.fspath(path))
    return frames_note(frames, fmt)
