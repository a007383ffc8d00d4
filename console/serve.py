"""The web server behind `spikeguard serve`: textual-serve's Server, with a page that draws
block glyphs (the board's sparklines ▁▂▃▄▅▆▇█, box drawing, Textual's ▏ and ▔ edges) right
in every browser.

Why textual-serve's own page (1.1) breaks them in a browser without WebGL2 (hardware
acceleration off, no GPU, a virtual machine or remote desktop, many headless browsers):

- Its textual.js loads xterm.js's WebGL addon, then its canvas addon. Both activate when the
  terminal opens, in that order. Without WebGL2 the WebGL addon throws, xterm.js swallows the
  error, and the canvas addon, next in the same listener loop, never runs: xterm.js falls back
  to its DOM renderer. With WebGL2 the canvas addon replaces the WebGL renderer at once, so the
  canvas renderer is what every browser with WebGL already uses.
- Only the canvas and WebGL renderers draw block and box glyphs themselves (xterm.js's
  customGlyphs), filling the cell exactly. The DOM renderer takes them from a font, and the
  page's font, Roboto Mono (fetched from fonts.googleapis.com), has none: the browser borrows
  them from another font, sized to that font's line box and not to xterm's cell, so bars come
  out short, rows show gaps and full blocks do not meet.

This server serves textual.js without the WebGL addon, so every browser gets the canvas
renderer, and a page that uses the Roboto Mono textual-serve ships instead of Google's (no
request leaves the machine, and the cells are the same size in every browser), starting the
terminal once that font is loaded, since xterm.js measures its cells when it opens. If a newer
textual-serve changes what these patches expect, the server says so on stderr and serves
textual-serve's page unchanged.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import aiohttp_jinja2
import jinja2
import textual_serve
from aiohttp import web
from textual_serve.server import Server

TEXTUAL_SERVE = Path(textual_serve.__file__).resolve().parent
PAGE = "app_index.html"
SCRIPT_ROUTE = "/spikeguard/textual.js"

_WEBGL_ADDON = re.compile(r"this\.webglAddon=new [\w$]+\.WebglAddon,this\.terminal\.loadAddon\(this\.webglAddon\),")
_CANVAS_ADDON = "this.terminal.loadAddon(this.canvasAddon)"
_GOOGLE_FONT = re.compile(r'<link\s+rel="stylesheet"\s+href="https://fonts\.googleapis\.com/[^"]*"\s*/>')
_SCRIPT_TAG = '<script src="{{ config.static.url }}js/textual.js"></script>'

FONT_FACES = """<link rel="preload" href="{{ config.static.url }}fonts/RobotoMono-VariableFont_wght.ttf" as="font"
          type="font/ttf" crossorigin />
    <style>
      /* the Roboto Mono that textual-serve ships, not Google's: nothing is fetched from elsewhere */
      @font-face {
        font-family: "Roboto Mono";
        src: url("{{ config.static.url }}fonts/RobotoMono-VariableFont_wght.ttf") format("truetype");
        font-weight: 100 700;
        font-style: normal;
      }
      @font-face {
        font-family: "Roboto Mono";
        src: url("{{ config.static.url }}fonts/RobotoMono-Italic-VariableFont_wght.ttf") format("truetype");
        font-weight: 100 700;
        font-style: italic;
      }
    </style>"""

SCRIPT_TAGS = f"""<script src="{SCRIPT_ROUTE}"></script>
    <script>
      // textual.js opens the terminal on load, and xterm.js measures its cells then: with the font
      (() => {{
        const start = window.onload;
        if (typeof start !== "function") return;
        window.onload = null;
        window.addEventListener("load", (event) => {{
          document.fonts.load('16px "Roboto Mono"').catch(() => null).then(() => start(event));
        }});
      }})();
    </script>"""


class PatchError(RuntimeError):
    """textual-serve's page or script is not what the patches were written for."""


def patch_script(source: str) -> str:
    """textual.js without the WebGL addon: its canvas addon then always becomes the renderer."""
    patched, count = _WEBGL_ADDON.subn("", source)
    if count != 1 or _CANVAS_ADDON not in patched:
        raise PatchError("textual.js no longer loads the WebGL addon before the canvas addon as expected")
    return patched


def patch_page(template: str) -> str:
    """textual-serve's page template with the bundled font and the patched script."""
    patched, fonts = _GOOGLE_FONT.subn(FONT_FACES, template)
    if fonts != 1 or template.count(_SCRIPT_TAG) != 1:
        raise PatchError(f"{PAGE} no longer links Google's Roboto Mono and textual.js as expected")
    return patched.replace(_SCRIPT_TAG, SCRIPT_TAGS)


def patched_assets() -> tuple[str, str]:
    """(page template, script) from the installed textual-serve, patched; PatchError if they cannot be."""
    page = (TEXTUAL_SERVE / "templates" / PAGE).read_text(encoding="utf-8")
    script = (TEXTUAL_SERVE / "static" / "js" / "textual.js").read_text(encoding="utf-8")
    return patch_page(page), patch_script(script)


class ConsoleServer(Server):
    """textual-serve's Server with the patched page and script (see the module's docstring)."""

    def __init__(self, command: str, **kwargs) -> None:
        super().__init__(command, **kwargs)
        try:
            self.assets: tuple[str, str] | None = patched_assets()
        except PatchError as exc:
            print(f"warning: block glyphs may break in browsers without WebGL: {exc} "
                  f"(textual-serve at {TEXTUAL_SERVE}); serving its page unchanged", file=sys.stderr)
            self.assets = None

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        if self.assets is not None:
            page, script = self.assets
            aiohttp_jinja2.setup(app, loader=jinja2.DictLoader({PAGE: page}))  # replaces textual-serve's loader

            async def handle_script(request: web.Request) -> web.Response:
                return web.Response(text=script, content_type="application/javascript")

            app.router.add_get(SCRIPT_ROUTE, handle_script)
        return app
