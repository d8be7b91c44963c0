"""msgpack encoding of session data, with a strict type policy.

Only types that round-trip exactly are accepted: str, bytes, int (64-bit range), float,
bool, None, lists and dicts with str keys. Tuples, sets, datetimes and custom objects are
refused when they are *set*, with the key named, instead of failing later at save time or
coming back as something else.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .errors import SessionDecodeError

#: Containers nested deeper than this are refused: msgpack, and Python's own recursion
#: limit, stop somewhere around a thousand levels, and no session needs a hundred.
MAX_DEPTH = 100
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_SCALARS = (bytes, float, bool, type(None))
_STR = frozenset((str,))
#: The values that can change in place after the app got hold of them.
NESTED = frozenset((list, dict))
#: A list or dict packed into this many bytes or more is left packed when a row is read
#: (``decode(raw, lazy=True)``) until the app first asks for it.
LAZY_SIZE = 1024
#: First bytes of a packed map (fixmap, map 16/32), and of a packed map or array.
_MAP_FIRST = frozenset((*range(0x80, 0x90), 0xDE, 0xDF))
_CONTAINER_FIRST = _MAP_FIRST | {*range(0x90, 0xA0), 0xDC, 0xDD}
_STR_FIRST = frozenset((*range(0xA0, 0xC0), 0xD9, 0xDA, 0xDB))  # fixstr, str 8/16/32


class Packed:
    """A list or dict of a row, kept as the bytes it was stored as.

    Decoding an 8 KB cart costs a request more than everything else it does, and most
    requests never look at it. The store decodes one when the app first asks for it
    (``unpack_value``) and writes one never asked for back byte for byte
    (``pack_values``). C code that reads the dict's storage without calling a method
    sees this object: call ``session.copy()`` to get plain values first.
    """

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def __repr__(self) -> str:
        return f"<asgi_mysql_session: a stored list or dict of {len(self.raw)} bytes, not decoded yet>"


#: What the store hands out only after a look (and a decode, for ``Packed``).
LENDABLE = frozenset((list, dict, Packed))
#: What a decoded top-level value may be without a look inside (see ``decode``).
_DECODED = frozenset((str, int, bytes, float, bool, type(None), list, dict, Packed))


def holds_containers(data: dict[str, Any]) -> bool:
    """True if a value may have changed in place since it was set (a list or a dict).

    Reads the dict's own storage (``dict.values``), so a session store, a dict subclass
    that counts reads, is not marked as read by its own save.
    """
    return not NESTED.isdisjoint(map(type, dict.values(data)))


def check_value(key: object, value: Any) -> None:
    """Raise ``TypeError`` naming ``key`` (and the path inside it) if ``value`` can't be stored."""
    if type(key) is not str:
        raise TypeError(f"session keys must be str, not {type(key).__name__}: {key!r}")
    if (key.isascii() or _storable_text(key)) and (
        (type(value) is str and value.isascii()) or _storable(value, 0)
    ):
        return
    # Slow path, only for a value being refused: walk again, building the path for the message.
    _check_text(key, "key " + repr(key))
    _check(value, repr(key))


def _storable_text(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _storable(value: Any, depth: int) -> bool:
    """The fast yes/no twin of ``_check``: no paths are built unless something is refused.

    Scalars inside a list or dict are judged inline, not by a call each: this walk runs
    over every nested value a request reads or writes (an 8 KB cart is 250 of them).
    """
    kind = type(value)
    if kind is list:
        items = value
    elif kind is dict:
        for key in value:
            if type(key) is not str or not (key.isascii() or _storable_text(key)):
                return False
        items = value.values()
    elif kind is str:
        return _storable_text(value)
    elif kind is int:
        return _INT_MIN <= value <= _INT_MAX  # type: ignore[no-any-return]
    else:
        return kind in _SCALARS
    if depth >= MAX_DEPTH:
        return False
    depth += 1
    for item in items:
        kind = type(item)
        if kind is str:
            if not (item.isascii() or _storable_text(item)):
                return False
        elif kind is int:
            if not _INT_MIN <= item <= _INT_MAX:
                return False
        elif kind is list or kind is dict:
            if not _storable(item, depth):
                return False
        elif kind not in _SCALARS:
            return False
    return True


def _check_text(text: str, path: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise TypeError(f"session value at {path}: str is not valid UTF-8 ({exc.reason})") from None


def _check(value: Any, path: str, depth: int = 0) -> None:
    kind = type(value)
    if kind is str:
        _check_text(value, path)
        return
    if kind in _SCALARS:
        return
    if kind is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise TypeError(f"session value at {path}: int {value} is outside msgpack's 64-bit range")
        return
    if (kind is list or kind is dict) and depth >= MAX_DEPTH:
        raise TypeError(f"session value at {path}: nested deeper than {MAX_DEPTH} levels")
    if kind is list:
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]", depth + 1)
        return
    if kind is dict:
        for sub_key, item in value.items():
            if type(sub_key) is not str:
                raise TypeError(
                    f"session value at {path}: dict keys must be str, not {type(sub_key).__name__}"
                )
            _check_text(sub_key, f"{path} key {sub_key!r}")
            _check(item, f"{path}[{sub_key!r}]", depth + 1)
        return
    raise TypeError(
        f"session value at {path}: {kind.__name__} is not storable "
        "(use str, bytes, int, float, bool, None, list or dict with str keys)"
    )


def encode(data: dict[str, Any]) -> bytes:
    """Encode a session mapping, checking every key and value first (nested ones included:
    msgpack would happily pack a dict with int keys that can never be read back)."""
    for key, value in dict.items(data):
        check_value(key, value)
    return msgpack.packb(data, use_bin_type=True, strict_types=True)  # type: ignore[no-any-return]


#: Packs data whose values are known to be storable (the store's, see ``SessionSaving``): every
#: key and value is of an exact type by then, so this gives the bytes strict packing would.
pack_checked: Any = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def packed(value: Any) -> bytes:
    """One value's bytes, packed strictly (to compare two values' types exactly)."""
    if type(value) is Packed:
        return value.raw
    return msgpack.packb(value, use_bin_type=True, strict_types=True)  # type: ignore[no-any-return]


_pack_map_header: Any = msgpack.Packer(autoreset=True).pack_map_header
_PACKED = frozenset((Packed,))


def pack_values(values: dict[str, Any]) -> bytes:
    """``pack_checked``, with the bytes of values still ``Packed`` put back as they were."""
    if _PACKED.isdisjoint(map(type, values.values())):
        return pack_checked(values)  # type: ignore[no-any-return]
    parts = [_pack_map_header(len(values))]
    for key, value in values.items():
        parts.append(pack_checked(key))
        parts.append(value.raw if type(value) is Packed else pack_checked(value))
    return b"".join(parts)


def plain(store: dict[str, Any]) -> dict[str, Any]:
    """A dict subclass's data as a plain dict, taken in C: msgpack packs a subclass, and
    ``dict.copy`` copies one, through its ``items()``/``keys()``, which the store counts as
    the app's."""
    return dict(dict.items(store))


def nested_keys(values: dict[str, Any]) -> set[str] | None:
    """The keys of the lists and dicts in ``values``, packed or not (None if there are none)."""
    if LENDABLE.isdisjoint(map(type, values.values())):
        return None
    return {key for key, value in values.items() if type(value) in LENDABLE}


def try_pack(data: dict[str, Any]) -> bytes | None:
    """``data`` packed without the type walk, to compare with what is stored (equal bytes:
    nothing changed that a save would write); None if msgpack cannot pack it (a set, an
    object, too deep), which ``encode`` then refuses by name."""
    try:
        return pack_values(data)
    except Exception:
        return None


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"ext type {code} is not a session value")


#: How stored bytes are read, wherever they are: str as str, str or bytes map keys only,
#: ext types refused (``_new_unpacker`` takes the same options).
_READ_OPTIONS: dict[str, Any] = {"raw": False, "strict_map_key": True, "ext_hook": _refuse_ext}


def _unpackb(raw: bytes) -> Any:
    """``_READ_OPTIONS`` spelled out: each nested value decoded on its own passes here, and
    unpacking the dict with ``**`` cost 1,344 instructions a call."""
    return msgpack.unpackb(raw, raw=False, strict_map_key=True, ext_hook=_refuse_ext)


def unpack_value(value: Packed) -> Any:
    """A ``Packed`` value decoded as ``decode`` would have (it is checked by the caller)."""
    try:
        return _unpackb(value.raw)
    except Exception as exc:
        raise SessionDecodeError(f"stored session data is not valid msgpack: {exc}") from exc


def decode(raw: bytes, *, lazy: bool = False) -> dict[str, Any]:
    """Decode a stored row; anything but a str-keyed map of storable values is a
    ``SessionDecodeError``.

    Lists and dicts are not walked here (an 8 KB cart is 250 values, and most requests never
    look at it): the store checks each one the first time it hands it to the app
    (``SessionLoading._lend``) and writes the ones never handed out back as they were read.
    With ``lazy``, the ones packed into ``LAZY_SIZE`` bytes or more are not even decoded:
    they stay ``Packed``. msgpack itself guarantees the rest: str is valid UTF-8, ints are
    in range, map keys are str or bytes, and ext types are refused here.
    """
    if not raw:
        return {}
    try:
        if lazy and len(raw) >= LAZY_SIZE:
            data = _decode_top_level(raw)
        else:  # _unpackb written out: a call more costs every read 370 instructions
            data = msgpack.unpackb(raw, raw=False, strict_map_key=True, ext_hook=_refuse_ext)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise SessionDecodeError(f"stored session data is not valid msgpack: {exc}") from exc
    if not isinstance(data, dict):
        raise SessionDecodeError("stored session data is not a map")
    # Set operations in C: this runs on every read.
    if _STR.issuperset(map(type, data)) and _DECODED.issuperset(map(type, data.values())):
        return data
    for key, value in data.items():
        if type(key) is not str or type(value) not in _DECODED:
            try:
                check_value(key, value)
            except TypeError as exc:
                raise SessionDecodeError(f"stored session data holds an unsupported value: {exc}") from None
    return data


#: Unpackers ready for reuse: making one zeroes its 32 KB parse stack (half the cost of
#: decoding an 8 KB row's top level). One is put back only after it read a whole row of at
#: most ``_READ_SIZE`` bytes, so it holds nothing and its buffer never grew.
_SPARE: list[msgpack.Unpacker] = []
_READ_SIZE = 1 << 16
_MAX_ROW = 1 << 24  # MEDIUMBLOB


def _decode_top_level(raw: bytes) -> Any:
    """The top-level map of ``raw``, its big lists and dicts left ``Packed`` (skipped by
    msgpack in C, which still checks that they are whole)."""
    if raw[0] not in _MAP_FIRST:  # not a map: decode() says so
        return _unpackb(raw)
    unpacker = _SPARE.pop() if _SPARE else _new_unpacker()
    unpacker.feed(raw)
    unpack, tell = unpacker.unpack, unpacker.tell
    base = tell()  # (a reused unpacker counts from its first row)
    data = {}
    count = unpacker.read_map_header()
    end = tell() - base
    for _ in range(count):
        if raw[end] not in _STR_FIRST:  # (so no key is ever built that is a container)
            raise ValueError("a key of the top-level map is not a str")
        key = unpack()
        start = tell() - base
        if raw[start] in _CONTAINER_FIRST:
            unpacker.skip()
            end = tell() - base
            piece = raw[start:end]
            data[key] = Packed(piece) if end - start >= LAZY_SIZE else _unpackb(piece)
        else:
            data[key] = unpack()
            end = tell() - base
    if end != len(raw):
        raise ValueError("extra data after the map")
    if len(raw) <= _READ_SIZE:
        _SPARE.append(unpacker)
    return data


def _new_unpacker() -> msgpack.Unpacker:
    return msgpack.Unpacker(None, max_buffer_size=_MAX_ROW, read_size=_READ_SIZE, **_READ_OPTIONS)
