"""Confirm dialogs: breaker trigger/clear with a reason (and a typed override when the
rules say no), rejecting with an optional reason, quitting with open positions."""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, Label, Static

from console.screens.dialog import Dialog

OVERRIDE_WORD = "OVERRIDE"
REASON_MAX_CHARS = 200  # a reason is a sentence for the journal, not a document


class ReasonInput(Input):
    """A reason field of at most REASON_MAX_CHARS. A longer paste is cut to fit (Input's own
    max_length refuses it whole). A terminal without bracketed paste sends a paste as keys:
    those past the limit are refused with one bell, not one each."""

    def __init__(self, **kwargs) -> None:
        super().__init__(max_length=REASON_MAX_CHARS, **kwargs)
        self._rang = False

    def restricted(self) -> None:
        if not self._rang:
            self._rang = True
            super().restricted()

    def watch_value(self) -> None:
        self._rang = False

    def _on_paste(self, event: events.Paste) -> None:
        line = next(iter(event.text.splitlines()), "")
        start, end = sorted(self.selection)
        room = self.max_length - (len(self.value) - (end - start))
        if line and room > 0:
            self.replace(line[:room], start, end)
        if len(line) > room:
            self.restricted()  # cut: one bell
        event.stop()
        event.prevent_default()  # Input's handler would insert the whole paste again


@dataclass(frozen=True)
class BreakerRequest:
    reason: str
    override: bool


KILL_SWITCH_REASON = "operator kill switch"


class BreakerConfirmScreen(Dialog[BreakerRequest | None]):
    """Ask for a reason; when `override_note` is given, clearing also needs the typed word."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    BreakerConfirmScreen { align: center middle; }
    BreakerConfirmScreen > Vertical { width: 72; max-width: 95%; height: auto; border: thick $error; padding: 1 2; background: $surface; }
    BreakerConfirmScreen .title { text-style: bold; }
    BreakerConfirmScreen .note { color: $warning; }
    """

    def __init__(self, action: str, override_note: str | None = None) -> None:
        super().__init__()
        self.action = action  # "trigger" or "clear"
        self.override_note = override_note

    def compose(self) -> ComposeResult:
        with Vertical():
            title = "Force-TRIGGER the circuit breaker?" if self.action == "trigger" else "Clear the circuit breaker?"
            yield Label(title, classes="title")
            yield Static("Every operator action is journaled. Enter confirms, Escape cancels.")
            if self.override_note:
                yield Static(self.override_note, classes="note")
            # a kill switch must not wait for typing: Enter alone trips, with the kill switch's reason
            placeholder = f"reason (optional: Enter alone trips as \"{KILL_SWITCH_REASON}\")" \
                if self.action == "trigger" else "reason (required)"
            yield ReasonInput(placeholder=placeholder, id="reason")
            if self.override_note:
                yield Input(placeholder=f"type {OVERRIDE_WORD} to clear anyway", id="override")

    def on_mount(self) -> None:
        self.query_one("#reason", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        reason = self.query_one("#reason", Input).value.strip()
        if not reason and self.action == "trigger":
            reason = KILL_SWITCH_REASON
        if not reason:
            self.notify("a reason is required", severity="warning")
            self.query_one("#reason", Input).focus()
            return
        override = False
        if self.override_note:
            typed = self.query_one("#override", Input)
            if event.input.id == "reason":
                typed.focus()
                return
            if typed.value.strip() != OVERRIDE_WORD:
                self.notify(f"type {OVERRIDE_WORD} exactly to override the recovery rules", severity="warning")
                return
            override = True
        self.dismiss(BreakerRequest(reason, override))

    def action_cancel(self) -> None:
        self.dismiss(None)


class ReasonScreen(Dialog[str | None]):
    """An optional reason (reject)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    ReasonScreen { align: center middle; }
    ReasonScreen > Vertical { width: 64; max-width: 95%; height: auto; border: thick $warning; padding: 1 2; background: $surface; }
    """

    def __init__(self, title: str) -> None:
        super().__init__()
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text)
            yield ReasonInput(placeholder="reason (optional) — Enter confirms, Escape cancels", id="reason")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)


class QuitScreen(Dialog[bool]):
    BINDINGS = [Binding("y", "yes", "Quit"), Binding("n,escape", "no", "Stay")]
    DEFAULT_CSS = """
    QuitScreen { align: center middle; }
    QuitScreen > Vertical { width: 64; max-width: 95%; height: auto; border: thick $warning; padding: 1 2; background: $surface; }
    """

    def __init__(self, detail: str) -> None:
        super().__init__()
        self.detail = detail

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Quit spikeguard?")
            yield Static(self.detail)
            yield Static("Open entry orders are cancelled on exit; protective stops stay. y quits, n stays.")

    def action_yes(self) -> None:
        self.dismiss(True)

    def action_no(self) -> None:
        self.dismiss(False)

