#!/usr/bin/env bash
# Install the system programs the test suite drives for real (redis-server, tmux, and a headless
# Chromium for tests/e2e/test_browser.py), only when they are missing. Needs root or sudo for
# apt-get; says what to do otherwise.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
# Debian's headless-only build (no GTK); a full `chromium` already installed does as well
command -v chromium-headless-shell >/dev/null 2>&1 || command -v chromium >/dev/null 2>&1 \
  || need+=(chromium-headless-shell)
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing system packages: ${need[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then SUDO=(); elif command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else
  echo "error: ${need[*]} missing and no root or sudo to install them with apt-get" >&2; exit 1; fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq >/dev/null
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
