"""CrewAI's own files (its settings under ~/.config/crewai, its credentials key under
~/.local/share/crewai) go under spikeguard's storage folder, never into the user's HOME:
checked in a fresh process, since CrewAI writes them while it is imported."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO

SCRIPT = """
import asyncio
from tests.agents.conftest import make_session, dump_spike
from core.agents.desk import AgentDesk

async def main():
    session = make_session()
    session.bus.bind_loop(asyncio.get_running_loop())
    desk = AgentDesk(session, session.settings, None, session.bus, {storage!r})
    await desk.start()
    print(type(await desk.handle_spike(dump_spike(session))).__name__)
    await desk.close()

asyncio.run(main())
"""


def test_crewai_writes_nothing_under_home(tmp_path):
    home, storage = tmp_path / "home", tmp_path / "data" / "crewai"
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    env.pop("XDG_CONFIG_HOME", None)
    env.pop("XDG_DATA_HOME", None)
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(storage=str(storage))], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] in ("TradeProposal", "Skip")
    assert sorted(p.name for p in home.rglob("*")) == []  # nothing in HOME
    assert (storage / "home" / ".config" / "crewai").is_dir()  # CrewAI's config went to the storage folder
