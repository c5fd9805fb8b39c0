"""The morphology nets in bfloat16 (``threads.net_precision``): the detector's default on a CPU with AMX tiles, where it
runs the nets about twice as fast; its cells stay those of float32 but for a few near a decision (README)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from mastctl import registry, synth, threads
from mastctl.errors import UsageError
from mastctl.imaging import Image
from mastctl.profile import Profile


def test_precision_names_resolve_and_auto_follows_the_cpu(monkeypatch):
    assert threads.net_precision("float32") == "float32" and threads.net_precision("bfloat16") == "bfloat16"
    monkeypatch.setattr(threads, "_amx_tiles", lambda: True)
    assert threads.net_precision() == "bfloat16"
    monkeypatch.setattr(threads, "_amx_tiles", lambda: False)
    assert threads.net_precision("auto") == "float32"
    with pytest.raises(UsageError, match="net precision 'half'"):
        threads.net_precision("half")


@pytest.fixture(scope="module")
def tile():
    return synth.render_tile(11, synth.SynthOptions(size=320, mpp=0.5, style="sheet"))


def test_bfloat16_nets_give_nearly_the_float32_maps_and_logits(tile):
    torch = pytest.importorskip("torch")
    from mastctl.morphology import mastnet, nucleinet, stain

    st = stain.separate(tile.he, 0.5)
    finder = {p: nucleinet.default_net() for p in ("float32", "bfloat16")}
    maps = {}
    for p, net in finder.items():
        net.precision = p
        maps[p] = net.proximity(st)
    assert finder["bfloat16"]._torch_folded[0][0].dtype == torch.bfloat16  # it ran in bfloat16, not float32 again
    assert np.abs(maps["bfloat16"] - maps["float32"]).max() < 0.05
    peaks = {p: finder[p].peaks(m, st.mpp) for p, m in maps.items()}
    assert abs(len(peaks["bfloat16"]) - len(peaks["float32"])) <= 0.03 * len(peaks["float32"])
    net = mastnet.default_net()
    crops = mastnet.stain_crops(net.maps(st), st.mpp, np.array([(c.x, c.y) for c in tile.cells]) / st.factor)
    logits = {}
    for p in ("float32", "bfloat16"):
        net.precision = p
        logits[p] = net._forward_torch(crops)
    assert net._torch_weights[0][0].dtype == torch.bfloat16
    assert np.abs(logits["bfloat16"] - logits["float32"]).max() < 0.25
    assert np.mean((logits["bfloat16"] > 0) == (logits["float32"] > 0)) >= 0.97


def test_the_detector_runs_its_nets_in_the_precision_asked_and_the_cells_barely_move(tile):
    pytest.importorskip("torch")  # loaded: torch runs the nets, however small the image
    image = Image(pixels=tile.he, mpp=0.5, path="t.png")
    cells = {}
    for p in ("float32", "bfloat16"):
        detector = registry.create("detector", "morphology", Profile(), net_precision=p)
        assert detector.mast_net.precision == detector.nuclei_net.precision == p
        cells[p] = detector.detect(image).cells
    assert registry.create("detector", "morphology", Profile()).mast_net.precision == "auto"
    a, b = cells["float32"], cells["bfloat16"]
    mast = [sum(c.is_mast_cell for c in cs) for cs in (a, b)]
    assert mast[0] >= 5 and abs(mast[0] - mast[1]) <= 1, mast
    d, j = cKDTree([(c.x, c.y) for c in b]).query([(c.x, c.y) for c in a])
    same = np.mean([d[i] <= 1.0 and b[j[i]].label == c.label for i, c in enumerate(a)])
    assert same >= 0.97, same


def test_an_unknown_precision_is_a_one_line_error(cli, tmp_path):
    from PIL import Image as PILImage

    PILImage.fromarray(np.full((64, 64, 3), 230, np.uint8)).save(tmp_path / "t.png")
    r = cli("detect", tmp_path / "t.png", "--mpp", "0.5", "-O", "net_precision=half")
    assert r.exit_code != 0 and "net_precision" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
