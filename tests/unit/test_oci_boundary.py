"""The registry API's input boundary for pagination: `?n=` is ASCII digits of any length (a page
is at most MAX_PAGE), `?last=` never carries text a store cannot hold (PostgreSQL text refuses
NUL), and cutting it at a NUL keeps the page the same."""

from __future__ import annotations

import pytest

from moorage.errors import PaginationInvalidError
from moorage.oci.manifests import MAX_PAGE, page_after, page_size

NAMES = ["a", "a-b", "a.b", "a/b", "a_b", "ab", "b"]


@pytest.mark.parametrize(
    ("raw", "size"),
    [
        (None, None),
        ("", None),
        ("0", 0),
        ("7", 7),
        ("000007", 7),
        (str(MAX_PAGE), MAX_PAGE),
        (str(MAX_PAGE + 1), MAX_PAGE),
        ("9" * 20, MAX_PAGE),
        ("9" * 5_000, MAX_PAGE),
        ("0" * 5_000 + "3", 3),
    ],
)
def test_page_size(raw: str | None, size: int | None) -> None:
    assert page_size(raw) == size


@pytest.mark.parametrize("raw", ["-1", "+1", " 5", "1.5", "1e3", "abc", "\u00b2", "\u0663", "\uff11", "5\x00"])
def test_page_size_that_is_not_ascii_digits_is_invalid(raw: str) -> None:
    with pytest.raises(PaginationInvalidError):
        page_size(raw)


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
