"""The real `spikeguard` command under hostile files and failures: one line on stderr, no
traceback, exit 2 for usage and config errors and 1 for the unexpected, and it ends
(each run is under a subprocess timeout far below what a hang or an alias bomb takes)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

QUICK = 60  # seconds: the command starts in about one; a hang or a bomb would run on
# nine levels of nine aliases each: 9**9 strings once expanded (gigabytes), ten lines as text
ALIAS_BOMB = "a: &a [" + ", ".join(["lol"] * 9) + "]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi"))


def one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


# ---------------------------------------------------------------------------- hostile --config
@pytest.mark.parametrize("name, text, fragment", [
    ("bomb.yaml", ALIAS_BOMB, "aliases (*a) are not allowed"),
    ("self.yaml", "circuit_breaker: &loop\n  recovery: *loop\n", "aliases (*loop) are not allowed"),
    ("deep.yaml", "[" * 5000 + "]" * 5000 + "\n", "nested deeper than"),
    ("deep-map.yaml", "a: " + "{b: " * 5000 + "1" + "}" * 5000 + "\n", "nested deeper than"),
], ids=["alias-bomb", "self-alias", "deep-lists", "deep-maps"])
def test_yaml_bombs_end_at_once_with_one_line(tmp_path, name, text, fragment):
    bad = private(tmp_path / name, text)
    line = one_line(run_cli("--config", str(bad), "config", "check", timeout=QUICK), 2)
    assert line.startswith(f"config error: {bad}: ") and fragment in line


def test_a_fifo_as_config_does_not_hang(tmp_path):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    line = one_line(run_cli("--config", str(fifo), "config", "check", timeout=QUICK), 2)
    assert line == f"config error: {fifo}: is a FIFO, not a regular file"


def test_dev_zero_as_config_is_refused_before_it_is_read():
    line = one_line(run_cli("--config", "/dev/zero", "config", "check", timeout=QUICK), 2)
    assert line == "config error: /dev/zero: is a character device, not a regular file"


def test_a_fifo_named_by_the_environment_does_not_hang(tmp_path):
    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)
    line = one_line(run_cli("config", "check", env={"CREWAI_CONFIG_PATH": str(fifo)}, timeout=QUICK), 2)
    assert f"{fifo} (from CREWAI_CONFIG_PATH): is a FIFO" in line


def test_caps_of_1e300_are_refused(tmp_path):
    bad = private(tmp_path / "caps.yaml", "risk_management:\n  max_order_notional_usd: 1e300\n")
    line = one_line(run_cli("--config", str(bad), "config", "check", timeout=QUICK), 2)
    assert f"{bad}: risk_management.max_order_notional_usd: input should be less than or equal to" in line


@pytest.mark.parametrize("text, args, fragment", [
    ("execution:\n  mode: live\n", ["--feed", "binance"], "execution.mode: live also needs the --live flag"),
    ("execution:\n  mode: testnet\n", ["--feed", "binance"], "execution.mode: testnet needs BINANCE_API_KEY"),
    ("execution:\n  mode: testnet\n", [], "execution.mode: testnet trades on Binance: it needs --feed binance"),
    ("execution:\n  mode: paper\n", ["--feed", "binance", "--live"], "--live needs execution.mode: live"),
])
def test_a_binance_venue_that_cannot_be_built_does_not_start(tmp_path, text, args, fragment):
    """Refused before any screen or connection: no LIVE or TESTNET badge over a venue that is not there."""
    given = private(tmp_path / "given.yaml", text)
    line = one_line(run_cli("--data-dir", str(tmp_path / "data"), "--config", str(given), "console", *args,
                            env={"BINANCE_API_KEY": "", "BINANCE_SECRET_KEY": ""}, timeout=QUICK), 2)
    assert line == f"error: {fragment}" or line.startswith(f"error: {fragment}")


# ---------------------------------------------------------------------------- .env files
def test_a_binary_dotenv_is_one_line(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_bytes(os.urandom(64) + b"\xff\xfe\x00")
    dotenv.chmod(0o600)
    line = one_line(run_cli("config", "check", cwd=tmp_path, timeout=QUICK), 2)
    assert line.startswith(f"config error: {dotenv}: is not UTF-8 text")


@pytest.mark.parametrize("mode", [0o644, 0o666], ids=oct)
def test_a_dotenv_holding_keys_that_others_may_read_is_refused(tmp_path, mode):
    dotenv = private(tmp_path / ".env", "BINANCE_API_KEY=live-key-0001\nBINANCE_SECRET_KEY=live-secret-0001\n", mode)
    result = run_cli("config", "show", cwd=tmp_path, timeout=QUICK)
    line = one_line(result, 2)
    assert line.endswith(f"(mode {mode:o}): run chmod 600 {dotenv}")
    assert "live-key-0001" not in result.stderr + result.stdout


def test_the_user_dotenv_is_checked_too(tmp_path):
    (tmp_path / "config").mkdir()
    dotenv = private(tmp_path / "config" / ".env", "OPENAI_API_KEY=sk-user-dotenv-1\n", 0o640)
    line = one_line(run_cli("--data-dir", str(tmp_path), "config", "check", timeout=QUICK), 2)
    assert line.endswith(f"run chmod 600 {dotenv}")
    dotenv.chmod(0o600)
    ok = run_cli("--data-dir", str(tmp_path), "config", "check", timeout=QUICK)
    assert ok.returncode == 0 and ok.stderr == ""


def test_a_secret_is_not_echoed_as_another_keys_bad_value(tmp_path):
    secret = "sk-echo-test-0001"
    private(tmp_path / ".env", f"OPENAI_API_KEY={secret}\nREDIS_PORT={secret}\n")
    result = run_cli("config", "check", cwd=tmp_path, timeout=QUICK)
    line = one_line(result, 2)
    assert line == "config error: REDIS_PORT (.env): redis.port: input should be a valid integer, unable to parse " \
                   "string as an integer, got '***'"
    env_result = run_cli("--set", f"redis.host={secret}", "--set", f"redis.port={secret}", "config", "check",
                         env={"BINANCE_API_KEY": secret}, timeout=QUICK)
    assert secret not in one_line(env_result, 2)


# ---------------------------------------------------------------------------- --data-dir
def test_data_dir_that_is_a_file(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    line = one_line(run_cli("--data-dir", str(afile), "config", "check", timeout=QUICK), 2)
    assert line == f"error: --data-dir {afile}: is not a directory"
    line = one_line(run_cli("--data-dir", str(afile / "sub"), "replay", "x.csv", timeout=QUICK), 2)
    assert line == f"error: --data-dir {afile / 'sub'}: {afile} is not a directory"


def test_data_dir_whose_log_folder_is_a_file(tmp_path):
    (tmp_path / "logs").write_text("")
    line = one_line(run_cli("--data-dir", str(tmp_path), "config", "check", timeout=QUICK), 2)
    assert line == f"error: {tmp_path / 'logs'}: is not a directory"


def test_a_data_dir_that_does_not_exist_yet_is_created(tmp_path):
    result = run_cli("--data-dir", str(tmp_path / "new" / "dir"), "config", "check", timeout=QUICK)
    assert result.returncode == 0 and (tmp_path / "new" / "dir" / "logs" / "spikeguard.log").is_file()


# ---------------------------------------------------------------------------- the unexpected
def run_patched(tmp_path: Path, patch: str, *args: str, env: dict[str, str] | None = None):
    """The real entry point (console.cli.main) in a child process, after `patch` made
    something inside it fail the way no input can today."""
    code = textwrap.dedent("""
        import sys
        import console.cli as cli
        import core.config
        import core.paths
        {patch}
        cli.main(sys.argv[1:])
    """).format(patch=textwrap.dedent(patch).strip())
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=QUICK)


SECRET = "sk-crash-secret-0001"
RAISE = f"""
def boom(*a, **k):
    raise RuntimeError("first line\\nsecond line with {SECRET}")
"""


def test_a_crash_after_logging_is_one_line_and_the_traceback_in_the_log(tmp_path):
    result = run_patched(tmp_path, RAISE + "cli._COMMANDS['config'] = boom", "--data-dir", str(tmp_path),
                         "config", "check", env={"OPENAI_API_KEY": SECRET})
    line = one_line(result, 1)
    log_file = tmp_path / "logs" / "spikeguard.log"
    assert line == f"error: RuntimeError: first line second line with *** (traceback in {log_file})"
    text = log_file.read_text()
    assert "Traceback" in text and "RuntimeError: first line" in text and SECRET not in text


def test_a_crash_before_logging_still_writes_its_traceback(tmp_path):
    result = run_patched(tmp_path, RAISE + "core.config.load_config = boom", "--data-dir", str(tmp_path),
                         "config", "check", env={"OPENAI_API_KEY": SECRET})
    line = one_line(result, 1)
    log_file = tmp_path / "logs" / "spikeguard.log"
    assert line.endswith(f"(traceback in {log_file})")
    assert "Traceback" in log_file.read_text() and SECRET not in log_file.read_text()


def test_a_crash_with_nowhere_to_log_goes_to_a_private_temp_file(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    result = run_patched(tmp_path, RAISE + "core.paths.AppPaths.resolve = boom", "config", "check",
                         env={"TMPDIR": str(temp)})
    line = one_line(result, 1)
    [crash] = list(temp.glob("spikeguard-crash-*.log"))
    assert line.endswith(f"(traceback in {crash})")
    assert "Traceback" in crash.read_text() and (crash.stat().st_mode & 0o077) == 0


def test_records_and_thread_crashes_before_and_after_setup_stay_off_the_terminal(tmp_path):
    patch = """
    import logging, threading
    real_load = core.config.load_config
    def noisy_load(*a, **k):
        logging.getLogger("spikeguard.early").warning("an early warning")
        return real_load(*a, **k)
    core.config.load_config = noisy_load
    def crashing_thread(args, loaded, paths):
        t = threading.Thread(target=lambda: 1 / 0, name="worker-7")
        t.start()
        t.join()
        return 0
    cli._COMMANDS["config"] = crashing_thread
    """
    result = run_patched(tmp_path, patch, "--data-dir", str(tmp_path), "config", "check")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    text = (tmp_path / "logs" / "spikeguard.log").read_text()
    assert "an early warning" in text
    assert "uncaught exception in thread worker-7" in text and "ZeroDivisionError" in text


@pytest.mark.parametrize("action", ["check", "show"])  # output shorter and longer than the stdout buffer
def test_a_closed_stdout_is_exit_1_without_a_traceback(tmp_path, action):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as in a shell pipeline
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to stdout fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "console.cli", "--data-dir", str(tmp_path), "config", action],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env, timeout=QUICK)
    finally:
        os.close(write_end)
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr
