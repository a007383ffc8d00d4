"""The chain head (the audit_head row): its signature, and the check made before a journal is trusted.

The head (last_seq, last_hash, last_ids) says where the chain ends. Cut the last rows off
with plain SQL and copy the new last row's hash into the head, and the chain alone still
verifies. An HMAC-SHA256 of the head, made with a key kept outside the journal
(core.journal.keys), shows that rewrite to whoever holds the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from core.journal.schema import GENESIS_HASH

_DOMAIN = "spikeguard-journal-head:v1"


def signature(key: bytes, last_seq: Any, last_hash: Any, last_ids: Any) -> str:
    """The head's signature, over the values exactly as stored."""
    message = f"{_DOMAIN}|{last_seq}|{last_hash}|{last_ids or ''}"
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()


def signature_problem(key: bytes, head: Mapping[str, Any]) -> str | None:
    """What is wrong with the head's signature, or None when it verifies."""
    stored = head.get("head_signature")
    if not stored:
        return "the chain head is not signed"
    want = signature(key, head.get("last_seq"), head.get("last_hash"), head.get("last_ids"))
    if not hmac.compare_digest(str(stored), want):
        return "the chain head's signature does not verify (the head was changed, or signed with another key)"
    return None


async def read_chain_end(db: Any, tables: tuple[str, ...]) -> dict[str, Any]:
    """Where the rows say the chain ends: the highest chain_seq, its hash, each table's last id."""
    seq, last_hash, ids = 0, GENESIS_HASH, {}
    for table in tables:
        cur = await db.execute(f'SELECT chain_seq, row_hash FROM "{table}" ORDER BY chain_seq DESC LIMIT 1')
        row = await cur.fetchone()
        if row is not None and isinstance(row[0], int) and row[0] > seq:
            seq, last_hash = row[0], row[1]
        cur = await db.execute(f'SELECT MAX(id) FROM "{table}"')
        ids[table] = int((await cur.fetchone())[0] or 0)
    return {"last_seq": seq, "last_hash": last_hash, "last_ids": ids}


def head_problems(head: Mapping[str, Any], end: Mapping[str, Any], key: bytes | None) -> list[str]:
    """Why the stored head cannot be trusted (empty: it can). The signature is checked only
    with a key; an empty journal's unsigned genesis head has nothing to hide and passes."""
    problems: list[str] = []
    empty = end["last_seq"] == 0 and not any(end["last_ids"].values())
    genesis = head.get("last_seq") == 0 and head.get("last_hash") == GENESIS_HASH
    if key is not None and not (empty and genesis and not head.get("head_signature")):
        sig = signature_problem(key, head)
        if sig:
            problems.append(sig)
    if (head.get("last_seq"), head.get("last_hash")) != (end["last_seq"], end["last_hash"]):
        problems.append(f"the chain head says chain_seq {head.get('last_seq')!r} ({_short(head.get('last_hash'))}) "
                        f"but the last row is chain_seq {end['last_seq']} ({_short(end['last_hash'])})")
    else:
        stored_ids = _ids(head.get("last_ids"))
        diffs = [f"{t} {stored_ids.get(t, 0)} in the head, {n} in the table"
                 for t, n in end["last_ids"].items() if stored_ids is not None and stored_ids.get(t, 0) != n]
        if stored_ids is None or diffs:
            problems.append("the chain head's last ids do not match the tables"
                            + (f" ({', '.join(diffs)})" if diffs else ""))
    return problems


def _ids(text: Any) -> dict[str, int] | None:
    try:
        return {str(t): int(n) for t, n in json.loads(text or "{}").items()}
    except (TypeError, ValueError, AttributeError):
        return None


def _short(h: Any) -> str:
    return f"{h[:12]}..." if isinstance(h, str) and len(h) > 12 else repr(h)
