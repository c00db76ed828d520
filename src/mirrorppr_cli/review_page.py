"""The review page of a batch: one static ``index.html`` a person opens from a folder or a
file share to check every frame before it ships.

Components are functions that return HTML strings, every text html-escaped; the bench's
``report.html`` is built from the same ones (:func:`page`, :func:`image_card`,
:func:`badge`). The page needs no server and loads nothing from elsewhere: links are
relative, CSS and the little JavaScript are inline (a browser's file:// blocks ``fetch``).
Without JavaScript everything shows; only the before/after slider falls back to two images
side by side.
"""

from __future__ import annotations

import html
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from .data.shards import write_atomic
from .ops.request import clip_strength
from .review_assets import exemplar_from_files, relative_link

PAGE_FILE = "index.html"
DATA_FILE = "review.json"
#: A frame whose largest motion is at least this share of its long side is flagged.
LARGE_MOTION_SHARE = 0.02
#: An edit (changed-pixel share) this many times the batch's median, or under its inverse,
#: is flagged; only in batches of at least :data:`MEDIAN_MIN_ITEMS` measured frames.
FAR_FROM_MEDIAN = 2.5
MEDIAN_MIN_ITEMS = 3

CSS = """
:root{--bg:#f4f3f1;--card:#fff;--ink:#1c1917;--muted:#5b5550;--line:#e2dfdb;
--bad:#b91c1c;--warn:#a14a00;--info:#1d4ed8;--ok:#15803d;--thumb:400px}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
background:var(--bg);color:var(--ink)}
a{color:var(--info)}
.top{background:#1c1917;color:#f5f5f4;padding:14px 24px}
.top h1{font-size:19px;margin:0 0 2px}
.top p{margin:0;color:#d6d3d1}
main{padding:16px 24px;max-width:1700px}
.card{background:var(--card);border:1px solid var(--line);border-left:4px solid var(--line);
border-radius:8px;padding:12px 16px;margin:0 0 14px}
.card.flagged{border-left-color:var(--warn)}
.card.failed{border-left-color:var(--bad)}
h2{font-size:16px;margin:0}
h3{font-size:13px;margin:10px 0 4px;color:var(--muted);text-transform:uppercase;
letter-spacing:.04em}
.head{display:flex;flex-wrap:wrap;align-items:baseline;gap:6px 12px;margin-bottom:10px}
.head .meta{color:var(--muted);font-size:12px}
.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.facts{flex:1 1 260px;min-width:240px;max-width:560px}
figure{margin:0}
figure img{display:block;max-width:100%;height:auto;border-radius:4px;background:#d6d3d1}
figcaption{color:var(--muted);font-size:12px;margin-top:4px}
.thumb{width:min(var(--thumb),100%)}
.pairs{display:flex;gap:8px}
.pairs figure{flex:1 1 0}
.badge{display:inline-block;padding:0 8px;border-radius:999px;font-size:12px;font-weight:600;
border:1px solid currentColor;white-space:nowrap;margin:0 4px 2px 0}
.badge.bad{color:var(--bad);background:#fef2f2}
.badge.warn{color:var(--warn);background:#fff7ed}
.badge.info{color:var(--info);background:#eff6ff}
.badge.ok{color:var(--ok);background:#f0fdf4}
.stats{display:flex;flex-wrap:wrap;gap:6px 18px;margin:0 0 8px}
.stats b{font-size:18px}
ul.lines{margin:0;padding-left:18px}
ul.lines li{margin:2px 0}
.why{color:var(--muted)}
table.ops{border-collapse:collapse;font-size:13px}
table.ops td{padding:1px 8px 1px 0;vertical-align:middle}
table.ops td.num{text-align:right;font-variant-numeric:tabular-nums}
.bar{display:inline-block;width:100px;height:8px;background:#eee;position:relative;
border-radius:4px;vertical-align:middle}
.bar i{position:absolute;top:0;bottom:0;border-radius:4px}
.bar i.up{left:50%;background:#0f766e}
.bar i.down{right:50%;background:#c2410c}
.legend{display:flex;align-items:center;gap:6px;font-size:12px;color:var(--muted);margin-top:4px}
.ramp{display:inline-block;width:90px;height:8px;border-radius:4px;background:linear-gradient(
90deg,#000004,#420a68,#932667,#dd513a,#fca50a,#fcffa4)}
.compare .pair{display:flex;gap:4px;position:relative}
.compare .pair img{width:50%}
.compare input{display:none}
.js .compare .pair{display:grid}
.js .compare .pair>*{grid-area:1/1}
.js .compare .pair img{width:100%}
.js .compare img.after{clip-path:inset(0 0 0 var(--pos,50%))}
.js .compare .pair::after{content:"";position:absolute;top:0;bottom:0;left:var(--pos,50%);
width:2px;margin-left:-1px;background:#fff;box-shadow:0 0 0 1px rgba(0,0,0,.45);
pointer-events:none}
.js .compare input{display:block;position:absolute;inset:0;width:100%;height:100%;margin:0;
opacity:0;cursor:ew-resize}
.js .compare:focus-within .pair{outline:3px solid var(--info);outline-offset:2px}
.tag{position:absolute;top:6px;padding:0 6px;border-radius:4px;font-size:11px;
background:rgba(0,0,0,.55);color:#fff;pointer-events:none}
html:not(.js) .compare{width:min(calc(2 * var(--thumb)),100%)}
.tag.l{left:6px}.tag.r{right:6px}
.filter{margin:8px 0 0}
.look{margin-right:14px;white-space:nowrap}
body:has(#only-flagged:checked) .item:not(.flagged){display:none}
#missing{display:none}
#missing.shown{display:block;color:var(--bad)}
table.grid{border-collapse:collapse}
table.grid td,table.grid th{vertical-align:top;padding:4px;text-align:center}
table.grid td img{max-width:256px}
pre{background:#f5f5f4;padding:8px;border-radius:4px;overflow:auto}
"""

#: In the head: mark that JavaScript runs (the slider's CSS keys on it) and record every
#: image's load or failure as ``data-state`` (a person sees a warning; tests read the DOM).
HEAD_SCRIPT = """document.documentElement.classList.add('js');
addEventListener('load',function(e){var t=e.target;if(t&&t.tagName==='IMG')
t.setAttribute('data-state','loaded')},true);
addEventListener('error',function(e){var t=e.target;if(t&&t.tagName==='IMG')
t.setAttribute('data-state','failed')},true);"""

#: At the end: wire the sliders; once loaded, count the images and warn about missing ones.
TAIL_SCRIPT = """document.querySelectorAll('.compare input').forEach(function(r){
var box=r.closest('.compare');function show(){box.style.setProperty('--pos',r.value+'%');
r.setAttribute('aria-valuetext',r.value+'% before, '+(100-r.value)+'% after')}
r.addEventListener('input',show);show()});
addEventListener('load',function(){var bad=[],n=0;
Array.prototype.forEach.call(document.images,function(i){n++;
if(!i.getAttribute('data-state')&&i.complete)i.setAttribute('data-state',
i.naturalWidth>0?'loaded':'failed');
if(i.getAttribute('data-state')==='failed')bad.push(i.getAttribute('src'))});
document.body.setAttribute('data-images',n);document.body.setAttribute('data-images-failed',
bad.length);if(bad.length){var m=document.getElementById('missing');if(m){
m.textContent=bad.length+' image(s) could not be loaded (moved or not copied with the page?): '
+bad.join(', ');m.className='shown'}}});"""


# --------------------------------------------------------------------------- components


def esc(value: object) -> str:
    """``value`` as text, safe in HTML content and in quoted attributes."""
    return html.escape("" if value is None else str(value), quote=True)


def url(path: str) -> str:
    """A relative path (``/``-separated) as a URL: spaces, ``%``, ``#``, ``?`` and the like
    quoted (a browser would read ``#`` as the start of a fragment)."""
    return quote(path, safe="/")


def page(title: str, body: str, *, script: bool = True) -> str:
    """The whole document: the shared CSS, ``body`` (HTML) and the inline scripts."""
    head_js = f"<script>{HEAD_SCRIPT}</script>" if script else ""
    tail_js = f"<script>{TAIL_SCRIPT}</script>" if script else ""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style>{head_js}</head>\n"
            f'<body>{body}\n<p id="missing" role="alert"></p>{tail_js}</body></html>\n')


def badge(text: str, kind: str = "info", why: str | None = None) -> str:
    """A coloured label; ``kind``: bad, warn, info or ok; ``why`` is its tooltip."""
    title = f' title="{esc(why)}"' if why else ""
    return f'<span class="badge {esc(kind)}"{title}>{esc(text)}</span>'


def image_card(src: str | None, caption: str = "", *, href: str | None = None,
               alt: str | None = None, size: list[int] | None = None,
               lazy: bool = True, cls: str = "", extra: str = "") -> str:
    """A figure: the image (linked to ``href``, the full-size file, when given), a caption
    and ``extra`` HTML (a legend); ``size`` ``[W, H]`` reserves the space before the image
    loads; ``lazy``: loaded when scrolled near (a long batch over a file share)."""
    if not src:
        return f'<figure class="{esc(cls)}"><figcaption>{esc(caption) or "–"}</figcaption></figure>'
    dims = f' width="{int(size[0])}" height="{int(size[1])}"' if size else ""
    load = ' loading="lazy"' if lazy else ""
    img = f'<img src="{esc(url(src))}" alt="{esc(alt if alt is not None else caption)}"{dims}{load}>'
    if href:
        img = f'<a href="{esc(url(href))}">{img}</a>'
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure class="{esc(cls)}">{img}{cap}{extra}</figure>'


def compare_slider(before: str, after: str, *, label: str, size: list[int] | None = None,
                   before_href: str | None = None, after_href: str | None = None,
                   caption: str = "", lazy: bool = True) -> str:
    """Before/after of one frame: with JavaScript one image split by a divider that a range
    input moves (mouse, touch, arrow keys); without, the two images side by side. The
    ``*_href`` link the full-size files."""
    dims = f' width="{int(size[0])}" height="{int(size[1])}"' if size else ""
    dims += ' loading="lazy"' if lazy else ""
    links = [f'<a href="{esc(url(h))}">{what}</a>'
             for what, h in (("before", before_href), ("after", after_href)) if h]
    text = esc(caption or "before | after")
    if links:
        text += " · full size: " + " · ".join(links)
    return (f'<figure class="compare thumb"><div class="pair">'
            f'<img class="before" src="{esc(url(before))}" alt="before: {esc(label)}"{dims}>'
            f'<img class="after" src="{esc(url(after))}" alt="after: {esc(label)}"{dims}>'
            f'<span class="tag l">before</span><span class="tag r">after</span>'
            f'<input type="range" min="0" max="100" value="50" step="1" '
            f'aria-label="before and after of {esc(label)}: divider position">'
            f"</div><figcaption>{text}</figcaption></figure>")


def region_caption(asset: dict) -> str:
    """Which part of the frame a thumbnail shows."""
    region, size = asset.get("region"), asset.get("size")
    if not region or not size or list(region) == [0, 0, *size]:
        return "whole frame"
    x0, y0, x1, y1 = region
    return f"edited region: x {x0}–{x1}, y {y0}–{y1} of {size[0]}×{size[1]}"


def heatmap_card(asset: dict) -> str:
    """The motion heat-map (or difference map) and its legend."""
    if asset.get("heatmap") == "motion":
        what = "motion: colour = distance moved, arrows = direction"
        scale = f"0 … {asset.get('scale', 0):.2f} px"
        if asset.get("arrow_gain"):
            scale += f" · arrows lengthened ×{asset['arrow_gain']:.0f}"
    else:
        what = "pixel difference (no motion field stored)"
        scale = f"0 … {asset.get('scale', 0):.0f} grey levels"
    legend = f'<div class="legend"><span class="ramp"></span>{esc(scale)}</div>'
    return image_card(asset.get("motion"), what, size=asset.get("thumb_size"), cls="thumb",
                      alt=f"heat-map of the {asset.get('heatmap', 'motion')}", extra=legend)


def ops_table(ops: list[dict], *, scale: float = 1.0) -> str:
    """Named operations with their strengths (× ``scale``, clipped to ±100 like the tool)."""
    if not ops:
        return '<p class="why">no named operation</p>'
    rows = []
    for op in ops:
        value = clip_strength(float(op.get("strength", 0)) * scale)
        side = "up" if value >= 0 else "down"
        bar = f'<span class="bar"><i class="{side}" style="width:{abs(value) / 2:.1f}%"></i></span>'
        rows.append(f'<tr><td>{esc(op.get("name"))}</td><td class="num">{value:+.0f}</td>'
                    f"<td>{bar}</td></tr>")
    return f'<table class="ops">{"".join(rows)}</table>'


def text_list(title: str, lines: list[str], cls: str = "") -> str:
    """A titled bullet list; nothing when ``lines`` is empty."""
    if not lines:
        return ""
    items = "".join(f"<li>{esc(line)}</li>" for line in lines)
    return f'<h3>{esc(title)}</h3><ul class="lines {esc(cls)}">{items}</ul>'


# --------------------------------------------------------------------------- flags


@dataclass(frozen=True)
class Flag:
    """Why a person should look at a frame: ``kind`` (bad, warn, info), a label, details."""

    kind: str
    label: str
    why: str


def edit_size(item: dict, asset: dict | None) -> float | None:
    """How much of the frame the edit changed (share of pixels), from the report's
    ``changed_pixels`` over the frame's size, else the asset's own measure."""
    asset = asset or {}
    size = asset.get("size") or item.get("size")
    if item.get("changed_pixels") is not None and size:
        return item["changed_pixels"] / max(1, size[0] * size[1])
    return asset.get("changed_share")


def item_flags(items: list[dict], assets: list[dict | None]) -> list[list[Flag]]:
    """Per item, the flags for a person: failed, face not found, listed for review (exit 7),
    large motion, and an edit far from the batch's median."""
    sizes = [edit_size(item, asset) if item.get("status", "ok") == "ok" else None
             for item, asset in zip(items, assets, strict=True)]
    measured = [s for s in sizes if s is not None]
    median = statistics.median(measured) if len(measured) >= MEDIAN_MIN_ITEMS else None
    result = []
    for item, asset, size in zip(items, assets, sizes, strict=True):
        flags = []
        status, error = item.get("status", "ok"), item.get("error") or ""
        if status == "failed":
            no_face = "no face" in error.lower() or item.get("faces_found") == 0
            flags.append(Flag("bad", "face not found" if no_face else "failed", error))
        if item.get("review") or item.get("exit_code") == 7:
            flags.append(Flag("warn", "review", "; ".join(item.get("review") or [])
                              or "the artefact check flagged it (exit 7)"))
        motion, dims = (asset or {}).get("max_motion_px"), (asset or {}).get("size")
        if motion and dims and motion >= LARGE_MOTION_SHARE * max(dims):
            flags.append(Flag("warn", "large motion", f"up to {motion:.1f} px, "
                              f"{100 * motion / max(dims):.1f} % of the long side"))
        if median and size is not None:
            ratio = size / median
            if ratio >= FAR_FROM_MEDIAN or ratio <= 1 / FAR_FROM_MEDIAN:
                flags.append(Flag("info", "edit far from median",
                                  f"changed {100 * size:.2f} % of the pixels; the batch's median "
                                  f"is {100 * median:.2f} % ({ratio:.1f}×)"))
        result.append(flags)
    return result


# --------------------------------------------------------------------------- sections


def anchor(index: int) -> str:
    return f"item-{index + 1}"


def summary_section(report: dict, flags: list[list[Flag]], exemplar: dict | None) -> str:
    """Counts, the exemplar pair and its operations, and links to the flagged frames."""
    items, summary = report.get("items") or [], report.get("summary") or {}
    flagged = [i for i, f in enumerate(flags) if f]
    stats = [("frames", len(items)), ("ok", summary.get("ok", 0)),
             ("failed", summary.get("failed", 0)), ("to review", summary.get("to_review", 0)),
             ("flagged", len(flagged))]
    parts = ['<section class="card summary">', '<div class="stats">']
    parts += [f"<span><b>{esc(v)}</b> {esc(k)}</span>" for k, v in stats]
    parts.append("</div>")
    if flagged:
        links = "".join(f'<span class="look"><a href="#{anchor(i)}">#{i + 1}</a> '
                        + "".join(badge(f.label, f.kind, f.why) for f in flags[i]) + "</span>"
                        for i in flagged)
        parts.append(f'<p class="looks">Look at: {links}</p>')
        parts.append('<p class="filter"><label><input type="checkbox" id="only-flagged"> '
                     "show only the flagged frames</label></p>")
    else:
        parts.append('<p>Nothing flagged.</p>')
    if summary.get("exemplar") or exemplar:
        parts.append(exemplar_block(summary, exemplar or {}))
    parts.append("</section>")
    return "".join(parts)


def exemplar_block(summary: dict, exemplar: dict) -> str:
    """The exemplar pair's thumbnails and the named operations measured from it."""
    paths = summary.get("exemplar") or [None, None]
    links = exemplar.get("links") or {}
    names = " → ".join(Path(p).name for p in paths if p)
    if exemplar.get("before") and exemplar.get("after"):
        visual = compare_slider(exemplar["before"], exemplar["after"],
                                label=f"the exemplar {names}", size=exemplar.get("thumb_size"),
                                before_href=links.get("before"), after_href=links.get("after"),
                                caption=f"exemplar {names}", lazy=False)
    else:
        visual = f'<p class="why">exemplar {esc(names)} (no pictures)</p>'
    catalog = summary.get("catalog") or {}
    facts = [f"mode: {summary['mode']}"] if summary.get("mode") else []
    if catalog.get("explained") is not None:
        facts.append(f"the named operations explain {100 * catalog['explained']:.0f} % "
                     "of the measured motion")
    if catalog.get("mean_motion_px") is not None:
        facts.append(f"mean motion {catalog['mean_motion_px']:.2f} px")
    edit = summary.get("edit") or {}
    if edit.get("max_motion_px") is not None:
        facts.append(f"largest motion in the exemplar {edit['max_motion_px']:.2f} px")
    return (f'<div class="row">{visual}<div class="facts">'
            f"<h3>Operations measured</h3>{ops_table(catalog.get('ops') or [])}"
            f"{text_list('Exemplar', facts)}</div></div>")


def item_section(index: int, item: dict, asset: dict | None, flags: list[Flag],
                 catalog_ops: list[dict] | None) -> str:
    """One frame: header with its flags, slider, heat-map, operations, notes and reasons."""
    asset = asset or {}
    links = asset.get("links") or {}
    name = Path(item.get("output") or item.get("input") or f"item {index + 1}").name
    status = item.get("status", "ok")
    classes = "card item" + (" flagged" if flags else "") + (" failed" if status == "failed" else "")
    head = [f"<h2>#{index + 1} {esc(name)}</h2>"]
    head += [badge(f.label, f.kind, f.why) for f in flags]
    if status == "skipped":
        head.append(badge("skipped", "info", "the output existed (--skip-existing)"))
    source = Path(item["input"]).name if item.get("input") else None
    meta = [f"from {source}"] if source and source != name else []
    if status == "ok":
        if item.get("strength") not in (None, 1, 1.0):
            meta.append(f"strength ×{item['strength']:g}")
        if item.get("seconds") is not None:
            meta.append(f"{item['seconds']:.2f} s")
        share = edit_size(item, asset)
        if share is not None:
            meta.append(f"changed {100 * share:.2f} % of pixels")
    head.append(f'<span class="meta">{esc(" · ".join(meta))}</span>')
    visuals = []
    if asset.get("query") and asset.get("output"):
        visuals.append(compare_slider(asset["query"], asset["output"], label=name,
                                      size=asset.get("thumb_size"),
                                      before_href=links.get("query"),
                                      after_href=links.get("output"),
                                      caption=region_caption(asset)))
    elif asset.get("query"):  # no output (a failed item): the query, to see why
        visuals.append(image_card(asset["query"], "query, whole frame", href=links.get("query"),
                                  size=asset.get("thumb_size"), cls="thumb",
                                  alt=f"query of {name}"))
    if asset.get("motion"):
        visuals.append(heatmap_card(asset))
    if item.get("ops") is not None:  # apply: the item's own operations
        ops = ops_table(item["ops"])
    elif catalog_ops is not None:  # retouch: the exemplar's, scaled by the strength
        ops = ops_table(catalog_ops, scale=float(item.get("strength") or 1.0))
    else:
        ops = ""
    facts = [f"<h3>Operations</h3>{ops}" if ops and status == "ok" else ""]
    if item.get("error"):  # the file's name stands for its path (the link has the path)
        error = str(item["error"])
        if source and item["input"] in error:
            error = error.replace(item["input"], source)
        facts.append(text_list("Error", [error], "why"))
    facts.append(text_list("Review", list(item.get("review") or [])))
    facts.append(text_list("Notes", list(item.get("notes") or [])))
    files = [f'<a href="{esc(url(links[k]))}">{k}</a>' for k in ("query", "output") if links.get(k)]
    if files and not visuals:
        facts.append(f"<h3>Full size</h3><p>{' · '.join(files)}</p>")
    body = "".join(visuals) + f'<div class="facts">{"".join(facts)}</div>'
    return (f'<section class="{classes}" id="{anchor(index)}">'
            f'<div class="head">{"".join(head)}</div><div class="row">{body}</div></section>')


def build_page(report: dict, assets: dict[str, dict]) -> str:
    """The review page of ``report`` (``retouch``/``apply --json``) with its ``assets``."""
    items = report.get("items") or []
    per_item = [asset_for(assets, i, item) for i, item in enumerate(items)]
    flags = item_flags(items, per_item)
    summary = report.get("summary") or {}
    catalog_ops = (summary.get("catalog") or {}).get("ops")
    if catalog_ops is None and summary.get("exemplar"):
        catalog_ops = []
    title = f"mirrorppr review — {len(items)} frame{'s' if len(items) != 1 else ''}"
    sub = "retouched from an exemplar pair" if summary.get("exemplar") else "named operations"
    body = [f'<header class="top"><h1>{esc(title)}</h1><p>{esc(sub)} · flagged frames '
            "first · the full-size files are linked under each picture</p>"
            "</header><main>", summary_section(report, flags, assets.get("exemplar"))]
    order = sorted(range(len(items)), key=lambda i: (not flags[i], i))
    body += [item_section(i, items[i], per_item[i], flags[i], catalog_ops) for i in order]
    body.append("</main>")
    return page(title, "".join(body))


def asset_for(assets: dict[str, dict], index: int, item: dict) -> dict | None:
    """An item's assets: by its id (``0000``, see ``review_assets.item_id``), else by its input."""
    return assets.get(f"{index:04d}") or assets.get(str(item.get("input")))


# --------------------------------------------------------------------------- writing


def resolve_links(review_dir: Path, report: dict, assets: dict[str, dict]) -> dict[str, dict]:
    """``assets`` with ``links`` to each full-size file (query, output, exemplar) that exists:
    a link from an earlier rendering (or the caller) while it resolves, else one made from the
    report's path (relative paths are taken from the current folder)."""
    done = {k: dict(v) for k, v in assets.items()}

    def link(asset: dict, slot: str, target) -> None:
        links = dict(asset.get("links") or {})
        if not (links.get(slot) and (review_dir / links[slot]).is_file()):
            links.pop(slot, None)
            new = relative_link(target, review_dir)
            if new is not None:
                links[slot] = new
        asset["links"] = links

    for index, item in enumerate(report.get("items") or []):
        key = f"{index:04d}" if f"{index:04d}" in done else str(item.get("input"))
        if key in done:
            link(done[key], "query", item.get("input"))
            link(done[key], "output", item.get("output") if item.get("status") == "ok" else None)
    exemplar_paths = (report.get("summary") or {}).get("exemplar")
    if exemplar_paths and "exemplar" in done:
        for slot, target in zip(("before", "after"), exemplar_paths, strict=False):
            link(done["exemplar"], slot, target)
    return done


def write_page(review_dir: Path, page_html: str, data: dict) -> Path:
    """Write ``review.json`` then ``index.html`` into ``review_dir``, each atomically (a
    temporary file in the folder, then a rename); return the page's path."""
    review_dir = Path(review_dir)
    write_atomic(review_dir / DATA_FILE,
                 (json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode())
    write_atomic(review_dir / PAGE_FILE, page_html.encode())
    return review_dir / PAGE_FILE


def write_review(review_dir: Path, report: dict, assets: dict[str, dict]) -> Path:
    """The review page of ``report`` (the dict ``retouch``/``apply --json`` prints) with the
    ``assets`` `save_item_assets` returned (by ``item_id(index)``; ``"exemplar"``: from
    `save_exemplar_assets`, made here from ``summary.exemplar``'s files when missing):
    writes ``index.html`` and ``review.json`` (the report and assets, for ``mirrorppr
    review``) into ``review_dir``; returns the page's path."""
    review_dir = Path(review_dir)
    paths = (report.get("summary") or {}).get("exemplar")
    if paths and "exemplar" not in assets and all(Path(p).is_file() for p in paths):
        assets = {**assets, "exemplar": exemplar_from_files(review_dir, paths)}
    assets = resolve_links(review_dir, report, assets)
    data = {"format": "mirrorppr-review", "version": 1, "report": report, "assets": assets}
    return write_page(review_dir, build_page(report, assets), data)
