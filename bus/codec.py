"""JSON encoding of wire messages: one encoder, and one decoder per expected type, built once.

Decoding is bounded in depth: JSON nested deeper than ``MAX_DEPTH`` is a ``msgspec.DecodeError``
(so every caller's ``except msgspec.DecodeError`` turns it into ``bad_request``), never a
``RecursionError`` that escapes a handler. The check costs nothing on the common path: only a
message with more than ``MAX_DEPTH`` opening brackets (counted at C speed) is scanned for its depth.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from bus import messages as m

MAX_DEPTH = 100  # a JSON Schema of 40 nested objects is ~80 deep; msgspec itself fails near 1,000

encoder = msgspec.json.Encoder()
encode = encoder.encode

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


def depth(data: bytes) -> int:
    """The deepest nesting of ``data`` (brackets inside strings do not count)."""
    deepest = level = 0
    for b in _BRACKETS.findall(_STRINGS.sub(b"", data)):
        if b in b"[{":
            level += 1
            if level > deepest:
                deepest = level
        else:
            level -= 1
    return deepest


class Decoder:
    """A ``msgspec.json.Decoder`` with the depth limit; ``decode`` raises only msgspec's errors."""

    __slots__ = ("type", "_decode")

    def __init__(self, type_: Any) -> None:
        self.type = type_
        self._decode = msgspec.json.Decoder(type_).decode

    def decode(self, data: bytes) -> Any:
        if len(data) > MAX_DEPTH and data.count(b"[") + data.count(b"{") > MAX_DEPTH:
            found = depth(bytes(data))
            if found > MAX_DEPTH:
                raise msgspec.DecodeError(f"JSON nested {found} deep, over the limit of {MAX_DEPTH}")
        try:
            return self._decode(data)
        except RecursionError:  # not reached below MAX_DEPTH; kept so no caller ever sees one
            raise msgspec.DecodeError(f"JSON nested too deep (limit {MAX_DEPTH})") from None


_decoders: dict[Any, Decoder] = {}


def decoder(type_: Any) -> Decoder:
    """The cached decoder for ``type_`` (a Struct or a union of Structs)."""
    dec = _decoders.get(type_)
    if dec is None:
        dec = _decoders[type_] = Decoder(type_)
    return dec


ask = decoder(m.Ask)
ask_reply = decoder(m.AskReply)
complete = decoder(m.Complete)
complete_reply = decoder(m.CompleteReply)
stream_reply = decoder(m.StreamReply)
cancel = decoder(m.Cancel)
stream_ack = decoder(m.StreamAck)
