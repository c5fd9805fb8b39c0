"""IHC: DAB detection, registration and label transfer on built pairs with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image as PILImage
from scipy import ndimage as ndi

from conftest import SHARED_DATA
from mastctl import metrics, registry, stains, synth
from mastctl.cells import Cell
from mastctl.errors import InputError
from mastctl.ihc import detect_dab, transfer
from mastctl.imaging import Image
from mastctl.profile import Profile
from mastctl.registration import register


@pytest.fixture(scope="module")
def pair():
    return synth.render_tile([77, 3], synth.SynthOptions(size=384, mpp=0.5))


@pytest.mark.slow
def test_registration_recovers_the_known_transform(pair):
    reg = register(pair.he, pair.ihc, 0.5, 0.5)
    he_xy = np.array([[c.x, c.y] for c in pair.cells])
    true = np.array([[c.ihc["x"], c.ihc["y"]] for c in pair.cells])
    error_um = np.hypot(*(reg.he_to_ihc(he_xy) - true).T) * 0.5
    assert error_um.mean() < 1.5 and error_um.max() < 3.0
    assert reg.ncc > 0.8 and reg.overlap > 0.8
    assert np.allclose(reg.ihc_to_he(reg.he_to_ihc(he_xy)), he_xy)
    assert abs(reg.rotation_deg - pair.transform["rotation_deg"]) < 0.5


@pytest.mark.slow
def test_registration_with_a_large_rotation_and_different_scales(pair):
    # the IHC scanned at 0.25 um/px and turned by 30 degrees
    big = np.asarray(PILImage.fromarray(pair.ihc).resize((768, 768), PILImage.BICUBIC))
    turned = ndi.rotate(big, 30, axes=(1, 0), reshape=False, order=1, cval=245)
    reg = register(pair.he, turned, 0.5, 0.25)
    c = 384.0  # centre of the 768 px image
    theta = np.deg2rad(-30)  # ndimage.rotate by +30 turns the picture counter-clockwise on screen (y down)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    pts = np.array([[cell.ihc["x"], cell.ihc["y"]] for cell in pair.cells if cell.type != "epithelial"]) * 2
    expected = (pts - c) @ rot.T + c  # where those cells went in the turned image
    he_xy = np.array([[cell.x, cell.y] for cell in pair.cells if cell.type != "epithelial"])
    error_um = np.hypot(*(reg.he_to_ihc(he_xy) - expected).T) * 0.25
    inside = (expected > 40).all(axis=1) & (expected < 728).all(axis=1)
    assert np.median(error_um[inside]) < 1.5


@pytest.mark.slow
def test_registration_refuses_pairs_that_do_not_overlap(pair):
    other = synth.render_tile([78, 9], synth.SynthOptions(size=384, mpp=0.5))
    with pytest.raises(InputError, match="do not overlap"):
        register(pair.he, other.ihc, 0.5, 0.5)
    blank = np.full_like(pair.ihc, 242)
    with pytest.raises(InputError, match="no tissue"):
        register(pair.he, blank, 0.5, 0.5)


def test_dab_marks_every_mast_cell_and_nothing_else(pair):
    result = detect_dab(pair.ihc, 0.5)
    positives = [c for c in result.cells if c.features["positive"]]
    assert all(c.label == "mast_cell" for c in positives)
    true = [(c.ihc["x"], c.ihc["y"]) for c in pair.cells if c.type == "mast_cell" and c.ihc["inside"]]
    m = metrics.match([(c.x, c.y) for c in positives], true, 4.0 / 0.5)
    assert len(m.pairs) == len(true) and len(m.unmatched_pred) <= 1
    assert result.total > 3 * len(true)  # the negative nuclei are counted too
    assert 0 < result.positive_pct < 40


def test_no_dab_and_blank_ihc_give_no_positives(pair):
    hema_only = stains.separate(pair.ihc, (pair.stain["ihc_hematoxylin"], pair.stain["dab"]))
    rgb = stains.compose({"h": np.clip(hema_only[..., 0], 0, None)}, {"h": np.asarray(pair.stain["ihc_hematoxylin"])})
    no_dab = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    result = detect_dab(no_dab, 0.5)
    assert result.positive == 0 and result.total > 20
    blank = detect_dab(np.full((128, 128, 3), 240, np.uint8), 0.5)
    assert blank.total == 0 and blank.positive_pct is None


@pytest.mark.slow
def test_transfer_recovers_mast_cells_on_he(pair):
    detector = registry.create("detector", "morphology", Profile())
    he_image = Image(pair.he, "he.png", 0.5)
    result = transfer(he_image, Image(pair.ihc, "ihc.png", 0.5), detector.detect(he_image))
    mast = [c for c in result.detections.cells if c.is_mast_cell]
    true = [c for c in pair.cells if c.type == "mast_cell" and c.ihc["inside"]]
    m = metrics.match([(c.x, c.y) for c in mast], [(c.x, c.y) for c in true], 3.0 / 0.5)
    assert len(m.pairs) >= 0.95 * len(true) and len(m.unmatched_pred) <= 1
    assert all(c.kind in ("explicit", "implicit") for c in mast)
    doc = result.to_dict()
    assert doc["schema"] == "mastctl/detections@1" and "transform" in doc and "likely_false_positives" in doc


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    for i in range(2):
        synth.write_tile(synth.render_tile([79, i], synth.SynthOptions(size=320, mpp=0.5)), folder, f"p{i}")
    return folder


@pytest.mark.slow
def test_transfer_cli_feeds_compare_and_finetune(cli, pair_files, tmp_path):
    r = cli("ihc", "transfer", str(pair_files / "p0_he.png"), str(pair_files / "p0_ihc.png"), "-o", "labels/p0_he.json")
    assert r.exit_code == 0, r.stderr
    r = cli("ihc", "transfer", str(pair_files / "p1_he.png"), str(pair_files / "p1_ihc.png"), "-o", "labels/p1_he.json")
    assert r.exit_code == 0, r.stderr
    r = cli("--json", "compare", str(pair_files / "p0_he.png"), str(pair_files / "p1_he.png"), "--truth", "labels", "-b", "morphology")
    assert r.exit_code == 0, r.stderr
    assert r.json()["backends"][0]["detection"]["tp"] > 0
    r = cli("finetune", "morphology", "--images", str(pair_files), "--truth", "labels", "-o", "m.json")
    assert r.exit_code == 0, r.stderr


@pytest.mark.slow
def test_batch_transfer_is_resumable(cli, pair_files, tmp_path):
    (tmp_path / "pairs.csv").write_text(
        f"he,ihc\n{pair_files / 'p0_he.png'},{pair_files / 'p0_ihc.png'}\n{pair_files / 'p1_he.png'},{pair_files / 'missing.png'}\n")
    r = cli("--json", "ihc", "transfer", "--pairs", "pairs.csv", "-o", "out")
    assert r.exit_code == 3 and "missing.png: no such file" in r.stderr
    assert [row["output"] for row in r.json()] == ["out/p0_he.json"]
    assert r.json()[0]["he_mpp"] == 0.5 and "no scale" not in r.stderr
    first = (tmp_path / "out" / "p0_he.json").read_text()
    r = cli("ihc", "transfer", "--pairs", "pairs.csv", "-o", "out")
    assert "1 of 2 pairs already done" in r.stderr and (tmp_path / "out" / "p0_he.json").read_text() == first


@pytest.mark.slow
def test_transfer_of_an_he_image_without_a_scale_warns(cli, pair_files, tmp_path):
    from PIL import Image

    Image.open(pair_files / "p0_he.png").save(tmp_path / "he.png")  # no dpi
    r = cli("--json", "ihc", "transfer", "he.png", str(pair_files / "p0_ihc.png"), "-o", "labels.json")
    assert r.exit_code == 0, r.stderr
    assert r.json()[0]["he_mpp"] is None and "he.png: no scale in the file, so detected as if 0.5 um/px" in r.stderr


def test_ihc_detect_and_register_cli(cli, pair_files):
    r = cli("--json", "ihc", "detect", str(pair_files / "p0_ihc.png"), "--all-cells", "-o", "cells.csv")
    assert r.exit_code == 0, r.stderr
    row = r.json()[0]
    assert row["cells"] > row["positive"] > 0 and 0 < row["positive_pct"] < 100
    r = cli("--json", "ihc", "register", str(pair_files / "p0_he.png"), str(pair_files / "p0_ihc.png"), "-o", "t.json")
    assert r.exit_code == 0 and r.json()["quality_ncc"] > 0.8
    truth = json.loads((pair_files / "p0.json").read_text())["transform"]["matrix"]
    assert np.allclose(r.json()["matrix"], truth, atol=0.6)
    r = cli("ihc", "detect", str(pair_files / "p0_ihc.png"), "--marker", "he")
    assert r.exit_code == 2


@pytest.mark.skipif(not (SHARED_DATA / "ihc_ki67").exists(), reason="../shared/data not present")
def test_real_ki67_positive_cells():
    path = SHARED_DATA / "ihc_ki67" / "22_2.png"
    gt = np.asarray(PILImage.open(SHARED_DATA / "ihc_ki67" / "groundtruth" / "22_2.png").convert("RGB"))
    red = (gt[..., 0] > 200) & (gt[..., 1] < 50) & (gt[..., 2] < 50)
    lab, n = ndi.label(red)
    truth = [Cell(c[1], c[0], "other") for c in ndi.center_of_mass(red, lab, range(1, n + 1))]
    pixels = np.asarray(PILImage.open(path).convert("RGB"))
    pred = [c for c in detect_dab(pixels, 0.25, marker="ki67").cells if c.features["positive"]]
    f1 = metrics.score_image("x", pred, truth, 16, mode="cells").detection.f1
    assert f1 >= 0.8


@pytest.mark.slow
def test_unrelated_small_tiles_are_refused_whatever_their_size():
    """A 256 px H&E and another tile's IHC: the search can always find a chance alignment; it must not
    beat the same IHC mirrored or rearranged by enough (an overlap-aware null, not a fixed threshold)."""
    a = synth.render_tile([305, 0], synth.SynthOptions(size=256, mpp=0.5))
    b = synth.render_tile([405, 1], synth.SynthOptions(size=256, mpp=0.5))
    with pytest.raises(InputError, match="do not overlap enough"):
        register(a.he, b.ihc, 0.5, 0.5)  # correlation 0.45 at 38% overlap: accepted before the null existed
    same = register(a.he, a.ihc, 0.5, 0.5)
    assert same.ncc > same.ncc_null + 0.5 and same.to_dict()["null_ncc"] == round(same.ncc_null, 4)


def test_registration_ncc_gradient_matches_finite_differences():
    # the fine step climbs the NCC with its analytic gradient (L-BFGS): a wrong gradient would
    # still "converge", just to the wrong place, so pin it against central differences
    from scipy import ndimage as ndi

    from mastctl.registration import _Fit, _rot

    rng = np.random.default_rng(3)
    texture = ndi.gaussian_filter(rng.random((128, 128)), 4.0)  # smooth: central differences = the true slope
    moving = ndi.shift(texture, (1.7, -2.3), order=1, mode="nearest")
    fixed = texture[16:112, 16:112]  # moving covers it whatever the small maps below: no border effects
    fit = _Fit(fixed, moving)
    A, t = _rot(0.05) * 1.01, np.array([16.8, 14.9])
    value, grad = fit.value_and_gradient(A, t, 1)
    params = np.concatenate([A.ravel(), t])
    numeric = []
    for i in range(6):
        step = np.zeros(6)
        step[i] = 1e-4
        up, down = params + step, params - step
        numeric.append((fit.score(up[:4].reshape(2, 2), up[4:], 1)[0] - fit.score(down[:4].reshape(2, 2), down[4:], 1)[0]) / 2e-4)
    assert value == pytest.approx(fit.score(A, t, 1)[0])
    np.testing.assert_allclose(grad, numeric, rtol=0.05, atol=2e-4)
    # and climbing it recovers the shift that made the pair
    ncc, A_fit, t_fit = fit.refine_rigid(np.eye(2), np.array([16.0, 16.0]), max_iter=60, stride=1)
    assert ncc > 0.99 and np.allclose(t_fit, [16 - 2.3, 16 + 1.7], atol=0.1) and abs(math.atan2(A_fit[1, 0], A_fit[0, 0])) < 0.01
