"""The guardian daemon's spikes, read back by an attached console: the Redis stream that
`spikeguard guardian` writes (console.shared), followed from its end, each entry shown in
the spike queue as the guardian's (the console's own scanner is paused meanwhile)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from core.events import SpikeDetected, SpikeStatus, SpikeType

log = logging.getLogger("spikeguard.remote_spikes")
BLOCK_MS = 1_000
RETRY_S = 0.5


def spike_of(fields: dict[str, Any]) -> SpikeDetected:
    """A stream entry's spike (the fields the guardian writes); ValueError or KeyError when not one."""
    return SpikeDetected(
        symbol=str(fields["symbol"]), spike_type=SpikeType(fields["type"]), direction=str(fields["direction"]),
        magnitude_pct=float(fields["magnitude_pct"]), timeframe_minutes=int(fields.get("timeframe_minutes", 0)),
        volume_multiple=float(fields.get("volume_multiple", 0.0)), price_from=float(fields.get("price_from", 0.0)),
        price_to=float(fields.get("price_to", 0.0)), confidence=float(fields.get("confidence", 0.0)),
        time_ms=int(fields["time_ms"]), detection_latency_ms=0.0, details={"source": "guardian"})


async def follow(client: Any, stream: str, bus: Any) -> None:
    """Publish every new spike in `stream` on `bus` as detected by the guardian, until cancelled;
    a lost connection is retried (the breaker's own sync says when Redis is away)."""
    last = "$"
    while True:
        try:
            answer = await client.xread({stream: last}, block=BLOCK_MS, count=100)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("spike stream %s unavailable (%s); retrying", stream, exc)
            await asyncio.sleep(RETRY_S)
            continue
        for _, entries in answer or []:
            for entry_id, fields in entries:
                last = entry_id
                raw = fields.get(b"spike") or fields.get("spike")
                try:
                    spike = spike_of(json.loads(raw))
                except (TypeError, ValueError, KeyError) as exc:
                    log.warning("an unreadable spike in %s was skipped: %s", stream, exc)
                    continue
                bus.publish(SpikeStatus(spike, "detected", "by the guardian"))


__all__ = ["follow", "spike_of"]
