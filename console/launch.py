"""Start the console (a later issue fills it in)."""

from __future__ import annotations

import sys
from typing import Any


def launch_console(args: Any, loaded: Any, paths: Any) -> int:
    print("the Textual console is not built yet; use `spikeguard replay` or `spikeguard simulate`",
          file=sys.stderr)
    return 2
