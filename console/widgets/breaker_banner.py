"""The breaker banner: the state in its colour, the reason, the epoch, time in state,
what the state blocks, and who set it. The state is always spelled out, never colour only.
A transition not yet on disk says "saving…"; a journal that cannot write says JOURNAL FAILING."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import Static

from core.breaker.machine import STATE_POLICY
from core.events import BreakerStatus

STATE_CLASSES = {s: f"-{s.value.lower()}" for s in BreakerStatus}
ICONS = {BreakerStatus.SAFE: "●", BreakerStatus.WARNING: "▲", BreakerStatus.TRIGGERED: "■",
         BreakerStatus.RECOVERING: "◆"}


@dataclass(frozen=True)
class BannerState:
    status: BreakerStatus
    reason: str
    epoch: int
    seconds_in_state: float
    actor: str
    saving: bool = False  # the transition is not on disk yet
    journal_failing: str | None = None  # why the journal cannot write (new entries are blocked)


def fmt_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class BreakerBanner(Static):
    DEFAULT_CSS = """
    BreakerBanner { height: auto; min-height: 1; max-height: 2; padding: 0 1; text-overflow: ellipsis; }
    BreakerBanner.-safe { background: $success-darken-2; color: $text; }
    BreakerBanner.-warning { background: #b58900; color: black; }
    BreakerBanner.-triggered { background: $error; color: white; text-style: bold; }
    BreakerBanner.-recovering { background: #1f6feb; color: white; }
    /* without colour (NO_COLOR) the states still look different: reverse video for a halt,
       underline for a warning, italic for recovery, and a patterned edge */
    BreakerBanner.-mono.-triggered { text-style: bold reverse; border-left: heavy white; }
    BreakerBanner.-mono.-warning { text-style: bold underline; border-left: double white; }
    BreakerBanner.-mono.-recovering { text-style: italic; border-left: dashed white; }
    BreakerBanner.-mono.-safe { border-left: blank; }
    """

    def on_mount(self) -> None:
        self.set_class(bool(getattr(self.app, "no_color", False)), "-mono")

    def show(self, state: BannerState) -> None:
        for status, cls in STATE_CLASSES.items():
            self.set_class(status is state.status, cls)
        text = Text()
        text.append(f"{ICONS[state.status]} {state.status.value}", style="bold")
        if state.saving:
            text.append(" saving…", style="bold reverse")
        if state.journal_failing:
            text.append(" │ ")
            text.append(f"JOURNAL FAILING: {state.journal_failing}; new entries blocked", style="bold reverse")
        text.append(f" │ {state.reason} │ epoch {state.epoch} │ {fmt_duration(state.seconds_in_state)} in state"
                    f" │ {STATE_POLICY[state.status]} │ by {state.actor}")
        lines = max(1, -(-len(text.plain) // max(1, self.size.width - 2)))
        self.update(text, layout=lines != getattr(self, "_lines", 0))  # a layout only when the height changes
        self._lines = lines
