"""The reasoning pane: the decision trail as it streams, each line tagged with its role."""

from __future__ import annotations

from datetime import datetime, timezone

from rich.text import Text
from textual.widgets import RichLog

from core.events import ReasoningLine

ROLE_STYLES = {"guardian": "bold magenta", "scanner": "bold cyan", "desk": "bold yellow", "operator": "bold white",
               "Market Guardian": "bold magenta", "Market Scanner": "bold cyan", "Context Analyzer": "bold blue",
               "Risk Assessment": "bold yellow", "Strategy Executor": "bold green"}
KIND_MARKS = {"tool_call": "→", "tool_result": "←", "thought": "…", "answer": "✔", "reason": "•", "error": "✖"}


class ReasoningLog(RichLog):
    DEFAULT_CSS = """
    ReasoningLog { height: 1fr; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(max_lines=2000, wrap=True, markup=False, highlight=False, min_width=20, **kwargs)

    def add_line(self, line: ReasoningLine) -> None:
        when = datetime.fromtimestamp(line.time_ms / 1000, timezone.utc).strftime("%H:%M:%S")
        t = Text()
        t.append(f"{when} ", style="grey50")
        t.append(f"[{line.role}] ", style=ROLE_STYLES.get(line.role, "bold"))
        t.append(f"{KIND_MARKS.get(line.kind, '•')} ", style="grey70")
        t.append(line.text, style="red" if line.kind == "error" else "")
        self.write(t)
