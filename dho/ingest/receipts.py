"""Receipts: what a gateway is told about each item of a message after the commit."""

from __future__ import annotations

from typing import Any

from dho.ingest.plan import ItemResult, MessageResult


def receipt(result: MessageResult) -> dict[str, Any]:
    """The receipt for a committed message, as HTTP answers it and MQTT publishes it."""
    body: dict[str, Any] = {
        "status": result.status,
        "message_id": result.message_id,
        "raw_message_id": result.raw_message_id,
    }
    if result.status == "rejected":
        body["reason"] = result.reason
        body["reason_code"] = result.reason_code
        body["detail"] = result.detail
    body["measurements"] = [item_receipt(i) for i in result.items if i.status != "not-stored"]
    return body


def item_receipt(item: ItemResult) -> dict[str, Any]:
    """One item of a receipt."""
    out: dict[str, Any] = {"index": item.index, "status": item.status}
    if item.observation_id:
        out["observation"] = f"Observation/{item.observation_id}"
        out["version"] = item.version_id
        if item.amended:
            out["amended"] = True
    if item.reference:
        out["reference"] = item.reference
    if item.note:
        out["note"] = item.note
    if item.late:
        out["late"] = True
    if item.time_flag:
        out["time_flag"] = item.time_flag
    if item.colour:
        out["judgement"] = _judgement(item)
    if item.alert_id:
        out["alert"] = {"id": item.alert_id, "severity": item.alert_severity}
    if item.reason:
        out["reason"] = item.reason
        out["reason_code"] = item.reason_code
        out["detail"] = item.detail
    return out


def _judgement(item: ItemResult) -> dict[str, Any]:
    """The reading's colour by the patient's plan, and what the patient should do."""
    judged: dict[str, Any] = {"colour": item.colour, "plan": item.plan}
    text = item.patient_text
    if item.repeat_within_minutes is not None:
        judged["repeat_within_minutes"] = item.repeat_within_minutes
        text = REPEAT_TEXT.format(minutes=item.repeat_within_minutes)
    if item.paused_until is not None:
        judged["paused_until"] = item.paused_until
        text = PAUSED_TEXT
    judged["patient_text"] = text
    return judged


REPEAT_TEXT = (
    "Målingen er litt utenfor planen din. Sitt i ro noen minutter og mål på nytt innen "
    "{minutes} minutter."
)
PAUSED_TEXT = (
    "Oppfølgingen din er satt på pause. Målingen er lagret, men ingen sykepleier ser den nå. "
    "Ved akutt forverring, ring legevakt på 116 117 eller 113."
)
