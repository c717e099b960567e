"""Quarantine rows for the record stage: new ones, and what re-processing does to open ones.

A re-processed message (re-drive, replay) closes an open row only when every item that
came from the row's place in the message is stored now; one that still fails keeps the
row open with the new reason. Item rows are found by their item's label (`[1]`,
`Bundle.entry[3]`, `OBX[4]`) or a prefix of it: after an adapter fix, one source item can
become several (`[1].0`, `[1].2`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from dho.db.models import Quarantine
from dho.ingest.errors import DataError

# (raw message id, item label); a label of None is the row of the whole message.
QuarantineKey = tuple[int, str | None]


@dataclass(slots=True)
class QuarantineBook:
    """New quarantine rows of a batch, and the open rows that re-processing touches."""

    open_rows: dict[QuarantineKey, int] = field(default_factory=dict)
    reprocessing: bool = False
    new_rows: list[dict[str, Any]] = field(default_factory=list)
    _failed: dict[int, DataError] = field(default_factory=dict)
    _stored: dict[int, list[str]] = field(default_factory=dict)
    _read_again: set[int] = field(default_factory=set)

    def message_failed(self, raw_id: int, error: DataError, now: datetime) -> None:
        row = self.open_rows.get((raw_id, None))
        if row is not None:
            self._failed.setdefault(row, error)
        elif not self.reprocessing:
            self.new_rows.append(_row(raw_id, None, None, error, now))

    def message_read(self, raw_id: int, *, whole: bool) -> None:
        """The message decoded; with every item processed again its own row is closed."""
        row = self.open_rows.get((raw_id, None))
        if row is not None and whole:
            self._stored.setdefault(row, []).append("the message can be read now")
            self._read_again.add(raw_id)

    def item_failed(
        self, raw_id: int, index: int, label: str, error: DataError, now: datetime
    ) -> None:
        """A new row, or (re-processing) the new reason of the item's open row.

        Re-processing makes new rows only for the items of a message that was quarantined
        whole (they were never looked at one by one); an item stored before that fails now
        (a replay with a changed adapter) is reported, not quarantined.
        """
        row = self._row_of(raw_id, label)
        if row is not None:
            self._failed.setdefault(row, error)
        elif not self.reprocessing or raw_id in self._read_again:
            self.new_rows.append(_row(raw_id, index, label, error, now))

    def item_stored(self, raw_id: int, label: str, how: str) -> None:
        row = self._row_of(raw_id, label)
        if row is not None:
            self._stored.setdefault(row, []).append(how)

    async def apply(self, session: AsyncSession, now: datetime, by: str | None) -> None:
        """Update the open rows touched: still failing, or re-driven."""
        for row, error in self._failed.items():
            await session.execute(
                update(Quarantine)
                .where(Quarantine.id == row)
                .values(**_reason(error), attempts=Quarantine.attempts + 1)
            )
        for row, hows in self._stored.items():
            if row in self._failed:
                continue
            await session.execute(
                update(Quarantine)
                .where(Quarantine.id == row)
                .values(
                    status="redriven",
                    attempts=Quarantine.attempts + 1,
                    resolved_at=now,
                    resolved_by=by,
                    resolution="; ".join(hows)[:2000],
                )
            )

    def _row_of(self, raw_id: int, label: str) -> int | None:
        candidate = label
        while True:
            row = self.open_rows.get((raw_id, candidate))
            if row is not None or "." not in candidate:
                return row
            candidate = candidate.rsplit(".", 1)[0]


def _row(
    raw_id: int, index: int | None, label: str | None, error: DataError, now: datetime
) -> dict[str, Any]:
    return {
        "raw_message_id": raw_id,
        "item_index": index,
        "item_label": label[:64] if label else None,
        **_reason(error),
        "status": "open",
        "created_at": now,
    }


def _reason(error: DataError) -> dict[str, str]:
    return {
        "reason_class": error.reason,
        "reason_code": error.code[:64],
        "reason": str(error)[:2000],
    }
