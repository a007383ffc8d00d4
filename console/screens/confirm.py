"""Confirm dialogs: breaker trigger/clear with a reason (and a typed override when the
rules say no), rejecting with an optional reason, quitting with open positions."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

OVERRIDE_WORD = "OVERRIDE"


@dataclass(frozen=True)
class BreakerRequest:
    reason: str
    override: bool


class BreakerConfirmScreen(ModalScreen[BreakerRequest | None]):
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
            yield Input(placeholder="reason (required)", id="reason")
            if self.override_note:
                yield Input(placeholder=f"type {OVERRIDE_WORD} to clear anyway", id="override")

    def on_mount(self) -> None:
        self.query_one("#reason", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        reason = self.query_one("#reason", Input).value.strip()
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


class ReasonScreen(ModalScreen[str | None]):
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
            yield Input(placeholder="reason (optional) — Enter confirms, Escape cancels", id="reason")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)


class QuitScreen(ModalScreen[bool]):
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
