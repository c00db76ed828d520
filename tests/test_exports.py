"""The edit exported beside the output reproduces the output: resampling the query through
each exported map (read back from the file, converted with the convention the docs state,
resampled by OpenCV's remap) gives the tool's own pixels to within interpolation error."""

from __future__ import annotations

import io
import json
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from mirrorppr_cli.errors import OutputError, UsageError
from mirrorppr_cli.exports import parse_kinds
from mirrorppr_cli.geometric.apply import sampling_map
from mirrorppr_cli.geometric.landmarks import find_faces
from mirrorppr_cli.geometric.measure import measure_exemplar
from mirrorppr_cli.geometric.mls import apply_local_warp
from mirrorppr_cli.ops import OpRequest, plan_warp
from mirrorppr_cli.retouch_job import retouch_file

ALL = ("stmap", "displace", "npy", "layers")


@pytest.fixture(scope="module")
def job(astronaut_512, astronaut_512_points, tmp_path_factory):
    folder = tmp_path_factory.mktemp("exports")
    before = np.asarray(astronaut_512)
    after = apply_local_warp(before, plan_warp(astronaut_512_points,
                                               [OpRequest("eye_resize", 60),
                                                OpRequest("mouth_resize", -50)]))
    exemplar = measure_exemplar(before, after, mode="hybrid")
    query = np.ascontiguousarray(np.fliplr(before)[30:, 10:])
    Image.fromarray(query).save(folder / "q.png")
    report = retouch_file(exemplar, folder / "q.png", folder / "q_out.png", strength=0.9,
                          exports=ALL)
    out = np.asarray(Image.open(folder / "q_out.png"))
    return exemplar, query, out, report, folder


def _remap(query: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    return cv2.remap(query, map_x.astype(np.float32), map_y.astype(np.float32),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _reproduces(query: np.ndarray, out: np.ndarray, resampled: np.ndarray) -> None:
    changed = np.any(out != query, axis=-1)
    diff = np.abs(resampled.astype(int) - out.astype(int))
    assert changed.sum() > 500
    assert diff[changed].mean() < 0.5 and diff.max() <= 12
    assert np.array_equal(resampled[~changed], query[~changed]) or diff[~changed].max() <= 1


def test_every_kind_is_written_beside_the_output(job):
    _, _, _, report, folder = job
    names = sorted(os.path.basename(p) for p in report.exports)
    assert names == sorted(["q_out.stmap.exr", "q_out.displace-x.png", "q_out.displace-y.png",
                            "q_out.displace.json", "q_out.map.npy", "q_out.layers.tif"])
    assert not list(folder.glob("*.part"))


def test_npy_is_the_tools_inverse_map(job, astronaut_512):
    exemplar, query, out, _, folder = job
    saved = np.load(folder / "q_out.map.npy", allow_pickle=False)
    assert saved.dtype == np.float32 and saved.shape == query.shape[:2] + (2,)
    own = sampling_map(exemplar, query, find_faces(query)[0].points, 0.9)
    assert np.abs(saved - own).max() < 0.05
    _reproduces(query, out, _remap(query, saved[..., 0], saved[..., 1]))


def test_stmap_read_back_by_opencv_reproduces_the_output(job):
    """s = (x + 0.5) / W, t = 1 − (y + 0.5) / H, red and green; OpenCV reads EXR as BGR."""
    _, query, out, _, folder = job
    os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
    bgr = cv2.imread(str(folder / "q_out.stmap.exr"), cv2.IMREAD_UNCHANGED)
    assert bgr.dtype == np.float32 and bgr.shape == query.shape[:2] + (3,)
    height, width = query.shape[:2]
    s, t = bgr[..., 2].astype(np.float64), bgr[..., 1].astype(np.float64)
    map_x, map_y = s * width - 0.5, (1.0 - t) * height - 0.5
    npy = np.load(folder / "q_out.map.npy")
    assert max(np.abs(map_x - npy[..., 0]).max(), np.abs(map_y - npy[..., 1]).max()) < 0.05
    # an untouched corner is the identity: s, t at pixel centres, t counted from the bottom
    assert s[0, 0] == pytest.approx(0.5 / width) and t[0, 0] == pytest.approx(1 - 0.5 / height)
    _reproduces(query, out, _remap(query, map_x, map_y))


def test_displacement_maps_with_their_sidecar_reproduce_the_output(job):
    _, query, out, _, folder = job
    x16 = cv2.imread(str(folder / "q_out.displace-x.png"), cv2.IMREAD_UNCHANGED)
    y16 = cv2.imread(str(folder / "q_out.displace-y.png"), cv2.IMREAD_UNCHANGED)
    meta = json.loads((folder / "q_out.displace.json").read_text())
    assert x16.dtype == np.uint16 and x16.shape == query.shape[:2]
    scale, neutral = meta["scale_px"], meta["neutral"]
    height, width = x16.shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    map_x = xs + (x16 - neutral) / neutral * scale
    map_y = ys + (y16 - neutral) / neutral * scale
    npy = np.load(folder / "q_out.map.npy")
    assert np.abs(map_x - npy[..., 0]).max() <= scale / 32767 + 1e-4
    assert np.abs(map_y - npy[..., 1]).max() <= scale / 32767 + 1e-4
    _reproduces(query, out, _remap(query, map_x, map_y))


def test_layers_hold_query_retouched_and_mask(job):
    import tifffile

    _, query, out, _, folder = job
    with tifffile.TiffFile(folder / "q_out.layers.tif") as tif:
        pages = [page.asarray() for page in tif.pages]
        names = [page.tags[285].value for page in tif.pages]
    assert names == ["query", "retouched", "changed mask"]
    assert np.array_equal(pages[0], query) and np.array_equal(pages[1], out)
    assert np.array_equal(pages[2] == 255, np.any(out != query, axis=-1))


def test_strength_is_in_the_map(job):
    exemplar, query, _, _, _ = job
    points = find_faces(query)[0].points
    grid = np.dstack(np.meshgrid(np.arange(query.shape[1]), np.arange(query.shape[0])))
    full = np.abs(sampling_map(exemplar, query, points, 1.0) - grid).max()
    half = np.abs(sampling_map(exemplar, query, points, 0.5) - grid).max()
    assert full > 1.0 and half == pytest.approx(full / 2, rel=0.25)


def test_an_existing_export_stops_the_job_before_anything_is_written(job, tmp_path):
    exemplar, query, _, _, _ = job
    Image.fromarray(query).save(tmp_path / "q.png")
    (tmp_path / "o.map.npy").write_bytes(b"mine")
    with pytest.raises(OutputError, match="exists"):
        retouch_file(exemplar, tmp_path / "q.png", tmp_path / "o.png", exports=("npy",))
    assert not (tmp_path / "o.png").exists() and (tmp_path / "o.map.npy").read_bytes() == b"mine"


def test_kinds_are_checked():
    assert parse_kinds("npy, stmap,npy") == ("npy", "stmap") and parse_kinds(None) == ()
    with pytest.raises(UsageError, match="msh"):
        parse_kinds("stmap,msh")


def test_body_edits_are_in_the_map(astronaut_512, astronaut_512_points):
    """A carried body edit (moved or copied pixels, no feather) is reproduced by the map to
    within a grey level."""
    from test_body_transfer import _lift_shoulder

    from mirrorppr_cli.geometric.apply import apply_exemplar
    from mirrorppr_cli.geometric.body import detect_body

    before = np.asarray(astronaut_512)
    exemplar = measure_exemplar(before, _lift_shoulder(before, detect_body(before), 12))
    query = np.ascontiguousarray(cv2.resize(before, (448, 448), interpolation=cv2.INTER_AREA))
    points = find_faces(query)[0].points
    out = apply_exemplar(exemplar, query, points)
    inverse = sampling_map(exemplar, query, points)
    _reproduces(query, out, _remap(query, inverse[..., 0], inverse[..., 1]))


def test_apply_exports_reproduce_its_output(astronaut_512, tmp_path):
    """`apply --export`: face and body operations in one map; read back from the files and
    resampled by OpenCV, the query gives apply's own output."""
    from typer.testing import CliRunner

    from mirrorppr_cli.cli import app

    query = np.asarray(astronaut_512)
    Image.fromarray(query).save(tmp_path / "a.png")
    result = CliRunner().invoke(app, [
        "apply", str(tmp_path / "a.png"), "--op", "eye_resize=40", "--op", "jawline=-30",
        "--op", "shoulder_width=-50", "-o", str(tmp_path / "a_out.png"), "--export",
        "npy,stmap,layers", "--json"])
    assert result.exit_code == 0, result.output
    item = json.loads(result.stdout)["items"][0]
    assert sorted(os.path.basename(p) for p in item["exports"]) == [
        "a_out.layers.tif", "a_out.map.npy", "a_out.stmap.exr"]
    out = np.asarray(Image.open(tmp_path / "a_out.png"))
    inverse = np.load(tmp_path / "a_out.map.npy", allow_pickle=False)
    _reproduces(query, out, _remap(query, inverse[..., 0], inverse[..., 1]))
    identity = np.dstack(np.meshgrid(np.arange(512), np.arange(512)))
    moved = np.hypot(*(inverse - identity).transpose(2, 0, 1)) > 0.5
    again = CliRunner().invoke(app, [
        "apply", str(tmp_path / "a.png"), "--op", "eye_resize=40", "--op", "jawline=-30",
        "-o", str(tmp_path / "b_out.png"), "--export", "npy"])
    assert again.exit_code == 0
    face_only = np.load(tmp_path / "b_out.map.npy", allow_pickle=False)
    face_moved = np.hypot(*(face_only - identity).transpose(2, 0, 1)) > 0.5
    assert moved.sum() > face_moved.sum() + 5000  # the shoulders' move is in the map
    (tmp_path / "b_out.png").unlink()
    refused = CliRunner().invoke(app, [
        "apply", str(tmp_path / "a.png"), "--op", "eye_resize=40", "-o",
        str(tmp_path / "b_out.png"), "--export", "npy"])
    assert refused.exit_code == 4 and "b_out.map.npy" in refused.output
    assert not (tmp_path / "b_out.png").exists()  # nothing written when an export exists


def test_the_query_body_is_detected_once_for_the_output_and_its_map(astronaut_512, tmp_path,
                                                                     monkeypatch):
    """retouch_file with an export retouches twice (pixels, then coordinates): one Subject
    holds the query's body for both (mirrorppr_cli.subject)."""
    from test_body_transfer import _lift_shoulder

    import mirrorppr_cli.geometric.body as body_module

    before = np.asarray(astronaut_512)
    exemplar = measure_exemplar(before, _lift_shoulder(before, body_module.detect_body(before),
                                                       12))
    Image.fromarray(cv2.resize(before, (448, 448), interpolation=cv2.INTER_AREA)).save(
        tmp_path / "q.png")
    calls = []
    real = body_module.detect_body
    monkeypatch.setattr(body_module, "detect_body",
                        lambda rgb, **kw: calls.append(rgb.shape) or real(rgb, **kw))
    report = retouch_file(exemplar, tmp_path / "q.png", tmp_path / "q_out.png", exports=("npy",))
    assert report.changed_pixels > 500 and len(report.exports) == 1
    assert calls == [(448, 448, 3)]


def test_kinds_encoded_in_threads_give_the_bytes_of_one_thread(job, tmp_path):
    from mirrorppr_cli.exports import _encode_kind, encode_exports

    exemplar, query, out, _, _ = job
    inverse = sampling_map(exemplar, query, find_faces(query)[0].points, 0.9)
    together = encode_exports(ALL, inverse, query, out, tmp_path / "o.png")
    alone = [data for kind in ALL for data in _encode_kind(kind, inverse, query, out)]
    assert [data for _, data in together] == alone
    assert [p.name for p, _ in together][:2] == ["o.stmap.exr", "o.displace-x.png"]


def _random_map(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An inverse map with identity, small and large moves (some far outside the image)."""
    rng = np.random.default_rng(seed)
    grid = np.dstack(np.meshgrid(np.arange(width), np.arange(height))).astype(np.float32)
    moved = grid + rng.normal(0, 3, grid.shape).astype(np.float32)
    moved[: height // 3] = grid[: height // 3]  # untouched rows
    moved[-2:, -3:] = rng.uniform(-5000, 5000, (2, 3, 2)).astype(np.float32)
    return np.ascontiguousarray(moved)


def test_conversions_keep_the_float32_steps_of_their_formulas():
    """to_stmap / to_displacement compute in place, in planes: the values are those of the
    documented formulas evaluated plainly (the code before, bit for bit)."""
    from mirrorppr_cli.exports import DISPLACE_NEUTRAL, to_displacement, to_stmap

    for inverse in (_random_map(61, 47), _random_map(5, 3, seed=1),
                    np.zeros((0, 4, 2), np.float32)):
        height, width = inverse.shape[:2]
        s = (inverse[..., 0] + 0.5) / width
        t = 1.0 - (inverse[..., 1] + 0.5) / height
        plain = np.dstack([s, t, np.zeros_like(s)]).astype(np.float32)
        stmap = to_stmap(inverse)
        assert stmap.dtype == np.float32 and stmap.shape == plain.shape
        assert np.array_equal(stmap, plain)
        assert all(stmap[..., c].flags.c_contiguous for c in range(3))

        xs, ys = np.meshgrid(np.arange(width, dtype=np.float32),
                             np.arange(height, dtype=np.float32))
        dx, dy = inverse[..., 0] - xs, inverse[..., 1] - ys
        scale = float(max(1.0, np.ceil(max(np.abs(dx).max(initial=0),
                                           np.abs(dy).max(initial=0)))))
        x_map, y_map, got_scale = to_displacement(inverse)
        assert got_scale == scale
        for got, d in ((x_map, dx), (y_map, dy)):
            want = np.clip(np.rint(DISPLACE_NEUTRAL + DISPLACE_NEUTRAL * d / scale), 0,
                           65535).astype(np.uint16)
            assert got.dtype == np.uint16 and np.array_equal(got, want)


def test_stmap_exr_holds_the_exact_floats(tmp_path):
    """The OpenEXR writer's file: three float32 channels, PIZ, the STMap's floats bit for bit
    as OpenCV (the tests' reader, BGR) and OpenEXR read them."""
    import OpenEXR

    from mirrorppr_cli.exports import _encode_exr, to_stmap

    stmap = to_stmap(_random_map(70, 90))
    (tmp_path / "m.exr").write_bytes(_encode_exr(stmap))
    os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
    bgr = cv2.imread(str(tmp_path / "m.exr"), cv2.IMREAD_UNCHANGED)
    assert bgr.dtype == np.float32 and np.array_equal(bgr[..., ::-1], stmap)
    with OpenEXR.File(str(tmp_path / "m.exr"), separate_channels=True) as exr:
        # (the header and channels are emptied when the file closes)
        assert exr.header()["compression"] == OpenEXR.PIZ_COMPRESSION
        channels = exr.channels()
        assert sorted(channels) == ["B", "G", "R"]
        for c, name in enumerate("RGB"):
            assert channels[name].pixels.dtype == np.float32
            assert np.array_equal(channels[name].pixels, stmap[..., c])


def test_npy_bytes_are_numpys_own():
    from mirrorppr_cli.exports import _encode_npy

    inverse = _random_map(33, 21)
    buffer = io.BytesIO()
    np.save(buffer, inverse, allow_pickle=False)
    assert _encode_npy(inverse) == buffer.getvalue()
    assert _encode_npy(inverse[::2]) == _encode_npy(np.ascontiguousarray(inverse[::2]))


@pytest.mark.parametrize("shape, dtype", [((70, 45, 3), np.uint8), ((70, 45, 4), np.uint8),
                                          ((70, 45, 1), np.uint8), ((70, 45, 2), np.uint8),
                                          ((70, 45, 3), np.uint16)])
def test_layers_pages_hold_every_pixel(shape, dtype):
    """Strips of the retouched page without a change are the query's compressed strips
    again; every page reads back exactly, whatever the channels and depth."""
    import tifffile

    from mirrorppr_cli.exports import LAYERS_ROWS_PER_STRIP, _encode_layers

    rng = np.random.default_rng(3)
    query = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    retouched = query.copy()
    retouched[20:23, 5:9, -1] ^= 1  # one channel of a few pixels in one strip
    retouched[-1, -1, 0] ^= 1
    changed = np.any(query != retouched, axis=-1)
    data = _encode_layers(query, retouched)
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        assert len(tif.pages) == 3
        pages = [page.asarray() for page in tif.pages]
        assert [page.tags[285].value for page in tif.pages] == ["query", "retouched",
                                                                "changed mask"]
        assert tif.pages[0].rowsperstrip == LAYERS_ROWS_PER_STRIP
        strips = [[data[o:o + n] for o, n in zip(page.dataoffsets, page.databytecounts,
                                                      strict=True)]
                  for page in tif.pages[:2]]
    squeeze = shape[2] == 1
    assert np.array_equal(pages[0], query[..., 0] if squeeze else query)
    assert np.array_equal(pages[1], retouched[..., 0] if squeeze else retouched)
    assert pages[2].dtype == np.uint8 and np.array_equal(pages[2], np.where(changed, 255, 0))
    # untouched strips: the query's compressed bytes again; the two touched ones: others
    touched = {20 // LAYERS_ROWS_PER_STRIP, (shape[0] - 1) // LAYERS_ROWS_PER_STRIP}
    assert len(strips[0]) == len(strips[1]) == -(-shape[0] // LAYERS_ROWS_PER_STRIP)
    assert [i for i, (a, b) in enumerate(zip(*strips, strict=True)) if a != b] == sorted(touched)


def test_stmap_exr_bytes_do_not_depend_on_the_thread_pool():
    """The EXR is compressed on OpenEXR's own thread pool (set by the writer): the bytes are
    those of one thread."""
    import OpenEXR

    from mirrorppr_cli.exports import ENCODE_THREADS, _encode_exr, to_stmap

    stmap = to_stmap(_random_map(300, 200))  # several PIZ chunks of 32 lines
    before = OpenEXR.global_thread_count()
    try:
        OpenEXR.set_global_thread_count(0)
        one = _encode_exr(stmap)
        assert OpenEXR.global_thread_count() == ENCODE_THREADS  # the writer set its pool
        OpenEXR.set_global_thread_count(max(ENCODE_THREADS, 3))
        assert _encode_exr(stmap) == one
    finally:
        OpenEXR.set_global_thread_count(before)
