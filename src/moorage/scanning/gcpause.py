"""Pause Python's cyclic garbage collector around the scanner's CPU-bound steps.

Building an inventory and matching it make many small acyclic objects (tuples, keys, matches);
every full collection meanwhile walks all live objects again, the advisory snapshot's records
included. Reference counting still frees everything; the collector runs again right after.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["paused_gc"]


@contextmanager
def paused_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
