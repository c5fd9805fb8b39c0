"""A self-contained HTML report of a comparison: tables, SVG charts, overlay thumbnails.

No plotting library: the charts are small hand-written SVGs, the thumbnails
base64 PNGs, so the file opens anywhere and can be mailed as one attachment.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from mastctl import imaging

if TYPE_CHECKING:
    from mastctl.compare import BackendRun, Comparison

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
# Marks on H&E: a hit is a green ring; a miss a cyan square and a false alarm a yellow diamond, each
# outlined in black: none of them can be taken for a red blood cell or an eosinophil.
HIT, MISS, FALSE_ALARM = (0, 170, 0), (0, 200, 255), (255, 215, 0)
MAX_THUMB_IMAGES = 12
THUMB_PX = 480  # thumbnails are shown at 240 px and open at 480 px when clicked
NA = "n/a"


def _fmt(v: float | None, digits: int = 3) -> str:
    return NA if v is None else f"{v:.{digits}f}"


HEADINGS = {"precision": "precision", "recall": "recall", "f1": "F1", "explicit_recall": "explicit recall",
            "implicit_recall": "implicit recall", "count_mae": "count MAE", "seconds_per_mp": "s / megapixel"}


def summary_table(cmp: Comparison) -> str:
    names = cmp.metric_names()
    head = "<tr><th>backend</th>" + "".join(f"<th>{HEADINGS[n]}</th>" for n in names) + "</tr>"
    rows = []
    for run, values in cmp.summary_rows():
        if run.skipped is not None:
            rows.append(f"<tr><td>{html.escape(run.name)}</td><td colspan='{len(names)}'><i>skipped: {html.escape(run.skipped)}</i></td></tr>")
            continue
        cells = []
        for name in names:
            ci = run.evaluation.ci.get(name)
            text = _fmt(values[name], 2 if name == "count_mae" else 3)
            cells.append(text + ("" if ci is None else f" <small>[{ci[0]:.2f}, {ci[1]:.2f}]</small>"))
        rows.append(f"<tr><td>{html.escape(run.name)}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def bars_svg(cmp: Comparison) -> str:
    """Precision, recall and F1 per backend, with 95% bootstrap whiskers; an undefined value says n/a."""
    runs = [r for r in cmp.runs if r.evaluation is not None]
    metrics_ = ["precision", "recall", "f1"]
    w, h, left, bottom, top = 140 * max(len(runs), 1) + 90, 290, 64, 58, 20
    bar = 30
    plot_h = h - bottom - top
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11" '
             'role="img" aria-label="precision, recall and F1 per backend">']
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        y = top + plot_h * (1 - tick)
        parts.append(f'<line x1="{left}" x2="{w - 10}" y1="{y}" y2="{y}" stroke="#ddd"/>'
                     f'<line x1="{left - 4}" x2="{left}" y1="{y}" y2="{y}" stroke="#000"/>'
                     f'<text x="{left - 7}" y="{y + 4}" text-anchor="end">{tick:.2f}</text>')
    parts.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#000"/>'
                 f'<line x1="{left}" x2="{w - 10}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#000"/>'
                 f'<text x="16" y="{top + plot_h / 2}" transform="rotate(-90 16 {top + plot_h / 2})" text-anchor="middle">'
                 'score (0 to 1)</text>'
                 f'<text x="{(left + w) / 2}" y="{h - 6}" text-anchor="middle">backend (P precision, R recall, F1)</text>')
    shades = {"precision": 0.55, "recall": 0.75, "f1": 1.0}
    for i, run in enumerate(runs):
        colour = PALETTE[i % len(PALETTE)]
        x0 = left + 20 + i * 140
        for j, m in enumerate(metrics_):
            value = getattr(run.evaluation.detection, m)
            x = x0 + j * (bar + 4)
            if value is None:  # e.g. precision with nothing found
                parts.append(f'<text x="{x + bar / 2}" y="{top + plot_h - 6}" text-anchor="middle" fill="#666">{NA}'
                             f'<title>{html.escape(run.name)} {m}: {NA} (undefined here)</title></text>')
            else:
                y = top + plot_h * (1 - value)
                parts.append(f'<rect x="{x}" y="{y:.1f}" width="{bar}" height="{plot_h * value:.1f}" fill="{colour}" '
                             f'fill-opacity="{shades[m]}"><title>{html.escape(run.name)} {m} {value:.3f}</title></rect>')
            ci = run.evaluation.ci.get(m)
            if ci and value is not None:
                y_lo, y_hi = top + plot_h * (1 - ci[0]), top + plot_h * (1 - ci[1])
                cx = x + bar / 2
                parts.append(f'<line x1="{cx}" x2="{cx}" y1="{y_lo:.1f}" y2="{y_hi:.1f}" stroke="#000"/>'
                             f'<line x1="{cx - 5}" x2="{cx + 5}" y1="{y_lo:.1f}" y2="{y_lo:.1f}" stroke="#000"/>'
                             f'<line x1="{cx - 5}" x2="{cx + 5}" y1="{y_hi:.1f}" y2="{y_hi:.1f}" stroke="#000"/>')
            parts.append(f'<text x="{x + bar / 2}" y="{top + plot_h + 14}" text-anchor="middle">{ {"precision": "P", "recall": "R", "f1": "F1"}[m] }</text>')
        parts.append(f'<text x="{x0 + 1.5 * bar + 4}" y="{top + plot_h + 30}" text-anchor="middle" font-weight="bold">{html.escape(run.name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def counts_svg(cmp: Comparison) -> str:
    """Per image: true count (x) against found count (y), one colour per backend; hover a point for its image."""
    runs = [r for r in cmp.runs if r.evaluation is not None]
    points = [(s.true_count, s.pred_count, i, s.image) for i, r in enumerate(runs) for s in r.scores]
    top = max([max(t, p) for t, p, _, _ in points] + [1])
    size, margin = 320, 48
    scale = (size - 2 * margin) / top
    step = _nice_step(top)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size + 170}" height="{size}" font-family="sans-serif" font-size="11" '
             'role="img" aria-label="found against true count per image">',
             f'<line x1="{margin}" y1="{size - margin}" x2="{size - margin}" y2="{margin}" stroke="#999" stroke-dasharray="4"><title>found = true</title></line>',
             f'<line x1="{margin}" y1="{size - margin}" x2="{size - margin}" y2="{size - margin}" stroke="#000"/>',
             f'<line x1="{margin}" y1="{size - margin}" x2="{margin}" y2="{margin}" stroke="#000"/>',
             f'<text x="{size / 2}" y="{size - 10}" text-anchor="middle">true count per image</text>',
             f'<text x="14" y="{size / 2}" transform="rotate(-90 14 {size / 2})" text-anchor="middle">found count per image</text>']
    v = 0
    while v <= top:
        p = v * scale
        parts.append(f'<line x1="{margin + p:.1f}" x2="{margin + p:.1f}" y1="{size - margin}" y2="{size - margin + 4}" stroke="#000"/>'
                     f'<text x="{margin + p:.1f}" y="{size - margin + 15}" text-anchor="middle">{v}</text>'
                     f'<line x1="{margin - 4}" x2="{margin}" y1="{size - margin - p:.1f}" y2="{size - margin - p:.1f}" stroke="#000"/>'
                     f'<text x="{margin - 7}" y="{size - margin - p + 4:.1f}" text-anchor="end">{v}</text>')
        v += step
    for t, p, i, image in points:
        jitter = (i - (len(runs) - 1) / 2) * 2
        parts.append(f'<circle cx="{margin + t * scale + jitter:.1f}" cy="{size - margin - p * scale:.1f}" r="4" '
                     f'fill="{PALETTE[i % len(PALETTE)]}" fill-opacity="0.7"><title>{html.escape(Path(image).name)} · '
                     f'{html.escape(runs[i].name)}: {t} true, {p} found</title></circle>')
    for i, run in enumerate(runs):
        parts.append(f'<rect x="{size + 10}" y="{margin + i * 18 - 9}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
                     f'<text x="{size + 26}" y="{margin + i * 18}">{html.escape(run.name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _nice_step(top: float) -> int:
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000):
        if top / step <= 6:
            return step
    return 10000


def thumbnail(path: Path, pixels, run: BackendRun) -> str | None:
    """The image with hits (green rings), misses (cyan squares) and false alarms (yellow diamonds), as a JPEG data URI."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    score = next((s for s in run.scores if s.image == str(path)), None)
    if score is None:
        return None
    canvas = PILImage.fromarray(pixels).convert("RGB")
    factor = THUMB_PX / max(canvas.size)
    if factor < 1:
        canvas = canvas.resize((max(1, int(canvas.width * factor)), max(1, int(canvas.height * factor))), PILImage.LANCZOS)
    else:
        factor = 1.0
    draw = ImageDraw.Draw(canvas)
    r = 6

    def mark(cell, colour, shape):
        x, y = cell.x * factor, cell.y * factor
        if shape == "ring":
            draw.ellipse([x - r, y - r, x + r, y + r], outline=(0, 0, 0), width=4)
            draw.ellipse([x - r, y - r, x + r, y + r], outline=colour, width=2)
        elif shape == "square":
            draw.rectangle([x - r, y - r, x + r, y + r], outline=(0, 0, 0), width=4)
            draw.rectangle([x - r, y - r, x + r, y + r], outline=colour, width=2)
        else:
            diamond = [(x, y - r - 1), (x + r + 1, y), (x, y + r + 1), (x - r - 1, y)]
            draw.polygon(diamond, outline=(0, 0, 0), width=4)
            draw.polygon(diamond, outline=colour, width=2)

    for _, t in score.match.pairs:
        mark(score.true[t], HIT, "ring")
    for t in score.match.unmatched_true:
        mark(score.true[t], MISS, "square")
    for p in score.match.unmatched_pred:
        mark(score.pred[p], FALSE_ALARM, "diamond")
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG", quality=82, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


LEGEND = ("<p class='legend'>"
          "<svg width='14' height='14'><circle cx='7' cy='7' r='5' fill='none' stroke='#000' stroke-width='4'/>"
          "<circle cx='7' cy='7' r='5' fill='none' stroke='#00aa00' stroke-width='2'/></svg> hit (found and true) &nbsp; "
          "<svg width='14' height='14'><rect x='2' y='2' width='10' height='10' fill='none' stroke='#000' stroke-width='4'/>"
          "<rect x='2' y='2' width='10' height='10' fill='none' stroke='#00c8ff' stroke-width='2'/></svg> missed (true, not found) &nbsp; "
          "<svg width='14' height='14'><polygon points='7,1 13,7 7,13 1,7' fill='none' stroke='#000' stroke-width='4'/>"
          "<polygon points='7,1 13,7 7,13 1,7' fill='none' stroke='#ffd700' stroke-width='2'/></svg> false alarm (found, not true)"
          " &nbsp; <small>click a picture to enlarge it</small></p>")


def confusion_table(run: BackendRun) -> str:
    conf = run.evaluation.confusion if run.evaluation else {}
    if not conf:
        return ""
    predicted = sorted({p for row in conf.values() for p in row})
    head = "<tr><th>true \\ found</th>" + "".join(f"<th>{html.escape(p)}</th>" for p in predicted) + "</tr>"
    body = "".join(
        f"<tr><th>{html.escape(t)}</th>" + "".join(f"<td>{conf[t].get(p, '')}</td>" for p in predicted) + "</tr>" for t in sorted(conf)
    )
    return f"<h3>{html.escape(run.name)}: labels</h3><table>{head}{body}</table>"


def render_html(cmp: Comparison) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    radius = f"{cmp.radius_um} µm" if cmp.radius_um is not None else f"{cmp.radius_px} px"
    what = "mast cells" if cmp.mode == "mast" else "every cell (label-agnostic detection)"
    sections = [
        f"<h1>mastctl compare</h1><p>{len(cmp.images)} image{'' if len(cmp.images) == 1 else 's'} · scoring {what} · "
        f"match radius {radius} · {when}</p>",
        "<h2>Summary</h2>", summary_table(cmp),
        "<p><small>Micro-averaged over images; [brackets]: 95% bootstrap interval over images"
        + (" (none from one image)" if len(cmp.images) < 2 else "") + ".</small></p>",
        "<h2>Precision, recall, F1</h2>", bars_svg(cmp),
        "<h2>Counts per image</h2>", counts_svg(cmp),
    ]
    if cmp.mode == "cells":
        sections += ["<h2>Label confusion</h2>"] + [confusion_table(r) for r in cmp.runs]
    if cmp.without_truth:
        sections.append(f"<p>Images without truth (not scored): {html.escape(', '.join(cmp.without_truth))}</p>")
    sections.append("<h2>Hits, misses, false alarms</h2>" + LEGEND)
    runs = [r for r in cmp.runs if r.evaluation is not None]
    rows = ["<table class='thumbs'><tr><th>image</th>" + "".join(f"<th>{html.escape(r.name)}</th>" for r in runs) + "</tr>"]
    for path in cmp.images[:MAX_THUMB_IMAGES]:
        cells = []
        pixels = imaging.load(path).pixels  # once per image, for every backend (the compare guarded its size)
        for run in runs:
            uri = thumbnail(path, pixels, run)
            score = next((s for s in run.scores if s.image == str(path)), None)
            caption = "" if score is None else f"{score.detection.tp} hit · {score.detection.fn} missed · {score.detection.fp} false"
            title = f"{path.name} · {run.name}: {caption}"
            cells.append(f"<td><img src='{uri}' alt='{html.escape(title)}' title='{html.escape(title)}' "
                         "onclick=\"this.classList.toggle('big')\"><br><small>" + caption + "</small></td>" if uri else "<td></td>")
        rows.append(f"<tr><td>{html.escape(path.name)}</td>{''.join(cells)}</tr>")
    rows.append("</table>")
    if len(cmp.images) > MAX_THUMB_IMAGES:
        rows.append(f"<p><small>First {MAX_THUMB_IMAGES} of {len(cmp.images)} images shown.</small></p>")
    sections += rows
    style = ("body{font-family:sans-serif;margin:2em;color:#222} table{border-collapse:collapse;margin:.5em 0}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top} th{background:#f4f4f4}"
             ".thumbs img{width:240px;cursor:zoom-in} .thumbs img.big{width:480px;cursor:zoom-out} .legend svg{vertical-align:middle}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>mastctl compare</title><style>{style}</style></head><body>{''.join(sections)}</body></html>\n"


def write_html(cmp: Comparison, path: Path) -> Path:
    from mastctl.writers import atomic_write

    text = render_html(cmp)
    atomic_write(path, lambda fh: fh.write(text.encode()))
    return path
