"""The log file at exit: a library thread abandoned by the exit (a crew still running when the
interpreter shuts down) logs its failures with tracebacks; they are the exit's, and dropped."""

from __future__ import annotations

import logging

from core.logs import drop_library_records, setup_logging


def test_records_of_dropped_libraries_reach_no_handler_and_ours_still_do(tmp_path):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        handler = setup_logging(tmp_path / "spikeguard.log")
        drop_library_records(("crewai", "httpx"))
        logging.getLogger("crewai.flow.runtime").error("Failed to signal flow failure", exc_info=RuntimeError("x"))
        logging.getLogger("httpx").warning("closed")
        logging.getLogger("crewaiish").error("a name that only starts alike")  # not a child: kept
        logging.getLogger("spikeguard.console").info("exit: 2 threads still running are abandoned")
        handler.flush()
        text = (tmp_path / "spikeguard.log").read_text()
    finally:
        for h in root.handlers[:]:
            root.removeHandler(h)
            h.close()
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    assert "Failed to signal" not in text and "closed" not in text and "Traceback" not in text
    assert "exit: 2 threads still running are abandoned" in text
    assert "a name that only starts alike" in text
