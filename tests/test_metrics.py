from __future__ import annotations

import numpy as np
import pytest

from mastctl.cells import Cell
from mastctl.metrics import Counts, bootstrap_ci, evaluate, match, score_image


def mast(x, y, kind="explicit"):
    return Cell(x, y, "mast_cell", kind, 0.9)


def test_match_is_one_to_one_within_radius():
    m = match([(0, 0), (10, 0), (5, 0)], [(0, 0), (5.5, 0)], radius=3)
    assert m.pairs == ((0, 0), (2, 1)) and m.unmatched_pred == (1,) and m.unmatched_true == ()
    assert m.distances == (0.0, 0.5)


def test_match_maximises_pairs_before_distance():
    # nearest-first would pair P1-T0 (0.8) and leave P0 and T1 unmatched
    m = match([(0, 0), (1.8, 0)], [(1.0, 0), (3.2, 0)], radius=1.5)
    assert m.pairs == ((0, 0), (1, 1))


def test_match_ties_are_deterministic():
    pred, true = [(0, 0), (2, 0)], [(1, 0)]
    assert match(pred, true, 1.5) == match(pred, true, 1.5)
    assert len(match(pred, true, 1.5).pairs) == 1


def test_match_boundary_and_empty_inputs():
    assert match([(0, 0)], [(3, 4)], radius=5).pairs == ((0, 0),)  # exactly on the radius counts
    assert match([(0, 0)], [(3, 4.01)], radius=5).pairs == ()
    empty = match([], [(1, 1), (2, 2)], 3)
    assert empty.pairs == () and empty.unmatched_true == (0, 1)
    assert match([(1, 1)], [], 3).unmatched_pred == (0,)


def test_match_is_the_best_one_to_one_pairing_of_lone_pairs_and_crowds_alike():
    """Most points have one candidate (paired as they are, without an assignment); crowds go through the assignment.
    Either way: the most pairs, then the least total distance, as an exhaustive search finds them, sorted."""
    import itertools

    rng = np.random.default_rng(4)
    for _ in range(60):
        pred, true = rng.uniform(0, 12, (rng.integers(0, 6), 2)), rng.uniform(0, 12, (rng.integers(0, 6), 2))
        pred[:2] = rng.uniform(40, 60, (min(2, len(pred)), 2))  # some far from the crowd
        true[:1] = pred[:1] + 0.5 if len(pred) and len(true) else true[:1]  # a lone pair
        radius = 3.0
        d = np.linalg.norm(pred[:, None] - true[None], axis=2) if len(pred) and len(true) else np.zeros((len(pred), 0))
        best = (0, 0.0)
        for choice in itertools.product(range(-1, len(true)), repeat=len(pred)):
            used = [t for t in choice if t >= 0]
            if len(used) != len(set(used)) or any(t >= 0 and d[p, t] > radius for p, t in enumerate(choice)):
                continue
            total = sum(d[p, t] for p, t in enumerate(choice) if t >= 0)
            if (len(used), -total) > (best[0], -best[1]):
                best = (len(used), total)
        m = match(pred, true, radius)
        assert len(m.pairs) == best[0] and sum(m.distances) == pytest.approx(best[1])
        assert list(m.pairs) == sorted(m.pairs)
        assert sorted(m.unmatched_pred + tuple(p for p, _ in m.pairs)) == list(range(len(pred)))


def test_match_scales_to_many_points():
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 20000, (20000, 2))
    pred = true + rng.normal(0, 1.0, true.shape)
    m = match(pred, true, 5.0)
    assert len(m.pairs) >= 19990


def test_counts_precision_recall_f1():
    c = Counts(tp=8, fp=2, fn=4)
    assert c.precision == 0.8 and c.recall == pytest.approx(8 / 12) and c.f1 == pytest.approx(16 / 22)
    assert Counts().precision is None and Counts().f1 is None
    assert Counts(0, 3, 0).precision == 0.0 and Counts(0, 3, 0).recall is None


def test_score_image_hand_built_case():
    true = [mast(10, 10, "explicit"), mast(50, 50, "implicit"), mast(90, 90, "implicit"), Cell(30, 30, "lymphocyte")]
    pred = [mast(11, 10, "explicit"), mast(50, 52, "explicit"), mast(200, 200, "implicit"), Cell(30, 30, "lymphocyte")]
    s = score_image("a", pred, true, radius_px=5)
    assert (s.detection.tp, s.detection.fp, s.detection.fn) == (2, 1, 1)
    assert s.detection.precision == pytest.approx(2 / 3) and s.detection.f1 == pytest.approx(4 / 6)
    # explicit: the one true explicit found as explicit; a true implicit was called explicit
    assert s.by_kind["explicit"] == Counts(tp=1, fp=1, fn=0)
    assert s.by_kind["implicit"] == Counts(tp=0, fp=1, fn=2)
    assert s.true_count == 3 and s.pred_count == 3 and s.count_error == 0


def test_empty_predictions_and_empty_truth():
    s = score_image("a", [], [mast(1, 1)], 5)
    assert s.detection == Counts(0, 0, 1) and s.detection.recall == 0.0 and s.detection.precision is None
    s = score_image("a", [mast(1, 1)], [], 5)
    assert s.detection == Counts(0, 1, 0) and s.detection.precision == 0.0
    ev = evaluate([score_image("a", [], [], 5)])
    assert ev.detection.f1 is None and ev.ci["f1"] is None


def test_label_confusion_for_all_cells():
    true = [Cell(0, 0, "lymphocyte"), Cell(20, 0, "plasma_cell"), Cell(40, 0, "mast_cell", "explicit"), Cell(60, 0, "fibroblast")]
    pred = [Cell(1, 0, "lymphocyte"), Cell(20, 1, "mast_cell", "implicit"), Cell(41, 0, "mast_cell"), Cell(100, 0, "other")]
    s = score_image("a", pred, true, 5, mode="cells")
    assert s.detection == Counts(3, 1, 1)
    assert s.confusion == {"lymphocyte": {"lymphocyte": 1}, "plasma_cell": {"mast_cell": 1}, "mast_cell": {"mast_cell": 1},
                           "fibroblast": {"(missed)": 1}, "(none)": {"other": 1}}


def test_evaluation_micro_average_and_bootstrap():
    scores = [score_image(str(i), [mast(0, 0)] * 1 + [mast(100, 100)] * (i % 2), [mast(0, 0)], 5) for i in range(10)]
    ev = evaluate(scores, n_boot=500, seed=1)
    assert ev.detection == Counts(10, 5, 0) and ev.detection.precision == pytest.approx(10 / 15)
    lo, hi = ev.ci["precision"]
    assert lo <= ev.detection.precision <= hi and 0.5 <= lo < hi <= 1.0
    assert ev.ci["recall"] == (1.0, 1.0)
    assert ev.count_mae == 0.5
    assert bootstrap_ci(scores, n_boot=200, seed=3) == bootstrap_ci(scores, n_boot=200, seed=3)
    one = evaluate(scores[1:2], n_boot=200)  # one image: no interval over images (not a zero-width one)
    assert one.detection.precision == 0.5 and one.ci == {"precision": None, "recall": None, "f1": None}
    doc = ev.to_dict()
    assert doc["detection"]["tp"] == 10 and len(doc["images"]) == 10 and set(doc["by_kind"]) == {"explicit", "implicit"}
