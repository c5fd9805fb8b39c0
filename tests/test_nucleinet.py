"""The learned nucleus finder: segmentation from proposals, training, the model file, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mastctl import synth
from mastctl.errors import InputError
from mastctl.metrics import match
from mastctl.morphology import analyse
from mastctl.morphology import segment, stain
from tests.test_morphology import disc_image

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
from mastctl.morphology import nucleinet as N  # noqa: E402


@pytest.fixture(scope="module")
def tiles():
    return [synth.render_tile([77, i], synth.SynthOptions(size=256, mpp=0.5)) for i in range(4)]


def _examples(tiles):
    out = []
    for i, t in enumerate(tiles):
        st = stain.separate(t.he, 0.5)
        out.append(N.example(f"t{i}", st, np.array([(c.x, c.y) for c in t.cells])))
    return out


@pytest.mark.slow
def test_a_short_fit_finds_most_nuclei_of_an_unseen_tile(tiles):
    net = N.fit(_examples(tiles[:3]), steps=120, width=8, seed=0)
    unseen = _examples(tiles[3:])[0]
    found = net.peaks(net.proximity(unseen.st), 0.5)
    m = match(found, unseen.points, 3.0 / 0.5)
    precision, recall = len(m.pairs) / max(1, len(found)), len(m.pairs) / len(unseen.points)
    assert precision > 0.6 and recall > 0.6, (precision, recall, net.peak_threshold)
    assert net.info["threshold_chosen_on"].startswith("training")  # 3 images: too few to hold one out


def test_a_finder_reading_fixed_vectors_keeps_them_in_its_file_and_reads_any_estimate_alike(tmp_path, tiles):
    from mastctl import stains

    net = N.fit(_examples(tiles[:1]), steps=3, width=4, basis="reference")
    again = N.NucleusNet.load(net.save(tmp_path / "r.safetensors"))
    assert again.basis == "reference" and N.NucleusNet.load(N.fit(_examples(tiles[:1]), steps=3, width=4).save(
        tmp_path / "i.safetensors")).basis == "od"
    own = stain.separate(tiles[1].he, 0.5)
    standard = stain.separate(tiles[1].he, 0.5, vectors=(stains.unit(stains.HEMATOXYLIN), stains.unit(stains.EOSIN)))
    assert np.allclose(again.proximity(own), again.proximity(standard), atol=1e-4)
    from dataclasses import replace

    with pytest.raises(InputError, match="unknown stain basis"):
        N.NucleusNet.load(replace(again, basis="sideways").save(tmp_path / "odd.safetensors"))


def test_absorption_training_patches_vary_the_stains_and_nothing_else(tiles, monkeypatch):
    ex = _examples(tiles[:1])[0]
    od = stain.net_input(ex.st, "od")
    # at 0.5 um/px one image pixel is one working pixel
    assert np.allclose(od.transpose(1, 2, 0), np.clip(stain.stains.od_lut(tiles[0].he), 0, 3), atol=1e-4)
    rng = np.random.default_rng(0)
    varied = N._od_augmented(od, ex.st.vectors, rng)
    assert varied.shape == od.shape and not np.allclose(varied, od, atol=0.02)
    monkeypatch.setattr(N, "OD_GAIN_SD", (0.0, 0.0))
    monkeypatch.setattr(N, "OD_TURN_DEG", (0.0, 0.0))
    monkeypatch.setattr(N, "OD_CAST_SD", 0.0)
    # split into its stains and recomposed unchanged: exact
    assert np.allclose(N._od_augmented(od, ex.st.vectors, rng), od, atol=1e-4)


def test_model_file_round_trip_without_pickle(tmp_path, tiles):
    net = N.fit(_examples(tiles[:1]), steps=3, width=4)
    path = net.save(tmp_path / "n.safetensors")
    again = N.NucleusNet.load(path)
    st = stain.separate(tiles[1].he, 0.5)
    assert np.allclose(again.proximity(st), net.proximity(st), atol=1e-6)
    assert (again.peak_threshold, again.work_mpp, again.width) == (net.peak_threshold, 0.5, 4)
    assert b"pickle" not in path.read_bytes()[:4096] and json.loads(path.read_bytes()[8:8 + int.from_bytes(path.read_bytes()[:8], "little")])
    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    with pytest.raises(InputError, match="not a readable nucleus model"):
        N.NucleusNet.load(tmp_path / "junk.safetensors")
    with pytest.raises(InputError, match="no such nucleus model"):
        N.NucleusNet.load(tmp_path / "missing.safetensors")
    coarse = stain.separate(np.ascontiguousarray(tiles[1].he[::2, ::2]), 1.0)  # resampled to the net's scale and back
    assert again.proximity(coarse).shape == coarse.h.shape


def test_finetune_nuclei_then_detect_with_it(cli, tmp_path, tiles):
    for i, t in enumerate(tiles[:2]):
        synth.write_tile(t, tmp_path / "train", f"t{i}")
    out = tmp_path / "nuclei.safetensors"
    r = cli("finetune", "nuclei", "-i", tmp_path / "train", "-t", tmp_path / "train", "--steps", "5", "--width", "4", "-o", out, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["model"] == str(out) and out.exists()
    r = cli("finetune", "nuclei", "-i", tmp_path / "train", "-t", tmp_path / "train", "--steps", "5", "-o", out)
    assert r.exit_code == 2 and "--force" in r.stderr
    r = cli("finetune", "nuclei", "-i", tmp_path / "train", "-t", tmp_path / "train", "-o", tmp_path / "n.json")
    assert r.exit_code == 2 and "safetensors" in r.stderr
    assert N.NucleusNet.load(out).basis == "od"  # as the built-in finder
    fixed = tmp_path / "fixed.safetensors"
    r = cli("finetune", "nuclei", "-i", tmp_path / "train", "-t", tmp_path / "train", "--steps", "5", "--width", "4",
            "--basis", "reference", "-o", fixed)
    assert r.exit_code == 0 and N.NucleusNet.load(fixed).basis == "reference", r.stderr
    r = cli("finetune", "nuclei", "-i", tmp_path / "train", "-t", tmp_path / "train", "--basis", "sideways", "-o", tmp_path / "x.safetensors")
    assert r.exit_code == 2 and "--basis sideways" in r.stderr and "Traceback" not in r.stderr
    r = cli("detect", tmp_path / "train" / "t0_he.png", "-O", f"nuclei={out}", "--all-cells", "--format", "json")
    assert r.exit_code == 0, r.stderr
    cells = json.loads(r.stdout)["cells"]
    assert cells and all(c["label"] in ("mast_cell", "lymphocyte", "plasma_cell", "fibroblast", "eosinophil", "other") for c in cells)
    r = cli("detect", tmp_path / "train" / "t0_he.png", "-O", f"nuclei={tmp_path / 'missing.safetensors'}")
    assert r.exit_code != 0 and "no such nucleus model" in r.stderr and "Traceback" not in r.stderr


def test_without_torch_a_fitted_finder_still_runs_and_fitting_says_what_to_install(cli, monkeypatch, tmp_path, tiles):
    import sys

    net = N.fit(_examples(tiles[:1]), steps=3, width=4)
    path = net.save(tmp_path / "n.safetensors")
    st = stain.separate(tiles[1].he, 0.5)
    expected = net.proximity(st)
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    monkeypatch.setitem(sys.modules, "safetensors", None)
    assert np.allclose(N.NucleusNet.load(path).proximity(st), expected, atol=1e-5)  # numpy reads and runs it
    example = Path(__file__).resolve().parents[1] / "examples" / "synth_s9_0000_he.png"
    r = cli("detect", example, "-O", f"nuclei={path}", "--format", "json")
    assert r.exit_code == 0, r.stderr
    synth.write_tile(tiles[0], tmp_path / "train", "t0")
    r = cli("finetune", "nuclei", "-i", tmp_path / "train", "-t", tmp_path / "train", "-o", tmp_path / "m.safetensors")
    assert r.exit_code != 0 and "pip install 'mastctl[nuclei]'" in r.stderr and "Traceback" not in r.stderr


def test_the_strided_finder_runs_alike_in_torch_numpy_and_its_training_module(tmp_path, tiles, monkeypatch):
    module = N.build(4, "strided")
    for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # statistics folded into the convs
        bn.running_mean.uniform_(-0.2, 0.2), bn.running_var.uniform_(0.5, 1.5), bn.weight.data.uniform_(0.5, 1.5)
    module.eval()
    fitted = N.NucleusNet.from_module(module, 4, 0.5, 0.3, basis="od", arch="strided")
    net = N.NucleusNet.load(fitted.save(tmp_path / "s.safetensors"))
    assert net.arch == "strided"
    st = stain.separate(tiles[2].he[:250, :230], 0.5)  # sides that are not multiples of 8: padded, then cut back
    x = np.pad(stain.net_input(st, "od"), ((0, 0), (0, 6), (0, 2)), mode="reflect")
    with torch.no_grad():
        trained = torch.sigmoid(module(torch.from_numpy(np.ascontiguousarray(x))[None]))[0, 0].numpy()[:250, :230]
    fast = net.proximity(st)
    monkeypatch.setenv("MASTCTL_NUMPY_NET", "1")
    assert fast.shape == (250, 230) and np.abs(fast - trained).max() < 1e-5
    assert np.abs(net.proximity(st) - trained).max() < 1e-5
    from dataclasses import replace

    with pytest.raises(InputError, match="unknown architecture"):
        N.NucleusNet.load(replace(net, arch="sideways").save(tmp_path / "odd.safetensors"))


@pytest.mark.slow
def test_a_short_strided_fit_finds_most_nuclei_of_an_unseen_tile(tiles):
    net = N.fit(_examples(tiles[:3]), steps=300, width=8, seed=0, arch="strided")
    unseen = _examples(tiles[3:])[0]
    found = net.peaks(net.proximity(unseen.st), 0.5)
    m = match(found, unseen.points, 3.0 / 0.5)
    precision, recall = len(m.pairs) / max(1, len(found)), len(m.pairs) / len(unseen.points)
    assert precision > 0.6 and recall > 0.6, (precision, recall, net.peak_threshold)


def test_numpy_and_torch_maps_agree_and_flips_average_the_four(tiles, monkeypatch):
    net = N.fit(_examples(tiles[:1]), steps=5, width=4)
    st = stain.separate(tiles[2].he[:250, :230], 0.5)  # sides that are not multiples of 4
    fast = net.proximity(st)
    monkeypatch.setenv("MASTCTL_NUMPY_NET", "1")
    assert fast.shape == st.h.shape and np.abs(net.proximity(st) - fast).max() < 1e-5
    net.flips = True
    flipped = net.proximity(st)
    x = np.pad(stain.net_input(st, net.basis), ((0, 0), (0, 2), (0, 2)), mode="reflect")
    by_hand = sum(np.flip(net._forward(np.ascontiguousarray(np.flip(x, ax))), tuple(a - 1 for a in ax))
                  for ax in ((), (1,), (2,), (1, 2))) / 4
    assert np.abs(flipped - by_hand[:250, :230]).max() < 1e-6 and np.abs(flipped - fast).max() > 1e-4


def test_our_safetensors_bytes_are_what_the_package_reads_and_writes(tmp_path):
    from safetensors.numpy import load, save

    arrays = {"a.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "n": np.array([7, 8], np.int64)}
    ours = N.safetensors_bytes(arrays, {"mastctl": "{}"})
    back = load(ours)
    assert set(back) == set(arrays) and all(np.array_equal(back[k], arrays[k]) for k in arrays)
    (tmp_path / "p.safetensors").write_bytes(save(arrays, metadata={"k": "v"}))
    meta, read = N.read_safetensors(tmp_path / "p.safetensors")
    assert meta == {"k": "v"} and all(np.array_equal(read[k], arrays[k]) for k in arrays)


@pytest.mark.slow
def test_k_fold_threshold_uses_out_of_fold_maps_of_every_image(tiles, monkeypatch):
    seen = []  # (images trained on, seed) of every fit
    real_train = N.train

    def spy(examples, **kw):
        seen.append(({e.name for e in examples}, kw["seed"]))
        return real_train(examples, **kw)

    monkeypatch.setattr(N, "train", spy)
    steps = []
    net = N.fit(_examples(tiles[:4]), steps=40, width=4, folds=2, on_step=lambda i, loss: steps.append(i))
    names = {f"t{i}" for i in range(4)}
    assert len(seen) == 3 and seen[-1] == (names, 0)  # two fold fits, then one on every image
    assert seen[0][0] | seen[1][0] == names and not seen[0][0] & seen[1][0]  # each image held out by exactly one fit
    assert steps == list(range(1, 121))  # one step count over all three fits
    assert net.info["folds"] == 2 and net.info["threshold_chosen_on"].startswith("2-fold out-of-fold maps of all 4")
    assert net.peak_threshold in N.THRESHOLDS
    with pytest.raises(InputError, match="needs at least 5 images"):
        N.fit(_examples(tiles[:4]), steps=1, width=4, folds=5)


def test_best_threshold_counts_hits_misses_and_false_peaks():
    counts = np.zeros((len(N.THRESHOLDS), 3), int)
    counts[:] = (5, 5, 5)
    counts[3] = (9, 1, 1)  # F1 0.9 at the fourth threshold
    counts[7] = (9, 1, 1)  # the same later: the lower threshold wins
    assert N.best_threshold(counts) == (float(N.THRESHOLDS[3]), pytest.approx(0.9))


def test_device_choice_honours_the_profile():
    from mastctl.errors import BackendError, UsageError
    from mastctl.profile import GpuSettings

    assert N.device_for("cpu") == "cpu"
    assert N.device_for("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert N.device_for(None, GpuSettings(use_gpu=False)) == "cpu"  # the profile says CPU: no GPU is used
    assert N.device_for(None, GpuSettings(device="cpu")) == "cpu"
    with pytest.raises(UsageError, match="use auto, cpu, cuda"):
        N.device_for("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="no CUDA GPU is available"):
            N.device_for("cuda")


def test_finetune_nuclei_folds_and_device_options(cli, tmp_path, tiles):
    for i, t in enumerate(tiles[:2]):
        synth.write_tile(t, tmp_path / "train", f"t{i}")
    base = ("finetune", "nuclei", "-i", tmp_path / "train", "-t", tmp_path / "train", "--steps", "3", "--width", "4")
    r = cli(*base, "--folds", "2", "--batch", "2", "--device", "cpu", "-o", tmp_path / "k.safetensors", "--json")
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["folds"] == 2 and info["batch"] == 2 and info["threshold_chosen_on"].startswith("2-fold")
    r = cli(*base, "--folds", "3", "-o", tmp_path / "x.safetensors")  # only two images
    assert r.exit_code == 2 and "--folds 3" in r.stderr
    r = cli(*base, "--device", "tpu", "-o", tmp_path / "y.safetensors")
    assert r.exit_code == 2 and "use auto, cpu, cuda" in r.stderr and "Traceback" not in r.stderr
    r = cli(*base, "--arch", "strided", "-o", tmp_path / "s.safetensors")
    assert r.exit_code == 0, r.stderr
    assert N.NucleusNet.load(tmp_path / "s.safetensors").arch == "strided"
    r = cli(*base, "--arch", "resnet", "-o", tmp_path / "z.safetensors")
    assert r.exit_code == 2 and "--arch resnet: choose from unet, strided" in r.stderr
