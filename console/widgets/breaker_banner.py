"""The breaker banner: the state in its colour, who set it, what the state blocks, time in
state, the epoch and the reason, on one line. The state is always spelled out, never colour
only. When the full line does not fit, the policy is said in short and the reason is cut
last: the state, the actor and the policy are never lost (80 columns hold them). The
de-risking policy (core.trading.derisk) follows what blocks entries. A
transition not yet on disk says "saving…"; a journal that cannot write says JOURNAL FAILING;
a RECOVERING that waits for the operator says so."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import Static

from core.breaker.machine import STATE_POLICY
from core.events import BreakerStatus

REASON_KEPT = 12  # the reason's characters a line must still show to count as fitting
STATE_CLASSES = {s: f"-{s.value.lower()}" for s in BreakerStatus}
ICONS = {BreakerStatus.SAFE: "●", BreakerStatus.WARNING: "▲", BreakerStatus.TRIGGERED: "■",
         BreakerStatus.RECOVERING: "◆"}
SHORT_POLICY = {BreakerStatus.SAFE: "orders allowed", BreakerStatus.WARNING: "entries reduced",
                BreakerStatus.TRIGGERED: "ENTRIES BLOCKED", BreakerStatus.RECOVERING: "entries reduced"}


@dataclass(frozen=True)
class BannerState:
    status: BreakerStatus
    reason: str
    epoch: int
    seconds_in_state: float
    actor: str
    saving: bool = False  # the transition is not on disk yet
    journal_failing: str | None = None  # why the journal cannot write (new entries are blocked)
    waiting_for_operator: str | None = None  # why RECOVERING will not clear by itself
    backend_problem: str | None = None  # the shared breaker cannot be read ("breaker backend unreachable: ...")
    protection: tuple[str, str] = ("", "")  # the de-risking policy, in full and in short


def fmt_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class BreakerBanner(Static):
    DEFAULT_CSS = """
    BreakerBanner { height: 1; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
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

    _state: BannerState | None = None

    def on_resize(self) -> None:
        if self._state is not None:
            self.show(self._state)

    def show(self, state: BannerState) -> None:
        self._state = state
        for status, cls in STATE_CLASSES.items():
            self.set_class(status is state.status, cls)
        held = state.backend_problem or state.journal_failing  # entries blocked whatever the state allows
        policy = "new entries blocked; exits and cancels allowed" if held else STATE_POLICY[state.status]
        short = "ENTRIES BLOCKED" if held else SHORT_POLICY[state.status]
        room = max(1, self.size.width - 2) if self.size.width else None
        # the gate's policy in full matters more than the de-risking policy's: that goes short first;
        # the reason is cut last (the ellipsis), so a line fits when all but the reason's tail does
        for candidate in ((policy, state.protection[0]), (policy, state.protection[1]), (short, state.protection[1])):
            line = self.line(state, *candidate)
            if room is None or len(line.plain) - max(0, len(state.reason) - REASON_KEPT) <= room:
                break
        self.update(line, layout=False)

    @staticmethod
    def line(state: BannerState, policy: str, protection: str = "") -> Text:
        text = Text()
        text.append(f"{ICONS[state.status]} {state.status.value}", style="bold")
        text.append(f" by {state.actor}")
        if state.saving:
            text.append(" saving…", style="bold reverse")
        text.append(f" │ {policy}")
        if state.backend_problem:
            text.append(" │ ")
            text.append(f"{state.backend_problem}; new entries blocked", style="bold reverse")
        if state.journal_failing:
            text.append(" │ ")
            text.append(f"JOURNAL FAILING: {state.journal_failing}; new entries blocked", style="bold reverse")
        if state.waiting_for_operator:
            text.append(" │ ")
            text.append(f"waiting for the operator (C to clear): {state.waiting_for_operator}", style="bold reverse")
        if protection:
            text.append(f" │ {protection}")
        text.append(f" │ {fmt_duration(state.seconds_in_state)} │ epoch {state.epoch} │ {state.reason}")
        return text
