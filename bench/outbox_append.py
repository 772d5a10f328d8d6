"""What the metering outbox adds to each call: encode, append, and mark committed (storage/outbox.py).

    .venv/bin/python bench/outbox_append.py                  # 200 000 calls x 7 rounds in a temp dir
    .venv/bin/python bench/outbox_append.py --calls 50000 --rounds 3 --dir /path/on/the/data/disk

Each round journals `--calls` realistic CallRecords (a platform call with a hold, every optional field
set) into a fresh Outbox, one after another as the hot path does, and reports nanoseconds per call for:

- `encode`            orjson of the record (no I/O);
- `append`            `Outbox.append`: encode + one write() on the O_APPEND segment (no fsync);
- `append+committed`  append, then `Outbox.committed` (what record_call adds around its transaction),
                      including segment rolls every 1000 calls and the unlink of committed segments;
- `append+fsync`      for comparison only (the service does not do it): append, then fsync the segment,
                      over the first `--fsync-calls` calls (default 2000).

Rounds are timed with time.perf_counter_ns; the table shows the best and the median round (the best is
the cost without interference from neighbours; the median is what a busy machine gives). Everything
stays in the page cache: nothing is fsynced, as in the service.
"""

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from alumia.domain.call_record import CallRecord
from alumia.domain.routing import Route
from alumia.domain.usage import TokenUsage
from alumia.storage.outbox import Outbox, encode_call


def sample_call(n: int) -> CallRecord:
    """A platform call as the gateway journals it."""
    now = datetime.now(UTC)
    return CallRecord(
        request_id=f"req_{n:024x}", org_id="7b0c5a9e-2f64-4c1e-9a55-1c2d3e4f5a6b",
        api_key_id="0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", api_key_last_used_at=now,
        agent_id="3a4b5c6d-7e8f-4012-8345-6789abcdef01", hold_id=f"req_{n:024x}", model="gpt-5.6-luna",
        provider="openai", route=Route.PLATFORM, byok_key_id=None, byok_last_used_at=None, stream=False,
        usage=TokenUsage(input_tokens=1234, output_tokens=567, cache_read_tokens=89, cache_write_tokens=0,
                         reasoning_tokens=120),
        usage_estimated=False, cost_microcents=123_456, fee_microcents=6_790, charged_microcents=130_246,
        status="ok", http_status=200, error_code=None, latency_ms=812, created_at=now,
        auto_topup_threshold_cents=500)


def time_round(calls: list[CallRecord], body: Callable[[CallRecord], None]) -> float:
    """Nanoseconds per call for one pass of `body` over the calls."""
    start = time.perf_counter_ns()
    for call in calls:
        body(call)
    return (time.perf_counter_ns() - start) / len(calls)


def main() -> None:
    """Run the rounds and print the table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--fsync-calls", type=int, default=2000)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="outbox-bench-", dir=args.dir))
    calls = [sample_call(n) for n in range(args.calls)]
    line_bytes = len(encode_call(calls[0]))
    results: dict[str, list[float]] = {"encode": [], "append": [], "append+committed": [],
                                       "append+fsync": []}
    try:
        for r in range(args.rounds):
            results["encode"].append(time_round(calls, encode_call))

            box = Outbox.open(root / f"append-{r}")
            start = time.perf_counter_ns()
            entries = [box.append(call) for call in calls]
            results["append"].append((time.perf_counter_ns() - start) / len(calls))
            for entry in entries:  # all done, so close() removes the files
                assert entry is not None
                box.committed(entry)
            box.close()

            box = Outbox.open(root / f"committed-{r}")

            def hot_path(call: CallRecord, box: Outbox = box) -> None:
                entry = box.append(call)
                assert entry is not None
                box.committed(entry)

            results["append+committed"].append(time_round(calls, hot_path))
            box.close()

            box = Outbox.open(root / f"fsync-{r}", segment_records=10**9)  # one segment, fd stays open

            def durable(call: CallRecord, box: Outbox = box) -> None:
                entry = box.append(call)
                assert entry is not None and entry.segment.fd is not None
                os.fsync(entry.segment.fd)
                box.committed(entry)

            results["append+fsync"].append(time_round(calls[:args.fsync_calls], durable))
            box.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"outbox append cost — {args.calls} calls x {args.rounds} rounds, one line = {line_bytes} bytes")
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC  nproc {os.cpu_count()}  "
          f"python {platform.python_version()}  dir {args.dir or tempfile.gettempdir()}")
    print(f"  {'step':<18} {'best ns/call':>13} {'median ns/call':>15} {'best µs':>9}")
    for name, values in results.items():
        best, median = min(values), statistics.median(values)
        print(f"  {name:<18} {best:>13.0f} {median:>15.0f} {best / 1000:>9.2f}")


if __name__ == "__main__":
    main()
