"""Warp artefacts, measured without a ground truth: the output against its own query.

A geometric retouch moves pixels that already exist. Two failure modes show on real photos
and neither needs the ideal result to be seen:

* **new blobs** (:func:`new_blobs`): small dots, discs and ringed discs in smooth skin, on
  the nose or the lips, that the query does not have there. A displacement field that
  switches on and off pixel by pixel, or folds, samples a few pixels from elsewhere and
  leaves such impulse-like speckles;
* **an unhealthy field** (:func:`field_health`, when the warp's map is at hand): fold-over
  (negative Jacobian determinant) and moving islands or holes.

How a blob is found (grey levels 0..255, luma of RGB; a dot that changes colour but not
luma is not seen):

1. *Impulse response* at two scales ``k`` (:data:`MEDIAN_SIZES`):
   ``s_k(img) = img − median_k(img)``, signed, kept per polarity (bright ``max(s, 0)``,
   dark ``max(−s, 0)``). A median filter removes any bright or dark structure smaller than
   about half its window and keeps straight edges, so ``s_k`` is large only on small isolated
   structures: a 5-px median sees 1–3-px dots, an 11-px one discs up to ~8 px across
   (the ringed discs a torn field left on 1.5–2.2-Mpx survey portraits are 4–8 px).
2. *Reference*: what the query has there. The query's response, and the response of the
   query *motion-compensated* onto the output (dense DIS flow output → query, so texture
   that the warp moved by any distance lines up again; the flow is smooth at the scale of a
   dot, so it does not reproduce one), each dilated by :data:`REF_DILATE_PX` (a 1–2-px
   misalignment of a highlight must not count); the larger of the two, per polarity and
   scale.
3. *Strong pixel*: the output's response is at least the local threshold
   ``max(T_ABS, K_TEXTURE × texture, EDGE_SHIFT_PX × slope)`` and exceeds
   :data:`REF_GAIN` × the reference by at least :data:`T_NEW`. ``texture`` is the local mean
   of the query's finest response (pores, hair, JPEG noise raise it: moved or recompressed
   texture needs far more contrast to count there than a dot needs in smooth skin);
   ``slope`` the query's local grey-level gradient (an edge moved by a fraction of a pixel
   reads as an impulse of about slope × shift). ``REF_GAIN`` > 1 because bilinear
   resampling (of the warp, and of the compensation) lowers a 1-px impulse by up to half.
   *Weak pixel*: the same tests at :data:`WEAK_FRACTION` of both thresholds (hysteresis).
4. *Blobs*: 8-connected components of the weak pixels, pieces closer than
   2 × :data:`JOIN_PX` + 1 px joined (a disc and its halo where the halo is faint), that hold a
   strong pixel, are small and compact (area ≤ :data:`MAX_AREA_PX`, bounding box sides ≤
   :data:`MAX_SIDE_PX`) and carry at least :data:`MIN_INTEGRATED_CONTRAST` (their output
   response summed over their pixels). Larger components passing the contrast tests are
   clusters of dots or torn contours: reported as ``long_components``, not counted as
   blobs. A blob holding both polarities is *ringed* (a dot with a halo).

Only the region where output and query differ (plus :data:`MARGIN_PX`) is analysed: pixels
the retouch did not touch cannot hold a new blob, and a local edit is scored in tens of
milliseconds (a whole re-encoded 2-Mpx photo in ~1 s, half of it the flow).

Calibration (thresholds below; grey levels): 0 blobs on 9 professional retouches of the
paper's survey (exemplar before → after: whole photos re-exported, skin retouched), on JPEG
re-encoding at quality 90 (astronaut, 9 survey photos), on the tool's clean outputs for 6
survey queries and on 30 of 33 catalog warps of the development photos (the others: 7 on a
warp that visibly tears the lips' contour, 1 on a real new dark dot, 1 stray in hair
texture); 5–15 blobs on the tool's outputs that show dots on the nose and lips (survey q02,
q17, q20), checked on crops to be those dots and discs.

Convention: images are ``(H, W, 3)`` RGB (or ``(H, W)`` grey, or ``(H, W, 4)``, alpha
ignored), uint8 (0..255), uint16 (scaled by 1/257) or float in [0, 1]; query and output
have one size. Maps follow OpenCV's ``remap``: for output pixel ``(row, col)`` the source
``(x, y) = (map_x[row, col], map_y[row, col])``, pixel centres at integers.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .pixel import changed_mask

#: Median window sizes (px) of the impulse response: 5 sees 1–3-px dots, 11 discs up to ~8 px.
MEDIAN_SIZES = (5, 11)
#: The reference (query) responses are dilated by this radius (px): a highlight moved by
#: 1–2 px (sub-pixel flow error, resampling) stays matched.
REF_DILATE_PX = 2
#: Output response must exceed this multiple of the reference: bilinear resampling halves a
#: 1-px impulse at worst, so an existing impulse resampled reads ≤ 1× its reference.
REF_GAIN = 2.0
#: Minimum contrast (grey levels) of a new impulse over ``REF_GAIN`` × reference, and
#: minimum absolute impulse contrast of a strong pixel. The pale discs a torn field leaves
#: in smooth skin are 10–15 levels over their surround; JPEG at quality 90 starts to read as
#: blobs at 0.75× these values (one blob on the astronaut).
T_NEW = 8.0
T_ABS = 10.0
#: In texture, a new impulse must reach this multiple of the local mean response of the
#: query (for Gaussian noise the mean |response| is of the order of σ, so 4× is well outside
#: what noise or recompressed texture produce).
K_TEXTURE = 4.0
#: Next to an edge, a sub-pixel shift of the edge (resampling, JPEG) reads as an impulse of
#: about slope × shift; a new impulse there must exceed the query's local slope (grey levels
#: per px, dilated like the reference) times this shift.
EDGE_SHIFT_PX = 0.35  # at 0.25, sharp JPEG edges of one survey retouch gave 1-px blobs
#: Window (px) of the local texture mean.
TEXTURE_WINDOW_PX = 15
#: Weak (hysteresis) thresholds are the strong ones times this.
WEAK_FRACTION = 0.5
#: A blob is at most this many pixels and this many pixels on a side (an 11-px median finds
#: discs up to ~8 px; their halo adds 2–3).
MAX_AREA_PX = 200
MAX_SIDE_PX = 20
#: A blob must carry at least this much contrast in all (grey levels × px, summed over its
#: pixels): for spots this small, visibility goes with contrast × area (Riccò's law), so a
#: 1-px speck needs 40 levels while a 5-px-wide pale disc is seen at 10–15.
MIN_INTEGRATED_CONTRAST = 40.0
#: Weak pixels this close (px, each side dilated) join one blob.
JOIN_PX = 1
#: Margin (px) around the changed region that is analysed (flow context, median windows).
MARGIN_PX = 32
#: Images (analysed regions) narrower than this (px) are not motion-compensated: dense flow
#: needs room for its patches, and there is no room for a warp to carry texture far.
MIN_FLOW_SIDE_PX = 32
#: Boxes reported, largest contrast first.
MAX_BOXES = 12

#: Moving set of a map: displacement above this (px).
MOVE_EPS_PX = 0.05
#: A displacement that differs from a 4-neighbour's by more than this (px) is a jump: the
#: pixel pair is stretched to twice its distance or folded. The astronaut catalog warp of
#: the tests changes by at most 0.40 px (fast path) / 0.56 px (exact MLS) between neighbours.
JUMP_PX = 1.0


def to_grey8(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` uint8 luma (ITU-R 601, as OpenCV) of an RGB/RGBA/grey image.

    uint8 is taken as is, other integer types are scaled by their maximum, floats are taken
    as [0, 1] (clipped).
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.integer):
            arr = arr.astype(np.float64) * (255.0 / np.iinfo(arr.dtype).max)
        else:
            arr = arr.astype(np.float64) * 255.0
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    if arr.ndim == 3:
        if arr.shape[2] == 1:
            arr = arr[..., 0]
        else:
            arr = cv2.cvtColor(np.ascontiguousarray(arr[..., :3]), cv2.COLOR_RGB2GRAY)
    if arr.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


@dataclass(frozen=True)
class BlobScore:
    """New blobs of an output against its query.

    Attributes:
        count: blobs found (each a small compact component, see the module docstring).
        area_px: their total area in pixels.
        per_megapixel: ``count`` per million pixels of the image (not of the analysed region).
        worst_contrast: the largest new impulse contrast among them, grey levels 0..255
            (0.0 when none).
        ringed: blobs holding both a bright and a dark part (a dot with a halo).
        long_components: components that passed the contrast tests but are too large or
            long to be blobs (torn or shifted contours, or texture); not in ``count``.
        boxes: ``(x, y, w, h)`` px of up to :data:`MAX_BOXES` blobs, strongest first.
    """

    count: int
    area_px: int
    per_megapixel: float
    worst_contrast: float
    ringed: int = 0
    long_components: int = 0
    boxes: tuple[tuple[int, int, int, int], ...] = ()

    def describe(self) -> str:
        if not self.count:
            return "no new blobs"
        return (f"{self.count} new blob(s) ({self.ringed} ringed), {self.area_px} px, "
                f"{self.per_megapixel:.1f}/Mpx, worst contrast {self.worst_contrast:.0f}")


def _changed_box(query: np.ndarray, output: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    return _mask_box(changed_mask(query, output), margin)


def _mask_box(changed: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    """The box of the true pixels of ``changed`` ``(H, W)`` bool, grown by ``margin`` px."""
    rows, cols = np.any(changed, axis=1), np.any(changed, axis=0)
    if not rows.any():
        return None
    r0, r1 = np.argmax(rows), len(rows) - np.argmax(rows[::-1])
    c0, c1 = np.argmax(cols), len(cols) - np.argmax(cols[::-1])
    h, w = changed.shape
    return (slice(max(r0 - margin, 0), min(r1 + margin, h)),
            slice(max(c0 - margin, 0), min(c1 + margin, w)))


def _grey_region(query: np.ndarray, output: np.ndarray, margin: int,
                 changed: np.ndarray | None = None,
                 ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """``(box, query grey, output grey)``: the box of the pixels whose grey levels
    (:func:`to_grey8`) differ, grown by ``margin`` px, and both images' grey levels there;
    None when none differ.

    The same box as from whole grey images (:func:`_changed_box`), at the cost of one
    comparison of the whole images: a pixel whose grey level differs differs in some channel,
    so the grey levels are compared only in the box of those, and converted only in the
    result's box (``changed``: a mask known to hold every pixel that differs, whose box
    replaces that comparison)."""
    rough = _changed_box(query, output, 0) if changed is None else _mask_box(changed, 0)
    if rough is None:
        return None
    inner = _changed_box(to_grey8(query[rough]), to_grey8(output[rough]), 0)
    if inner is None:
        return None
    height, width = query.shape[:2]
    box = (slice(max(rough[0].start + inner[0].start - margin, 0),
                 min(rough[0].start + inner[0].stop + margin, height)),
           slice(max(rough[1].start + inner[1].start - margin, 0),
                 min(rough[1].start + inner[1].stop + margin, width)))
    return box, to_grey8(query[box]), to_grey8(output[box])


def motion_compensated(query_grey: np.ndarray, output_grey: np.ndarray) -> np.ndarray:
    """The query resampled onto the output through dense DIS flow (output → query), uint8."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flow = dis.calc(output_grey, query_grey, None)
    h, w = output_grey.shape
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(query_grey, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def _responses(grey: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(bright, dark)`` ``(h, w)`` uint8: the impulse response ``grey − median_k(grey)``
    kept per polarity, ``max(s, 0)`` and ``max(−s, 0)`` (saturating subtractions: exact,
    and a quarter of float32's memory traffic for what follows)."""
    median = cv2.medianBlur(grey, k)
    return cv2.subtract(grey, median), cv2.subtract(median, grey)


def _gradient(grey: np.ndarray) -> np.ndarray:
    """Grey-level slope per pixel (Sobel magnitude / 8), float32."""
    g = grey.astype(np.float32)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.magnitude(gx, gy) / 8.0


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


@dataclass
class _Maps:
    strong: np.ndarray  # bool: passes the strong tests at some scale and polarity
    weak: np.ndarray  # bool: passes the weak (hysteresis) tests
    bright: np.ndarray  # bool: weak and bright
    dark: np.ndarray  # bool: weak and dark
    contrast: np.ndarray  # float32: the output's response where weak, else 0


def _candidate_maps(query_grey: np.ndarray, output_grey: np.ndarray,
                    compensate_motion: bool) -> _Maps:
    refs = [query_grey]
    if compensate_motion and min(query_grey.shape) >= MIN_FLOW_SIDE_PX:
        refs.append(motion_compensated(query_grey, output_grey))
    ref_responses = {k: [_responses(ref, k) for ref in refs] for k in MEDIAN_SIZES}
    texture = np.zeros(query_grey.shape, np.float32)
    slope = np.zeros(query_grey.shape, np.float32)
    for ref, (bright, dark) in zip(refs, ref_responses[min(MEDIAN_SIZES)], strict=True):
        both = cv2.add(bright, dark).astype(np.float32)  # |s|: one of the two is 0
        texture = np.maximum(texture, cv2.blur(both, (TEXTURE_WINDOW_PX,) * 2))
        slope = np.maximum(slope, _gradient(ref))
    slope = cv2.dilate(slope, _disk(REF_DILATE_PX))
    threshold = np.maximum(np.maximum(T_ABS, K_TEXTURE * texture), EDGE_SHIFT_PX * slope)
    weak_threshold = WEAK_FRACTION * threshold
    shape = query_grey.shape
    strong, weak = np.zeros(shape, bool), np.zeros(shape, bool)
    polarity = [np.zeros(shape, bool), np.zeros(shape, bool)]  # bright, dark
    contrast = np.zeros(shape, np.float32)
    kernel = _disk(REF_DILATE_PX)
    for k in MEDIAN_SIZES:
        out_parts = _responses(output_grey, k)
        for i in (0, 1):  # bright, dark
            # the larger reference, dilated (a max filter: the max of the dilations)
            ref = ref_responses[k][0][i]
            for parts in ref_responses[k][1:]:
                ref = cv2.max(ref, parts[i])
            ref = cv2.dilate(ref, kernel).astype(np.float32)
            out = out_parts[i].astype(np.float32)
            excess = out - REF_GAIN * ref
            strong |= (out >= threshold) & (excess >= T_NEW)
            w = (out >= weak_threshold) & (excess >= WEAK_FRACTION * T_NEW)
            weak |= w
            polarity[i] |= w
            np.maximum(contrast, np.where(w, out, 0.0), out=contrast)
    return _Maps(strong, weak | strong, polarity[0], polarity[1], contrast)


def new_blobs(query: np.ndarray, output: np.ndarray, *,
              compensate_motion: bool = True, changed: np.ndarray | None = None) -> BlobScore:
    """Count small impulse-like blobs in ``output`` that ``query`` does not have.

    Args:
        query: the input image, ``(H, W, 3)`` RGB (see the module's conventions).
        output: the retouched image, same size as ``query``.
        compensate_motion: also compare against the query moved onto the output by dense
            optical flow (default), so texture the warp carried far is not new.
        changed: optional ``(H, W)`` bool holding every pixel where the two differ (e.g. the
            caller's own changed-pixel mask, saving a comparison of the whole images); a
            superset gives the same score.

    Returns:
        :class:`BlobScore`; ``count == 0`` for identical images.
    """
    q, o = np.asarray(query), np.asarray(output)
    if q.shape[:2] != o.shape[:2]:
        raise ValueError(f"query {q.shape[:2]} and output {o.shape[:2]} differ in size")
    height, width = q.shape[:2]
    megapixels = height * width / 1e6
    found = _grey_region(q, o, MARGIN_PX, changed)
    if found is None:
        return BlobScore(0, 0, 0.0, 0.0)
    box, qg, og = found
    maps = _candidate_maps(qg, og, compensate_motion)
    # fragments of one blob (a disc and its halo, split where the halo is faint) join
    # across gaps of up to 2 px; sizes are measured on the undilated pixels
    joined = cv2.dilate(maps.weak.astype(np.uint8), np.ones((1 + 2 * JOIN_PX,) * 2, np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    weak_labels = np.where(maps.weak, labels, 0).ravel()
    areas = np.bincount(weak_labels, minlength=n)
    integrated = np.bincount(weak_labels, weights=maps.contrast.ravel(), minlength=n)
    has_strong = np.bincount(weak_labels, weights=maps.strong.ravel(), minlength=n) > 0
    count = area = ringed = long_components = 0
    worst = 0.0
    found: list[tuple[float, tuple[int, int, int, int]]] = []
    for label in np.flatnonzero(has_strong):
        if label == 0:
            continue
        x, y, w, h = (int(v) for v in stats[label, :4])  # of the joined component
        window = (slice(y, y + h), slice(x, x + w))
        member = (labels[window] == label) & maps.weak[window]
        rows, cols = np.nonzero(member)
        y, x = y + int(rows.min()), x + int(cols.min())  # the blob's own box
        h, w = int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1
        a = int(areas[label])
        if a > MAX_AREA_PX or max(w, h) > MAX_SIDE_PX:
            long_components += 1
            continue
        if integrated[label] < MIN_INTEGRATED_CONTRAST:
            continue
        peak = float(maps.contrast[window][member].max())
        count += 1
        area += a
        worst = max(worst, peak)
        if maps.bright[window][member].any() and maps.dark[window][member].any():
            ringed += 1
        found.append((peak, (x + box[1].start, y + box[0].start, w, h)))
    found.sort(key=lambda item: -item[0])
    return BlobScore(count, area, count / megapixels, worst, ringed, long_components,
                     tuple(b for _, b in found[:MAX_BOXES]))


@dataclass(frozen=True)
class FieldHealth:
    """Health of an inverse map (see :func:`field_health`).

    Attributes:
        min_jacobian_det: smallest Jacobian determinant of ``(x, y) → (map_x, map_y)``;
            1.0 for the identity, ≤ 0 where the map folds over.
        folded_pixels: pixels with determinant ≤ 0.
        moving_components: 8-connected components of the moving set.
        holes: 4-connected components of the non-moving set that do not touch the image
            border (so are enclosed by moving pixels).
        islands: ``max(moving_components − 1, 0) + holes``.
        max_displacement_px: largest ``|map − identity|``.
        moving_pixels: size of the moving set.
        max_jump_px: largest difference of displacement between two 4-neighbour pixels
            (about the displacement gradient for a smooth field; the full displacement
            where a field switches on and off).
        jump_pixels: pixels whose displacement differs from a 4-neighbour's by more than
            :data:`JUMP_PX`.
    """

    min_jacobian_det: float
    folded_pixels: int
    moving_components: int
    holes: int
    islands: int
    max_displacement_px: float
    moving_pixels: int
    max_jump_px: float = 0.0
    jump_pixels: int = 0

    def describe(self) -> str:
        return (f"min det {self.min_jacobian_det:.3f}, {self.folded_pixels} folded px, "
                f"{self.islands} island(s)/hole(s), {self.jump_pixels} jump px "
                f"(max {self.max_jump_px:.2f}), max displacement {self.max_displacement_px:.1f} px")


def jacobian_det(map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """``(H, W)`` float64 Jacobian determinant of the map, central differences (one-sided at
    the border): ``∂mx/∂c · ∂my/∂r − ∂mx/∂r · ∂my/∂c``."""
    mx, my = np.asarray(map_x, np.float64), np.asarray(map_y, np.float64)
    mx_r, mx_c = np.gradient(mx)
    my_r, my_c = np.gradient(my)
    return mx_c * my_r - mx_r * my_c


def field_health(map_x: np.ndarray, map_y: np.ndarray,
                 moved: np.ndarray | None = None) -> FieldHealth:
    """Fold-over and islands of an inverse map.

    Args:
        map_x, map_y: ``(H, W)`` float (float32 as OpenCV uses), for each output pixel
            ``(row, col)`` the source ``(x, y)`` it samples; the identity is
            ``map_x[r, c] = c``, ``map_y[r, c] = r``. At least 2×2.
        moved: optional ``(H, W)`` bool, the moving set (e.g. a blend mask > 0); default the
            pixels displaced by more than :data:`MOVE_EPS_PX`.

    A healthy local warp moves one (or a few, one per feature) solid regions: its moving set
    has few components and no holes; a field that switches on and off pixel by pixel has
    many of both. ``islands`` alone is no verdict: a moving region that wraps an exactly
    fixed point (an MLS anchor) has a small hole there — the project's own catalog warp
    ``eye_resize=60, nose_alar=-50, mouth_resize=40`` on the astronaut, times its blend
    mask, shows 5 (fast path) or 35 (exact MLS) — but its displacement crosses
    :data:`MOVE_EPS_PX` continuously, with no jump (``jump_pixels == 0``); a field
    switching on and off jumps by its full displacement (``jump_pixels``, ``max_jump_px``).
    """
    mx, my = np.asarray(map_x, np.float64), np.asarray(map_y, np.float64)
    if mx.shape != my.shape or mx.ndim != 2 or min(mx.shape) < 2:
        raise ValueError(f"map_x {mx.shape} and map_y {my.shape} must be one (H, W), H, W ≥ 2")
    rows, cols = np.mgrid[0 : mx.shape[0], 0 : mx.shape[1]]
    magnitude = np.hypot(mx - cols, my - rows)
    moving = magnitude > MOVE_EPS_PX if moved is None else np.asarray(moved, bool)
    det = jacobian_det(mx, my)
    components = cv2.connectedComponents(moving.astype(np.uint8), connectivity=8)[0] - 1
    n, labels = cv2.connectedComponents((~moving).astype(np.uint8), connectivity=4)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    holes = (n - 1) - int(np.count_nonzero(border))  # labels touching the border, bar 0
    holes = max(holes, 0)
    dxs, dys = mx - cols, my - rows
    jump_c = np.hypot(np.diff(dxs, axis=1), np.diff(dys, axis=1))  # (H, W−1)
    jump_r = np.hypot(np.diff(dxs, axis=0), np.diff(dys, axis=0))  # (H−1, W)
    jumps = np.zeros(mx.shape, bool)
    for big, (a, b) in ((jump_c > JUMP_PX, (np.s_[:, :-1], np.s_[:, 1:])),
                        (jump_r > JUMP_PX, (np.s_[:-1], np.s_[1:]))):
        jumps[a] |= big
        jumps[b] |= big
    return FieldHealth(
        min_jacobian_det=float(det.min()),
        folded_pixels=int(np.count_nonzero(det <= 0)),
        moving_components=int(components),
        holes=int(holes),
        islands=int(max(components - 1, 0) + holes),
        max_displacement_px=float(magnitude.max()),
        moving_pixels=int(np.count_nonzero(moving)),
        max_jump_px=float(max(jump_c.max(), jump_r.max())),
        jump_pixels=int(np.count_nonzero(jumps)),
    )


def displacement_field_health(dx: np.ndarray, dy: np.ndarray,
                              moved: np.ndarray | None = None) -> FieldHealth:
    """:func:`field_health` of an offset field: ``map_x = col + dx``, ``map_y = row + dy``."""
    dx, dy = np.asarray(dx, np.float64), np.asarray(dy, np.float64)
    rows, cols = np.mgrid[0 : dx.shape[0], 0 : dx.shape[1]]
    return field_health(cols + dx, rows + dy, moved)


@dataclass(frozen=True)
class ArtefactScore:
    """Blobs and, where the map is known, field health."""

    blobs: BlobScore | None = None
    field: FieldHealth | None = None

    def describe(self) -> str:
        parts = [part.describe() for part in (self.blobs, self.field) if part is not None]
        return "; ".join(parts) if parts else "no artefact measure"


def artefact_score(query: np.ndarray | None = None, output: np.ndarray | None = None,
                   map_x: np.ndarray | None = None, map_y: np.ndarray | None = None) -> ArtefactScore:
    """:class:`ArtefactScore` of whatever is given: images (blobs) and/or a map (health)."""
    blobs = new_blobs(query, output) if query is not None and output is not None else None
    health = field_health(map_x, map_y) if map_x is not None and map_y is not None else None
    return ArtefactScore(blobs, health)
