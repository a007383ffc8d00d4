"""The breaker on Redis: one hash holds the state, a stream its history, a channel announces
each transition.

Every write is one Lua script, so the hash, the stream entry and the announcement happen
together or not at all:
- a move to TRIGGERED is an escalation: it wins unless the stored state is TRIGGERED already,
  whatever epoch the writer read (the stored epoch + 1);
- every other move needs the epoch the writer read (compare-and-set): a clear from a stale
  view loses;
- with the key missing (Redis restarted without persistence), only an escalation or an
  operator's re-arm writes one; anything else is refused, and the readers treat the breaker
  as TRIGGERED meanwhile (core.breaker.redis_sync).

Connection errors and timeouts raise BackendUnavailable: the caller fails closed.
"""

from __future__ import annotations

import json
from typing import Any

from core.breaker.backend import BackendUnavailable, StateMissing
from core.breaker.machine import BreakerRecord
from core.events import Actor, BreakerStatus

HISTORY_MAXLEN = 10_000

# KEYS: hash, stream, channel. ARGV: mode ("cas" | "escalate"), expected epoch, record JSON
# (its epoch is set here), stream maxlen, may create ("1": an operator's re-arm or an escalation).
# Returns {1, epoch} when written, {0, stored epoch} when refused, {-1, 0} when the key is missing.
_WRITE = """
local stored = redis.call('HGET', KEYS[1], 'epoch')
local state = redis.call('HGET', KEYS[1], 'state')
if not stored then
  if ARGV[5] ~= '1' then return {-1, 0} end
elseif ARGV[1] == 'escalate' then
  if state == 'TRIGGERED' then return {0, tonumber(stored)} end
elseif tonumber(stored) ~= tonumber(ARGV[2]) then
  return {0, tonumber(stored)}
end
local base = stored and tonumber(stored) or tonumber(ARGV[2])
local epoch = base + 1
local record = cjson.decode(ARGV[3])
record['epoch'] = epoch
local encoded = cjson.encode(record)
redis.call('HSET', KEYS[1], 'state', record['status'], 'epoch', epoch, 'reason', record['reason'],
           'actor', record['actor'], 'time', record['since_ms'], 'details', cjson.encode(record['details']),
           'record', encoded)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'epoch', epoch, 'state', record['status'],
           'actor', record['actor'], 'reason', record['reason'], 'time', record['since_ms'], 'record', encoded)
redis.call('PUBLISH', KEYS[3], encoded)
return {1, epoch}
"""


def keys(prefix: str) -> tuple[str, str, str]:
    """The hash, the history stream and the channel of a deployment's breaker."""
    return f"{prefix}:breaker", f"{prefix}:breaker:history", f"{prefix}:breaker:events"


def record_from_json(text: str | bytes) -> BreakerRecord:
    data = json.loads(text)
    for field in ("details", "market_snapshot"):  # Lua's cjson writes an empty table as {}
        if not isinstance(data.get(field), dict):
            data[field] = {}
    return BreakerRecord.from_dict(data)


class RedisBackend:
    name = "redis"

    def __init__(self, client: Any, prefix: str = "spikeguard", history_maxlen: int = HISTORY_MAXLEN) -> None:
        self.client = client
        self.hash_key, self.stream_key, self.channel = keys(prefix)
        self.history_maxlen = history_maxlen
        self._write = client.register_script(_WRITE)

    # ------------------------------------------------------------------ reads
    def load(self) -> BreakerRecord:
        """The stored record. StateMissing when there is none, BackendUnavailable when Redis
        does not answer."""
        raw = self._call(self.client.hget, self.hash_key, "record")
        if raw is None:
            raise StateMissing(f"no breaker state at {self.hash_key} in Redis")
        return record_from_json(raw)

    def history(self, count: int = 100) -> list[BreakerRecord]:
        """The newest transitions from the stream, oldest first."""
        entries = self._call(self.client.xrevrange, self.stream_key, count=count)
        return [record_from_json(fields[b"record"] if b"record" in fields else fields["record"])
                for _, fields in reversed(entries)]

    # ------------------------------------------------------------------ writes
    def compare_and_set(self, expected_epoch: int, record: BreakerRecord) -> bool:
        """Store `record` if the stored epoch is `expected_epoch` (a TRIGGERED record: unless
        the stored state is TRIGGERED already). The stored epoch becomes expected + 1 (an
        escalation: the stored epoch + 1; `record.epoch` is updated to it)."""
        return self.write(expected_epoch, record) is not None

    def write(self, expected_epoch: int, record: BreakerRecord) -> int | None:
        """The epoch written, or None when refused (see compare_and_set)."""
        escalate = record.status is BreakerStatus.TRIGGERED
        may_create = escalate or record.actor is Actor.OPERATOR
        payload = json.dumps(record.to_dict(), separators=(",", ":"), default=str)
        written, epoch = self._call(self._write, keys=[self.hash_key, self.stream_key, self.channel],
                                    args=["escalate" if escalate else "cas", expected_epoch, payload,
                                          self.history_maxlen, "1" if may_create else "0"])
        if int(written) != 1:
            return None
        record.epoch = int(epoch)
        return record.epoch

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import redis

        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise BackendUnavailable(f"Redis unreachable: {' '.join(str(exc).split()) or type(exc).__name__}") \
                from None


__all__ = ["BackendUnavailable", "RedisBackend", "StateMissing", "keys", "record_from_json"]
