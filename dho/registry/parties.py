"""Planning Organization, Patient and CareTeam entries: validated columns and row ids."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from dho.registry.bundle import Entry, make_id
from dho.registry.elements import bounded, dicts, identifier_value, identifiers, required_text, text
from dho.registry.national_id import (
    DNR_SYSTEM,
    FNR_SYSTEM,
    IdKind,
    InvalidNationalId,
    parse_national_id,
)
from dho.registry.references import References, link

ORGANIZATION_KIND_SYSTEM = "https://dho.example.no/fhir/CodeSystem/organization-kind"
ORGANIZATION_KINDS = frozenset({"municipality", "hospital-unit", "response-centre"})
ORG_NUMBER_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.101"
MUNICIPALITY_SYSTEM = "urn:oid:2.16.578.1.12.4.1.1.3402"
HER_SYSTEM = "urn:oid:2.16.578.1.12.4.1.2"
MUNICIPALITY_EXTENSION = "http://hl7.no/fhir/StructureDefinition/no-basis-municipalitycode"
_FULL_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MUNICIPALITY_NUMBER = re.compile(r"\d{4}")
_ORG_WEIGHTS = (3, 2, 7, 6, 5, 4, 3, 2)


def plan_organization(entry: Entry) -> None:
    """Id from the organisation number, else municipality number, else HER-id."""
    res = entry.resource
    org_number = identifier_value(res, ORG_NUMBER_SYSTEM)
    municipality = identifier_value(res, MUNICIPALITY_SYSTEM)
    her_id = identifier_value(res, HER_SYSTEM)
    if org_number is not None and not valid_org_number(org_number):
        raise entry.fail(f"organisation number {org_number!r} is not 9 digits with a valid check")
    if municipality is not None and not _MUNICIPALITY_NUMBER.fullmatch(municipality):
        raise entry.fail(f"municipality number {municipality!r} is not 4 digits")
    if her_id is not None and not her_id.isdigit():
        raise entry.fail(f"HER-id {her_id!r} is not a number")
    if org_number is not None:
        key = f"org|{org_number}"
    elif municipality is not None:
        key = f"municipality|{municipality}"
    elif her_id is not None:
        key = f"her|{her_id}"
    else:
        raise entry.fail("needs an organisation number, municipality number or HER-id identifier")
    entry.id = make_id(key)
    entry.columns = {
        "kind": _organization_kind(res),
        "name": bounded(entry, required_text(entry, res.get("name"), "name"), 200, "name"),
        "org_number": org_number,
        "municipality_number": municipality or _address_municipality(entry, res),
    }


def valid_org_number(value: str) -> bool:
    """A Norwegian organisation number: 9 digits, the last a mod-11 check digit."""
    if len(value) != 9 or not (value.isascii() and value.isdigit()):
        return False
    check = 11 - sum(w * int(d) for w, d in zip(_ORG_WEIGHTS, value, strict=False)) % 11
    return check != 10 and check % 11 == int(value[8])


def _organization_kind(res: dict[str, Any]) -> str:
    for concept in dicts(res.get("type")):
        for coding in dicts(concept.get("coding")):
            code = coding.get("code")
            if coding.get("system") == ORGANIZATION_KIND_SYSTEM and code in ORGANIZATION_KINDS:
                return str(code)
    return "other"


def plan_patient(entry: Entry, allow_synthetic: bool) -> None:
    """Id from the validated fødselsnummer or D-nummer."""
    res = entry.resource
    found = [(s, v) for s, v in identifiers(res) if s in (FNR_SYSTEM, DNR_SYSTEM)]
    if not found:
        raise entry.fail(f"needs a national id identifier (system {FNR_SYSTEM} or {DNR_SYSTEM})")
    system, value = found[0]
    try:
        nid = parse_national_id(value, allow_synthetic=allow_synthetic)
    except InvalidNationalId as exc:
        raise entry.fail(f"invalid national id: {exc}") from exc
    if nid.system != system:
        raise entry.fail(f"the national id is a {nid.kind.value}, but its system says {system}")
    family, given = _patient_name(entry, res)
    entry.id = make_id(f"patient|{nid.value}")
    entry.columns = {
        "national_id": nid.value,
        "national_id_system": nid.system,
        "family_name": family,
        "given_name": given,
        "birth_date": _birth_date(entry, res.get("birthDate"), nid.birth_date, nid.kind),
        "municipality_number": _address_municipality(entry, res),
    }


def _patient_name(entry: Entry, res: dict[str, Any]) -> tuple[str, str]:
    names = dicts(res.get("name"))
    official = [n for n in names if n.get("use") == "official"]
    name = (official or names or [{}])[0]
    family: str = name["family"] if isinstance(name.get("family"), str) else ""
    given = " ".join(g for g in name.get("given") or [] if isinstance(g, str))
    if not (family or given):
        raise entry.fail("needs a name with a family or given name")
    return bounded(entry, family, 200, "family name"), bounded(entry, given, 200, "given name")


def _birth_date(entry: Entry, value: Any, from_id: date, kind: IdKind) -> date:
    """birthDate when it is a full date, else the id's; a fødselsnummer must agree with it."""
    if not (isinstance(value, str) and _FULL_DATE.fullmatch(value)):
        return from_id
    try:
        stated = date.fromisoformat(value)
    except ValueError as exc:
        raise entry.fail(f"birthDate {value!r} is not a date") from exc
    if kind is IdKind.FNR and stated != from_id:
        raise entry.fail("birthDate does not match the birth date in the fødselsnummer")
    return stated


def _address_municipality(entry: Entry, res: dict[str, Any]) -> str | None:
    for address in dicts(res.get("address")):
        district = address.get("_district")
        on_district = dicts(district.get("extension")) if isinstance(district, dict) else []
        for ext in on_district + dicts(address.get("extension")):
            coding = ext.get("valueCoding")
            if ext.get("url") != MUNICIPALITY_EXTENSION or not isinstance(coding, dict):
                continue
            code = coding.get("code")
            if not (isinstance(code, str) and _MUNICIPALITY_NUMBER.fullmatch(code)):
                raise entry.fail(f"municipality code {code!r} is not 4 digits")
            return code
    return None


def plan_care_team(entry: Entry, refs: References) -> None:
    """One care team per patient; its members are the organisations among the participants."""
    res = entry.resource
    patient_id = link(entry, refs, res.get("subject"), "Patient", "subject")
    members: dict[str, str | None] = {}
    for participant in dicts(res.get("participant")):
        member = participant.get("member")
        ref = member.get("reference") if isinstance(member, dict) else None
        target = refs.resolve(entry, ref) if isinstance(ref, str) else None
        if target is not None and target[0] == "Organization":
            members.setdefault(target[1], _role(entry, participant))
    entry.id = make_id(f"careteam|{patient_id}")
    entry.columns = {"patient_id": patient_id}
    entry.members = members


def _role(entry: Entry, participant: dict[str, Any]) -> str | None:
    """The first role's first code, else its text."""
    for concept in dicts(participant.get("role")):
        for coding in dicts(concept.get("coding")):
            if text(coding.get("code")):
                return bounded(entry, str(coding["code"]), 64, "participant role")
        if text(concept.get("text")):
            return bounded(entry, str(concept["text"]), 64, "participant role")
    return None
