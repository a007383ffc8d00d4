"""A small Chrome DevTools Protocol client for the browser tests: starts a headless Chromium
in its own process group with a private profile, attaches to its one page over the page's
websocket (websockets' sync client) and sends commands one at a time.

Only what the tests use is here: navigate, evaluate JavaScript, press keys, take a
screenshot. Events are not needed (every wait polls the page), so they are dropped."""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

# the Debian packages scripts/ensure-system-deps.sh installs, the first one it tries first
BINARIES = ("chromium-headless-shell", "chromium")
INSTALL_HINT = "`make system-deps` installs it (scripts/ensure-system-deps.sh: apt-get install chromium-headless-shell)"

# Root needs --no-sandbox. The rest keeps Chromium off the network (it has none here: every
# background connection would be refused) and makes it start the same way every time.
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--no-default-browser-check",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
    "--disable-default-apps", "--metrics-recording-only", "--mute-audio", "--hide-scrollbars",
    "--force-device-scale-factor=1", "--remote-debugging-port=0",
)

# CDP key descriptions for the keys the tests press (Input.dispatchKeyEvent)
SHIFT = 8
KEYS = {
    "Enter": {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"},
    "Escape": {"key": "Escape", "code": "Escape", "windowsVirtualKeyCode": 27},
}


class CDPError(RuntimeError):
    pass


def find_chromium() -> str | None:
    """The Chromium to drive: $SPIKEGUARD_CHROMIUM if set, else the first of BINARIES on PATH."""
    override = os.environ.get("SPIKEGUARD_CHROMIUM")
    if override:
        return shutil.which(override)
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _key(char_or_name: str) -> tuple[dict[str, Any], int]:
    if char_or_name in KEYS:
        return KEYS[char_or_name], 0
    if len(char_or_name) != 1:
        raise ValueError(f"no key description for {char_or_name!r}")
    ch = char_or_name
    desc: dict[str, Any] = {"key": ch, "text": ch}
    if ch.isascii() and ch.isalpha():
        desc |= {"code": f"Key{ch.upper()}", "windowsVirtualKeyCode": ord(ch.upper())}
        return desc, SHIFT if ch.isupper() else 0
    if ch.isdigit():
        desc |= {"code": f"Digit{ch}", "windowsVirtualKeyCode": ord(ch)}
    elif ch == " ":
        desc |= {"code": "Space", "windowsVirtualKeyCode": 32}
    return desc, 0


class Page:
    """One page target, driven over its own websocket."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    def send(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CDPError(f"{method}: no answer within {timeout:.0f} s")
            message = json.loads(self._ws.recv(timeout=remaining))
            if message.get("id") != call_id:
                continue  # an event: not used
            if "error" in message:
                raise CDPError(f"{method}: {message['error'].get('message')} ({message['error']})")
            return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited), or CDPError if it threw."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"JavaScript threw: {text}")
        return result["result"].get("value")

    def add_script_on_new_document(self, source: str) -> None:
        self.send("Page.addScriptToEvaluateOnNewDocument", source=source)

    def navigate(self, url: str) -> None:
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise CDPError(f"navigating to {url}: {result['errorText']}")

    def set_viewport(self, width: int, height: int) -> None:
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)

    def press(self, key: str) -> None:
        """One key pressed and released on the focused element: a printable character or a KEYS name."""
        desc, modifiers = _key(key)
        self.send("Input.dispatchKeyEvent", type="keyDown", modifiers=modifiers, **desc)
        up = {k: v for k, v in desc.items() if k != "text"}
        self.send("Input.dispatchKeyEvent", type="keyUp", modifiers=modifiers, **up)

    def screenshot(self, path: Path) -> bytes:
        data = base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])
        path.write_bytes(data)
        return data


class Chromium:
    """A headless Chromium in its own process group, with a profile under `profile_dir`."""

    def __init__(self, binary: str, profile_dir: Path, width: int, height: int,
                 extra_flags: tuple[str, ...] = ()) -> None:
        profile_dir.mkdir(parents=True, exist_ok=True)
        (profile_dir / "DevToolsActivePort").unlink(missing_ok=True)  # a stale one would name a dead port
        self.profile_dir = profile_dir
        self.log_path = profile_dir.parent / "chromium.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [binary, *FLAGS, *extra_flags, f"--user-data-dir={profile_dir}", f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._ws: ClientConnection | None = None

    def _port(self, timeout: float) -> int:
        active = self.profile_dir / "DevToolsActivePort"  # Chromium writes its port here once it listens
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CDPError(f"chromium exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                first = active.read_text().splitlines()[0]
                return int(first)
            except (OSError, IndexError, ValueError):
                time.sleep(0.05)  # polling interval
        raise CDPError(f"chromium did not open its DevTools port within {timeout:.0f} s: {self.log_tail()}")

    def page(self, timeout: float = 30.0) -> Page:
        port = self._port(timeout)
        deadline = time.monotonic() + timeout
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
                targets = json.load(resp)
            pages = [t for t in targets if t.get("type") == "page" and t.get("webSocketDebuggerUrl")]
            if pages:
                break
            if time.monotonic() > deadline:
                raise CDPError(f"chromium has no page target: {targets}")
            time.sleep(0.05)  # polling interval
        self._ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=timeout,
                           legacy=True)  # closed in close()
        page = Page(self._ws)
        page.send("Page.enable")  # Page.addScriptToEvaluateOnNewDocument works only once it is on
        return page

    def log_tail(self, chars: int = 2000) -> str:
        self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def close(self) -> None:
        """Ends Chromium and every process it started (renderer, GPU, zygote): its whole group."""
        if self._ws is not None:
            self._ws.close()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        try:  # helpers may outlive the main process for a moment
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._log.close()
