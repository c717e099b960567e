"""Load the registry from a FHIR R4 Bundle: organisations, patients, care teams, devices, use.

Row ids are uuid5 over `NAMESPACE` and the resource's business key, so importing the same
file again changes nothing:

* Organization: `org|<organisation number>` (ORG_NUMBER_SYSTEM), else
  `municipality|<municipality number>` (MUNICIPALITY_SYSTEM), else `her|<HER-id>`.
* Patient: `patient|<fødselsnummer or D-nummer>`, validated with `parse_national_id`.
* Device: `device|<system>|<value>` of its first identifier.
* CareTeam: `careteam|<patient id>`: one care team per patient; a re-import replaces its
  organisation members with those of the file.
* DeviceUseStatement (a device assignment): `device-use|<device id>|<patient id>|<start, UTC>`.
  Moving a start time therefore makes a new assignment, which must not overlap the old one.

Organisation kind: the `Organization.type` coding in ORGANIZATION_KIND_SYSTEM with code
`municipality`, `hospital-unit` or `response-centre`; anything else is `other`.

Municipality number: HL7 Norway's `no-basis-municipalitycode` extension (valueCoding in
MUNICIPALITY_SYSTEM) on `Address.district` (`_district` in JSON) of the first address that
carries it; an organisation's own municipality-number identifier takes precedence.

Each row keeps its resource with `id` set to the row id, references inside the bundle rewritten
to `Type/<row id>`, and `meta.lastUpdated` set when the content last changed. The caller owns
the transaction: nothing here commits, and everything is checked before the first write.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from dho import jsonutil
from dho.db.base import utcnow
from dho.db.models.registry import (
    CareTeam,
    CareTeamMember,
    Device,
    DeviceAssignment,
    Organization,
    Patient,
)
from dho.registry.national_id import (
    DNR_SYSTEM,
    FNR_SYSTEM,
    IdKind,
    InvalidNationalId,
    parse_national_id,
)

NAMESPACE = uuid.UUID("7dceed22-3098-4a1a-843a-76a470b2386e")
ORGANIZATION_KIND_SYSTEM = "https://dho.example.no/fhir/CodeSystem/organization-kind"
ORGANIZATION_KINDS = frozenset({"municipality", "hospital-unit", "response-centre"})
ORG_NUMBER_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.101"
MUNICIPALITY_SYSTEM = "urn:oid:2.16.578.1.12.4.1.1.3402"
HER_SYSTEM = "urn:oid:2.16.578.1.12.4.1.2"
MUNICIPALITY_EXTENSION = "http://hl7.no/fhir/StructureDefinition/no-basis-municipalitycode"
MDC_SYSTEM = "urn:iso:std:iso:11073:10101"
RESOURCE_TYPES = ("Organization", "Patient", "Device", "CareTeam", "DeviceUseStatement")
BUNDLE_TYPES = ("batch", "transaction")

_Row = Organization | Patient | Device | CareTeam | DeviceAssignment
_MODELS: dict[str, type[_Row]] = {
    "Organization": Organization,
    "Patient": Patient,
    "Device": Device,
    "CareTeam": CareTeam,
    "DeviceUseStatement": DeviceAssignment,
}
_ID_COLUMNS: dict[str, InstrumentedAttribute[str]] = {
    name: model.id for name, model in _MODELS.items()
}
_RELATIVE = re.compile(
    r"(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)
_REST_URL = re.compile(r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})$")
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})")
_FULL_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MUNICIPALITY_NUMBER = re.compile(r"\d{4}")
_ORG_WEIGHTS = (3, 2, 7, 6, 5, 4, 3, 2)
_CHUNK = 500


class RegistryImportError(ValueError):
    """The bundle cannot be imported; the message names the entry and the reason."""


@dataclass
class Counts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass
class ImportReport:
    """What an import did, per resource type."""

    by_type: dict[str, Counts] = field(
        default_factory=lambda: {name: Counts() for name in RESOURCE_TYPES}
    )

    def __getitem__(self, resource_type: str) -> Counts:
        return self.by_type[resource_type]

    @property
    def created(self) -> int:
        return sum(c.created for c in self.by_type.values())

    @property
    def updated(self) -> int:
        return sum(c.updated for c in self.by_type.values())

    @property
    def unchanged(self) -> int:
        return sum(c.unchanged for c in self.by_type.values())

    def summary(self) -> str:
        """One line per type, e.g. `Patient: 5 created, 0 updated, 0 unchanged`."""
        return "\n".join(
            f"{name}: {c.created} created, {c.updated} updated, {c.unchanged} unchanged"
            for name, c in self.by_type.items()
        )


@dataclass
class _Entry:
    index: int
    type: str
    full_url: str | None
    resource: dict[str, Any]
    id: str = ""
    columns: dict[str, Any] = field(default_factory=dict)
    members: dict[str, str | None] = field(default_factory=dict)
    label: str = ""

    def fail(self, message: str) -> RegistryImportError:
        where = f"entry {self.index} ({self.type}"
        where += f" {self.full_url})" if self.full_url else ")"
        return RegistryImportError(f"{where}: {message}")


async def load_bundle_file(
    session: AsyncSession, path: Path, *, allow_synthetic: bool
) -> ImportReport:
    """Import the Bundle in a JSON file (see `import_bundle`)."""
    try:
        bundle = jsonutil.loads(await asyncio.to_thread(path.read_text, encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RegistryImportError(f"{path}: cannot read a JSON Bundle: {exc}") from exc
    return await import_bundle(session, bundle, allow_synthetic=allow_synthetic)


async def import_bundle(
    session: AsyncSession, bundle: dict[str, Any], *, allow_synthetic: bool
) -> ImportReport:
    """Create or update the registry rows a batch/transaction Bundle describes; no commit."""
    entries = _read_entries(bundle)
    refs = _References()
    for entry in entries:
        if entry.type == "Organization":
            _plan_organization(entry)
        elif entry.type == "Patient":
            _plan_patient(entry, allow_synthetic)
        elif entry.type == "Device":
            _plan_device(entry)
        else:
            continue
        refs.add(entry)
    for entry in entries:
        if entry.type == "CareTeam":
            _plan_care_team(entry, refs)
            refs.add(entry)
        elif entry.type == "DeviceUseStatement":
            _plan_device_use(entry, refs)
            refs.add(entry)
    for entry in entries:
        _prepare_resource(entry, refs)
    await _check_references(session, refs)
    await _check_unique_keys(session, entries)
    uses = [e for e in entries if e.type == "DeviceUseStatement"]
    await _check_overlaps(session, uses)
    return await _store_all(session, entries)


# ------------------------------------------------------------------ reading


def _read_entries(bundle: Any) -> list[_Entry]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise RegistryImportError("not a FHIR Bundle: resourceType must be 'Bundle'")
    if bundle.get("type") not in BUNDLE_TYPES:
        raise RegistryImportError(
            f"Bundle.type must be 'batch' or 'transaction', not {bundle.get('type')!r}"
        )
    items = bundle.get("entry", [])
    if not isinstance(items, list):
        raise RegistryImportError("Bundle.entry must be a list")
    return [_read_entry(index, item) for index, item in enumerate(items)]


def _read_entry(index: int, item: Any) -> _Entry:
    resource = item.get("resource") if isinstance(item, dict) else None
    if not isinstance(resource, dict):
        raise RegistryImportError(f"entry {index} has no resource")
    request = item.get("request")
    method = request.get("method") if isinstance(request, dict) else None
    if method not in (None, "POST", "PUT"):
        raise RegistryImportError(
            f"entry {index}: request method {method!r} is not supported (only POST or PUT)"
        )
    rtype = resource.get("resourceType")
    if rtype not in RESOURCE_TYPES:
        raise RegistryImportError(
            f"entry {index}: resourceType {rtype!r} is not supported; "
            f"expected one of {', '.join(RESOURCE_TYPES)}"
        )
    full_url = item.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        raise RegistryImportError(f"entry {index}: fullUrl must be a string")
    try:
        copied = jsonutil.loads(jsonutil.dumps(resource))
    except (TypeError, ValueError) as exc:
        raise RegistryImportError(f"entry {index}: resource is not plain JSON: {exc}") from exc
    return _Entry(index, rtype, full_url, copied)


# ------------------------------------------------------------------ planning


def _make_id(key: str) -> str:
    return str(uuid.uuid5(NAMESPACE, key))


def _plan_organization(entry: _Entry) -> None:
    res = entry.resource
    org_number = _identifier_value(res, ORG_NUMBER_SYSTEM)
    municipality = _identifier_value(res, MUNICIPALITY_SYSTEM)
    her_id = _identifier_value(res, HER_SYSTEM)
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
    entry.id = _make_id(key)
    entry.columns = {
        "kind": _organization_kind(res),
        "name": _bounded(entry, _required_text(entry, res.get("name"), "name"), 200, "name"),
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
    for concept in _dicts(res.get("type")):
        for coding in _dicts(concept.get("coding")):
            code = coding.get("code")
            if coding.get("system") == ORGANIZATION_KIND_SYSTEM and code in ORGANIZATION_KINDS:
                return str(code)
    return "other"


def _plan_patient(entry: _Entry, allow_synthetic: bool) -> None:
    res = entry.resource
    found = [(s, v) for s, v in _identifiers(res) if s in (FNR_SYSTEM, DNR_SYSTEM)]
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
    entry.id = _make_id(f"patient|{nid.value}")
    entry.columns = {
        "national_id": nid.value,
        "national_id_system": nid.system,
        "family_name": family,
        "given_name": given,
        "birth_date": _birth_date(entry, res.get("birthDate"), nid.birth_date, nid.kind),
        "municipality_number": _address_municipality(entry, res),
    }


def _patient_name(entry: _Entry, res: dict[str, Any]) -> tuple[str, str]:
    names = _dicts(res.get("name"))
    official = [n for n in names if n.get("use") == "official"]
    name = (official or names or [{}])[0]
    family: str = name["family"] if isinstance(name.get("family"), str) else ""
    given = " ".join(g for g in name.get("given") or [] if isinstance(g, str))
    if not (family or given):
        raise entry.fail("needs a name with a family or given name")
    return _bounded(entry, family, 200, "family name"), _bounded(entry, given, 200, "given name")


def _birth_date(entry: _Entry, value: Any, from_id: date, kind: IdKind) -> date:
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


def _plan_device(entry: _Entry) -> None:
    res = entry.resource
    first = next(iter(_dicts(res.get("identifier"))), {})
    system, value = first.get("system"), first.get("value")
    if not (isinstance(system, str) and system and isinstance(value, str) and value):
        raise entry.fail("the first identifier needs a system and a value (the device's identity)")
    entry.id = _make_id(f"device|{system}|{value}")
    entry.columns = {
        "identifier_system": _bounded(entry, system, 200, "identifier system"),
        "identifier_value": _bounded(entry, value, 200, "identifier value"),
        "type_code": _optional(entry, _device_type(res), 64, "type code"),
        "manufacturer": _optional(entry, _text(res.get("manufacturer")), 200, "manufacturer"),
        "model": _optional(entry, _device_model(res), 200, "model"),
    }


def _device_type(res: dict[str, Any]) -> str | None:
    """The MDC code of Device.type, else its first code."""
    concept = res.get("type")
    found = _dicts(concept.get("coding")) if isinstance(concept, dict) else []
    codings = [c for c in found if isinstance(c.get("code"), str)]
    mdc = [c for c in codings if c.get("system") == MDC_SYSTEM]
    return str((mdc or codings)[0]["code"]) if codings else None


def _device_model(res: dict[str, Any]) -> str | None:
    model = _text(res.get("modelNumber"))
    if model:
        return model
    for name in _dicts(res.get("deviceName")):
        if name.get("type") == "model-name" and _text(name.get("name")):
            return _text(name.get("name"))
    return None


def _plan_care_team(entry: _Entry, refs: _References) -> None:
    res = entry.resource
    patient_id = _link(entry, refs, res.get("subject"), "Patient", "subject")
    members: dict[str, str | None] = {}
    for participant in _dicts(res.get("participant")):
        member = participant.get("member")
        ref = member.get("reference") if isinstance(member, dict) else None
        target = refs.resolve(entry, ref) if isinstance(ref, str) else None
        if target is not None and target[0] == "Organization":
            members.setdefault(target[1], _role(entry, participant))
    entry.id = _make_id(f"careteam|{patient_id}")
    entry.columns = {"patient_id": patient_id}
    entry.members = members


def _role(entry: _Entry, participant: dict[str, Any]) -> str | None:
    """The first role's first code, else its text."""
    for concept in _dicts(participant.get("role")):
        for coding in _dicts(concept.get("coding")):
            if _text(coding.get("code")):
                return _bounded(entry, str(coding["code"]), 64, "participant role")
        if _text(concept.get("text")):
            return _bounded(entry, str(concept["text"]), 64, "participant role")
    return None


def _plan_device_use(entry: _Entry, refs: _References) -> None:
    res = entry.resource
    if res.get("status") == "entered-in-error":
        raise entry.fail("status entered-in-error is not supported; end the period instead")
    device = res.get("device")
    device_id = _link(entry, refs, device, "Device", "device")
    patient_id = _link(entry, refs, res.get("subject"), "Patient", "subject")
    period = res.get("timingPeriod")
    if not isinstance(period, dict):
        raise entry.fail("needs timingPeriod with a start")
    start = _instant(entry, period.get("start"), "timingPeriod.start")
    end = None if period.get("end") is None else _instant(entry, period["end"], "timingPeriod.end")
    if end is not None and end <= start:
        raise entry.fail("timingPeriod.end must be after timingPeriod.start")
    entry.id = _make_id(f"device-use|{device_id}|{patient_id}|{start.astimezone(UTC).isoformat()}")
    entry.columns = {
        "device_id": device_id,
        "patient_id": patient_id,
        "period_start": start,
        "period_end": end,
    }
    entry.label = str(device.get("reference")) if isinstance(device, dict) else device_id


def _instant(entry: _Entry, value: Any, path: str) -> datetime:
    if not (isinstance(value, str) and _DATE_TIME.fullmatch(value)):
        raise entry.fail(f"{path} must be a date-time with seconds and a time zone, not {value!r}")
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise entry.fail(f"{path} {value!r} is not a valid date-time") from exc


# ------------------------------------------------------------------ references


class _References:
    """Names of bundle entries (fullUrl, Type/id) and the registry rows referenced directly."""

    def __init__(self) -> None:
        self.aliases: dict[str, tuple[str, str]] = {}
        self.entries: dict[tuple[str, str], _Entry] = {}
        self.external: dict[tuple[str, str], _Entry] = {}

    def add(self, entry: _Entry) -> None:
        target = (entry.type, entry.id)
        other = self.entries.setdefault(target, entry)
        if other is not entry:
            raise entry.fail(
                f"is the same {entry.type} as entry {other.index} (same business identifier)"
            )
        names = {f"{entry.type}/{entry.id}"}
        if entry.full_url:
            names.add(entry.full_url)
            match = _REST_URL.search(entry.full_url)
            if match and match["type"] == entry.type and not entry.full_url.startswith("urn:"):
                names.add(f"{entry.type}/{match['id']}")
        if isinstance(entry.resource.get("id"), str):
            names.add(f"{entry.type}/{entry.resource['id']}")
        for name in names:
            if self.aliases.setdefault(name, target) != target:
                raise entry.fail(f"{name!r} already names another entry of the bundle")

    def resolve(self, entry: _Entry, ref: str) -> tuple[str, str] | None:
        """The (type, row id) a reference names; None for references to outside resources."""
        target = self.aliases.get(ref)
        if target is not None:
            return target
        if ref.startswith("urn:"):
            raise entry.fail(f"reference {ref!r} matches no fullUrl in the bundle")
        match = _RELATIVE.fullmatch(ref)
        if match is None or match["type"] not in RESOURCE_TYPES:
            return None
        target = (match["type"], match["id"])
        self.external.setdefault(target, entry)
        return target


def _link(entry: _Entry, refs: _References, element: Any, expected: str, path: str) -> str:
    ref = element.get("reference") if isinstance(element, dict) else None
    if not isinstance(ref, str):
        raise entry.fail(f"{path} needs a literal reference to a {expected}")
    target = refs.resolve(entry, ref)
    if target is None or target[0] != expected:
        raise entry.fail(f"{path} must reference a {expected}, not {ref!r}")
    return target[1]


def _prepare_resource(entry: _Entry, refs: _References) -> None:
    """Set our id, rewrite references to `Type/<row id>`, drop server-owned meta."""
    _rewrite(entry, refs, entry.resource)
    rest = {k: v for k, v in entry.resource.items() if k not in ("resourceType", "id", "meta")}
    meta = entry.resource.get("meta")
    meta = (
        {k: v for k, v in meta.items() if k not in ("lastUpdated", "versionId")}
        if isinstance(meta, dict)
        else {}
    )
    entry.resource = {"resourceType": entry.type, "id": entry.id}
    if meta:
        entry.resource["meta"] = meta
    entry.resource.update(rest)


def _rewrite(entry: _Entry, refs: _References, node: Any) -> None:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            target = refs.resolve(entry, ref)
            if target is not None:
                node["reference"] = f"{target[0]}/{target[1]}"
        for value in node.values():
            _rewrite(entry, refs, value)
    elif isinstance(node, list):
        for item in node:
            _rewrite(entry, refs, item)


# ------------------------------------------------------------------ checks against the database


async def _check_references(session: AsyncSession, refs: _References) -> None:
    wanted = [t for t in refs.external if t not in refs.entries]
    for rtype in RESOURCE_TYPES:
        ids = sorted(i for t, i in wanted if t == rtype)
        found = await _existing_ids(session, rtype, ids)
        for missing in (i for i in ids if i not in found):
            entry = refs.external[(rtype, missing)]
            raise entry.fail(f"reference {rtype}/{missing} is neither in the bundle nor registry")


async def _existing_ids(session: AsyncSession, rtype: str, ids: Sequence[str]) -> set[str]:
    column = _ID_COLUMNS[rtype]
    found: set[str] = set()
    for chunk in _chunks(ids):
        found.update(await session.scalars(select(column).where(column.in_(chunk))))
    return found


async def _check_unique_keys(session: AsyncSession, entries: list[_Entry]) -> None:
    """A business key already held by a row with another id (made some other way) is an error."""
    by_type: dict[str, list[_Entry]] = {t: [e for e in entries if e.type == t] for t in _MODELS}
    await _check_key(
        session,
        (Patient.national_id,),
        Patient.id,
        {(e.columns["national_id"],): e for e in by_type["Patient"]},
        "this national id",
    )
    await _check_key(
        session,
        (Organization.org_number,),
        Organization.id,
        {(e.columns["org_number"],): e for e in by_type["Organization"] if e.columns["org_number"]},
        "this organisation number",
    )
    await _check_key(
        session,
        (Device.identifier_system, Device.identifier_value),
        Device.id,
        {
            (e.columns["identifier_system"], e.columns["identifier_value"]): e
            for e in by_type["Device"]
        },
        "this device identifier",
    )


async def _check_key(
    session: AsyncSession,
    key_columns: tuple[InstrumentedAttribute[Any], ...],
    id_column: InstrumentedAttribute[str],
    planned: dict[tuple[Any, ...], _Entry],
    what: str,
) -> None:
    key: Any = key_columns[0] if len(key_columns) == 1 else tuple_(*key_columns)
    for chunk in _chunks(list(planned)):
        values = [k[0] for k in chunk] if len(key_columns) == 1 else chunk
        stmt = select(id_column, *key_columns).where(key.in_(values))
        for row_id, *value in await session.execute(stmt):
            _same_row(planned[tuple(value)], row_id, what)


def _same_row(entry: _Entry, row_id: str, what: str) -> None:
    if row_id != entry.id:
        raise entry.fail(f"{what} already belongs to {entry.type}/{row_id} in the registry")


async def _check_overlaps(session: AsyncSession, uses: list[_Entry]) -> None:
    """Assignments of one device, stored and new, must not overlap in time."""
    periods: dict[str, dict[str, tuple[datetime, datetime | None, _Entry | None]]] = {}
    device_ids = sorted({e.columns["device_id"] for e in uses})
    for chunk in _chunks(device_ids):
        stmt = select(DeviceAssignment).where(DeviceAssignment.device_id.in_(chunk))
        for row in await session.scalars(stmt):
            periods.setdefault(row.device_id, {})[row.id] = (row.period_start, row.period_end, None)
    for e in uses:
        periods.setdefault(e.columns["device_id"], {})[e.id] = (
            e.columns["period_start"],
            e.columns["period_end"],
            e,
        )
    for by_id in periods.values():
        _check_device_periods(sorted(by_id.values(), key=lambda p: p[0]))


def _check_device_periods(ordered: list[tuple[datetime, datetime | None, _Entry | None]]) -> None:
    latest = ordered[0]
    for current in ordered[1:]:
        if latest[1] is None or latest[1] > current[0]:
            culprit = current[2] or latest[2]
            if culprit is not None:
                raise culprit.fail(
                    f"device {culprit.label} would be assigned twice at once: "
                    f"{_period(latest)} overlaps {_period(current)}"
                )
        if latest[1] is not None and (current[1] is None or current[1] > latest[1]):
            latest = current


def _period(p: tuple[datetime, datetime | None, _Entry | None]) -> str:
    end = p[1].isoformat() if p[1] else "open end"
    where = f"entry {p[2].index}" if p[2] else "registry"
    return f"[{p[0].isoformat()}, {end}) ({where})"


# ------------------------------------------------------------------ writing


async def _store_all(session: AsyncSession, entries: list[_Entry]) -> ImportReport:
    report = ImportReport()
    now = utcnow()
    for rtype in RESOURCE_TYPES:
        planned = [e for e in entries if e.type == rtype]
        if not planned:
            continue
        ids = [e.id for e in planned]
        old_members = await _members(session, ids) if rtype == "CareTeam" else {}
        existing = await _rows(session, rtype, ids)
        for entry in planned:
            members_changed = entry.members != old_members.get(entry.id, {})
            outcome = _store(session, rtype, entry, existing.get(entry.id), members_changed, now)
            setattr(report[rtype], outcome, getattr(report[rtype], outcome) + 1)
        await session.flush()
        if rtype == "CareTeam":
            await _sync_members(session, planned, old_members)
    return report


async def _rows(session: AsyncSession, rtype: str, ids: Sequence[str]) -> dict[str, Any]:
    model, column = _MODELS[rtype], _ID_COLUMNS[rtype]
    rows: dict[str, Any] = {}
    for chunk in _chunks(ids):
        found: Sequence[Any] = (await session.scalars(select(model).where(column.in_(chunk)))).all()
        rows.update((row.id, row) for row in found)
    return rows


def _store(
    session: AsyncSession,
    rtype: str,
    entry: _Entry,
    row: Any,
    members_changed: bool,
    now: datetime,
) -> str:
    """Insert or update one row; returns `created`, `updated` or `unchanged`."""
    if row is None:
        row = _MODELS[rtype](id=entry.id, **entry.columns)
        session.add(row)
        outcome = "created"
    elif (
        members_changed
        or any(getattr(row, k) != v for k, v in entry.columns.items())
        or _canonical(_content(jsonutil.loads(row.resource))) != _canonical(entry.resource)
    ):
        for name, value in entry.columns.items():
            setattr(row, name, value)
        outcome = "updated"
    else:
        return "unchanged"
    stamped = dict(entry.resource)
    stamped["meta"] = {**entry.resource.get("meta", {}), "lastUpdated": _instant_text(now)}
    row.resource = jsonutil.dumps(_meta_first(stamped))
    row.updated_at = now
    return outcome


async def _members(
    session: AsyncSession, care_team_ids: Sequence[str]
) -> dict[str, dict[str, str | None]]:
    found: dict[str, dict[str, str | None]] = {}
    for chunk in _chunks(care_team_ids):
        stmt = select(CareTeamMember).where(CareTeamMember.care_team_id.in_(chunk))
        for member in await session.scalars(stmt):
            found.setdefault(member.care_team_id, {})[member.organization_id] = member.role
    return found


async def _sync_members(
    session: AsyncSession, teams: list[_Entry], old: dict[str, dict[str, str | None]]
) -> None:
    """Make each care team's members exactly those of the bundle."""
    for team in teams:
        before = old.get(team.id, {})
        if team.members == before:
            continue
        for org_id in before.keys() - team.members.keys():
            member = await session.get(CareTeamMember, (team.id, org_id))
            if member is not None:
                await session.delete(member)
        for org_id, role in team.members.items():
            if org_id not in before:
                session.add(CareTeamMember(care_team_id=team.id, organization_id=org_id, role=role))
            elif before[org_id] != role:
                member = await session.get(CareTeamMember, (team.id, org_id))
                if member is not None:
                    member.role = role
    await session.flush()


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource without meta.lastUpdated (which changes only with the content)."""
    meta = resource.get("meta")
    if not isinstance(meta, dict):
        return resource
    rest = {k: v for k, v in meta.items() if k != "lastUpdated"}
    out = {k: v for k, v in resource.items() if k != "meta"}
    if rest:
        out["meta"] = rest
    return out


def _canonical(node: Any) -> Any:
    """A comparable form in which 36.50 and 36.5 differ and key order does not matter."""
    if isinstance(node, dict):
        return sorted((k, _canonical(v)) for k, v in node.items())
    if isinstance(node, list):
        return [_canonical(v) for v in node]
    if isinstance(node, bool):
        return ("bool", node)
    if isinstance(node, Decimal | float):
        return ("decimal", str(node))
    return node


def _meta_first(resource: dict[str, Any]) -> dict[str, Any]:
    head = {k: resource[k] for k in ("resourceType", "id", "meta") if k in resource}
    return head | {k: v for k, v in resource.items() if k not in head}


def _instant_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ------------------------------------------------------------------ small helpers


def _chunks(items: Sequence[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield list(items[start : start + _CHUNK])


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _identifiers(res: dict[str, Any]) -> Iterable[tuple[str, str]]:
    for ident in _dicts(res.get("identifier")):
        system, value = ident.get("system"), ident.get("value")
        if isinstance(system, str) and isinstance(value, str):
            yield system, value.strip()


def _identifier_value(res: dict[str, Any], system: str) -> str | None:
    return next((v for s, v in _identifiers(res) if s == system), None)


def _address_municipality(entry: _Entry, res: dict[str, Any]) -> str | None:
    for address in _dicts(res.get("address")):
        district = address.get("_district")
        on_district = _dicts(district.get("extension")) if isinstance(district, dict) else []
        for ext in on_district + _dicts(address.get("extension")):
            coding = ext.get("valueCoding")
            if ext.get("url") != MUNICIPALITY_EXTENSION or not isinstance(coding, dict):
                continue
            code = coding.get("code")
            if not (isinstance(code, str) and _MUNICIPALITY_NUMBER.fullmatch(code)):
                raise entry.fail(f"municipality code {code!r} is not 4 digits")
            return code
    return None


def _required_text(entry: _Entry, value: Any, what: str) -> str:
    text = _text(value)
    if text is None:
        raise entry.fail(f"needs a {what}")
    return text


def _bounded(entry: _Entry, value: str, limit: int, what: str) -> str:
    if len(value) > limit:
        raise entry.fail(f"{what} is longer than {limit} characters")
    return value


def _optional(entry: _Entry, value: str | None, limit: int, what: str) -> str | None:
    return None if value is None else _bounded(entry, value, limit, what)
