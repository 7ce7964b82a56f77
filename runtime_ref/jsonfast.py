"""JSON without ``import json``.

``json`` pulls in ``re`` and ``enum`` and costs ~8 ms at start-up, a third of
a whole ``runc run``.  Its C accelerator ``_json`` does the real work and
needs none of that, so we drive it directly.
"""
from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, NoReturn


class _Ctx:
    """The attributes ``_json.make_scanner`` reads from a JSONDecoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    def __init__(self) -> None:
        self.parse_constant: Callable[[str], NoReturn] = self._constant

    @staticmethod
    def _constant(name: str) -> NoReturn:
        raise ValueError("invalid JSON constant " + name)


_scan = _json.make_scanner(_Ctx())  # type: ignore[arg-type]  # typeshed wants a JSONDecoder: this is its shape
_WS = " \t\n\r"


def loads(text: str | bytes) -> Any:
    """Parse a JSON document; raises ValueError with a position on bad input."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    i = 0
    n = len(text)
    while i < n and text[i] in _WS:
        i += 1
    try:
        obj, end = _scan(text, i)
        while end < n and text[end] in _WS:
            end += 1
        if end == n:
            return obj
    except (StopIteration, ValueError, SystemError):
        pass
    # Malformed input: let the full json module say exactly what and where.
    import json
    return json.loads(text)


_esc = _json.encode_basestring_ascii


def _unsupported(obj: object) -> object:
    raise TypeError("cannot encode %r as JSON" % type(obj).__name__)


#: the C encoder json.dumps uses for compact output (markers None: our data has no cycles)
_encode = _json.make_encoder(None, _unsupported, _esc, None, ": ", ", ", False, False, True)


def dumps(obj: object, indent: int | None = None, _level: int = 0) -> str:
    """Serialise dicts, lists, strings, numbers, booleans and None (compact: in C, as json does;
    indented, for people: here)."""
    if indent is None and _level == 0:
        return "".join(_encode(obj, 0))
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, str):
        return _esc(obj)
    if isinstance(obj, (int, float)):
        return repr(obj)
    if indent is None:
        nl = sep = ""
        colon, comma = ": ", ", "
    else:
        nl = "\n" + " " * (indent * (_level + 1))
        sep = "\n" + " " * (indent * _level)
        colon, comma = ": ", ","
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [nl + _esc(str(k)) + colon + dumps(v, indent, _level + 1) for k, v in obj.items()]
        return "{" + comma.join(items) + sep + "}"
    if isinstance(obj, (list, tuple)):
        if not obj:
            return "[]"
        items = [nl + dumps(v, indent, _level + 1) for v in obj]
        return "[" + comma.join(items) + sep + "]"
    raise TypeError("cannot encode %r as JSON" % type(obj).__name__)
