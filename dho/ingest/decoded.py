"""What the decode stage hands on: per item a measurement, a registry claim, or its error."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from dho.catalogue import Catalogue
from dho.ingest.errors import DataError
from dho.ingest.measurement import Measurement
from dho.questionnaires.catalogue import QuestionnaireCatalogue
from dho.questionnaires.responses import Answers


@dataclass(frozen=True, slots=True)
class RegistryClaim:
    """A Patient or Device a message describes (e.g. a FHIR Bundle entry), to be matched.

    The service never creates registry entries from device data: a claim is matched
    against the registry by one of its identifiers (system, value), or by `reference`
    when the sender used the service's own id (`Patient/<id>`).
    """

    resource_type: Literal["Patient", "Device"]
    identifiers: tuple[tuple[str, str], ...] = ()
    reference: str | None = None


@dataclass(frozen=True, slots=True)
class QuestionnaireReply:
    """A patient's checked answers, the resource as sent, and who it names as the patient."""

    answers: Answers
    resource: dict[str, Any]
    patient: RegistryClaim


@dataclass(frozen=True, slots=True)
class DecodedItem:
    """One thing a message holds, and where (`label`, e.g. `Bundle.entry[3]` or `OBX[4]`).

    An item with neither a measurement, a claim nor an error is information the service
    reads but does not store (such as the gateway's own Device in a PHD Bundle); `note`
    says why, and its receipt status is `ignored`.
    """

    label: str
    measurement: Measurement | None = None
    claim: RegistryClaim | None = None
    error: DataError | None = None
    note: str | None = None
    reply: QuestionnaireReply | None = None


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded message. `atomic` messages (a FHIR transaction) are stored all or nothing."""

    message_id: str | None
    items: tuple[DecodedItem, ...]
    atomic: bool = False
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class DecodeContext:
    """What a decoder may use besides the payload and its adapter."""

    types: Catalogue
    local_zone: ZoneInfo
    max_items: int
    fhir_dir: Path
    questionnaires: QuestionnaireCatalogue | None = None
