from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mastctl.errors import ConfigError
from mastctl.profile import Profile, example_yaml, load_profile, parse_profile_text

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_when_no_profile_anywhere():
    loaded = load_profile(None, env={})
    assert loaded.source == "defaults" and loaded.path is None
    p = loaded.profile
    assert p.detect.backend == "morphology" and p.kb.store == "lancedb"
    assert p.teacher_models.primary_model == "minilm" and p.teacher_models.models["minilm"].embedding_dim == 384
    assert p.gpu_settings.device == "auto" and p.gemini.api_key_env == "GEMINI_API_KEY"


def test_resolution_order(tmp_path):
    write(tmp_path / "mastctl.yaml", "detect: {backend: local}\n")
    write(tmp_path / "env.yaml", "detect: {backend: from-env}\n")
    write(tmp_path / "flag.yaml", "detect: {backend: from-flag}\n")
    assert load_profile(None, env={}).profile.detect.backend == "local"
    env = {"MASTCTL_PROFILE": str(tmp_path / "env.yaml")}
    assert load_profile(None, env=env).profile.detect.backend == "from-env"
    assert load_profile(tmp_path / "flag.yaml", env=env).profile.detect.backend == "from-flag"
    assert load_profile(tmp_path / "flag.yaml", env=env).source == "--profile"


def test_missing_explicit_profile_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist.*config init"):
        load_profile(tmp_path / "nope.yaml", env={})
    with pytest.raises(ConfigError, match=r"from \$MASTCTL_PROFILE"):
        load_profile(None, env={"MASTCTL_PROFILE": str(tmp_path / "gone.yaml")})


def test_full_profile_as_in_the_original_design(tmp_path):
    text = """
detect: {backend: hybrid, mpp: 0.25, thresholds: {explicit: 0.6, implicit: 0.4}}
kb: {store: chroma, uri: /data/kb}
gemini: {model: gemini-2.5-pro, api_key_env: MY_GEMINI_KEY}
vlm:
  qwen2_vl: {base_model: /models/Qwen2-VL-2B-Instruct, adapter: /runs/adapter}
teacher_models:
  primary_model: llama3-8b-local
  models:
    llama3-8b-local: {path: /models/Meta-Llama-3-8B, type: local, embedding_dim: 4096, torch_dtype: float16, device_map: auto}
    distilbert-base: {path: distilbert-base-uncased, type: huggingface, embedding_dim: 768}
gpu_settings: {use_gpu: true, device: "cuda:1", mixed_precision: true}
backend_options:
  hybrid: {weights: [0.5, 0.5]}
"""
    p = load_profile(write(tmp_path / "p.yaml", text), env={}).profile
    assert p.detect.thresholds.explicit == 0.6 and p.detect.thresholds.implicit == 0.4 and p.detect.thresholds.other is None
    assert p.teacher_models.models["llama3-8b-local"].torch_dtype == "float16"
    assert p.vlm.qwen2_vl.adapter == "/runs/adapter" and p.gpu_settings.device == "cuda:1"
    assert p.backend_options["hybrid"] == {"weights": [0.5, 0.5]}


def test_interpolation_with_defaults_and_escape(tmp_path):
    text = "kb: {uri: '${DATA}/kb', collection: '${COLL:-cells}'}\nvlm: {llava: {base_model: '$${not_a_var}'}}\n"
    p = load_profile(write(tmp_path / "p.yaml", text), env={"DATA": "/mnt/d"}).profile
    assert p.kb.uri == "/mnt/d/kb" and p.kb.collection == "cells" and p.vlm.llava.base_model == "${not_a_var}"


def test_undefined_variable_names_path_and_line(tmp_path):
    text = "detect:\n  backend: morphology\nkb:\n  uri: ${NOT_SET_ANYWHERE}\n"
    with pytest.raises(ConfigError, match=r"kb\.uri \(line 4\): environment variable NOT_SET_ANYWHERE is not set"):
        load_profile(write(tmp_path / "p.yaml", text), env={})


def test_environment_overrides(tmp_path):
    path = write(tmp_path / "p.yaml", "teacher_models:\n  primary_model: m-one\n  models:\n    m-one: {path: /a, embedding_dim: 8}\n")
    env = {
        "MASTCTL_DETECT__MPP": "0.25",
        "MASTCTL_GPU_SETTINGS__USE_GPU": "false",
        "MASTCTL_DETECT__THRESHOLDS__IMPLICIT": "0.3",
        "MASTCTL_TEACHER_MODELS__MODELS__M_ONE__EMBEDDING_DIM": "16",  # '-' in a key is '_' in a variable name
        "MASTCTL_PROFILE": str(path),
        "MASTCTL_DEBUG": "1",  # no '__': not an override
    }
    loaded = load_profile(None, env=env)
    p = loaded.profile
    assert p.detect.mpp == 0.25 and p.gpu_settings.use_gpu is False and p.detect.thresholds.implicit == 0.3
    assert p.teacher_models.models["m-one"].embedding_dim == 16
    assert "MASTCTL_DETECT__MPP" in loaded.overrides and "MASTCTL_DEBUG" not in loaded.overrides


def test_bad_override_is_reported_with_its_variable():
    with pytest.raises(ConfigError, match=r"detect\.mpp \(from MASTCTL_DETECT__MPP\)"):
        load_profile(None, env={"MASTCTL_DETECT__MPP": "-1"})
    with pytest.raises(ConfigError, match=r"detect\.bogus \(from MASTCTL_DETECT__BOGUS\): unknown key"):
        load_profile(None, env={"MASTCTL_DETECT__BOGUS": "1"})
    with pytest.raises(ConfigError, match=r"detect\.backend \(from MASTCTL_DETECT__BACKEND__X\)"):
        load_profile(None, env={"MASTCTL_DETECT__BACKEND__X": "1"})
    with pytest.raises(ConfigError, match="detect.backend is a value, not a section"):
        load_profile(None, env={"MASTCTL_DETECT__BACKEND": "x", "MASTCTL_DETECT__BACKEND__X": "1"})


def test_every_error_is_reported_with_path_and_line():
    text = """detect:
  mpp: -2
  backnd: gemini
gpu_settings:
  device: gpu0
teacher_models:
  primary_model: nope
  models:
    a: {path: /x}
gemini:
  api_key_env: AIzaSyTHISISAKEY
"""
    _, problems = parse_profile_text(text, None, {})
    joined = "\n".join(problems)
    assert "detect.mpp (line 2): Input should be greater than or equal to 0.01" in joined
    assert "detect.backnd (line 3): unknown key" in joined
    assert "gpu_settings.device (line 5): must be auto, cpu, cuda, cuda:N or mps" in joined
    assert "teacher_models.models.a.embedding_dim (line 9): required key is missing" in joined
    assert "gemini.api_key_env (line 11): must name an environment variable" in joined
    assert len(problems) == 5


def test_primary_model_must_be_listed():
    _, problems = parse_profile_text("teacher_models: {primary_model: x, models: {y: {path: /y, embedding_dim: 3}}}", None, {})
    assert problems == ["teacher_models (line 1): primary_model 'x' is not one of models (y)"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("detect: [1, 2", "line 1: not valid YAML"),
        ("- just\n- a list\n", "must be a mapping of sections"),
    ],
)
def test_yaml_errors(text, message):
    _, problems = parse_profile_text(text, None, {})
    assert len(problems) == 1 and message in problems[0]


def test_one_line_summary_for_commands(tmp_path):
    path = write(tmp_path / "p.yaml", "detect: {mpp: 0, backnd: x}\n")
    with pytest.raises(ConfigError) as info:
        load_profile(path, env={})
    message = str(info.value)
    assert "\n" not in message and "and 1 more; see `mastctl config validate`" in message
    assert len(info.value.details) == 2


def test_empty_file_is_the_defaults(tmp_path):
    assert load_profile(write(tmp_path / "p.yaml", "# nothing yet\n"), env={}).profile == Profile()


def test_example_documents_every_key_and_is_the_committed_file():
    text = example_yaml()
    assert (REPO / "config.example.yaml").read_text() == text, "regenerate: mastctl config init - > config.example.yaml"
    assert Profile.model_validate(yaml.safe_load(text)) == Profile()

    def keys(model, prefix=""):
        for name, field in model.model_fields.items():
            yield prefix + name
            sub = field.annotation
            if isinstance(sub, type) and hasattr(sub, "model_fields"):
                yield from keys(sub, prefix + name + ".")

    data = yaml.safe_load(text)
    for dotted in keys(Profile):
        node = data
        for part in dotted.split("."):
            assert part in node, f"config.example.yaml lacks {dotted}"
            node = node[part]
    # every key carries a comment describing it
    assert text.count("# ") >= len(list(keys(Profile)))
