"""Shared plumbing of the bench/ scripts: the CPU of a server process tree read from /proc,
the machine's busy time, free ports, the benchmarked source revision, logging."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

__all__ = [
    "CLK_TCK",
    "BenchError",
    "children",
    "cpu_seconds",
    "cpu_snapshot",
    "free_port",
    "log",
    "process_tree",
    "raise_on_sigterm",
    "source_revision",
    "system_busy_ticks",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A measurement could not be taken (bad response, server gone, tool missing)."""


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except OSError:
            continue
        found.extend(int(child) for child in text.split())
    return found


def process_tree(root: int) -> list[int]:
    """`root` and every live descendant (granian workers, their helpers)."""
    seen: list[int] = []
    stack = [root]
    while stack:
        pid = stack.pop()
        if pid in seen or not Path(f"/proc/{pid}").exists():
            continue
        seen.append(pid)
        stack.extend(children(pid))
    return seen


def _cpu_ticks(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def cpu_snapshot(root: int) -> dict[int, int]:
    snapshot: dict[int, int] = {}
    for pid in process_tree(root):
        ticks = _cpu_ticks(pid)
        if ticks is not None:
            snapshot[pid] = ticks
    return snapshot


def cpu_seconds(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU seconds spent between two snapshots by processes alive at the second one (a process
    that appeared in between counts in full)."""
    ticks = sum(max(now - before.get(pid, 0), 0) for pid, now in after.items())
    return ticks / CLK_TCK


def system_busy_ticks() -> int:
    """Busy CPU ticks of the whole machine (all cores) since boot, steal included."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return user + nice + system + irq + softirq + steal


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def granian_command(app: str, port: int) -> list[str]:
    """`app` ("module:attribute") under granian as `moorage serve` runs it: ASGI, uvloop, one
    worker, on 127.0.0.1:`port`. The benches' floor servers run this way."""
    return [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--loop",
        "uvloop",
        "--workers",
        "1",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        app,
    ]


def source_revision(source: Path) -> str:
    """`git describe`-like identity of the benchmarked moorage sources ("+dirty" when edited)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    return head + ("+dirty" if dirty else "")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
