"""The journal's schema: DDL as an ordered list of migrations, and the code that applies them.

The four seed tables (spike_events, circuit_breaker_events, agent_decisions,
agent_performance) keep every column the seed design lists, with the seed's names. Next to
them: orders (append-only order events), fills, proposals, operator_actions, row_updates
(the chained log of every change to a mutable column), schema_version and audit_head (the
hash chain's head: last chain_seq, its hash, each table's last id and the head's signature,
one row).

Conventions
- ids are INTEGER PRIMARY KEY; the single writer allocates them itself (MAX(id)+1), so
  the id is known before the insert and is part of the row's hash.
- timestamps are ISO-8601 UTC text ("2024-05-01T12:00:00.000Z", core.events.iso_utc);
  where the engine needs the exact event time back an extra *_ms INTEGER column holds it.
- JSON columns are TEXT holding JSON.
- every journaled table has chain_seq (global, gap-free, UNIQUE), prev_hash and row_hash;
  tables with mutable columns also have audit_initial (the inserted values of the mutable
  columns, JSON, covered by the row hash). See core/journal/audit.py.

Migration rules (so old rows keep verifying): a migration applied to an existing journal
may add tables, indexes and NULLable columns without a DEFAULT. NULL columns are left out
of a row's hash, so a new NULL column does not change old rows' hashes. Never rewrite the
statements of a migration that has shipped; append a new (version, statements) entry.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from typing import Any

GENESIS_HASH = "0" * 64


class JournalError(Exception):
    """A journal that cannot be opened or written, with a one-line message for the operator."""


_CHAIN = """
    chain_seq INTEGER NOT NULL UNIQUE,
    prev_hash TEXT NOT NULL,
    row_hash TEXT NOT NULL"""

_V1: list[str] = [
    """CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_seq INTEGER NOT NULL,
    last_hash TEXT NOT NULL,
    last_ids TEXT,
    updated_at TEXT
)""",
    f"INSERT INTO audit_head (id, last_seq, last_hash, last_ids, updated_at) VALUES (1, 0, '{GENESIS_HASH}', '{{}}', NULL)",
    # ---------------------------------------------------------------- seed table 1
    f"""CREATE TABLE spike_events (
    id INTEGER PRIMARY KEY,
    timestamp TEXT NOT NULL,
    trading_pair TEXT NOT NULL,
    spike_type TEXT NOT NULL,
    direction TEXT,
    magnitude_percent REAL,
    timeframe_minutes INTEGER,
    volume_multiplier REAL,
    price_from REAL,
    price_to REAL,
    confidence_score REAL,
    detection_latency_ms REAL,
    agent_detected_by TEXT,
    status TEXT NOT NULL DEFAULT 'detected',
    context_analysis TEXT,
    risk_assessment TEXT,
    trade_id TEXT,
    outcome TEXT,
    pnl REAL,
    time_ms INTEGER,
    zscore REAL,
    details TEXT,
    audit_initial TEXT,{_CHAIN}
)""",
    "CREATE INDEX ix_spike_events_timestamp ON spike_events (timestamp)",
    "CREATE INDEX ix_spike_events_status ON spike_events (status)",
    "CREATE INDEX ix_spike_events_trading_pair ON spike_events (trading_pair)",
    "CREATE INDEX ix_spike_events_trade_id ON spike_events (trade_id)",
    "CREATE INDEX ix_spike_events_agent ON spike_events (agent_detected_by)",
    # ---------------------------------------------------------------- seed table 2
    f"""CREATE TABLE circuit_breaker_events (
    id INTEGER PRIMARY KEY,
    triggered_at TEXT,
    cleared_at TEXT,
    trigger_reason TEXT,
    trigger_type TEXT,
    status TEXT NOT NULL,
    btc_price_at_trigger REAL,
    eth_price_at_trigger REAL,
    btc_drop_percent REAL,
    eth_drop_percent REAL,
    market_cap_drop_percent REAL,
    liquidations_1h REAL,
    fear_greed_index INTEGER,
    trigger_details TEXT,
    market_snapshot TEXT,
    downtime_seconds REAL,
    capital_saved REAL,
    orders_cancelled INTEGER,
    positions_affected INTEGER,
    recovery_time_seconds REAL,
    recovery_conditions_met TEXT,
    user_notified INTEGER NOT NULL DEFAULT 0,
    notes TEXT,
    event_time TEXT NOT NULL,
    event_time_ms INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    previous_status TEXT,
    breaker_status TEXT NOT NULL,
    actor TEXT NOT NULL,
    symbol TEXT,
    reason TEXT,
    breaker_record TEXT,
    audit_initial TEXT,{_CHAIN}
)""",
    "CREATE INDEX ix_cbe_triggered_at ON circuit_breaker_events (triggered_at)",
    "CREATE INDEX ix_cbe_cleared_at ON circuit_breaker_events (cleared_at)",
    "CREATE INDEX ix_cbe_event_time ON circuit_breaker_events (event_time)",
    "CREATE INDEX ix_cbe_status ON circuit_breaker_events (status)",
    "CREATE INDEX ix_cbe_epoch ON circuit_breaker_events (epoch)",
    # ---------------------------------------------------------------- seed table 3
    f"""CREATE TABLE agent_decisions (
    id INTEGER PRIMARY KEY,
    timestamp TEXT NOT NULL,
    agent_name TEXT NOT NULL,
    agent_role TEXT,
    decision_type TEXT NOT NULL,
    decision TEXT,
    confidence REAL,
    reasoning TEXT,
    input_data TEXT,
    output_data TEXT,
    execution_time_ms REAL,
    spike_event_id INTEGER,
    circuit_breaker_event_id INTEGER,
    trade_id TEXT,{_CHAIN}
)""",
    "CREATE INDEX ix_agent_decisions_timestamp ON agent_decisions (timestamp)",
    "CREATE INDEX ix_agent_decisions_agent_name ON agent_decisions (agent_name)",
    "CREATE INDEX ix_agent_decisions_decision_type ON agent_decisions (decision_type)",
    "CREATE INDEX ix_agent_decisions_spike ON agent_decisions (spike_event_id)",
    "CREATE INDEX ix_agent_decisions_breaker ON agent_decisions (circuit_breaker_event_id)",
    "CREATE INDEX ix_agent_decisions_trade ON agent_decisions (trade_id)",
    # ---------------------------------------------------------------- seed table 4
    f"""CREATE TABLE agent_performance (
    id INTEGER PRIMARY KEY,
    timestamp TEXT NOT NULL,
    agent_name TEXT NOT NULL,
    period TEXT,
    total_decisions INTEGER,
    correct_decisions INTEGER,
    incorrect_decisions INTEGER,
    accuracy_percent REAL,
    avg_confidence REAL,
    avg_execution_time_ms REAL,
    total_spikes_detected INTEGER,
    true_positives INTEGER,
    false_positives INTEGER,
    false_negatives INTEGER,
    circuit_breaker_triggers INTEGER,
    false_circuit_breaker_triggers INTEGER,
    notes TEXT,{_CHAIN}
)""",
    "CREATE INDEX ix_agent_performance_timestamp ON agent_performance (timestamp)",
    "CREATE INDEX ix_agent_performance_agent_name ON agent_performance (agent_name)",
    # ---------------------------------------------------------------- trading
    f"""CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    client_order_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    type TEXT NOT NULL,
    quantity REAL NOT NULL,
    price REAL,
    stop_price REAL,
    reduce_only INTEGER NOT NULL,
    origin TEXT,
    proposal_id TEXT,
    status TEXT NOT NULL,
    filled_quantity REAL,
    average_price REAL,
    exchange_order_id TEXT,
    reason TEXT,
    event_time TEXT NOT NULL,
    event_time_ms INTEGER NOT NULL,
    order_json TEXT NOT NULL,{_CHAIN}
)""",
    "CREATE INDEX ix_orders_client_order_id ON orders (client_order_id)",
    "CREATE INDEX ix_orders_event_time ON orders (event_time)",
    "CREATE INDEX ix_orders_proposal_id ON orders (proposal_id)",
    f"""CREATE TABLE fills (
    id INTEGER PRIMARY KEY,
    fill_id TEXT NOT NULL UNIQUE,
    client_order_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    quantity REAL NOT NULL,
    price REAL NOT NULL,
    fee REAL,
    liquidity TEXT,
    time TEXT NOT NULL,
    time_ms INTEGER NOT NULL,{_CHAIN}
)""",
    "CREATE INDEX ix_fills_client_order_id ON fills (client_order_id)",
    "CREATE INDEX ix_fills_time ON fills (time)",
    f"""CREATE TABLE proposals (
    id INTEGER PRIMARY KEY,
    proposal_id TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    symbol TEXT,
    side TEXT,
    quantity REAL,
    entry_type TEXT,
    entry_price REAL,
    stop_loss REAL,
    take_profit REAL,
    status TEXT NOT NULL,
    content_hash TEXT,
    spike_event_id INTEGER,
    expires_at TEXT,
    payload TEXT,
    decided_by TEXT,
    decision_reason TEXT,
    decided_at TEXT,
    audit_initial TEXT,{_CHAIN}
)""",
    "CREATE INDEX ix_proposals_status ON proposals (status)",
    "CREATE INDEX ix_proposals_created_at ON proposals (created_at)",
    "CREATE INDEX ix_proposals_spike ON proposals (spike_event_id)",
    f"""CREATE TABLE operator_actions (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    reason TEXT,
    details TEXT,{_CHAIN}
)""",
    "CREATE INDEX ix_operator_actions_time ON operator_actions (time)",
    # ---------------------------------------------------------------- audit of mutable columns
    f"""CREATE TABLE row_updates (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    table_name TEXT NOT NULL,
    row_id INTEGER NOT NULL,
    changes TEXT NOT NULL,{_CHAIN}
)""",
    "CREATE INDEX ix_row_updates_row ON row_updates (table_name, row_id)",
]

# Ordered (version, statements). Each is applied in one transaction, with its
# schema_version row, by migrate(). schema_version itself is created outside the list.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, _V1),
    # the chain head's HMAC (core.journal.head), written by a writer that holds the key
    (2, ["ALTER TABLE audit_head ADD COLUMN head_signature TEXT"]),
    # the flight recorder (core.incident): one self-contained record per TRIGGERED, zlib-compressed JSON in base64
    (3, [f"""CREATE TABLE incidents (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    trigger_type TEXT,
    symbol TEXT,
    reason TEXT NOT NULL,
    record TEXT NOT NULL,{_CHAIN}
)""", "CREATE INDEX ix_incidents_time ON incidents (time)"]),
]

SCHEMA_VERSION = MIGRATIONS[-1][0]

_SCHEMA_VERSION_DDL = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def newer_version_error(found: int) -> JournalError:
    return JournalError(
        f"journal schema version {found} is newer than this spikeguard (knows {SCHEMA_VERSION}): upgrade spikeguard"
    )


async def read_version(conn: Any, path: str) -> int:
    """The journal's schema version: 0 for an empty database. Raises JournalError for a
    file that is not SQLite, or a SQLite database that is not a spikeguard journal."""
    try:
        cur = await conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        tables = {r[0] for r in await cur.fetchall()}
    except sqlite3.DatabaseError as e:
        if getattr(e, "sqlite_errorname", None) != "SQLITE_NOTADB":  # a disk or file fault, not a foreign file
            raise
        raise JournalError(f"{path} is not a spikeguard journal (not a SQLite database: {e})") from None
    if "schema_version" not in tables:
        user_tables = {t for t in tables if not t.startswith("sqlite_")}
        if user_tables:
            raise JournalError(f"{path} is a SQLite database but not a spikeguard journal "
                               f"(tables: {', '.join(sorted(user_tables)[:5])})")
        return 0
    cur = await conn.execute("SELECT MAX(version) FROM schema_version")
    row = await cur.fetchone()
    return int(row[0] or 0)


async def migrate(conn: Any, path: str) -> int:
    """Apply the missing migrations, one transaction each. Returns the version now in force.

    `conn` is an aiosqlite connection in autocommit mode (isolation_level=None). Safe against
    a second process migrating at the same time: the version is re-read under the write lock.
    """
    version = await read_version(conn, path)
    if version > SCHEMA_VERSION:
        raise newer_version_error(version)
    for target, statements in MIGRATIONS:
        if target <= version:
            continue
        try:
            await conn.execute("BEGIN IMMEDIATE")
            await conn.execute(_SCHEMA_VERSION_DDL)
            cur = await conn.execute("SELECT MAX(version) FROM schema_version")
            now = (await cur.fetchone())[0] or 0
            if now >= target:  # another process got there first
                await conn.execute("ROLLBACK")
                version = now
                continue
            for sql in statements:
                await conn.execute(sql)
            await conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (target, _now_iso()))
            await conn.execute("COMMIT")
        except sqlite3.Error as e:
            try:
                await conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise JournalError(f"journal migration {target} failed on {path}: {e}") from e
        version = target
    if version > SCHEMA_VERSION:
        raise newer_version_error(version)
    return version
