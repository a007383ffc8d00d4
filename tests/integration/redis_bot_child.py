"""A headless process on the shared breaker, for the multi-process tests: it prints one JSON
line per event on stdout (its breaker's transitions with their wall time, its backend problems,
the answers to commands) and takes commands on stdin: `trigger REASON`, `entry` (a market
buy through its gate), `rest` (a resting limit buy), `cancel` (that resting order)."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from core.config import load_config
from core.trading.orders import Order, OrderType, Side
from core.wiring import build_session
from tests.helpers import ListFeed, path


def say(**fields) -> None:
    print(json.dumps(fields), flush=True)


async def main(url: str, prefix: str) -> None:
    settings = load_config(env={}, dotenv_paths=[], overrides=[
        "redis.enabled=true", f"redis.url={url}", f"redis.key_prefix={prefix}", "redis.poll_interval_ms=250",
        "redis.timeout_ms=250"]).settings
    session = build_session(settings, ListFeed())
    session.engine.process(path("ETHUSDT", [(0, 3_000.0), (10, 3_000.0)]))
    session.breaker.subscribe(lambda c: say(event="breaker", status=c.status.value, epoch=c.epoch,
                                            wall_ns=time.time_ns(), adopted=c.details.get("adopted_from")))
    inner = session.breaker_sync.on_problem
    session.breaker_sync.on_problem = lambda p: (inner(p), say(event="backend", problem=p, wall_ns=time.time_ns()))
    loop = asyncio.get_running_loop()
    runner = loop.create_task(session.run())
    await asyncio.sleep(0.3)
    say(event="ready", status=session.breaker.status.value, epoch=session.breaker.epoch)
    resting = None
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        command, _, rest = line.partition(" ")
        if command == "trigger":
            say(event="triggered", done=session.force_trigger(rest), wall_ns=time.time_ns())
        elif command == "entry":
            order = await session.gate.submit(Order(symbol="ETHUSDT", side=Side.BUY, type=OrderType.MARKET,
                                                    quantity=0.01))
            say(event="entry", status=order.status.value, reason=order.reason)
        elif command == "rest":
            resting = await session.gate.submit(Order(symbol="ETHUSDT", side=Side.BUY, type=OrderType.LIMIT,
                                                      quantity=0.01, price=2_950.0))
            say(event="rest", status=resting.status.value)
        elif command == "cancel":
            done = await session.gate.cancel(resting.client_order_id, "operator")
            say(event="cancel", status=done.status.value)
    await session.close("bot end")
    runner.cancel()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
