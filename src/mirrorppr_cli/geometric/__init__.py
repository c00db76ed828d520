"""The geometric engine: exemplar → edit → query, training-free (backend ``warp``).

Landmarks are too noisy to carry an edit (1–3 px jitter between photos, as large as the edits),
so the edit is *measured* as dense optical flow between the exemplar's before and after (one
photograph: the flow is sub-pixel and zero where nothing moved), and landmarks only provide
the *correspondence* between the query and the exemplar.

Conventions (every module here): images are ``(H, W, C)`` arrays indexed ``[row, col]``;
points, offsets and maps are ``(x, y)`` in pixels, ``x`` right, ``y`` down, pixel centres at
integers (OpenCV's ``remap`` convention). Fields are *backward* (inverse) maps: for each
output pixel, where its content comes from. The edit is a backward field on the exemplar's
*after* image: for each of its pixels, the offset to where that content was in *before* (so
``after(u) = before(u + e(u))``). For a query output pixel ``v``, the corresponding exemplar
point is ``u = T(v)`` (similarity MLS from query landmarks to exemplar landmarks), and the query
is sampled at ``v + J(v)⁻¹·e(u)``, ``J`` the Jacobian of ``T`` — so the offset turns, scales
(and follows the face's proportions) with the query. Pixels the exemplar did not move are
copied bit for bit.

Modules, lower ones first (every import points down this list):

* detection: :mod:`.landmarks` (MediaPipe face mesh), :mod:`.landmark_mirror`,
  :mod:`.regions` (landmark index sets), :mod:`.face_frame`, :mod:`.body` (pose + person),
  :mod:`.body_correspondence`;
* maths: :mod:`.box` (pixel rectangles), :mod:`.mls` (similarity MLS, inverse maps, remap,
  blending), :mod:`.flow` (dense optical flow), :mod:`.face` (the face window, mirror test),
  :mod:`.field` (smoothing a measured field, fold-over repair);
* measure: :mod:`.motion` (an exemplar pair's face :class:`~.motion.Edit` and body
  :class:`~.motion.BodyMotion`), :mod:`.fit` (named catalog operations fitted to them),
  :mod:`.measure` (the whole exemplar: :class:`~.measure.Exemplar`);
* apply: :mod:`.carry` (a measured field carried into the query's face frame), :mod:`.apply`
  (an :class:`~.measure.Exemplar` applied to one query's pixels).

Nothing here reads or writes files; :mod:`mirrorppr_cli.retouch_job` does, for the CLI.
"""
