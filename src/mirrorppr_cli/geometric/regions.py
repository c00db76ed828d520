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

# ---- sets of the face-shape, brow, eye, nose and mouth operations. Indices were checked by
# plotting them on skimage.data.astronaut() (1024², frontal); positions below are that face's,
# in face units (u across the face, v towards the chin, origin between the eye centres).

#: The face oval (silhouette) in contour order, starting at the top of the forehead (10) and
#: going over the subject's right side (image left) down to the chin (152) and back up.
FACE_OVAL_RING = (
    10, 109, 67, 103, 54, 21, 162, 127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148,
    152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454, 356, 389, 251, 284, 332, 297, 338,
)
#: The lower silhouette, from mouth level (132 / 361, v ≈ 0.7) round the chin.
LOWER_FACE_CONTOUR = (
    132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361,
)
#: The jaw angle (gonial region) of the silhouette, v ≈ 0.9 … 1.45.
RIGHT_JAW_ANGLE = (58, 172, 136, 150)
LEFT_JAW_ANGLE = (288, 397, 365, 379)
#: The chin: the silhouette's lowest five points (v ≥ 1.6) and the mesh points just above
#: them (175 on the midline, 171 / 396 beside it).
CHIN_REGION = (176, 148, 152, 377, 400, 175, 171, 396)
#: The temples: the silhouette beside the forehead, lateral to the brow tails (v ≈ −0.5 … −0.2).
RIGHT_TEMPLE = (54, 21, 162)
LEFT_TEMPLE = (284, 251, 389)
#: The face's vertical midline, forehead to chin (all u ≈ 0).
FACE_MIDLINE = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 164, 0, 17, 18, 200, 199,
                175, 152)

#: Brow contours, inner end last (107 / 336 and 55 / 285 are by the glabella). The upper and
#: lower contours pair up point by point (70–46, 63–53, 105–52, 66–65, 107–55) across the brow.
RIGHT_BROW_UPPER = (70, 63, 105, 66, 107)
RIGHT_BROW_LOWER = (46, 53, 52, 65, 55)
LEFT_BROW_UPPER = (300, 293, 334, 296, 336)
LEFT_BROW_LOWER = (276, 283, 282, 295, 285)
#: The four brow contours, each in order along the brow.
BROW_CONTOURS = (RIGHT_BROW_UPPER, RIGHT_BROW_LOWER, LEFT_BROW_UPPER, LEFT_BROW_LOWER)
#: Brows as the pairs (upper point, lower point) across them.
BROW_PAIRS = tuple(zip(RIGHT_BROW_UPPER + LEFT_BROW_UPPER, RIGHT_BROW_LOWER + LEFT_BROW_LOWER,
                       strict=True))
#: Between the brows (glabella), on the midline.
GLABELLA = (9, 8, 151)

#: The nose tip (lobule): 4 on the tip's highlight, 45 / 275 beside it, 1 just below,
#: 44 / 274 beside that, 19 on the columella.
NOSE_TIP_REGION = (4, 1, 19, 45, 275, 44, 274)
#: The whole nose below its root: bridge (midline 195, 5 and the bridge sides), tip, alae and
#: nostril base. The root (168, 6) and the upper bridge (197) stay.
NOSE_WHOLE = (195, 5, *RIGHT_BRIDGE_SIDE, *LEFT_BRIDGE_SIDE, *NOSE_LOWER, 44, 274)

#: Mouth corners: the corner itself and the lip-contour points within 0.06 face units of it
#: (outer corner 61, inner 78, and the upper lip's first points 185 / 184, 76, 62).
RIGHT_MOUTH_CORNER = (61, 76, 62, 78, 185, 184)
LEFT_MOUTH_CORNER = (291, 306, 292, 308, 409, 408)

#: The 468 mesh points (iris points excluded) from which anchor rings are drawn.
MESH = tuple(range(468))
