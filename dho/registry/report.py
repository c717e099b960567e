"""What a registry import did: rows created, updated and unchanged per resource type."""

from __future__ import annotations

from dataclasses import dataclass, field

from dho.registry.bundle import RESOURCE_TYPES


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
