"""Errors the tool reports to its user, each with the exit code the CLI returns.

Exit codes (documented in the README, stable for shell scripts):

* 0 — everything asked for was done.
* 1 — a batch finished but some items failed (each failure was reported).
* 2 — the command line is wrong, or the command is not built yet.
* 3 — an input could not be used (unreadable, truncated, too large, no face, …).
* 4 — an output exists and ``--force`` was not given, or it could not be written.
* 5 — a needed model or weight file is missing (the message says how to get it).
* 6 — the accelerator ran out of memory (the message suggests what uses less).
* 7 — every output was written, but the artefact check flagged some for review (``retouch``;
  the report says which and where; ``--no-check`` skips the check).
"""

from __future__ import annotations


class MirrorError(Exception):
    """Base class: a one-line message for the user plus an exit code."""

    exit_code = 1


class UsageError(MirrorError):
    """The request itself is malformed (unknown operation, bad value, not built yet)."""

    exit_code = 2


class InputError(MirrorError):
    """An input file cannot be used as an image or has no usable face."""

    exit_code = 3


class NoFaceError(InputError):
    """No face was found where one is needed."""


class OutputError(MirrorError):
    """An output cannot be written (exists without --force, unwritable folder)."""

    exit_code = 4


class MissingWeightsError(MirrorError):
    """Model weights are not available offline; the message names what to fetch."""

    exit_code = 5


class OutOfMemory(MirrorError):
    """The accelerator (or host) ran out of memory; the message says what uses less."""

    exit_code = 6
