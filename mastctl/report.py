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
HIT, MISS, FALSE_ALARM = (0, 170, 0), (230, 0, 0), (255, 200, 0)
MAX_THUMB_IMAGES = 12
THUMB_PX = 300


def _fmt(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


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
    """Precision, recall and F1 per backend, with 95% bootstrap whiskers."""
    runs = [r for r in cmp.runs if r.evaluation is not None]
    metrics_ = ["precision", "recall", "f1"]
    w, h, left, bottom = 140 * max(len(runs), 1) + 80, 260, 50, 40
    bar = 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">']
    plot_h = h - bottom - 20
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        y = 20 + plot_h * (1 - tick)
        parts.append(f'<line x1="{left}" x2="{w - 10}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="{left - 6}" y="{y + 4}" text-anchor="end">{tick:.2f}</text>')
    shades = {"precision": 0.55, "recall": 0.75, "f1": 1.0}
    for i, run in enumerate(runs):
        colour = PALETTE[i % len(PALETTE)]
        x0 = left + 20 + i * 140
        for j, m in enumerate(metrics_):
            value = getattr(run.evaluation.detection, m) or 0.0
            x = x0 + j * (bar + 4)
            y = 20 + plot_h * (1 - value)
            parts.append(f'<rect x="{x}" y="{y:.1f}" width="{bar}" height="{plot_h * value:.1f}" fill="{colour}" fill-opacity="{shades[m]}"><title>{run.name} {m} {value:.3f}</title></rect>')
            ci = run.evaluation.ci.get(m)
            if ci:
                y_lo, y_hi = 20 + plot_h * (1 - ci[0]), 20 + plot_h * (1 - ci[1])
                cx = x + bar / 2
                parts.append(f'<line x1="{cx}" x2="{cx}" y1="{y_lo:.1f}" y2="{y_hi:.1f}" stroke="#000"/>'
                             f'<line x1="{cx - 5}" x2="{cx + 5}" y1="{y_lo:.1f}" y2="{y_lo:.1f}" stroke="#000"/>'
                             f'<line x1="{cx - 5}" x2="{cx + 5}" y1="{y_hi:.1f}" y2="{y_hi:.1f}" stroke="#000"/>')
            parts.append(f'<text x="{x + bar / 2}" y="{h - bottom + 14}" text-anchor="middle">{ {"precision": "P", "recall": "R", "f1": "F1"}[m] }</text>')
        parts.append(f'<text x="{x0 + 1.5 * bar + 4}" y="{h - bottom + 30}" text-anchor="middle" font-weight="bold">{html.escape(run.name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def counts_svg(cmp: Comparison) -> str:
    """Per image: true count (x) against found count (y), one colour per backend."""
    runs = [r for r in cmp.runs if r.evaluation is not None]
    points = [(s.true_count, s.pred_count, i) for i, r in enumerate(runs) for s in r.scores]
    top = max([max(t, p) for t, p, _ in points] + [1])
    size, margin = 300, 40
    scale = (size - 2 * margin) / top
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size + 160}" height="{size}" font-family="sans-serif" font-size="11">',
             f'<line x1="{margin}" y1="{size - margin}" x2="{size - margin}" y2="{margin}" stroke="#999" stroke-dasharray="4"/>',
             f'<line x1="{margin}" y1="{size - margin}" x2="{size - margin}" y2="{size - margin}" stroke="#000"/>',
             f'<line x1="{margin}" y1="{size - margin}" x2="{margin}" y2="{margin}" stroke="#000"/>',
             f'<text x="{size / 2}" y="{size - 8}" text-anchor="middle">true count per image</text>',
             f'<text x="12" y="{size / 2}" transform="rotate(-90 12 {size / 2})" text-anchor="middle">found</text>',
             f'<text x="{margin - 4}" y="{size - margin + 12}" text-anchor="end">0</text>',
             f'<text x="{size - margin}" y="{size - margin + 12}" text-anchor="middle">{top}</text>']
    for t, p, i in points:
        jitter = (i - (len(runs) - 1) / 2) * 2
        parts.append(f'<circle cx="{margin + t * scale + jitter:.1f}" cy="{size - margin - p * scale:.1f}" r="4" fill="{PALETTE[i % len(PALETTE)]}" fill-opacity="0.7"/>')
    for i, run in enumerate(runs):
        parts.append(f'<rect x="{size + 10}" y="{margin + i * 18 - 9}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
                     f'<text x="{size + 26}" y="{margin + i * 18}">{html.escape(run.name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def thumbnail(path: Path, pixels, run: BackendRun) -> str | None:
    """The image with hits (green), misses (red) and false alarms (yellow), as a data URI."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    score = next((s for s in run.scores if s.image == str(path)), None)
    if score is None:
        return None
    canvas = PILImage.fromarray(pixels)
    factor = THUMB_PX / max(canvas.size)
    if factor < 1:
        canvas = canvas.resize((max(1, int(canvas.width * factor)), max(1, int(canvas.height * factor))))
    else:
        factor = 1.0
    draw = ImageDraw.Draw(canvas)
    r = 5

    def mark(cell, colour):
        x, y = cell.x * factor, cell.y * factor
        draw.ellipse([x - r, y - r, x + r, y + r], outline=colour, width=2)

    for _, t in score.match.pairs:
        mark(score.true[t], HIT)
    for t in score.match.unmatched_true:
        mark(score.true[t], MISS)
    for p in score.match.unmatched_pred:
        mark(score.pred[p], FALSE_ALARM)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


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
        f"<h1>mastctl compare</h1><p>{len(cmp.images)} images · scoring {what} · match radius {radius} · {when}</p>",
        "<h2>Summary</h2>", summary_table(cmp),
        "<p><small>Micro-averaged over images; [brackets]: 95% bootstrap interval over images.</small></p>",
        "<h2>Precision, recall, F1</h2>", bars_svg(cmp),
        "<h2>Counts per image</h2>", counts_svg(cmp),
    ]
    if cmp.mode == "cells":
        sections += ["<h2>Label confusion</h2>"] + [confusion_table(r) for r in cmp.runs]
    if cmp.without_truth:
        sections.append(f"<p>Images without truth (not scored): {html.escape(', '.join(cmp.without_truth))}</p>")
    sections.append("<h2>Hits, misses, false alarms</h2><p><span style='color:#00aa00'>●</span> hit "
                    "<span style='color:#e60000'>●</span> missed <span style='color:#c8a000'>●</span> false alarm</p>")
    runs = [r for r in cmp.runs if r.evaluation is not None]
    rows = ["<table class='thumbs'><tr><th>image</th>" + "".join(f"<th>{html.escape(r.name)}</th>" for r in runs) + "</tr>"]
    for path in cmp.images[:MAX_THUMB_IMAGES]:
        cells = []
        pixels = imaging.load(path, max_pixels=0).pixels  # once per image, for every backend
        for run in runs:
            uri = thumbnail(path, pixels, run)
            score = next((s for s in run.scores if s.image == str(path)), None)
            caption = "" if score is None else f"{score.detection.tp} hit · {score.detection.fn} missed · {score.detection.fp} false"
            cells.append(f"<td><img src='{uri}' alt='{html.escape(path.name)}'><br><small>{caption}</small></td>" if uri else "<td></td>")
        rows.append(f"<tr><td>{html.escape(path.name)}</td>{''.join(cells)}</tr>")
    rows.append("</table>")
    if len(cmp.images) > MAX_THUMB_IMAGES:
        rows.append(f"<p><small>First {MAX_THUMB_IMAGES} of {len(cmp.images)} images shown.</small></p>")
    sections += rows
    style = ("body{font-family:sans-serif;margin:2em;color:#222} table{border-collapse:collapse;margin:.5em 0}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top} th{background:#f4f4f4}"
             ".thumbs img{max-width:300px}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>mastctl compare</title><style>{style}</style></head><body>{''.join(sections)}</body></html>\n"


def write_html(cmp: Comparison, path: Path) -> Path:
    from mastctl.writers import atomic_write

    text = render_html(cmp)
    atomic_write(path, lambda fh: fh.write(text.encode()))
    return path
