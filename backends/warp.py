"""The geometric engine: landmark-guided similarity-MLS warping on the CPU, no weights."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mirrorppr_cli.backend import RetouchSettings
from mirrorppr_cli.errors import UsageError
from mirrorppr_cli.geometric.field import fold_free_local_warp
from mirrorppr_cli.geometric.mls import DEFAULT_GRID
from mirrorppr_cli.ops import OpRequest, plan_warp

MODES = ("flow", "catalog", "hybrid")


@dataclass(frozen=True)
class WarpEdit:
    """A measured exemplar edit (:class:`~mirrorppr_cli.geometric.measure.Exemplar`) and the mode
    it was measured in."""

    exemplar: object
    mode: str


class WarpBackend:
    """Landmark-guided local warping (the paper's LLW), fast coarse-grid path by default."""

    name = "warp"
    summary = (
        "geometric engine on the CPU, no weights: similarity-MLS catalog ops; "
        "flow-measured exemplar edits carried through landmark correspondence"
    )
    capabilities = frozenset({"retouch", "ops", "explain", "strength", "edit-file", "export",
                              "select", "parallel"})
    options = frozenset({"method", "mode"})

    def __init__(self, method: str = "fast", grid: int = DEFAULT_GRID, mode: str = "hybrid") -> None:
        if method not in ("fast", "exact"):
            raise UsageError(f"--method must be fast or exact, not {method!r}")
        if mode not in MODES:
            raise UsageError(f"--mode must be flow, catalog or hybrid, not {mode!r}")
        self.method = method
        self.grid = grid
        self.mode = mode

    def availability(self) -> tuple[bool, str]:
        """Always: the geometric engine needs no weights and no accelerator."""
        return True, "CPU, no weights needed"

    def prepare(self, status: Callable[[str], None] | None = None) -> None:
        """Nothing to load: the landmark models ship with MediaPipe."""

    # -- retouch ------------------------------------------------------------------------------
    def input_note(self, path: Path, max_pixels: int | None = None) -> str | None:
        from mirrorppr_cli.inputs import check_detectable_file

        return check_detectable_file(path, max_pixels=max_pixels)

    def measure(self, before: Path, after: Path, *, max_pixels: int | None = None,
                on_stage: Callable[[str], None] | None = None) -> WarpEdit:
        from mirrorppr_cli.retouch_job import load_exemplar

        return WarpEdit(load_exemplar(before, after, mode=self.mode, max_pixels=max_pixels,
                                      on_stage=on_stage), self.mode)

    def retouch_file(self, edit: WarpEdit, source: Path, dest: Path,
                     settings: RetouchSettings):
        from mirrorppr_cli.retouch_job import retouch_file

        note = self.input_note(source, settings.max_pixels)  # one-line error, exit 3
        kept: dict = {}

        def keep(query: np.ndarray, result: np.ndarray, inverse_map) -> None:
            from mirrorppr_cli.review_assets import asset_key, save_item_assets

            kept.update(save_item_assets(settings.review_dir, asset_key(dest), query, result,
                                         inverse_map()))

        report = retouch_file(edit.exemplar, source, dest, strength=settings.strength,
                              face_index=settings.face_index, force=settings.force,
                              output_format=settings.output_format,
                              max_pixels=settings.max_pixels, check=settings.check,
                              exports=settings.exports, quality=settings.quality,
                              keep=keep if settings.review_dir is not None else None)
        if note is not None:
            report.notes.append(note)
        if kept:
            report.extra["review"] = kept
        return report

    def retouch(
        self, before: np.ndarray, after: np.ndarray, query: np.ndarray, strength: float = 1.0
    ) -> np.ndarray:
        """Measure the edit of ``before``→``after`` and apply it to ``query`` (RGB uint8 arrays)."""
        from mirrorppr_cli.geometric.apply import apply_exemplar
        from mirrorppr_cli.geometric.measure import face_points, measure_exemplar

        exemplar = measure_exemplar(before, after, mode=self.mode)
        q_points, _, _ = face_points(query, None, "query")
        return apply_exemplar(exemplar, query, q_points, strength)

    def edit_summary(self, edit: WarpEdit) -> dict:
        exemplar = edit.exemplar
        box = exemplar.edit.box
        return {
            "mode": edit.mode,
            "edit": {"region": [int(v) for v in (box.x0, box.y0, box.x1, box.y1)],
                     "max_motion_px": round(exemplar.edit.max_motion_px, 3)},
            **({"catalog": exemplar.explanation.to_dict()} if exemplar.explanation else {}),
            **({"body": exemplar.body.to_dict()} if exemplar.body else {}),
            **({"notes": list(exemplar.notes)} if exemplar.notes else {}),
        }

    # -- edit files, selection ----------------------------------------------------------------
    def save_edit(self, edit: WarpEdit, path: Path, *, force: bool = False) -> Path:
        from mirrorppr_cli.edit_file import save_edit

        return save_edit(edit.exemplar, edit.mode, path, force=force)

    def load_edit(self, path: Path) -> WarpEdit:
        from mirrorppr_cli.edit_file import load_edit

        exemplar, mode = load_edit(path)
        return WarpEdit(exemplar, mode)

    def select(self, edit: WarpEdit, *, only: str | None = None,
               ops: tuple[str, ...] | None = None) -> tuple[WarpEdit, list[str]]:
        from mirrorppr_cli.selection import select_parts

        exemplar, notes = select_parts(edit.exemplar, only=only, ops=ops)
        return replace(edit, exemplar=exemplar), notes

    # -- explain ------------------------------------------------------------------------------
    def explain(self, before: Path, after: Path, *, max_pixels: int | None = None,
                on_stage: Callable[[str], None] | None = None) -> dict:
        """The exemplar's edit as catalog operations (face, then body), fitted strengths, the
        share of the motion they explain, and notes."""
        from mirrorppr_cli.retouch_job import load_exemplar

        measured = load_exemplar(before, after, mode="catalog", max_pixels=max_pixels,
                                 on_stage=on_stage)
        body = measured.body
        return {**measured.explanation.to_dict(), "body": body.to_dict() if body else None,
                "notes": list(measured.notes)}

    # -- named operations ---------------------------------------------------------------------
    def apply_ops(
        self, pixels: np.ndarray, face_points: np.ndarray, requests: list[OpRequest]
    ) -> np.ndarray:
        """Compose ``requests`` on the face with ``face_points`` into one warp and apply it."""
        warp = plan_warp(face_points, requests)
        return fold_free_local_warp(pixels, warp, method=self.method, grid=self.grid)

    def apply_body_ops(self, pixels: np.ndarray, requests: list[OpRequest], *,
                       name: str = "image", rgb: np.ndarray | None = None) -> np.ndarray:
        """Body operations (pose + person mask, one confined warp per op) on ``pixels``;
        ``name`` names the image in errors (no person found); ``rgb``: the picture the body
        is detected on (default: ``pixels`` themselves; given when ``pixels`` are not a
        picture, e.g. coordinates for an inverse map)."""
        from mirrorppr_cli.geometric.body import detect_body
        from mirrorppr_cli.io import as_rgb8
        from mirrorppr_cli.ops.body_plan import apply_body_ops

        if rgb is None:
            rgb = as_rgb8(pixels)
        return apply_body_ops(pixels, detect_body(rgb, name=name), requests)
