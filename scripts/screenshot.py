"""Regenerate docs/screenshot.svg: the real default, as `make run` shows it.

It runs the same command `make run` runs (`.venv/bin/spikeguard`: the sim's flash crash at
its default speed, the paper exchange, the offline crew, SQLite) in tmux at 140x40, with a
throwaway HOME and data directory, waits until the breaker has TRIGGERED and the desk has had
a few seconds more, and turns the terminal's cells (colours included) into an SVG with Rich.

Run: .venv/bin/python scripts/screenshot.py [--wait-for TEXT] [--settle SECONDS]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.text import Text

ROOT = Path(__file__).resolve().parent.parent
SIZE = (140, 40)
TIMEOUT_S = 180.0


def capture(socket: str) -> str:
    return subprocess.run(["tmux", "-L", socket, "capture-pane", "-p", "-e"], capture_output=True, text=True,
                          timeout=10).stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wait-for", default="TRIGGERED", help="text on screen before the settle (default TRIGGERED)")
    parser.add_argument("--settle", type=float, default=6.0, help="seconds after it appears (default 6)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.svg")
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        print("error: tmux is needed (make system-deps installs it)", file=sys.stderr)
        return 2
    spikeguard = ROOT / ".venv" / "bin" / "spikeguard"
    if not spikeguard.exists():
        print("error: no .venv: run `make venv` first", file=sys.stderr)
        return 2
    socket = f"sg-shot-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="spikeguard-shot-") as home:
        env = f"-u COLUMNS -u LINES TERM=xterm-256color COLORTERM=truecolor HOME={home} XDG_CONFIG_HOME={home}/cfg " \
              f"XDG_DATA_HOME={home}/data"
        subprocess.run(["tmux", "-L", socket, "new-session", "-d", "-x", str(SIZE[0]), "-y", str(SIZE[1]),
                        "-c", str(ROOT), f"env {env} {spikeguard}; sleep 60"], check=True, timeout=10)
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while args.wait_for not in capture(socket):
                if time.monotonic() > deadline:
                    print(f"error: {args.wait_for!r} did not appear in {TIMEOUT_S:g}s", file=sys.stderr)
                    return 1
                time.sleep(0.2)
            time.sleep(args.settle)
            screen = capture(socket)
        finally:
            subprocess.run(["tmux", "-L", socket, "send-keys", "q"], capture_output=True, timeout=10)
            time.sleep(1.0)
            subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=10)
    console = Console(record=True, width=SIZE[0], height=SIZE[1], file=open("/dev/null", "w"),  # noqa: SIM115
                      color_system="truecolor", force_terminal=True)
    for line in screen.rstrip("\n").split("\n")[:SIZE[1]]:
        console.print(Text.from_ansi(line), no_wrap=True, crop=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    console.save_svg(str(args.out), title="spikeguard (make run)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
