"""The benchmark's report: one table per phase and repetition, their medians, ratios, checks, warnings.

Every figure of a row is computed within one repetition (a gateway row against the `direct` and
`passthrough` rows of the same repetition); the median tables take the median of each figure over
the repetitions, ratios included.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from _db_checks import Check
from _load import PhaseResult, PhaseSpec

NOISE_PCT = 10.0  # warn when the rest of the machine used more than this share of all cores
Row = dict[str, float | None]


@dataclass(frozen=True)
class Column:
    """One figure of a table row: its key, heading, width and decimals."""

    key: str
    head: str
    width: int
    digits: int


COLUMNS = [Column("calls_per_s", "calls/s", 9, 1), Column("x_direct", "x direct", 9, 3),
           Column("x_pass", "x pass", 7, 2), Column("p50", "p50 ms", 9, 2),
           Column("add_p50", "+p50", 9, 2), Column("add_p95", "+p95", 9, 2), Column("add_p99", "+p99", 9, 2),
           Column("add_ttft", "+TTFT50", 9, 2), Column("server_cpu", "srv CPU", 8, 2),
           Column("db_cpu", "db CPU", 7, 2), Column("rss", "RSS MiB", 8, 1), Column("errors", "errors", 7, 0)]
STREAM_ONLY = {"add_ttft"}
HIDDEN = ["p99"]  # kept in a row (for the workers table) but not shown in the phase tables


@dataclass(frozen=True)
class RepResult:
    """A phase result and the repetition it belongs to."""

    rep: int
    result: PhaseResult


@dataclass(frozen=True)
class RepCheck:
    """A database check and the gateway run it belongs to."""

    rep: int
    server: str
    check: Check


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def phase_row(r: PhaseResult, direct: PhaseResult | None, passthrough: PhaseResult | None,
              has_server: bool, has_db: bool) -> Row:
    """The figures of one target in one phase of one repetition."""
    base = direct if direct is not None and r is not direct else None
    return {
        "calls_per_s": r.calls_per_s,
        "x_direct": _ratio(r.calls_per_s, direct.calls_per_s if direct else None),
        "x_pass": _ratio(r.calls_per_s, passthrough.calls_per_s if passthrough else None),
        "p50": r.p50_ms,
        "p99": r.p99_ms,
        "add_p50": _minus(r.p50_ms, base.p50_ms) if base else None,
        "add_p95": _minus(r.p95_ms, base.p95_ms) if base else None,
        "add_p99": _minus(r.p99_ms, base.p99_ms) if base else None,
        "add_ttft": _minus(r.ttft_p50_ms, base.ttft_p50_ms) if base else None,
        "server_cpu": r.cpu.server_ms if has_server else None,
        "db_cpu": r.cpu.db_ms if has_db else None,
        "rss": r.peak_rss_mib,
        "errors": float(r.errors),
    }


def rows_of_phase(results: list[PhaseResult], targets: list[str], db_targets: set[str]) -> dict[str, Row]:
    """Target name -> row, for the results of one phase of one repetition, in `targets` order."""
    by_name = {r.target: r for r in results}
    direct, passthrough = by_name.get("direct"), by_name.get("passthrough")
    return {name: phase_row(by_name[name], direct, passthrough, name != "direct", name in db_targets)
            for name in targets if name in by_name}


def median_rows(per_rep: list[dict[str, Row]]) -> dict[str, Row]:
    """The median of each figure over repetitions (a figure missing in a repetition is left out)."""
    names = list(dict.fromkeys(name for rows in per_rep for name in rows))
    out: dict[str, Row] = {}
    for name in names:
        rows = [rows[name] for rows in per_rep if name in rows]
        out[name] = {key: _median(row[key] for row in rows) for key in [c.key for c in COLUMNS] + HIDDEN}
        out[name]["errors"] = sum(row["errors"] or 0 for row in rows)  # errors add up, not median
    return out


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(present) if present else None


def _cell(value: float | None, column: Column) -> str:
    """The value right-aligned in its column, always at least one space from its neighbour."""
    if value is None or math.isnan(value):
        return f"{'-':>{column.width}}"
    text = f"{value:.{column.digits}f}"
    return f"{text:>{column.width}}" if len(text) < column.width else " " + text


def render_table(spec: PhaseSpec, rows: dict[str, Row], name_width: int = 20) -> list[str]:
    """One phase's table."""
    columns = [c for c in COLUMNS if spec.stream or c.key not in STREAM_ONLY]
    lines = [f"{'target':<{name_width}}" + "".join(f"{c.head:>{c.width}}" for c in columns)]
    for name, row in rows.items():
        lines.append(f"{name:<{name_width}}" + "".join(_cell(row.get(c.key), c) for c in columns))
    return lines


LEGEND = [
    "calls/s: successful calls per second of wall time; x direct / x pass: calls/s over the direct /",
    "  passthrough row; p50 ms: client-side latency to the last byte; +p50/+p95/+p99: that percentile",
    "  minus the direct row's (ms); +TTFT50: p50 time to the first content token minus direct's (ms);",
    "  srv CPU / db CPU: CPU ms per call of the server's process tree / of PostgreSQL (its backends for",
    "  the run's database and its shared processes); RSS MiB: peak VmRSS of the server's process tree",
    "  during the phase (warm-up included); errors: failed calls, warm-up included.",
]


def render_phase_tables(title: str, specs: list[PhaseSpec],
                        rows_by_phase: dict[str, dict[str, Row]]) -> list[str]:
    """A title, then one table per phase."""
    lines = [title]
    for spec in specs:
        if rows := rows_by_phase.get(spec.name):
            lines += ["", f"  {spec.title}"] + ["    " + line for line in render_table(spec, rows)]
    return [*lines, ""]


def versus_litellm(per_rep: list[dict[str, dict[str, Row]]], specs: list[PhaseSpec],
                   gateways: list[str]) -> list[str]:
    """Each gateway target against LiteLLM: the median over repetitions of each repetition's ratio."""
    head = (f"    {'phase':<12}{'target':<20}{'calls/s ratio':>14}{'CPU/call ratio':>15}"
            f"{'+p50 ms: alumia':>17}{'litellm':>9}")
    lines = ["Alumia vs LiteLLM (median over repetitions of each repetition's ratio; calls/s ratio > 1:",
             "Alumia does more calls per second; CPU/call ratio < 1: Alumia spends less CPU per call,",
             "server + db; +p50: added p50 latency against direct, ms)",
             head]
    found = False
    for spec in specs:
        for name in gateways:
            pairs = [(reps[spec.name][name], reps[spec.name]["litellm"]) for reps in per_rep
                     if spec.name in reps and name in reps[spec.name] and "litellm" in reps[spec.name]]
            if not pairs:
                continue
            found = True
            calls = _median(_ratio(a["calls_per_s"], b["calls_per_s"]) for a, b in pairs)
            cpu = _median(_ratio(_cpu(a), _cpu(b)) for a, b in pairs)
            add_a, add_b = _median(a["add_p50"] for a, _ in pairs), _median(b["add_p50"] for _, b in pairs)
            lines.append(f"    {spec.name:<12}{name:<20}{_fmt(calls, 14, 2)}{_fmt(cpu, 15, 2)}"
                         f"{_fmt(add_a, 17, 2)}{_fmt(add_b, 9, 2)}")
    return [*lines, ""] if found else []


def _cpu(row: Row) -> float | None:
    if row["server_cpu"] is None:
        return None
    return row["server_cpu"] + (row["db_cpu"] or 0.0)


def _fmt(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def workers_table(one: dict[str, Row], two: dict[str, Row], names: list[tuple[str, str]],
                  cores_note: str) -> list[str]:
    """`--workers 2` against one worker, non-streaming c=32: (one-worker target, two-worker target) pairs."""
    lines = [f"Gateway with --workers 2 ({cores_note})",
             "vs --workers 1 (core 0, the median of the repetitions above), non-streaming, high concurrency",
             f"    {'target':<20}{'1w calls/s':>11}{'2w calls/s':>11}{'2w / 1w':>9}{'1w p99':>8}{'2w p99':>8}"
             f"{'2w srv CPU':>11}{'2w db CPU':>10}{'2w RSS MiB':>11}{'errors':>7}"]
    for first, second in names:
        a, b = one.get(first), two.get(second)
        if a is None or b is None:
            continue
        lines.append(f"    {first:<20}{_fmt(a['calls_per_s'], 11, 1)}{_fmt(b['calls_per_s'], 11, 1)}"
                     f"{_fmt(_ratio(b['calls_per_s'], a['calls_per_s']), 9, 2)}"
                     f"{_fmt(a['p99'], 8, 1)}{_fmt(b['p99'], 8, 1)}{_fmt(b['server_cpu'], 11, 2)}"
                     f"{_fmt(b['db_cpu'], 10, 2)}{_fmt(b['rss'], 11, 1)}{_fmt(b['errors'], 7, 0)}")
    return [*lines, ""]


def render_checks(checks: list[RepCheck]) -> list[str]:
    """The database checks, one line each."""
    lines = ["Database checks (after each gateway run: usage records = successful calls, no error records,",
             "balance = sum of ledger entries, no open holds)"]
    lines += [f"    {'ok    ' if c.check.ok else 'FAILED'} {_run_name(c.rep)} {c.server:<10} {c.check.text}"
              for c in checks]
    if not checks:
        lines.append("    (no gateway run)")
    return [*lines, ""]


def noise_lines(busy_before_pct: float, results: list[RepResult]) -> list[str]:
    """Warnings when something besides the benchmark used the machine (neighbours skew every number)."""
    lines = []
    if busy_before_pct > NOISE_PCT:
        lines.append(f"WARNING: the machine was {busy_before_pct:.0f}% busy (all cores) before the run")
    noisy = [r for r in results if r.result.cpu.others_busy_pct > NOISE_PCT]
    if noisy:
        worst = max(noisy, key=lambda r: r.result.cpu.others_busy_pct)
        share = worst.result.cpu.others_busy_pct
        lines.append(f"WARNING: other processes used more than {NOISE_PCT:.0f}% of all cores during "
                     f"{len(noisy)} of {len(results)} phases (worst: {share:.0f}% in {_run_name(worst.rep)} "
                     f"{worst.result.phase}/{worst.result.target}); compare within a repetition")
    return lines


def _run_name(rep: int) -> str:
    """"rep N", or "workers-2" for the --workers 2 comparison (repetition 0)."""
    return f"rep {rep}" if rep else "workers-2"


def error_lines(results: list[RepResult]) -> list[str]:
    """Samples of what went wrong, per phase that had errors."""
    return [f"errors in {_run_name(r.rep)} {r.result.phase}/{r.result.target}: {r.result.errors}, e.g. "
            f"{'; '.join(r.result.error_samples)}" for r in results if r.result.errors]


def partial_lines(results: list[RepResult]) -> list[str]:
    """Phases that hit --phase-timeout before sending all their calls."""
    return [f"PARTIAL: {_run_name(r.rep)} {r.result.phase}/{r.result.target} sent {r.result.calls} of "
            f"{r.result.requested} calls before --phase-timeout" for r in results if r.result.partial]


def group_by(items: Iterable[RepResult], key: Callable[[RepResult], object]) -> dict[object, list[RepResult]]:
    """Items grouped by `key`, in first-seen order."""
    out: dict[object, list[RepResult]] = {}
    for item in items:
        out.setdefault(key(item), []).append(item)
    return out
