"""Hostile and careless inputs, over every command: each ends with its documented exit code, one line
on stderr, no traceback, and nothing on disk changed that should not be.

Exit codes: 2 usage (a bad flag, a bad profile), 3 input data, 4 backend, 130 interrupted.
"""

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
from PIL import Image

from badfiles import billion_laughs_yaml, png_claiming, tiff_claiming
from conftest import run_mastctl

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TILE = EXAMPLES / "synth_s9_0000_he.png"


def one_line_error(r) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in lines if ln.startswith("mastctl: error:")]
    assert len(errors) == 1, r.stderr
    return errors[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def ws(tmp_path):
    shutil.copy(TILE, tmp_path / "tile.png")
    return tmp_path


# --------------------------------------------------------------------------- scale and sizes


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "1e-12", "abc", "1e9"])
def test_a_bad_mpp_is_a_usage_error_everywhere(cli, ws, value):
    for args in (["detect", "tile.png"], ["ihc", "register", "tile.png", "tile.png"], ["compare", "tile.png", "--truth", "x"],
                 ["kb", "search", "--text", "x"], ["finetune", "morphology", "--images", ".", "--truth", ".", "-o", "m.json"]):
        before = snapshot(ws)
        t0 = time.perf_counter()
        r = cli(*args, "--mpp", value)
        assert r.exit_code == 2, (args, r.stderr)
        assert "--mpp" in one_line_error(r) and time.perf_counter() - t0 < 5
        assert snapshot(ws) == before


def test_the_profile_scale_is_bounded_too(cli, ws):
    (ws / "p.yaml").write_text("detect:\n  mpp: 1.0e-12\n")
    r = cli("--profile", "p.yaml", "detect", "tile.png")
    assert r.exit_code == 2 and "detect.mpp" in one_line_error(r)


@pytest.mark.parametrize("roi, message", [("0,0,inf,10", "four finite numbers"), ("1,2,3", "four finite numbers"),
                                          ("-5,0,10,10", ">= 0"), ("0,0,0,10", "w, h > 0")])
def test_bad_roi_is_a_usage_error(cli, ws, roi, message):
    r = cli("detect", "tile.png", "--roi", roi, "-o", "out.geojson")
    assert r.exit_code == 2 and message in one_line_error(r) and not (ws / "out.geojson").exists()


def test_roi_outside_the_image_is_refused(cli, ws):
    r = cli("detect", "tile.png", "--roi", "5000,5000,100,100", "-o", "out.geojson")
    assert r.exit_code == 2 and "lies outside" in one_line_error(r) and not (ws / "out.geojson").exists()


def test_a_one_pixel_image_is_an_input_error(cli, ws):
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(ws / "dot.png")
    r = cli("detect", "dot.png")
    assert r.exit_code == 3 and "too small to hold a cell" in one_line_error(r)


def test_a_greyscale_image_is_an_input_error_for_the_stain_reading_detector(cli, ws):
    """A greyscale H&E holds no stain colours: the default detector called a fifth of a greyscale CRC tile's cells
    mast cells. It refuses it (and goes on with the other images); a blank tile and the nucleus baseline are fine."""
    tile = np.asarray(Image.open(ws / "tile.png").convert("RGB"))
    Image.fromarray(tile).convert("L").save(ws / "grey.png")
    Image.fromarray(np.full((64, 64, 3), 255, np.uint8)).save(ws / "blank.png")
    r = cli("detect", "grey.png", "tile.png", "blank.png", "-o", "out/", "--format", "csv")
    assert r.exit_code == 3 and "grey.png: a greyscale image" in one_line_error(r)
    assert (ws / "out" / "tile.csv").exists() and (ws / "out" / "blank.csv").exists()
    assert not (ws / "out" / "grey.csv").exists()
    assert cli("detect", "grey.png", "--backend", "log", "-o", "log.csv").exit_code == 0


# --------------------------------------------------------------------------- decompression bombs on every path


@pytest.mark.parametrize("maker, name", [(tiff_claiming, "bomb.tif"), (png_claiming, "bomb.png")])
@pytest.mark.parametrize("mode", [[], ["--workers", "1"], ["--roi", "0,0,512,512"]])
def test_bombs_are_refused_before_decoding_in_every_mode(ws, maker, name, mode):
    path = maker(ws / name, 100_000 if name.endswith("tif") else 20_000, 100_000 if name.endswith("tif") else 20_000)
    assert path.stat().st_size < 1000
    t0 = time.perf_counter()
    r = run_mastctl("detect", name, *mode, "-o", "out.geojson", cwd=ws)
    assert r.exit_code == 3 and "decompression-bomb limit" in one_line_error(r), r.stderr
    assert time.perf_counter() - t0 < 30 and not (ws / "out.geojson").exists()


def test_a_bomb_crop_in_a_kb_record_is_refused(cli, ws, tmp_path):
    import base64

    crop = png_claiming(tmp_path / "c.png", 20_000, 20_000).read_bytes()
    record = {"id": "bomb", "type": "explicit", "crop_png": base64.b64encode(crop).decode()}
    (ws / "r.jsonl").write_text(json.dumps(record) + "\n")
    r = cli("kb", "import", "r.jsonl", "--kb", str(ws / "kb"))
    assert r.exit_code == 3 and "crop_png" in one_line_error(r) and "20000 x 20000" in r.stderr
    assert not (ws / "kb").exists()  # a failed import leaves no empty store behind


def test_a_truncated_crop_and_nan_coordinates_are_refused(cli, ws):
    import base64
    import io

    buf = io.BytesIO()
    Image.fromarray(np.full((60, 60, 3), 128, np.uint8)).save(buf, format="PNG")
    good = buf.getvalue()
    lines = [json.dumps({"id": "cut", "type": "explicit", "crop_png": base64.b64encode(good[: len(good) // 2]).decode()}),
             '{"id": "nan", "type": "explicit", "coordinates": {"x": NaN, "y": 3}}']
    for n, line in enumerate(lines):
        (ws / f"r{n}.jsonl").write_text(line + "\n")
        r = cli("kb", "import", f"r{n}.jsonl", "--kb", str(ws / "kb"))
        assert r.exit_code == 3, r.stderr
        assert ("damaged" in r.stderr or "NaN" in r.stderr) and one_line_error(r)
    assert not (ws / "kb").exists()


def test_huge_fields_are_refused_quickly(cli, ws):
    (ws / "big.jsonl").write_text(json.dumps({"id": "big", "type": "explicit", "source": "x" * 50_000_000}) + "\n")
    t0 = time.perf_counter()
    r = cli("kb", "import", "big.jsonl", "--kb", str(ws / "kb"))
    assert r.exit_code == 3 and "longer than 16 MB" in one_line_error(r) and time.perf_counter() - t0 < 10
    (ws / "long.jsonl").write_text(json.dumps({"id": "long", "type": "explicit", "insights": ["x" * 100_000]}) + "\n")
    r = cli("kb", "import", "long.jsonl", "--kb", str(ws / "kb"))
    assert r.exit_code == 3 and "insights" in one_line_error(r)


# --------------------------------------------------------------------------- profiles and option values


def test_yaml_aliases_are_refused_in_a_profile(cli, ws):
    billion_laughs_yaml(ws / "bomb.yaml")
    t0 = time.perf_counter()
    r = cli("--profile", "bomb.yaml", "config", "validate")
    assert r.exit_code == 2 and time.perf_counter() - t0 < 5
    assert "aliases" in r.stderr and "Traceback" not in r.stderr
    r = cli("--profile", "bomb.yaml", "detect", "tile.png")
    assert r.exit_code == 2 and "aliases" in one_line_error(r)


def test_yaml_aliases_are_refused_in_option_values_and_record_files(cli, ws):
    r = cli("detect", "tile.png", "-O", "model=&a [*a, *a]")  # not expanded: read as the text it is
    assert r.exit_code == 3 and "&a [*a, *a]: no such model file" in one_line_error(r)
    (ws / "recs.yaml").write_text("- &r {id: a, type: explicit}\n- *r\n")
    r = cli("kb", "add", "--file", "recs.yaml", "--kb", str(ws / "kb"))
    assert r.exit_code == 3 and "aliases" in one_line_error(r)


def test_a_model_file_with_missing_keys_is_an_input_error(cli, ws):
    (ws / "m.json").write_text(json.dumps({"schema": "mastctl/morphology-model@1", "kind": "gbm"}))
    r = cli("detect", "tile.png", "--model", "m.json")
    assert r.exit_code == 3 and "m.json" in one_line_error(r)


# --------------------------------------------------------------------------- tables and GeoJSON


@pytest.mark.parametrize("text, message", [
    ("slide\ntile.png,extra\n", "2 fields where the header has 1"),
    ("slide,mpp\n,0.5\n", "the 'slide' cell is empty"),
    ("slide,mpp\ntile.png,nan\n", "not a plausible microscope scale"),
    ("name\nx\n", "needs a 'slide' column"),
])
def test_bad_manifests_name_their_line(cli, ws, text, message):
    (ws / "m.csv").write_text(text)
    r = cli("detect", "--manifest", "m.csv", "-o", "out")
    assert r.exit_code == 3 and message in one_line_error(r)


def test_bad_pairs_tables_name_their_line(cli, ws):
    (ws / "p.csv").write_text("he,ihc\ntile.png,tile.png,third\n")
    r = cli("ihc", "transfer", "--pairs", "p.csv", "-o", "labels")
    assert r.exit_code == 3 and "p.csv:2" in one_line_error(r)
    r = cli("ihc", "transfer", "--pairs", "p.csv", "-o", "labels.json")  # one file for many pairs
    assert r.exit_code == 2 and "give a folder (-o labels/)" in one_line_error(r) and not (ws / "labels.json").exists()


def _polygon(coords):
    return {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
                                                       "geometry": {"type": "Polygon", "coordinates": [coords]}}]}


def test_three_d_positions_are_read_and_nan_is_refused_in_masks_and_truth(cli, ws):
    square3d = [[0, 0, 0], [200, 0, 0], [200, 200, 0], [0, 200, 0], [0, 0, 0]]
    (ws / "m3.geojson").write_text(json.dumps(_polygon(square3d)))
    r = cli("detect", "tile.png", "--mask", "m3.geojson", "-o", "o.geojson")
    assert r.exit_code == 0, r.stderr
    (ws / "mnan.geojson").write_text(json.dumps(_polygon([[0, 0], [float("nan"), 0], [9, 9], [0, 0]])))
    r = cli("detect", "tile.png", "--mask", "mnan.geojson", "-o", "o2.geojson")
    assert r.exit_code == 3 and "finite" in one_line_error(r) and not (ws / "o2.geojson").exists()
    point = lambda xyz: {"type": "Feature", "geometry": {"type": "Point", "coordinates": xyz},  # noqa: E731
                         "properties": {"classification": {"name": "Mast cell"}}}
    (ws / "truth").mkdir()
    (ws / "truth" / "tile.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [point([10, 10, 0])]}))
    r = cli("compare", "tile.png", "--truth", "truth", "--backends", "log")
    assert r.exit_code == 0, r.stderr
    (ws / "truth" / "tile.geojson").write_text(json.dumps({"type": "FeatureCollection",
                                                           "features": [point([float("nan"), 10])]}))
    r = cli("compare", "tile.png", "--truth", "truth", "--backends", "log")
    assert r.exit_code == 3 and one_line_error(r)


# --------------------------------------------------------------------------- slides and cohorts


def test_a_damaged_summary_means_the_slide_is_done_again(cli, ws):
    (ws / "m.csv").write_text("slide\ntile.png\n")
    assert cli("detect", "--manifest", "m.csv", "-o", "out").exit_code == 0
    (ws / "out" / "tile.geojson.summary.json").write_text('{"schema": "mastctl/slide-summ')  # cut short
    r = cli("--json", "detect", "--manifest", "m.csv", "-o", "out")
    assert r.exit_code == 0, r.stderr
    assert json.loads((ws / "out" / "tile.geojson.summary.json").read_text())["summary"]["mast_cells"] >= 0


def test_ome_tiff_with_a_zero_scale_has_no_scale(cli, ws):
    import tifffile

    pixels = np.asarray(Image.open(TILE).convert("RGB"))
    with tifffile.TiffWriter(ws / "z.ome.tif") as tif:
        tif.write(pixels, photometric="rgb", metadata={"axes": "YXS", "PhysicalSizeX": 0.0, "PhysicalSizeY": 0.0})
    r = cli("detect", "z.ome.tif", "-o", "z.geojson")
    assert r.exit_code == 3 and "no scale" in one_line_error(r)
    assert cli("detect", "z.ome.tif", "-o", "z.geojson", "--mpp", "0.5").exit_code == 0


def test_a_cohort_keeps_going_past_any_failure(cli, ws, plugin):
    shutil.copy(TILE, ws / "second.png")
    (ws / "m.csv").write_text("slide\ntile.png\nmissing.png\nsecond.png\n")
    r = cli("--json", "detect", "--manifest", "m.csv", "-o", "out", "-b", "crashing")
    assert r.exit_code == 4  # every slide failed in the backend: each reported, none stops the others
    rows = r.json()
    assert [row.get("exit_code") for row in rows] == [4, 3, 4]
    assert r.stderr.count("mastctl: error:") == 3 and "Traceback" not in r.stderr


def test_slides_and_tiles_exit_4_alike_when_the_backend_fails(cli, ws, plugin):
    for args in (["tile.png"], ["tile.png", "--workers", "1", "-o", "s.geojson"]):
        r = cli("detect", *args, "-b", "crashing")
        assert r.exit_code == 4 and "model exploded" in one_line_error(r)


# --------------------------------------------------------------------------- knowledge-base stores


def test_a_corrupt_lancedb_store_is_one_line(cli, ws):
    pytest.importorskip("lancedb")
    kb = ws / "kb"
    r = cli("kb", "add", "--id", "a1", "--type", "explicit", "--kb", str(kb))
    assert r.exit_code == 0, r.stderr
    for target in sorted((kb / "cells.lance" / "data").glob("*.lance")):
        target.write_bytes(b"garbage" * 10)
    for args in (["kb", "list"], ["kb", "export", "e.jsonl"], ["kb", "stats"]):
        r = cli(*args, "--kb", str(kb))
        assert r.exit_code == 3 and "damaged or unreadable" in one_line_error(r), (args, r.stderr)
    assert not (ws / "e.jsonl").exists()
    for manifest in (kb / "cells.lance" / "_versions").glob("*"):
        manifest.write_bytes(b"not a manifest")
    r = cli("kb", "list", "--kb", str(kb))
    assert r.exit_code == 3 and one_line_error(r)


def test_kb_export_into_an_unwritable_folder(cli, ws):
    pytest.importorskip("lancedb")
    assert cli("kb", "add", "--id", "a1", "--type", "explicit", "--kb", str(ws / "kb")).exit_code == 0
    # /proc refuses new files even to root; a read-only folder refuses them to everyone else
    r = cli("kb", "export", "/proc/mastctl-no-such-dir/e.jsonl", "--kb", str(ws / "kb"))
    assert r.exit_code == 3 and "cannot write" in one_line_error(r)
    locked = ws / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):
            r = cli("kb", "export", str(locked / "e.jsonl"), "--kb", str(ws / "kb"))
            assert r.exit_code == 3 and "not writable" in one_line_error(r)
    finally:
        locked.chmod(0o700)


# --------------------------------------------------------------------------- secrets


@pytest.mark.slow
def test_the_api_key_is_never_printed_even_when_the_server_quotes_it(ws):
    pytest.importorskip("google.genai")
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    key = "AIzaSyD-test-key-0123456789abcdefghijklm"

    class Echo(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.dumps({"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                         "message": f"API key not valid: {self.headers.get('x-goog-api-key')} (key={key})"}})
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {"GEMINI_API_KEY": key, "MASTCTL_GEMINI__BASE_URL": f"http://127.0.0.1:{server.server_port}",
               "MASTCTL_GEMINI__MAX_RETRIES": "0", "MASTCTL_KB__URI": str(ws / "nokb")}
        for extra in ([], ["--json", "-o", "out.json"], ["--verbose"]):
            r = run_mastctl("detect", "tile.png", "-b", "gemini", *extra, env=env, cwd=ws)
            assert r.exit_code == 4, r.stderr
            assert key not in r.stderr and key not in r.stdout and "[redacted]" in r.stderr
        assert all(key.encode() not in p.read_bytes() for p in ws.rglob("*") if p.is_file())
    finally:
        server.shutdown()


# --------------------------------------------------------------------------- signals


# SIGTERM: `timeout 600 mastctl detect ...`, a batch scheduler's time limit; it killed the process on the spot and left
# the output being written as a hidden .part file, and now ends the run like Ctrl-C
@pytest.mark.parametrize(("signum", "code", "word", "delays"), [(signal.SIGINT, 130, "interrupted", (0.8, 2.5)),
                                                                (signal.SIGTERM, 143, "terminated", (1.5, 3.0))])
def test_a_signal_says_why_exits_128_plus_it_and_leaves_no_partial_file(ws, signum, code, word, delays):
    exe = Path(sys.executable).with_name("mastctl")
    tiles = ws / "tiles"
    tiles.mkdir()
    for i in range(60):  # a run of some 5 s, so that the later signal comes in it, not as the process exits
        shutil.copy(TILE, tiles / f"t{i:02d}.png")
    for delay in delays:
        out = ws / f"out{delay}"
        proc = subprocess.Popen([str(exe), "detect", str(tiles), "-o", str(out), "--format", "geojson"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ws, preexec_fn=_as_from_a_terminal)
        time.sleep(delay)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
        if proc.returncode == 0:
            continue  # it finished before the signal
        text = err.decode()
        assert proc.returncode == code and text.strip().splitlines()[-1] == f"mastctl: error: {word}", text
        assert "Traceback" not in text
        assert not [p for p in ws.rglob("*.part")]


def _as_from_a_terminal() -> None:
    """Ctrl-C as a terminal delivers it: a test run started in the background (``cmd &`` in a script) ignores SIGINT,
    its children inherit that, and mastctl rightly leaves an ignored signal alone (these tests then saw nothing)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


_SIGNALLED_WHILE_IMPORTING = '''
import os, signal, sys, time
from mastctl import entry, interrupts
entry.answer_early_signals()  # what the console script does first
if sys.argv[1] == "handed-over":  # the CLI's run takes both signals over from it
    previous = interrupts.install()
    print(signal.getsignal(signal.SIGTERM) is interrupts._handle, signal.getsignal(signal.SIGINT) is interrupts._handle)
    interrupts.restore(previous)
    print(signal.getsignal(signal.SIGTERM) is entry.early_signal, flush=True)
else:  # a signal while the CLI is still being imported (a first run compiles it: seconds)
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    time.sleep(30)
'''


@pytest.mark.parametrize(("name", "code", "word"), [("SIGTERM", 143, "terminated"), ("SIGINT", 130, "interrupted")])
def test_a_signal_before_the_cli_is_imported_says_why_in_one_line(name, code, word):
    # `timeout 1 mastctl detect ...` on a fresh clone: SIGTERM came while the CLI was still imported and ended the
    # process without a word (-15; the signal test above saw it in a clean clone)
    r = subprocess.run([sys.executable, "-c", _SIGNALLED_WHILE_IMPORTING, name], capture_output=True, text=True,
                       preexec_fn=_as_from_a_terminal, timeout=60)
    assert (r.returncode, r.stderr) == (code, f"mastctl: error: {word}\n")


def test_the_run_takes_the_signals_over_from_the_early_answer_and_gives_them_back():
    r = subprocess.run([sys.executable, "-c", _SIGNALLED_WHILE_IMPORTING, "handed-over"], capture_output=True, text=True,
                       preexec_fn=_as_from_a_terminal, timeout=60)
    assert r.stdout.split() == ["True", "True", "True"], r.stdout + r.stderr


def test_an_ignored_sigterm_stays_ignored_by_the_console_script():
    code = "import signal\nfrom mastctl import entry\nentry.answer_early_signals()\n" \
           "print(signal.getsignal(signal.SIGTERM) is signal.SIG_IGN)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN))
    assert r.stdout.strip() == "True", r.stdout + r.stderr


_WAITS_FOR_IMPORT = '''
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
from mastctl import interrupts
previous = interrupts.install()
try:
    import slow_module  # sends itself SIGINT half-way through its import
    time.sleep(5)
    print("never interrupted", flush=True)
except KeyboardInterrupt:
    whole = getattr(sys.modules.get("slow_module"), "DONE", False)  # a failed import is not in sys.modules
    print("interrupted; module imported whole:", whole, interrupts.interrupted(), flush=True)
finally:
    interrupts.restore(previous)
'''


def test_ctrl_c_during_an_import_waits_for_it_then_interrupts(tmp_path):
    # torch's import runs Python from C++: a KeyboardInterrupt there aborted the process (-6, seen in CI)
    # or left torch half-initialised ("initialization failed"); the interrupt now waits for the import
    (tmp_path / "slow_module.py").write_text("import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\n"
                                             "for _ in range(3):\n    time.sleep(0.1)\nDONE = True\n")
    r = subprocess.run([sys.executable, "-c", _WAITS_FOR_IMPORT, str(tmp_path)], capture_output=True, text=True,
                       preexec_fn=_as_from_a_terminal, timeout=60)
    assert r.stdout.splitlines() == ["interrupted; module imported whole: True True"], r.stdout + r.stderr


_HANGS_IN_AN_IMPORT = '''
import sys
sys.path.insert(0, sys.argv[1])
from mastctl import interrupts
previous = interrupts.install()
try:
    import hanging_module  # sends itself SIGINT, then never finishes importing
finally:
    interrupts.restore(previous)
'''


def test_a_second_ctrl_c_leaves_an_import_that_hangs(tmp_path):
    (tmp_path / "hanging_module.py").write_text("import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\n"
                                                "print('waiting', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", _HANGS_IN_AN_IMPORT, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_as_from_a_terminal)
    assert proc.stdout.readline().strip() == "waiting"
    time.sleep(0.5)  # the first Ctrl-C waits for the import (re-delivered every 0.1 s, and still waiting)
    assert proc.poll() is None
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.strip() == "mastctl: error: interrupted" and time.monotonic() - t0 < 10, err


_WAITS_FOR_SHIELDED = '''
import os, signal
from mastctl import interrupts

steps = []

@interrupts.shielded
def make_and_rename():
    steps.append("create")
    os.kill(os.getpid(), signal.SIGINT)
    steps.append("rename")

previous = interrupts.install()
try:
    make_and_rename()
    while True:
        pass
except KeyboardInterrupt:
    print(",".join(steps), flush=True)
finally:
    interrupts.restore(previous)
'''


def test_ctrl_c_inside_a_shielded_function_waits_for_it_to_return():
    r = subprocess.run([sys.executable, "-c", _WAITS_FOR_SHIELDED], capture_output=True, text=True, timeout=60,
                       preexec_fn=_as_from_a_terminal)
    assert r.stdout.strip() == "create,rename", r.stdout + r.stderr


def test_an_output_never_finished_leaves_no_temporary_file(tmp_path):
    from mastctl import writers

    target = writers.FileTarget(tmp_path / "cells.csv")
    target.fh.write("half a file")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")]
    writers.remove_unfinished()  # what the CLI does as it exits, whatever stopped the run
    assert not list(tmp_path.iterdir())
    done = writers.FileTarget(tmp_path / "kept.csv")
    done.fh.write("x")
    done.commit()
    writers.remove_unfinished()
    assert [p.name for p in tmp_path.iterdir()] == ["kept.csv"]
