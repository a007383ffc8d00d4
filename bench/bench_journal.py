"""Journal figures: rows per second, the cost of a durable row, opening, and how fast a full disk recovers.

    .venv/bin/python bench/bench_journal.py [--quick]

- order rows at synchronous=FULL, one commit per row against batched, with and without the
  head's signature key; spike rows (synchronous=NORMAL) batched;
- one durable row at a time (record_order awaited: the latency a gate's intent pays);
- Journal.open on an existing journal (lock, migrations check, head check, write probe);
- a full disk: the time from the write failing to `failing` being reported, and from space
  returning to every held row being on disk. As root on a real size-limited tmpfs (space
  returns when a filler file is deleted); otherwise SQLite's max_page_count.
Every figure is the median of several runs (p50/p99 where it is a latency).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _kit import pct, quiet_logs  # noqa: E402
from core.events import SpikeDetected, SpikeType  # noqa: E402
from core.journal import Journal  # noqa: E402
from core.trading.orders import Order, OrderType, Side  # noqa: E402

T0 = 1_700_000_000_000
KEY = bytes(range(32))


def orders(n: int) -> list[Order]:
    return [Order(symbol="BTCUSDT", side=Side.BUY, type=OrderType.LIMIT, quantity=0.001, price=99_000.0,
                  client_order_id=f"o{i}") for i in range(n)]


def spike(i: int) -> SpikeDetected:
    return SpikeDetected("SOLUSDT", SpikeType.SPOT_PRICE_SPIKE, "pump", 6.0, 5, 3.0, 100.0, 106.0, 0.8, T0 + i, 1.0)


def median_of(runs: int, make) -> float:
    return statistics.median(asyncio.run(make()) for _ in range(runs))


async def rows_per_second(folder: Path, n: int, batching: bool, kind: str = "order", key: bytes | None = None) -> float:
    path = folder / f"rows-{kind}-{batching}-{key is not None}-{time.monotonic_ns()}.db"
    j = await Journal.open(path, batching=batching, key=key)
    try:
        started = time.perf_counter()
        if kind == "order":
            await asyncio.gather(*(j.record_order(o, T0 + i) for i, o in enumerate(orders(n))))
        else:
            await asyncio.gather(*(j.record_spike(spike(i)) for i in range(n)))
        return n / (time.perf_counter() - started)
    finally:
        await j.close()


async def durable_latency(folder: Path, n: int) -> list[float]:
    """ms per awaited order row, one at a time."""
    j = await Journal.open(folder / "latency.db")
    out = []
    try:
        for o in orders(n):
            started = time.perf_counter()
            await j.record_order(o, T0)
            out.append((time.perf_counter() - started) * 1000)
    finally:
        await j.close()
    return out


async def open_time(folder: Path, trials: int) -> list[float]:
    path = folder / "open.db"
    j = await Journal.open(path, key=KEY)
    try:
        await asyncio.gather(*(j.record_order(o, T0) for o in orders(500)))
    finally:
        await j.close()
    out = []
    for _ in range(trials):
        started = time.perf_counter()
        j = await Journal.open(path, key=KEY)
        out.append((time.perf_counter() - started) * 1000)
        await j.close()
    return out


class Tmpfs:
    """A 1 MB tmpfs filled by a filler file; space returns when it is deleted."""

    def __init__(self, folder: Path) -> None:
        self.dir = folder / "tmpfs"
        self.dir.mkdir(exist_ok=True)

    def __enter__(self) -> "Tmpfs":
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(self.dir)], check=True)
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["umount", str(self.dir)], check=True)

    async def fill(self, j: Journal) -> None:
        fd = os.open(self.dir / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)

    async def free(self, j: Journal) -> None:
        (self.dir / "filler").unlink()


class PageCap:
    """SQLite's max_page_count on the journal's write connection (no root needed)."""

    def __init__(self, folder: Path) -> None:
        self.dir = folder

    def __enter__(self) -> "PageCap":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    async def fill(self, j: Journal) -> None:
        pages = (await (await j._db.execute("PRAGMA page_count")).fetchone())[0]
        await j._db.execute(f"PRAGMA max_page_count = {pages}")

    async def free(self, j: Journal) -> None:
        await j._db.execute("PRAGMA max_page_count = 4294967294")


async def full_disk_round(disk, outage_s: float, held: int) -> tuple[float, float]:
    """(ms from the failing write to `failing` reported, ms from space returning to every
    held row on disk)."""
    with disk:
        j = await Journal.open(disk.dir / f"full-{time.monotonic_ns()}.db")
        failing, recovered = asyncio.Event(), asyncio.Event()
        j.add_health_listener(lambda e: (recovered if e.ok else failing).set())
        try:
            await j.record_operator_action("note", "before")
            await disk.fill(j)
            futs = []
            reported = asyncio.ensure_future(failing.wait())
            try:
                while not failing.is_set():  # the disk may still take a few rows (free space in a page)
                    started = time.perf_counter()
                    futs.append(j.enqueue_operator_action("note", "filling"))
                    view = asyncio.wrap_future(futs[-1])
                    view.add_done_callback(lambda v: v.cancelled() or v.exception())  # read from futs
                    await asyncio.wait({view, reported}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                reported.cancel()
            detected = (time.perf_counter() - started) * 1000
            futs += [j.enqueue_operator_action("note", f"held {i}") for i in range(held)]
            await asyncio.sleep(outage_s)  # the outage being measured, not a synchronisation
            await disk.free(j)
            freed = time.perf_counter()
            await recovered.wait()
            await asyncio.gather(*(asyncio.wrap_future(f) for f in futs))
            return detected, (time.perf_counter() - freed) * 1000
        finally:
            await j.close()


def main() -> None:
    quiet_logs()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    runs, rows, latency_n, trials = (3, 400, 100, 5) if args.quick else (5, 3000, 500, 20)
    root = os.geteuid() == 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        single = median_of(runs, lambda: rows_per_second(folder, rows // 10, batching=False))
        batched = median_of(runs, lambda: rows_per_second(folder, rows, batching=True))
        signed = median_of(runs, lambda: rows_per_second(folder, rows, batching=True, key=KEY))
        spikes = median_of(runs, lambda: rows_per_second(folder, rows, batching=True, kind="spike"))
        print(f"journal order rows, synchronous=FULL ({runs} runs, median): {single:,.0f} rows/s one commit per row; "
              f"{batched:,.0f} rows/s batched ({batched / single:.1f}x); {signed:,.0f} rows/s batched and signed")
        print(f"journal spike rows, synchronous=NORMAL, batched: {spikes:,.0f} rows/s")
        lat = asyncio.run(durable_latency(folder, latency_n))
        print(f"one durable order row awaited ({latency_n} rows): p50 {pct(lat, 0.5):.2f} ms, "
              f"p99 {pct(lat, 0.99):.2f} ms")
        opened = asyncio.run(open_time(folder, trials))
        print(f"Journal.open of a signed 500-row journal (lock, head check, write probe; {trials} opens): "
              f"p50 {pct(opened, 0.5):.1f} ms, p99 {pct(opened, 0.99):.1f} ms")
        how = "a 1 MB tmpfs, filler deleted" if root else "max_page_count (not root: no tmpfs)"
        for outage, n in ((0.1, runs), (1.0, runs), (5.0, 1)):
            results = [asyncio.run(full_disk_round(Tmpfs(folder) if root else PageCap(folder), outage, 100))
                       for _ in range(n)]
            detect = statistics.median(r[0] for r in results)
            recover = statistics.median(r[1] for r in results)
            print(f"full disk ({how}), {outage:g} s outage, 100 rows held ({len(results)} runs, median): "
                  f"failing reported {detect:.1f} ms after the failing write; every held row on disk "
                  f"{recover:.0f} ms after space returned")


if __name__ == "__main__":
    main()
