"""The shipped nucleus finder is the default, runs with numpy alone, and works at any scale the detector takes."""

from __future__ import annotations

import json
import sys

from pathlib import Path

import numpy as np
import pytest

from mastctl import synth
from mastctl.metrics import match
from mastctl.morphology import nucleinet, stain

from conftest import SHARED_DATA as REAL
from conftest import bench_module


@pytest.fixture(scope="module")
def tile():
    return synth.render_tile([4242, 0], synth.SynthOptions(size=384, mpp=0.5))


def _scores(found, truth, radius_px):
    hits = len(match(found, truth, radius_px).pairs)
    return hits / max(1, len(found)), hits / max(1, len(truth))


@pytest.mark.parametrize("mpp", [0.5, 0.25, 0.36])  # 0.25: averaged to 0.5 um/px first; 0.36: the net resamples
def test_the_shipped_finder_needs_only_numpy_and_finds_the_nuclei_at_any_scale(tile, mpp, monkeypatch):
    from scipy import ndimage as ndi

    monkeypatch.setitem(sys.modules, "torch", None)  # as on a laptop without torch
    net = nucleinet.default_net()
    assert not net.flips and net.width == 16 and net.arch == "strided" and "CRCHistoPhenotypes" in net.info["trained_on"]
    zoom = 0.5 / mpp
    pixels = tile.he if mpp == 0.5 else np.clip(ndi.zoom(tile.he.astype(np.float32), (zoom, zoom, 1), order=1), 0, 255).astype(np.uint8)
    st = stain.separate(pixels, mpp)
    assert (st.mpp != 0.36) == (mpp != 0.36)
    prox = net.proximity(st)
    assert prox.shape == st.h.shape
    truth = np.array([(c.x, c.y) for c in tile.cells]) * zoom
    precision, recall = _scores(net.peaks(prox, st.mpp) * st.factor, truth, 3.0 / mpp)
    assert precision > 0.7 and recall > 0.7, (precision, recall)


def test_the_shipped_finder_is_what_its_script_fits_at_its_defaults(monkeypatch):
    """bench/train_nucleus_net.py rebuilds the shipped file: the recipe its header records is the script's RECIPE
    (since 2026-12-07 16 patches a step: CRC two-fold nucleus F1 0.807 against 0.800 at 8), and the threshold was chosen
    on out-of-fold maps of every training image."""
    net, recipe = nucleinet.default_net(), bench_module(monkeypatch, "train_nucleus_net").RECIPE
    assert (net.width, net.arch, net.basis) == (recipe["width"], recipe["arch"], recipe["basis"])
    assert {k: net.info[k] for k in ("steps", "batch", "folds")} == {k: recipe[k] for k in ("steps", "batch", "folds")}
    assert recipe["batch"] == 16 and net.info["train_images"] == 50 and net.info["val_f1"] > 0.8, net.info


def test_the_shipped_finder_reads_the_absorption_whatever_stain_vectors_the_image_was_split_with(tile):
    from mastctl import stains

    net = nucleinet.default_net()
    assert net.basis == "od"
    standard_vectors = (stains.unit(stains.HEMATOXYLIN), stains.unit(stains.EOSIN))
    own, standard, reference = (stain.separate(tile.he, 0.5, v) for v in (None, standard_vectors, stains.REFERENCE_HE))
    assert np.allclose(net.proximity(own), net.proximity(standard), atol=1e-4)
    assert np.allclose(net.proximity(own), net.proximity(reference), atol=1e-4)


@pytest.mark.skipif(not (REAL / "crc_nuclei").exists(), reason="../shared/data not present")
def test_an_image_whose_eosin_estimate_falls_back_keeps_its_nuclei():
    """CRC img18's Macenko eosin sits just past the 35 degrees at which the estimate falls back to the standard vector:
    a finder reading stain concentrations through that estimate found 15 of its 345 nuclei."""
    from mastctl import imaging, stains
    from mastctl.truth import load_truth

    path = REAL / "crc_nuclei" / "images" / "img18.png"
    pixels = imaging.load(path).pixels
    raw = stains.estimate_he(pixels)
    fell_back = stain.separate(pixels, 0.55).vectors[1]
    assert stains.angle_deg(raw[1], stains.EOSIN) > 35 and np.allclose(fell_back, stains.unit(stains.EOSIN))
    truth = load_truth(REAL / "crc_nuclei" / "points.csv", classes=["detection"])["img18"]
    net = nucleinet.default_net()
    split = (stain.separate(pixels, 0.55), stain.separate(pixels, 0.55, raw))
    found = [net.peaks(net.proximity(st), st.mpp) for st in split]
    assert np.allclose(found[0], found[1], atol=0.01)
    precision, recall = _scores(found[0], np.array([(c.x, c.y) for c in truth.cells]), 6.0)
    assert recall > 0.8 and precision > 0.6, (precision, recall)  # 0.88 and 0.68 (2026-12-06)


def test_the_default_detector_uses_it_and_none_turns_it_off():
    from mastctl.backends.detectors.morphology import MorphologyDetector

    default = MorphologyDetector()
    assert default.options.nuclei == "builtin" and default.nuclei_net is not None
    assert f"nuclei built-in {nucleinet.DEFAULT_NET} sha256:" in default.model_id
    off = MorphologyDetector(MorphologyDetector.Options(nuclei="none"))
    assert off.nuclei_net is None and "nuclei" not in off.model_id
    assert MorphologyDetector.Options(nuclei=None).nuclei is None  # null in a profile


def test_nuclei_flips_averages_the_finders_map_over_the_four_flips(cli, tmp_path):
    from mastctl.backends.detectors.morphology import MorphologyDetector
    from mastctl.imaging import load

    example = Path(__file__).resolve().parents[1] / "examples" / "synth_s9_0000_he.png"
    plain, flipped = MorphologyDetector(), MorphologyDetector(MorphologyDetector.Options(nuclei_flips=True))
    assert not plain.nuclei_net.flips and flipped.nuclei_net.flips and "(four flips)" in flipped.model_id
    st = stain.separate(load(example).pixels, 0.5)
    h, w = st.h.shape
    x = np.pad(stain.net_input(st, plain.nuclei_net.basis), ((0, 0), (0, (-h) % 4), (0, (-w) % 4)), mode="reflect")
    by_hand = sum(np.flip(plain.nuclei_net._map(np.ascontiguousarray(np.flip(x, ax))), tuple(a - 1 for a in ax))
                  for ax in ((), (1,), (2,), (1, 2))) / 4
    assert np.abs(flipped.nuclei_net.proximity(st) - by_hand[:h, :w]).max() < 1e-5
    r = cli("detect", example, "-O", "nuclei_flips=true", "--format", "json", "-o", tmp_path / "f.json")
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "f.json").read_text())
    r = cli("detect", example, "-O", "nuclei_flips=true", "-O", "nuclei=none")
    assert r.exit_code != 0 and "nuclei_flips" in r.stderr and "Traceback" not in r.stderr


def test_a_damaged_model_file_is_one_clear_error(tmp_path):
    from mastctl.errors import InputError

    net = nucleinet.default_net()
    layer = "convs.3." if net.arch == "strided" else "d1."  # one layer's weights cut out
    state = {k: v for k, v in net.state.items() if not k.startswith(layer)}
    assert len(state) < len(net.state)
    path = tmp_path / "cut.safetensors"
    path.write_bytes(nucleinet.safetensors_bytes(state, {"mastctl": __import__("json").dumps(net.header())}))
    with pytest.raises(InputError, match="damaged nucleus model"):
        nucleinet.NucleusNet.load(path)
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    with pytest.raises(InputError, match="not a readable nucleus model"):
        nucleinet.NucleusNet.load(path)


def test_the_finder_places_the_cells_and_the_classifiers_name_them():
    from mastctl.cells import Cell
    from mastctl.morphology import Analysis, placed_by_the_finder, segment

    st = stain.separate(np.full((64, 64, 3), 230, np.uint8), 0.5)  # working scale 0.5 um/px: 3.5 um = 7 px
    cells = [Cell(10, 10, "mast_cell", "explicit", 0.9), Cell(50, 50, "lymphocyte", None, 0.8),
             Cell(90, 90, "mast_cell", "implicit", 0.7), Cell(130, 130, "fibroblast", None, 0.6)]
    found = np.array([(11.0, 10.0), (51.0, 49.0), (200.0, 200.0), (10.0, 14.0)])
    a = Analysis(st, segment.Nuclei(np.zeros((64, 64), np.int32), 0, np.zeros((0, 2))), np.zeros((0, 1)),
                 found=found, found_score=np.array([0.9, 0.8, 0.45, 0.6]))
    out = {(c.x, c.y): c for c in placed_by_the_finder(cells, a, min_h_over_e=0)}  # (blank glass: no stain to check)
    assert set(out) == {(11.0, 10.0), (51.0, 49.0), (90, 90), (200.0, 200.0)}
    assert (out[11.0, 10.0].label, out[11.0, 10.0].kind, out[11.0, 10.0].confidence) == ("mast_cell", "explicit", 0.9)
    assert out[51.0, 49.0].label == "lymphocyte"  # moved onto the finder's centre, class kept
    assert out[90, 90].kind == "implicit"  # a mast call the finder did not see is kept
    assert (out[200.0, 200.0].label, out[200.0, 200.0].confidence) == ("other", 0.45)  # a nucleus only the finder saw
    # (10, 14) is a second peak 4 px from a placed cell: no new cell; the unfound fibroblast is dropped


def test_pale_nuclei_the_stain_threshold_misses_are_cells_with_the_finder():
    from mastctl.morphology import analyse, classify, default_model
    from tests.test_morphology import disc_image

    dark, pale = [(40.0, 40.0), (100.0, 40.0)], [(40.0, 110.0), (100.0, 110.0)]
    image = np.minimum(disc_image(dark, 6.0, size=160), disc_image(pale, 6.0, size=160, h_conc=0.12))

    class Perfect:  # a finder that sees all four
        def proximity(self, st):
            return nucleinet.target_map(st.h.shape, np.array(dark + pale), nucleinet.RADIUS_UM / 0.5)

        def peaks(self, prox, mpp):
            return nucleinet.find_peaks(prox, mpp, 0.3)

    seeded = analyse(image, 0.5)
    assert len(match(seeded.xy, pale, 3.0).pairs) == 0  # the built-in seeds miss the pale ones
    cells = classify(analyse(image, 0.5, nuclei_net=Perfect()), default_model())
    xy = np.array([(c.x, c.y) for c in cells])
    assert len(cells) == 4 and len(match(xy, dark + pale, 2.0).pairs) == 4
    assert all(c.label == "other" for c in cells if min(np.hypot(c.x - px, c.y - py) for px, py in pale) < 2)


def test_a_peak_the_finder_puts_in_collagen_is_not_a_cell():
    """A found nucleus with no seeded region and no hematoxylin (eosin-dense collagen, where the finder fitted on
    colorectal cancer fires in a dermis) is dropped; ``found_min_h_over_e=0`` keeps it, as the finder said."""
    from mastctl.morphology import analyse, classify, default_model, hematoxylin_over_eosin
    from tests.test_morphology import disc_image

    dark, collagen = [(40.0, 40.0), (100.0, 40.0), (40.0, 110.0)], [(110.0, 115.0)]
    image = disc_image(dark, 6.0, size=160, e_background=0.8)

    class Finder:  # sees the three nuclei and a "nucleus" in the bare eosin
        def proximity(self, st):
            return nucleinet.target_map(st.h.shape, np.array(dark + collagen), nucleinet.RADIUS_UM / 0.5)

        def peaks(self, prox, mpp):
            return nucleinet.find_peaks(prox, mpp, 0.3)

    analysis = analyse(image, 0.5, nuclei_net=Finder())
    ratio = hematoxylin_over_eosin(analysis.stained, np.array(dark + collagen))
    assert ratio[:3].min() > 2 and ratio[3] < 0.1
    kept = classify(analysis, default_model())
    assert len(kept) == 3 and len(match(np.array([(c.x, c.y) for c in kept]), dark, 2.0).pairs) == 3
    every = classify(analysis, default_model(), found_min_h_over_e=0)
    assert len(every) == 4 and len(match(np.array([(c.x, c.y) for c in every]), collagen, 2.0).pairs) == 1


def test_the_detector_option_and_the_constant_agree():
    from mastctl.backends.detectors.morphology import MorphologyDetector
    from mastctl.morphology import FOUND_MIN_H_OVER_E, NET_VETO, NET_VETO_EXPLICIT

    options = MorphologyDetector.Options()
    assert (options.found_min_h_over_e, options.net_veto, options.net_veto_explicit) == (FOUND_MIN_H_OVER_E, NET_VETO,
                                                                                        NET_VETO_EXPLICIT)
    # the veto is the built-in criteria's: a model fitted to your own labels keeps its calls unless asked
    assert MorphologyDetector(options).net_veto == NET_VETO
    own = MorphologyDetector.Options(model=str(Path(__file__).parents[1] / "mastctl" / "morphology" / "default_model.json"))
    assert MorphologyDetector(own).net_veto == 0
    assert MorphologyDetector(MorphologyDetector.Options(model=own.model, net_veto=0.1)).net_veto == 0.1


def test_the_net_is_asked_about_a_nucleus_only_the_finder_saw():
    from mastctl.cells import Cell
    from mastctl.morphology import Analysis, placed_by_the_finder, segment

    st = stain.separate(np.full((64, 64, 3), 230, np.uint8), 0.5)
    a = Analysis(st, segment.Nuclei(np.zeros((64, 64), np.int32), 0, np.zeros((0, 2))), np.zeros((0, 1)),
                 found=np.array([(11.0, 10.0), (200.0, 200.0), (300.0, 40.0)]), found_score=np.array([0.9, 0.5, 0.5]))
    asked = []

    def p_net(xy):
        asked.append(xy.copy())
        return np.where(xy[:, 0] > 250, 0.2, 0.8)

    out = placed_by_the_finder([Cell(10, 10, "lymphocyte", None, 0.8)], a, p_net, mast_threshold=0.3, min_h_over_e=0)
    assert len(asked) == 1 and np.allclose(asked[0], [(200.0, 200.0), (300.0, 40.0)])  # only about the finder's own
    by_x = {c.x: c for c in out}
    assert by_x[11.0].label == "lymphocyte" and by_x[300.0].label == "other"
    assert (by_x[200.0].label, by_x[200.0].kind, by_x[200.0].confidence) == ("mast_cell", None, 0.8)


def test_a_half_believed_cell_in_a_sheet_of_believed_ones_is_a_mast_cell():
    from mastctl.cells import Cell
    from mastctl.morphology import SheetRule, net_on_scale, sheet_calls

    t = 0.3  # the criteria model's threshold: the net's 0.5 lands there

    def cell(x, y, p_net, label="other"):
        return Cell(x, y, label, None, 0.5, {"p_mast_net": float(net_on_scale([p_net], t)[0])})

    # a sheet: one doubtful cell (net 0.15) among six the net half-believes (0.3) -- and a lone doubtful cell far away
    ring = [cell(20 + 10 * np.cos(a), 20 + 10 * np.sin(a), 0.3) for a in np.linspace(0, 2 * np.pi, 6, endpoint=False)]
    cells = [cell(20, 20, 0.15), *ring, cell(200, 200, 0.15), cell(20, 32, 0.15, "lymphocyte")]
    out = sheet_calls(cells, 1.0, t)
    assert (out[0].label, out[0].kind, out[0].confidence) == ("mast_cell", None, t)  # a call at the decision point
    assert out[0].features["p_explicit"] + out[0].features["p_implicit"] == pytest.approx(t)  # what hybrid reads
    assert out[0].features["p_mast_net"] == cells[0].features["p_mast_net"]
    assert 0.25 < out[0].features["sheet_neighbours_p"] < 0.35
    assert all(c.is_mast_cell for c in out[1:7])  # each ring cell has the sheet around it too
    assert out[7].label == "other"  # alone: nothing to lean on
    assert out[8].label == "lymphocyte"  # a look-alike the criteria named is not promoted
    # the bounds move with the decision point: at a stricter threshold (0.6 for the model's 0.3) nobody is promoted
    assert not any(c.is_mast_cell for c in sheet_calls(cells, 1.0, 0.6))
    # a cell the net was not asked about (no p_mast_net) is a doubtful neighbour and never promoted itself
    unasked = [Cell(c.x, c.y, c.label, None, 0.5, {}) for c in ring]
    assert not sheet_calls([cells[0], *unasked], 1.0, t)[0].is_mast_cell
    assert not sheet_calls(cells, 1.0, t, SheetRule(neighbours=0.4))[0].is_mast_cell


def test_a_sheet_split_between_sure_and_unasked_neighbours_is_doubtful_without_a_warning():
    """Four neighbours, two mast calls (+inf) and two the net was not asked about (-inf): np.median gave NaN there
    (a RuntimeWarning on the user's stderr, seen on a turned ccMCT crop); the median is doubtful and nobody is
    promoted. An odd count, or a finite middle pair, reads as the median always did."""
    import warnings

    from mastctl.cells import Cell
    from mastctl.morphology import _median_logit, net_on_scale, sheet_calls

    t = 0.3
    doubtful = Cell(20, 20, "other", None, 0.5, {"p_mast_net": float(net_on_scale([0.15], t)[0])})
    sure = [Cell(30, 20, "mast_cell", "explicit", 0.9), Cell(10, 20, "mast_cell", "explicit", 0.9)]
    unasked = [Cell(20, 30, "other", None, 0.5), Cell(20, 10, "other", None, 0.5)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = sheet_calls([doubtful, *sure, *unasked], 1.0, t)
    assert out[0].label == "other"
    assert _median_logit(np.array([np.inf, -np.inf, np.inf])) == np.inf
    assert _median_logit(np.array([np.inf, -1.0, 2.0, -np.inf])) == pytest.approx(0.5)
    assert _median_logit(np.array([-np.inf, -np.inf, 2.0, 0.0])) == -np.inf


@pytest.mark.skipif(not (REAL / "ccmct").exists(), reason="../shared/data not present")
def test_the_sheet_rule_adds_mast_calls_in_real_tumour_sheets_only():
    """ccMCT tb2 sheets (the choose set) gain mast calls from the sheet rule; CRC epithelium gains none."""
    from mastctl import imaging, registry
    from mastctl.profile import Profile
    from mastctl.truth import load_truth

    det = registry.create("detector", "morphology", Profile())
    sheet = [c for name in ("tb2_00", "tb2_20")
             for c in det.detect(imaging.load(REAL / "ccmct" / f"{name}.png", mpp=0.25)).cells]
    by_sheet = sum("sheet_neighbours_p" in c.features for c in sheet)
    # 3 of 81 cells by the rule, 69 mast in all, 66 without it (2026-12-07, night: the blurrier criteria and the view
    # margin; 5 of 75 and 61 before, with the net that saw the second renderer; 9 of 74 before that)
    assert by_sheet >= 2 and sum(c.is_mast_cell for c in sheet) / len(sheet) > 0.7
    epithelial = load_truth(REAL / "crc_nuclei" / "points.csv", classes=["epithelial"])
    promoted = 0
    for name in ("img10", "img18", "img22"):  # glands: the net believes no neighbourhood there
        cells = det.detect(imaging.load(REAL / "crc_nuclei" / "images" / f"{name}.png", mpp=0.55)).cells
        by_rule = np.array([(c.x, c.y) for c in cells if "sheet_neighbours_p" in c.features]).reshape(-1, 2)
        promoted += len(by_rule)
        assert len(cells) > 50 and not match(by_rule, [(c.x, c.y) for c in epithelial[name].cells], 6.0).pairs
    assert promoted <= 1  # (none with the shipped net, nor in any of the 50 images' marked epithelium)


@pytest.mark.skipif(not (REAL / "crc_nuclei").exists(), reason="../shared/data not present")
def test_the_net_vetoes_criteria_calls_in_colorectal_cancer():
    """The criteria model learned the renderer and calls some carcinoma cells mast cells (4 CRC images: 7 calls, 9
    before the blurrier criteria of 2026-12-07; mast cells are rare there); the crop net is sure most are not and
    overrules them (``net_veto``): none are left. (The shipped net was trained on these images as negatives: this pins
    the behaviour; bench/real_tissue.py's two-fold figures measure transfer.)"""
    from mastctl import imaging, registry
    from mastctl.profile import Profile

    detectors = {name: registry.create("detector", "morphology", Profile(), **options)
                 for name, options in (("criteria", {"mast_net": "none"}), ("vetoed", {}), ("no veto", {"net_veto": 0}))}
    calls = dict.fromkeys(detectors, 0)
    for name in ("img16", "img32", "img44", "img92"):
        image = imaging.load(REAL / "crc_nuclei" / "images" / f"{name}.png", mpp=0.55)
        for key, det in detectors.items():
            calls[key] += sum(c.is_mast_cell for c in det.detect(image).cells)
    assert calls["criteria"] >= 5 and calls["no veto"] >= calls["criteria"] and calls["vetoed"] <= 1, calls
