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

Stages, one module each: `bundle` (read entries), `parties` and `devices` (plan columns and
ids), `references` (resolve and rewrite), `checks` (against the database), `store` (write).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dho import jsonutil
from dho.db.models import Device
from dho.registry.bundle import (
    BUNDLE_TYPES,
    NAMESPACE,
    RESOURCE_TYPES,
    Entry,
    RegistryImportError,
    read_entries,
)
from dho.registry.checks import check_overlaps, check_references, check_unique_keys
from dho.registry.devices import MDC_SYSTEM, plan_device, plan_device_owner, plan_device_use
from dho.registry.parties import (
    HER_SYSTEM,
    MUNICIPALITY_EXTENSION,
    MUNICIPALITY_SYSTEM,
    ORG_NUMBER_SYSTEM,
    ORGANIZATION_KIND_SYSTEM,
    ORGANIZATION_KINDS,
    plan_care_team,
    plan_organization,
    plan_patient,
    valid_org_number,
)
from dho.registry.references import References, prepare_resource
from dho.registry.report import Counts, ImportReport
from dho.registry.store import store_all

__all__ = [
    "BUNDLE_TYPES",
    "HER_SYSTEM",
    "MDC_SYSTEM",
    "MUNICIPALITY_EXTENSION",
    "MUNICIPALITY_SYSTEM",
    "NAMESPACE",
    "ORGANIZATION_KINDS",
    "ORGANIZATION_KIND_SYSTEM",
    "ORG_NUMBER_SYSTEM",
    "RESOURCE_TYPES",
    "Counts",
    "ImportReport",
    "RegistryImportError",
    "import_bundle",
    "load_bundle_file",
    "valid_org_number",
]


async def load_bundle_file(
    session: AsyncSession, path: Path, *, allow_synthetic: bool
) -> ImportReport:
    """Import the Bundle in a JSON file (see `import_bundle`)."""
    try:
        bundle = jsonutil.loads(await asyncio.to_thread(path.read_text, encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RegistryImportError(f"{path}: cannot read a JSON Bundle: {exc}") from exc
    return await import_bundle(session, bundle, allow_synthetic=allow_synthetic)


async def _keep_registered_id(session: AsyncSession, entry: Entry) -> None:
    """A device registered before under its identifier keeps its id (ids of earlier imports
    were made from the identifier as then spelled; 0003 respelled the identifiers)."""
    columns = entry.columns
    found = await session.scalar(
        select(Device.id).where(
            Device.identifier_system == columns["identifier_system"],
            Device.identifier_value == columns["identifier_value"],
        )
    )
    if found is not None:
        entry.id = found


async def import_bundle(
    session: AsyncSession, bundle: dict[str, Any], *, allow_synthetic: bool
) -> ImportReport:
    """Create or update the registry rows a batch/transaction Bundle describes; no commit."""
    entries = read_entries(bundle)
    refs = References()
    for entry in entries:
        if entry.type == "Organization":
            plan_organization(entry)
        elif entry.type == "Patient":
            plan_patient(entry, allow_synthetic)
        elif entry.type == "Device":
            plan_device(entry)
            await _keep_registered_id(session, entry)
        else:
            continue
        refs.add(entry)
    for entry in entries:
        if entry.type == "CareTeam":
            plan_care_team(entry, refs)
            refs.add(entry)
        elif entry.type == "DeviceUseStatement":
            plan_device_use(entry, refs)
            refs.add(entry)
        elif entry.type == "Device":
            plan_device_owner(entry, refs)
    for entry in entries:
        prepare_resource(entry, refs)
    await check_references(session, refs)
    await check_unique_keys(session, entries)
    uses = [e for e in entries if e.type == "DeviceUseStatement"]
    await check_overlaps(session, uses)
    return await store_all(session, entries)
