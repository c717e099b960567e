"""FHIR R4 QuestionnaireResponse JSON: a patient's answers to a symptom questionnaire.

One resource per message, checked against the R4 structure (fhir.resources R4B) and then
against its Questionnaire under config/questionnaires/; kept as sent.
"""

from __future__ import annotations

from dho.decoders.fhir_entries import validate
from dho.ingest.adapter_catalogue import Adapter
from dho.ingest.decoded import (
    DecodeContext,
    Decoded,
    DecodedItem,
    QuestionnaireReply,
    RegistryClaim,
)
from dho.ingest.errors import Unparseable
from dho.ingest.payload import parse_json
from dho.questionnaires.responses import parse_response


def decode(payload: bytes, adapter: Adapter, ctx: DecodeContext) -> Decoded:
    document = parse_json(payload)
    if not isinstance(document, dict) or document.get("resourceType") != "QuestionnaireResponse":
        raise Unparseable("expected one FHIR QuestionnaireResponse", code="unsupported-resource")
    if ctx.questionnaires is None:
        raise Unparseable("no questionnaires are configured", code="unknown-questionnaire")
    validate(document, "QuestionnaireResponse", "QuestionnaireResponse")
    answers = parse_response(document, ctx.questionnaires)
    identifiers = (answers.subject_identifier,) if answers.subject_identifier else ()
    patient = RegistryClaim("Patient", identifiers, answers.subject)
    item = DecodedItem(
        "QuestionnaireResponse", reply=QuestionnaireReply(answers, document, patient)
    )
    identifier = document.get("identifier")
    message_id = identifier.get("value") if isinstance(identifier, dict) else None
    return Decoded(
        str(message_id)[:200] if message_id else None, (item,), kind="QuestionnaireResponse"
    )
