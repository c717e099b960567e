"""Decode stage: payload bytes → the items of a message, as the message's adapter describes.

A JSON adapter is a template (`dho/ingest/template.py`); a format a template cannot express
names a Python decoder under `dho/decoders/`, each a module with `decode(payload, adapter,
ctx) -> Decoded`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import cast

from dho.ingest.adapter_catalogue import Adapter, AdapterCatalogue
from dho.ingest.decoded import DecodeContext, Decoded
from dho.ingest.errors import UnknownAdapter
from dho.ingest.measurement import RawMessage
from dho.ingest.template import decode_json

DecoderFunction = Callable[[bytes, Adapter, DecodeContext], Decoded]


def decode(raw: RawMessage, catalogue: AdapterCatalogue, ctx: DecodeContext) -> Decoded:
    """The message's items, or a DataError when the message as a whole cannot be read."""
    adapter = _adapter(raw.adapter, catalogue)
    if adapter.decoder is None:
        return decode_json(raw.payload, adapter, ctx)
    return _named_decoder(adapter.decoder)(raw.payload, adapter, ctx)


def _adapter(name: str, catalogue: AdapterCatalogue) -> Adapter:
    """The adapter `name`; UnknownAdapter when there is none or its file is broken."""
    if name in catalogue.broken:
        raise UnknownAdapter(
            f"adapter {name!r} is disabled: {catalogue.broken[name]}", code="adapter-disabled"
        )
    adapter = catalogue.adapters.get(name)
    if adapter is None:
        raise UnknownAdapter(f"no adapter named {name!r}")
    return adapter


def _named_decoder(name: str) -> DecoderFunction:
    """`decode` of the module `dho.decoders.<name>` (checked to exist when adapters load)."""
    module = importlib.import_module(f"dho.decoders.{name}")
    return cast(DecoderFunction, module.decode)
