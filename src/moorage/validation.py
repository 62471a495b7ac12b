"""Validate AWS JSON operation input against a botocore service model, used as data.

One validator per face: ECR (`ecr/validation.py`, the default model) and Secrets Manager
(`secretsmanager/`, `InputValidator(service_model("secretsmanager"), constraint_code=VALIDATION,
lower_camel_paths=True)`: Secrets Manager reports model constraints as Coral does,
"1 validation error detected: Value ... at 'secretId' ..."). The rules below are ECR's wording.

No rule is copied by hand: `InputValidator` walks each operation's input shape once at
construction and compiles it into a tree of small checker nodes (type check, required
members, min/max, enum, pattern). `validate(operation, params)` then walks the decoded JSON
body along that tree; a typical call costs a few microseconds.

Behaviour, and the decisions behind it:

* The body must be a JSON object, otherwise `SerializationException`.
* Unknown members are ignored, at every depth, as AWS JSON services do for forward
  compatibility; only modeled members are looked at. A JSON `null` member counts as absent.
* Type mismatches raise `SerializationException` at once (no collection) with
  `<TOKEN> can not be converted to <a|an> <Type>`, where TOKEN names the JSON value
  (`STRING_VALUE`, `NUMBER_VALUE`, `BOOLEAN_VALUE`, `START_ARRAY`, `START_OBJECT`,
  `NULL_VALUE`) and Type the modeled type (`String`, `Integer`, `Long`, `Float`, `Double`,
  `Boolean`, `Timestamp`, `Blob`, `List`, `Map`, `Structure`), e.g. "STRING_VALUE can not be
  converted to an Integer". Integers/longs must be JSON integers (not booleans, not floats)
  inside the 32/64-bit signed range; timestamps are epoch numbers or ISO-8601 strings; blobs
  are strict base64 strings (they are decoded to check, and to measure min/max in bytes, but
  returned unchanged). The same message form covers a string that is not valid base64 or
  ISO-8601 ("STRING_VALUE can not be converted to a Blob").
* Constraint violations are all collected, in model member order (depth first); for one value,
  length comes before pattern before enum. Rules (botocore trait → rule text):
  required → "Member must not be null"; min/max on strings (UTF-16 code units, as Java
  counts), lists and maps → "Member must have length greater than or equal to N" /
  "... less than or equal to N"; on blobs the same, in decoded bytes; min/max on numbers →
  "Member must have value greater than or equal to N" / "... less than or equal to N";
  enum → "Member must satisfy enum value set: [A, B, C]"; pattern → "Member must satisfy
  regular expression pattern: <pattern>". Patterns must match the WHOLE value (`fullmatch`),
  compiled once with `re.ASCII` (Java's `\\w`, `\\d` are ASCII); the few Java-only
  constructs Python lacks (`\\p{Alnum}`-style POSIX classes, `\\z`) are translated, anything
  else untranslatable fails at construction. No ECR pattern needs translation today.
* Which error code (`_constraint_error_code`, the only mapping): an operation whose modeled
  errors include `InvalidParameterException` answers with it, reporting the FIRST violation
  as ECR does: "Invalid parameter at '<path>' failed to satisfy constraint: '<rule>'", where
  <rule> is the rule text above except for patterns, which use ECR's observed wording
  "must satisfy regular expression '<pattern>'" (semantics.md §2.1/§19); a missing member
  reads "... constraint: 'Member must not be null'". Otherwise (only `ValidationException`
  modeled, or neither) → `ValidationException` with AWS's collected form
  "N validation error(s) detected: Value '<v>' at '<path>' failed to satisfy constraint:
  <rule>; Value null at ...". Values render Java-style (`[a, b]`, `{k=v}`, `true`), are cut
  to 1024 characters, and are omitted ("Value at '<path>'") for `sensitive` shapes.
* Every string (map keys too) must be storable text: a NUL character, or an unpaired UTF-16
  surrogate (JSON can escape one: `"\\ud800"`), is a violation ("Member must not contain the NUL
  character" / "Member must contain only valid Unicode characters (no unpaired surrogates)"),
  reported before the string's length, pattern and enum rules. The JSON decoding before
  validation (`ecr/wire.py: decode_body`) bounds the nesting depth and refuses NaN/Infinity.
* Paths use AWS's style: member names joined by `.`, list items as 1-based `<n>.member`
  (`imageIds.1.member.imageTag`), map values as `<map>.<key>` (key violations report there too).
"""

from __future__ import annotations

import binascii
import functools
import math
import re
import warnings
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

import botocore.session
from botocore.model import ServiceModel, Shape

__all__ = [
    "INVALID_PARAMETER",
    "SERIALIZATION",
    "VALIDATION",
    "InputValidator",
    "ValidationFailure",
    "operation_names",
    "service_model",
]

SERIALIZATION: Final = "SerializationException"
INVALID_PARAMETER: Final = "InvalidParameterException"
VALIDATION: Final = "ValidationException"

_MAX_RENDERED: Final = 1024
_INT_RANGES: Final = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_NULL_RULE: Final = "Member must not be null"
# Text no store can hold: JSON lets a body escape a lone UTF-16 surrogate (`"\\ud800"`), which is
# no Unicode scalar value (a decoded pair is one code point, so any surrogate left is unpaired),
# and NUL, which PostgreSQL text refuses. Both are refused in every string member.
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_SURROGATE_RULE: Final = "Member must contain only valid Unicode characters (no unpaired surrogates)"
_NUL_RULE_TEXT: Final = "Member must not contain the NUL character"


class ValidationFailure(Exception):
    """An input the operation must reject; `code` is the wire error name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _constraint_error_code(modeled_errors: frozenset[str]) -> str:
    """The single place deciding which exception reports constraint violations."""
    return INVALID_PARAMETER if INVALID_PARAMETER in modeled_errors else VALIDATION


# --- Java regex translation -------------------------------------------------------------------

_JAVA_POSIX_CLASSES: Final = {
    "Lower": "a-z",
    "Upper": "A-Z",
    "Alpha": "a-zA-Z",
    "Digit": "0-9",
    "Alnum": "a-zA-Z0-9",
    "XDigit": "0-9a-fA-F",
    "Space": " \\t\\n\\x0b\\f\\r",
}


def _java_regex_to_python(pattern: str) -> str:
    """Rewrite the Java-only constructs Python's `re` lacks; raise ValueError for the rest."""
    out: list[str] = []
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if nxt in "pP" and pattern.startswith("{", i + 2):
                end = pattern.find("}", i + 3)
                name = pattern[i + 3 : end] if end > 0 else ""
                ranges = _JAVA_POSIX_CLASSES.get(name.removeprefix("Is"))
                if ranges is None or (nxt == "P" and in_class):
                    raise ValueError(f"unsupported Java regex construct \\{nxt}{{{name}}} in {pattern!r}")
                out.append(ranges if in_class else f"[{'^' if nxt == 'P' else ''}{ranges}]")
                i = end + 1
                continue
            out.append("\\Z" if nxt == "z" else pattern[i : i + 2])
            i += 2
            continue
        if in_class and (c == "[" or pattern.startswith("&&", i)):
            raise ValueError(f"unsupported Java character-class union/intersection in {pattern!r}")
        if c == "[" and not in_class:
            in_class = True
            out.append(c)
            i += 1
            if i < n and pattern[i] == "^":  # a leading "]" would be literal in both dialects
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":
                out.append("\\]")
                i += 1
            continue
        if c == "]" and in_class:
            in_class = False
        out.append(c)
        i += 1
    return "".join(out)


def _compile_pattern(pattern: str) -> re.Pattern[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        try:
            return re.compile(_java_regex_to_python(pattern), re.ASCII)
        except (re.error, FutureWarning) as exc:
            raise ValueError(f"cannot compile model pattern {pattern!r}: {exc}") from exc


# --- messages ----------------------------------------------------------------------------------


def _token(value: object) -> str:
    if value is None:
        return "NULL_VALUE"
    if isinstance(value, bool):
        return "BOOLEAN_VALUE"
    if isinstance(value, str):
        return "STRING_VALUE"
    if isinstance(value, int | float):
        return "NUMBER_VALUE"
    if isinstance(value, list):
        return "START_ARRAY"
    if isinstance(value, dict):
        return "START_OBJECT"
    return type(value).__name__


def _mismatch(value: object, target: str) -> ValidationFailure:
    article = "an" if target[0] in "AEIOU" else "a"
    return ValidationFailure(SERIALIZATION, f"{_token(value)} can not be converted to {article} {target}")


def _render(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_render(v)}" for k, v in value.items()) + "}"
    return str(value)


Seg = str | int  # a member / map key, or a 1-based list index


def _join(parent: str, seg: Seg) -> str:
    s = f"{seg}.member" if isinstance(seg, int) else seg
    return f"{parent}.{s}" if parent else s


class _Violation:
    __slots__ = ("ipe_rule", "parent", "seg", "sensitive", "value", "ve_rule")

    def __init__(self, parent: str, seg: Seg, value: object, ve_rule: str, ipe_rule: str, sensitive: bool) -> None:
        self.parent, self.seg, self.value = parent, seg, value
        self.ve_rule, self.ipe_rule, self.sensitive = ve_rule, ipe_rule, sensitive

    @property
    def path(self) -> str:
        return _join(self.parent, self.seg)

    def ve_text(self) -> str:
        if self.sensitive:
            shown = "Value"
        elif self.value is None:
            shown = "Value null"
        else:
            rendered = _render(self.value)
            if len(rendered) > _MAX_RENDERED:
                rendered = rendered[:_MAX_RENDERED] + "..."
            shown = f"Value '{rendered}'"
        return f"{shown} at '{self.path}' failed to satisfy constraint: {self.ve_rule}"


def _null(parent: str, seg: Seg) -> _Violation:
    return _Violation(parent, seg, None, _NULL_RULE, _NULL_RULE, False)


Errors = list[_Violation]


# --- checker nodes -----------------------------------------------------------------------------


class _Node:
    """Checks one value of one shape; raises on type mismatch, appends constraint violations."""

    __slots__ = ("sensitive",)

    def __init__(self, shape: Shape) -> None:
        self.sensitive = bool(shape.metadata.get("sensitive", False))

    def check(self, value: object, parent: str, seg: Seg, errs: Errors) -> None:
        """Accept anything (document shapes, types unknown to this module)."""

    def _add(self, errs: Errors, parent: str, seg: Seg, value: object, ve_rule: str, ipe: str = "") -> None:
        errs.append(_Violation(parent, seg, value, ve_rule, ipe or ve_rule, self.sensitive))


def _length_rules(shape: Shape) -> tuple[int | None, int | None, str, str]:
    lo, hi = shape.metadata.get("min"), shape.metadata.get("max")
    return (
        None if lo is None or lo <= 0 else int(lo),
        None if hi is None else int(hi),
        f"Member must have length greater than or equal to {lo}",
        f"Member must have length less than or equal to {hi}",
    )


class _String(_Node):
    __slots__ = ("enum", "enum_rule", "hi", "hi_rule", "lo", "lo_rule", "pat_ipe", "pat_ve", "pattern")

    def __init__(self, shape: Shape) -> None:
        super().__init__(shape)
        self.lo, self.hi, self.lo_rule, self.hi_rule = _length_rules(shape)
        raw = shape.metadata.get("pattern")
        self.pattern = None if raw is None else _compile_pattern(raw)
        self.pat_ve = f"Member must satisfy regular expression pattern: {raw}"
        self.pat_ipe = f"must satisfy regular expression '{raw}'"
        enum = shape.metadata.get("enum")
        self.enum = None if enum is None else frozenset(enum)
        self.enum_rule = f"Member must satisfy enum value set: [{', '.join(enum or ())}]"

    def check(self, value: object, parent: str, seg: Seg, errs: Errors) -> None:
        if not isinstance(value, str):
            raise _mismatch(value, "String")
        ascii_only = value.isascii()
        if "\x00" in value:
            self._add(errs, parent, seg, value, _NUL_RULE_TEXT)
        if not ascii_only and _SURROGATE.search(value) is not None:
            self._add(errs, parent, seg, value, _SURROGATE_RULE)
        if self.lo is not None or self.hi is not None:
            n = len(value) if ascii_only else len(value.encode("utf-16-le", "surrogatepass")) // 2
            if self.lo is not None and n < self.lo:
                self._add(errs, parent, seg, value, self.lo_rule)
            if self.hi is not None and n > self.hi:
                self._add(errs, parent, seg, value, self.hi_rule)
        if self.pattern is not None and self.pattern.fullmatch(value) is None:
            self._add(errs, parent, seg, value, self.pat_ve, self.pat_ipe)
        if self.enum is not None and value not in self.enum:
            self._add(errs, parent, seg, value, self.enum_rule)


class _Number(_Node):
    __slots__ = ("bounds", "hi", "hi_rule", "integral", "lo", "lo_rule", "target")

    def __init__(self, shape: Shape) -> None:
        super().__init__(shape)
        self.integral = shape.type_name in _INT_RANGES
        self.bounds = _INT_RANGES.get(shape.type_name)
        self.target = shape.type_name.capitalize()
        self.lo, self.hi = shape.metadata.get("min"), shape.metadata.get("max")
        self.lo_rule = f"Member must have value greater than or equal to {self.lo}"
        self.hi_rule = f"Member must have value less than or equal to {self.hi}"

    def check(self, value: object, parent: str, seg: Seg, errs: Errors) -> None:
        if isinstance(value, bool):
            raise _mismatch(value, self.target)
        if isinstance(value, int):
            if self.bounds is not None and not self.bounds[0] <= value <= self.bounds[1]:
                raise _mismatch(value, self.target)
        elif not isinstance(value, float) or self.integral or not math.isfinite(value):
            raise _mismatch(value, self.target)
        if self.lo is not None and value < self.lo:
            self._add(errs, parent, seg, value, self.lo_rule)
        if self.hi is not None and value > self.hi:
            self._add(errs, parent, seg, value, self.hi_rule)


class _Boolean(_Node):
    __slots__ = ()

    def check(self, value: object, parent: str, seg: Seg, errs: Errors) -> None:
        if not isinstance(value, bool):
            raise _mismatch(value, "Boolean")


class _Timestamp(_Node):
    __slots__ = ()

    def check(self, value: object, parent: str, seg: Seg, errs: Errors) -> None:
        if isinstance(value, bool):
            raise _mismatch(value, "Timestamp")
        if isinstance(value, int):
            return
        if isinstance(value, float):
            if math.isfinite(value):
                return
            raise _mismatch(value, "Timestamp")
        if isinstance(value, str):
            try:
                datetime.fromisoformat(value)
            except ValueError:
                raise _mismatch(value, "Timestamp") from None
            return
        raise _mismatch(value, "Timestamp")


class _Blob(_Node):
    __slots__ = ("hi", "hi_rule", "lo", "lo_rule")

    def __init__(self, shape: Shape) -> None:
        super().__init__(shape)
        self.lo, self.hi, self.lo_rule, self.hi_rule = _length_rules(shape)

    def check(self, value: object, parent: str, seg: Seg, errs: Errors) -> None:
        if not isinstance(value, str):
            raise _mismatch(value, "Blob")
        try:
            n = len(binascii.a2b_base64(value, strict_mode=True))
        except (binascii.Error, ValueError):  # ValueError: non-ASCII text
            raise _mismatch(value, "Blob") from None
        if self.lo is not None and n < self.lo:
            self._add(errs, parent, seg, value, self.lo_rule)
        if self.hi is not None and n > self.hi:
            self._add(errs, parent, seg, value, self.hi_rule)


class _List(_Node):
    __slots__ = ("hi", "hi_rule", "item", "lo", "lo_rule")

    def __init__(self, shape: Shape, item: _Node) -> None:
        super().__init__(shape)
        self.lo, self.hi, self.lo_rule, self.hi_rule = _length_rules(shape)
        self.item = item

    def check(self, value: object, parent: str, seg: Seg, errs: Errors) -> None:
        if not isinstance(value, list):
            raise _mismatch(value, "List")
        n = len(value)
        if self.lo is not None and n < self.lo:
            self._add(errs, parent, seg, value, self.lo_rule)
        if self.hi is not None and n > self.hi:
            self._add(errs, parent, seg, value, self.hi_rule)
        if n:
            path, check = _join(parent, seg), self.item.check
            for i, item in enumerate(value, 1):
                if item is None:
                    errs.append(_null(path, i))
                else:
                    check(item, path, i, errs)


class _Map(_Node):
    __slots__ = ("hi", "hi_rule", "key", "lo", "lo_rule", "val")

    def __init__(self, shape: Shape, key: _Node, val: _Node) -> None:
        super().__init__(shape)
        self.lo, self.hi, self.lo_rule, self.hi_rule = _length_rules(shape)
        self.key, self.val = key, val

    def check(self, value: object, parent: str, seg: Seg, errs: Errors) -> None:
        if not isinstance(value, dict):
            raise _mismatch(value, "Map")
        n = len(value)
        if self.lo is not None and n < self.lo:
            self._add(errs, parent, seg, value, self.lo_rule)
        if self.hi is not None and n > self.hi:
            self._add(errs, parent, seg, value, self.hi_rule)
        path = _join(parent, seg)
        for k, v in value.items():
            key = str(k)
            self.key.check(k, path, key, errs)
            if v is None:
                errs.append(_null(path, key))
            else:
                self.val.check(v, path, key, errs)


class _Structure(_Node):
    __slots__ = ("members",)

    def __init__(self, shape: Shape) -> None:
        super().__init__(shape)
        # (member, node, required, name in error paths), filled after memoization
        self.members: tuple[tuple[str, _Node, bool, str], ...] = ()

    def check(self, value: object, parent: str, seg: Seg, errs: Errors) -> None:
        if not isinstance(value, dict):
            raise _mismatch(value, "Structure")
        self.check_members(value, _join(parent, seg), errs)

    def check_members(self, value: dict[Any, Any], path: str, errs: Errors) -> None:
        get = value.get
        for name, node, required, shown in self.members:
            v = get(name)
            if v is None:
                if required:
                    errs.append(_null(path, shown))
            else:
                node.check(v, path, shown, errs)


_SCALARS: Final[dict[str, Callable[[Shape], _Node]]] = {
    "string": _String,
    "integer": _Number,
    "long": _Number,
    "float": _Number,
    "double": _Number,
    "boolean": _Boolean,
    "timestamp": _Timestamp,
    "blob": _Blob,
}


class _Compiler:
    def __init__(self, lower_camel_paths: bool = False) -> None:
        self.memo: dict[str, _Node] = {}
        self.lower_camel = lower_camel_paths

    def path_name(self, member: str) -> str:
        return member[:1].lower() + member[1:] if self.lower_camel else member

    def node(self, shape: Shape) -> _Node:
        found = self.memo.get(shape.name)
        if found is not None:
            return found
        kind = shape.type_name
        node: _Node
        if kind == "structure" and not shape.metadata.get("document"):
            struct = _Structure(shape)
            self.memo[shape.name] = struct  # before members: tolerate recursive shapes
            required = set(shape.required_members)
            struct.members = tuple(
                (name, self.node(member), name in required, self.path_name(name))
                for name, member in shape.members.items()
            )
            return struct
        if kind == "list":
            node = _List(shape, self.node(shape.member))
        elif kind == "map":
            node = _Map(shape, self.node(shape.key), self.node(shape.value))
        elif kind in _SCALARS:
            node = _SCALARS[kind](shape)
        else:
            node = _Node(shape)
        self.memo[shape.name] = node
        return node


class _Operation:
    __slots__ = ("code", "root")

    def __init__(self, root: _Structure | None, code: str) -> None:
        self.root, self.code = root, code

    def failure(self, errs: Errors) -> ValidationFailure:
        if self.code == INVALID_PARAMETER:
            first = errs[0]
            return ValidationFailure(
                INVALID_PARAMETER,
                f"Invalid parameter at '{first.path}' failed to satisfy constraint: '{first.ipe_rule}'",
            )
        n = len(errs)
        head = f"{n} validation error{'s' if n > 1 else ''} detected: "
        return ValidationFailure(self.code, head + "; ".join(e.ve_text() for e in errs))


@functools.cache
def service_model(name: str) -> ServiceModel:
    """botocore's model of an AWS service (loaded once per process)."""
    return botocore.session.get_session().get_service_model(name)


def _default_model() -> ServiceModel:
    return service_model("ecr")


def operation_names(service: str = "ecr") -> frozenset[str]:
    """Every operation of botocore's model of `service` (default ECR)."""
    return frozenset(service_model(service).operation_names)


class InputValidator:
    """Validates decoded JSON input of any operation of one service model (default: ECR).
    `constraint_code` fixes the error code of constraint violations (else the model's errors
    decide, ECR's way); `lower_camel_paths` writes member paths as Coral services other than ECR
    do (`secretId`, `tags.1.member.key`)."""

    def __init__(
        self,
        service_model: ServiceModel | None = None,
        *,
        constraint_code: str | None = None,
        lower_camel_paths: bool = False,
    ) -> None:
        model = _default_model() if service_model is None else service_model
        compiler = _Compiler(lower_camel_paths)
        self._ops: dict[str, _Operation] = {}
        for name in model.operation_names:
            op = model.operation_model(name)
            shape = op.input_shape
            root = None if shape is None else compiler.node(shape)
            errors = frozenset(e.name for e in op.error_shapes)
            code = constraint_code or _constraint_error_code(errors)
            self._ops[name] = _Operation(root if isinstance(root, _Structure) else None, code)

    @property
    def operation_names(self) -> frozenset[str]:
        return frozenset(self._ops)

    def error_code(self, operation_name: str) -> str:
        """The code this operation uses for constraint violations."""
        return self._ops[operation_name].code

    def validate(self, operation_name: str, params: object) -> dict[str, Any]:
        """Return `params` unchanged if valid, else raise ValidationFailure.

        An unknown operation name raises KeyError: the dispatcher answers those before this.
        """
        op = self._ops.get(operation_name)
        if op is None:
            raise KeyError(f"unknown operation {operation_name!r}")
        if not isinstance(params, dict):
            raise _mismatch(params, "Structure")
        if op.root is not None:
            errs: Errors = []
            op.root.check_members(params, "", errs)
            if errs:
                raise op.failure(errs)
        return params
