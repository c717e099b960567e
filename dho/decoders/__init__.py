"""Named Python decoders for the formats an adapter template cannot express.

Each module here has one public function, `decode(payload, adapter, ctx) -> Decoded`
(see `dho.ingest.decoded`), and is named by an adapter file's `decoder` key.
"""
