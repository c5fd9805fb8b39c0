"""Mast-cell density over a slide or image: a coarse count grid, the hotspot, the heat map."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from mastctl.cells import Cell

GRID_UM = 100.0  # resolution of the density grid (heat map)
HPF_MM2 = 0.237  # a 40x high-power field (0.55 mm across)
FIELDS = 10  # the hotspot: the densest block of this many contiguous fields


class DensityGrid:
    """Mast cells counted on a coarse grid (GRID_UM) over the slide."""

    def __init__(self, width: int, height: int, mpp: float) -> None:
        self.width, self.height = width, height
        self.cell_px = GRID_UM / mpp
        self.mpp = mpp
        self.counts = np.zeros((max(1, int(math.ceil(height / self.cell_px))), max(1, int(math.ceil(width / self.cell_px)))), np.int32)

    def add(self, cells: list[Cell]) -> None:
        for c in cells:
            if c.is_mast_cell:
                row = min(max(int(c.y / self.cell_px), 0), self.counts.shape[0] - 1)
                col = min(max(int(c.x / self.cell_px), 0), self.counts.shape[1] - 1)
                self.counts[row, col] += 1

    def hotspot(self, hpf_mm2: float = HPF_MM2, fields: int = FIELDS, tissue_mm2: float | None = None) -> dict[str, Any] | None:
        """The block of ``fields`` contiguous HPFs (2 x 5 or 5 x 2) with the most mast cells, inside the image.

        None when the tissue (or the image) is smaller than one block: a "hotspot of 10 HPF" would then
        be the whole specimen under another name.
        """
        side_um = math.sqrt(hpf_mm2) * 1000.0
        k = max(1, int(round(side_um / GRID_UM)))  # grid cells per HPF side
        block_mm2 = fields * hpf_mm2
        image_mm2 = self.width * self.height * (self.mpp / 1000.0) ** 2
        if (tissue_mm2 is not None and tissue_mm2 < block_mm2) or image_mm2 < block_mm2:
            return None
        c = self.counts
        integral = np.pad(c.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        rows_cols = [(2, fields // 2), (fields // 2, 2)] if fields % 2 == 0 else [(1, fields), (fields, 1)]
        best: dict[str, Any] | None = None
        for rows, cols in rows_cols:
            bh, bw = rows * k, cols * k
            if bh > c.shape[0] or bw > c.shape[1]:
                continue  # this layout does not fit inside the image
            sums = integral[bh:, bw:] - integral[:-bh, bw:] - integral[bh:, :-bw] + integral[:-bh, :-bw]
            if sums.size and (best is None or int(sums.max()) >= best["count"]):
                y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
                px = self.cell_px
                x0, y0 = min(x * px, max(0.0, self.width - bw * px)), min(y * px, max(0.0, self.height - bh * px))
                best = {"count": int(sums.max()), "fields": fields, "field_mm2": hpf_mm2, "layout": f"{rows}x{cols}",
                        "x": round(float(x0), 1), "y": round(float(y0), 1),
                        "width": round(float(min(bw * px, self.width)), 1), "height": round(float(min(bh * px, self.height)), 1)}
        return best

    def per_mm2(self) -> np.ndarray:
        return self.counts / ((GRID_UM / 1000.0) ** 2)

    def heatmap_png(self, path: Path, *, mask: np.ndarray | None = None, mask_scale: float | None = None,
                    hotspot: dict[str, Any] | None = None, title: str = "") -> Path:
        """Mast cells per mm² on the grid, white (none) to dark red, with a colour bar in cells/mm², a
        scale bar, the tissue outline (green) and the hotspot (blue); at least 512 px on the long side."""
        from PIL import Image, ImageDraw

        from mastctl.writers import atomic_write

        density = self.per_mm2()
        top = max(float(density.max()), 1.0)
        gh, gw = density.shape
        zoom = max(1, int(np.ceil(512 / max(gh, gw))))
        while max(gh, gw) * zoom > 2048 and zoom > 1:
            zoom -= 1
        t = np.clip(density / top, 0, 1)[..., None]
        rgb = (np.array([255, 255, 255]) * (1 - t) + np.array([180, 0, 20]) * t).astype(np.uint8)
        heat = Image.fromarray(rgb).resize((gw * zoom, gh * zoom), Image.NEAREST)
        W, H = heat.size
        px_per_level0 = zoom / self.cell_px  # map level-0 pixels onto the picture
        font = _font(14)
        margin_r, margin_b, margin_t = 110, 46, 28 if title else 8
        canvas = Image.new("RGB", (W + margin_r, H + margin_b + margin_t), "white")
        canvas.paste(heat, (0, margin_t))
        draw = ImageDraw.Draw(canvas)
        if title:
            draw.text((4, 6), title, fill=(0, 0, 0), font=font)
        if mask is not None and mask_scale:
            from mastctl.wsi.tissue import outline

            for ring in outline(mask, mask_scale):
                pts = [(x * px_per_level0, y * px_per_level0 + margin_t) for x, y in ring]
                draw.line(pts, fill=(0, 140, 0), width=2)
        if hotspot:
            x0, y0 = hotspot["x"] * px_per_level0, hotspot["y"] * px_per_level0 + margin_t
            draw.rectangle([x0, y0, x0 + hotspot["width"] * px_per_level0, y0 + hotspot["height"] * px_per_level0],
                           outline=(0, 60, 220), width=3)
        # colour bar: 0 .. top cells/mm²
        bx, by, bh = W + 16, margin_t + 10, max(120, min(H - 20, 300))
        for i in range(bh):
            v = 1 - i / (bh - 1)
            col = tuple(int(255 * (1 - v) + c * v) for c in (180, 0, 20))
            draw.line([(bx, by + i), (bx + 18, by + i)], fill=col)
        draw.rectangle([bx, by, bx + 18, by + bh], outline=(0, 0, 0))
        for frac in (0.0, 0.5, 1.0):
            yy = by + (1 - frac) * (bh - 1)
            draw.line([(bx + 18, yy), (bx + 23, yy)], fill=(0, 0, 0))
            draw.text((bx + 26, yy - 7), f"{top * frac:.0f}", fill=(0, 0, 0), font=font)
        draw.text((bx - 6, by + bh + 6), "mast cells", fill=(0, 0, 0), font=font)
        draw.text((bx - 6, by + bh + 22), "per mm2", fill=(0, 0, 0), font=font)
        # scale bar: a round length near a fifth of the width
        um_per_px = self.mpp / px_per_level0
        target = W * um_per_px / 5
        length_um = max(l for l in (50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000) if l <= max(target, 50))
        length_px = length_um / um_per_px
        sy = margin_t + H + 18
        draw.line([(8, sy), (8 + length_px, sy)], fill=(0, 0, 0), width=4)
        label = f"{length_um / 1000:g} mm" if length_um >= 1000 else f"{length_um} um"
        draw.text((8, sy + 6), label, fill=(0, 0, 0), font=font)
        atomic_write(path, lambda fh: canvas.save(fh, format="PNG"))
        return path


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()
