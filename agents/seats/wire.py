"""The isolated seat's wire format: data, never code.

Every message between the referee's process and an isolated body is one *frame*::

    b"EGW1" | header length (u32, little-endian) | blob length (u64, little-endian) | header | blob

The header is a JSON object (UTF-8) with an ``op``; the blob is empty, a safetensors file of named arrays
(queries, answers, a dataset's public splits) or a snapshot's safetensors bytes. Nothing is ever unpickled, and
nothing in a frame names code to run: the receiver checks each header against the schema of what it may receive
at that point (:func:`expect`), and arrays come back as plain ``numpy`` arrays.

A frame is bounded before it is read: the header at :data:`MAX_HEADER` bytes, the blob at the wire's
``max_blob``; a length beyond either, a wrong magic, bytes that are not UTF-8 JSON, NaN or infinity where the
receiver is strict, or a read that does not finish by the deadline raise :class:`WireError` naming the problem,
and the reader has allocated at most the limit.
"""

from __future__ import annotations

import json
import math
import socket
import struct
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

MAGIC = b"EGW1"
PREFIX = struct.Struct("<4sIQ")
MAX_HEADER = 1 << 20
MAX_TEXT_ITEMS = 100_000
_CHUNK = 1 << 20


class WireError(RuntimeError):
    """A frame that breaks the protocol (or none by the deadline), with the reason."""


class WireTimeout(WireError):
    """No complete frame by the deadline."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number the protocol carries")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k[:40]!r}")
        out[k] = v
    return out


class Wire:
    """One end of a socket that carries frames.

    Args:
        sock: a connected stream socket.
        max_blob: the largest blob this end accepts, in bytes.
        strict: refuse NaN and infinity in headers (the referee's end: the other side is untrusted).
    """

    def __init__(self, sock: socket.socket, max_blob: int, strict: bool = True) -> None:
        self.sock, self.max_blob, self.strict = sock, int(max_blob), strict
        self.sent = self.received = 0  # bytes, for the record

    # -- sending ---------------------------------------------------------------------------------------------
    def send(self, header: Mapping[str, Any], blob: bytes = b"", deadline: float | None = None) -> None:
        """Send one frame; :class:`WireTimeout` if the peer does not take it by ``deadline`` (monotonic)."""
        try:
            head = json.dumps(header, separators=(",", ":"), allow_nan=not self.strict).encode()
        except (TypeError, ValueError) as e:
            raise WireError(f"a message cannot be sent as JSON ({str(e)[:120]})") from None
        if len(head) > MAX_HEADER:
            raise WireError(f"a message header of {len(head)} bytes exceeds the limit of {MAX_HEADER}")
        data = PREFIX.pack(MAGIC, len(head), len(blob)) + head
        try:
            self._settimeout(deadline)
            self.sock.sendall(data)
            view = memoryview(blob)
            for i in range(0, len(view), _CHUNK):
                self._settimeout(deadline)
                self.sock.sendall(view[i:i + _CHUNK])
        except TimeoutError:
            raise WireTimeout("the other side stopped reading") from None
        except OSError as e:
            raise WireError(f"the connection broke while sending ({e.strerror or e})") from None
        self.sent += len(data) + len(blob)

    # -- receiving -------------------------------------------------------------------------------------------
    def recv(self, deadline: float | None = None) -> tuple[dict[str, Any], bytes]:
        """One frame's header (a JSON object with a string ``op``) and blob, by ``deadline`` (monotonic)."""
        magic, n_head, n_blob = PREFIX.unpack(self._read(PREFIX.size, deadline))
        if magic != MAGIC:
            raise WireError(f"not a frame of this protocol (it starts with {magic!r})")
        if n_head > MAX_HEADER:
            raise WireError(f"a frame announces a header of {n_head} bytes; the limit is {MAX_HEADER}")
        if n_blob > self.max_blob:
            raise WireError(f"a frame announces {n_blob} bytes of data; the limit is {self.max_blob}")
        raw = self._read(n_head, deadline)
        blob = self._read(n_blob, deadline) if n_blob else b""
        self.received += PREFIX.size + n_head + n_blob
        try:
            header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates,
                                parse_constant=_reject_constant if self.strict else None)
        except UnicodeDecodeError as e:
            raise WireError(f"a frame header is not UTF-8 (byte {e.start})") from None
        except RecursionError:
            raise WireError("a frame header is nested too deeply") from None
        except ValueError as e:
            raise WireError(f"a frame header is not valid JSON ({str(e)[:120]})") from None
        if not isinstance(header, dict) or not isinstance(header.get("op"), str):
            raise WireError(f"a frame header must be a JSON object with a string 'op', got {_kind(header)}")
        return header, blob

    def _read(self, n: int, deadline: float | None) -> bytes:
        buf = bytearray(n)  # n is bounded by the caller's checks
        view, got = memoryview(buf), 0
        while got < n:
            try:
                self._settimeout(deadline)
                k = self.sock.recv_into(view[got:], min(n - got, _CHUNK))
            except TimeoutError:
                raise WireTimeout("no complete message by the deadline") from None
            except OSError as e:
                raise WireError(f"the connection broke ({e.strerror or e})") from None
            if k == 0:
                raise WireError("the other side closed the connection" + (" mid-frame" if got else ""))
            got += k
        return bytes(buf)

    def _settimeout(self, deadline: float | None) -> None:
        if deadline is None:
            self.sock.settimeout(None)
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self.sock.settimeout(left)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _kind(value: Any) -> str:
    return type(value).__name__ if not isinstance(value, dict) else "an object without 'op'"


# -- arrays ----------------------------------------------------------------------------------------------------
ARRAY_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")


def pack_arrays(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Named arrays as a safetensors file (numbers only)."""
    from safetensors.numpy import save

    if not arrays:
        return b""
    out = {}
    for k, v in arrays.items():
        a = np.ascontiguousarray(v)
        if a.dtype.name not in ARRAY_DTYPES:
            raise WireError(f"array {k!r} has dtype {a.dtype}; the protocol carries {', '.join(ARRAY_DTYPES)}")
        out[k] = a
    return save(out)


def unpack_arrays(blob: bytes, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Exactly ``names`` from a safetensors blob (plain, writable arrays), or :class:`WireError`."""
    if not names:
        if blob:
            raise WireError("a message carries data it should not")
        return {}
    from safetensors.numpy import load

    try:
        arrays = load(bytes(blob))
    except Exception as e:  # a blob that is not safetensors: name it, not the library's internals
        raise WireError(f"the message's data is not a safetensors file ({type(e).__name__}: {str(e)[:120]})") from None
    if sorted(arrays) != sorted(names):
        raise WireError(f"the message's data holds arrays {sorted(arrays)[:5]}; expected {sorted(names)}")
    out = {}
    for k in names:
        a = np.array(arrays[k])
        if a.dtype.name not in ARRAY_DTYPES:
            raise WireError(f"array {k!r} has dtype {a.dtype}")
        out[k] = a
    return out


# -- schemas ---------------------------------------------------------------------------------------------------
JSONScalar = (str, int, float, bool, type(None))


def expect(header: Mapping[str, Any], schema: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``header`` checked against ``schema`` (field -> a type, a tuple of types, or a checker returning an error
    message or None); every field present, no other field. Raises :class:`WireError` naming the field."""
    extra = sorted(set(header) - set(schema) - {"op"})
    missing = sorted(set(schema) - set(header))
    if extra or missing:
        raise WireError(f"malformed {what}: " + "; ".join(
            ([f"unexpected field(s) {', '.join(map(repr, extra[:5]))}"] if extra else [])
            + ([f"missing field(s) {', '.join(missing)}"] if missing else [])))
    for field, rule in schema.items():
        value = header[field]
        if callable(rule) and not isinstance(rule, type):
            problem = rule(value)
        else:
            types = rule if isinstance(rule, tuple) else (rule,)
            ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
            problem = None if ok else f"must be {' or '.join(t.__name__ for t in types)}, got {type(value).__name__}"
        if problem:
            raise WireError(f"malformed {what}: field {field!r} {problem}")
    return dict(header)


def short_str(limit: int) -> Any:
    """A checker: a str of at most ``limit`` characters."""

    def check(v: Any) -> str | None:
        if not isinstance(v, str):
            return f"must be a string, got {type(v).__name__}"
        return None if len(v) <= limit else f"is {len(v)} characters long (at most {limit})"

    return check


def str_list(limit: int, item_limit: int = 1_000_000) -> Any:
    """A checker: a list of at most ``limit`` strings (exactly ``str``), each at most ``item_limit`` characters."""

    def check(v: Any) -> str | None:
        if not isinstance(v, list):
            return f"must be a list, got {type(v).__name__}"
        if len(v) > limit:
            return f"has {len(v)} items (at most {limit})"
        bad = next((i for i, s in enumerate(v) if type(s) is not str or len(s) > item_limit), None)
        return None if bad is None else f"item {bad} is not a string of at most {item_limit} characters"

    return check


def int_in(low: int, high: int) -> Any:
    def check(v: Any) -> str | None:
        if type(v) is not int:
            return f"must be an integer, got {type(v).__name__}"
        return None if low <= v <= high else f"must be in [{low}, {high}], got {v}"

    return check


def finite_number(v: Any) -> str | None:
    if type(v) not in (int, float):
        return f"must be a number, got {type(v).__name__}"
    return None if math.isfinite(v) else "must be finite"
