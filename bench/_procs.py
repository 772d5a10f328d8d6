"""The benchmark's child processes: started pinned to a core, watched (CPU time, memory), always stopped.

Everything here reads /proc, so it works on Linux only, as the benchmark does.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

CLK_TCK = os.sysconf("SC_CLK_TCK")
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
RSS_SAMPLE_S = 0.05


class BenchError(RuntimeError):
    """The benchmark could not set something up."""


# --------------------------------------------------------------------------------------------------
# Ports


def free_port() -> int:
    """A port nothing listens on right now, on 127.0.0.1 (for children that insist on binding it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening_socket() -> socket.socket:
    """A socket listening on 127.0.0.1 at a port the kernel chose, inheritable by a child."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=1024)
    sock.set_inheritable(True)
    return sock


# --------------------------------------------------------------------------------------------------
# Cores


@dataclass(frozen=True)
class Pinning:
    """Which cores the measured servers and the client side (load generator, upstream) run on."""

    server: frozenset[int] | None  # gateway, pass-through, LiteLLM; None: not pinned
    client: frozenset[int] | None  # this process and the upstream
    taskset: str | None  # the taskset binary; None: os.sched_setaffinity right after the start
    note: str

    def wrap(self, cores: frozenset[int] | None, argv: list[str]) -> list[str]:
        """`argv`, prefixed with `taskset -c <cores>` when it is to be pinned that way."""
        if cores is None or self.taskset is None:
            return argv
        return [self.taskset, "-c", ",".join(map(str, sorted(cores))), *argv]

    def after_start(self, cores: frozenset[int] | None, pid: int) -> None:
        """Without taskset: pin the freshly started child (threads it already made keep their mask)."""
        if cores is not None and self.taskset is None:
            with suppress(ProcessLookupError):
                os.sched_setaffinity(pid, cores)


def plan_pinning(enabled: bool) -> Pinning:
    """Servers on the first core we may use, the client side on the second; nothing pinned if fewer."""
    cores = sorted(os.sched_getaffinity(0))
    if not enabled:
        return Pinning(None, None, None, "not pinned (--no-pin)")
    if len(cores) < 2:
        return Pinning(None, None, None, f"not pinned: only core {cores} is available")
    server, client = frozenset(cores[:1]), frozenset(cores[1:2])
    taskset = shutil.which("taskset")
    how = ("with taskset" if taskset else
           "with os.sched_setaffinity after start (taskset, from util-linux, was not found)")
    return Pinning(server, client, taskset,
                   f"servers on core {cores[0]}, load generator and upstream on core {cores[1]}, {how}; "
                   "PostgreSQL is not pinned (it is not our child)")


def pin_self(pinning: Pinning) -> None:
    """Move this process (the load generator) to the client core."""
    if pinning.client is not None:
        os.sched_setaffinity(0, pinning.client)


def allowed_cores(pid: int) -> str:
    """The cores `pid` may run on, as /proc shows them (e.g. "0" or "0-1")."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    return "?"


# --------------------------------------------------------------------------------------------------
# Child processes


class ManagedProcess:
    """A child process in its own session, pinned, logging to a file; `stop` ends it and its group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path, *,
                 pinning: Pinning, cores: frozenset[int] | None, pass_fds: tuple[int, ...] = ()) -> None:
        self.name, self.argv, self.env, self.log_path = name, argv, env, log_path
        self.pinning, self.cores, self.pass_fds = pinning, cores, pass_fds
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process (not yet waiting for it to be ready)."""
        with self.log_path.open("wb") as log:
            # Own session: Ctrl-C reaches only us, and we stop the children in order.
            self.process = subprocess.Popen(self.pinning.wrap(self.cores, self.argv), env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, pass_fds=self.pass_fds)
        self.pinning.after_start(self.cores, self.process.pid)

    @property
    def pid(self) -> int:
        """The child's process id (taskset execs the command, so it is the server's own pid)."""
        assert self.process is not None
        return self.process.pid

    def wait_http_ok(self, url: str, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Poll `url` until it answers 200; fail with the log when the process exits or time runs out."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"{self.name} exited ({self.process.returncode}):\n{self.log_tail()}")
            with suppress(httpx.TransportError):
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise BenchError(f"{self.name} did not answer {url} within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the process's log."""
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL whatever is left of the child's own process group."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_TIMEOUT_S)
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # its own session: only its processes
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


@contextmanager
def managed(proc: ManagedProcess) -> Iterator[ManagedProcess]:
    """Start `proc` and stop it on the way out, whatever happens."""
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()


# --------------------------------------------------------------------------------------------------
# Process trees and memory


def children(pid: int) -> list[int]:
    """The direct children of `pid` (of all its threads)."""
    found: list[int] = []
    with suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def process_tree(root: int) -> list[int]:
    """`root` and every process below it (`alumia serve --workers N` forks workers)."""
    found, todo = [], [root]
    while todo and len(found) < 10_000:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children(pid))
    return found


def rss_kib(pid: int) -> int:
    """VmRSS of one process in KiB; 0 when it is gone."""
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def tree_rss_kib(root: int) -> int:
    """The summed VmRSS of `root` and its descendants, KiB."""
    return sum(rss_kib(pid) for pid in process_tree(root))


def wait_rss_settled(root: int, limit_s: float = 5.0, step_s: float = 0.25,
                     tolerance_kib: int = 1024) -> None:
    """Wait (at most `limit_s`) until the tree's memory stops moving for two steps in a row.

    A server's start-up transient (the gateway's grows by ~60 MiB for half a second right after it starts
    answering) is then not counted as the first phase's peak.
    """
    deadline = time.monotonic() + limit_s
    last, steady = tree_rss_kib(root), 0
    while steady < 2 and time.monotonic() < deadline:
        time.sleep(step_s)
        now = tree_rss_kib(root)
        steady = steady + 1 if abs(now - last) < tolerance_kib else 0
        last = now


class RssSampler:
    """Samples the summed VmRSS of a process tree in the background; `peak_mib` is the largest seen."""

    def __init__(self, root: int | None, interval: float = RSS_SAMPLE_S) -> None:
        self.root, self.interval = root, interval
        self.peak_kib = 0
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        """Take one sample now."""
        if self.root is not None:
            self.peak_kib = max(self.peak_kib, tree_rss_kib(self.root))

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        """Reset the peak and start sampling (call from a running event loop)."""
        self.peak_kib = 0
        if self.root is not None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> float | None:
        """Stop sampling; the peak in MiB, or None without a process to watch."""
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.sample()
        return self.peak_kib / 1024 if self.root is not None else None


# --------------------------------------------------------------------------------------------------
# CPU time (which process spent the cores during a phase)


@dataclass(frozen=True, slots=True)
class ProcInfo:
    """A process as /proc shows it: parent, command line, CPU seconds (all its threads)."""

    ppid: int
    cmdline: str
    cpu_s: float


def _read_proc(entry: Path) -> ProcInfo | None:
    try:
        fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return None
    # proc(5) stat fields 4 (ppid), 14 and 15 (utime, stime); the list starts at field 3.
    return ProcInfo(int(fields[1]), cmdline, (int(fields[11]) + int(fields[12])) / CLK_TCK)


def process_table() -> dict[int, ProcInfo]:
    """Every process we can see, by pid."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := _read_proc(entry)) is not None:
            table[int(entry.name)] = info
    return table


def _machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores summed."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return (total - idle) / CLK_TCK, total / CLK_TCK


def machine_busy_pct(seconds: float = 1.0) -> float:
    """How busy the machine is over `seconds` (all cores), before we add any load."""
    busy0, total0 = _machine_cpu_s()
    time.sleep(seconds)
    busy1, total1 = _machine_cpu_s()
    return 100 * (busy1 - busy0) / max(total1 - total0, 1e-9)


def serves_database(cmdline: str, db_name: str | None) -> bool:
    """Whether a PostgreSQL process works for the run's database.

    Backends are titled "postgres: [<cluster>:] <user> <database> <host(port)|[local]> <state>"; those
    of other databases belong to someone else. The shared processes (WAL writer, checkpointer,
    autovacuum, ...) are counted as ours: the run is what keeps them busy.
    """
    if db_name is None or not cmdline.startswith("postgres: "):
        return False
    words = cmdline.split()
    client = next((i for i, w in enumerate(words) if "(" in w or w == "[local]"), None)
    return client is None or words[client - 1] == db_name


@dataclass(frozen=True)
class Watched:
    """The processes whose CPU time a phase attributes."""

    upstream_pid: int
    server_pid: int | None  # the measured server's tree; None for `direct`
    db_name: str | None = None  # the PostgreSQL database; None for SQLite (it runs inside the gateway)


@dataclass
class CpuSnapshot:
    """CPU seconds used so far, per live process, by each party; and the whole machine's counters."""

    parties: dict[str, dict[int, float]]
    machine_busy: float
    machine_total: float

    @classmethod
    def take(cls, watched: Watched) -> CpuSnapshot:
        """Read the counters now."""
        table = process_table()
        server = process_tree(watched.server_pid) if watched.server_pid is not None else []
        db = [pid for pid, info in table.items() if serves_database(info.cmdline, watched.db_name)]
        groups = {"loadgen": [os.getpid()], "upstream": process_tree(watched.upstream_pid),
                  "server": [pid for pid in server if pid in table], "db": db}
        ours = {pid for pids in groups.values() for pid in pids}
        groups["others"] = [pid for pid in table if pid not in ours]
        parties = {party: {pid: table[pid].cpu_s for pid in pids if pid in table}
                   for party, pids in groups.items()}
        busy, total = _machine_cpu_s()
        return cls(parties, busy, total)

    def used_since(self, earlier: CpuSnapshot, party: str) -> float:
        """CPU seconds `party` used between `earlier` and this snapshot (new processes count whole)."""
        before = earlier.parties[party]
        return sum(now - before.get(pid, 0.0) for pid, now in self.parties[party].items())


@dataclass
class CpuUse:
    """CPU spent during one phase, in milliseconds per call, and how busy the machine was."""

    loadgen_ms: float
    upstream_ms: float
    server_ms: float  # the server's process tree; with SQLite this includes the database
    db_ms: float  # PostgreSQL: backends of the run's database and the server's shared processes
    others_ms: float  # every other live process: neighbours, kernel threads
    machine_busy_pct: float  # all cores
    others_busy_pct: float  # the part of machine_busy_pct that is `others` (neighbours)

    @classmethod
    def between(cls, a: CpuSnapshot, b: CpuSnapshot, calls: int) -> CpuUse:
        """The use between two snapshots, per call."""
        per_call = 1000 / max(calls, 1)
        used = {party: b.used_since(a, party) for party in a.parties}
        total = max(b.machine_total - a.machine_total, 1e-9)
        return cls(loadgen_ms=used["loadgen"] * per_call, upstream_ms=used["upstream"] * per_call,
                   server_ms=used["server"] * per_call, db_ms=used["db"] * per_call,
                   others_ms=used["others"] * per_call,
                   machine_busy_pct=100 * (b.machine_busy - a.machine_busy) / total,
                   others_busy_pct=100 * used["others"] / total)
