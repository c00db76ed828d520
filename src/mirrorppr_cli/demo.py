"""The built-in demo: a public-domain portrait (scikit-image's astronaut), an exemplar pair
made from it with the catalog, and a query — for `--demo` runs and benchmarks."""

from __future__ import annotations

from pathlib import Path


def demo_portrait(folder: Path) -> Path:
    """Write the built-in demo portrait (scikit-image's astronaut, public domain) to ``folder``."""
    from skimage import data

    from .io import image_from_array, write_image

    return write_image(image_from_array(data.astronaut()), folder / "astronaut.png", force=True)


def demo_retouch_inputs(folder: Path) -> tuple[tuple[Path, Path], list[str]]:
    """A built-in exemplar pair (the astronaut, eyes enlarged and mouth narrowed with the
    catalog) and a query (the same portrait mirrored, smaller and turned), written to ``folder``."""
    import cv2
    import numpy as np
    from skimage import data

    from .geometric.landmarks import find_faces
    from .geometric.mls import apply_local_warp
    from .io import image_from_array, write_image
    from .ops import OpRequest, plan_warp

    before = data.astronaut()
    ops = [OpRequest("eye_resize", 60), OpRequest("mouth_resize", -40)]
    after = apply_local_warp(before, plan_warp(find_faces(before)[0].points, ops))
    turn = cv2.getRotationMatrix2D((256, 256), 8, 0.8)
    query = cv2.warpAffine(np.fliplr(before).copy(), turn, (512, 512),
                           borderMode=cv2.BORDER_REFLECT)
    paths = []
    for name, pixels in (("before", before), ("after", after), ("query", query)):
        paths.append(write_image(image_from_array(pixels), folder / f"astronaut_{name}.png",
                                 force=True))
    return (paths[0], paths[1]), [str(paths[2])]

