"""Tests for dho.registry.national_id (fødselsnummer / D-nummer validation).

Numbers marked "computed" were generated with the mod-11 algorithm for this test file; the
published ones are cited where they appear.
"""

from __future__ import annotations

import dataclasses
from datetime import date

import pytest

from dho.registry.national_id import (
    DNR_SYSTEM,
    FNR_SYSTEM,
    IdKind,
    InvalidNationalId,
    NationalId,
    parse_national_id,
)

_K1_WEIGHTS = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_K2_WEIGHTS = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)


def _reference_check_digits_ok(number: str) -> bool:
    """Independent transcription of Skatteetaten's reference validator (1964 + 2032 rules)."""
    digits = [int(c) for c in number]
    k1_rest = (sum(w * d for w, d in zip(_K1_WEIGHTS, digits, strict=False)) + digits[9]) % 11
    k2_rest = (sum(w * d for w, d in zip(_K2_WEIGHTS, digits, strict=False)) + digits[10]) % 11
    return k1_rest in (0, 1, 2, 3) and k2_rest == 0


# --- valid numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "birth_date"),
    [
        # python-stdnum's documented example (stdnum.no.fodselsnummer docstring).
        ("15108695088", date(1986, 10, 15)),
        # Skatteetaten, "Fødselsnummer fra 2032", worked examples valid under today's rule too.
        ("02013299997", date(2032, 1, 2)),
        ("30108299920", date(1982, 10, 30)),
        # computed
        ("31128595042", date(1985, 12, 31)),
        ("29029600013", date(1996, 2, 29)),
        ("29029690098", date(1996, 2, 29)),
        ("29020400038", date(1904, 2, 29)),
        ("29020050088", date(2000, 2, 29)),
    ],
)
def test_valid_fodselsnummer(number: str, birth_date: date) -> None:
    nid = parse_national_id(number)
    assert nid == NationalId(value=number, kind=IdKind.FNR, birth_date=birth_date, synthetic=False)
    assert nid.system == FNR_SYSTEM


@pytest.mark.parametrize(
    ("number", "birth_date"),
    [
        # 000-499 -> 1900-1999 (top of the range, both ends of the years)
        ("01010049918", date(1900, 1, 1)),
        ("01014049920", date(1940, 1, 1)),
        # 500-749 with year 54-99 -> 1854-1899
        ("01015474943", date(1854, 1, 1)),
        ("01019950065", date(1899, 1, 1)),
        # 500-999 with year 00-39 -> 2000-2039
        ("01010050053", date(2000, 1, 1)),
        # 900-999 with year 40-99 -> 1940-1999
        ("01014090017", date(1940, 1, 1)),
    ],
)
def test_century_boundaries(number: str, birth_date: date) -> None:
    assert parse_national_id(number).birth_date == birth_date


@pytest.mark.parametrize(
    ("number", "birth_date"),
    [
        # Skatteetaten, "Fødselsnummer fra 2032": "Person 2" gets K1 from remainder 1.
        ("30108299939", date(1982, 10, 30)),
        # Same document: the possible next number on 02.01.2032 (remainder 3, K1 = 0).
        ("02013299903", date(2032, 1, 2)),
        # computed: prefixes where the current rule gives K1 = 10 (no valid number at all today)
        ("31013999905", date(2039, 1, 31)),
        ("31129974918", date(1899, 12, 31)),
        # computed: current K1 would be 3 but then K2 would be 10
        ("01010000048", date(1900, 1, 1)),
    ],
)
def test_number_valid_only_under_2032_rule_is_accepted(number: str, birth_date: date) -> None:
    nid = parse_national_id(number)
    assert nid.birth_date == birth_date
    assert nid.kind is IdKind.FNR


def test_surrounding_whitespace_is_stripped() -> None:
    nid = parse_national_id(" \t15108695088\n ")
    assert nid.value == "15108695088"


# --- D-nummer ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "birth_date"),
    [
        ("41018510187", date(1985, 1, 1)),
        ("71013999052", date(2039, 1, 31)),
        ("41014000036", date(1940, 1, 1)),
        # D-nummer series extended in 2021 (Skatteetaten): these differ from the fnr table.
        ("71018565190", date(1985, 1, 31)),  # 600-999 now 1940-1999 (fnr table: 1885)
        ("41018580045", date(1985, 1, 1)),  # 750-899 with year 85 (no century in fnr table)
        ("45060530002", date(2005, 6, 5)),  # 200-499 with year 00-39 now 2000-2039
        ("45060510087", date(1905, 6, 5)),  # 000-199 with year 00-39 stays 1900-1939
        ("41018555024", date(1885, 1, 1)),  # 500-599 with year 54-99 -> 18xx
        # computed, valid only under the 2032 rule
        ("41018512368", date(1985, 1, 1)),
        ("41018512376", date(1985, 1, 1)),
    ],
)
def test_valid_d_nummer(number: str, birth_date: date) -> None:
    nid = parse_national_id(number)
    assert nid == NationalId(value=number, kind=IdKind.DNR, birth_date=birth_date, synthetic=False)
    assert nid.system == DNR_SYSTEM


@pytest.mark.parametrize(
    "number",
    [
        "40018500185",  # day 40 -> day 00
        "72018500095",  # day 72 -> day 32
        "71048500026",  # 31 April
    ],
)
def test_d_nummer_with_impossible_date_is_rejected(number: str) -> None:
    with pytest.raises(InvalidNationalId, match="does not exist"):
        parse_national_id(number)


def test_d_nummer_individual_500_599_needs_1800s_year() -> None:
    with pytest.raises(InvalidNationalId, match="century cannot be determined"):
        parse_national_id("41014555011")


# --- synthetic numbers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "kind", "birth_date"),
    [
        ("01818512321", IdKind.FNR, date(1985, 1, 1)),
        ("15821090005", IdKind.FNR, date(2010, 2, 15)),
        ("41818512315", IdKind.DNR, date(1985, 1, 1)),
        ("69820050037", IdKind.DNR, date(2000, 2, 29)),
    ],
)
def test_synthetic_plus_80_accepted_only_with_flag(
    number: str, kind: IdKind, birth_date: date
) -> None:
    with pytest.raises(InvalidNationalId, match="synthetic"):
        parse_national_id(number)
    nid = parse_national_id(number, allow_synthetic=True)
    assert nid == NationalId(value=number, kind=kind, birth_date=birth_date, synthetic=True)


def test_real_number_is_not_synthetic_with_flag() -> None:
    nid = parse_national_id("15108695088", allow_synthetic=True)
    assert nid.synthetic is False


@pytest.mark.parametrize(
    "number",
    [
        # NAV/Dolly synthetic numbers (month + 40), published as test vectors in navikt's
        # Fødselsnummer tests ("skal tillate helsyntetiske nummer fra dolly").
        "15507600333",
        "55507608360",
        "29422059278",
        "69422056629",
        # computed, month + 40 (also the H-nummer encoding)
        "01418512349",
        "41418500016",
    ],
)
@pytest.mark.parametrize("allow_synthetic", [False, True])
def test_month_plus_40_is_rejected(number: str, allow_synthetic: bool) -> None:
    assert _reference_check_digits_ok(number)
    with pytest.raises(InvalidNationalId, match="H-nummer"):
        parse_national_id(number, allow_synthetic=allow_synthetic)


@pytest.mark.parametrize("number", ["01808500015", "01938500033"])
def test_synthetic_month_out_of_range(number: str) -> None:
    with pytest.raises(InvalidNationalId, match="not a valid month"):
        parse_national_id(number, allow_synthetic=True)


# --- rejected numbers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "15108695077",  # python-stdnum's invalid-checksum example
        "15108695018",
        "30108299960",  # 2032 example with K1 one above the last 2032 alternative (remainder 4)
        "01010000023",  # K1 2 is neither the current value (3) nor a 2032 alternative
        "31129974930",  # current rule has no valid K1 here; 3 is not a 2032 alternative
    ],
)
def test_wrong_check_digit_1(number: str) -> None:
    with pytest.raises(InvalidNationalId, match="check digit 1 does not match"):
        parse_national_id(number)


def test_check_digit_1_message_explains_the_current_rule() -> None:
    with pytest.raises(InvalidNationalId, match="the current rule expects 8"):
        parse_national_id("15108695077")
    with pytest.raises(InvalidNationalId, match="no digit is valid there under the current rule"):
        parse_national_id("31129974930")


@pytest.mark.parametrize("number", ["15108695089", "15108695080", "30108299921", "30108299930"])
def test_wrong_check_digit_2(number: str) -> None:
    with pytest.raises(InvalidNationalId, match="check digit 2 does not match"):
        parse_national_id(number)


@pytest.mark.parametrize(
    ("number", "message"),
    [
        ("1510869508", "exactly 11 digits, got 10"),
        ("151086950880", "exactly 11 digits, got 12"),
        ("1", "exactly 11 digits, got 1"),
        ("", "is empty"),
        ("   ", "is empty"),
    ],
)
def test_wrong_length(number: str, message: str) -> None:
    with pytest.raises(InvalidNationalId, match=message):
        parse_national_id(number)


@pytest.mark.parametrize(
    "number",
    [
        "1510869508a",
        "ABCDEFGHIJK",
        "151086-95088",
        "151086.95088",
        "+5108695088",
        "\uff11\uff15\uff11\uff10\uff18\uff16\uff19\uff15\uff10\uff18\uff18",  # full-width digits
        "\u0661\u0665\u0661\u0660\u0668\u0666\u0669\u0665\u0660\u0668\u0668",  # Arabic-Indic
    ],
)
def test_non_digits_are_rejected(number: str) -> None:
    with pytest.raises(InvalidNationalId, match="only the digits 0-9"):
        parse_national_id(number)


@pytest.mark.parametrize("number", ["151086 95088", "1510 8695088", "15108695 088"])
def test_inner_spaces_are_rejected(number: str) -> None:
    with pytest.raises(InvalidNationalId, match="no spaces inside"):
        parse_national_id(number)


@pytest.mark.parametrize(
    ("number", "message"),
    [
        ("31028500052", "1985-02-31 does not exist"),
        ("30020050027", "2000-02-30 does not exist"),
        ("29020000064", "1900-02-29 does not exist"),  # 1900 is not a leap year
        ("29020150260", "2001-02-29 does not exist"),
        ("32018500182", "1985-01-32 does not exist"),
        ("00018500000", "1985-01-00 does not exist"),
        ("01138500078", "month 13 is not a valid month"),
        ("01008500068", "month 00 is not a valid month"),
        ("01408500032", "month 40 is not a valid month"),
        ("01538500050", "month 53 is not a valid month"),
    ],
)
def test_impossible_dates(number: str, message: str) -> None:
    assert _reference_check_digits_ok(number)
    with pytest.raises(InvalidNationalId, match=message):
        parse_national_id(number)


@pytest.mark.parametrize(
    "number",
    [
        "01014560013",  # 500-749 with year 40-53
        "01018575066",  # 750-899 with year 40-99
    ],
)
def test_individual_number_without_century_is_rejected(number: str) -> None:
    assert _reference_check_digits_ok(number)
    with pytest.raises(InvalidNationalId, match="century cannot be determined"):
        parse_national_id(number)


@pytest.mark.parametrize("number", ["81234567802", "91234567026"])
def test_fh_nummer_is_out_of_scope(number: str) -> None:
    with pytest.raises(InvalidNationalId, match="FH-nummer"):
        parse_national_id(number)


def test_error_message_does_not_leak_the_number() -> None:
    with pytest.raises(InvalidNationalId) as excinfo:
        parse_national_id("15108695077")
    assert "15108695077" not in str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)


def test_non_string_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        parse_national_id(15108695088)  # type: ignore[arg-type]


# --- check-digit rule against the reference ----------------------------------------------------


@pytest.mark.parametrize(
    "prefix", ["151086950", "301082999", "311299749", "010100000", "020132999"]
)
def test_check_digits_match_skatteetaten_reference(prefix: str) -> None:
    """Every K1K2 suffix is accepted exactly when Skatteetaten's reference validator accepts it,
    and at most four K1 values (the 2032 rule) are ever valid for one prefix."""
    accepted: set[str] = set()
    for suffix in range(100):
        number = f"{prefix}{suffix:02d}"
        try:
            parse_national_id(number)
        except InvalidNationalId:
            ok = False
        else:
            ok = True
        assert ok == _reference_check_digits_ok(number), number
        if ok:
            accepted.add(number)
    assert 1 <= len(accepted) <= 4
    # K2 is fully determined by the first ten digits.
    assert len({n[:10] for n in accepted}) == len(accepted)


# --- the value object ------------------------------------------------------------------------


def test_national_id_is_frozen() -> None:
    nid = parse_national_id("15108695088")
    with pytest.raises(dataclasses.FrozenInstanceError):
        nid.value = "02013299997"  # type: ignore[misc]


def test_id_kind_values() -> None:
    assert [str(kind) for kind in IdKind] == ["fnr", "dnr"]
    assert isinstance(IdKind.FNR, str)
    assert FNR_SYSTEM == "urn:oid:2.16.578.1.12.4.1.4.1"
    assert DNR_SYSTEM == "urn:oid:2.16.578.1.12.4.1.4.2"
