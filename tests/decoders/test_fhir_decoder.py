"""The FHIR decoder: PHD Observations and batch/transaction Bundles → measurements and claims."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from dho import jsonutil
from dho.decoders.fhir import decode
from dho.ingest.adapter_catalogue import load_adapters
from dho.ingest.decoded import Decoded, DecodedItem, RegistryClaim
from dho.ingest.errors import DataError
from dho.ingest.measurement import Measurement
from dho.ingest.normalise import normalise
from dho.ingest.pipeline import ReferenceData
from dho.ingest.resolve import DEVICE_ID_SYSTEM, PATIENT_ID_SYSTEM
from dho.ingest.to_fhir import to_fhir
from dho.settings import Settings

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLES = ROOT / "adapters" / "examples" / "phd-fhir"
REFERENCE = ReferenceData.load(Settings(_env_file=None))  # type: ignore[call-arg]
ADAPTER = REFERENCE.adapters.adapters["phd-fhir"]
EUI64 = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680"
FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
MDC = "urn:iso:std:iso:11073:10101"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
INGRID = "14834641411"
PATIENT_URN = "urn:uuid:6f1c2a54-3d0e-4c1b-9a51-0b7e3f5d9a01"
PHG_URN = "urn:uuid:0c7d6a3e-8b4f-4f55-a0c2-1f6e9d2b7c02"
PHD_URN = "urn:uuid:9a3e5f10-2c6b-4d8e-b7a4-3e1f0c9d8b03"


def _example(name: str) -> dict[str, Any]:
    document: dict[str, Any] = jsonutil.loads((EXAMPLES / name).read_bytes())
    return document


def _decode(document: Any) -> Decoded:
    payload = document if isinstance(document, bytes) else jsonutil.dumps(document).encode()
    return decode(payload, ADAPTER, REFERENCE.context)


def _one(document: dict[str, Any]) -> DecodedItem:
    [item] = _decode(document).items
    return item


def _measurement(document: dict[str, Any]) -> Measurement:
    item = _one(document)
    assert item.error is None, item.error
    assert item.measurement is not None
    return item.measurement


def _error(document: dict[str, Any]) -> DataError:
    item = _one(document)
    assert item.error is not None, item
    return item.error


def numeric(
    mdc: str | None = "150456",
    value: Any = 95,
    unit: str = "%",
    loinc: str | None = None,
    **changes: Any,
) -> dict[str, Any]:
    """A single PHD numeric Observation (SpO2 by default) naming its device by identifier."""
    codings = []
    if mdc is not None:
        codings.append({"system": MDC, "code": mdc})
    if loinc is not None:
        codings.append({"system": LOINC, "code": loinc})
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"value": "001C05FFFE010002-x-150456-95-%-20261124081600.00"}],
        "status": "final",
        "code": {"coding": codings},
        "subject": {"identifier": {"system": FNR, "value": INGRID}},
        "effectiveDateTime": "2026-11-24T08:16:00+01:00",
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
        "device": {"identifier": {"system": EUI64, "value": "00-1C-05-FF-FE-01-00-02"}},
    }
    resource.update(changes)
    return resource


def bundle(kind: str, *resources: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A Bundle of POST entries, each with an urn:uuid fullUrl of its own."""
    entries = [
        {
            "fullUrl": f"urn:uuid:00000000-0000-4000-8000-{index:012d}",
            "resource": resource,
            "request": {"method": "POST", "url": resource["resourceType"]},
        }
        for index, resource in enumerate(resources)
    ]
    return {"resourceType": "Bundle", "type": kind, "entry": entries, **extra}


# ---------------------------------------------------------------- single Observation


def test_a_blood_pressure_observation_is_one_panel_with_its_phd_identifier() -> None:
    decoded = _decode(_example("bp-observation.json"))
    assert decoded.kind == "Observation" and not decoded.atomic and decoded.message_id is None
    [item] = decoded.items
    assert item.label == "Observation" and item.measurement is not None
    m = item.measurement
    assert (m.device_system, m.device_id) == (EUI64, "00-1C-05-FF-FE-01-00-01")
    assert m.type == "blood-pressure" and m.value is None
    assert {k: (str(q.value), q.unit) for k, q in m.components.items()} == {
        "systolic": ("142", "mm[Hg]"),
        "diastolic": ("88", "mm[Hg]"),
        "mean": ("106", "mm[Hg]"),
    }
    assert m.effective.isoformat() == "2026-11-24T08:15:00+01:00" and m.time_flag is None
    assert m.patient == (FNR, INGRID)
    assert m.source_identifier is not None and m.source_identifier[0] == ""
    assert m.source_identifier[1].startswith("001C05FFFE010001-14834641411-")


def test_panel_components_are_read_by_loinc_too_and_phd_extras_are_skipped() -> None:
    resource = _example("bp-observation.json")
    for component in resource["component"]:
        component["code"]["coding"] = [
            c for c in component["code"]["coding"] if c["system"] == LOINC
        ]
    resource["component"] = [c for c in resource["component"] if c["code"]["coding"]]
    resource["component"].append(
        {
            "code": {"coding": [{"system": MDC, "code": "68193"}]},
            "valueCodeableConcept": {"coding": [{"system": MDC, "code": "150588"}]},
        }
    )
    m = _measurement(resource)
    assert sorted(m.components) == ["diastolic", "systolic"]


def test_a_panel_component_named_twice_or_with_conflicting_codes_is_refused() -> None:
    twice = _example("bp-observation.json")
    twice["component"].append(copy.deepcopy(twice["component"][0]))
    assert _error(twice).code == "duplicate-component"
    mixed = _example("bp-observation.json")
    mixed["component"][0]["code"]["coding"][1]["code"] = "8462-4"
    error = _error(mixed)
    assert error.code == "conflicting-codes" and error.reason == "mapping-error"


def test_a_panel_without_its_required_components_fails_normalise() -> None:
    resource = _example("bp-observation.json")
    resource["component"] = resource["component"][:1]
    m = _measurement(resource)
    with pytest.raises(DataError, match="missing component"):
        normalise(m, REFERENCE.types, REFERENCE.limits)


@pytest.mark.parametrize(
    ("mdc", "unit", "loinc", "expected"),
    [
        ("150456", "%", None, "oxygen-saturation"),
        ("149530", "/min", "8867-4", "heart-rate"),  # the oximeter's pulse, an alias
        ("149546", "/min", None, "heart-rate"),
        ("150364", "Cel", "8310-5", "body-temperature"),
        ("188736", "[lb_av]", "29463-7", "body-weight"),
        ("160184", "mg/dL", "41653-7", "blood-glucose"),
        ("160184", "mmol/L", None, "blood-glucose"),
        (None, "/min", "8867-4", "heart-rate"),
        (None, "mg/dL", "41653-7", "blood-glucose"),
    ],
)
def test_the_type_comes_from_the_mdc_code_and_unit_or_else_loinc(
    mdc: str | None, unit: str, loinc: str | None, expected: str
) -> None:
    m = _measurement(numeric(mdc, 70, unit, loinc))
    assert m.type == expected and m.value is not None and m.value.unit == unit


@pytest.mark.parametrize(
    ("mdc", "unit", "loinc", "code", "fragment"),
    [
        ("188752", "cm", None, "unknown-code", "no measurement type has the MDC code 188752"),
        ("150456", "kg", None, "unit", "not known in the unit 'kg'"),
        ("150021", "mm[Hg]", None, "unknown-code", "systolic component of blood-pressure"),
        (None, "kg", "8867-4", "unit", "not accepted for heart-rate"),
        (None, "%", "12345-6", "unknown-code", "no MDC or LOINC code"),
        (None, "mm[Hg]", "85354-9", "unknown-code", "a panel"),
        ("150456", "%", "8867-4", "conflicting-codes", "means heart-rate"),
    ],
)
def test_unknown_codes_and_units_are_mapping_errors(
    mdc: str | None, unit: str, loinc: str | None, code: str, fragment: str
) -> None:
    error = _error(numeric(mdc, 70, unit, loinc))
    assert error.code == code and error.reason == "mapping-error"
    assert fragment in str(error)


def test_glucose_in_mg_per_dl_is_decoded_as_sent_and_normalised_to_mmol_per_l() -> None:
    [glucose, battery] = _decode(_example("batch.json")).items
    assert glucose.measurement is not None
    m = glucose.measurement
    assert m.type == "blood-glucose" and m.value is not None
    assert (m.value.value, m.value.unit) == (Decimal(104), "mg/dL")
    assert (m.device_system, m.device_id) == (EUI64, "00-1C-05-FF-FE-01-00-04")
    normalised = normalise(m, REFERENCE.types, REFERENCE.limits)
    assert normalised.value is not None
    assert (str(normalised.value.value), normalised.value.unit) == ("5.8", "mmol/L")
    resource = to_fhir(normalised, patient_id="p", device_id="d", catalogue=REFERENCE.types)
    assert {"system": LOINC, "code": "14743-9"} in [
        {k: c[k] for k in ("system", "code")} for c in resource["code"]["coding"]
    ]
    assert battery.error is None and battery.measurement is None
    assert (
        battery.note == "device information (MDC 67996 MDC_ATTR_VAL_BATT_CHARGE): read, not stored"
    )


def test_weight_in_pounds_keeps_its_precision_and_becomes_kilograms() -> None:
    m = _measurement(_example("weight-lb.json"))
    assert m.value is not None and str(m.value.value) == "176.4" and m.value.unit == "[lb_av]"
    normalised = normalise(m, REFERENCE.types, REFERENCE.limits)
    assert normalised.value is not None and str(normalised.value.value) == "80.0"
    assert normalised.value.unit == "kg"
    temperature = _measurement(numeric("150364", Decimal("36.50"), "Cel"))
    assert temperature.value is not None and str(temperature.value.value) == "36.50"


@pytest.mark.parametrize(
    ("quantity", "code"),
    [
        ({"value": 95, "unit": "%", "code": "%"}, "unit"),  # no UCUM system
        (
            {"value": 95, "unit": "%", "system": "urn:iso:std:iso:11073:10101", "code": "262688"},
            "unit",
        ),
        ({"value": 95, "unit": "%", "system": UCUM}, "unit"),  # no code
        ({"value": 95, "comparator": "<", "system": UCUM, "code": "%"}, "unsupported-value"),
        ({"unit": "%", "system": UCUM, "code": "%"}, "decode"),  # no value
    ],
)
def test_a_value_must_be_an_exact_ucum_quantity(quantity: dict[str, Any], code: str) -> None:
    assert _error(numeric(valueQuantity=quantity)).code == code


def test_other_value_types_are_refused_and_a_data_absent_reason_is_a_note() -> None:
    string = numeric()
    del string["valueQuantity"]
    string["valueString"] = "high"
    assert _error(string).code == "unsupported-value"
    absent = numeric()
    del absent["valueQuantity"]
    absent["dataAbsentReason"] = {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "error"}
        ]
    }
    item = _one(absent)
    assert item.error is None and item.measurement is None and item.claim is None
    assert item.note == "no value (dataAbsentReason error): nothing to store"
    nothing = numeric()
    del nothing["valueQuantity"]
    assert _error(nothing).code == "no-value"


# ---------------------------------------------------------------- status and time


@pytest.mark.parametrize("status", ["final", "amended", "corrected"])
def test_stored_statuses(status: str) -> None:
    assert _measurement(numeric(status=status)).type == "oxygen-saturation"


@pytest.mark.parametrize(
    "status", ["preliminary", "entered-in-error", "cancelled", "registered", "unknown"]
)
def test_statuses_that_are_not_readings_are_refused(status: str) -> None:
    error = _error(numeric(status=status))
    assert error.code == "status-not-accepted" and error.reason == "mapping-error"
    assert status in str(error)


def test_a_status_r4_does_not_know_is_invalid_fhir() -> None:
    error = _error(numeric(status="done"))
    assert error.code == "invalid-fhir" and error.reason == "unparseable"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"effectiveDateTime": "2026-11-24T08:16:00.250+02:00"},
            "2026-11-24T08:16:00.250000+02:00",
        ),
        ({"effectiveDateTime": "2026-11-24T07:16:00Z"}, "2026-11-24T07:16:00+00:00"),
        # The PHD IG: -00:00 is UTC with the local offset unknown; the instant is exact.
        ({"effectiveDateTime": "2026-11-24T07:16:00-00:00"}, "2026-11-24T07:16:00+00:00"),
        (
            {
                "effectiveDateTime": None,
                "effectivePeriod": {
                    "start": "2026-11-24T08:00:00+01:00",
                    "end": "2026-11-24T08:30:00+01:00",
                },
            },
            "2026-11-24T08:00:00+01:00",
        ),
        (
            {"effectiveDateTime": None, "effectiveInstant": "2026-11-24T08:16:00.123+01:00"},
            "2026-11-24T08:16:00.123000+01:00",
        ),
    ],
)
def test_the_effective_time_keeps_the_offset_the_gateway_sent(
    changes: dict[str, Any], expected: str
) -> None:
    resource = numeric(**changes)
    resource = {k: v for k, v in resource.items() if v is not None}
    m = _measurement(resource)
    assert m.effective.isoformat() == expected and m.time_flag is None


@pytest.mark.parametrize(
    ("effective", "code"),
    [
        ("2026-11-24", "decode"),  # day resolution: no time to store
        ("2026-11-24T08:16:00", "invalid-fhir"),  # a time without an offset is not FHIR
        ("2026-02-30T08:16:00+01:00", "invalid-fhir"),
        ("yesterday", "invalid-fhir"),
        ("1970-01-01T00:00:00+00:00", "decode"),
    ],
)
def test_a_bad_effective_time_is_unparseable(effective: str, code: str) -> None:
    error = _error(numeric(effectiveDateTime=effective))
    assert error.code == code and error.reason == "unparseable"


def test_an_observation_without_a_time_is_refused() -> None:
    resource = numeric()
    del resource["effectiveDateTime"]
    assert _error(resource).code == "no-time"


# ---------------------------------------------------------------- invalid FHIR


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda r: r.update(status=5), "status"),
        (lambda r: r["valueQuantity"].update(value="abc"), "valueQuantity.value"),
        (lambda r: r["valueQuantity"].update(value=True), "valueQuantity.value"),
        (lambda r: r.update(subject="Patient/1"), "subject"),
        (lambda r: r.update(unexpected=1), "unexpected"),
        (lambda r: r.pop("code"), "code"),
        (lambda r: r["code"].update(coding={"system": MDC, "code": "150456"}), "code.coding"),
        (lambda r: r.update(identifier=[{"value": 12.5}]), "identifier[0].value"),
    ],
)
def test_invalid_fhir_names_the_first_wrong_element(mutate: Any, where: str) -> None:
    resource = numeric()
    mutate(resource)
    error = _error(resource)
    assert error.code == "invalid-fhir" and error.reason == "unparseable"
    assert str(error).startswith(f"Observation: not valid FHIR R4: {where}: ")


def test_an_invalid_fhir_message_never_quotes_patient_data() -> None:
    resource = numeric(subject={"identifier": {"system": FNR, "value": [INGRID]}})
    error = _error(resource)
    assert "subject.identifier.value" in str(error) and INGRID not in str(error)
    contained = numeric(contained=[{"resourceType": "Foo", "id": INGRID}])
    error = _error(contained)
    assert error.code == "invalid-fhir" and INGRID not in str(error)
    conditional = numeric(subject={"reference": f"Patient?name={INGRID}"})
    error = _error(conditional)
    assert error.code == "unsupported-reference" and INGRID not in str(error)


# ---------------------------------------------------------------- devices and patients


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        (
            {"identifier": {"system": EUI64, "value": "001c05fffe010002"}},
            (EUI64, "00-1C-05-FF-FE-01-00-02"),
        ),
        (
            {"reference": f"Device?identifier={EUI64}|00-1C-05-FF-FE-01-00-02"},
            (EUI64, "00-1C-05-FF-FE-01-00-02"),
        ),
        (
            {"reference": f"Device?identifier={EUI64.replace(':', '%3A')}%7C001C05FFFE010002"},
            (EUI64, "00-1C-05-FF-FE-01-00-02"),
        ),
        (
            {"reference": "Device/8c1f2e3d-aaaa-4bbb-8ccc-123456789abc"},
            (DEVICE_ID_SYSTEM, "8c1f2e3d-aaaa-4bbb-8ccc-123456789abc"),
        ),
    ],
)
def test_device_references(device: dict[str, Any], expected: tuple[str, str]) -> None:
    m = _measurement(numeric(device=device))
    assert (m.device_system, m.device_id) == expected


@pytest.mark.parametrize(
    ("device", "code"),
    [
        (None, "no-device"),
        ({"reference": "urn:uuid:11111111-2222-4333-8444-555555555555"}, "unresolved-reference"),
        ({"reference": "https://other.example/fhir/Device/1"}, "unsupported-reference"),
        ({"reference": "Device?identifier=00-1C-05-FF-FE-01-00-02"}, "unsupported-reference"),
        ({"reference": "Patient/1"}, "unsupported-reference"),
        ({"display": "my oximeter"}, "unsupported-reference"),
    ],
)
def test_a_device_that_cannot_be_named_is_refused(device: dict[str, Any] | None, code: str) -> None:
    resource = numeric(device=device)
    if device is None:
        del resource["device"]
    error = _error(resource)
    assert error.code == code and error.reason == "unparseable"


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        (
            {"reference": "Patient/0f9e8d7c-1111-4222-8333-444455556666"},
            (PATIENT_ID_SYSTEM, "0f9e8d7c-1111-4222-8333-444455556666"),
        ),
        ({"reference": f"Patient?identifier={FNR}|{INGRID}"}, (FNR, INGRID)),
        ({"identifier": {"system": FNR, "value": INGRID}}, (FNR, INGRID)),
        (None, None),
    ],
)
def test_subject_references(
    subject: dict[str, Any] | None, expected: tuple[str, str] | None
) -> None:
    resource = numeric(subject=subject)
    if subject is None:
        del resource["subject"]
    assert _measurement(resource).patient == expected


def test_a_phd_transaction_links_entries_by_urn_and_claims_patient_and_device() -> None:
    decoded = _decode(_example("transaction.json"))
    assert decoded.kind == "transaction" and decoded.atomic
    assert [item.label for item in decoded.items] == [f"Bundle.entry[{i}]" for i in range(5)]
    patient, phg, phd, spo2, pulse = decoded.items
    assert patient.claim == RegistryClaim("Patient", ((FNR, INGRID),))
    assert phg.note == "the gateway's own device: read, not stored" and phg.claim is None
    assert phd.claim == RegistryClaim(
        "Device",
        (
            (EUI64, "00-1C-05-FF-FE-01-00-02"),
            ("http://hl7.org/fhir/sid/eui-48/bluetooth", "00-1C-05-01-00-02"),
        ),
    )
    for item, expected in ((spo2, "oxygen-saturation"), (pulse, "heart-rate")):
        assert item.measurement is not None
        assert item.measurement.type == expected
        assert (item.measurement.device_system, item.measurement.device_id) == (
            EUI64,
            "00-1C-05-FF-FE-01-00-02",
        )
        assert item.measurement.patient == (FNR, INGRID)


def test_a_device_without_a_system_id_is_named_by_its_bluetooth_address() -> None:
    document = _example("transaction.json")
    phd = document["entry"][2]["resource"]
    phd["identifier"][0]["value"] = "00-00-00-00-00-00-00-00"
    phd["identifier"][1]["value"] = "00:1c:05:01:00:02"
    items = _decode(document).items
    bluetooth = ("http://hl7.org/fhir/sid/eui-48/bluetooth", "00-1C-05-01-00-02")
    assert items[2].claim is not None and items[2].claim.identifiers == (bluetooth,)
    m = items[3].measurement
    assert m is not None and (m.device_system, m.device_id) == bluetooth


def test_a_patient_is_named_by_the_national_id_and_a_put_id_is_a_reference() -> None:
    document = _example("transaction.json")
    entry = document["entry"][0]
    entry["resource"]["identifier"].insert(0, {"system": "urn:oid:1.2.3.4", "value": "MR-77"})
    entry["request"] = {"method": "PUT", "url": "Patient/pat-1001"}
    items = _decode(document).items
    assert items[0].claim == RegistryClaim(
        "Patient", ((FNR, INGRID), ("urn:oid:1.2.3.4", "MR-77")), reference="Patient/pat-1001"
    )
    assert items[3].measurement is not None and items[3].measurement.patient == (FNR, INGRID)
    del entry["resource"]["identifier"][1]
    items = _decode(document).items
    assert items[3].measurement is not None
    assert items[3].measurement.patient == (PATIENT_ID_SYSTEM, "pat-1001")


def test_later_uploads_refer_to_put_entries_and_absolute_full_urls() -> None:
    document = _example("transaction.json")
    document["entry"][2]["fullUrl"] = "https://dho.example.no/fhir/Device/phd-7"
    for entry in document["entry"][3:]:
        entry["resource"]["device"] = {"reference": "Device/phd-7"}
    items = _decode(document).items
    assert items[2].claim is not None
    assert items[3].measurement is not None
    assert items[3].measurement.device_id == "00-1C-05-FF-FE-01-00-02"


def test_gateway_devices_are_notes_and_a_device_named_by_an_observation_is_a_claim() -> None:
    document = _example("transaction.json")
    for entry in document["entry"][3:]:
        entry["resource"]["extension"] = [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/device-gateway",
                "valueCodeableReference": {"reference": {"reference": PHD_URN}},
            }
        ]
    items = _decode(document).items
    assert items[1].note is not None and items[1].claim is None  # named by nothing at all
    assert items[2].claim is not None  # the device and also "the gateway": the device wins


def test_device_information_is_read_not_stored_and_names_no_device() -> None:
    decoded = _decode(_example("transaction-with-time-stamp.json"))
    patient, phg, phd, time_stamp, bp, pulse, battery = decoded.items
    assert patient.claim is not None and phd.claim is not None
    # The Coincident Time Stamp's `device` is the gateway: it stays the gateway, not a claim.
    assert phg.claim is None and phg.note == "the gateway's own device: read, not stored"
    assert time_stamp.note == "device information (MDC 67975 MDC_ATTR_TIME_ABS): read, not stored"
    assert (
        battery.note == "device information (MDC 67996 MDC_ATTR_VAL_BATT_CHARGE): read, not stored"
    )
    for item in (time_stamp, battery):
        assert item.error is None and item.measurement is None and item.claim is None
    assert bp.measurement is not None and bp.measurement.type == "blood-pressure"
    assert pulse.measurement is not None and pulse.measurement.type == "heart-rate"


def test_device_information_is_ignored_whatever_its_value_status_and_display() -> None:
    time_stamp = numeric("67975", status="preliminary")
    del time_stamp["valueQuantity"]
    time_stamp["valueDateTime"] = "2026-11-24T08:15:58+01:00"
    assert _one(time_stamp).note == "device information (MDC 67975): read, not stored"
    power = numeric("67925")
    power["code"]["coding"][0]["display"] = f"power of {INGRID}"  # not an MDC reference id
    assert _one(power).note == "device information (MDC 67925): read, not stored"
    broken = numeric("67996", status="done")  # device information must still be valid FHIR
    assert _error(broken).code == "invalid-fhir"


def test_the_ignore_list_is_the_adapters_data() -> None:
    assert {"67975", "67996"} <= ADAPTER.ignore_codes
    for code in ADAPTER.ignore_codes:  # device information is never a measurement type
        assert code.isdigit() and not REFERENCE.types.knows_mdc(code), code
    without = replace(ADAPTER, ignore_codes=frozenset())
    payload = jsonutil.dumps(numeric("67996")).encode()
    [item] = decode(payload, without, REFERENCE.context).items
    assert item.error is not None and item.error.code == "unknown-code"
    document = _example("transaction-with-time-stamp.json")
    items = decode(jsonutil.dumps(document).encode(), without, REFERENCE.context).items
    assert items[1].claim is not None  # named as the time stamp's device: a claim again


def test_ignore_codes_need_coded_or_a_decoder(tmp_path: Path) -> None:
    folder = tmp_path / "adapters"
    folder.mkdir()
    shutil.copy(ROOT / "adapters" / "adapter.schema.json", folder)
    (folder / "plain-json.yaml").write_text(
        "name: plain-json\ndescription: x\nformat: json\nitems: [$]\n"
        "fields: {device_id: [id], time: [t], type: [k]}\nignore_codes: ['1']\n",
        encoding="utf-8",
    )
    (folder / "with-decoder.yaml").write_text(
        "name: with-decoder\ndescription: x\nformat: fhir\ndecoder: fhir\n"
        "ignore_codes: ['67996']\n",
        encoding="utf-8",
    )
    catalogue = load_adapters(folder)
    assert catalogue.adapters["with-decoder"].ignore_codes == frozenset({"67996"})
    assert set(catalogue.broken) == {"plain-json"}
    assert "'coded' is a required property" in catalogue.broken["plain-json"]


def test_an_observation_whose_device_is_a_patient_entry_is_refused() -> None:
    document = _example("transaction.json")
    document["entry"][3]["resource"]["device"] = {"reference": PATIENT_URN}
    items = _decode(document).items
    assert items[3].error is not None and items[3].error.code == "wrong-reference"
    assert items[4].measurement is not None


# ---------------------------------------------------------------- Bundle entries


@pytest.mark.parametrize(
    ("mutate", "code", "reason"),
    [
        (lambda e: e["resource"].update(resourceType="Foo"), "invalid-fhir", "unparseable"),
        (lambda e: e["resource"].update(resourceType="observation"), "invalid-fhir", "unparseable"),
        (lambda e: e["resource"].pop("resourceType"), "invalid-fhir", "unparseable"),
        (
            lambda e: e.update(
                resource={"resourceType": "Provenance"},
                request={"method": "POST", "url": "Provenance"},
            ),
            "unsupported-resource",
            "mapping-error",
        ),
        (lambda e: e["request"].update(method="DELETE"), "unsupported-method", "mapping-error"),
        (lambda e: e["request"].update(method="GET"), "unsupported-method", "mapping-error"),
        (lambda e: e.pop("request"), "invalid-fhir", "unparseable"),
        (lambda e: e["request"].pop("url"), "invalid-fhir", "unparseable"),
        (lambda e: e["request"].update(url="Patient"), "invalid-fhir", "unparseable"),
        (lambda e: e.update(fullUrl=5), "invalid-fhir", "unparseable"),
        (lambda e: e.pop("resource"), "invalid-fhir", "unparseable"),
        (lambda e: e["resource"]["identifier"][0].update(value=7), "invalid-fhir", "unparseable"),
    ],
)
def test_a_bad_entry_is_refused_alone(mutate: Any, code: str, reason: str) -> None:
    document = _example("transaction.json")
    document["type"] = "batch"
    mutate(document["entry"][3])
    items = _decode(document).items
    assert len(items) == 5
    assert items[3].error is not None, items[3]
    assert (items[3].error.code, items[3].error.reason) == (code, reason)
    assert str(items[3].error).startswith("Bundle.entry[3]: ")
    assert items[4].measurement is not None and items[0].claim is not None


def test_a_patient_or_device_entry_must_be_valid_fhir_too() -> None:
    document = _example("transaction.json")
    document["entry"][0]["resource"]["birthDate"] = "1946-02-30"
    document["entry"][2]["resource"]["specialization"] = "pulse oximeter"
    items = _decode(document).items
    assert items[0].error is not None and items[0].error.code == "invalid-fhir"
    assert items[2].error is not None and "specialization" in str(items[2].error)


def test_put_entries_are_accepted() -> None:
    document = _example("transaction.json")
    document["entry"][3]["request"] = {"method": "PUT", "url": "Observation/o-1"}
    assert _decode(document).items[3].measurement is not None


def test_bundle_identifier_is_the_message_id() -> None:
    document = bundle(
        "batch", numeric(), identifier={"system": "urn:ietf:rfc:3986", "value": "urn:uuid:1"}
    )
    assert _decode(document).message_id == "urn:ietf:rfc:3986|urn:uuid:1"
    assert _decode(bundle("batch", numeric(), identifier={"value": "b-1"})).message_id == "b-1"
    assert _decode(bundle("batch", numeric())).message_id is None
    assert _decode(bundle("batch")).items == ()


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        (b"\xff\xfe not json", "decode", "unparseable"),
        (b"[]", "decode", "unparseable"),
        (b"[" * 100 + b"]" * 100, "decode", "unparseable"),
        (json.dumps({"resourceType": "Patient"}).encode(), "unsupported-resource", "unparseable"),
        (
            json.dumps({"resourceType": "Bundle", "type": "collection", "entry": []}).encode(),
            "unsupported-bundle-type",
            "unparseable",
        ),
        (
            json.dumps({"resourceType": "Bundle", "type": "searchset"}).encode(),
            "unsupported-bundle-type",
            "unparseable",
        ),
        (
            json.dumps({"resourceType": "Bundle", "entry": []}).encode(),
            "invalid-fhir",
            "unparseable",
        ),
        (
            json.dumps({"resourceType": "Bundle", "type": "batch", "entry": {}}).encode(),
            "invalid-fhir",
            "unparseable",
        ),
        (
            json.dumps({"resourceType": "Bundle", "type": "batch", "total": "x"}).encode(),
            "invalid-fhir",
            "unparseable",
        ),
    ],
)
def test_a_message_that_is_not_an_observation_or_batch_is_refused_whole(
    payload: bytes, code: str, reason: str
) -> None:
    with pytest.raises(DataError) as caught:
        _decode(payload)
    assert (caught.value.code, caught.value.reason) == (code, reason)


def test_too_many_entries_is_oversized() -> None:
    document = bundle("batch", *[numeric()] * (REFERENCE.context.max_items + 1))
    with pytest.raises(DataError) as caught:
        _decode(document)
    assert (caught.value.reason, caught.value.code) == ("oversized", "too-many-measurements")


def test_fhir_resources_is_imported_only_when_a_message_is_decoded() -> None:
    script = (
        "import sys, dho.decoders.fhir as f, dho.ingest.pipeline\n"
        "assert not any(m.startswith('fhir.resources') for m in sys.modules)\n"
        "from dho.ingest.pipeline import ReferenceData\n"
        "from dho.settings import Settings\n"
        "ref = ReferenceData.load(Settings(_env_file=None))\n"
        'f.decode(b\'{"resourceType": "Bundle", "type": "batch"}\', ref.adapters.adapters[\'phd-fhir\'], ref.context)\n'
        "assert 'fhir.resources.R4B.bundle' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT, timeout=60)
