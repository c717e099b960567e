"""A patient's QuestionnaireResponse: read and checked against its Questionnaire, then
judged by the questionnaire's rules. Pure; errors are DataErrors with a specific code."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from dho.ingest.errors import DataError, Unparseable
from dho.questionnaires.catalogue import ANSWER_SYSTEM, QuestionnaireCatalogue, QuestionnaireDef
from dho.rules.plans import Texts
from dho.rules.thresholds import Band

ACCEPTED_STATUS = ("completed", "amended")
QUESTIONNAIRE_ANSWER = "questionnaire-answer"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Answers:
    """A checked reply: which questionnaire, when, for whom (as sent), and each answer."""

    questionnaire: QuestionnaireDef
    authored: datetime
    subject: str | None  # `Patient/<id>` as sent
    subject_identifier: tuple[str, str] | None
    answers: dict[str, str]  # linkId -> answer code

    def identity(self, patient_id: str) -> str:
        millis = (self.authored - _EPOCH) // timedelta(milliseconds=1)
        return f"qr|{patient_id}|{self.questionnaire.id}|{millis}"


@dataclass(frozen=True, slots=True)
class QuestionnaireJudgement:
    colour: Band
    texts: Texts
    flagged: dict[str, Band]  # linkId -> colour, for the answers that are not green
    summary: str


def parse_response(resource: Any, catalogue: QuestionnaireCatalogue) -> Answers:
    """The answers of an R4 QuestionnaireResponse (already structure-checked)."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "QuestionnaireResponse":
        raise Unparseable("expected a QuestionnaireResponse", code="unsupported-resource")
    if resource.get("status") not in ACCEPTED_STATUS:
        raise DataError(
            f"status {resource.get('status')!r}: only completed or amended replies are judged",
            code="status-not-accepted",
        )
    definition = _questionnaire(str(resource.get("questionnaire", "")), catalogue)
    authored = _authored(resource.get("authored"))
    subject, identifier = _subject(resource.get("subject"))
    answers: dict[str, str] = {}
    for index, item in enumerate(resource.get("item", ())):
        link_id = str(item.get("linkId", ""))
        known = definition.items.get(link_id)
        if known is None:
            raise DataError(
                f"item[{index}]: {definition.id} has no item {link_id!r}", code="unknown-item"
            )
        if link_id in answers:
            raise DataError(f"item[{index}]: {link_id} answered twice", code="duplicate-item")
        answers[link_id] = _answer(item, known.options, f"item[{index}] ({link_id})")
    missing = [
        i.link_id for i in definition.items.values() if i.required and i.link_id not in answers
    ]
    if missing:
        raise DataError(f"required items not answered: {', '.join(missing)}", code="missing-answer")
    return Answers(definition, authored, subject, identifier, answers)


def judge_answers(answers: Answers) -> QuestionnaireJudgement:
    """The reply's colour: its worst answer's, or red when the rules' number of yellow
    answers come together."""
    definition = answers.questionnaire
    flagged = {
        link_id: definition.items[link_id].colours[code]
        for link_id, code in answers.answers.items()
        if code in definition.items[link_id].colours
    }
    colour = max(flagged.values(), default=Band.GREEN)
    yellow = sum(1 for band in flagged.values() if band == Band.YELLOW)
    if definition.red_when_yellow is not None and yellow >= definition.red_when_yellow:
        colour = Band.RED
    shown = ", ".join(f"{link}={answers.answers[link]}" for link in flagged) or "as usual"
    summary = f"{definition.title}: {shown} ({colour.label})"
    return QuestionnaireJudgement(colour, definition.texts[colour], flagged, summary)


def _questionnaire(canonical: str, catalogue: QuestionnaireCatalogue) -> QuestionnaireDef:
    url, _, version = canonical.partition("|")
    definition = catalogue.by_url.get(url)
    if definition is None:
        raise DataError(
            f"questionnaire {canonical[:200]!r} is not known here", code="unknown-questionnaire"
        )
    if version and version != definition.version:
        raise DataError(
            f"questionnaire {url} version {version!r}: "
            f"this service has version {definition.version}",
            code="questionnaire-version",
        )
    return definition


def _authored(value: Any) -> datetime:
    if not isinstance(value, str) or "T" not in value:
        raise DataError("authored must be a date-time with a time zone", code="no-authored")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise DataError(f"authored {value[:40]!r} is not a date-time", code="no-authored") from exc
    if moment.utcoffset() is None:
        raise DataError(f"authored {value[:40]!r} has no time zone", code="time-zone")
    return moment


def _subject(value: Any) -> tuple[str | None, tuple[str, str] | None]:
    if not isinstance(value, dict):
        raise DataError("subject must name the patient", code="no-subject")
    reference = value.get("reference")
    if isinstance(reference, str) and reference.startswith("Patient/"):
        return reference, None
    identifier = value.get("identifier")
    if isinstance(identifier, dict) and identifier.get("system") and identifier.get("value"):
        return None, (str(identifier["system"]), str(identifier["value"]))
    raise DataError("subject must be Patient/<id> or a patient identifier", code="no-subject")


def _answer(item: dict[str, Any], options: tuple[str, ...], where: str) -> str:
    answers = item.get("answer") or []
    if len(answers) != 1 or not isinstance(answers[0], dict):
        raise DataError(f"{where}: exactly one answer is expected", code="missing-answer")
    coding = answers[0].get("valueCoding")
    if not isinstance(coding, dict) or coding.get("system") != ANSWER_SYSTEM:
        raise DataError(
            f"{where}: the answer must be a valueCoding in {ANSWER_SYSTEM}",
            code="wrong-answer-type",
        )
    code = str(coding.get("code"))
    if code not in options:
        raise DataError(
            f"{where}: {code[:40]!r} is not one of {', '.join(options)}", code="unknown-answer"
        )
    return code
