"""The IHE PCD-01 HL7 v2 decoder on its own: example messages, broken ones, every unit entry."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from dho import units
from dho.catalogue import CatalogueError
from dho.decoders.hl7v2 import decode
from dho.decoders.hl7v2_fields import hl7_time
from dho.ingest.decoded import DecodeContext, Decoded, DecodedItem
from dho.ingest.errors import DataError, Oversized, UnitError, Unparseable
from dho.ingest.measurement import Measurement
from dho.ingest.pipeline import ReferenceData
from dho.settings import Settings

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLES = ROOT / "adapters" / "examples" / "ihe-pcd-01"
REFERENCE = ReferenceData.load(Settings(_env_file=None))  # type: ignore[call-arg]
ADAPTER = REFERENCE.adapters.adapters["ihe-pcd-01"]
CTX = REFERENCE.context
EUI64 = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680"
FNR = ("urn:oid:2.16.578.1.12.4.1.4.1", "14834641411")
CET = timezone(timedelta(hours=1))
T = "20261124081500+0100"

MSH = (
    r"MSH|^~\&|HomeGateway^001C05FFFE00FF01^EUI-64||DHO-INGEST|DHO|20261124081502+0100||"
    r"{kind}|{control}|P|2.6|||NE|AL"
)
PID = r"PID|||14834641411^^^FNR&2.16.578.1.12.4.1.4.1&ISO^NNNOR||Hansen^Ingrid"
MDS_BP = r"OBX|1||528391^MDC_DEV_SPEC_PROFILE_BP^MDC|1|||||||X|||||||001C05FFFE010001^^001C05FFFE010001^EUI-64"


def obx(
    n: int, code: str, path: str, value: str, unit: str, when: str = T, kind: str = "NM"
) -> str:
    """An OBX row; `code` and `unit` as sent in OBX-3 and OBX-6."""
    return f"OBX|{n}|{kind}|{code}|{path}|{value}|{unit}|||||R|||{when}"


def pulse(value: str = "71", when: str = T, n: int = 2, path: str = "1.0.0.1") -> str:
    return obx(
        n, "149546^MDC_PULS_RATE_NON_INV^MDC", path, value, "264864^MDC_DIM_BEAT_PER_MIN^MDC", when
    )


def bp_rows(systolic: str = "128", start: int = 2, path: str = "1.0.1") -> list[str]:
    unit = "266016^MDC_DIM_MMHG^MDC"
    return [
        f"OBX|{start}||150020^MDC_PRESS_BLD_NONINV^MDC|{path}|||||||X|||{T}",
        obx(start + 1, "150021^MDC_PRESS_BLD_NONINV_SYS^MDC", f"{path}.1", systolic, unit),
        obx(start + 2, "150022^MDC_PRESS_BLD_NONINV_DIA^MDC", f"{path}.2", "82", unit),
    ]


def message(
    *rows: str,
    mds: str | None = MDS_BP,
    obr7: str = T,
    pid: str | None = PID,
    kind: str = "ORU^R01^ORU_R01",
    control: str = "C-1",
) -> bytes:
    segments = [MSH.format(kind=kind, control=control)]
    segments += [pid] if pid else []
    segments.append(f"OBR|1|O-1|O-1|182777000^monitoring of patient^SCT|||{obr7}")
    segments += [mds] if mds else []
    segments += rows
    return ("\r".join(segments) + "\r").encode()


def decoded(payload: bytes, ctx: DecodeContext = CTX) -> Decoded:
    return decode(payload, ADAPTER, ctx)


def example(name: str) -> Decoded:
    return decoded((EXAMPLES / f"{name}.hl7").read_bytes())


def measurements(result: Decoded) -> list[Measurement]:
    return [item.measurement for item in result.items if item.measurement is not None]


def only(payload: bytes) -> DecodedItem:
    [item] = decoded(payload).items
    return item


def error_of(item: DecodedItem) -> DataError:
    assert item.error is not None, item
    return item.error


# ------------------------------------------------------------------ the examples


def test_blood_pressure_is_one_panel_and_the_cuff_pulse_a_heart_rate() -> None:
    result = example("blood-pressure")
    assert result.message_id == "GW00FF01-20261124081502-0001"
    bp, hr = measurements(result)
    assert [item.label for item in result.items] == ["OBX[2]", "OBX[6]"]
    assert bp.type == "blood-pressure" and bp.value is None
    assert {k: (q.value, q.unit) for k, q in bp.components.items()} == {
        "systolic": (Decimal(128), "mm[Hg]"),
        "diastolic": (Decimal(82), "mm[Hg]"),
        "mean": (Decimal(97), "mm[Hg]"),
    }
    assert hr.type == "heart-rate" and hr.components == {}
    assert hr.value is not None and (hr.value.value, hr.value.unit) == (Decimal(71), "/min")
    for m in (bp, hr):
        assert (m.device_system, m.device_id) == (EUI64, "00-1C-05-FF-FE-01-00-01")
        assert m.effective == datetime(2026, 11, 24, 8, 15, tzinfo=CET)
        assert m.effective.utcoffset() == timedelta(hours=1) and m.time_flag is None
        assert m.patient == FNR


def test_pulse_oximeter() -> None:
    spo2, hr = measurements(example("pulse-oximeter"))
    assert spo2.type == "oxygen-saturation" and spo2.value is not None
    assert (spo2.value.value, spo2.value.unit) == (Decimal(95), "%")
    assert hr.type == "heart-rate" and hr.value is not None and str(hr.value.value) == "78"
    assert {m.device_id for m in (spo2, hr)} == {"00-1C-05-FF-FE-01-00-02"}
    assert spo2.effective.astimezone(UTC) == datetime(2026, 11, 24, 7, 20, tzinfo=UTC)


def test_scale_units_stay_as_sent_and_the_unknown_code_is_refused_alone() -> None:
    result = example("scale-pounds-unknown-code")
    weight, height, bmi = result.items
    assert weight.measurement is not None and weight.measurement.value is not None
    assert weight.measurement.type == "body-weight"
    assert str(weight.measurement.value.value) == "154.6"
    assert weight.measurement.value.unit == "[lb_av]"
    assert height.measurement is not None and height.measurement.value is not None
    assert (height.measurement.type, height.measurement.value.unit) == ("body-height", "[in_i]")
    assert height.measurement.device_id == "00-1C-05-FF-FE-01-00-03"
    error = error_of(bmi)
    assert isinstance(error, UnitError) and error.code == "unknown-code"
    assert bmi.label == "OBX[4]" and "188752" in str(error)


def test_a_time_without_offset_is_oslo_time_and_flagged() -> None:
    [glucose] = measurements(example("glucometer-local-time"))
    assert glucose.type == "blood-glucose"
    assert glucose.value is not None and glucose.value.unit == "mg/dL"
    assert glucose.time_flag == "local-time-assumed"
    assert glucose.effective.isoformat() == "2026-11-24T07:30:00+01:00"
    assert glucose.device_id == "00-1C-05-FF-FE-01-00-04"


def test_obr7_gives_the_time_when_obx14_is_empty_and_precision_is_kept() -> None:
    [temperature] = measurements(example("thermometer-fahrenheit"))
    assert temperature.value is not None
    assert (str(temperature.value.value), temperature.value.unit) == ("98.60", "[degF]")
    assert temperature.effective.isoformat() == "2026-11-24T21:30:00-05:00"
    assert temperature.device_id == "00-1C-05-FF-FE-01-00-05"


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_other_line_endings_and_mllp_framing_read_the_same(ending: str) -> None:
    payload = (EXAMPLES / "blood-pressure.hl7").read_bytes()
    same = payload.replace(b"\r", ending.encode())
    assert decoded(same) == decoded(payload)
    assert decoded(b"\x0b" + payload + b"\x1c\r") == decoded(payload)


# ------------------------------------------------------------------ whole-message refusals


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"", "decode"),
        (b"   \r\n", "decode"),
        (b"hello world", "decode"),
        (b"\xff\xfe\x00garbage", "decode"),
        (b"MSH", "decode"),
        (b"MSH|", "decode"),
        (b"MSH|^~\\&", "message-type"),
        (b"MSH|^~\\&|GW||DHO||20261124081502+0100", "message-type"),
        (b"PID|||x", "decode"),
        (b'{"device": "D1"}', "decode"),
        (message(pulse(), kind="ADT^A01^ADT_A01"), "message-type"),
        (message(pulse(), kind="ORU^R30"), "message-type"),
        (message(pulse(), control=""), "message-id"),
        (message(pulse(), control="x" * 201), "message-id"),
        (message(pulse()) + message(pulse(), control="C-2"), "batch"),
        (message(mds=MDS_BP), "no-observations"),
    ],
)
def test_an_unreadable_message_is_refused_whole(payload: bytes, code: str) -> None:
    with pytest.raises(Unparseable) as caught:
        decoded(payload)
    assert caught.value.code == code and caught.value.reason == "unparseable"


def test_too_many_measurements_is_oversized() -> None:
    rows = [pulse(when=f"2026112408{m:02d}00+0100", n=m + 2) for m in range(3)]
    assert len(decoded(message(*rows), replace(CTX, max_items=3)).items) == 3
    with pytest.raises(Oversized) as caught:
        decoded(message(*rows), replace(CTX, max_items=2))
    assert caught.value.code == "too-many-measurements" and caught.value.reason == "oversized"


# ------------------------------------------------------------------ one row refused, the rest go on


@pytest.mark.parametrize("value", ["abc", "1,5", "12~13", "1e3", "NaN", "7^8", "", "1.2.3"])
def test_a_bad_number_refuses_only_its_row(value: str) -> None:
    bad, good = decoded(message(pulse(value), pulse("72", n=3, path="1.0.0.2"), mds=MDS_BP)).items
    error = error_of(bad)
    assert isinstance(error, Unparseable) and error.code == "not-a-number"
    assert bad.label == "OBX[2]"
    assert good.measurement is not None and good.measurement.value is not None
    assert good.measurement.value.value == Decimal(72)


@pytest.mark.parametrize("value", ["+5", "-0.5", "072", ".5", "36.600"])
def test_hl7_numbers_keep_what_was_sent(value: str) -> None:
    m = only(message(pulse(value))).measurement
    assert m is not None and m.value is not None and m.value.value == Decimal(value)
    assert str(m.value.value) == str(Decimal(value))


def test_a_bad_blood_pressure_part_refuses_the_panel_but_not_the_pulse() -> None:
    rows = [*bp_rows(systolic="12O"), pulse(n=5, path="1.0.0.1")]
    panel, hr = decoded(message(*rows)).items
    assert panel.label == "OBX[3]" and error_of(panel).code == "not-a-number"
    assert hr.measurement is not None and hr.measurement.type == "heart-rate"


def test_blood_pressure_without_a_compound_row_is_still_one_panel() -> None:
    unit = "266016^MDC_DIM_MMHG^MDC"
    rows = [
        obx(2, "150021^MDC_PRESS_BLD_NONINV_SYS^MDC", "1.0.0.1", "141", unit),
        obx(3, "150022^MDC_PRESS_BLD_NONINV_DIA^MDC", "1.0.0.2", "91", unit),
        pulse(n=4, path="1.0.0.3"),
    ]
    bp, hr = measurements(decoded(message(*rows)))
    assert bp.type == "blood-pressure" and set(bp.components) == {"systolic", "diastolic"}
    assert bp.components["systolic"].value == Decimal(141)
    assert hr.type == "heart-rate"


def test_two_readings_in_two_obr_groups_are_two_panels() -> None:
    first = message(*bp_rows()).decode().rstrip("\r")
    later = [
        "OBR|2|O-2|O-2|182777000^monitoring of patient^SCT|||20261124091500+0100",
        *(row.replace(T, "20261124091500+0100") for row in bp_rows(systolic="150")),
    ]
    result = decoded(("\r".join([first, *later]) + "\r").encode())
    one, two = measurements(result)
    assert [item.label for item in result.items] == ["OBX[2]", "OBX[5]"]
    assert one.components["systolic"].value == Decimal(128)
    assert two.components["systolic"].value == Decimal(150)
    assert two.effective - one.effective == timedelta(hours=1)
    assert one.device_id == two.device_id == "00-1C-05-FF-FE-01-00-01"


def test_a_second_systolic_in_one_panel_is_refused() -> None:
    extra = obx(
        5, "150021^MDC_PRESS_BLD_NONINV_SYS^MDC", "1.0.1.1", "129", "266016^MDC_DIM_MMHG^MDC"
    )
    [item] = decoded(message(*bp_rows(), extra)).items
    assert "second systolic" in str(error_of(item))


@pytest.mark.parametrize(
    ("unit", "code"),
    [
        ("999999^MDC_DIM_NOTHING^MDC", "unit"),
        ("262688^MDC_DIM_PERCENT^MDC", "unit"),  # a pulse in % is no heart rate
        ("", "unit"),
        ("bpm^bpm^L", "unit"),
    ],
)
def test_a_unit_that_does_not_fit_is_a_mapping_error(unit: str, code: str) -> None:
    row = obx(2, "149546^MDC_PULS_RATE_NON_INV^MDC", "1.0.0.1", "71", unit)
    error = error_of(only(message(row)))
    assert isinstance(error, UnitError) and error.code == code and error.reason == "mapping-error"


def test_ucum_units_and_a_loinc_coding_before_the_mdc_one_are_read() -> None:
    row = obx(
        2,
        "8889-8^Heart rate by Oximetry^LN^149530^MDC_PULS_OXIM_PULS_RATE^MDC",
        "1.0.0.1",
        "64",
        "/min^/min^UCUM",
    )
    m = only(message(row)).measurement
    assert m is not None and m.type == "heart-rate"
    assert m.value is not None and (m.value.value, m.value.unit) == (Decimal(64), "/min")


@pytest.mark.parametrize(
    "code", ["8867-4^Heart rate^LN", "149546^MDC_PULS_RATE_NON_INV^99X", "abc^x^MDC"]
)
def test_a_row_without_a_known_mdc_code_is_an_unknown_code(code: str) -> None:
    row = obx(2, code, "1.0.0.1", "71", "264864^MDC_DIM_BEAT_PER_MIN^MDC")
    assert error_of(only(message(row))).code == "unknown-code"


def test_rows_that_are_not_numeric_readings_are_ignored_items() -> None:
    rows = [
        "OBX|2|CWE|68220^MDC_TIME_SYNC_PROTOCOL^MDC|0.0.0.1|532224^MDC_TIME_SYNC_NONE^MDC|||||||R",
        f"OBX|3|DTM|67975^MDC_ATTR_TIME_ABS^MDC|1.0.0.1|20261124081500|||||||R|||{T}",
        pulse(n=4, path="1.0.0.2").replace("|R|", "|W|"),
        pulse(n=5, path="1.0.0.3"),
    ]
    sync, clock, withdrawn, hr = decoded(message(*rows)).items
    assert sync.note and "CWE" in sync.note and sync.measurement is None and sync.error is None
    assert clock.note and "DTM" in clock.note
    assert withdrawn.note and "W" in withdrawn.note and withdrawn.measurement is None
    assert hr.measurement is not None


# ------------------------------------------------------------------ times


@pytest.mark.parametrize(
    ("sent", "expected", "flag"),
    [
        ("20261124081500+0100", "2026-11-24T08:15:00+01:00", None),
        ("202611240815+0100", "2026-11-24T08:15:00+01:00", None),
        ("20261124081500.1234+0100", "2026-11-24T08:15:00.123400+01:00", None),
        ("20261124081500-0030", "2026-11-24T08:15:00-00:30", None),
        ("20261124081500+0000", "2026-11-24T08:15:00+00:00", None),
        ("20261124081500", "2026-11-24T08:15:00+01:00", "local-time-assumed"),
        ("20260701081500", "2026-07-01T08:15:00+02:00", "local-time-assumed"),
        ("20261025023000", "2026-10-25T02:30:00+02:00", "ambiguous-local-time"),
    ],
)
def test_hl7_times(sent: str, expected: str, flag: str | None) -> None:
    moment, got_flag = hl7_time(sent, CTX.local_zone, "OBX-14")
    assert moment.isoformat() == expected and got_flag == flag


@pytest.mark.parametrize(
    "sent",
    [
        "2026abc",
        "20261124081500+01",
        "20261324081500+0100",
        "20261124256000+0100",
        "2026112408",
        "20261124081500.12345+0100",
        "20261124081500+2400",
        "19800101000000+0000",
        "2026-11-24T08:15:00+01:00",
    ],
)
def test_bad_times_refuse_the_row(sent: str) -> None:
    error = error_of(only(message(pulse(when=sent))))
    assert isinstance(error, Unparseable)


def test_a_row_with_no_time_at_all_is_refused() -> None:
    error = error_of(only(message(pulse(when=""), obr7="")))
    assert error.code == "missing-time"


def test_the_compound_row_time_is_the_panel_time() -> None:
    rows = bp_rows()
    rows[0] = rows[0].replace(T, "20261124081000+0100")
    [bp] = measurements(decoded(message(*rows)))
    assert bp.effective == datetime(2026, 11, 24, 8, 10, tzinfo=CET)


# ------------------------------------------------------------------ devices and patients


@pytest.mark.parametrize(
    "ei",
    [
        "001C05FFFE010001^^001C05FFFE010001^EUI-64",
        "001c05fffe010001^EUI-64",
        "SERIAL-1^Vendor^001C05FFFE010001^EUI-64",
    ],
)
def test_the_mds_row_eui64_becomes_the_canonical_device(ei: str) -> None:
    mds = f"OBX|1||528391^MDC_DEV_SPEC_PROFILE_BP^MDC|1|||||||X|||||||{ei}"
    m = only(message(pulse(), mds=mds)).measurement
    assert m is not None and (m.device_system, m.device_id) == (EUI64, "00-1C-05-FF-FE-01-00-01")


def test_the_row_eui64_is_used_when_the_mds_row_has_none() -> None:
    mds = "OBX|1||528391^MDC_DEV_SPEC_PROFILE_BP^MDC|1|||||||X"
    row = pulse() + "||||001C05FFFE0100AA^EUI-64"
    m = only(message(row, mds=mds)).measurement
    assert m is not None and m.device_id == "00-1C-05-FF-FE-01-00-AA"


def test_second_device_in_one_message_is_told_apart_by_obx4() -> None:
    second = (
        "OBX|3||528388^MDC_DEV_SPEC_PROFILE_PULS_OXIM^MDC|2|||||||X|||||||001C05FFFE010002^EUI-64"
    )
    one, two = measurements(decoded(message(pulse(), second, pulse("80", n=4, path="2.0.0.1"))))
    assert (one.device_id, two.device_id) == ("00-1C-05-FF-FE-01-00-01", "00-1C-05-FF-FE-01-00-02")


@pytest.mark.parametrize(
    ("mds", "code"),
    [
        (None, "missing-device-id"),
        ("OBX|1||528391^MDC_DEV_SPEC_PROFILE_BP^MDC|1|||||||X", "missing-device-id"),
        (
            "OBX|1||528391^MDC_DEV_SPEC_PROFILE_BP^MDC|1|||||||X|||||||SN-42^Vendor",
            "missing-device-id",
        ),
        ("OBX|1||528391^MDC_DEV_SPEC_PROFILE_BP^MDC|1|||||||X|||||||001C05FF^EUI-64", "device-id"),
    ],
)
def test_no_usable_eui64_refuses_the_row(mds: str | None, code: str) -> None:
    error = error_of(only(message(pulse(), mds=mds)))
    assert isinstance(error, Unparseable) and error.code == code


@pytest.mark.parametrize(
    ("pid", "patient"),
    [
        (PID, FNR),
        ("PID|||14834641411^^^^FNR", FNR),
        ("PID|||PAT-1^^^DHO&2.999.1.1&ISO^PI~14834641411^^^^NNNOR", FNR),
        ("PID|||54834641411^^^^NNNOR", ("urn:oid:2.16.578.1.12.4.1.4.2", "54834641411")),
        ("PID|||PAT-000123^^^DHO&2.999.1.1&ISO^PI||Doe^Jane", None),
        (None, None),
    ],
)
def test_a_norwegian_national_id_in_pid3_is_the_claimed_patient(
    pid: str | None, patient: tuple[str, str] | None
) -> None:
    m = only(message(pulse(), pid=pid)).measurement
    assert m is not None and m.patient == patient


# ------------------------------------------------------------------ the unit table


def test_every_mdc_unit_is_a_partition_4_code_with_a_ucum_unit_a_type_accepts() -> None:
    data = yaml.safe_load((ROOT / "fhir" / "mdc-units.yaml").read_text(encoding="utf-8"))
    accepted = {u for t in REFERENCE.types for _key, spec in t.values for u in spec.accepted}
    assert len(data["units"]) >= 13
    for code, entry in data["units"].items():
        assert 4 << 16 <= int(code) < 5 << 16, code
        assert entry["refid"].startswith("MDC_DIM_"), code
        assert units.is_valid(entry["ucum"]), code
        assert entry["ucum"] in accepted, f"{code}: no measurement type accepts {entry['ucum']}"
    assert data["units"]["266016"] == {"refid": "MDC_DIM_MMHG", "ucum": "mm[Hg]"}


def test_a_broken_unit_table_is_refused_when_loaded(tmp_path: Path) -> None:
    fhir = tmp_path / "fhir"
    shutil.copytree(ROOT / "fhir", fhir)
    (fhir / "mdc-units.yaml").write_text('units:\n  "266016": {refid: MMHG, ucum: "mm[Hg]"}\n')
    with pytest.raises(CatalogueError, match="refid"):
        decoded(message(pulse()), replace(CTX, fhir_dir=fhir))


def test_device_information_rows_are_read_not_stored() -> None:
    """A battery row from the MDS is not a measurement and is no error either."""
    battery = obx(
        2, "67996^MDC_ATTR_VAL_BATT_CHARGE^MDC", "1.0.0.9", "86", "262688^MDC_DIM_PERCENT^MDC"
    )
    result = decoded(message(battery, pulse(n=3)))
    first, second = result.items
    assert first.error is None and first.measurement is None
    assert first.note is not None and "67996" in first.note
    assert second.measurement is not None and second.measurement.type == "heart-rate"
    assert "67996" in ADAPTER.ignore_codes
