"""HL7 v2 answers for the HL7 adapters: an ACK^R01 in ER7 instead of a JSON receipt.

MSA-1 is AA when every item was stored, already known or ignored (and for a message id
sent before), AE with one ERR per quarantined item, AR with one ERR when the message as
a whole was refused: by the pipeline, or before it (no key, rate limit, too large, not
stored in time), with the HTTP status and headers of that refusal. ERR-3 takes its code
from HL7 table 0357; ERR-5 carries the service's own reason code. Detail texts leave out
national identity numbers.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import hl7
from fastapi.responses import Response

from dho.api.gateway_io import Refusal, rejection_status
from dho.decoders.hl7v2_fields import HL7_ERRORS, components, er7_text, text
from dho.ingest.adapter_catalogue import AdapterCatalogue
from dho.ingest.errors import DataError
from dho.ingest.plan import ItemResult, MessageResult

HL7_MEDIA_TYPE = "x-application/hl7-v2+er7"
VERSION = "2.6"
SERVICE = "DHO"

_TABLE_0357 = {
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    # 104 is in the table since v2.7: "a value exceeded ... the length that the application
    # is able to safely handle", the nearest to a message over the size or item limit.
    104: "Value too long",
    200: "Unsupported message type",
    204: "Unknown key identifier",
    206: "Application record locked",
    207: "Application internal error",
}
_BY_CODE = {
    "message-type": 200,
    "message-id": 101,
    "no-observations": 101,
    "missing-time": 101,
    "missing-device-id": 101,
    "patient-mismatch": 204,
    "too-large": 104,
    # 206: "could not be performed at the application storage level, e.g. database locked".
    "unavailable": 206,
}
_BY_REASON = {
    "unparseable": 102,
    "mapping-error": 103,
    "unknown-device": 204,
    "oversized": 104,
}
# Where in the message a reason code points: (segment, field).
_LOCATIONS = {
    "message-type": ("MSH", 9),
    "message-id": ("MSH", 10),
    "patient-mismatch": ("PID", 3),
}
_OBX_FIELDS = {
    "unknown-code": 3,
    "unit": 6,
    "not-a-number": 5,
    "implausible": 5,
    "time": 14,
    "missing-time": 14,
    "future": 14,
    "device-id": 18,
    "missing-device-id": 18,
    "unknown-device": 18,
    "unassigned-device": 18,
    "device-not-registered-to-gateway": 18,
    "gateway-not-permitted": 18,
}
_OBX_LABEL = re.compile(r"OBX\[(\d+)\]")
_NATIONAL_ID = re.compile(r"(?<!\d)\d{11}(?!\d)")
_ESCAPES = {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\"}
_MAX_TEXT = 500


@dataclass(frozen=True, slots=True)
class _Header:
    """What the ACK copies from the message's MSH (all '' when it could not be read)."""

    sending: tuple[str, str] = ("", "")
    receiving: tuple[str, str] = ("", "")
    control_id: str = ""
    processing_id: str = "P"
    profile: str = ""


@dataclass(frozen=True, slots=True)
class _Error:
    reason: str
    code: str
    detail: str
    location: str = ""


def answers_with_ack(adapters: AdapterCatalogue, adapter: str) -> bool:
    """Whether the adapter's senders expect an HL7 ACK as the answer."""
    found = adapters.adapters.get(adapter)
    return found is not None and found.format == "hl7v2"


def response(payload: bytes, result: MessageResult) -> Response:
    """The ACK for a committed message (AA when stored, AE/AR with ERR segments otherwise)."""
    status = 200
    if result.status == "rejected" or result.not_authorised:
        code, errors = "AR", [_message_error(result)]
        status = rejection_status(errors[0].reason)
    else:
        errors = [_item_error(item) for item in result.items if item.status == "quarantined"]
        code = "AE" if errors else "AA"
    return _ack(_header(payload), code, errors, status)


def refusal(refused: Refusal, payload: bytes = b"") -> Response:
    """An ACK AR for a request refused before the pipeline, with the refusal's status and headers.

    `payload` is the body when it was read (its MSH is answered), else empty (defaults).
    """
    error = _Error(refused.title, refused.code, refused.detail)
    answer = _ack(_header(payload), "AR", [error], refused.status)
    answer.headers.update(refused.headers)
    if refused.status == 401:
        answer.headers["WWW-Authenticate"] = 'Bearer realm="dho"'
    return answer


def _ack(header: _Header, code: str, errors: list[_Error], status: int) -> Response:
    segments = [
        _msh(header),
        _segment("MSA", code, _escape(header.control_id)),
        *(_err(error) for error in errors),
    ]
    body = "\r".join(segments) + "\r"
    if not body.isascii():
        segments[0] = _msh(header, charset="UNICODE UTF-8")
        body = "\r".join(segments) + "\r"
    return Response(body.encode(), status_code=status, media_type=HL7_MEDIA_TYPE)


def _header(payload: bytes) -> _Header:
    try:
        first = er7_text(payload).split("\r", 1)[0]
    except DataError:
        return _Header()
    if not first.startswith("MSH") or len(first) < 8:
        return _Header()
    try:
        msh = hl7.parse(first).segment("MSH")
    except HL7_ERRORS:
        return _Header()
    processing = text(msh, 11)
    return _Header(
        sending=(_composite(msh, 3), _composite(msh, 4)),
        receiving=(_composite(msh, 5), _composite(msh, 6)),
        control_id=text(msh, 10)[:200],
        processing_id=processing if processing in ("P", "T", "D") else "P",
        profile=_composite(msh, 21),
    )


def _composite(segment: Any, field: int) -> str:
    """A field's first repetition re-encoded with the standard separators."""
    return "^".join(_escape(part) for part in components(segment, field))


def _msh(header: _Header, charset: str = "") -> str:
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S") + "+0000"
    control_id = SERVICE + uuid.uuid4().hex[:17].upper()
    fields = [
        "MSH",
        "^~\\&",
        header.receiving[0] or SERVICE,
        header.receiving[1],
        *header.sending,
        now,
        "",
        "ACK^R01^ACK",
        control_id,
        header.processing_id,
        VERSION,
        "",
        "",
        "NE",
        "NE",
        "",
        charset,
        "",
        "",
        header.profile,
    ]
    return "|".join(fields).rstrip("|")


def _message_error(result: MessageResult) -> _Error:
    if result.status != "rejected":  # stored, but the sender may submit none of it
        return _item_error(next(i for i in result.items if i.status == "quarantined"))
    code = result.reason_code or "invalid-data"
    segment_field = _LOCATIONS.get(code)
    location = f"{segment_field[0]}^1^{segment_field[1]}" if segment_field else ""
    return _Error(result.reason or "processing-error", code, result.detail or "", location)


def _item_error(item: ItemResult) -> _Error:
    code = item.reason_code or "invalid-data"
    location = ""
    if code in _LOCATIONS:
        location = "{}^1^{}".format(*_LOCATIONS[code])
    elif match := _OBX_LABEL.fullmatch(item.label):
        location = f"OBX^{match.group(1)}"
        if code in _OBX_FIELDS:
            location += f"^{_OBX_FIELDS[code]}"
    return _Error(item.reason or "processing-error", code, item.detail or "", location)


def _err(error: _Error) -> str:
    hl7_code = _BY_CODE.get(error.code) or _BY_REASON.get(error.reason, 207)
    detail = _escape(_NATIONAL_ID.sub("[national id]", error.detail)[:_MAX_TEXT])
    return _segment(
        "ERR",
        "",
        error.location,
        f"{hl7_code}^{_TABLE_0357[hl7_code]}^HL70357",
        "E",
        f"{_escape(error.code)}^{_escape(error.reason)}^99DHO",
        "",
        detail,
        detail,
    )


def _segment(*fields: str) -> str:
    return "|".join(fields).rstrip("|")


def _escape(value: str) -> str:
    """Text as an ER7 value with the standard separators; line breaks become spaces."""
    escaped = "".join(_ESCAPES.get(char, char) for char in value)
    return escaped.replace("\r", " ").replace("\n", " ")
