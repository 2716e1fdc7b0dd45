"""JSON encoding of wire messages: one encoder, and one decoder per expected type, built once."""

from __future__ import annotations

from typing import Any

import msgspec

from bus import messages as m

encoder = msgspec.json.Encoder()
encode = encoder.encode

_decoders: dict[Any, msgspec.json.Decoder] = {}


def decoder(type_: Any) -> msgspec.json.Decoder:
    """The cached decoder for ``type_`` (a Struct or a union of Structs)."""
    dec = _decoders.get(type_)
    if dec is None:
        dec = _decoders[type_] = msgspec.json.Decoder(type_)
    return dec


ask = decoder(m.Ask)
ask_reply = decoder(m.AskReply)
complete = decoder(m.Complete)
complete_reply = decoder(m.CompleteReply)
stream_reply = decoder(m.StreamReply)
cancel = decoder(m.Cancel)
