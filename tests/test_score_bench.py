"""bench/score.py's two-fold CRC nucleus line runs the detector the command line asked for; bench/real_tissue.py's
synthetic lines carry their intervals."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from conftest import bench_module


def _synthetic_tiles(folder: Path, n: int, size: int) -> list[Path]:
    """``n`` synthetic H&E tiles of ``size`` px (seed 7) written as PNG into ``folder``."""
    from PIL import Image

    from mastctl import synth

    paths = []
    for i in range(n):
        path = folder / f"tile{i}.png"
        Image.fromarray(synth.render_tile([7, i], synth.SynthOptions(size=size)).he).save(path)
        paths.append(path)
    return paths


def _recording_compare(record):
    """A stand-in for compare.compare that calls ``record(images, morphology options)`` and scores F1 0.8."""

    def compare(images, truth, backends, profile, **kw):
        record(list(images), profile.backend_options["morphology"])
        detection = SimpleNamespace(tp=8, fp=2, fn=2, precision=0.8, recall=0.8, f1=0.8)
        return SimpleNamespace(runs=[SimpleNamespace(evaluation=SimpleNamespace(detection=detection))])

    return compare


def test_the_two_fold_line_keeps_the_options_of_the_command_line(monkeypatch, tmp_path):
    from mastctl.morphology import nucleinet

    score = bench_module(monkeypatch, "score")
    halves = ([tmp_path / "a.png"], [tmp_path / "b.png"])
    monkeypatch.setattr(score, "crc_halves", lambda *a: (halves[0] + halves[1], halves))
    seen = []
    monkeypatch.setattr(score.compare, "compare", _recording_compare(lambda images, options: seen.append(options)))
    shipped = Path(nucleinet.__file__).with_name(nucleinet.DEFAULT_NET)
    truth = {"a": SimpleNamespace(cells=[]), "b": SimpleNamespace(cells=[])}
    out = score.crc_two_fold(truth, 0, tmp_path, [shipped, shipped], options={"nuclei_flips": True})
    assert [o["nuclei_flips"] for o in seen] == [True, True] and all(o["nuclei"] == str(shipped) for o in seen)
    assert abs(out["f1"] - 0.8) < 1e-9
    score.crc_two_fold(truth, 0, tmp_path, [shipped, shipped])
    assert seen[-1] == {"nuclei": str(shipped)}


def test_the_two_fold_line_fits_its_finders_with_the_shipped_recipe(monkeypatch, tmp_path):
    """Without finder files (``--crc-nuclei-steps N``) each fold's finder is fitted on the other half by
    train_nucleus_net's recipe (its own threshold folds unless ``--crc-nuclei-folds`` says otherwise), saved, and
    the held-out half scored with it."""
    from PIL import Image

    from mastctl import synth
    from mastctl.truth import image_key

    score = bench_module(monkeypatch, "score")
    paths, truth = [], {}
    for i in range(4):
        tile = synth.render_tile([7, i], synth.SynthOptions(size=192))
        path = tmp_path / f"img{i}.png"
        Image.fromarray(tile.he).save(path)
        paths.append(path)
        truth[image_key(path)] = SimpleNamespace(cells=[SimpleNamespace(x=c.x, y=c.y) for c in tile.cells], mpp=None)
    monkeypatch.setattr(score, "crc_halves", lambda *a: (paths, (paths[:2], paths[2:])))
    scored = []
    monkeypatch.setattr(score.compare, "compare",
                        _recording_compare(lambda images, options: scored.append((images, options["nuclei"]))))
    out = score.crc_two_fold(truth, 2, tmp_path)
    assert [images for images, _ in scored] == [paths[:2], paths[2:]] and out["steps"] == 2
    from mastctl.morphology.nucleinet import NucleusNet

    for k, (_, finder) in enumerate(scored):
        assert finder == str(tmp_path / f"crc-nuclei-fold{k}.safetensors")
        net = NucleusNet.load(finder)
        assert net.arch == "strided" and net.width == 16 and "2-fold" in net.info["threshold_chosen_on"]
    score.crc_two_fold(truth, 2, tmp_path, folds=0)
    assert "2-fold" not in NucleusNet.load(tmp_path / "crc-nuclei-fold0.safetensors").info["threshold_chosen_on"]


def test_real_tissue_prints_each_synthetic_f1_with_its_bootstrap_interval(monkeypatch, tmp_path):
    """16 tiles hold about 110 mast cells: a figure such as the held-out style's is printed with its 95% interval over
    tiles, so that a target near it is read as the uncertain claim it is."""
    rt = bench_module(monkeypatch, "real_tissue")
    detection = SimpleNamespace(precision=0.806, recall=0.833, f1=0.820)
    run = SimpleNamespace(evaluation=SimpleNamespace(detection=detection, ci={"f1": (0.780, 0.851)}), skipped=None)
    monkeypatch.setattr(rt, "synthetic_folder", lambda *a, **k: tmp_path)
    monkeypatch.setattr(rt, "load_truth", lambda folder: {})
    monkeypatch.setattr(rt.compare, "compare", lambda *a, **k: SimpleNamespace(runs=[run]))
    r = rt.synthetic("morphology", {}, tmp_path, 16, "faded")
    assert r["f1_ci95"] == (0.780, 0.851)
    assert rt.synthetic_text(r) == "mast F1 0.820 [0.780-0.851] (P 0.806, R 0.833)"
    assert rt.synthetic_text({**r, "f1_ci95": None}) == "mast F1 0.820 (P 0.806, R 0.833)"  # one tile: no interval


def test_real_tissue_summarises_the_development_style_over_its_draws(monkeypatch):
    """--dev-draws K: seeds 8000 on, with mean and SD (one draw of 16 tiles moves about 0.016)."""
    rt = bench_module(monkeypatch, "real_tissue")
    d = rt.draws_summary([{"f1": 0.883, "precision": 0.80, "recall": 0.98},
                          {"f1": 0.903, "precision": 0.85, "recall": 0.96},
                          {"f1": 0.893, "precision": 0.90, "recall": 0.88}])
    assert d["seeds"] == [8000, 8001, 8002] and d["f1"] == [0.883, 0.903, 0.893]
    assert abs(d["mean"] - 0.893) < 1e-9 and abs(d["sd"] - 0.010) < 1e-9
    assert abs(d["precision"] - 0.85) < 1e-9 and abs(d["recall"] - 0.94) < 1e-9  # the means, for a bound on either
    assert rt.draws_summary([{"f1": None, "precision": None, "recall": None}]) == {
        "seeds": [8000], "f1": [0.0], "mean": 0.0, "sd": 0.0, "precision": 0.0, "recall": 0.0}  # nothing found


def test_the_finder_alone_is_timed_on_the_same_tiles(monkeypatch, tmp_path):
    """The speed line's floor: the default's learned finder alone (decode, stain split, map, peaks) takes longer than
    decoding the tiles and less than the whole detector; a detector without a finder has no such line."""
    from mastctl import registry
    from mastctl.profile import Profile

    score = bench_module(monkeypatch, "score")
    paths = _synthetic_tiles(tmp_path, 2, 192)
    detector = registry.create("detector", "morphology", Profile())
    _, whole_s, _ = score.speed(paths, detector, repeat=2)  # first, as bench/score.py times them
    decode_s, finder_s = score.finder_speed(paths, detector, repeat=2)
    assert 0 < decode_s < finder_s < whole_s
    assert score.finder_speed(paths, SimpleNamespace(nuclei_net=None), repeat=1) is None


def test_the_memory_line_reads_the_peak_of_a_fresh_process_tile_by_tile(monkeypatch, tmp_path):
    """bench/score.py's memory line: a fresh process detects the tiles one after another and reports its RSS before the
    first and its peak after tile 1, the middle one and the last; growth over the second half is MB a tile."""
    score = bench_module(monkeypatch, "score")
    paths = _synthetic_tiles(tmp_path, 4, 160)
    out = score.memory(paths, "morphology", {"mast_threshold": 0.5})
    peaks = {int(k): v for k, v in out["peak_mb_after_tiles"].items()}
    # the kernel's RSS counters are kept per thread and summed now and then, so VmHWM read twice may fall by some kB
    # (314.344 -> 314.332 MB in a fresh clone's full run): the peaks rise to within 1 MB
    assert sorted(peaks) == [1, 2, 4] and 0 < out["before_mb"] < peaks[1] <= peaks[2] + 1 <= peaks[4] + 2
    assert score.growth_per_tile({1: 300.0, 5: 310.0, 10: 320.0}) == 2.0
    assert score.growth_per_tile({1: 300.0}) == 0.0
    monkeypatch.setattr(score, "Path", lambda p: tmp_path / "no-proc" / str(p).lstrip("/"))  # not Linux: no /proc
    assert "skipped" in score.memory(paths, "morphology", {})


def test_real_tissue_jpeg_line_reads_each_image_as_png_and_as_saved_by_a_scanner(monkeypatch, tmp_path):
    """--choose's JPEG line: the skin's choose half and the CRC threshold images as PNG and saved as JPEG of quality 90
    and 70; a detector that calls a mast cell wherever the pixels are not the file's own shows the copies are read."""
    import numpy as np

    from mastctl import imaging

    rt = bench_module(monkeypatch, "real_tissue")
    tile = np.asarray(imaging.load(_synthetic_tiles(tmp_path, 1, 96)[0]).pixels)
    copy = rt.saved_as_jpeg(tile, 70)
    assert copy.shape == tile.shape and copy.dtype == np.uint8 and 0 < np.abs(copy.astype(int) - tile).mean() < 8
    originals = {"skin": tile, "crc": tile[::-1].copy()}

    class Detector:
        def detect(self, image):
            jpeg = not np.array_equal(image.pixels, originals[image.path])
            cells = [SimpleNamespace(is_mast_cell=False)] * 3 + [SimpleNamespace(is_mast_cell=jpeg)]
            return SimpleNamespace(cells=cells)

    monkeypatch.setattr(rt, "skin_choose_half", lambda: imaging.Image(originals["skin"], "skin", 0.5))
    monkeypatch.setattr(rt, "crc_threshold_images", lambda: ["crc"])
    monkeypatch.setattr(imaging, "load", lambda p, mpp=None: imaging.Image(originals[str(p)], str(p), mpp))
    monkeypatch.setattr(rt.registry, "create", lambda *a, **k: Detector())
    r = rt.jpeg_choose("morphology", {})
    assert r["qualities"] == ["png", 90, 70] and r["skin_mast"] == [0, 1, 1]
    assert r["crc_mast_fraction"] == [0.0, 0.25, 0.25]
    assert [rt.is_threshold_image(j) for j in range(10)] == [False] * 4 + [True] + [False] * 4 + [True]
