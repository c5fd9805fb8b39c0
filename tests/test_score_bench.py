"""bench/score.py's two-fold CRC nucleus line runs the detector the command line asked for."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _score_module(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # score.py imports its neighbours (nuclei_cv)
    spec = importlib.util.spec_from_file_location("bench_score", BENCH / "score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_two_fold_line_keeps_the_options_of_the_command_line(monkeypatch, tmp_path):
    from mastctl.morphology import nucleinet

    score = _score_module(monkeypatch)
    halves = ([tmp_path / "a.png"], [tmp_path / "b.png"])
    monkeypatch.setattr(score, "crc_halves", lambda *a: (halves[0] + halves[1], halves))
    seen = []

    def compare(images, truth, backends, profile, **kw):
        seen.append(profile.backend_options["morphology"])
        detection = SimpleNamespace(tp=8, fp=2, fn=2, precision=0.8, recall=0.8, f1=0.8)
        return SimpleNamespace(runs=[SimpleNamespace(evaluation=SimpleNamespace(detection=detection))])

    monkeypatch.setattr(score.compare, "compare", compare)
    shipped = Path(nucleinet.__file__).with_name(nucleinet.DEFAULT_NET)
    truth = {"a": SimpleNamespace(cells=[]), "b": SimpleNamespace(cells=[])}
    out = score.crc_two_fold(truth, 0, tmp_path, [shipped, shipped], options={"nuclei_flips": True})
    assert [o["nuclei_flips"] for o in seen] == [True, True] and all(o["nuclei"] == str(shipped) for o in seen)
    assert abs(out["f1"] - 0.8) < 1e-9
    score.crc_two_fold(truth, 0, tmp_path, [shipped, shipped])
    assert seen[-1] == {"nuclei": str(shipped)}
