"""`spikeguard replay --agents` against a failing provider, through the real command: each
provider error is one line on stderr (no traceback), the crew pauses and the rules proposer
answers, every skip carries its reason in the JSON, and the JSON is built only once every run
has journaled its decisions (aborted runs included)."""

from __future__ import annotations

import json
import sqlite3

from tests.conftest import run_cli
from tests.fakes.openai_stub import OpenAIStub, Reply, Script


def test_a_failing_provider_is_told_on_stderr_and_the_json_waits_for_the_journal(market_data, tmp_path):
    db = tmp_path / "journal.db"
    with OpenAIStub(Script({}, default=Reply(status=500))) as stub:
        result = run_cli("--data-dir", str(tmp_path / "data"), "--set", f"crew.llm_base_url={stub.base_url}",
                         "--set", "crew.limits.call_max_retries=0", "replay", "--agents", "--llm",
                         "openai/gpt-4o-mini", "--json", "--db", str(db),
                         str(market_data / "DOGEUSDT-1m-2021-04-16-pump.csv"),
                         env={"OPENAI_API_KEY": "test"}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("provider error: ")]
    assert errors and all("InternalServerError" in ln or "500" in ln for ln in errors), result.stderr[-1000:]
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert report["skips"] and all(s["reason"] for s in report["skips"])
    assert any(s["kind"] == "abort" and "500" in s["reason"] for s in report["skips"])
    with sqlite3.connect(db) as con:
        journaled = con.execute("SELECT COUNT(*) FROM agent_decisions WHERE decision_type != 'outcome_measured'"
                                ).fetchone()[0]
        kinds = con.execute("SELECT agent_name, decision_type, decision, COUNT(*) FROM agent_decisions GROUP BY 1, 2, 3"
                            ).fetchall()
        paused = con.execute("SELECT COUNT(*) FROM operator_actions WHERE action = 'crew_paused'").fetchone()[0]
    assert journaled == len(report["decisions"]), kinds  # nothing journaled after the JSON was built
    assert paused >= 1
    # the pause bounded the requests: not one per agent per spike for every spike
    assert len(stub.requests) < 5 * len(report["spikes"])


def test_runs_cut_by_their_deadline_are_journaled_before_the_json(market_data, tmp_path):
    """A slow provider: each run answers at its deadline (1 s) while its crew still waits on the
    model (2 s); the replay's JSON waits for those runs to journal."""
    db = tmp_path / "journal.db"
    slow = Reply(content='DECISION: {"decision": "CONFIRM"}', delay_s=2.0)
    with OpenAIStub(Script({}, default=slow)) as stub:
        result = run_cli("--data-dir", str(tmp_path / "data"), "--set", f"crew.llm_base_url={stub.base_url}",
                         "--set", "crew.limits.call_timeout_seconds=5", "--set", "crew.limits.run_deadline_seconds=1",
                         "--set", "crew.limits.call_max_retries=0", "replay", "--agents", "--llm",
                         "openai/gpt-4o-mini", "--json", "--db", str(db),
                         str(market_data / "DOGEUSDT-1m-2021-04-16-pump.csv"),
                         env={"OPENAI_API_KEY": "test"}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert any(s["reason"] == "run deadline: no decision within 1s" for s in report["skips"]), report["skips"][:5]
    with sqlite3.connect(db) as con:
        journaled = con.execute("SELECT COUNT(*) FROM agent_decisions WHERE decision_type != 'outcome_measured'"
                                ).fetchone()[0]
    assert journaled == len(report["decisions"]) > 0
