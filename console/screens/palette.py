"""Textual's command palette, closing once (see console/screens/dialog.py): an Enter queued
behind the one that ran a command would run it again and dismiss the screen below."""

from __future__ import annotations

from textual import on
from textual.command import CommandPalette
from textual.widgets import Input, OptionList

from console.screens.dialog import ClosesOnce


class Palette(ClosesOnce, CommandPalette):
    @on(Input.Submitted)
    @on(OptionList.OptionSelected)
    def _ignore_once_closed(self, event: Input.Submitted | OptionList.OptionSelected) -> None:
        if not self.is_active:
            event.stop()
            event.prevent_default()  # CommandPalette's own handlers would run the command again
