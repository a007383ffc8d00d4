"""The base of the console's dialogs: a screen that closes once.

Keys typed faster than a screen closes (Enter Enter, y y) are all delivered to it: the
terminal sends them together, before the first has been handled. Textual's `dismiss` pops
whatever screen is on top, so the second one would close the screen below as well (the main
screen: a blank terminal, then ScreenStackError) and run the dialog's callback again.
"""

from __future__ import annotations

from typing import TypeVar

from textual.await_complete import AwaitComplete
from textual.screen import ModalScreen

ResultType = TypeVar("ResultType")


class ClosesOnce:
    """A mixin for screens, put before the screen class: dismisses only while the screen is the
    active one; a later dismiss is a no-op. (Not a Screen itself: Textual takes CSS, bindings and
    component classes from the first DOM base only.)"""

    def dismiss(self, result=None) -> AwaitComplete:
        if not self.is_active:
            return AwaitComplete.nothing()
        return super().dismiss(result)


class Dialog(ClosesOnce, ModalScreen[ResultType]):
    """A modal dialog that closes once."""
