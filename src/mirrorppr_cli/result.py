"""One :class:`Result` for every job on a file (``retouch``, ``apply``, any backend's).

A result is what happened to one input: what was written, which face was used, what changed,
what the retoucher should know (``notes``) or look at (``review``), and the files written
beside the output. ``to_dict`` gives the objects of ``--json``; the CLI prints them, the
review page reads them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Result:
    """What happened to one input file; serialised as-is by ``--json``.

    ``status`` is ``"ok"``, ``"failed"`` (``error`` and ``exit_code`` say why) or ``"skipped"``
    (``--skip-existing``: the output exists). Fields a job does not know stay at their default
    (``None`` or empty): ``strength`` is the scale a measured edit was applied at (``retouch``
    with a backend that can scale), ``ops`` the named operations with their strengths
    (``apply``), ``face_box`` ``[x0, y0, x1, y1]`` pixels, ``size`` ``[width, height]``,
    ``quality`` the JPEG/WebP quality written (the source's unless ``--quality``)."""

    input: str
    output: str | None = None
    status: str = "ok"
    error: str | None = None
    exit_code: int = 0
    faces_found: int = 0
    face: int | None = None
    face_box: list[float] | None = None
    ops: list[dict] = field(default_factory=list)
    strength: float | None = None
    changed_pixels: int = 0
    size: list[int] | None = None
    seconds: float = 0.0
    #: For the user: what was not done as asked, what the tool assumed.
    notes: list[str] = field(default_factory=list)
    #: Why the written frame should be looked at before it ships (empty: nothing found).
    review: list[str] = field(default_factory=list)
    #: Files written beside the output (``--export``).
    exports: list[str] = field(default_factory=list)
    quality: int | None = None
    #: Anything a backend adds (its name, worker pid, review assets).
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)
