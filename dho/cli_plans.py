"""`dho plans` (standard, show, assign) and `dho patients pause|resume`, on the database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import click
import yaml
from sqlalchemy.ext.asyncio import AsyncSession

from dho.cli_common import load_settings
from dho.db.engine import create_engine, session_factory
from dho.ingest.pipeline import ReferenceData
from dho.rules import plan_store
from dho.rules.patient_context import PlanCatalogue
from dho.rules.plan_store import PlanRequest, PlanStoreError

T = TypeVar("T")


@click.group()
def plans() -> None:
    """Self-management plans: the standard sets and each patient's versions."""


@plans.command("standard")
def plans_standard() -> None:
    """The standard plans under config/plans/."""
    catalogue = ReferenceData.load(load_settings()).plans
    for name, plan in sorted(catalogue.standard.items()):
        click.echo(f"{name:<16} {plan.title}: {', '.join(sorted(plan.measurements))}")


@plans.command("show")
@click.argument("patient_id")
def plans_show(patient_id: str) -> None:
    """The patient's plan versions."""

    async def step(session: AsyncSession, _c: PlanCatalogue) -> list[str]:
        rows = await plan_store.plan_versions(session, patient_id)
        return [
            f"v{r.version}  {r.standard_plan:<14} from {r.valid_from.isoformat()}  "
            f"author HPR {r.author_hpr}, approved by HPR {r.approver_hpr}  ({r.id})"
            for r in rows
        ] or ["no plan of its own: judged by the default standard plan"]

    for line in _run(step):
        click.echo(line)


@plans.command("assign")
@click.argument("patient_id")
@click.argument("standard")
@click.option("--author", "author_hpr", required=True, help="HPR number of who wrote it.")
@click.option("--approver", "approver_hpr", required=True, help="HPR number of who approved.")
@click.option("--valid-from", type=click.DateTime(), default=None, help="UTC; default now.")
@click.option("--set", "adjust", multiple=True, help="path=value (YAML), e.g. a.b.c=95.")
@click.option("--file", "document", type=click.Path(exists=True, path_type=Path), default=None)
@click.option("--note", default=None)
def plans_assign(
    patient_id: str,
    standard: str,
    author_hpr: str,
    approver_hpr: str,
    valid_from: datetime | None,
    adjust: tuple[str, ...],
    document: Path | None,
    note: str | None,
) -> None:
    """Give the patient a new plan version copied from STANDARD (or --file), adjusted."""
    adjustments = {}
    for entry in adjust:
        path, sep, value = entry.partition("=")
        if not sep:
            raise click.BadParameter(f"{entry!r}: use path=value", param_hint="--set")
        adjustments[path.strip()] = yaml.safe_load(value)
    request = PlanRequest(
        standard=standard,
        author_hpr=author_hpr,
        approver_hpr=approver_hpr,
        valid_from=(valid_from or datetime.now(UTC)).replace(tzinfo=UTC),
        adjustments=adjustments,
        document=yaml.safe_load(document.read_text(encoding="utf-8")) if document else None,
        note=note,
    )

    async def step(session: AsyncSession, catalogue: PlanCatalogue) -> str:
        async with session.begin():
            row = await plan_store.add_plan_version(session, catalogue, patient_id, request)
        return f"patient {patient_id}: plan v{row.version} ({standard}) from {row.valid_from}"

    click.echo(_run(step))


@click.group()
def patients() -> None:
    """Pause and resume a patient's follow-up."""


@patients.command("pause")
@click.argument("patient_id")
@click.option("--reason", type=click.Choice(plan_store.PAUSE_REASONS), required=True)
@click.option("--until", type=click.DateTime(), required=True, help="UTC end of the pause.")
@click.option("--by", required=True, help="Who pauses (recorded).")
@click.option("--note", default=None)
def patients_pause(
    patient_id: str, reason: str, until: datetime, by: str, note: str | None
) -> None:
    """No alerts for the patient until --until; readings are still stored."""

    async def step(session: AsyncSession, _c: PlanCatalogue) -> str:
        async with session.begin():
            row = await plan_store.add_pause(
                session,
                patient_id,
                reason=reason,
                starts_at=datetime.now(UTC),
                ends_at=until.replace(tzinfo=UTC),
                by=by,
                note=note,
            )
        return f"patient {patient_id}: paused ({row.reason}) until {row.ends_at.isoformat()}"

    click.echo(_run(step))


@patients.command("resume")
@click.argument("patient_id")
def patients_resume(patient_id: str) -> None:
    """End the patient's running pause now."""

    async def step(session: AsyncSession, _c: PlanCatalogue) -> str:
        async with session.begin():
            ended = await plan_store.end_pauses(session, patient_id, datetime.now(UTC))
        return f"patient {patient_id}: {ended} pause(s) ended"

    click.echo(_run(step))


def _run(step: Callable[[AsyncSession, PlanCatalogue], Awaitable[T]]) -> T:
    settings = load_settings()
    catalogue = ReferenceData.load(settings).plans

    async def main() -> T:
        engine = create_engine(settings)
        try:
            async with session_factory(engine)() as session:
                return await step(session, catalogue)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except (LookupError, PlanStoreError) as exc:
        raise click.ClickException(str(exc).strip("'\"")) from exc
