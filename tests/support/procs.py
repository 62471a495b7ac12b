"""What the processes a test started use, read from /proc."""

from __future__ import annotations

from pathlib import Path


def rss_tree(root: int) -> dict[int, int]:
    """VmRSS in bytes of `root` and every descendant still alive."""
    found: dict[int, int] = {}
    pending = [root]
    while pending:
        pid = pending.pop()
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    found[pid] = int(line.split()[1]) * 1024
            for task in Path(f"/proc/{pid}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return found
