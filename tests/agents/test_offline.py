"""CrewAI stays off the import path and offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from core.agents import offline
from core.agents.llm import llm_label
from tests.agents.conftest import make_settings
from tests.conftest import REPO

IMPORT_ALL = """
import json, sys
import core.agents, core.agents.desk, core.agents.crew, core.agents.tools, core.agents.llm
import core.agents.analyst, core.agents.offline, core.agents.context, core.agents.untrusted
print(json.dumps({"crewai": "crewai" in sys.modules}))
"""


def test_importing_the_desk_does_not_import_crewai():
    # how long the import takes is a figure of bench/agents.py
    out = subprocess.run([sys.executable, "-c", IMPORT_ALL], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"crewai": False}


def test_the_offline_environment_is_set_before_crewai():
    for key, value in offline.OFFLINE_ENV.items():
        assert os.environ[key] == value
    assert os.environ["CREWAI_STORAGE_DIR"]
    assert offline.is_loaded() and offline.load_seconds() is not None


def test_model_labels():
    assert llm_label(make_settings()) == "rules"
    assert llm_label(make_settings(llm_provider="openai", llm_model="gpt-4o-mini")) == "openai/gpt-4o-mini"
    assert llm_label(make_settings(llm_provider="ollama", llm_model="llama3.1")) == "ollama/llama3.1"
    assert llm_label(make_settings(), "anthropic/claude-3-5-haiku-latest") == "anthropic/claude-3-5-haiku-latest"
