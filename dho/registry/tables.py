"""The registry table of each resource type, and id lists cut into `IN`-sized chunks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy.orm import InstrumentedAttribute

from dho.db.models.registry import CareTeam, Device, DeviceAssignment, Organization, Patient

Row = Organization | Patient | Device | CareTeam | DeviceAssignment
MODELS: dict[str, type[Row]] = {
    "Organization": Organization,
    "Patient": Patient,
    "Device": Device,
    "CareTeam": CareTeam,
    "DeviceUseStatement": DeviceAssignment,
}
ID_COLUMNS: dict[str, InstrumentedAttribute[str]] = {
    name: model.id for name, model in MODELS.items()
}
_CHUNK = 500


def chunks(items: Sequence[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield list(items[start : start + _CHUNK])
