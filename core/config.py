"""Load settings with a fixed precedence, and fail with one line that names the key.

Lowest to highest: config/default.yaml, the user's config file (if any), the file given
with --config (or CREWAI_CONFIG_PATH), environment variables and .env, then command-line
overrides (`--set key=value`). Each layer may set only some keys.

Files are read through core.config_files (regular files only, bounded, YAML without
aliases). Every secret found in the environment or .env is registered with core.redact
before anything can fail, so no message, here or later, can echo one.
"""

from __future__ import annotations

import io
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import ValidationError

from core import redact
from core.config_files import MAX_DOTENV_BYTES, MAX_YAML_BYTES, FileRefused, load_yaml, read_regular_file
from core.settings import Settings

# environment variable -> dotted config key
ENV_KEYS: dict[str, str] = {
    "CREWAI_ENABLED": "crew.enabled",
    "CREWAI_LLM_PROVIDER": "crew.llm_provider",
    "CREWAI_LLM_MODEL": "crew.llm_model",
    "CIRCUIT_BREAKER_ENABLED": "circuit_breaker.enabled",
    "CIRCUIT_BREAKER_BTC_DUMP_1H": "circuit_breaker.references.BTCUSDT.dump_1h_percent",
    "CIRCUIT_BREAKER_ETH_DUMP_1H": "circuit_breaker.references.ETHUSDT.dump_1h_percent",
    "CIRCUIT_BREAKER_AUTO_RESUME": "circuit_breaker.auto_resume",
    "SPIKE_DETECTION_ENABLED": "spike_detection.enabled",
    "SPIKE_DETECTION_CHECK_CIRCUIT_BREAKER": "spike_detection.check_circuit_breaker",
    "REDIS_ENABLED": "redis.enabled",
    "REDIS_HOST": "redis.host",
    "REDIS_PORT": "redis.port",
    "REDIS_URL": "redis.url",
    "REDIS_PASSWORD": "secrets.redis_password",
    "BINANCE_API_KEY": "secrets.binance_api_key",
    "BINANCE_SECRET_KEY": "secrets.binance_secret_key",
    "OPENAI_API_KEY": "secrets.openai_api_key",
}
CONFIG_PATH_ENV = "CREWAI_CONFIG_PATH"
_SECRET_PREFIX = "secrets."

# Variables that hold credentials: the ones above, the model keys core.agents.llm reads
# (PROVIDER_API_KEY for any provider), X_BEARER_TOKEN, ETHERSCAN_API_KEY, and anything
# else named like one, so a key added later is protected without a list to update.
_SECRET_NAME = re.compile(r"(?:^|_)(?:API_KEY|SECRET_KEY|SECRET|TOKEN|PASSWORD|PASSPHRASE|PRIVATE_KEY)$")

class ConfigError(Exception):
    """A configuration problem, already phrased as the one line the user sees (with every
    known secret masked)."""

    def __init__(self, message: str) -> None:
        super().__init__(redact.mask(message))


def is_secret_variable(name: str) -> bool:
    return bool(_SECRET_NAME.search(name.upper()))


@dataclass
class LoadedConfig:
    settings: Settings
    sources: list[str] = field(default_factory=list)  # the layers that were applied, in order
    origin: dict[str, str] = field(default_factory=dict)  # dotted key -> layer that set it


def default_config_path() -> Path:
    """config/default.yaml in the source tree, or the copy installed as package data."""
    here = Path(__file__).resolve().parent.parent / "config" / "default.yaml"
    if here.is_file():
        return here
    return Path(str(resources.files("config").joinpath("default.yaml")))


def read_yaml_file(path: Path, label: str | None = None) -> dict[str, Any]:
    label = label or str(path)
    try:
        text = read_regular_file(path, MAX_YAML_BYTES).text
    except FileNotFoundError:
        raise ConfigError(f"{label}: file not found") from None
    except FileRefused as exc:
        raise ConfigError(f"{label}: {exc}") from None
    data = _parse_yaml(text, label)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping of sections at the top level, got {type(data).__name__}")
    if "secrets" in data:
        raise ConfigError(f"{label}: secrets: keys belong in the environment or .env, not in a config file")
    return data


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _deep_merge(base: dict[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = target
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _parse_yaml(text: str, label: str) -> Any:
    try:
        return load_yaml(text)
    except FileRefused as exc:
        raise ConfigError(f"{label}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{label}:{where}: invalid YAML: {problem}") from None


def _scalar(text: str, label: str) -> Any:
    """Parse an environment or --set value the way YAML would ("15", "true", "null");
    text that is not YAML stays text. Aliases and deep nesting are refused as in files."""
    if not text.strip():
        return ""
    try:
        return load_yaml(text)
    except FileRefused as exc:
        raise ConfigError(f"{label}: {exc}") from None
    except yaml.YAMLError:
        return text


def read_dotenv(paths: list[Path]) -> dict[str, str]:
    """The variables of each .env that exists (the first file listed wins). A directory
    is skipped (a virtualenv is often called .env); anything else that is not a readable
    regular file of NAME=value lines is an error, and so is a file holding a secret that
    group or others may read."""
    values: dict[str, str] = {}
    for path in paths:
        if path.is_dir():
            continue
        try:
            read = read_regular_file(path, MAX_DOTENV_BYTES)
        except FileNotFoundError:
            continue
        except FileRefused as exc:
            raise ConfigError(f"{path}: {exc}") from None
        for key, value in _parse_dotenv(path, read.text, read.mode).items():
            values.setdefault(key, value)
    return values


def _parse_dotenv(path: Path, text: str, mode: int) -> dict[str, str]:
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    held: list[str] = []  # secret variables given a value in this file
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            # python-dotenv would skip the line with a warning, and it may be the key the operator
            # meant to set; the line itself is not shown: it may hold a secret
            raise ConfigError(f"{path}: line {binding.original.line}: cannot parse, expected NAME=value")
        if binding.key and binding.value and is_secret_variable(binding.key):
            held.append(binding.key)
    if held and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path}: holds {', '.join(sorted(set(held)))} but group or others may read it "
                          f"(mode {stat.S_IMODE(mode):o}): run chmod 600 {path}")
    return {k: v for k, v in dotenv_values(stream=io.StringIO(text)).items() if v is not None}


def register_secrets(variables: Mapping[str, str]) -> None:
    """Tell core.redact every secret value among these variables (environment or .env)."""
    redact.register(v for k, v in variables.items() if is_secret_variable(k))


def _format_validation_error(exc: ValidationError, origin: Mapping[str, str]) -> str:
    err = exc.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc) or "(top level)"
    source = _origin_of(key, origin)
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{source}: {key}: unknown key{_known_keys_hint(loc)}"
    if kind == "missing":
        return f"{source}: {key}: required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    shown = err.get("input")
    if key.startswith(_SECRET_PREFIX):
        shown = redact.MASK
    elif isinstance(shown, str):
        shown = redact.mask(shown)  # before repr(), whose escapes would hide a secret from the mask
    got = "" if isinstance(shown, (dict, list)) else f", got {shown!r}"
    return f"{source}: {key}: {msg[0].lower() + msg[1:] if msg else 'invalid value'}{got}"


def _origin_of(key: str, origin: Mapping[str, str]) -> str:
    """The layer that set this key; for a section-level error, the highest layer that
    touched the section (origin is kept in precedence order: later entries win)."""
    probe = key
    while probe:
        if probe in origin:
            return origin[probe]
        inside = [src for dotted, src in origin.items() if dotted.startswith(probe + ".")]
        if inside:
            return inside[-1]
        probe = probe.rpartition(".")[0]
    return "config"


def _known_keys_hint(loc: list[str]) -> str:
    model: Any = Settings
    parts = iter(loc[:-1])
    for part in parts:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return ""
        annotation = fields[part].annotation
        if get_origin(annotation) is dict:  # dict[str, Model]: the next part is a free key
            annotation = get_args(annotation)[1]
            next(parts, None)
        model = annotation if hasattr(annotation, "model_fields") else None
        if model is None:
            return ""
    names = sorted(getattr(model, "model_fields", {}))
    return f" (expected one of: {', '.join(names)})" if names else ""


def load_config(
    config_file: str | Path | None = None,
    *,
    user_config: Path | None = None,
    env: Mapping[str, str] | None = None,
    dotenv_paths: list[Path] | None = None,
    overrides: list[str] | None = None,
) -> LoadedConfig:
    """Build Settings from every layer. Raises ConfigError with a one-line message."""
    env = dict(os.environ if env is None else env)
    register_secrets(env)
    dotenv = read_dotenv(dotenv_paths if dotenv_paths is not None else [Path.cwd() / ".env"])
    register_secrets(dotenv)
    merged_env = {**dotenv, **env}  # the real environment beats .env

    origin: dict[str, str] = {}
    sources: list[str] = []
    data: dict[str, Any] = {}

    def apply(layer: dict[str, Any], label: str) -> None:
        nonlocal data
        data = _deep_merge(data, layer)
        for dotted in _flatten(layer):
            origin.pop(dotted, None)
            origin[dotted] = label
        sources.append(label)

    default_path = default_config_path()
    apply(read_yaml_file(default_path, "config/default.yaml"), "config/default.yaml")
    if user_config is not None and os.path.lexists(user_config):  # there but not a regular file: an error
        apply(read_yaml_file(user_config), str(user_config))
    chosen = config_file or merged_env.get(CONFIG_PATH_ENV) or None
    if chosen:
        label = str(chosen) if config_file else f"{chosen} (from {CONFIG_PATH_ENV})"
        apply(read_yaml_file(Path(chosen).expanduser(), label), label)

    env_layer: dict[str, Any] = {}
    for name, dotted in ENV_KEYS.items():
        if name in merged_env:
            raw = merged_env[name]
            if dotted.startswith(_SECRET_PREFIX) and not raw.strip():
                continue
            label = f"{name} ({'environment' if name in env else '.env'})"
            value = raw if dotted.startswith(_SECRET_PREFIX) else _scalar(raw, label)
            _set_dotted(env_layer, dotted, value)
            origin.pop(dotted, None)
            origin[dotted] = label
    if env_layer:
        data = _deep_merge(data, env_layer)
        sources.append("environment")

    for item in overrides or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, for example circuit_breaker.auto_resume=false")
        if key.startswith(_SECRET_PREFIX):
            raise ConfigError(f"--set {key}: secrets come from the environment or .env, not the command line")
        layer: dict[str, Any] = {}
        _set_dotted(layer, key, _scalar(raw, f"--set {key}"))
        data = _deep_merge(data, layer)
        origin.pop(key, None)
        origin[key] = f"--set {key}"
    if overrides:
        sources.append("command line")

    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, origin)) from None
    return LoadedConfig(settings=settings, sources=sources, origin=origin)


SHADOW_SECTIONS = ("circuit_breaker", "protection_policy")  # what a shadow breaker may change


def shadow_variant(settings: Settings, layer: Mapping[str, Any] | None = None, overrides: list[str] | None = None,
                   label: str = "--shadow") -> Settings:
    """The settings with one shadow breaker's changes: a config layer (a --shadow file) and
    KEY=VALUE overrides (--shadow-set), limited to SHADOW_SECTIONS so the shadow shares the
    real breaker's market windows. Raises ConfigError with one line naming the key."""
    data = settings.model_dump(mode="json")
    origin: dict[str, str] = {}
    for top in (layer or {}):
        if top not in SHADOW_SECTIONS:
            raise ConfigError(f"{label}: {top}: a shadow may change only {' and '.join(SHADOW_SECTIONS)}")
    data = _deep_merge(data, layer or {})
    for dotted in _flatten(layer or {}):
        origin[dotted] = label
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--shadow-set {item!r}: expected KEY=VALUE, for example "
                              f"circuit_breaker.references.BTCUSDT.dump_1h_percent=12")
        if key.split(".")[0] not in SHADOW_SECTIONS:
            raise ConfigError(f"--shadow-set {key}: a shadow may change only {' and '.join(SHADOW_SECTIONS)}")
        one: dict[str, Any] = {}
        _set_dotted(one, key, _scalar(raw, f"--shadow-set {key}"))
        data = _deep_merge(data, one)
        origin[key] = f"--shadow-set {key}"
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, origin)) from None


def redacted_dump(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with every secret masked: safe to log or show."""
    data = settings.model_dump(mode="json")
    data["secrets"] = {k: (redact.MASK if v else None) for k, v in data.get("secrets", {}).items()}
    return data
