"""A query picture and what the detectors find in it, each found once, when first needed.

One query is retouched, then (``--export``, ``--review``) retouched again as an image of
coordinates to make its inverse map: both passes ask for the same person, and get the body
detected once (the pose graph and person mask cost about as much as the warp on a 2 MP frame).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .geometric import body as body_module  # called through the module: tests replace the detector
from .geometric.body import Body, NoPersonError


@dataclass
class Subject:
    """``rgb``: the picture as ``(H, W, 3)`` uint8 RGB (what the detectors see); ``name``:
    how errors name it."""

    rgb: np.ndarray
    name: str = "query"
    _body: Body | None = field(default=None, init=False, repr=False)
    _no_body: NoPersonError | None = field(default=None, init=False, repr=False)

    def body(self) -> Body:
        """The main person (:func:`~mirrorppr_cli.geometric.body.detect_body`), detected on the first
        call; :class:`~mirrorppr_cli.geometric.body.NoPersonError` on every call when there is none."""
        if self._body is None and self._no_body is None:
            try:
                self._body = body_module.detect_body(self.rgb, name=self.name)
            except NoPersonError as error:
                self._no_body = error
        if self._no_body is not None:
            raise self._no_body
        return self._body
