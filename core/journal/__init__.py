"""The journal: an append-only, hash-chained SQLite record of spikes, breaker transitions,
agent decisions, proposals, orders, fills and operator actions.

    key = load_or_create_key(paths.config_dir)             # journal.key, mode 0600
    journal = await Journal.open(paths.journal, key=key)   # one process per journal; refuses what it cannot trust
    journal.add_health_listener(on_health)                 # JournalHealth when it starts failing and recovers
    row_id = await journal.record_breaker_change(change, state.snapshot().to_dict())
    fut = journal.enqueue_order(order, event_time_ms)      # from any thread, never blocks
    record = await journal.last_breaker_record()           # restore after a restart
    await journal.close()                                  # JournalError if rows could not be written
    result = verify(paths.journal, key)                    # tamper check: result.ok, result.first_bad
"""

from core.journal.audit import AuditResult, read_counts, verify
from core.journal.db import BREAKER_STATUS_MAP, Journal
from core.journal.keys import KEY_FILE, load_or_create_key
from core.journal.schema import MIGRATIONS, SCHEMA_VERSION, JournalError

__all__ = ["AuditResult", "BREAKER_STATUS_MAP", "Journal", "JournalError", "KEY_FILE", "MIGRATIONS",
           "SCHEMA_VERSION", "load_or_create_key", "read_counts", "verify"]
