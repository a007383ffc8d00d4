"""Configuration: layers in the documented order, and one clear line for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from core import redact
from core.config import ConfigError, load_config, redacted_dump
from core.settings import ExecutionSettings
from tests.conftest import run_cli


@pytest.fixture(autouse=True)
def _no_known_secrets():
    redact.forget_all()
    yield
    redact.forget_all()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)  # a .env holding keys must be private
    return path


def test_defaults_match_the_documented_rules():
    s = load_config(env={}, dotenv_paths=[]).settings
    btc = s.circuit_breaker.references["BTCUSDT"]
    assert (btc.dump_1h_percent, btc.warning_1h_percent, btc.warning_5m_percent) == (15.0, 10.0, 5.0)
    mw = s.circuit_breaker.market_wide
    assert (mw.min_symbols, mw.breadth_fraction, mw.dump_1h_percent) == (5, 0.6, 8.0)
    assert s.circuit_breaker.deep_level_percent == 20.0
    assert s.circuit_breaker.recovery.no_new_low_minutes == 15 and s.circuit_breaker.recovery.rebound_percent == 3
    assert s.execution.mode == "auto" and s.crew.llm_provider == "rules" and not s.execution.auto_approve_paper


def test_precedence_default_user_file_env_dotenv_and_flags(tmp_path):
    user = write(tmp_path / "user.yaml", "circuit_breaker:\n  deep_level_percent: 25\n  auto_resume: false\n")
    given = write(tmp_path / "given.yaml", "circuit_breaker:\n  deep_level_percent: 30\n")
    dotenv = write(tmp_path / ".env", "CIRCUIT_BREAKER_BTC_DUMP_1H=17\nCIRCUIT_BREAKER_ETH_DUMP_1H=18\n")
    loaded = load_config(given, user_config=user, env={"CIRCUIT_BREAKER_ETH_DUMP_1H": "19"},
                         dotenv_paths=[dotenv], overrides=["circuit_breaker.references.BTCUSDT.dump_1h_percent=16"])
    cb = loaded.settings.circuit_breaker
    assert cb.deep_level_percent == 30  # --config beats the user file
    assert cb.auto_resume is False  # the user file beats the default
    assert cb.references["ETHUSDT"].dump_1h_percent == 19  # the environment beats .env
    assert cb.references["BTCUSDT"].dump_1h_percent == 16  # the command line beats everything
    assert cb.references["BTCUSDT"].warning_1h_percent == 10  # partial layers keep the rest
    assert loaded.sources[0] == "config/default.yaml" and loaded.sources[-1] == "command line"


def test_config_path_from_environment(tmp_path):
    given = write(tmp_path / "c.yaml", "spike_detection:\n  cooldown_minutes: 3\n")
    s = load_config(env={"CREWAI_CONFIG_PATH": str(given)}, dotenv_paths=[]).settings
    assert s.spike_detection.cooldown_minutes == 3


@pytest.mark.parametrize("text, fragment", [
    ("circuit_breaker:\n  references:\n    BTCUSDT:\n      dump_1h_percent: lots\n",
     "circuit_breaker.references.BTCUSDT.dump_1h_percent: input should be a valid number"),
    ("circuit_breaker:\n  deep_level_percent: 150\n", "circuit_breaker.deep_level_percent: input should be less than 100"),
    ("circuit_breaker:\n  nonsense: 1\n", "circuit_breaker.nonsense: unknown key (expected one of:"),
    ("nonsense: 1\n", "nonsense: unknown key"),
    ("execution:\n  mode: yolo\n", "execution.mode: input should be 'auto', 'paper', 'testnet' or 'live'"),
    ("circuit_breaker: [1, 2\n", "invalid YAML"),
    ("- just\n- a list\n", "expected a mapping"),
    ("secrets:\n  openai_api_key: sk-123\n", "secrets: keys belong in the environment"),
    ("circuit_breaker:\n  references:\n    btc: {}\n", "upper-case Binance symbol"),
])
def test_bad_values_name_the_file_and_the_key(tmp_path, text, fragment):
    bad = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_config(bad, env={}, dotenv_paths=[])
    message = str(info.value)
    assert fragment in message
    assert str(bad) in message
    assert "\n" not in message


@pytest.mark.parametrize("mode", ["testnet", "live"])
def test_the_schema_allows_auto_approve_only_on_paper(mode):
    # the loader refuses testnet and live for now (not built yet): the schema's own rule must hold without it
    with pytest.raises(ValidationError, match=f"auto_approve_paper is allowed only on paper \\(mode is {mode}\\)"):
        ExecutionSettings(mode=mode, auto_approve_paper=True)
    assert ExecutionSettings(mode=mode).auto_approve_paper is False
    assert ExecutionSettings(mode="paper", auto_approve_paper=True).auto_approve_paper is True
    assert ExecutionSettings(mode="auto", auto_approve_paper=True).auto_approve_paper is True  # paper unless keys


def test_bad_environment_values_name_the_variable():
    with pytest.raises(ConfigError, match=r"^REDIS_PORT \(environment\): redis.port: .*65535, got 70000$"):
        load_config(env={"REDIS_PORT": "70000"}, dotenv_paths=[])


def test_secrets_come_from_the_environment_and_never_print(tmp_path):
    dotenv = write(tmp_path / ".env", "BINANCE_API_KEY=abc-secret-key\nOPENAI_API_KEY=\n")
    s = load_config(env={"BINANCE_SECRET_KEY": "shh-very-secret"}, dotenv_paths=[dotenv]).settings
    assert s.secrets.binance_api_key.get_secret_value() == "abc-secret-key"
    assert s.secrets.openai_api_key is None
    dumped = str(redacted_dump(s))
    assert "abc-secret-key" not in dumped and "shh-very-secret" not in dumped and "***" in dumped
    assert "abc-secret-key" not in repr(s)
    with pytest.raises(ConfigError, match="secrets come from the environment"):
        load_config(env={}, dotenv_paths=[], overrides=["secrets.openai_api_key=x"])


# ---------------------------------------------------------------------------- through the real command
def test_cli_bad_config_is_one_line_and_exit_2(tmp_path):
    bad = write(tmp_path / "bad.yaml", "circuit_breaker:\n  recovery:\n    rebound_percent: -3\n")
    result = run_cli("--config", str(bad), "config", "check")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "circuit_breaker.recovery.rebound_percent" in lines[0] and str(bad) in lines[0]
    assert "Traceback" not in result.stderr


def test_cli_missing_config_file(tmp_path):
    result = run_cli("replay", "--config", str(tmp_path / "nope.yaml"), "x.csv")
    assert result.returncode == 2 and "nope.yaml: file not found" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_bad_environment_value(tmp_path):
    result = run_cli("config", "check", env={"CIRCUIT_BREAKER_AUTO_RESUME": "maybe"})
    assert result.returncode == 2
    assert "CIRCUIT_BREAKER_AUTO_RESUME (environment): circuit_breaker.auto_resume" in result.stderr


def test_cli_show_masks_secrets(tmp_path):
    result = run_cli("--data-dir", str(tmp_path), "config", "show", env={"OPENAI_API_KEY": "sk-live-123456"})
    assert result.returncode == 0
    assert "sk-live-123456" not in result.stdout and "openai_api_key: '***'" in result.stdout


def test_cli_user_config_in_data_dir(tmp_path):
    (tmp_path / "config").mkdir()
    write(tmp_path / "config" / "config.yaml", "spike_detection:\n  cooldown_minutes: 2\n")
    result = run_cli("--data-dir", str(tmp_path), "config", "show")
    assert "cooldown_minutes: 2.0" in result.stdout


def test_nan_and_infinity_are_refused(tmp_path):
    bad = write(tmp_path / "nan.yaml", "circuit_breaker:\n  references:\n    BTCUSDT:\n      dump_1h_percent: .nan\n")
    with pytest.raises(ConfigError, match="dump_1h_percent: input should be a finite number"):
        load_config(bad, env={}, dotenv_paths=[])
    with pytest.raises(ConfigError, match="input should be a finite number"):
        load_config(env={}, dotenv_paths=[], overrides=["risk_management.max_order_notional_usd=.inf"])
