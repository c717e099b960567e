"""Checking the adapter catalogue as a whole, and trying a payload without storing it.

Every adapter has example payloads under `adapters/examples/<adapter>/`, each beside a
`<example>.expected.yaml` with what it must become: the message id and, per item, the
measurement in canonical units (or the reason it is refused, or the registry entry a
FHIR Bundle names). `check_catalogue` decodes and normalises every example and compares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from dho import units
from dho.catalogue import Catalogue, MeasurementType
from dho.ingest.adapter_catalogue import Adapter
from dho.ingest.decode import decode
from dho.ingest.decoded import DecodedItem
from dho.ingest.errors import DataError
from dho.ingest.measurement import Measurement, Quantity, RawMessage
from dho.ingest.normalise import normalise
from dho.ingest.pipeline import ReferenceData
from dho.ingest.times import fhir_datetime
from dho.ingest.to_fhir import to_fhir
from dho.questionnaires.responses import judge_answers

EXPECTED_SUFFIX = ".expected.yaml"
EXAMPLES_DIR = "examples"


@dataclass(slots=True)
class CheckReport:
    adapters: int = 0
    examples: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_catalogue(adapters_dir: Path, reference: ReferenceData) -> CheckReport:
    """Every adapter valid, every code and unit known, every example as expected."""
    report = CheckReport()
    for name, error in sorted(reference.adapters.broken.items()):
        report.problems.append(f"{name}: {error}")
    for name, adapter in sorted(reference.adapters.adapters.items()):
        report.adapters += 1
        report.problems.extend(f"{name}: {p}" for p in _mapping_problems(adapter, reference.types))
        examples = example_files(adapters_dir, name)
        if not examples:
            report.problems.append(f"{name}: no example payloads in {EXAMPLES_DIR}/{name}/")
        for example in examples:
            report.examples += 1
            problems = check_example(adapter, example, reference)
            report.problems.extend(f"{name}: {example.name}: {p}" for p in problems)
    return report


def example_files(adapters_dir: Path, name: str) -> list[Path]:
    """The example payloads of an adapter (every file but the expectations)."""
    folder = adapters_dir / EXAMPLES_DIR / name
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.endswith(EXPECTED_SUFFIX)
    )


def check_example(adapter: Adapter, example: Path, reference: ReferenceData) -> list[str]:
    """The differences between what an example becomes and its expectation file."""
    expected_path = example.with_name(example.name.rsplit(".", 1)[0] + EXPECTED_SUFFIX)
    if not expected_path.is_file():
        return [f"no {expected_path.name} beside it"]
    expected = yaml.safe_load(expected_path.read_text(encoding="utf-8"))
    actual = describe_payload(adapter.name, example.read_bytes(), reference)
    if actual == expected:
        return []
    return [f"becomes\n{_yaml(actual)}but {expected_path.name} says\n{_yaml(expected)}"]


def describe_payload(adapter: str, payload: bytes, reference: ReferenceData) -> dict[str, Any]:
    """What a payload becomes, item by item, as plain data (nothing is stored)."""
    raw = RawMessage(payload, "http", f"/ingest/{adapter}", "example", adapter, datetime.now(UTC))
    try:
        decoded = decode(raw, reference.adapters, reference.context)
    except DataError as error:
        return {"error": _error(error)}
    out: dict[str, Any] = {}
    if decoded.message_id is not None:
        out["message_id"] = decoded.message_id
    if decoded.atomic:
        out["atomic"] = True
    out["items"] = [_describe_item(item, reference) for item in decoded.items]
    return out


def try_payload(adapter: str, payload: bytes, reference: ReferenceData) -> dict[str, Any]:
    """`describe_payload` plus the Observation JSON each measurement would become."""
    described = describe_payload(adapter, payload, reference)
    raw = RawMessage(payload, "http", f"/ingest/{adapter}", "example", adapter, datetime.now(UTC))
    try:
        decoded = decode(raw, reference.adapters, reference.context)
    except DataError:
        return described
    for shown, item in zip(described["items"], decoded.items, strict=True):
        if item.measurement is None or "error" in shown:
            continue
        m = normalise(item.measurement, reference.types, reference.limits)
        shown["observation"] = to_fhir(
            m, patient_id="from-registry", device_id="from-registry", catalogue=reference.types
        )
    return described


def warm_up(adapters_dir: Path, reference: ReferenceData) -> None:
    """Decode one example per named-decoder adapter, so the first real message is not slow.

    The FHIR decoder imports its validation models on first use (about a quarter second).
    """
    for name, adapter in reference.adapters.adapters.items():
        examples = example_files(adapters_dir, name)
        if adapter.decoder is not None and examples:
            describe_payload(name, examples[0].read_bytes(), reference)


def _describe_item(item: DecodedItem, reference: ReferenceData) -> dict[str, Any]:
    out: dict[str, Any] = {"label": item.label}
    if item.error is not None:
        out["error"] = _error(item.error)
    elif item.claim is not None:
        out["claim"] = {
            "type": item.claim.resource_type,
            "identifiers": [f"{s}|{v}" for s, v in item.claim.identifiers],
        }
        if item.claim.reference:
            out["claim"]["reference"] = item.claim.reference
    elif item.reply is not None:
        answers = item.reply.answers
        judged = judge_answers(answers)
        out["questionnaire"] = {
            "questionnaire": f"{answers.questionnaire.id} v{answers.questionnaire.version}",
            "authored": answers.authored.isoformat(),
            "patient": answers.subject or "|".join(answers.subject_identifier or ()),
            "answers": dict(answers.answers),
            "colour": judged.colour.label,
        }
    elif item.measurement is None:
        out["ignored"] = item.note or "not stored"
    else:
        try:
            m = normalise(item.measurement, reference.types, reference.limits)
        except DataError as error:
            out["error"] = _error(error)
        else:
            out.update(_measurement(m))
    return out


def _measurement(m: Measurement) -> dict[str, Any]:
    out: dict[str, Any] = {
        "device": f"{m.device_system}|{m.device_id}",
        "type": m.type,
        "time": fhir_datetime(m.effective),
    }
    if m.value is not None:
        out["value"] = _quantity(m.value)
    if m.components:
        out["components"] = {k: _quantity(q) for k, q in m.components.items()}
    if m.time_flag:
        out["time_flag"] = m.time_flag
    if m.source_key:
        out["source_identifier"] = m.source_key
    if m.patient:
        out["patient"] = "|".join(m.patient)
    return out


def _quantity(q: Quantity) -> str:
    return f"{q.value} {q.unit}"


def _error(error: DataError) -> dict[str, str]:
    return {"reason": error.reason, "code": error.code}


def _mapping_problems(adapter: Adapter, types: Catalogue) -> list[str]:
    problems: list[str] = []
    for source, key in adapter.types.items():
        if key not in types.types:
            problems.append(f"types: {source} → {key} is not a measurement type under fhir/")
    for spelled, code in adapter.units.items():
        if not units.is_valid(code):
            problems.append(f"units: {spelled} → {code!r} is not valid UCUM")
    for code, target in adapter.codes.items():
        mtype = types.types.get(target.type)
        if mtype is None:
            problems.append(f"codes: {code} → {target.type} is not a measurement type")
            continue
        problems.extend(f"codes: {code}: {p}" for p in _target_problems(mtype, target))
    return problems


def _target_problems(mtype: MeasurementType, target: Any) -> list[str]:
    if mtype.is_panel != (target.component is not None):
        return [f"{mtype.key} {'needs' if mtype.is_panel else 'has no'} a component"]
    try:
        spec = mtype.component(target.component).unit if target.component else mtype.unit
    except KeyError as exc:
        return [str(exc)]
    assert spec is not None
    if target.unit is not None and spec.conversion(target.unit) is None:
        return [f"unit {target.unit!r} is not accepted for {mtype.key} (use {spec.accepted})"]
    return []


def _yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
