"""Gateways and their API keys: only the SHA-256 of a key is stored.

A key is `dhogw_` followed by 43 characters of `secrets.token_urlsafe(32)` (256 bits), so it
can never be mistaken for an OAuth access token or a JWT (`eyJ...`). The caller owns the
transaction: nothing here commits.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dho.db.models.registry import Gateway, GatewayOrganization, Organization

KEY_PREFIX = "dhogw_"
KEY_HINT_CHARS = 4
# The id appears in MQTT topics `dho/v1/in/{gateway}/{adapter}`: no `/`, `+` or `#`.
GATEWAY_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}[a-z0-9]")
_SECRET_BYTES = 32
_KEY_SHAPE = re.compile(re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]{40,100}")


class GatewayError(ValueError):
    """A gateway cannot be created as asked."""


def hash_key(key: str) -> str:
    """The SHA-256 hex digest stored for a key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh random API key with the `dhogw_` prefix."""
    return KEY_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)


async def create_gateway(
    session: AsyncSession,
    gateway_id: str,
    name: str,
    organization_ids: list[str],
    *,
    mqtt_receipts: bool = False,
) -> str:
    """Register a gateway for the given organisations; returns its API key (shown only once)."""
    if not GATEWAY_ID.fullmatch(gateway_id):
        raise GatewayError(
            f"gateway id {gateway_id!r} must be 2-64 characters of a-z, 0-9 and '-', "
            "starting and ending with a letter or digit"
        )
    if not name.strip() or len(name) > 200:
        raise GatewayError("gateway name must be 1-200 characters")
    wanted = sorted(set(organization_ids))
    if not wanted:
        raise GatewayError("a gateway needs at least one organisation")
    found = set(await session.scalars(select(Organization.id).where(Organization.id.in_(wanted))))
    missing = [org for org in wanted if org not in found]
    if missing:
        raise GatewayError(f"unknown organisation(s): {', '.join(missing)}")
    if await session.get(Gateway, gateway_id) is not None:
        raise GatewayError(f"gateway {gateway_id!r} already exists")
    key = new_key()
    session.add(
        Gateway(
            id=gateway_id,
            name=name.strip(),
            key_hash=hash_key(key),
            key_hint=key[: len(KEY_PREFIX) + KEY_HINT_CHARS],
            active=True,
            mqtt_receipts=mqtt_receipts,
        )
    )
    await session.flush()
    session.add_all(GatewayOrganization(gateway_id=gateway_id, organization_id=o) for o in wanted)
    await session.flush()
    return key


async def set_mqtt_receipts(session: AsyncSession, gateway_id: str, on: bool) -> None:
    """Publish (or stop publishing) a receipt for every MQTT message of the gateway."""
    gateway = await session.get(Gateway, gateway_id)
    if gateway is None:
        raise GatewayError(f"no gateway {gateway_id!r}")
    gateway.mqtt_receipts = on
    await session.flush()


async def authenticate(session: AsyncSession, key: str) -> Gateway | None:
    """The active gateway this key belongs to, or None."""
    if not _KEY_SHAPE.fullmatch(key):
        return None
    digest = hash_key(key)
    gateway = await session.scalar(select(Gateway).where(Gateway.key_hash == digest))
    if gateway is None or not gateway.active:
        return None
    return gateway if hmac.compare_digest(gateway.key_hash, digest) else None


async def gateway_organizations(session: AsyncSession, gateway_id: str) -> set[str]:
    """Ids of the organisations a gateway sends for."""
    stmt = select(GatewayOrganization.organization_id).where(
        GatewayOrganization.gateway_id == gateway_id
    )
    return set(await session.scalars(stmt))
