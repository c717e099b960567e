"""NEWS2 as a plan rule: score the latest vitals when a plan asks for it, as its own
Observation, and judge the response band at the plan's colour for it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from dho.catalogue import Catalogue
from dho.rules.judge import OUT_OF_RANGE, AppliedPlan, Finding, Judgement
from dho.rules.news2 import Patient, Score, news2
from dho.rules.news2_fhir import news2_identity, news2_observation, news2_observation_id
from dho.rules.news2_inputs import Reading, latest_vitals
from dho.rules.thresholds import Band

RULE = "news2"


@dataclass(frozen=True, slots=True)
class News2Result:
    """The score's Observation (to store) and its judgement (to alert on)."""

    identity: str
    effective: datetime
    total: int
    resource: dict[str, Any]
    judgement: Judgement


def score_news2(
    applied: AppliedPlan,
    *,
    patient_id: str,
    birth_date: date | None,
    readings: Iterable[Reading],
    at: datetime,
    issued: datetime,
    catalogue: Catalogue,
) -> News2Result | None:
    """The NEWS2 of the latest vitals up to `at`; None when the plan does not score it,
    the patient's age is unknown or excluded (under 16, pregnant), or nothing was measured."""
    plan = applied.plan
    settings = plan.news2
    if settings is None or birth_date is None:
        return None
    inputs = latest_vitals(readings, at, settings.window, settings.supplemental_oxygen)
    if inputs.effective is None:
        return None
    patient = Patient(_age(birth_date, at.date()), plan.pregnant, plan.spo2_target_88_92)
    score = news2(inputs.vitals, patient)
    if not isinstance(score, Score):
        return None
    oid = news2_observation_id(patient_id, inputs.effective)
    resource = news2_observation(score, inputs, patient_id, oid, issued, catalogue=catalogue)
    band = Band.GREEN if score.response == "none" else settings.colours[score.response]
    partial = " (partial)" if score.partial else ""
    summary = f"NEWS2 {score.total}{partial}, {score.response} ({band.label})"
    details = {"total": str(score.total), "response": score.response, "scale": str(score.scale)}
    details |= {"missing": ", ".join(score.missing)} if score.missing else {}
    finding = Finding(RULE, OUT_OF_RANGE, band, band, summary, details)
    judgement = Judgement(
        plan=applied.ref,
        colour=band,
        texts=plan.texts[band],
        findings=(finding,),
        type=RULE,
        standard=plan,
    )
    identity = news2_identity(patient_id, inputs.effective)
    return News2Result(identity, inputs.effective, score.total, resource, judgement)


def _age(born: date, on: date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))
