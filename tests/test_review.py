"""The review page (#21): its components, its images, ``mirrorppr review``, and the page in a
real headless Chromium (skipped with a reason where none is installed)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import cv2
import numpy as np
import pytest
import typer
from PIL import Image
from skimage import data
from typer.testing import CliRunner

from mirrorppr_cli import review_page as RP
from mirrorppr_cli.cli.review import review_command
from mirrorppr_cli.review_assets import (
    THUMB_SIDE,
    item_id,
    save_exemplar_assets,
    save_item_assets,
    save_query_assets,
)

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def _review_app() -> typer.Typer:
    """``mirrorppr review`` on its own (the same function cli.py registers)."""
    app = typer.Typer(add_completion=False)
    app.command("review")(review_command)
    app.callback()(lambda: None)
    return app


def _textured(height: int = 300, width: int = 400, seed: int = 0) -> np.ndarray:
    """A smooth random RGB picture: moving any part of it changes pixels."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 10, width // 10, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def _shifted(query: np.ndarray, box: tuple[int, int, int, int], dx: float):
    """``(output, inverse map)``: the content inside ``box`` moved right by ``dx`` px."""
    height, width = query.shape[:2]
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    field = np.dstack([xs, ys])
    x0, y0, x1, y1 = box
    field[y0:y1, x0:x1, 0] -= dx
    output = cv2.remap(query, field[..., 0], field[..., 1], cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REFLECT)
    return output, field


def _item(name: str, **fields) -> dict:
    base = {"input": f"{name}.png", "output": f"{name}_retouched.png", "status": "ok",
            "error": None, "exit_code": 0, "changed_pixels": 100, "strength": 1.0,
            "notes": [], "review": [], "size": [100, 100]}
    return {**base, **fields}


def _report(items: list[dict]) -> dict:
    return {"items": items, "summary": {"ok": sum(i["status"] == "ok" for i in items),
                                        "failed": sum(i["status"] == "failed" for i in items),
                                        "to_review": sum(bool(i.get("review")) for i in items),
                                        "catalog": {"ops": [{"name": "eye_resize",
                                                             "strength": 52.1}]}}}


# --------------------------------------------------------------------------- components


def test_every_text_is_escaped():
    hostile = '<script>alert("x")</script>'
    report = _report([_item(f"a{hostile}", notes=[hostile], review=[f"look {hostile}"]),
                      _item("b", status="failed", error=f"b.png: {hostile} & more")])
    report["summary"]["catalog"]["ops"] = [{"name": hostile, "strength": 10}]
    page = RP.build_page(report, {})
    assert hostile not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&amp; more" in page
    assert RP.esc('"\'<>&') == "&quot;&#x27;&lt;&gt;&amp;"


def test_links_are_quoted_relative_urls():
    assert RP.url("shoot 1/a#2?.jpg") == "shoot%201/a%232%3F.jpg"
    card = RP.image_card("assets/x y.jpg", "a <b>", href="../out/100%.jpg")
    assert 'src="assets/x%20y.jpg"' in card and 'href="../out/100%25.jpg"' in card
    assert "a &lt;b&gt;" in card
    assert "<img" not in RP.image_card(None, "no picture")


def test_slider_is_a_keyboard_range_input_with_a_side_by_side_fallback():
    html = RP.compare_slider("assets/q.jpg", "assets/o.jpg", label="x.jpg", size=[480, 360])
    assert re.search(r'<input type="range"[^>]*aria-label="before and after of x.jpg', html)
    assert html.index('class="before"') < html.index('class="after"')
    # without JavaScript the input is hidden and the pair is shown side by side
    assert ".compare input{display:none}" in RP.CSS and ".js .compare input{display:block" in RP.CSS
    assert ".compare .pair{display:flex" in RP.CSS


def _labels(flags) -> list[list[str]]:
    return [[f.label for f in item] for item in flags]


def test_an_edit_far_from_the_batch_median_is_flagged():
    items = [_item(n, changed_pixels=c) for n, c in
             (("a", 100), ("b", 120), ("c", 90), ("d", 1000), ("e", 110), ("f", 0))]
    labels = _labels(RP.item_flags(items, [None] * len(items)))
    assert labels == [[], [], [], ["edit far from median"], [], ["edit far from median"]]
    why = RP.item_flags(items, [None] * len(items))[3][0].why
    assert "10.00 %" in why and "1.05 %" in why
    # two frames have no median to speak of
    assert _labels(RP.item_flags(items[2:4], [None, None])) == [[], []]


def test_review_failed_no_face_and_large_motion_are_flagged():
    items = [_item("a", review=["3 new dot-like blobs"]), _item("b", exit_code=7),
             _item("c", status="failed", error="c.png: no face found; use a photo …",
                   exit_code=3),
             _item("d", status="failed", error="d.png: truncated", exit_code=3),
             _item("e", changed_pixels=8000)]  # 1 %, as the others
    assets = [None, None, None, None, {"max_motion_px": 30.0, "size": [1000, 800]}]
    flags = RP.item_flags(items, assets)
    assert _labels(flags) == [["review"], ["review"], ["face not found"], ["failed"],
                              ["large motion"]]
    assert flags[0][0].why == "3 new dot-like blobs" and "exit 7" in flags[1][0].why
    assert "3.0 % of the long side" in flags[4][0].why
    assert _labels(RP.item_flags([_item("e")], [{"max_motion_px": 5.0, "size": [1000, 800]}])) \
        == [[]]


def test_flagged_frames_come_first_with_their_reasons_on_the_page():
    items = [_item("calm"), _item("odd", review=["torn contour near the ear"]),
             _item("gone", status="failed", error="gone.png: no face found", exit_code=3)]
    page = RP.build_page(_report(items), {})
    sections = re.findall(r'<section class="([^"]+)" id="(item-\d+)"', page)
    assert [s[1] for s in sections] == ["item-2", "item-3", "item-1"]
    assert "flagged" in sections[0][0] and "failed" in sections[1][0]
    assert "torn contour near the ear" in page and 'href="#item-2"' in page
    assert 'id="only-flagged"' in page  # the no-JS filter
    # the exemplar's operations, scaled by each item's strength
    scaled = RP.build_page(_report([_item("half", strength=0.5)]), {})
    assert '<td class="num">+26</td>' in scaled


def test_the_bench_report_is_built_from_the_same_components(tmp_path):
    from mirrorppr_cli.bench.datasets import Benchmark, Item
    from mirrorppr_cli.bench.report import html_report

    item = Item(0, tmp_path / "b.png", tmp_path / "a.png", tmp_path / "q.png", None, "eyes <+>")
    payload = {"dataset": "tiny", "items": 1, "methods": {"warp": {"summary": {}, "rows": [
        {"item": 0, "error": "q.png: no face found", "failed": True}]}}}
    page = html_report(payload, Benchmark("tiny", tmp_path, [item]),
                       {0: {"query": "report_images/0000_query.jpg"}})
    assert RP.CSS in page and RP.HEAD_SCRIPT in page  # one shell
    assert RP.badge("failed", "bad", "q.png: no face found") in page
    assert RP.image_card("report_images/0000_query.jpg", "query", lazy=False) in page
    assert "eyes &lt;+&gt;" in page


# --------------------------------------------------------------------------- images


def test_item_assets_show_the_edited_region_and_its_motion(tmp_path):
    query = _textured(600, 800)
    output, field = _shifted(query, (300, 200, 360, 260), 3.0)
    asset = save_item_assets(tmp_path, "0007", query, output, field)
    assert asset["heatmap"] == "motion" and asset["max_motion_px"] == pytest.approx(3.0, abs=0.01)
    x0, y0, x1, y1 = asset["region"]
    assert x0 <= 300 and y0 <= 200 and x1 >= 360 and y1 >= 260  # the moved box, with a margin
    assert (x1 - x0) < 800 and (y1 - y0) < 600  # not the whole frame
    assert asset["size"] == [800, 600] and 0 < asset["changed_share"] < 0.05
    for slot in ("query", "output", "motion"):
        assert asset[slot] == f"assets/0007_{slot}.jpg"
        thumb = cv2.imread(str(tmp_path / asset[slot]))
        assert max(thumb.shape[:2]) == THUMB_SIDE
        assert [thumb.shape[1], thumb.shape[0]] == asset["thumb_size"]
    heat = cv2.imread(str(tmp_path / asset["motion"]))
    # coloured where it moved (inside the box), grey elsewhere
    scale = asset["thumb_size"][0] / (x1 - x0)
    cx, cy = int((330 - x0) * scale), int((230 - y0) * scale)
    inside = heat[cy - 5:cy + 5, cx - 5:cx + 5].astype(int)
    corner = heat[:10, :10].astype(int)
    assert np.ptp(inside, axis=2).mean() > 40 and np.ptp(corner, axis=2).mean() < 8
    assert not list(tmp_path.rglob("*.part"))


def test_item_assets_without_a_field_show_the_difference(tmp_path):
    query = _textured()
    output, _ = _shifted(query, (100, 100, 160, 150), 4.0)
    asset = save_item_assets(tmp_path, "0000", query, output, None)
    assert asset["heatmap"] == "difference" and asset["max_motion_px"] is None
    assert asset["region"] != [0, 0, 400, 300]
    unchanged = save_item_assets(tmp_path, "0001", query, query.copy(), None)
    assert unchanged["region"] == [0, 0, 400, 300] and unchanged["changed_share"] == 0
    with pytest.raises(ValueError):
        save_item_assets(tmp_path, "../x", query, output, None)


def test_the_exemplar_pair_is_shown_and_made_from_its_files_when_missing(tmp_path):
    before = _textured(seed=5)
    after, _ = _shifted(before, (200, 120, 260, 180), 3.0)
    cropped = save_exemplar_assets(tmp_path / "direct", before, after)
    x0, y0, x1, y1 = cropped["region"]
    assert x0 <= 200 and x1 >= 260 and (x1 - x0) < 400  # the edited part, not the frame
    for slot, rgb in (("before", before), ("after", after)):
        cv2.imwrite(str(tmp_path / f"{slot}.png"), rgb[..., ::-1])
    report = _report([_item("a")])
    report["summary"]["exemplar"] = [str(tmp_path / "before.png"), str(tmp_path / "after.png")]
    page = RP.write_review(tmp_path / "review", report, {}).read_text()
    saved = json.loads((tmp_path / "review" / "review.json").read_text())["assets"]["exemplar"]
    assert saved["region"] == cropped["region"]
    assert saved["links"] == {"before": "../before.png", "after": "../after.png"}
    assert 'src="assets/exemplar_before.jpg"' in page and "before.png → after.png" in page


def test_a_failed_item_shows_its_query(tmp_path):
    asset = save_query_assets(tmp_path, "0000", _textured(600, 900))
    assert asset["size"] == [900, 600] and asset["thumb_size"] == [THUMB_SIDE, 320]
    asset["links"] = {"query": "../shoot/x.png"}
    item = _item("x", status="failed", error="/far/away/x.png: no face found", exit_code=3,
                 input="/far/away/x.png", output=None)
    page = RP.build_page(_report([item]), {"0000": asset})
    assert RP.image_card("assets/0000_query.jpg", "query, whole frame", href="../shoot/x.png",
                         size=[THUMB_SIDE, 320], cls="thumb", alt="query of x.png") in page
    assert "<li>x.png: no face found</li>" in page  # the name stands for the path


# --------------------------------------------------------------------------- writing


def _run_folder(tmp_path: Path, names=("one", "two", "three")) -> tuple[Path, dict]:
    """Queries and outputs on disk and the report a run over them prints (paths as given)."""
    folder = tmp_path / "shoot"
    (folder / "out").mkdir(parents=True)
    items = []
    for seed, name in enumerate(names):
        query = _textured(seed=seed)
        output, _ = _shifted(query, (150, 100, 220, 170), 2.0 + seed)
        cv2.imwrite(str(folder / f"{name}.png"), query[..., ::-1])
        cv2.imwrite(str(folder / "out" / f"{name} #1.png"), output[..., ::-1])
        items.append(_item(str(folder / name), input=str(folder / f"{name}.png"),
                           output=str(folder / "out" / f"{name} #1.png"),
                           changed_pixels=int(np.count_nonzero((query != output).any(2))),
                           size=None))
    items.append(_item("x", status="failed", input=str(folder / "missing.png"), output=None,
                       error="missing.png: no face found", exit_code=3))
    return folder, _report(items)


def _local_refs(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"#][^"]*)"', page)


def test_write_review_writes_the_page_and_its_data_with_links_that_resolve(tmp_path):
    folder, report = _run_folder(tmp_path)
    review = tmp_path / "review"
    assets = {}
    for index, item in enumerate(report["items"][:3]):
        query = cv2.imread(item["input"])[..., ::-1]
        output = cv2.imread(item["output"])[..., ::-1]
        assets[item_id(index)] = save_item_assets(review, item_id(index), query, output, None)
    page_path = RP.write_review(review, report, assets)
    assert page_path == review / "index.html"
    page = page_path.read_text()
    refs = _local_refs(page)
    assert len(refs) >= 3 * 3 + 3 * 2  # three thumbnails and two full-size links per item
    for ref in refs:
        assert "://" not in ref and not ref.startswith("/"), ref
        assert (review / unquote(ref)).is_file(), ref
    assert "out/one%20%231.png" in page  # the real output, quoted
    saved = json.loads((review / "review.json").read_text())
    assert saved["report"] == report and saved["assets"]["0000"]["links"]["output"] \
        == "../shoot/out/one #1.png"
    assert sorted(p.name for p in review.iterdir()) == ["assets", "index.html", "review.json"]


def test_a_failed_write_leaves_the_previous_page_whole(tmp_path, monkeypatch):
    _, report = _run_folder(tmp_path)
    review = tmp_path / "review"
    RP.write_review(review, report, {})
    before = (review / "index.html").read_bytes()
    real_replace = os.replace

    def disk_full(src, dst):
        if str(dst).endswith("index.html"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", disk_full)
    report["items"][0]["notes"] = ["changed"]
    with pytest.raises(OSError):
        RP.write_review(review, report, {})
    assert (review / "index.html").read_bytes() == before
    assert [p.name for p in review.iterdir() if p.name.startswith(".")] == []


# --------------------------------------------------------------------------- the command


def test_review_command_from_a_json_report_and_again_from_its_folder(tmp_path, monkeypatch):
    folder, report = _run_folder(tmp_path)
    # paths relative to the run's folder, as `retouch --json` prints them when run there
    for item in report["items"]:
        for key in ("input", "output"):
            if item[key]:
                item[key] = os.path.relpath(item[key], folder)
    (folder / "run.json").write_text(json.dumps(report))
    monkeypatch.chdir(tmp_path)  # elsewhere: files are found beside the report
    result = runner.invoke(_review_app(), ["review", str(folder / "run.json")])
    assert result.exit_code == 0, result.output
    review = folder / "run-review"
    assert "review page:" in result.stdout and "(4 frames, 1 flagged)" in result.stdout
    page = (review / "index.html").read_text()
    assert all((review / unquote(ref)).is_file() for ref in _local_refs(page))
    assert page.count('class="compare thumb"') == 3 and "pixel difference" in page
    # again from the folder: the page is rendered from review.json, links kept
    (review / "index.html").unlink()
    result = runner.invoke(_review_app(), ["review", str(review), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["items"] == 4
    assert (review / "index.html").read_text() == page
    # an --out that holds files needs --force
    result = runner.invoke(_review_app(), ["review", str(folder / "run.json")])
    assert result.exit_code == 4 and "--force" in result.stderr
    assert runner.invoke(_review_app(), ["review", str(folder / "run.json"), "--force"]) \
        .exit_code == 0


@pytest.mark.parametrize(("make", "code", "words"), [
    (lambda p: p / "nothing.json", 3, "not found"),
    (lambda p: (p / "bad.json").write_text("{oops") and p / "bad.json", 3, "not a JSON report"),
    (lambda p: (p / "list.json").write_text("[1]") and p / "list.json", 3, "no items"),
    (lambda p: p, 3, "no review.json"),
])
def test_review_command_refuses_what_it_cannot_use(tmp_path, make, code, words):
    result = runner.invoke(_review_app(), ["review", str(make(tmp_path))])
    assert result.exit_code == code and words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_review_command_takes_no_out_for_a_folder(tmp_path):
    _, report = _run_folder(tmp_path)
    RP.write_review(tmp_path / "review", report, {})
    result = runner.invoke(_review_app(), ["review", str(tmp_path / "review"), "--out", "x"])
    assert result.exit_code == 2 and "--out is for a JSON report" in result.stderr


def test_review_command_warns_of_missing_files_and_reports_unwritable_folders(tmp_path):
    folder, report = _run_folder(tmp_path)
    Path(report["items"][1]["output"]).unlink()
    (folder / "run.json").write_text(json.dumps(report))
    result = runner.invoke(_review_app(), ["review", str(folder / "run.json")])
    assert result.exit_code == 0, result.output
    assert "warning: item 2:" in result.stderr and "shown without pictures" in result.stderr
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    result = runner.invoke(_review_app(), ["review", str(folder / "run.json"),
                                           "--out", str(blocked / "review")])
    assert result.exit_code == 4 and "could not be written" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- in a browser


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    return None


def _browse(page: Path, profile: Path, *options: str) -> subprocess.CompletedProcess:
    """Headless Chromium on ``page`` (file://) with a fresh profile; console messages go to
    stderr (``--enable-logging=stderr``); virtual time lets every image load first."""
    command = [_chromium(), "--headless", "--disable-gpu", "--no-first-run",
               "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
               "--virtual-time-budget=8000", *options, page.as_uri()]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.insert(1, "--no-sandbox")  # Chromium refuses root without it
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


class _Dom(HTMLParser):
    """The ``<body>``'s and every ``<img>``'s attributes of a dumped DOM."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.body: dict = {}
        self.root: dict = {}
        self.images: list[dict] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag == "body":
            self.body = dict(attrs)
        elif tag == "html":
            self.root = dict(attrs)


def _render(page: Path, tmp: Path) -> tuple[_Dom, list[str]]:
    """The page's DOM after load and its console messages (any is an error here: the page
    writes none)."""
    done = _browse(page, tmp / "profile-dom", "--window-size=1280,12000", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if re.search(r":CONSOLE[:(]", line)]
    return _Dom(done.stdout), console


needs_chromium = pytest.mark.skipif(
    _chromium() is None, reason="no Chromium (chromium, chromium-browser or google-chrome) on "
    "PATH; CI installs it with apt-get (see .ci/run)")


@needs_chromium
def test_the_browser_check_sees_a_broken_image_and_a_console_error(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(RP.page("broken", '<img src="nowhere.jpg" alt="x">'
                                      '<script>console.error("boom")</script>'))
    dom, console = _render(page, tmp_path)
    assert dom.images[0].get("data-state") == "failed"
    assert dom.body.get("data-images-failed") == "1"
    assert any("boom" in line for line in console)


def _public_domain_run(tmp_path: Path) -> Path:
    """A real ``retouch`` over public-domain pictures (scikit-image's astronaut, NASA, and its
    coffee, CC0): the demo's exemplar pair (eyes enlarged, mouth narrowed), four queries, one
    without a face; saved with ``--json``, with the motion fields (``--export npy``)."""
    from mirrorppr_cli.cli import app
    from mirrorppr_cli.geometric.landmarks import find_faces
    from mirrorppr_cli.geometric.mls import apply_local_warp
    from mirrorppr_cli.ops import OpRequest, plan_warp

    folder = tmp_path / "shoot"
    folder.mkdir()
    before = data.astronaut()
    ops = [OpRequest("eye_resize", 60), OpRequest("mouth_resize", -40)]
    after = apply_local_warp(before, plan_warp(find_faces(before)[0].points, ops))
    turn = cv2.getRotationMatrix2D((256, 256), 8, 0.8)
    pictures = {
        "exemplar_before.png": before, "exemplar_after.png": after,
        "astronaut_turned.png": cv2.warpAffine(np.fliplr(before).copy(), turn, (512, 512),
                                               borderMode=cv2.BORDER_REFLECT),
        "astronaut_close.jpg": cv2.resize(before[40:360, 80:400], (640, 640)),
        "astronaut_wide.jpg": cv2.copyMakeBorder(before, 0, 0, 128, 128, cv2.BORDER_REFLECT),
        "coffee.jpg": data.coffee(),
    }
    for name, rgb in pictures.items():
        cv2.imwrite(str(folder / name), np.ascontiguousarray(rgb[..., ::-1]))
    queries = [str(folder / n) for n in pictures if not n.startswith("exemplar")]
    result = runner.invoke(app, [
        "retouch", "--ex", str(folder / "exemplar_before.png"), str(folder / "exemplar_after.png"),
        "--query", *queries, "-o", str(folder / "out") + "/", "--export", "npy", "--json"])
    assert result.exit_code == 1, result.output  # the coffee has no face
    (folder / "run.json").write_text(result.stdout)
    result = runner.invoke(_review_app(), ["review", str(folder / "run.json")])
    assert result.exit_code == 0, result.output
    return folder / "run-review" / "index.html"


@needs_chromium
def test_the_page_of_a_real_run_renders_in_chromium(tmp_path):
    page = _public_domain_run(tmp_path)
    text = page.read_text()
    assert "arrows lengthened" in text  # the motion fields were used
    dom, console = _render(page, tmp_path)
    assert console == []
    assert "js" in dom.root.get("class", "")  # the scripts ran
    assert len(dom.images) == 1 * 2 + 3 * 3 + 1  # exemplar, three frames, the failed query
    assert [i["src"] for i in dom.images if i.get("data-state") != "loaded"] == []
    assert dom.body.get("data-images") == str(len(dom.images))
    assert dom.body.get("data-images-failed") == "0"
    shot = tmp_path / "review-page.png"
    done = _browse(page, tmp_path / "profile-shot", "--window-size=1280,1500",
                   f"--screenshot={shot}")
    assert done.returncode == 0 and shot.stat().st_size > 50_000, done.stderr[-2000:]
    if os.environ.get("MIRRORPPR_SAVE_SCREENSHOT") == "1":
        shutil.copyfile(shot, REPO / "docs" / "review-page.png")


# --------------------------------------------------------------------------- --review on a run


def test_retouch_review_writes_the_motion_of_each_frame_from_its_worker(tmp_path):
    """`retouch --review DIR --workers 2`: the page, a motion heat-map per written frame (made
    by the worker that wrote it, from the edit's own inverse map), the failed query shown."""
    from skimage import data

    from mirrorppr_cli.cli import app
    from mirrorppr_cli.geometric.landmarks import find_faces
    from mirrorppr_cli.geometric.mls import apply_local_warp
    from mirrorppr_cli.ops import OpRequest, plan_warp

    before = data.astronaut()
    after = apply_local_warp(before, plan_warp(find_faces(before)[0].points,
                                               [OpRequest("eye_resize", 60)]))
    Image.fromarray(before).save(tmp_path / "before.png")
    Image.fromarray(after).save(tmp_path / "after.png")
    queries = tmp_path / "queries"
    queries.mkdir()
    Image.fromarray(np.ascontiguousarray(np.fliplr(before))).save(queries / "a.png")
    Image.fromarray(before[20:, 10:]).save(queries / "b.png")
    Image.fromarray(data.coffee()).save(queries / "c_no_face.png")
    review = tmp_path / "review"
    result = runner.invoke(app, ["retouch", "--ex", str(tmp_path / "before.png"),
                                 str(tmp_path / "after.png"), "--query", str(queries), "-o",
                                 str(tmp_path / "out") + "/", "--review", str(review),
                                 "--workers", "2", "--json"])
    assert result.exit_code == 1, result.output  # the coffee cup has no face
    run = json.loads(result.stdout)
    assert run["summary"]["review_page"] == str(review / "index.html")
    assert all("review" not in item["extra"] for item in run["items"])
    data_file = json.loads((review / "review.json").read_text())
    assets = data_file["assets"]
    assert [assets[k]["heatmap"] for k in ("0000", "0001")] == ["motion", "motion"]
    assert assets["0000"]["max_motion_px"] > 0.3
    assert "query" in assets["0002"] and "exemplar" in assets
    page = (review / "index.html").read_text()
    assert all((review / unquote(ref)).is_file() for ref in _local_refs(page))
    again = runner.invoke(app, ["retouch", "--ex", str(tmp_path / "before.png"),
                                str(tmp_path / "after.png"), "--query", str(queries), "-o",
                                str(tmp_path / "out2") + "/", "--review", str(review)])
    assert again.exit_code == 4 and "--force" in again.output  # a page is never overwritten
    assert not (tmp_path / "out2").exists()


def test_apply_review_shows_the_motion_of_the_operations(tmp_path):
    from skimage import data

    from mirrorppr_cli.cli import app

    Image.fromarray(data.astronaut()).save(tmp_path / "a.png")
    review = tmp_path / "review"
    result = runner.invoke(app, ["apply", str(tmp_path / "a.png"), "--op", "eye_resize=50",
                                 "-o", str(tmp_path / "a_out.png"), "--review", str(review)])
    assert result.exit_code == 0, result.output
    assets = json.loads((review / "review.json").read_text())["assets"]
    assert assets["0000"]["heatmap"] == "motion" and assets["0000"]["max_motion_px"] > 0.5
    assert "review page:" in result.output
