"""bench/other_renderer.py, third_renderer.py and fourth_renderer.py: renderers apart from mastctl.synth whose tiles
mastctl scores like its own synthetic tiles."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module", params=["other_renderer", "third_renderer", "fourth_renderer"])
def other_renderer(request):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # they write with bench/rendered_tiles.py, as the benches run them
    spec = importlib.util.spec_from_file_location(f"bench_{request.param}", BENCH / f"{request.param}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_a_seed_draws_one_tile_with_every_kind_of_cell_inside_it(other_renderer):
    rgb, cells = other_renderer.render([3, 0], size=256)
    again, cells_again = other_renderer.render([3, 0], size=256)
    assert rgb.shape == (256, 256, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb, again) and cells == cells_again
    assert not np.array_equal(rgb, other_renderer.render([3, 1], size=256)[0])
    counts = Counter()
    for i in range(6):
        _, drawn = other_renderer.render([3, i], size=256) if i else (rgb, cells)
        assert all(0 <= c["x"] < 256 and 0 <= c["y"] < 256 for c in drawn)
        counts.update((c["label"], c["kind"]) for c in drawn)
    for key in [("mast_cell", "explicit"), ("mast_cell", "implicit"), ("lymphocyte", None), ("plasma_cell", None),
                ("fibroblast", None), ("eosinophil", None)]:
        assert counts[key] > 0, key
    # the tissue is stained: nuclei absorb far more than the stroma around them
    lymph = [c for c in cells if c["label"] == "lymphocyte"]
    at = np.array([rgb[int(c["y"]), int(c["x"])].mean() for c in lymph])
    assert np.median(at) < np.median(rgb.mean(axis=2)) - 60


def test_its_tiles_are_read_and_scored_as_synthetic_truth(other_renderer, tmp_path):
    from mastctl.cells import LABELS
    from mastctl.metrics import evaluate, score_image
    from mastctl.truth import image_key, load_truth

    other_renderer.generate(tmp_path, 2, seed=5, size=192)
    truth = load_truth(tmp_path)
    assert sorted(truth) == [image_key(f"{other_renderer.stem(5, i)}_he.png") for i in range(2)]
    scores = []
    for key, item in truth.items():
        data = json.loads((tmp_path / f"{key.removesuffix('_he')}.json").read_text())
        assert item.mpp == 0.5 and len(item.cells) == len(data["cells"]) and (tmp_path / item.image).exists()
        assert {c.label for c in item.cells} <= set(LABELS)
        mast = [c for c in item.cells if c.label == "mast_cell"]
        scores.append(score_image(key, mast, item.cells, radius_px=10.0))
    assert sum(s.true_count for s in scores) > 0
    assert evaluate(scores).detection.f1 == 1.0  # the truth's own mast cells score 1


def test_no_training_or_choosing_script_reads_the_third_renderer():
    """Its tiles are a REPORT set (bench/real_tissue.py): a script that fits or chooses a model must never draw them."""
    readers = {p.name for p in BENCH.glob("*.py")
               if re.search(r"import third_renderer|[\"']third_renderer[\"']", p.read_text())}
    assert readers == {"real_tissue.py"}
