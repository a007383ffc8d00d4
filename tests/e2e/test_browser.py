"""End to end in a real browser: `spikeguard serve` (its embedded default: sim market, paper
exchange, no network, data and HOME in the test's temp dir) driven by a headless Chromium over
the DevTools protocol (tests/e2e/cdp.py). The page is loaded, the breaker banner read off the
terminal until it says SAFE, the kill switch pressed (T, then Enter), the banner read until
TRIGGERED, and a screenshot kept under pytest's temp dir; its path is printed.

The same screenshot checks the block glyphs: every cell on the screen holding one of the block
elements (the board's sparklines ▁▂▃▄▅▆▇█, Textual's ▏ ▔ edges) must be inked exactly where
the glyph's rectangle is, to a pixel. Two browsers: one with WebGL (what headless Chromium has
here, by software) and one without (a browser with no GPU or with hardware acceleration off),
where textual-serve's own page used to fall back to xterm.js's DOM renderer and take the
glyphs from a font that does not fill the cell (console/serve.py says why).

Every wait polls the page until the expected text appears; there are no fixed sleeps."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from PIL import Image

from tests.e2e.cdp import INSTALL_HINT, Chromium, Page, find_chromium
from tests.e2e.test_tmux import running

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 30.0
WIDTH, HEIGHT = 1280, 800

# textual.js keeps its xterm.js Terminal in a closure (`this.terminal = new Terminal(...)`).
# Installed before any script of the page runs, this setter catches it as it is stored, keeps it
# as window.__sgTerminal and removes itself: the page then runs as it would without it.
CATCH_TERMINAL = """
Object.defineProperty(Object.prototype, "terminal", {
  configurable: true,
  set(value) {
    Object.defineProperty(this, "terminal", {value, writable: true, configurable: true, enumerable: true});
    if (value && typeof value.write === "function" && value.buffer) {
      window.__sgTerminal = value;
      delete Object.prototype.terminal;
    }
  },
});
"""

# A browser online gets the Roboto Mono that textual-serve's page asks fonts.googleapis.com for;
# this machine has no network, so the page's font is given the way Google's would be: the same
# family, from the copy textual-serve ships. (The fixed page declares that same face itself.)
ONLINE_FONT = """
document.fonts.add(new FontFace("Roboto Mono", "url(/static/fonts/RobotoMono-VariableFont_wght.ttf)"));
"""

SCREEN_TEXT = """(() => {
  const t = window.__sgTerminal, b = t.buffer.active, rows = [];
  for (let r = 0; r < t.rows; r++) rows.push(b.getLine(b.viewportY + r)?.translateToString(true) ?? "");
  return rows.join("\\n");
})()"""

# Block elements drawn as one rectangle: (x0, y0, x1, y1) in fractions of the cell
BLOCKS = {
    "▀": (0, 0, 1, 1 / 2), "▔": (0, 0, 1, 1 / 8), "▐": (1 / 2, 0, 1, 1), "▕": (7 / 8, 0, 1, 1),
    **{ch: (0, 1 - k / 8, 1, 1) for k, ch in enumerate("▁▂▃▄▅▆▇█", start=1)},  # lower k eighths
    **{ch: (0, 0, k / 8, 1) for k, ch in zip(range(7, 0, -1), "▉▊▋▌▍▎▏")},  # left k eighths
}

# The cells holding BLOCKS glyphs, with the colours they are drawn in (xterm.js's defaults for
# the default colours; palette colours are left out), and where the terminal's cells are.
GLYPH_CELLS = """((glyphs) => {
  const t = window.__sgTerminal, b = t.buffer.active, cells = [];
  const rgb = (v) => [(v >> 16) & 255, (v >> 8) & 255, v & 255];
  for (let r = 0; r < t.rows; r++) {
    const line = b.getLine(b.viewportY + r);
    for (let c = 0; line && c < t.cols; c++) {
      const cell = line.getCell(c), ch = cell.getChars();
      if (!ch || !glyphs.includes(ch) || cell.isDim() || cell.isFgPalette() || cell.isBgPalette()) continue;
      let fg = cell.isFgRGB() ? rgb(cell.getFgColor()) : [255, 255, 255];
      let bg = cell.isBgRGB() ? rgb(cell.getBgColor()) : [0, 0, 0];
      if (cell.isInverse()) [fg, bg] = [bg, fg];
      cells.push({r, c, ch, fg, bg});
    }
  }
  const box = t.element.querySelector(".xterm-screen").getBoundingClientRect();
  const renderer = t.element.querySelector(".xterm-rows") ? "DOM" :
    t.element.querySelector("canvas.xterm-text-layer") ? "canvas" : "WebGL";
  return {cells, renderer, x: box.left, y: box.top, w: box.width / t.cols, h: box.height / t.rows};
})(%r)"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _chromium_processes(profile: Path) -> list[int]:
    mark = f"--user-data-dir={profile}"
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if mark in (proc.info["cmdline"] or []):
                found.append(proc.pid)
        except psutil.Error:
            pass
    return found


@pytest.fixture
def served(tmp_path):
    """`spikeguard serve` on a free loopback port, in its own process group; its URL."""
    data = tmp_path / "data"
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "console.cli", "--data-dir", str(data), "serve", "--port", str(port)],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "HOME": str(tmp_path)},
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"spikeguard serve exited with {proc.returncode}:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"spikeguard serve did not answer on {url} within {TIMEOUT:.0f} s:\n{_tail(log)}")
            time.sleep(0.1)  # polling interval
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and the console it started for the tab
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + TIMEOUT
    while running(data) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling interval
    assert running(data) == [], f"a console outlived spikeguard serve:\n{_tail(log)}"


@pytest.fixture(params=["webgl", "no-webgl"])
def browser(request, tmp_path):
    """Headless Chromium in its own process group: with WebGL (software, as headless Chromium
    has it here) or without any (--disable-3d-apis: a browser with no usable GPU)."""
    binary = find_chromium()
    if binary is None:
        pytest.fail(f"Chromium is not installed: {INSTALL_HINT}")
    extra = ("--disable-3d-apis",) if request.param == "no-webgl" else ()
    profile = tmp_path / "chromium-profile"
    chromium = Chromium(binary, profile, WIDTH, HEIGHT, extra_flags=extra)
    try:
        yield chromium
    finally:
        chromium.close()
    deadline = time.monotonic() + TIMEOUT
    while _chromium_processes(profile) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling interval
    assert _chromium_processes(profile) == [], "Chromium processes outlived the test"


def wait_for_text(page: Page, *texts: str, banner: str | None = None, timeout: float = TIMEOUT) -> str:
    """The terminal's text once it holds every one of `texts`, and `banner` in its first row."""
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        if page.evaluate("!!window.__sgTerminal"):
            screen = page.evaluate(SCREEN_TEXT)
            if all(t in screen for t in texts) and (banner is None or banner in screen.partition("\n")[0]):
                return screen
        time.sleep(0.05)  # polling interval
    raise AssertionError(f"timed out waiting for {texts!r} (banner {banner!r}) in the page's terminal; "
                         f"it showed:\n{screen}")


def _near(pixel: tuple[int, ...], fg: list[int], bg: list[int]) -> bool:
    """True when the pixel is the glyph's ink (nearer its foreground than its background)."""
    dist = lambda a, b: sum((x - y) ** 2 for x, y in zip(a, b))  # noqa: E731
    return dist(pixel, fg) < dist(pixel, bg)


def checkable(layout: dict) -> list[dict]:
    """The glyph cells whose ink and background are far enough apart to tell from the pixels."""
    return [c for c in layout["cells"] if sum((a - b) ** 2 for a, b in zip(c["fg"], c["bg"])) >= 3 * 40 ** 2]


def glyph_faults(image: Image.Image, layout: dict) -> list[str]:
    """What is wrong with each checkable block glyph's pixels. A glyph's ink must span its
    rectangle to within a pixel at every edge, with no holes inside it."""
    faults = []
    w, h = layout["w"], layout["h"]
    for cell in checkable(layout):
        fx0, fy0, fx1, fy1 = BLOCKS[cell["ch"]]
        left, top = layout["x"] + cell["c"] * w, layout["y"] + cell["r"] * h
        want = (left + fx0 * w, top + fy0 * h, left + fx1 * w, top + fy1 * h)
        # the pixels whose centres lie in the cell
        xs = range(int(left + 0.5), int(left + w - 0.5) + 1)
        ys = range(int(top + 0.5), int(top + h - 0.5) + 1)
        ink = {(x, y) for x in xs for y in ys if _near(image.getpixel((x, y))[:3], cell["fg"], cell["bg"])}
        where = f"{cell['ch']} at row {cell['r']} col {cell['c']}"
        if not ink:
            faults.append(f"{where}: no ink at all (want {_fmt(want)})")
            continue
        got = (min(x for x, _ in ink), min(y for _, y in ink), max(x for x, _ in ink) + 1, max(y for _, y in ink) + 1)
        holes = sum((x, y) not in ink for x in range(got[0], got[2]) for y in range(got[1], got[3]))
        if any(abs(g - e) > 1.0 for g, e in zip(got, want)) or holes:
            faults.append(f"{where}: ink {_fmt(got)}, want {_fmt(want)}" + (f", {holes} holes" if holes else ""))
    return faults


def _fmt(box: tuple[float, ...]) -> str:
    return "x {:.1f}-{:.1f} y {:.1f}-{:.1f}".format(box[0], box[2], box[1], box[3])


def screenshot_with_glyphs(page: Page, path: Path) -> tuple[Image.Image, dict]:
    """A screenshot, and the glyph cells it shows: the cells are read before and after it (with
    the frames in between drawn) until they are the same, so the two agree."""
    last: dict = {}
    for _ in range(10):
        before = page.evaluate(GLYPH_CELLS % "".join(BLOCKS))
        page.evaluate("new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
        page.screenshot(path)
        after = page.evaluate(GLYPH_CELLS % "".join(BLOCKS))
        if before == after:
            return Image.open(path).convert("RGB"), after
        last = after
    raise AssertionError(f"the block glyphs kept changing while the screenshot was taken: {last}")


def test_kill_switch_in_a_real_browser(served, browser, tmp_path, capsys, request):
    started = time.monotonic()
    page = browser.page()
    page.set_viewport(WIDTH, HEIGHT)
    page.add_script_on_new_document(CATCH_TERMINAL)
    page.add_script_on_new_document(ONLINE_FONT)
    page.navigate(served)

    wait_for_text(page, "BTCUSDT", "PAPER", banner="SAFE")
    page.screenshot(tmp_path / "safe.png")

    page.evaluate("document.querySelector('.xterm-helper-textarea').focus()")  # where xterm.js reads keys
    page.press("T")
    wait_for_text(page, "Force-TRIGGER the circuit breaker?")
    page.press("Enter")  # no reason typed: the kill switch trips with its own
    wait_for_text(page, "operator kill switch", banner="TRIGGERED")

    shot = tmp_path / "triggered.png"
    # enough glyphs to judge: the board's sparklines (a bar per symbol once a market minute has
    # closed, 2 s here at 30x) and one glyph at least 5/8 of a cell tall (a full-height ▏ or █)
    deadline = time.monotonic() + TIMEOUT
    while True:
        image, layout = screenshot_with_glyphs(page, shot)
        cells = checkable(layout)
        tall = [c for c in cells if BLOCKS[c["ch"]][3] - BLOCKS[c["ch"]][1] >= 5 / 8]
        bars = [c for c in cells if c["ch"] in "▁▂▃▄▅▆▇"]  # partial bars: sparklines, not full-block markers
        if (tall and len(bars) >= 8) or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # polling interval
    faults = glyph_faults(image, layout)
    context = (f"{layout['renderer']} renderer, cells {layout['w']:.2f}x{layout['h']:.2f} px, "
               f"{len(cells)} block glyphs checked")
    with capsys.disabled():
        print(f"\n{request.node.name}: screenshot {shot} ({context}, {time.monotonic() - started:.1f} s)")
    assert tall and len(bars) >= 8, f"too few block glyphs on the screen to check ({context}; {shot})"
    assert not faults, f"block glyphs drawn wrong ({context}; {shot}):\n" + "\n".join(faults[:20])


def test_the_served_page_is_patched():
    """The patches console/serve.py makes still apply to the installed textual-serve."""
    from console.serve import SCRIPT_ROUTE, patched_assets

    page, script = patched_assets()
    assert "fonts.googleapis.com" not in page and "RobotoMono-VariableFont_wght.ttf" in page
    assert SCRIPT_ROUTE in page
    assert "this.webglAddon=new" not in script and "this.terminal.loadAddon(this.canvasAddon)" in script
