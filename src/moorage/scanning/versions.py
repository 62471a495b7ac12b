"""Version order per ecosystem: dpkg, apk, rpm, PEP 440 and SemVer.

Each comparator returns a negative number, zero or a positive number like C's `strcmp`, and raises
`ValueError` for a version it cannot order (the OSV evaluator then falls back to exact matches).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cmp_to_key, lru_cache

from packaging.version import InvalidVersion, Version

Comparator = Callable[[str, str], int]


def _sign(n: int) -> int:
    return (n > 0) - (n < 0)


# --- dpkg (deb-version(5)) -------------------------------------------------------------------

_DPKG_EPOCH = re.compile(r"^(\d+):")


@lru_cache(maxsize=65536)
def _dpkg_split(version: str) -> tuple[int, str, str]:
    v = version.strip()
    if not v:
        raise ValueError("empty dpkg version")
    epoch = 0
    m = _DPKG_EPOCH.match(v)
    if m:
        epoch = int(m.group(1))
        v = v[m.end() :]
    elif ":" in v:
        raise ValueError(f"invalid dpkg epoch in {version!r}")
    upstream, sep, revision = v.rpartition("-")
    if not sep:
        upstream, revision = v, ""
    if not upstream or not upstream[0].isdigit():
        raise ValueError(f"dpkg upstream version must start with a digit: {version!r}")
    return epoch, upstream, revision


def _dpkg_order(c: str) -> int:
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isascii() and c.isalpha():
        return ord(c)
    return ord(c) + 256


def _dpkg_part(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _dpkg_order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            bc = _dpkg_order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def dpkg_split(version: str) -> tuple[int, str, str]:
    """(epoch, upstream, revision) of a dpkg version."""
    return _dpkg_split(version)


def compare_dpkg(a: str, b: str) -> int:
    ea, ua, ra = _dpkg_split(a)
    eb, ub, rb = _dpkg_split(b)
    if ea != eb:
        return _sign(ea - eb)
    return _sign(_dpkg_part(ua, ub)) or _sign(_dpkg_part(ra, rb))


# --- apk (apk-tools version.c) ---------------------------------------------------------------

_T_INVALID, _T_DIGIT_OR_ZERO, _T_DIGIT, _T_LETTER, _T_SUFFIX, _T_SUFFIX_NO, _T_REVISION_NO, _T_END = range(-1, 7)
_PRE_SUFFIXES = ("alpha", "beta", "pre", "rc")
_POST_SUFFIXES = ("cvs", "svn", "git", "hg", "p")


class _ApkCursor:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.type = _T_DIGIT

    def _next_type(self) -> None:
        s, i, t = self.s, self.i, self.type
        n = _T_INVALID
        if i >= len(s):
            n = _T_END
        elif t in (_T_DIGIT, _T_DIGIT_OR_ZERO) and s[i].islower():
            n = _T_LETTER
        elif t == _T_LETTER and s[i].isdigit():
            n = _T_DIGIT
        elif t == _T_SUFFIX and s[i].isdigit():
            n = _T_SUFFIX_NO
        else:
            c = s[i]
            if c == ".":
                n = _T_DIGIT_OR_ZERO
            elif c == "_":
                n = _T_SUFFIX
            elif c == "-" and i + 1 < len(s) and s[i + 1] == "r":
                n = _T_REVISION_NO
                self.i += 1
            self.i += 1
        if n < t and not (
            (n == _T_DIGIT_OR_ZERO and t == _T_DIGIT)
            or (n == _T_SUFFIX and t == _T_SUFFIX_NO)
            or (n == _T_DIGIT and t == _T_LETTER)
        ):
            n = _T_INVALID
        self.type = n

    def token(self) -> int:
        s = self.s
        if self.i >= len(s):
            self.type = _T_END
            return 0
        start = self.i
        i = start
        v = 0
        nt = _T_INVALID
        t = self.type
        if t == _T_DIGIT_OR_ZERO and s[i] == "0":
            while i < len(s) and s[i] == "0":
                i += 1
            nt = _T_DIGIT
            v = -(i - start)
        elif t in (_T_DIGIT_OR_ZERO, _T_DIGIT, _T_SUFFIX_NO, _T_REVISION_NO):
            while i < len(s) and s[i].isdigit():
                v = v * 10 + int(s[i])
                i += 1
        elif t == _T_LETTER:
            v = ord(s[i])
            i += 1
        elif t == _T_SUFFIX:
            rest = s[i:]
            for k, word in enumerate(_PRE_SUFFIXES):
                if rest.startswith(word):
                    v, i = k - len(_PRE_SUFFIXES) - 1, i + len(word)
                    break
            else:
                for k, word in enumerate(_POST_SUFFIXES):
                    if rest.startswith(word):
                        v, i = k, i + len(word)
                        break
                else:
                    self.type = _T_INVALID
                    return -1
        else:
            self.type = _T_INVALID
            return -1
        self.i = i
        if self.i >= len(s):
            self.type = _T_END
        elif nt != _T_INVALID:
            self.type = nt
        else:
            self._next_type()
        return v


_APK_VALID = re.compile(r"^\d+(\.\d+)*[a-z]?(_(alpha|beta|pre|rc|cvs|svn|git|hg|p)\d*)*(~[0-9a-f]+)?(-r\d+)?$")


def apk_valid(version: str) -> bool:
    return bool(_APK_VALID.match(version))


def compare_apk(a: str, b: str) -> int:
    """apk-tools' token walk: like apk, it orders even invalid strings up to their first bad token."""
    if not a or not b:
        raise ValueError("empty apk version")
    # A `~<hash>` commit suffix does not take part in the order here: strip it.
    a = re.sub(r"~[0-9a-f]+", "", a)
    b = re.sub(r"~[0-9a-f]+", "", b)
    ca, cb = _ApkCursor(a), _ApkCursor(b)
    av = bv = 0
    while ca.type == cb.type and ca.type not in (_T_END, _T_INVALID) and av == bv:
        av = ca.token()
        bv = cb.token()
    if av != bv:
        return -1 if av < bv else 1
    if ca.type == cb.type:
        return 0
    if ca.type == _T_SUFFIX:
        probe = _ApkCursor(ca.s)
        probe.i, probe.type = ca.i, ca.type
        if probe.token() < 0:
            return -1
    if cb.type == _T_SUFFIX:
        probe = _ApkCursor(cb.s)
        probe.i, probe.type = cb.i, cb.type
        if probe.token() < 0:
            return 1
    if ca.type > cb.type:
        return -1
    if cb.type > ca.type:
        return 1
    return 0


# --- rpm (rpmvercmp, rpm 4.18 lib/rpmvercmp.c) ------------------------------------------------


def _rpm_alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


def rpmvercmp(a: str, b: str) -> int:
    """rpm's segment order of two version (or release) strings: -1, 0 or 1.

    Runs of ASCII letters or digits are compared pairwise, numbers numerically (leading zeros
    ignored) and above letters, letters by strcmp; other characters only separate, except `~`
    (before everything, the end included) and `^` (after the end, before any further segment).
    """
    if a == b:
        return 0
    i = j = 0
    la, lb = len(a), len(b)
    while i < la or j < lb:
        while i < la and not _rpm_alnum(a[i]) and a[i] not in "~^":
            i += 1
        while j < lb and not _rpm_alnum(b[j]) and b[j] not in "~^":
            j += 1
        if (i < la and a[i] == "~") or (j < lb and b[j] == "~"):
            if not (i < la and a[i] == "~"):
                return 1
            if not (j < lb and b[j] == "~"):
                return -1
            i += 1
            j += 1
            continue
        if (i < la and a[i] == "^") or (j < lb and b[j] == "^"):
            if i >= la:
                return -1
            if j >= lb:
                return 1
            if a[i] != "^":
                return 1
            if b[j] != "^":
                return -1
            i += 1
            j += 1
            continue
        if i >= la or j >= lb:
            break
        si, sj = i, j
        numeric = a[i].isdigit()
        if numeric:
            while i < la and a[i].isascii() and a[i].isdigit():
                i += 1
            while j < lb and b[j].isascii() and b[j].isdigit():
                j += 1
        else:
            while i < la and a[i].isascii() and a[i].isalpha():
                i += 1
            while j < lb and b[j].isascii() and b[j].isalpha():
                j += 1
        x, y = a[si:i], b[sj:j]
        if not y:
            return 1 if numeric else -1  # segments of different kinds: the number wins
        if numeric:
            x, y = x.lstrip("0"), y.lstrip("0")
            if len(x) != len(y):
                return 1 if len(x) > len(y) else -1
        if x != y:
            return 1 if x > y else -1
    if i >= la and j >= lb:
        return 0
    return 1 if i < la else -1


@lru_cache(maxsize=65536)
def rpm_split(evr: str) -> tuple[int, str, str | None]:
    """(epoch, version, release) of `[epoch:]version[-release]`; a missing epoch is 0, a missing release None."""
    v = evr.strip()
    if not v:
        raise ValueError("empty rpm version")
    epoch = 0
    head, sep, rest = v.partition(":")
    if sep:
        if not head.isdigit():
            raise ValueError(f"invalid rpm epoch in {evr!r}")
        epoch, v = int(head), rest
    version, sep, release = v.rpartition("-")
    if not sep:
        return epoch, v, None
    return epoch, version, release


def compare_rpm(a: str, b: str) -> int:
    """OSV rpm ecosystems' order of `[epoch:]version[-release]` strings, as rpm's `rpm.vercmp`
    (rpmverCmp) orders them: epoch (missing = 0), then version, then release, a missing release
    being the empty string (so `1.0` < `1.0-1`)."""
    ea, va, ra = rpm_split(a)
    eb, vb, rb = rpm_split(b)
    if ea != eb:
        return _sign(ea - eb)
    return rpmvercmp(va, vb) or rpmvercmp(ra or "", rb or "")


# --- PEP 440 ---------------------------------------------------------------------------------


def compare_pep440(a: str, b: str) -> int:
    try:
        va, vb = Version(a), Version(b)
    except InvalidVersion as exc:
        raise ValueError(str(exc)) from exc
    return (va > vb) - (va < vb)


# --- SemVer 2.0.0 (loose: a leading `v` or `=` is accepted, as npm does) ----------------------

_SEMVER = re.compile(
    r"^[v=]?\s*(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)


def _semver_key(v: str) -> tuple[int, int, int, list[str] | None]:
    m = _SEMVER.match(v.strip())
    if not m:
        raise ValueError(f"invalid SemVer: {v!r}")
    pre = m.group(4)
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), (pre.split(".") if pre else None)


def _semver_ident(a: str, b: str) -> int:
    an, bn = a.isdigit(), b.isdigit()
    if an and bn:
        return _sign(int(a) - int(b))
    if an != bn:
        return -1 if an else 1
    return (a > b) - (a < b)


def compare_semver(a: str, b: str) -> int:
    ka, kb = _semver_key(a), _semver_key(b)
    if ka[:3] != kb[:3]:
        return -1 if ka[:3] < kb[:3] else 1
    pa, pb = ka[3], kb[3]
    if pa is None or pb is None:
        return 0 if pa is pb else (1 if pa is None else -1)
    for x, y in zip(pa, pb, strict=False):
        c = _semver_ident(x, y)
        if c:
            return c
    return _sign(len(pa) - len(pb))


# --- registry --------------------------------------------------------------------------------


def comparator_for(ecosystem: str) -> Comparator | None:
    """The version order of an OSV ecosystem (`Debian:12` → dpkg), or None when Moorage has none."""
    base = ecosystem.split(":", 1)[0]
    return _BY_BASE.get(base)


_BY_BASE: dict[str, Comparator] = {
    "Debian": compare_dpkg,
    "Ubuntu": compare_dpkg,
    "Alpine": compare_apk,
    "Red Hat": compare_rpm,
    "AlmaLinux": compare_rpm,
    "Rocky Linux": compare_rpm,
    "openSUSE": compare_rpm,
    "SUSE": compare_rpm,
    "PyPI": compare_pep440,
    "npm": compare_semver,
    "Go": compare_semver,
    "crates.io": compare_semver,
}


def sort_key(cmp: Comparator) -> Callable[[str], object]:
    return cmp_to_key(cmp)


# --- sort keys: the same orders as comparable values, computed once per version string -----------
#
# Matching compares one installed version with many advisory events; a key per string (cached) turns
# each comparison into a comparison of tuples, done in C. dpkg and SemVer have exact keys; the other
# orders wrap their comparator (`cmp_to_key`), which is as correct and as slow as the comparator.

VersionKey = Callable[[str], object]


def _dpkg_run_key(part: str) -> tuple[object, ...]:
    """deb-version(5) order of one part (upstream or revision) as a tuple: alternating non-digit
    runs (each a tuple of character weights ended by 0, the weight of the end of the string) and
    digit runs (ints, empty = 0); a final (0,) stands for the end, so `~` sorts below it."""
    out: list[object] = []
    i, n = 0, len(part)
    while True:
        j = i
        while j < n and not part[j].isdigit():
            j += 1
        out.append((*(_dpkg_order(c) for c in part[i:j]), 0))
        k = j
        while k < n and part[k].isdigit():
            k += 1
        out.append(int(part[j:k]) if k > j else 0)
        i = k
        if i >= n:
            break
    out.append((0,))
    return tuple(out)


@lru_cache(maxsize=262144)
def dpkg_key(version: str) -> tuple[int, tuple[object, ...], tuple[object, ...]]:
    epoch, upstream, revision = _dpkg_split(version)
    return epoch, _dpkg_run_key(upstream), _dpkg_run_key(revision)


@lru_cache(maxsize=262144)
def semver_key(version: str) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
    major, minor, patch, pre = _semver_key(version)
    if pre is None:
        return major, minor, patch, 1, ()
    return major, minor, patch, 0, tuple((0, int(x)) if x.isdigit() else (1, x) for x in pre)


@lru_cache(maxsize=262144)
def pep440_key(version: str) -> Version:
    try:
        return Version(version)
    except InvalidVersion as exc:
        raise ValueError(str(exc)) from exc


_CMP_KEYS: dict[Comparator, VersionKey] = {}


def key_for(cmp: Comparator) -> VersionKey:
    """A sort key with the comparator's order (raising ValueError, now or when compared, for a
    version the order does not know)."""
    if cmp is compare_dpkg:
        return dpkg_key
    if cmp is compare_semver:
        return semver_key
    if cmp is compare_pep440:
        return pep440_key
    if cmp not in _CMP_KEYS:
        wrap = cmp_to_key(cmp)
        _CMP_KEYS[cmp] = lru_cache(maxsize=65536)(wrap)
    return _CMP_KEYS[cmp]
