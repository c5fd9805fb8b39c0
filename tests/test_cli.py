from __future__ import annotations

import json
import subprocess
import sys

import yaml

from conftest import run_mastctl
from mastctl import __version__
from mastctl.cli import hoist_global_options

HEAVY = ["torch", "transformers", "peft", "sentence_transformers", "lancedb", "google.genai", "chromadb", "pinecone", "numpy"]


def test_version_and_help(cli):
    r = cli("--version")
    assert r.exit_code == 0 and r.stdout.splitlines()[0] == f"mastctl {__version__}"
    assert any(line.split()[0] == "numpy" for line in r.stdout.splitlines()[1:])  # the libraries, by name
    versions = json.loads(cli("--json", "--version").stdout)
    assert versions["mastctl"] == __version__ and "lancedb" in versions and "typer" in versions
    r = cli("--help")
    assert r.exit_code == 0
    for group in ("detect", "synth", "kb", "finetune", "cube", "compare", "config", "backends"):
        assert group in r.stdout
    assert "Examples" in r.stdout


def test_help_prose_wraps_at_the_terminal_width_and_examples_keep_their_lines():
    from mastctl.cli import reflow

    text = "First line.\n\nA paragraph broken\nfor 100 columns.\n\nExamples:  a\n           b\n\n  x  # one\n  y  # two"
    assert reflow(text) == ("First line.\n\nA paragraph broken for 100 columns.\n\nExamples:  a\n           b"
                            "\n\n  x  # one\n  y  # two")
    # an 80-column terminal: the docstring's own line breaks (after ".geojson," and "error,") made ragged lines
    r = run_mastctl("detect", "--help", env={"COLUMNS": "80"})
    assert r.exit_code == 0
    assert ".geojson, .geojson.gz" in r.stdout and "error, unless it ends" in r.stdout, r.stdout
    assert max(len(line) for line in r.stdout.splitlines()) <= 80


def test_help_and_backends_list_import_nothing_heavy(tmp_path):
    code = (
        "import sys\n"
        "from mastctl.cli import main\n"
        "assert main(['--help']) == 0\n"
        "assert main(['backends', 'list']) == 0\n"
        "assert main(['detect', '--help']) == 0\n"
        f"heavy = {HEAVY!r}\n"
        "print('HEAVY=' + ','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    assert out.strip().splitlines()[-1] == "HEAVY=", out


def test_a_detector_without_its_weights_exits_4(cli, tmp_path):
    from PIL import Image

    from conftest import he_like

    Image.fromarray(he_like()).save(tmp_path / "a.png")
    r = cli("detect", "a.png", "--backend", "qwen")
    assert r.exit_code == 4 and "base model" in r.stderr and r.stdout == ""


def test_no_arguments_show_help_and_exit_2(cli):
    r = cli("detect")
    assert r.exit_code == 2 and "Usage" in r.stdout and r.stderr == ""


def test_usage_errors_exit_2_on_one_line(cli):
    r = cli("detect", "--no-such-flag", "x.png")
    assert r.exit_code == 2 and r.stderr.startswith("mastctl: error: ") and "--no-such-flag" in r.stderr
    r = cli("nonsense")
    assert r.exit_code == 2 and "nonsense" in r.stderr


def test_global_options_may_follow_the_command():
    assert hoist_global_options(["detect", "a.png", "--json", "-p", "x.yaml", "-o", "out"]) == [
        "--json", "-p", "x.yaml", "detect", "a.png", "-o", "out"]
    assert hoist_global_options(["detect", "--", "--json"]) == ["detect", "--", "--json"]


def test_config_init_show_validate(cli, tmp_path):
    r = cli("config", "init")
    assert r.exit_code == 0 and (tmp_path / "mastctl.yaml").is_file()
    r = cli("config", "init")
    assert r.exit_code == 2 and "already exists" in r.stderr  # never clobbers a profile
    (tmp_path / "mastctl.yaml").write_text("detect:\n  backend: hybrid\n  mpp: 0.5\n")
    r = cli("--json", "config", "show")
    doc = r.json()
    assert r.exit_code == 0 and doc["source"] == "./mastctl.yaml" and doc["profile"]["detect"]["backend"] == "hybrid"
    r = cli("config", "show")
    assert yaml.safe_load(r.stdout)["detect"]["mpp"] == 0.5
    r = cli("config", "validate")
    assert r.exit_code == 0 and "valid" in r.stderr


def test_config_validate_lists_every_error(cli, tmp_path):
    (tmp_path / "bad.yaml").write_text("detect:\n  mpp: -1\n  colour: red\ngpu_settings:\n  device: tpu\n")
    r = cli("config", "validate", "bad.yaml")
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert lines == [
        "bad.yaml: detect.mpp (line 2): Input should be greater than or equal to 0.01",
        "bad.yaml: detect.colour (line 3): unknown key (see config.example.yaml for the keys this section takes)",
        "bad.yaml: gpu_settings.device (line 5): must be auto, cpu, cuda, cuda:N or mps",
    ]
    r = cli("--json", "config", "validate", "bad.yaml")
    assert r.exit_code == 2 and r.json()["valid"] is False and len(r.json()["errors"]) == 3


def test_bad_profile_stops_commands_with_exit_2(cli, tmp_path, monkeypatch):
    (tmp_path / "p.yaml").write_text("detect: {mpp: zero}\n")
    r = cli("-p", "p.yaml", "config", "show")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "detect.mpp (line 1)" in r.stderr
    monkeypatch.setenv("MASTCTL_PROFILE", str(tmp_path / "missing.yaml"))
    r = cli("config", "show")
    assert r.exit_code == 2 and "MASTCTL_PROFILE" in r.stderr


def test_env_override_reaches_config_show(cli, monkeypatch):
    monkeypatch.setenv("MASTCTL_DETECT__MPP", "0.25")
    doc = cli("--json", "config", "show").json()
    assert doc["profile"]["detect"]["mpp"] == 0.25 and doc["overrides"] == ["MASTCTL_DETECT__MPP"]


def test_backends_list_human_and_json(cli, plugin):
    r = cli("--json", "backends", "list")
    rows = {(row["kind"], row["name"]): row for row in r.json()}
    assert rows[("embedder", "minilm")]["provider"] == "mastctl"
    assert rows[("detector", "points")]["available"] is True
    assert rows[("detector", "needs-missing")]["available"] is False
    assert "pip install mastctl-testplugin[fancy]" in rows[("detector", "needs-missing")]["reason"]
    assert "broken on purpose" in rows[("detector", "broken")]["reason"]
    r = cli("backends", "list", "--kind", "detector")
    assert r.exit_code == 0 and "points" in r.stdout and "qwen" in r.stdout and "minilm" not in r.stdout


def test_real_process_exit_codes_and_no_traceback(tmp_path):
    r = run_mastctl("detect", "missing.png", "-b", "points", cwd=tmp_path, plugin=True)
    assert r.exit_code == 3 and r.stderr.strip() == "mastctl: error: missing.png: no such file"
    r = run_mastctl("config", "show", "-p", "nope.yaml", cwd=tmp_path)
    assert r.exit_code == 2 and "Traceback" not in r.stderr


def test_backend_failures_exit_4_and_debug_shows_traceback(tmp_path):
    from PIL import Image

    from conftest import he_like

    Image.fromarray(he_like()).save(tmp_path / "a.png")
    # the 'crashing' detector raises RuntimeError: a backend failure, exit 4
    r = run_mastctl("detect", "a.png", "-b", "crashing", cwd=tmp_path, plugin=True)
    assert r.exit_code == 4 and "model exploded" in r.stderr and "Traceback" not in r.stderr
    r = run_mastctl("detect", "a.png", "-b", "crashing", cwd=tmp_path, plugin=True, env={"MASTCTL_DEBUG": "1"})
    assert r.exit_code == 4 and "Traceback" in r.stderr
    r = run_mastctl("detect", "a.png", "-b", "needs-missing", cwd=tmp_path, plugin=True)
    assert r.exit_code == 4 and r.stderr.count("\n") == 1


def test_unexpected_exception_is_exit_1(cli, monkeypatch):
    from mastctl import registry

    def explode(kind=None):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(registry, "backends", explode)
    r = cli("backends", "list")
    assert r.exit_code == 1 and "unexpected error: ZeroDivisionError" in r.stderr and "MASTCTL_DEBUG" in r.stderr


def test_json_stdout_is_pure_json(cli, plugin, tmp_path):
    r = cli("--json", "-v", "backends", "list")
    json.loads(r.stdout)
