"""Where a profiled phase spent its time: inclusive shares per function, from py-spy's raw output.

    .venv/bin/python bench/profile_summary.py profile-1765000000.txt [--top 60] [--thread MainThread]

Raw (collapsed) stacks are `thread;frame;frame;... count` lines (`gateway_overhead.py --py-spy`
records every thread). A function's inclusive share is the samples whose stack contains it, over the
samples of the chosen thread (the event loop's, by default), counted once per stack.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path


def frame_name(frame: str) -> str:
    """`function (file)` without the line number, so one function's lines count together."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.split(':')[0]})" if where else name


def shares(lines: list[str], thread: str) -> tuple[int, collections.Counter[str]]:
    """The thread's sample count and each function's inclusive samples in it."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or thread not in frames[0]:  # a line py-spy could not finish
            continue
        n = int(count)
        total += n
        for name in {frame_name(f) for f in frames[1:]}:
            counts[name] += n
    return total, counts


def main() -> None:
    """Print the top functions of one thread by inclusive share."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", type=Path)
    parser.add_argument("--top", type=int, default=60)
    parser.add_argument("--thread", default="MainThread", help="text in the thread's frame name")
    args = parser.parse_args()
    total, counts = shares(args.raw.read_text(errors="replace").splitlines(), args.thread)
    print(f"{total} samples in threads matching {args.thread!r}")
    for name, n in counts.most_common(args.top):
        print(f"{100 * n / max(total, 1):5.1f}%  {name}")


if __name__ == "__main__":
    main()
