"""Named landmark index sets of MediaPipe's 478-point face mesh.

Eye, brow, lip and oval contours come from MediaPipe's own connection tables; the nose sets
(bridge sides, alae, tip) are read off the mesh layout. "Right"/"left" follow MediaPipe's
naming (the subject's right eye appears on the image's left in a frontal, unmirrored photo).
"""

from __future__ import annotations

from mediapipe.python.solutions import face_mesh_connections as _mp


def _indices(connections) -> tuple[int, ...]:
    return tuple(sorted({i for edge in connections for i in edge}))


RIGHT_EYE_CONTOUR = _indices(_mp.FACEMESH_RIGHT_EYE)
LEFT_EYE_CONTOUR = _indices(_mp.FACEMESH_LEFT_EYE)
RIGHT_IRIS = (468, *_indices(_mp.FACEMESH_RIGHT_IRIS))
LEFT_IRIS = (473, *_indices(_mp.FACEMESH_LEFT_IRIS))
RIGHT_EYE = RIGHT_EYE_CONTOUR + RIGHT_IRIS
LEFT_EYE = LEFT_EYE_CONTOUR + LEFT_IRIS
RIGHT_BROW = _indices(_mp.FACEMESH_RIGHT_EYEBROW)
LEFT_BROW = _indices(_mp.FACEMESH_LEFT_EYEBROW)
FACE_OVAL = _indices(_mp.FACEMESH_FACE_OVAL)
LIPS = _indices(_mp.FACEMESH_LIPS)

LIPS_UPPER_OUTER = (185, 40, 39, 37, 0, 267, 269, 270, 409)
LIPS_LOWER_OUTER = (146, 91, 181, 84, 17, 314, 405, 321, 375)
MOUTH_CORNERS = (61, 291)
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)

NOSE_MIDLINE = (168, 6, 197, 195, 5, 4, 1, 19, 94, 2)
NOSE_BRIDGE_MIDLINE = (168, 6, 197, 195, 5)
NOSE_TIP = (1, 4, 19, 94, 2)
RIGHT_BRIDGE_SIDE = (122, 196, 3, 51)
LEFT_BRIDGE_SIDE = (351, 419, 248, 281)
RIGHT_ALA = (48, 64, 98, 129, 49, 102, 240, 219, 115)
LEFT_ALA = (278, 294, 327, 358, 279, 331, 460, 439, 344)
NOSE_BASE = (97, 326, 45, 275, 220, 440)
NOSE_LOWER = NOSE_TIP + NOSE_BASE + RIGHT_ALA + LEFT_ALA

CHIN = 152
#: The 468 mesh points (iris points excluded) from which anchor rings are drawn.
MESH = tuple(range(468))
