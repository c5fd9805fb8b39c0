"""The knowledge base end to end: records, crops, the crop embedder, every command on every store."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mastctl.errors import InputError, UsageError
from mastctl.kb import crops as C
from mastctl.kb.records import SCHEMA, parse
from tests.conftest import PLUGINS, run_mastctl
from tests.fakes.pinecone_server import FakePinecone

pytest.importorskip("lancedb")
pytest.importorskip("sentence_transformers")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ORIGINAL = {  # the record of the original design, verbatim (domain.md)
    "id": "mast_cell_explicit_001", "type": "explicit", "image_path": "pairs/01_yes.png", "ihc_image_path": "pairs/1_ihc.png",
    "coordinates": {"x": 195, "y": 190}, "confidence": "high",
    "morphological_features": {"nucleus": "central, round, hyperchromatic", "cytoplasm": "eosinophilic, granular, abundant",
                               "shape": "round, fried-egg pattern", "location": "stroma between crypts"},
    "distinguishing_features": {"vs_lymphocytes": "visible cytoplasm", "vs_plasmocytes": "central, not eccentric, nucleus",
                                "vs_fibroblasts": "round, not elongated, nucleus"},
    "insights": ["dirty halo", "plump ovoid nucleus", "rarely solitary"], "difficulty": "easy"}


# --------------------------------------------------------------------------- records and crops


def test_original_design_record_migrates():
    r = parse(ORIGINAL)
    assert r.confidence == 0.9 and r.distinguishing_features.vs_plasma_cells.startswith("central")
    assert r.cell_type == "explicit" and "fried-egg" in r.text() and "dirty halo" in r.text()
    again = parse(r.to_json_dict())
    assert again == r and r.to_json_dict()["schema"] == SCHEMA


@pytest.mark.parametrize("change, message", [
    ({"type": "weird"}, "type"),
    ({"confidence": "sometimes"}, "confidence 'sometimes'"),
    ({"type": "negative"}, "negative record's label"),
    ({"id": "has space"}, "id"),
    ({"schema": "mastctl/kb-record@99"}, "newer than this mastctl"),
    ({"difficulty": "trivial"}, "difficulty"),
])
def test_bad_records_are_one_line_errors(change, message):
    with pytest.raises(InputError, match=message):
        parse({**ORIGINAL, **change}, where="rec.json")


def test_crops_have_a_fixed_physical_size_and_stay_centred():
    img = np.full((200, 300, 3), 240, np.uint8)
    yy, xx = np.mgrid[:200, :300]
    img[(xx - 150) ** 2 + (yy - 100) ** 2 < 8**2] = (60, 30, 110)  # a 16 px (4 µm at 0.25) disc
    crop = C.cut(img, 0.25, 150.5, 100.5, 30.0)
    assert crop.shape == (60, 60, 3)  # 30 µm at 0.5 µm/px
    dark = np.argwhere(crop[..., 0] < 150)
    assert abs(dark.mean(0) - 29.5).max() < 1.0 and 30 < len(dark) < 70  # a 4 µm disc: radius 4 px
    edge = C.cut(img, 0.5, 2, 2, 30.0)
    assert edge.shape == (60, 60, 3) and (edge[:20, :20] == 255).all()  # white outside the image
    with pytest.raises(InputError, match="outside"):
        C.cut(img, 0.5, 400, 10, 30.0)
    assert (C.from_png(C.to_png(crop)) == crop).all()


def test_crop_embedder_puts_same_type_cells_together():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from kb import precision_at_5, synthetic_crops

    from mastctl.backends.embedders.cellcrop import CellCropEmbedder

    crops, types, keys = synthetic_crops(range(9100, 9104), 0.5)
    vectors, measures = CellCropEmbedder().embed_and_measure(crops)
    ok = np.array([m.found for m in measures])
    assert ok.mean() > 0.95
    assert np.allclose(np.linalg.norm(vectors[ok], axis=1), 1.0, atol=1e-5)
    assert precision_at_5(vectors[ok], types[ok], keys[ok])["all"] >= 0.8


# --------------------------------------------------------------------------- the commands, on each store


@pytest.fixture(params=["lancedb", "chroma", "pinecone"])
def kb_env(request, tmp_path, monkeypatch):
    """Environment variables that point mastctl at a fresh store of each kind."""
    name = request.param
    if name == "lancedb":
        monkeypatch.setenv("MASTCTL_KB__URI", str(tmp_path / "kb"))
        yield name
    elif name == "chroma":
        pytest.importorskip("chromadb")
        monkeypatch.setenv("MASTCTL_KB__STORE", "chroma")
        monkeypatch.setenv("MASTCTL_KB__URI", str(tmp_path / "kb"))
        yield name
    else:
        pytest.importorskip("pinecone")
        from mastctl.morphology.embedding import DIM

        with FakePinecone(384 + DIM, api_key="sekret-key-1") as server:
            monkeypatch.setenv("MASTCTL_KB__STORE", "pinecone")
            monkeypatch.setenv("MASTCTL_KB__URI", server.host)
            monkeypatch.setenv("PINECONE_API_KEY", "sekret-key-1")
            yield name


@pytest.mark.slow
def test_every_command_on_every_store(kb_env, cli, tmp_path):
    truth = EXAMPLES / "synth_s9_0000.json"
    r = cli("kb", "ingest", truth, "--images", EXAMPLES, "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json() == {"added": 39, "updated": 0, "unchanged": 0}
    assert cli("kb", "ingest", truth, "--json").json() == {"added": 0, "updated": 0, "unchanged": 39}  # upsert by id

    stats = cli("kb", "stats", "--json").json()
    assert stats["records"] == 39 and stats["by_type"] == {"explicit": 4, "implicit": 4, "negative": 31}
    cells = json.loads(truth.read_text())["cells"]
    implicit = next(c for c in cells if c["kind"] == "implicit" and 20 < c["x"] < 490 and 20 < c["y"] < 490)

    # by image: the cell itself first, then mostly its own kind
    hits = cli("kb", "search", "--cell", EXAMPLES / "synth_s9_0000_he.png", implicit["x"], implicit["y"], "-k", "3", "--json").json()
    assert hits[0]["coordinates"]["x"] == pytest.approx(implicit["x"], abs=0.01) and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert hits[1]["type"] == "implicit"
    # by text, filtered
    hits = cli("kb", "search", "--text", "spindle nucleus fibroblast", "-k", "3", "--type", "negative", "--json").json()
    assert hits[0]["label"] == "fibroblast" and all(h["type"] == "negative" for h in hits)
    # by a crop file, combined with text
    record_id = hits[0]["id"]
    r = cli("kb", "show", record_id, "--crop", tmp_path / "cell.png")
    assert r.exit_code == 0 and r.json()["id"] == record_id and (tmp_path / "cell.png").stat().st_size > 100
    hits = cli("kb", "search", "--image", tmp_path / "cell.png", "--mpp", "0.5", "--text", "fibroblast", "--json").json()
    assert hits[0]["id"] == record_id

    listed = cli("kb", "list", "--type", "implicit", "--json").json()
    assert len(listed) == 4 and [x["id"] for x in listed] == sorted(x["id"] for x in listed)

    # export -> import elsewhere -> export again: byte for byte
    assert cli("kb", "export", tmp_path / "a.jsonl").exit_code == 0
    r = cli("kb", "import", tmp_path / "a.jsonl", "--store", "lancedb", "--kb", tmp_path / "copy", "--json")
    assert r.json()["added"] == 39
    cli("kb", "export", tmp_path / "b.jsonl", "--store", "lancedb", "--kb", tmp_path / "copy")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()

    r = cli("kb", "delete", record_id, "nope-x1-y1")
    assert r.exit_code == 3 and "nope-x1-y1" in r.stderr and "Traceback" not in r.stderr
    assert cli("kb", "stats", "--json").json()["records"] == 38
    r = cli("kb", "show", record_id)
    assert r.exit_code == 3 and "no record" in r.stderr
    # import into this store brings the deleted record back, add and reindex work here too
    r = cli("kb", "import", tmp_path / "a.jsonl", "--json")
    assert r.exit_code == 0 and r.json()["added"] == 1
    assert cli("kb", "show", record_id).exit_code == 0
    r = cli("kb", "add", "--id", "manual-1", "--type", "negative", "--label", "eosinophil", "--insight", "bilobed", "--json")
    assert r.exit_code == 0 and r.json()["added"] == 1
    r = cli("kb", "reindex", "--json")
    assert r.exit_code == 0 and r.json() == {"reindexed": 40}
    assert cli("kb", "search", "--text", "bilobed eosinophil", "-k", "1", "--json").json()[0]["label"] == "eosinophil"


def test_add_from_flags_and_file(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("MASTCTL_KB__URI", str(tmp_path / "kb"))
    he = EXAMPLES / "synth_s9_0000_he.png"
    r = cli("kb", "add", "--image", he, "--x", "263.56", "--y", "272.62", "--type", "implicit", "--mpp", "0.5",
            "--insight", "dirty halo", "--difficulty", "hard", "--json")
    assert r.exit_code == 0, r.stderr
    shown = cli("kb", "show", "synth_s9_0000_he-x264-y273").json()
    assert shown["insights"] == ["dirty halo"] and shown["crop_um"] == 30.0 and shown["mpp"] == 0.5
    (tmp_path / "recs.yaml").write_text(
        "- id: lymph-1\n  type: lymphocyte\n  image_path: " + str(he) + "\n  coordinates: {x: 115.03, y: 213.9}\n  mpp: 0.5\n"
        "- " + json.dumps({**ORIGINAL, "image_path": str(he), "mpp": 0.5}) + "\n")
    r = cli("kb", "add", "--file", tmp_path / "recs.yaml", "--json")
    assert r.json()["added"] == 2
    lymph = cli("kb", "show", "lymph-1").json()
    assert lymph["type"] == "negative" and lymph["label"] == "lymphocyte" and lymph["crop_png"].startswith("<")
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\ntype: explicit\nconfidence: 7\n")
    r = cli("kb", "add", "--file", bad)
    assert r.exit_code == 3 and "confidence" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert cli("kb", "stats", "--json").json()["records"] == 3  # nothing lost


def test_ingest_from_analysis_results(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("MASTCTL_KB__URI", str(tmp_path / "kb"))
    shutil.copy(EXAMPLES / "synth_s9_0000_he.png", tmp_path / "01_no.png")
    (tmp_path / "analysis.json").write_text(json.dumps([{
        "image_no": "01_no.png", "image_yes": "01_yes.png",
        "step1_coordinates": "Found 2 mast cells:\n1. (263, 272) - implicit, pale halo\n2. x=380, y=120 explicit",
        "step3_recommendations": "Look for the dirty halo. Mast cells are rarely solitary.",
    }]))
    r = cli("kb", "ingest", tmp_path / "analysis.json", "--from-analysis", "--mpp", "0.5", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json()["added"] == 2
    recs = {x["id"]: x for x in cli("kb", "list", "--json").json()}
    assert recs["01_no-x263-y272"]["type"] == "implicit" and recs["01_no-x380-y120"]["type"] == "explicit"
    assert "Look for the dirty halo." in recs["01_no-x263-y272"]["insights"]


def test_errors_are_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("MASTCTL_KB__URI", str(tmp_path / "none"))
    r = cli("kb", "list")
    assert r.exit_code == 3 and "no knowledge base" in r.stderr
    r = cli("kb", "search", "--type", "explicit")
    assert r.exit_code == 2 and "needs --text" in r.stderr or "no knowledge base" in r.stderr
    r = cli("kb", "ingest", tmp_path / "missing.json")
    assert r.exit_code == 3 and "no such file" in r.stderr
    (tmp_path / "t.json").write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    r = cli("kb", "ingest", tmp_path / "t.json")
    assert r.exit_code == 3 and "no image found" in r.stderr and "Traceback" not in r.stderr


def test_old_schema_store_is_migrated_on_open(tmp_path):
    from mastctl.backends.stores.lancedb import LanceDBStore
    from mastctl.kb.service import KnowledgeBase
    from mastctl.kb.store import Row
    from mastctl.profile import Profile

    store = LanceDBStore(uri=str(tmp_path / "kb"))
    store.open(384 + 30, create=True)
    store.write_meta({"schema_version": 1, "text_embedder": "minilm", "text_dim": 384, "image_embedder": "cellcrop", "image_dim": 30})
    store.upsert([Row("mast_cell_explicit_001", "explicit", "mast_cell", "easy", "", json.dumps(ORIGINAL), b"",
                      np.ones(414, np.float32) / 414**0.5)])
    profile = Profile.model_validate({"kb": {"uri": str(tmp_path / "kb")}})
    kb = KnowledgeBase.open(profile, check=False)
    assert kb.meta["schema_version"] == 2
    fresh = LanceDBStore(uri=str(tmp_path / "kb"))
    fresh.open(None, create=False)
    raw = json.loads(fresh.fetch(["mast_cell_explicit_001"])[0].record_json)
    assert raw["schema"] == SCHEMA and raw["confidence"] == 0.9 and "vs_plasma_cells" in raw["distinguishing_features"]
    # That store's image vectors are 30 wide, from an older crop embedder: searching it needs a reindex first.
    from mastctl.morphology.embedding import DIM

    assert DIM != 30
    with pytest.raises(UsageError, match="30-wide image vectors.*kb reindex"):
        KnowledgeBase.open(profile)
    assert kb.reindex() == 1
    again = KnowledgeBase.open(profile)
    assert again.meta["image_dim"] == DIM and again.get("mast_cell_explicit_001").type == "explicit"


def test_changed_embedder_needs_reindex_which_rebuilds_without_loss(cli, tmp_path, monkeypatch, plugin):
    monkeypatch.setenv("MASTCTL_KB__URI", str(tmp_path / "kb"))
    cli("kb", "ingest", EXAMPLES / "synth_s9_0000.json")
    cli("kb", "export", tmp_path / "before.jsonl")
    monkeypatch.setenv("MASTCTL_KB__TEXT_EMBEDDER", "hashtext")
    r = cli("kb", "search", "--text", "halo")
    assert r.exit_code == 2 and "kb reindex" in r.stderr
    r = cli("kb", "reindex", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json() == {"reindexed": 39}
    assert cli("kb", "stats", "--json").json()["text_embedder"] == "hashtext"
    hits = cli("kb", "search", "--text", "spindle fibroblast", "--json").json()
    assert hits and hits[0]["label"] == "fibroblast"
    cli("kb", "export", tmp_path / "after.jsonl")
    assert (tmp_path / "before.jsonl").read_bytes() == (tmp_path / "after.jsonl").read_bytes()


# --------------------------------------------------------------------------- crash safety


def _big_jsonl(path: Path, copies: int) -> int:
    """Records with crops from the example tile, repeated under new ids."""
    from mastctl import imaging
    from mastctl.backends.embedders.cellcrop import CellCropEmbedder
    from mastctl.kb.sources import cell_records
    from mastctl.truth import load_truth

    item = next(iter(load_truth(EXAMPLES / "synth_s9_0000.json").values()))
    image = imaging.load(EXAMPLES / "synth_s9_0000_he.png")
    records, _ = cell_records(image.pixels, 0.5, item.cells, key="ex", embedder=CellCropEmbedder())
    n = 0
    with open(path, "w") as fh:
        for k in range(copies):
            for r in records:
                fh.write(json.dumps(r.model_copy(update={"id": f"{r.id}-c{k:03d}"}).to_json_dict()) + "\n")
                n += 1
    return n


@pytest.mark.slow
def test_killed_ingest_leaves_a_readable_store_and_rerun_completes(tmp_path):
    from mastctl.backends.stores.lancedb import LanceDBStore
    from mastctl.kb.store import Filter

    source = tmp_path / "big.jsonl"
    total = _big_jsonl(source, 60)  # 2340 records: 10 batches
    env = {"MASTCTL_KB__URI": str(tmp_path / "kb")}
    exe = Path(sys.executable).with_name("mastctl")
    proc = subprocess.Popen([str(exe), "kb", "ingest", str(source)], env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    reader = LanceDBStore(uri=str(tmp_path / "kb"))
    seen: list[int] = []
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if reader.open(None, create=False):
            n = reader.count(Filter())
            seen.append(n)  # a concurrent reader sees whole batches only
            if n >= 512:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert seen and seen[-1] >= 512, proc.stderr.read().decode()[-500:]
    assert all(n % 256 == 0 for n in seen)
    after_kill = LanceDBStore(uri=str(tmp_path / "kb"))
    assert after_kill.open(None, create=False)
    killed_count = after_kill.count(Filter())
    assert killed_count % 256 == 0 and killed_count < total
    assert len(list(after_kill.scan(Filter()))) > 0  # every row readable

    r = run_mastctl("kb", "ingest", str(source), "--json", env=env)
    assert r.exit_code == 0, r.stderr
    done = r.json()
    assert done["added"] == total - killed_count and done["unchanged"] == killed_count
    final = LanceDBStore(uri=str(tmp_path / "kb"))
    final.open(None, create=False)
    ids = [row.id for batch in final.scan(Filter()) for row in batch]
    assert len(ids) == len(set(ids)) == total


def test_kb_help_needs_no_heavy_imports():
    code = ("import sys; from mastctl.cli import main; rc = main(['kb', 'search', '--help']); "
            "heavy = [m for m in ('torch', 'lancedb', 'chromadb', 'pinecone', 'sentence_transformers') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(PLUGINS.parent.parent)})
    assert out.stdout.strip().endswith("[]"), out.stdout[-300:]


def test_an_embedder_of_the_wrong_modality_is_a_profile_error(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("MASTCTL_KB__URI", str(tmp_path / "kb"))
    monkeypatch.setenv("MASTCTL_KB__IMAGE_EMBEDDER", "minilm")
    r = cli("kb", "ingest", EXAMPLES / "synth_s9_0000.json")
    assert r.exit_code == 2 and "kb.image_embedder: 'minilm' embeds text, not image" in r.stderr
