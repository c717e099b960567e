"""NEWS2 as its own R4 Observation, built from a `Score` and the vitals it scored; pure.

The Observation (category `survey`, code SNOMED CT 1104051000000101, value the total in
`{score}`) is derived from the Observations it read (`derivedFrom`) and effective at the
newest input's time, with that reading's own offset. It carries:

- `interpretation`: the response band in the local CodeSystem
  `https://dho.example.no/fhir/CodeSystem/news2-response` (RCP 2017 clinical response):

  ============  ==============================================================
  code          meaning
  ============  ==============================================================
  `none`        total 0: continue routine monitoring (RCP: low clinical risk)
  `low`         total 1-4, no single parameter scoring 3
  `low-medium`  total 1-4 with a single parameter scoring 3 (urgent ward review)
  `medium`      total 5-6 (urgent response)
  `high`        total 7 or more (emergency response)
  ============  ==============================================================

- one `component` per scored parameter, `valueInteger` its points. The component code
  carries the local coding `https://dho.example.no/fhir/CodeSystem/news2-parameter`
  (code = the parameter key of dho.rules.news2.PARAMETERS) and, where the measurement
  catalogue has one, the measured parameter's LOINC code beside it; `code.text` says the
  value is NEWS2 points, not the measurement. No component code equals the Observation
  code (R4 obs-7).
- when partial: `meta.tag` observation-flag `partial` and a `note` (Norwegian, then
  English) naming the parameters that were missing.

Values are Decimal/int, never float (write with dho.jsonutil.dumps).

Identity: `news2_identity(patient, effective)` is "news2|{patient}|{epoch ms}" of the
newest input, and `news2_observation_id` its uuid5. A reading that arrives later with an
older time (or at the same instant as the newest) changes the inputs but not the
identity: the recorder should store the newer version under the same id, not drop it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from dho.catalogue import CATEGORY_SYSTEM, LOINC, UCUM, Catalogue, Coding, default_catalogue
from dho.ingest.times import fhir_datetime
from dho.ingest.to_fhir import FLAG_SYSTEM, OBSERVATION_NAMESPACE
from dho.rules.news2 import PARAMETERS, Patient, Response, Score, news2
from dho.rules.news2_inputs import Reading, VitalsSet, latest_vitals

SNOMED = "http://snomed.info/sct"
NEWS2_CODE = "1104051000000101"
NEWS2_DISPLAY = "Royal College of Physicians NEWS2 (National Early Warning Score 2) total score"
SURVEY = "survey"
RESPONSE_SYSTEM = "https://dho.example.no/fhir/CodeSystem/news2-response"
PARAMETER_SYSTEM = "https://dho.example.no/fhir/CodeSystem/news2-parameter"
SCORE_UNIT = "{score}"
PARTIAL = "partial"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_RESPONSE_DISPLAY: dict[Response, str] = {
    "none": "NEWS2 0: routine monitoring",
    "low": "NEWS2 low (1-4)",
    "low-medium": "NEWS2 low-medium (a single parameter scoring 3)",
    "medium": "NEWS2 medium (5-6): urgent response",
    "high": "NEWS2 high (7 or more): emergency response",
}
# parameter -> (measurement type, component or None) in fhir/measurement-types.yaml
_CATALOGUE_KEY: dict[str, tuple[str, str | None]] = {
    "respiratory-rate": ("respiratory-rate", None),
    "oxygen-saturation": ("oxygen-saturation", None),
    "systolic": ("blood-pressure", "systolic"),
    "heart-rate": ("heart-rate", None),
    "body-temperature": ("body-temperature", None),
}
# parameter -> (English, Norwegian)
_NAMES: dict[str, tuple[str, str]] = {
    "respiratory-rate": ("respiration rate", "respirasjonsfrekvens"),
    "oxygen-saturation": ("oxygen saturation (SpO2)", "oksygenmetning (SpO2)"),
    "supplemental-oxygen": ("air or oxygen", "luft eller oksygentilførsel"),
    "systolic": ("systolic blood pressure", "systolisk blodtrykk"),
    "heart-rate": ("pulse", "puls"),
    "consciousness": ("consciousness (ACVPU)", "bevissthet (ACVPU)"),
    "body-temperature": ("temperature", "temperatur"),
}


def news2_identity(patient_id: str, effective: datetime) -> str:
    """The NEWS2 Observation's de-duplication key: patient and newest input time (ms)."""
    if effective.utcoffset() is None:
        raise ValueError("news2_identity needs an aware effective time")
    millis = (effective - _EPOCH) // timedelta(milliseconds=1)
    return f"news2|{patient_id}|{millis}"


def news2_observation_id(patient_id: str, effective: datetime) -> str:
    """A stable Observation id for the identity (uuid5 in the Observation namespace)."""
    return str(uuid.uuid5(OBSERVATION_NAMESPACE, news2_identity(patient_id, effective)))


def news2_observation(
    score: Score,
    inputs: VitalsSet,
    patient_id: str,
    observation_id: str,
    issued: datetime,
    *,
    catalogue: Catalogue | None = None,
) -> dict[str, Any]:
    """The R4 Observation of `score`, derived from the readings in `inputs`."""
    effective = inputs.effective
    if effective is None:
        raise ValueError("a NEWS2 Observation needs at least one measured input")
    if issued.utcoffset() is None:
        raise ValueError("issued must be an aware datetime")
    types = catalogue or default_catalogue()
    resource: dict[str, Any] = {"resourceType": "Observation", "id": _fhir_id(observation_id)}
    if score.partial:
        resource["meta"] = {"tag": [_partial_tag()]}
    identifier = _identifier(observation_id)
    if identifier:
        resource["identifier"] = [identifier]
    resource["status"] = "final"
    resource["category"] = [{"coding": [_category()]}]
    resource["code"] = {
        "coding": [{"system": SNOMED, "code": NEWS2_CODE, "display": NEWS2_DISPLAY}],
        "text": "NEWS2 total score",
    }
    resource["subject"] = {"reference": f"Patient/{_fhir_id(patient_id)}"}
    resource["effectiveDateTime"] = fhir_datetime(effective)
    resource["issued"] = issued.astimezone(UTC).isoformat(timespec="milliseconds")
    resource["valueQuantity"] = {
        "value": Decimal(score.total),
        "unit": SCORE_UNIT,
        "system": UCUM,
        "code": SCORE_UNIT,
    }
    resource["interpretation"] = [_interpretation(score.response)]
    if score.partial:
        resource["note"] = [{"text": _missing_note(score.missing)}]
    resource["derivedFrom"] = [
        {"reference": f"Observation/{_fhir_id(oid)}"} for oid in inputs.observation_ids
    ]
    resource["component"] = [
        _component(name, score.points[name], score.scale, types)
        for name in PARAMETERS
        if name in score.points
    ]
    return resource


def score_latest(
    readings: Iterable[Reading],
    patient: Patient,
    *,
    patient_id: str,
    at: datetime,
    window: timedelta,
    on_oxygen: bool | None,
    issued: datetime,
    catalogue: Catalogue | None = None,
) -> dict[str, Any] | None:
    """The NEWS2 Observation from the latest vitals in the window, or None.

    None when the patient is not scored (under 16, pregnant) or no vital sign was
    measured in the window (a score from the plan's oxygen alone says nothing).
    """
    inputs = latest_vitals(readings, at, window, on_oxygen)
    if inputs.effective is None:
        return None
    score = news2(inputs.vitals, patient)
    if not isinstance(score, Score):
        return None
    oid = news2_observation_id(patient_id, inputs.effective)
    return news2_observation(score, inputs, patient_id, oid, issued, catalogue=catalogue)


def _category() -> dict[str, str]:
    return {"system": CATEGORY_SYSTEM, "code": SURVEY, "display": "Survey"}


def _partial_tag() -> dict[str, str]:
    display = "Partial NEWS2: scored from fewer than all seven parameters"
    return {"system": FLAG_SYSTEM, "code": PARTIAL, "display": display}


def _identifier(observation_id: str) -> dict[str, str] | None:
    try:
        parsed = uuid.UUID(observation_id)
    except ValueError:
        return None
    return {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{parsed}"}


def _interpretation(response: Response) -> dict[str, Any]:
    display = _RESPONSE_DISPLAY[response]
    return {"coding": [{"system": RESPONSE_SYSTEM, "code": response, "display": display}]}


def _missing_note(missing: Iterable[str]) -> str:
    names = [_NAMES[name] for name in missing]
    norwegian = ", ".join(no for _, no in names)
    english = ", ".join(en for en, _ in names)
    return f"Delvis NEWS2, mangler: {norwegian}. Partial NEWS2, missing: {english}."


def _component(name: str, points: int, scale: int, types: Catalogue) -> dict[str, Any]:
    english = _NAMES[name][0]
    if name == "oxygen-saturation":
        english += f", scale {scale}"
    coding = [{"system": PARAMETER_SYSTEM, "code": name, "display": f"NEWS2 points: {english}"}]
    coding += [c.as_fhir() for c in _loinc(name, types)]
    return {
        "code": {"coding": coding, "text": f"NEWS2 points: {english}"},
        "valueInteger": points,
    }


def _loinc(name: str, types: Catalogue) -> tuple[Coding, ...]:
    key = _CATALOGUE_KEY.get(name)
    if key is None:
        return ()
    mtype = types.get(key[0])
    codes = mtype.codes if key[1] is None else mtype.component(key[1]).codes
    return tuple(c for c in codes if c.system == LOINC)


def _fhir_id(value: str) -> str:
    if not _FHIR_ID.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid FHIR id")
    return value
