"""Invariants of the synthetic paired tiles: scale, transform, DAB, determinism."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image as PILImage
from scipy import ndimage

from mastctl import imaging, stains, synth


@pytest.fixture(scope="module")
def tiles():
    return {mpp: synth.render_tile([21, 0], synth.SynthOptions(size=384, mpp=mpp)) for mpp in (0.5, 0.25)}


def concentration(rgb, *vectors):
    return stains.separate(rgb, vectors)


def component_at(mask, x, y):
    labels, _ = ndimage.label(mask)
    lab = labels[int(y), int(x)]
    return labels == lab if lab else None


def test_populations_and_look_alikes_present():
    counts = Counter()
    for i in range(4):
        tile = synth.render_tile([3, i], synth.SynthOptions(size=512, mpp=0.5))
        counts.update((c.type, c.kind) for c in tile.cells)
    for needed in [("mast_cell", "explicit"), ("mast_cell", "implicit"), ("lymphocyte", None), ("plasma_cell", None),
                   ("fibroblast", None), ("eosinophil", None)]:
        assert counts[needed] > 0, needed
    assert counts[("endothelial", None)] + counts[("epithelial", None)] > 0


@pytest.mark.parametrize("mpp", [0.5, 0.25])
def test_nucleus_sizes_are_in_micrometres(tiles, mpp):
    tile = tiles[mpp]
    hema = concentration(tile.he, tile.stain["hematoxylin"], tile.stain["eosin"])[..., 0]
    diameters = []
    for c in tile.cells:
        if c.type != "lymphocyte" or not (8 < c.x < tile.he.shape[1] - 8 and 8 < c.y < tile.he.shape[0] - 8):
            continue
        comp = component_at(hema > 0.45 * hema[int(c.y), int(c.x)], c.x, c.y)
        if comp is None or comp.sum() > 400 / mpp**2:
            continue
        diameters.append(2 * np.sqrt(comp.sum() / np.pi) * mpp)  # equivalent diameter, um
    assert len(diameters) >= 3
    # lymphocyte nuclei are drawn 5.6-7.2 um across; blur widens them a little
    assert 4.5 < float(np.median(diameters)) < 9.0, diameters


def test_same_cells_in_micrometres_at_both_scales(tiles):
    for tile in tiles.values():
        sizes = [c.nucleus_um[0] for c in tile.cells if c.type == "lymphocyte"]
        assert 2.8 <= min(sizes) and max(sizes) <= 3.6
        assert tile.he.shape == (384, 384, 3)
    # the same tile side in pixels covers a quarter of the area at 0.25 um/px: about 4x fewer cells
    # (summed over a few seeds: one tile's composition, crypts and fat, varies too much to tell)
    counts = {mpp: sum(sum(c.type != "epithelial" for c in synth.render_tile([s, 0], synth.SynthOptions(size=256, mpp=mpp)).cells)
                       for s in range(4)) for mpp in (0.5, 0.25)}
    assert 0.15 < counts[0.25] / counts[0.5] < 0.38, counts


def dab_map(tile):
    return concentration(tile.ihc, tile.stain["ihc_hematoxylin"], tile.stain["dab"])[..., 1]


@pytest.mark.parametrize("mpp", [0.5, 0.25])
def test_ihc_transform_maps_mast_cells_onto_their_dab(tiles, mpp):
    tile = tiles[mpp]
    dab = dab_map(tile)
    mask = ndimage.gaussian_filter(dab, 1.0) > 0.25
    matrix = np.array(tile.transform["matrix"])
    checked = 0
    for c in tile.cells:
        qx, qy = matrix @ np.array([c.x, c.y, 1.0])
        assert (round(float(qx), 2), round(float(qy), 2)) == (c.ihc["x"], c.ihc["y"])
        if c.type != "mast_cell" or not c.ihc["inside"]:
            continue
        comp = component_at(mask, qx, qy)
        assert comp is not None, f"no DAB under mast cell {c.id}"
        cy, cx = ndimage.center_of_mass(comp)
        # the nucleus sits within 15% of the cell radius of the cell's centre
        tolerance = 0.2 * max(c.cell_um) / mpp + 1.5
        if comp.sum() < 1.3 * np.pi * (max(c.cell_um) / mpp) ** 2:  # an isolated cell, not a merged cluster
            assert np.hypot(cx + 0.5 - qx, cy + 0.5 - qy) < tolerance
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize("mpp", [0.5, 0.25])
def test_dab_marks_mast_cells_only(tiles, mpp):
    tile = tiles[mpp]
    dab = ndimage.gaussian_filter(dab_map(tile), 1.0)
    other = [dab[int(c.ihc["y"]), int(c.ihc["x"])] for c in tile.cells if c.type != "mast_cell" and c.ihc["inside"]
             and all(np.hypot(c.x - m.x, c.y - m.y) * mpp > 12 for m in tile.cells if m.type == "mast_cell")]
    mast = [dab[int(c.ihc["y"]), int(c.ihc["x"])] for c in tile.cells if c.type == "mast_cell" and c.ihc["inside"]]
    assert min(mast) > 0.3 and max(other) < 0.1
    # every DAB blob holds a mast cell
    labels, n = ndimage.label(dab > 0.3)
    holders = {labels[int(c.ihc["y"]), int(c.ihc["x"])] for c in tile.cells if c.type == "mast_cell" and c.ihc["inside"]}
    sizes = ndimage.sum(np.ones_like(dab), labels, range(1, n + 1))
    border = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])))
    for lab in range(1, n + 1):
        if sizes[lab - 1] > 20 and lab not in border:
            assert lab in holders, "a DAB blob without a mast cell"


def test_deterministic_per_seed():
    a = synth.render_tile([5, 1], synth.SynthOptions(size=256))
    b = synth.render_tile([5, 1], synth.SynthOptions(size=256))
    c = synth.render_tile([5, 2], synth.SynthOptions(size=256))
    assert np.array_equal(a.he, b.he) and np.array_equal(a.ihc, b.ihc) and a.truth("x") == b.truth("x")
    assert not np.array_equal(a.he, c.he)


def test_stain_variation_between_slides():
    angles = []
    for i in range(5):
        tile = synth.render_tile([8, i], synth.SynthOptions(size=128))
        angles.append(stains.angle_deg(tile.stain["hematoxylin"], stains.HEMATOXYLIN))
    assert max(angles) - min(angles) > 1.0 and max(angles) < 6.0


def test_synth_command_writes_pairs_with_truth(cli, tmp_path):
    r = cli("--json", "synth", "tiles", "--n", "2", "--seed", "4", "--size", "192", "--mpp", "0.25", "--jpeg", "70")
    assert r.exit_code == 0, r.stderr
    written = r.json()
    assert [sorted(w) for w in written] == [["he", "ihc", "truth"]] * 2
    truth = json.loads((tmp_path / "tiles" / "synth_s4_0000.json").read_text())
    assert truth["schema"] == "mastctl/synth@1" and truth["mpp"] == 0.25 and truth["he_image"] == "synth_s4_0000_he.png"
    assert set(truth["transform"]) >= {"rotation_deg", "translation_px", "matrix"}
    cell = truth["cells"][0]
    assert {"x", "y", "type", "label", "kind", "ihc"} <= set(cell) and {"x", "y", "inside"} <= set(cell["ihc"])
    he = imaging.load(tmp_path / "tiles" / "synth_s4_0000_he.png")
    assert he.mpp == pytest.approx(0.25, rel=1e-3) and he.pixels.shape == (192, 192, 3)
    assert PILImage.open(tmp_path / "tiles" / "synth_s4_0001_ihc.png").size == (192, 192)
    again = cli("synth", "tiles", "--n", "2", "--seed", "4")
    assert again.exit_code == 2 and "already exists" in again.stderr


def test_styles_draw_other_tissue_and_gut_is_unchanged():
    small = dict(size=192, mpp=0.5)
    classic = synth.render_tile([3, 1], synth.SynthOptions(**small))
    again = synth.render_tile([3, 1], synth.SynthOptions(**small, style="gut"))
    assert np.array_equal(classic.he, again.he)  # the classic renderer is the default style, unchanged
    sheet = synth.render_tile([3, 1], synth.SynthOptions(size=256, mpp=0.5, style="sheet"))
    types = [c.type for c in sheet.cells]
    assert types.count("mast_cell") > 0.5 * len(types) and types.count("mast_cell") > 20  # a sheet of mast cells
    carcinoma = synth.render_tile([3, 1], synth.SynthOptions(size=256, mpp=0.5, style="carcinoma"))
    assert sum(c.type == "epithelial" for c in carcinoma.cells) > sum(c.type == "epithelial" for c in classic.cells)
    faded = synth.render_tile([3, 1], synth.SynthOptions(**small, style="faded"))
    blue = lambda img: float(img[..., 2].mean() - img[..., 0].mean())  # noqa: E731
    assert blue(faded.he) < blue(classic.he) - 5  # a yellow cast
    assert faded.style == "faded" and synth.HELD_OUT_STYLE not in synth.TRAINING_STYLES
    washed = synth.render_tile([3, 1], synth.SynthOptions(**small, style=synth.DEV_STYLE))
    assert blue(washed.he) > blue(classic.he) + 3  # a blue cast: not the held-out style's shift
    assert synth.DEV_STYLE not in (*synth.TRAINING_STYLES, synth.HELD_OUT_STYLE)
    with pytest.raises(Exception, match="unknown synthetic style"):
        synth.render_tile(1, synth.SynthOptions(style="nope"))
