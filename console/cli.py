"""The `spikeguard` command: the console by default, and the headless subcommands.

Textual and CrewAI are imported only by the subcommands that need them, so `replay` and
`--help` start fast. Every expected failure (bad config, bad arguments, missing file)
is one line on stderr and exit code 2; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
FORCE_HELP = "open a journal whose signed head does not verify (the forced open is journaled as a warning)"


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints the whole usage otherwise)
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _speed(text: str) -> float:
    from core.market.feed import parse_speed

    try:
        return parse_speed(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected minutes as a number, got {text!r}") from None
    if not (0 < value < 10_000_000):
        raise argparse.ArgumentTypeError(f"minutes must be positive, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 1-65535, got {value}")
    return value


def _decision_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"DECISION_ID is a number (an agent_decisions id), got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"DECISION_ID must be positive, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    def common_options(suppress: bool) -> argparse.ArgumentParser:
        # subcommands repeat the global options with SUPPRESS defaults, so an option given
        # before the subcommand is not reset by the subcommand's own default
        common = argparse.ArgumentParser(add_help=False)
        dflt = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)  # noqa: E731
        common.add_argument("--config", metavar="FILE", default=dflt(None),
                            help="a YAML file layered over config/default.yaml")
        common.add_argument("--data-dir", metavar="DIR", default=dflt(None),
                            help="keep the journal, logs and user config under DIR")
        common.add_argument("--set", dest="overrides", action="append", default=dflt([]), metavar="KEY=VALUE",
                            help="override one setting, e.g. --set circuit_breaker.auto_resume=false (repeatable)")
        return common

    common = common_options(suppress=True)
    parser = _Parser(prog="spikeguard", parents=[common_options(suppress=False)],
                     description="Terminal trading console for Binance: crash circuit breaker, spike scanner, "
                                 "AI agent desk, one order gate. With no subcommand, opens the console.")
    from core import __version__, compiled

    parser.add_argument("--version", action="version",
                        version=f"spikeguard {__version__} (engine hot path: {compiled.running()})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("console", parents=[common], help="open the Textual trading console (the default)")
    p.add_argument("--feed", choices=("sim", "replay", "binance"), default=None, help="market feed (default: sim)")
    p.add_argument("--scenario", default=None, help="sim scenario (default: flash-crash)")
    p.add_argument("--seed", type=int, default=None, help="sim seed")
    p.add_argument("--speed", type=_speed, default=None, help="market time per real time: a factor, or max")
    p.add_argument("files", nargs="*", metavar="FILE", help="CSV files for --feed replay")
    p.add_argument("--symbol", metavar="SYMBOL", default=None,
                   help="with --feed replay and one FILE: its symbol, when the file name does not say it")
    p.add_argument("--db", metavar="FILE", help="the journal (default: journal.db in the data directory)")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.add_argument("--attach", metavar="URL", default=None,
                   help="share the breaker on Redis at URL (redis:// or rediss://) and show the guardian's spikes")
    p.add_argument("--shadow", action="append", default=[], metavar="FILE.yaml",
                   help="run this breaker config live as a shadow: shown, never acting (repeatable)")
    p.add_argument("--shadow-set", action="append", default=[], metavar="KEY=VALUE",
                   help="one more live shadow with these changes")
    p.add_argument("--live", action="store_true",
                   help="trade on live Binance: needs execution.mode: live, Binance keys, --feed binance, and the "
                        "account's confirmation phrase typed at start-up")
    p.add_argument("--headless-ok", action="store_true", help=argparse.SUPPRESS)  # textual-serve has no tty

    p = sub.add_parser("serve", parents=[common], help="serve the console to a browser (textual-serve)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: local only)")
    p.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    p.add_argument("--scenario", default=None, help="sim scenario for the served console")

    p = sub.add_parser("replay", parents=[common], help="run the engine headless over Binance CSV files")
    p.add_argument("--speed", type=_speed, default=0.0, help="max (default) or a factor of real time")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object to stdout")
    p.add_argument("--db", metavar="FILE", help="journal to FILE (default: a temporary database, removed after)")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.add_argument("--agents", action="store_true", help="run the agent desk (CrewAI) on every spike")
    p.add_argument("--llm", default=None, metavar="MODEL", help="with --agents: rules (default, offline) or "
                                                                  "provider/model, e.g. openai/gpt-4o-mini")
    p.add_argument("--auto-approve-paper", action="store_true",
                   help="with --agents: approve proposals on the paper exchange, to see what the desk would earn")
    p.add_argument("files", nargs="+", metavar="FILE", help="Binance kline or aggTrades CSV files")
    p.add_argument("--symbol", metavar="SYMBOL", default=None,
                   help="the symbol of a single FILE whose name does not say it (e.g. BTCUSDT)")
    p.add_argument("--shadow", action="append", default=[], metavar="FILE.yaml",
                   help="run this breaker config (circuit_breaker and protection_policy keys) as a shadow beside "
                        "the real one; a `shadows:` mapping holds several; repeatable")
    p.add_argument("--shadow-set", action="append", default=[], metavar="KEY=VALUE",
                   help="one more shadow with these changes (repeatable: together they make one shadow)")

    p = sub.add_parser("tune", parents=[common], help="sweep a grid of breaker settings over a folder of CSV files")
    p.add_argument("folder", metavar="FOLDER", help="a folder of Binance kline or aggTrades CSV files")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a breaker setting and its values (repeatable: the grid is every combination)")
    p.add_argument("--csv", metavar="FILE", default=None, help="write the scores to FILE as CSV")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object to stdout")

    p = sub.add_parser("simulate", parents=[common], help="run the engine headless over a sim scenario")
    p.add_argument("--scenario", default="flash-crash", help="calm, flash-crash, slow-bleed, pump-and-dump, "
                                                             "market-wide-crash or random")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--minutes", type=_positive_minutes, default=None, help="event time to simulate "
                                                                         "(default: the scenario's length)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object to stdout")

    p = sub.add_parser("db", parents=[common], help="the journal database")
    p.add_argument("action", choices=("init", "stats"), help="init: create (or migrate) the journal and its "
                                                             "signing key; stats: rows per table (read only)")
    p.add_argument("--db", metavar="FILE", help="the journal (default: journal.db in the data directory)")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)

    from console.incident_cli import add_parser as add_incident_parser

    add_incident_parser(sub, common)

    p = sub.add_parser("audit", parents=[common], help="tamper evidence of the journal")
    p.add_argument("action", choices=("verify",), help="verify: walk the hash chain, name the first bad row")
    p.add_argument("--db", metavar="FILE", help="the journal (default: journal.db in the data directory)")

    p = sub.add_parser("data", parents=[common], help="download historical klines from Binance (public, no key)",
                       description="Write Binance's 12-column kline CSV (what replay reads) from the live "
                                   "environment's REST API (binance.live.api_url); an existing FILE is resumed "
                                   "after its last complete row.")
    p.add_argument("action", choices=("fetch",), help="fetch: the candles opening from --start to before --end")
    p.add_argument("symbol", metavar="SYMBOL", help="e.g. BTCUSDT")
    p.add_argument("--interval", default="1m", help="candle interval, e.g. 1m (default), 5m, 1h, 1d")
    p.add_argument("--start", required=True, metavar="TIME", help="UTC date or time (2021-05-19, 2021-05-19T12:00) "
                                                                  "or epoch milliseconds")
    p.add_argument("--end", default=None, metavar="TIME", help="the same forms (default: now); not included")
    p.add_argument("-o", "--output", required=True, metavar="FILE.csv", help="the CSV to write or resume")

    p = sub.add_parser("agents", parents=[common], help="the agent desk's record: performance, decision replay")
    agents = p.add_subparsers(dest="agents_action", metavar="ACTION", parser_class=_Parser, required=True)
    q = agents.add_parser("report", parents=[common], help="agent_performance per market day (read only)")
    q.add_argument("--db", metavar="FILE", help="the journal (default: journal.db in the data directory)")
    q = agents.add_parser("replay", parents=[common], help="re-run a journaled decision's crew on its journaled "
                                                           "tool results; exit 0 when it decides the same, 1 if not")
    q.add_argument("decision_id", metavar="DECISION_ID", type=_decision_id,
                   help="an agent_decisions id (any row of the run)")
    q.add_argument("--db", metavar="FILE", help="the journal (default: journal.db in the data directory)")
    q.add_argument("--llm", default="rules", metavar="MODEL",
                   help="rules (default: offline, no network) or provider/model, e.g. openai/gpt-4o-mini")

    from console.shared import add_parsers

    add_parsers(sub, common, _speed)

    p = sub.add_parser("config", parents=[common], help="check or show the effective configuration")
    p.add_argument("action", choices=("check", "show", "paths"), help="check: validate; show: print the merged "
                                                                      "settings (secrets masked); paths: files used")
    return parser


def _load(args: argparse.Namespace, paths: Any) -> Any:
    from core.config import load_config

    return load_config(
        args.config, user_config=paths.user_config_file, overrides=args.overrides,
        dotenv_paths=[Path.cwd() / ".env", paths.user_dotenv],
    )


def _setup_logs(loaded: Any, paths: Any) -> None:
    from core.logs import setup_logging
    from core.paths import DataDirError

    paths.ensure(paths.log_dir)
    m = loaded.settings.monitoring
    try:
        setup_logging(paths.log_file, m.log_level, m.log_max_bytes, m.log_backups)
    except OSError as exc:
        raise DataDirError(f"{paths.log_file}: cannot open the log file: {exc.strerror or exc}") from None


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    """The command's exit code. Nothing but one line per failure reaches the terminal:
    2 for usage, path and config errors, 1 for anything unexpected (its traceback goes
    to the log file, or to a private file in the temp directory when there is none yet)."""
    import os

    from core import logs
    from core.config import ConfigError, register_secrets
    from core.paths import AppPaths, DataDirError
    from core.redact import one_line

    logs.hold_early_records()
    register_secrets(os.environ)  # now, so that even a crash before the config is loaded cannot print a key
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    paths = None
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            args = parser.parse_args([*argv, "console"])
        paths = AppPaths.resolve(args.data_dir)
        loaded = _load(args, paths)
        _setup_logs(loaded, paths)
        code = _COMMANDS[args.command](args, loaded, paths)
        sys.stdout.flush()  # a closed pipe fails here, in the handler below, not at exit
        return code
    except (UsageError, DataDirError) as exc:
        print(one_line(f"error: {exc}"), file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(one_line(f"config error: {exc}"), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away: point stdout at /dev/null so the flush at exit does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as exc:  # the last line of defence: one line here, the traceback in the log
        written = logs.write_crash(exc, paths.log_file if paths else None)
        where = f"traceback in {written}" if written else "no log file could be written"
        print(one_line(f"error: {type(exc).__name__}: {exc} ({where})"), file=sys.stderr)
        return EXIT_FAILED


# ---------------------------------------------------------------------------- subcommands
def cmd_config(args: argparse.Namespace, loaded: Any, paths: Any) -> int:
    import yaml

    from core.config import redacted_dump
    from core.redact import mask

    if args.action == "check":
        print(mask(f"config ok: {' + '.join(loaded.sources)}"))
    elif args.action == "show":  # secrets are masked by key; mask() also catches one pasted into another setting
        print(mask(yaml.safe_dump(redacted_dump(loaded.settings), sort_keys=False)), end="")
    else:
        print(f"data dir:    {paths.data_dir}\nconfig dir:  {paths.config_dir}\nuser config: "
              f"{paths.user_config_file}\nlog file:    {paths.log_file}\njournal:     {paths.journal}")
    return EXIT_OK


def _db_path(args: argparse.Namespace, paths: Any) -> Path:
    if getattr(args, "db", None):
        return Path(args.db).expanduser()
    paths.ensure()
    return paths.journal


def journal_choice(args: argparse.Namespace, paths: Any, path: Path | None = None) -> Any:
    """The journal a command writes, with the installation's signing key (created at first use)."""
    from core.journal import JournalError
    from core.wiring import JournalChoice

    paths.ensure(paths.config_dir)
    try:
        return JournalChoice.signed(path or _db_path(args, paths), paths.config_dir, getattr(args, "force", False))
    except JournalError as exc:
        raise UsageError(str(exc)) from None


def cmd_db(args: argparse.Namespace, loaded: Any, paths: Any) -> int:
    from core.journal import SCHEMA_VERSION, Journal, JournalError, read_counts

    path = _db_path(args, paths)
    try:
        if args.action == "stats":  # read only: works beside a running console, which holds the journal's lock
            if not path.exists():
                raise UsageError(f"{path}: no journal here (create one with: spikeguard db init --db {path})")
            for table, n in read_counts(path).items():
                print(f"{table:<24} {n}")
            return EXIT_OK
        choice = journal_choice(args, paths, path)

        async def init() -> int:
            journal = await Journal.open(choice.path, key=choice.key, force=choice.force)
            try:
                return sum((await journal.counts()).values())
            finally:
                await journal.close()

        rows = asyncio.run(init())
    except JournalError as exc:
        raise UsageError(str(exc)) from None
    print(f"journal ready: {path} (schema version {SCHEMA_VERSION}, {rows} rows, head signed with "
          f"{paths.config_dir / 'journal.key'})")
    return EXIT_OK


def cmd_incident(args: argparse.Namespace, loaded: Any, paths: Any) -> int:
    from console.incident_cli import check_args, run
    from core.incident import IncidentError

    problem = check_args(args)
    if problem:
        raise UsageError(problem)
    try:
        return run(args, _db_path(args, paths))
    except IncidentError as exc:
        raise UsageError(str(exc)) from None


def cmd_audit(args: argparse.Namespace, loaded: Any, paths: Any) -> int:
    """Walk the hash chain; with the installation's key (never created here), check the head's
    signature too. A signed journal without its key cannot be vouched for."""
    from core.journal import JournalError, load_or_create_key, verify
    from core.journal.keys import key_path

    path = _db_path(args, paths)
    if not path.exists():
        raise UsageError(f"{path}: no journal here")
    key_file = key_path(paths.config_dir)
    try:
        key = load_or_create_key(paths.config_dir) if key_file.exists() else None
        result = verify(path, key)
    except JournalError as exc:
        raise UsageError(str(exc)) from None
    signed = bool((result.head or {}).get("head_signature"))
    if result.ok and key is None and signed:
        print(f"audit FAILED: {path}: the head is signed but there is no key at {key_file} to check it")
        return EXIT_FAILED
    if result.ok:
        how = "signed head verified" if key is not None else f"head not signed (no key at {key_file})"
        print(f"audit ok: {path}: {result.rows_checked} rows, hash chain intact, {how}, integrity_check ok")
        return EXIT_OK
    bad = result.first_bad or {}
    print(f"audit FAILED: {path}: first bad row: table {bad.get('table')} id {bad.get('id')} "
          f"chain_seq {bad.get('chain_seq')}: {bad.get('problem')}")
    return EXIT_FAILED


def cmd_replay(args: argparse.Namespace, loaded: Any, paths: Any) -> int:
    from core.wiring import FeedChoice

    if (args.llm or args.auto_approve_paper) and not args.agents:
        raise UsageError("--llm and --auto-approve-paper need --agents")
    if args.force and not args.db:
        raise UsageError("--force is for a journal given with --db")
    built = _feed(loaded, FeedChoice(kind="replay", files=args.files, symbol=args.symbol, speed=args.speed))
    if args.auto_approve_paper:
        from core.config import ConfigError

        if loaded.settings.execution.mode not in ("paper", "auto"):  # a replay trades on paper
            raise ConfigError(f"--auto-approve-paper: execution.mode is {loaded.settings.execution.mode}, "
                              f"auto-approval is allowed only on paper")
        loaded.settings = loaded.settings.model_copy(update={"execution": loaded.settings.execution.model_copy(
            update={"auto_approve_paper": True})})
    journal = journal_choice(args, paths) if args.db else None
    from core.shadow import load_shadows

    shadows = load_shadows(loaded.settings, [Path(f) for f in args.shadow], args.shadow_set)
    return _run_headless(args, loaded, built.feed, title=", ".join(Path(f).name for f in args.files),
                         journal=journal, shadows=shadows)


def cmd_tune(args: argparse.Namespace, loaded: Any, paths: Any) -> int:
    from console.tuning import TuneError, csv_files, parse_grid, print_tune, sweep, write_csv

    try:
        grid = parse_grid(args.grid)
        files = csv_files(Path(args.folder))
        scores = sweep(loaded.settings, files, grid, progress=None if args.json or not sys.stderr.isatty() else
                       lambda n, path: print(f"[{n + 1}/{len(files)}] {path.name}", file=sys.stderr))
        if args.csv:
            write_csv(scores, Path(args.csv))
    except TuneError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        import orjson

        sys.stdout.buffer.write(orjson.dumps({"files": [p.name for p in files],
                                              "points": [s.row() for s in scores]}) + b"\n")
        sys.stdout.flush()
    else:
        from rich.console import Console

        print_tune(scores, len(files), Console())
        if args.csv:
            print(f"scores written to {args.csv}")
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace, loaded: Any, paths: Any) -> int:
    from core.market.feed import MAX_SPEED
    from core.market.sim import SCENARIO_LENGTH_S
    from core.wiring import FeedChoice

    minutes = args.minutes * 60 if args.minutes is not None else SCENARIO_LENGTH_S.get(args.scenario)
    built = _feed(loaded, FeedChoice(kind="sim", scenario=args.scenario, seed=args.seed, speed=MAX_SPEED,
                                     duration_s=minutes))
    return _run_headless(args, loaded, built.feed, title=f"sim {args.scenario} seed {args.seed}")


def _feed(loaded: Any, choice: Any) -> Any:
    from core.wiring import WiringError, build_feed

    try:
        return build_feed(loaded.settings, choice)
    except WiringError as exc:
        raise UsageError(str(exc)) from None


def _run_headless(args: argparse.Namespace, loaded: Any, feed: Any, title: str, journal: Any = None,
                  shadows: list | None = None) -> int:
    """Run, print the report, and fail (exit 1, one line) when the journal could not keep it."""
    from core.headless import run_headless
    from core.journal import JournalError
    from core.redact import one_line

    progress_cb, finish = _progress(feed) if sys.stderr.isatty() and not getattr(args, "json", False) else (None, None)
    try:
        _session, report = asyncio.run(run_headless(
            loaded.settings, feed, progress=progress_cb, agents=getattr(args, "agents", False),
            llm=getattr(args, "llm", None), db_path=journal.path if journal else None,
            journal_key=journal.key if journal else None, journal_force=journal.force if journal else False,
            provider_errors=lambda line: print(one_line(f"provider error: {line}", 300), file=sys.stderr),
            shadows=shadows))
    except JournalError as exc:
        raise UsageError(str(exc)) from None
    finally:
        if finish:
            finish()
    if args.json:
        import orjson

        sys.stdout.buffer.write(orjson.dumps(report) + b"\n")
        sys.stdout.flush()
    else:
        from console.report import print_report

        print_report(report, title)
    failure = report["stats"].get("journal_error")
    if failure:
        print(one_line(f"error: the run's journal is incomplete: {failure}"), file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _progress(feed: Any):
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from core.events import iso_utc

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                        console=Console(stderr=True), transient=True)
    task = progress.add_task("replaying", total=None)
    progress.start()

    def update(engine: Any) -> None:
        progress.update(task, description=f"{engine.ticks:,} ticks  market time {iso_utc(feed.stats.last_event_ms)}"
                                          f"  breaker {engine.breaker.status.value}")

    return update, progress.stop


def cmd_serve(args: argparse.Namespace, loaded: Any, paths: Any) -> int:
    """Each browser tab gets its own console process, with the same options as this command."""
    import shlex

    from console.serve import ConsoleServer

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}: anyone who can reach it controls the breaker", file=sys.stderr)
    command = [sys.executable, "-m", "console.cli"]
    if args.config:
        command += ["--config", args.config]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    for item in args.overrides:
        command += ["--set", item]
    command += ["console", "--headless-ok"]
    if args.scenario:
        command += ["--scenario", args.scenario]
    ConsoleServer(shlex.join(command), host=args.host, port=args.port, title="spikeguard").serve()
    return EXIT_OK


def cmd_data(args: argparse.Namespace, loaded: Any, paths: Any) -> int:
    """Download klines into a CSV; a failure mid-way leaves complete rows that the same command resumes."""
    import logging
    import time

    from aiohttp import ClientError
    from binance.exceptions import BinanceAPIException, BinanceRequestException

    from core.binance.client import open_client
    from core.events import iso_utc
    from core.market.binance_messages import ProblemTally
    from core.market.history import BadArgument, HistoryError, fetch_csv, interval_ms, parse_time, progress_bar
    from core.market.symbols import check_symbol
    from core.redact import one_line

    try:
        symbol = check_symbol(args.symbol)
        interval_ms(args.interval)
        start = parse_time(args.start, "--start")
        end = parse_time(args.end, "--end") if args.end else time.time_ns() // 1_000_000
    except (ValueError, BadArgument) as exc:
        raise UsageError(str(exc)) from None
    output = Path(args.output).expanduser()
    if not output.parent.is_dir():
        raise UsageError(f"{output.parent}: no such directory")
    binance = loaded.settings.binance
    tally = ProblemTally(f"data fetch {symbol}", logging.getLogger("spikeguard.data"))

    async def fetch() -> Any:
        client = await open_client(binance, binance.live)
        try:
            with progress_bar(f"{symbol} {args.interval}") as on_rows:
                return await fetch_csv(client, symbol, args.interval, start, end, output, tally, on_rows)
        finally:
            await client.close_connection()

    try:
        done = asyncio.run(fetch())
    except BadArgument as exc:
        raise UsageError(str(exc)) from None
    except (HistoryError, BinanceAPIException, BinanceRequestException, ClientError, OSError) as exc:
        kept = f" (the same command resumes after the complete rows in {output})" if output.exists() else ""
        print(one_line(f"error: {exc or type(exc).__name__}{kept}"), file=sys.stderr)
        return EXIT_FAILED
    resumed = f", resumed after {iso_utc(done.resumed_after_ms)}" if done.resumed_after_ms is not None else ""
    last = f", the last opening {iso_utc(done.last_open_ms)}" if done.last_open_ms is not None else ""
    print(f"{symbol} {args.interval}: {done.rows} candles written to {output}{resumed}{last}")
    bad = sum(tally.counts.values())
    if bad:
        print(one_line(f"warning: {bad} malformed klines skipped ({', '.join(sorted(tally.counts))}; the first "
                       f"of each is in the log)"), file=sys.stderr)
    return EXIT_OK


def cmd_agents(args: argparse.Namespace, loaded: Any, paths: Any) -> int:
    """`agents report`: the agent_performance table; `agents replay`: a decision re-run on its
    journaled tool results. Both read the journal only, so they work beside a running console."""
    path = _db_path(args, paths)
    if args.agents_action == "report":
        return _agents_report(path)
    return _agents_replay(args, loaded, paths, path)


def _agents_report(path: Path) -> int:
    from core.journal import JournalError
    from core.journal.reports import agent_performance

    try:
        rows = agent_performance(path)
    except JournalError as exc:
        raise UsageError(str(exc)) from None
    if not rows:
        print(f"no agent performance in {path} yet: it is written once a spike's outcome has been measured")
        return EXIT_OK
    print(f"agent performance per market day (UTC), {path}")
    print(f"{'period':<11} {'agent':<18} {'decisions':>9} {'TP':>4} {'FP':>4} {'FN':>4} {'TN':>4} "
          f"{'accuracy':>9} {'avg conf':>9}")
    for r in rows:
        acc = f"{r['accuracy_percent']:.1f}%" if r.get("accuracy_percent") is not None else "-"
        conf = f"{r['avg_confidence']:.2f}" if r.get("avg_confidence") is not None else "-"
        print(f"{r['period'] or '-':<11} {r['agent_name']:<18} {r['total_decisions'] or 0:>9} "
              f"{r['true_positives'] or 0:>4} {r['false_positives'] or 0:>4} {r['false_negatives'] or 0:>4} "
              f"{r['true_negatives']:>4} {acc:>9} {conf:>9}")
    return EXIT_OK


def _agents_replay(args: argparse.Namespace, loaded: Any, paths: Any, path: Path) -> int:
    from core.agents.decision_replay import ReplayError, load_run, replay

    try:
        journaled = load_run(path, args.decision_id)
    except ReplayError as exc:
        raise UsageError(str(exc)) from None
    try:
        result = asyncio.run(replay(journaled, loaded.settings, args.llm, paths.data_dir / "crewai"))
    except ValueError as exc:  # a model that cannot be built (no provider/model, a missing SDK)
        raise UsageError(f"--llm {args.llm}: {exc}") from None
    what = (f"spike {journaled.spike.get('symbol')} {journaled.spike.get('direction')}" if journaled.spike
            else "guardian check")
    print(f"decision {journaled.decision_id}: run {journaled.run_id} ({what}), journaled with model "
          f"{journaled.model or 'unknown'}, replayed with {result.model} on {result.answered} journaled tool results"
          + (f" ({result.mismatched} with other arguments)" if result.mismatched else "")
          + (f", {result.missing} calls not in the journal" if result.missing else ""))
    print(f"{'agent':<18} {'journaled':<24} {'replayed':<24}")
    for row in result.rows:
        print(f"{row.agent:<18} {row.journaled or '-':<24} {row.replayed or '-':<24} "
              f"{'same' if row.same else 'DIFFERENT'}")
    if result.abort_reason:
        print(f"the replay stopped: {result.abort_reason}")
    agree = sum(r.same for r in result.rows)
    print(f"{'same decision' if result.same else 'different decision'}: {agree} of {len(result.rows)} agents agree")
    return EXIT_OK if result.same else EXIT_FAILED


def cmd_console(args: argparse.Namespace, loaded: Any, paths: Any) -> int:
    from console.launch import launch_console

    journal = journal_choice(args, paths)
    return launch_console(args, loaded, paths, journal)


def cmd_breaker(args: argparse.Namespace, loaded: Any, paths: Any) -> int:
    from console.shared import breaker_command, check_breaker_args

    problem = check_breaker_args(args)
    if problem:
        raise UsageError(problem)
    return breaker_command(args, loaded)


def cmd_guardian(args: argparse.Namespace, loaded: Any, paths: Any) -> int:
    from console.shared import guardian_command

    return guardian_command(args, loaded, journal_choice(args, paths))


_COMMANDS = {"config": cmd_config, "replay": cmd_replay, "simulate": cmd_simulate, "console": cmd_console,
             "db": cmd_db, "audit": cmd_audit, "serve": cmd_serve, "data": cmd_data, "agents": cmd_agents,
             "breaker": cmd_breaker, "guardian": cmd_guardian, "tune": cmd_tune,
             "incident": cmd_incident}


if __name__ == "__main__":
    main()
