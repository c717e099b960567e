"""Validation of Norwegian national identity numbers (fødselsnummer and D-nummer).

Sources
-------
* Skatteetaten, "Fødselsnummer fra 2032" (Folkeregisteret API documentation,
  https://skatteetaten.github.io/folkeregisteret-api-dokumentasjon/nytt-fodselsnummer-fra-2032/,
  source in github.com/Skatteetaten/folkeregisteret-api-dokumentasjon,
  ``src/Foedselsnummer2032.md``)
  and Skatteetaten's reference validator published alongside it
  (``src/dokumenter/foedselsEllerDNummerValidator.{html,js}`` in the same repository).
* Skatteetaten, "Utvidelse av D-nummerserien" (2021-06-24, same repository,
  ``src/nyheter/2021-06-24-Utvide-dnr-serie.md``) for the D-nummer individual-number series.
* Skatteetaten, "Fødselsnummer" (skatteetaten.no) for the fødselsnummer individual-number series.
* navikt/testnorge (Dolly documentation, ``docs/applications/dolly/testnorge.md``): the Test-Norge
  population made by Skatteetaten has synthetic numbers "with 80 added to the month".

Layout
------
``DDMMYY III K1 K2``: birth date, individual number (digits 7-9) and two check digits.

* **D-nummer**: 4 is added to the first digit (day + 40), so the first digit is 4-7.
* **Synthetic test numbers** (Skatteetaten / Tenor / Test-Norge, also used by NHN test data):
  8 is added to the third digit (month + 80), so the month reads 81-92. They are accepted only
  with ``allow_synthetic=True``; a synthetic D-nummer (day + 40 *and* month + 80) is allowed.
* **Month + 40 is NOT accepted**, with or without ``allow_synthetic``. Month + 40 is the encoding
  of H-nummer (hjelpenummer, out of scope here), and NAV's Dolly reuses it for NAV-only synthetic
  numbers; accepting it would silently let H-numbers through. Skatteetaten's own reference
  validator likewise accepts only ``dd8Myy``/``dd9Myy`` as synthetic. Such numbers get a specific
  error message instead.
* First digit 8 or 9 (FH-nummer, felles hjelpenummer) is out of scope and rejected.

Check digits (both rules are accepted, since numbers of both kinds will coexist)
-------------------------------------------------------------------------------
Let ``d1..d11`` be the eleven digits as written (including the +40/+80 offsets).

* **K1**: ``(3*d1 + 7*d2 + 6*d3 + 1*d4 + 8*d5 + 9*d6 + 4*d7 + 5*d8 + 2*d9 + d10) mod 11``.
  Current rule: the remainder must be 0 (``k1 = 11 - (sum mod 11)``, 11 read as 0, 10 invalid).
  Rule for numbers issued from 1 January 2032: the remainder may be 0, 1, 2 or 3 (Skatteetaten
  writes ``k1 = {11,12,13,14} - (sum mod 11)``, subtracting 11 again if the result is above 10
  and discarding 10), which gives up to four valid values for K1. The 2032 rule is a superset of
  the current one, so a number is accepted when the remainder is in {0, 1, 2, 3}.
* **K2** is unchanged: ``(5*d1 + 4*d2 + 3*d3 + 2*d4 + 7*d5 + 6*d6 + 5*d7 + 4*d8 + 3*d9 + 2*d10
  + d11) mod 11`` must be 0.

Century (birth year) from the individual number
-----------------------------------------------
Fødselsnummer (Skatteetaten's table):

* 000-499 -> 1900-1999
* 500-749 with year 54-99 -> 1854-1899
* 500-999 with year 00-39 -> 2000-2039
* 900-999 with year 40-99 -> 1940-1999

D-nummer (series extended in August 2021, per Skatteetaten's news item above):

* 500-599 with year 54-99 -> 18xx (Skatteetaten says 1858/1859-1899; 1854 is kept as in the
  fødselsnummer table so older numbers are not rejected)
* 000-199 with year 00-39 -> 1900-1939
* 000-499 and 600-999 with year 40-99 -> 1940-1999
* 200-999 with year 00-39 -> 2000-2039

Combinations outside these tables are rejected, because no century can be derived.

Known limitations (the authoritative birth date is in Folkeregisteret, not in the number):

* D-numbers issued *before* August 2021 used the fødselsnummer table. For a D-nummer with year
  00-39 and individual number 200-499 (1900-1939 before 2021, 2000-2039 since), and with year
  54-99 and 600-749 (18xx before, 19xx since), the date derived here follows the current table.
* Skatteetaten states that from 2032 "the individual number will no longer indicate the
  century". The century derived for numbers issued from 2032 is therefore a best guess, and such
  numbers whose individual number falls outside the tables above will be rejected. (The plan is
  to start new allocations at 999, which every table row for every year covers.)
* Birth dates in the future are not rejected (the check is kept independent of the clock).

Error messages never contain the full number, since they may end up in logs.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Final

__all__ = [
    "DNR_SYSTEM",
    "FNR_SYSTEM",
    "IdKind",
    "InvalidNationalId",
    "NationalId",
    "parse_national_id",
]

FNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.1"
DNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.2"

_K1_WEIGHTS: Final = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_K2_WEIGHTS: Final = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
# Remainders of the K1 control sum accepted by the rule in force from 2032 (0 alone is the
# current rule).
_K1_VALID_REMAINDERS: Final = frozenset({0, 1, 2, 3})

_LENGTH: Final = 11
_DNR_DAY_OFFSET: Final = 40
_SYNTHETIC_MONTH_OFFSET: Final = 80
_H_NUMBER_MONTH_OFFSET: Final = 40


class IdKind(StrEnum):
    FNR = "fnr"
    DNR = "dnr"


@dataclass(frozen=True, slots=True)
class NationalId:
    """A validated Norwegian fødselsnummer or D-nummer."""

    value: str
    """The 11 digits, exactly as issued (including any +40 / +80 offsets)."""
    kind: IdKind
    birth_date: date
    """Birth date derived from the number (see the module docstring for its limits)."""
    synthetic: bool
    """True for a synthetic test number (month + 80)."""

    @property
    def system(self) -> str:
        """The FHIR identifier system (OID URN) for this kind of number."""
        return DNR_SYSTEM if self.kind is IdKind.DNR else FNR_SYSTEM


class InvalidNationalId(ValueError):
    """Says in plain English why the number is rejected (e.g. 'check digit 1 does not match')."""


def _k1_remainder(digits: tuple[int, ...]) -> int:
    return (sum(w * d for w, d in zip(_K1_WEIGHTS, digits, strict=False)) + digits[9]) % 11


def _k2_remainder(digits: tuple[int, ...]) -> int:
    return (sum(w * d for w, d in zip(_K2_WEIGHTS, digits, strict=False)) + digits[10]) % 11


def _expected_check_digit(weights: tuple[int, ...], digits: tuple[int, ...]) -> int | None:
    """The single check digit the current (pre-2032) rule gives, or None if it would be 10."""
    check = (11 - sum(w * d for w, d in zip(weights, digits, strict=False)) % 11) % 11
    return None if check == 10 else check


def _check_digits(digits: tuple[int, ...]) -> None:
    if _k1_remainder(digits) not in _K1_VALID_REMAINDERS:
        expected = _expected_check_digit(_K1_WEIGHTS, digits)
        hint = (
            "no digit is valid there under the current rule"
            if expected is None
            else f"the current rule expects {expected}"
        )
        raise InvalidNationalId(
            f"check digit 1 does not match (got {digits[9]}; {hint}, and it is not one of the "
            "extra values allowed from 2032 either)"
        )
    if _k2_remainder(digits) != 0:
        expected = _expected_check_digit(_K2_WEIGHTS, digits)
        hint = "no digit is valid there" if expected is None else f"expected {expected}"
        raise InvalidNationalId(f"check digit 2 does not match (got {digits[10]}; {hint})")


def _fnr_century(individual: int, yy: int) -> int | None:
    if individual <= 499:
        return 1900
    if individual <= 749 and yy >= 54:
        return 1800
    if yy <= 39:
        return 2000
    if individual >= 900:
        return 1900
    return None


def _dnr_century(individual: int, yy: int) -> int | None:
    if yy <= 39:
        return 1900 if individual <= 199 else 2000
    if 500 <= individual <= 599:
        return 1800 if yy >= 54 else None
    return 1900


def _digits_only(value: str) -> str:
    text = value.strip()
    if not text:
        raise InvalidNationalId("is empty; expected 11 digits")
    if any(ch.isspace() for ch in text):
        raise InvalidNationalId("must be 11 digits with no spaces inside the number")
    if not (text.isascii() and text.isdigit()):
        raise InvalidNationalId("must contain only the digits 0-9")
    if len(text) != _LENGTH:
        raise InvalidNationalId(f"must be exactly 11 digits, got {len(text)}")
    return text


def parse_national_id(value: str, *, allow_synthetic: bool = False) -> NationalId:
    """Validate a fødselsnummer or D-nummer and return what it encodes.

    Surrounding whitespace is stripped; nothing else is normalised (no inner spaces, dashes or
    dots). Check digits are accepted under both the current rule and the rule for numbers
    issued from 2032. Synthetic test numbers (month + 80) are accepted only when
    ``allow_synthetic`` is true.

    Raises:
        InvalidNationalId: with a plain-English reason when the number is not valid.
    """
    if not isinstance(value, str):
        raise TypeError(f"national id must be a str, not {type(value).__name__}")
    text = _digits_only(value)
    digits = tuple(int(ch) for ch in text)

    _check_digits(digits)

    first = digits[0]
    if first >= 8:
        raise InvalidNationalId(
            f"first digit {first} is not used by fødselsnummer or D-nummer "
            "(FH-nummer are not supported)"
        )
    kind = IdKind.DNR if first >= 4 else IdKind.FNR
    raw_day = int(text[0:2])
    day = raw_day - _DNR_DAY_OFFSET if kind is IdKind.DNR else raw_day

    raw_month = int(text[2:4])
    synthetic = _SYNTHETIC_MONTH_OFFSET < raw_month <= _SYNTHETIC_MONTH_OFFSET + 12
    if synthetic:
        if not allow_synthetic:
            raise InvalidNationalId(
                "this is a synthetic test number (month + 80), which is not accepted here"
            )
        month = raw_month - _SYNTHETIC_MONTH_OFFSET
    elif _H_NUMBER_MONTH_OFFSET < raw_month <= _H_NUMBER_MONTH_OFFSET + 12:
        raise InvalidNationalId(
            f"month {raw_month:02d} has 40 added: that is an H-nummer or a NAV (Dolly) "
            "synthetic number, neither of which is supported"
        )
    else:
        month = raw_month
    if not 1 <= month <= 12:
        raise InvalidNationalId(f"month {raw_month:02d} is not a valid month")

    yy = int(text[4:6])
    individual = int(text[6:9])
    century = (_dnr_century if kind is IdKind.DNR else _fnr_century)(individual, yy)
    if century is None:
        label = "D-nummer" if kind is IdKind.DNR else "fødselsnummer"
        raise InvalidNationalId(
            f"individual number {individual:03d} is not used for {label} with birth year "
            f"{yy:02d}, so the century cannot be determined"
        )
    year = century + yy

    if not 1 <= day <= calendar.monthrange(year, month)[1]:
        raise InvalidNationalId(
            f"birth date {year:04d}-{month:02d}-{day:02d} does not exist"
            + (" (the day of a D-nummer has 40 added)" if kind is IdKind.DNR else "")
        )

    return NationalId(
        value=text,
        kind=kind,
        birth_date=date(year, month, day),
        synthetic=synthetic,
    )
