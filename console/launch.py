"""Build a session from the command line and run the console on it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from core.market.feed import MAX_SPEED


class LaunchError(Exception):
    """A one-line reason the console cannot start (bad feed choice, missing files)."""


def build_feed(args: Any, settings: Any):
    feed_name = args.feed or settings.testing.feed
    sim = settings.testing.sim
    if feed_name == "binance":
        raise LaunchError("--feed binance is not available yet: it arrives with the Binance issue; "
                          "use --feed sim or --feed replay FILE...")
    speed = args.speed if args.speed is not None else None
    if feed_name == "replay":
        from core.market.replay import ReplayFeed, ReplayInputError

        if not args.files:
            raise LaunchError("--feed replay needs CSV files: spikeguard console --feed replay FILE...")
        try:
            feed = ReplayFeed(args.files, speed=speed if speed is not None else 60.0,
                              symbol=getattr(args, "symbol", None))
        except ReplayInputError as exc:
            raise LaunchError(str(exc)) from None
        label = "replay " + " ".join(s.symbol for s in feed.sources)
    else:
        from core.market.sim import SimFeed

        if args.files or getattr(args, "symbol", None):
            raise LaunchError("files and --symbol are only for --feed replay")
        scenario = args.scenario or sim.scenario
        try:
            feed = SimFeed(scenario=scenario, seed=args.seed if args.seed is not None else sim.seed,
                           tick_interval_ms=sim.tick_interval_ms,
                           speed=speed if speed is not None else sim.speed)
        except ValueError as exc:
            raise LaunchError(str(exc)) from None
        label = f"sim {scenario}"
    speed_label = "max" if feed.speed == MAX_SPEED else f"{feed.speed:g}x"
    return feed, label, speed_label


def launch_console(args: Any, loaded: Any, paths: Any) -> int:
    settings = loaded.settings
    try:
        feed, label, speed_label = build_feed(args, settings)
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not sys.stdout.isatty() and not getattr(args, "headless_ok", False):
        print("error: the console needs a terminal (use `spikeguard replay` or `simulate` headless)",
              file=sys.stderr)
        return 2
    from console.app import SpikeguardApp
    from core.session import Session

    paths.ensure()
    journal_path = Path(args.db).expanduser() if getattr(args, "db", None) else paths.journal
    session = Session(settings, feed, journal_path=journal_path)
    served = getattr(args, "headless_ok", False)  # under textual-serve: no tty for the watchdog to watch
    app = SpikeguardApp(session, feed_label=label, speed_label=speed_label, journal_label=_short(journal_path),
                        watch_tty=not served, agents_dir=paths.data_dir / "crewai")
    code = app.run()
    return int(code or 0)


def _short(path: Path) -> str:
    home = Path.home()
    try:
        return "~/" + str(path.resolve().relative_to(home))
    except ValueError:
        return str(path)
