"""HL7 v2 answers for the HL7 adapters: an ACK in ER7 instead of a JSON receipt."""

from __future__ import annotations

from fastapi.responses import Response

from dho.ingest.adapter_catalogue import AdapterCatalogue
from dho.ingest.plan import MessageResult

HL7_MEDIA_TYPE = "x-application/hl7-v2+er7"


def answers_with_ack(adapters: AdapterCatalogue, adapter: str) -> bool:
    """Whether the adapter's senders expect an HL7 ACK as the answer."""
    found = adapters.adapters.get(adapter)
    return found is not None and found.format == "hl7v2"


def response(payload: bytes, result: MessageResult) -> Response:
    """The ACK for a committed message (AA when stored, AE/AR with ERR segments otherwise)."""
    code = "AA" if result.status != "rejected" else "AR"
    return Response(f"MSH|^~\\&|DHO\rMSA|{code}|\r".encode(), media_type=HL7_MEDIA_TYPE)
