"""JSON request bodies parsed with limits: size, nesting depth and string validity.

Python's json module recurses once per nesting level (1,000 levels raise RecursionError)
and accepts lone UTF-16 surrogates (`"\\ud800"`), which later fail every UTF-8 encode (the
request hash, the store's wire format). Both must be a 400 at the door, not a 500 (or a
false "store unreachable" 503) somewhere behind it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from app.errors import validation_error

MAX_JSON_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


def _reject(message: str) -> Exception:
    return validation_error({"_body": [message]})


def _depth(raw: bytes) -> int:
    """Deepest bracket nesting outside string literals, without recursing."""
    depth = deepest = 0
    for match in _BRACKETS.finditer(_STRINGS.sub(b'""', raw)):
        if match.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                return deepest
        else:
            depth -= 1
    return deepest


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_strings(value: Any, path: str = "") -> None:
    """Every key and string must be encodable as UTF-8 (no lone surrogates)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise validation_error({path or "_body": ["Not a valid string."]}) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{path}.{key}" if path else str(key)
            _check_strings(key, path or "_body")
            _check_strings(item, name if key.isprintable() else path or "_body")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_strings(item, f"{path}.{index}" if path else str(index))


def parse_json(raw: bytes) -> Any:
    """The decoded body, or a 400 VALIDATION_ERROR saying what is wrong with it."""
    if len(raw) > MAX_JSON_BYTES:
        raise _reject(f"Body is larger than {MAX_JSON_BYTES} bytes.")
    if _depth(raw) > MAX_JSON_DEPTH:
        raise _reject(f"Body is nested deeper than {MAX_JSON_DEPTH} levels.")
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError included
        raise _reject("Invalid JSON.") from None
    _check_strings(value)
    return value
