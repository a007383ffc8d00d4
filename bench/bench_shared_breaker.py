"""bench/bench_shared_breaker: the breaker shared on Redis (a real redis-server on a free loopback
port, started here). Prints figures, asserts nothing.

- propagation: a trip (then a clear) written by this process until another process's breaker
  has adopted it, through the channel; p50, p99, max over the trials. Both processes read the
  same wall clock;
- gate checks per second with the Redis backend (the gate reads the breaker's local copy,
  kept by the poller and the subscriber, never Redis on an order), beside the memory backend.
Run: .venv/bin/python bench/bench_shared_breaker.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _kit import pct, quiet_logs  # noqa: E402
from bench_trading import gate_checks  # noqa: E402
from core.breaker.machine import BreakerRecord  # noqa: E402
from core.breaker.redis_backend import RedisBackend  # noqa: E402
from core.breaker.state import CircuitBreakerState  # noqa: E402
from core.config import load_config  # noqa: E402
from core.events import Actor, BreakerStatus  # noqa: E402

PREFIX = "bench"

# the other process: a breaker on the same Redis with its sync; one line per adoption (status, wall ns)
LISTENER = """
import asyncio, sys, time
import redis, redis.asyncio
from core.breaker.redis_backend import RedisBackend
from core.breaker.redis_sync import RedisBreakerSync
from core.breaker.state import CircuitBreakerState
url = sys.argv[1]
async def main():
    backend = RedisBackend(redis.Redis.from_url(url, socket_timeout=0.25), "bench")
    breaker = CircuitBreakerState(backend)
    breaker.subscribe(lambda c: print(c.status.value, c.epoch, time.time_ns(), flush=True))
    sync = RedisBreakerSync(breaker, backend, redis.asyncio.Redis.from_url(url), poll_interval_s=0.25)
    sync.start()
    await asyncio.sleep(0.5)
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def start_redis(directory: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (make system-deps installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.02)
    sys.exit("redis-server did not start")


def propagation(url: str, trials: int) -> list[float]:
    import redis

    backend = RedisBackend(redis.Redis.from_url(url, socket_timeout=1), PREFIX)
    backend.write(0, BreakerRecord(status=BreakerStatus.SAFE, reason="armed", actor=Actor.OPERATOR))
    child = subprocess.Popen([sys.executable, "-c", LISTENER, url], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = []
    try:
        while child.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
            pass
        breaker = CircuitBreakerState(backend)
        for i in range(trials):
            time.sleep(0.02)
            sent = time.time_ns()
            if i % 2 == 0:
                breaker.trigger("bench trip", actor=Actor.OPERATOR)
            else:
                breaker.clear(reason="bench clear", actor=Actor.OPERATOR)
            status, epoch, seen = child.stdout.readline().split()  # type: ignore[union-attr]
            assert int(epoch) == breaker.epoch, (epoch, breaker.epoch)
            out.append((int(seen) - sent) / 1e6)
    finally:
        child.kill()
        child.wait(5)
    return out


def main() -> None:
    import redis

    quiet_logs()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    trials, checks = (40, 20_000) if args.quick else (400, 200_000)
    settings = load_config(env={}, dotenv_paths=[]).settings
    with tempfile.TemporaryDirectory() as tmp:
        server, url = start_redis(Path(tmp))
        try:
            lat = propagation(url, trials)
            print(f"trip/clear propagation to another process over loopback ({trials} trials): "
                  f"p50 {pct(lat, 0.5):.2f} ms, p99 {pct(lat, 0.99):.2f} ms, max {max(lat):.2f} ms (goal p99 <= 20 ms)")
            backend = RedisBackend(redis.Redis.from_url(url, socket_timeout=1), PREFIX + "gate")
            backend.write(0, BreakerRecord(status=BreakerStatus.SAFE, reason="armed", actor=Actor.OPERATOR))
            shared = gate_checks(settings, checks, breaker=CircuitBreakerState(backend))
            local = gate_checks(settings, checks, breaker=CircuitBreakerState())
            print(f"gate checks per second, one caller: {shared:,.0f} on the Redis backend, {local:,.0f} on the "
                  f"memory backend ({shared / local:.2f}x)")
        finally:
            server.kill()
            server.wait(5)


if __name__ == "__main__":
    main()
