"""The registry API's input boundary for pagination: `?last=` never carries text a store cannot
hold (PostgreSQL text refuses NUL), and cutting it at a NUL keeps the page the same."""

from __future__ import annotations

import pytest

from moorage.oci.manifests import page_after

NAMES = ["a", "a-b", "a.b", "a/b", "a_b", "ab", "b"]


@pytest.mark.parametrize(
    ("last", "after"),
    [(None, None), ("", None), ("a/b", "a/b"), ("a\x00", "a"), ("a\x00zzz\x00", "a"), ("\x00b", None)],
)
def test_page_after(last: str | None, after: str | None) -> None:
    assert page_after(last) == after


@pytest.mark.parametrize("last", ["a\x00", "a\x00\x00", "a/\x00b", "\x00"])
def test_cutting_at_nul_selects_the_same_items(last: str) -> None:
    """Names and tags hold no character below `-`, so `> x<NUL>...` and `> x` select alike."""
    after = page_after(last)
    assert [n for n in NAMES if n > last] == [n for n in NAMES if after is None or n > after]
