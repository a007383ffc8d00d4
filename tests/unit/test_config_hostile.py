"""Configuration under hostile input: files that are not files, YAML that explodes, .env
files that leak, secrets that try to get printed, caps no desk would set, and settings
whose code is not built yet. Each one is a ConfigError of one line naming the file and key."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest

from core import redact
from core.config import (
    ENV_KEYS,
    ConfigError,
    is_secret_variable,
    load_config,
    read_dotenv,
)
from core.config_files import MAX_DOTENV_BYTES, MAX_YAML_BYTES, MAX_YAML_DEPTH, FileRefused, read_regular_file
from core.logs import RedactSecrets
from core.settings import Settings

# nine levels of nine aliases each: 9**9 strings once expanded (gigabytes), ten lines as text
ALIAS_BOMB = "a: &a [" + ", ".join(["lol"] * 9) + "]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi"))


@pytest.fixture(autouse=True)
def _no_known_secrets():
    redact.forget_all()
    yield
    redact.forget_all()


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def config_error(*args, **kwargs) -> str:
    kwargs.setdefault("env", {})
    kwargs.setdefault("dotenv_paths", [])
    with pytest.raises(ConfigError) as info:
        load_config(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------- YAML
@pytest.mark.parametrize("text, fragment", [
    (ALIAS_BOMB, "line 2, column 8: aliases (*a) are not allowed"),
    ("circuit_breaker: &loop\n  recovery: *loop\n", "aliases (*loop) are not allowed"),
    ("a: &x [1, *x]\n", "aliases (*x) are not allowed"),
    ("[" * 5000 + "]" * 5000 + "\n", f"nested deeper than {MAX_YAML_DEPTH} levels"),
    ("a: " + "{b: " * 5000 + "1" + "}" * 5000 + "\n", f"nested deeper than {MAX_YAML_DEPTH} levels"),
], ids=["alias-bomb", "self-alias", "list-alias", "deep-lists", "deep-maps"])
def test_yaml_bombs_and_deep_nesting_are_refused(tmp_path, text, fragment):
    bad = write(tmp_path / "bad.yaml", text)
    message = config_error(bad)
    assert message.startswith(f"{bad}: ") and fragment in message


def test_nesting_up_to_the_limit_is_read(tmp_path):
    def nested(levels: int) -> str:  # the top-level mapping and circuit_breaker's are two levels
        return "circuit_breaker:\n  x: " + "[" * (levels - 2) + "]" * (levels - 2) + "\n"

    at_limit = write(tmp_path / "at.yaml", nested(MAX_YAML_DEPTH))
    assert "circuit_breaker.x: unknown key" in config_error(at_limit)  # parsed: the schema answers
    over = write(tmp_path / "over.yaml", nested(MAX_YAML_DEPTH + 1))
    assert "nested deeper" in config_error(over)


def test_an_anchor_without_an_alias_is_plain_yaml(tmp_path):
    ok = write(tmp_path / "ok.yaml", "circuit_breaker: &cb\n  auto_resume: false\n")
    assert load_config(ok, env={}, dotenv_paths=[]).settings.circuit_breaker.auto_resume is False


@pytest.mark.parametrize("value", ["[*a]", "&a [*a]", "[" * 5000 + "]" * 5000], ids=["alias", "self-alias", "deep"])
def test_values_from_the_command_line_and_environment_are_parsed_as_safely(value):
    assert config_error(overrides=[f"redis.host={value}"]).startswith("--set redis.host: ")
    assert config_error(env={"REDIS_HOST": value}).startswith("REDIS_HOST (environment): ")


# ---------------------------------------------------------------------------- what may be read
def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    # no writer ever opens it: an open that waited for one would never return
    assert config_error(fifo) == f"{fifo}: is a FIFO, not a regular file"
    with pytest.raises(FileRefused, match="is a FIFO"):
        read_regular_file(fifo, MAX_YAML_BYTES)


@pytest.mark.parametrize("device, kind", [("/dev/zero", "a character device"), ("/dev/null", "a character device")])
def test_devices_are_refused(device, kind):
    assert config_error(device) == f"{device}: is {kind}, not a regular file"


def test_a_directory_is_refused(tmp_path):
    assert config_error(tmp_path) == f"{tmp_path}: is a directory, not a regular file"


def test_a_file_over_the_size_limit_is_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * (MAX_YAML_BYTES // 10 + 1))
    assert config_error(big) == f"{big}: is {big.stat().st_size:,} bytes, over the limit of {MAX_YAML_BYTES:,} bytes"
    at_limit = tmp_path / "at.yaml"
    at_limit.write_text("#" * (MAX_YAML_BYTES - 1) + "\n")
    load_config(at_limit, env={}, dotenv_paths=[])


def test_the_size_limit_is_exact(tmp_path):
    path = tmp_path / "ten"
    path.write_bytes(b"x" * 10)
    with pytest.raises(FileRefused, match="^is 10 bytes, over the limit of 9 bytes$"):
        read_regular_file(path, 9)
    assert read_regular_file(path, 10).text == "x" * 10


def test_the_user_config_must_be_a_regular_file_when_it_is_there(tmp_path):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    assert "is a FIFO" in config_error(user_config=fifo)
    load_config(user_config=tmp_path / "absent.yaml", env={}, dotenv_paths=[])  # absent is fine


def test_a_config_that_is_not_utf8_names_the_file_and_offset(tmp_path):
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"circuit_breaker:\n  auto_resume: \xff\xfe\n")
    assert config_error(bad) == f"{bad}: is not UTF-8 text (byte 0xff at offset 32)"


# ---------------------------------------------------------------------------- .env
def test_a_binary_dotenv_is_one_line(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_bytes(bytes(range(256)) * 4)
    dotenv.chmod(0o600)
    assert config_error(dotenv_paths=[dotenv]).startswith(f"{dotenv}: is not UTF-8 text")


def test_a_dotenv_line_that_does_not_parse_is_named_but_not_shown(tmp_path):
    dotenv = write(tmp_path / ".env", 'CREWAI_ENABLED=true\nBINANCE_API_KEY="unterminated-secret\n')
    message = config_error(dotenv_paths=[dotenv])
    assert message == f"{dotenv}: line 2: cannot parse, expected NAME=value"
    assert "unterminated-secret" not in message


def test_a_dotenv_directory_is_skipped_and_a_fifo_refused(tmp_path):
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / ".env").mkdir()  # a virtualenv called .env
    assert read_dotenv([tmp_path / "venv" / ".env"]) == {}
    os.mkfifo(tmp_path / ".env")
    assert "is a FIFO" in config_error(dotenv_paths=[tmp_path / ".env"])


def test_a_dotenv_over_its_size_limit_is_refused(tmp_path):
    dotenv = write(tmp_path / ".env", "# padding\n" * (MAX_DOTENV_BYTES // 10 + 1))
    assert "over the limit" in config_error(dotenv_paths=[dotenv])


@pytest.mark.parametrize("mode", [0o644, 0o666, 0o640, 0o604, 0o620], ids=oct)
def test_a_dotenv_holding_keys_that_others_may_read_is_refused(tmp_path, mode):
    dotenv = write(tmp_path / ".env", "CREWAI_ENABLED=true\nBINANCE_API_KEY=abcd-1234-key\n", mode)
    message = config_error(dotenv_paths=[dotenv])
    assert message == (f"{dotenv}: holds BINANCE_API_KEY but group or others may read it (mode {mode:o}): "
                       f"run chmod 600 {dotenv}")
    assert "abcd-1234-key" not in message


@pytest.mark.parametrize("name", ["X_BEARER_TOKEN", "ETHERSCAN_API_KEY", "ANTHROPIC_API_KEY", "SOME_DB_PASSWORD"])
def test_any_key_like_variable_counts_as_a_key(tmp_path, name):
    dotenv = write(tmp_path / ".env", f"{name}=value-that-is-secret\n", 0o644)
    assert f"holds {name} but" in config_error(dotenv_paths=[dotenv])


def test_a_private_dotenv_or_one_without_keys_is_read(tmp_path):
    private = write(tmp_path / "private.env", "BINANCE_API_KEY=abcd-1234-key\n", 0o600)
    assert load_config(env={}, dotenv_paths=[private]).settings.secrets.binance_api_key.get_secret_value() \
        == "abcd-1234-key"
    # the shipped example: empty keys, readable by all, is not a leak
    example = write(tmp_path / "example.env", (Path(__file__).parents[2] / ".env.example").read_text(), 0o644)
    assert load_config(env={}, dotenv_paths=[example]).settings.secrets.binance_api_key is None


# ---------------------------------------------------------------------------- secrets are masked
def test_every_key_the_project_reads_is_a_secret_variable():
    from core.agents.llm import KEY_ENV

    read = {*KEY_ENV.values(), "X_BEARER_TOKEN", "TWITTER_BEARER_TOKEN", "ETHERSCAN_API_KEY",
            *(name for name, key in ENV_KEYS.items() if key.startswith("secrets."))}
    assert all(is_secret_variable(name) for name in read), [n for n in read if not is_secret_variable(n)]
    for plain in ("REDIS_HOST", "CREWAI_LLM_MODEL", "X_API_BASE_URL", "ETHERSCAN_API_URL", "CREWAI_CONFIG_PATH",
                  "CIRCUIT_BREAKER_AUTO_RESUME"):
        assert not is_secret_variable(plain), plain


def test_the_loader_registers_every_secret_it_reads(tmp_path):
    dotenv = write(tmp_path / ".env", "X_BEARER_TOKEN=bearer-from-dotenv\nETHERSCAN_API_KEY=\n")
    load_config(env={"ANTHROPIC_API_KEY": "sk-ant-from-env", "BINANCE_SECRET_KEY": "binance-secret-1",
                     "REDIS_HOST": "redis-host-name"}, dotenv_paths=[dotenv])
    assert set(redact.known()) == {"bearer-from-dotenv", "sk-ant-from-env", "binance-secret-1"}


@pytest.mark.parametrize("secret", ["hunter2-the-key", "it's-a\\key"])
def test_a_secret_is_never_echoed_as_another_keys_bad_value(tmp_path, secret):
    message = config_error(env={"BINANCE_API_KEY": secret, "REDIS_PORT": secret})
    assert message.startswith("REDIS_PORT (environment): redis.port: input should be a valid integer")
    assert secret not in message and repr(secret) not in message and "'***'" in message
    # the same from .env, and from a YAML file
    dotenv = write(tmp_path / ".env", f"OPENAI_API_KEY={secret!r}\nREDIS_HOST=x\nREDIS_PORT={secret!r}\n")
    assert secret not in config_error(dotenv_paths=[dotenv])
    bad = write(tmp_path / "bad.yaml", f"redis:\n  port: {secret!r}\n")
    message = config_error(bad, env={"OPENAI_API_KEY": secret})
    assert secret not in message and "redis.port" in message and str(bad) in message


def test_config_errors_mask_known_secrets():
    redact.register(["a-known-secret"])
    assert str(ConfigError("file: key: got 'a-known-secret'")) == "file: key: got '***'"


def test_the_log_filter_masks_what_core_redact_knows():
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("test.redact")
    handler = Keep()
    handler.addFilter(RedactSecrets())
    logger.addHandler(handler)
    logger.propagate = False
    try:
        redact.register(["registered-after-setup"])  # the filter asks the registry at each record
        try:
            raise RuntimeError("boom registered-after-setup")
        except RuntimeError:
            logger.exception("url https://x/?key=%s", "registered-after-setup")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    [record] = records
    assert record.getMessage() == "url https://x/?key=***"
    assert "registered-after-setup" not in record.exc_text and "boom ***" in record.exc_text


def test_registration_is_safe_from_threads():
    threads = [threading.Thread(target=redact.register, args=([f"secret-{i:04d}"],)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(redact.known()) == 50


# ---------------------------------------------------------------------------- caps have upper bounds
@pytest.mark.parametrize("key", [
    "risk_management.account_equity_usd", "risk_management.max_order_notional_usd",
    "risk_management.max_position_notional_usd", "risk_management.daily_loss_limit_usd",
    "risk_management.weekly_loss_limit_usd", "risk_management.max_order_quantity.BTCUSDT",
    "risk_management.max_open_positions", "risk_management.max_orders_per_minute",
    "execution.paper.starting_balance_usd", "execution.paper.spread_bps", "execution.paper.slippage_bps_per_10k_usd",
    "execution.proposal_ttl_seconds", "crew.max_runs_per_minute", "crew.cost_budget_usd_per_proposal",
    "crew.token_budget_per_proposal", "circuit_breaker.stale_data.seconds",
    "spike_detection.spike_types.liquidation_cascade.min_notional_usd", "performance.max_symbols",
    "performance.max_spike_queue_rows", "performance.decision_latency_sample", "monitoring.log_max_bytes",
    "flight_recorder.ticks_minutes", "flight_recorder.bars_minutes", "flight_recorder.after_minutes",
    "flight_recorder.max_ticks_per_symbol",
])
@pytest.mark.parametrize("value", ["1e300", str(10**300)])
def test_caps_of_1e300_are_refused(key, value):
    message = config_error(overrides=[f"{key}={value}"])
    assert message.startswith(f"--set {key}: {key}: input should be less than or equal to") or \
        message.startswith(f"--set {key}: {key}: input should be a valid integer"), message


def test_a_quantity_cap_must_be_positive():
    message = config_error(overrides=["risk_management.max_order_quantity.ETHUSDT=-1"])
    assert "risk_management.max_order_quantity.ETHUSDT: input should be greater than 0" in message


def test_the_schema_answers_with_its_own_rule(tmp_path):
    given = write(tmp_path / "given.yaml", "execution:\n  mode: live\n  auto_approve_paper: true\n")
    assert "execution: auto_approve_paper is allowed only on paper (mode is live)" in config_error(given)
