"""The journal: an append-only, hash-chained SQLite record of spikes, breaker transitions,
agent decisions, proposals, orders, fills and operator actions.

    journal = await Journal.open(paths.journal)
    row_id = await journal.record_breaker_change(change, state.snapshot().to_dict())
    fut = journal.enqueue_order(order, event_time_ms)      # from any thread, never blocks
    record = await journal.last_breaker_record()           # restore after a restart
    await journal.close()
    result = verify(paths.journal)                         # tamper check: result.ok, result.first_bad
"""

from core.journal.audit import AuditResult, verify
from core.journal.db import BREAKER_STATUS_MAP, Journal
from core.journal.schema import MIGRATIONS, SCHEMA_VERSION, JournalError

__all__ = ["AuditResult", "BREAKER_STATUS_MAP", "Journal", "JournalError", "MIGRATIONS", "SCHEMA_VERSION", "verify"]
