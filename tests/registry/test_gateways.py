"""Gateway registration and API-key authentication."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho.db.models.registry import Gateway, Organization
from dho.registry.gateways import (
    KEY_PREFIX,
    GatewayError,
    authenticate,
    create_gateway,
    gateway_organizations,
    new_key,
)
from dho.registry.queries import gateways_by_id

Sessions = async_sessionmaker[AsyncSession]


async def add_organizations(sessions: Sessions, *ids: str) -> None:
    async with sessions.begin() as session:
        session.add_all(
            Organization(id=i, kind="municipality", name=f"Org {i}", resource="{}") for i in ids
        )


async def new_gateway(sessions: Sessions, gateway_id: str, orgs: list[str]) -> str:
    async with sessions.begin() as session:
        return await create_gateway(session, gateway_id, "Tablet hub", orgs)


async def test_create_and_authenticate_round_trip(sessions: Sessions) -> None:
    await add_organizations(sessions, "org-a", "org-b")
    key = await new_gateway(sessions, "hub-01", ["org-a", "org-b", "org-a"])
    assert key.startswith(KEY_PREFIX) and len(key) >= len(KEY_PREFIX) + 40
    async with sessions() as session:
        gateway = await authenticate(session, key)
        assert gateway is not None and gateway.id == "hub-01"
        assert await gateway_organizations(session, "hub-01") == {"org-a", "org-b"}
        assert await gateway_organizations(session, "unknown") == set()


async def test_only_the_hash_is_stored(sessions: Sessions) -> None:
    await add_organizations(sessions, "org-a")
    key = await new_gateway(sessions, "hub-01", ["org-a"])
    async with sessions() as session:
        gateway = await session.get(Gateway, "hub-01")
    assert gateway is not None
    assert gateway.key_hash != key
    assert gateway.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert gateway.key_hint == key[: len(KEY_PREFIX) + 4]
    assert key[len(KEY_PREFIX) + 4 :] not in gateway.key_hint


async def test_wrong_keys_are_refused(sessions: Sessions) -> None:
    await add_organizations(sessions, "org-a")
    key = await new_gateway(sessions, "hub-01", ["org-a"])
    async with sessions() as session:
        assert await authenticate(session, new_key()) is None
        assert await authenticate(session, key[len(KEY_PREFIX) :]) is None
        assert await authenticate(session, "Bearer " + key) is None
        assert await authenticate(session, key[:-1]) is None
        assert await authenticate(session, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln") is None
        assert await authenticate(session, "") is None


async def test_inactive_gateway_is_refused(sessions: Sessions) -> None:
    await add_organizations(sessions, "org-a")
    key = await new_gateway(sessions, "hub-01", ["org-a"])
    async with sessions.begin() as session:
        gateway = await session.get(Gateway, "hub-01")
        assert gateway is not None
        gateway.active = False
    async with sessions() as session:
        assert await authenticate(session, key) is None


@pytest.mark.parametrize(
    "gateway_id",
    ["", "a", "Hub-01", "hub/01", "hub+", "hub#", "-hub", "hub-", "hub 01", "hub_01", "x" * 65],
)
async def test_bad_gateway_id_rejected(sessions: Sessions, gateway_id: str) -> None:
    await add_organizations(sessions, "org-a")
    async with sessions() as session:
        with pytest.raises(GatewayError, match="gateway id"):
            await create_gateway(session, gateway_id, "Hub", ["org-a"])


async def test_longest_and_shortest_ids_accepted(sessions: Sessions) -> None:
    await add_organizations(sessions, "org-a")
    await new_gateway(sessions, "x" * 64, ["org-a"])
    await new_gateway(sessions, "a1", ["org-a"])


async def test_unknown_organisation_rejected(sessions: Sessions) -> None:
    await add_organizations(sessions, "org-a")
    async with sessions() as session:
        with pytest.raises(GatewayError, match=r"unknown organisation.*org-x"):
            await create_gateway(session, "hub-01", "Hub", ["org-a", "org-x"])
        with pytest.raises(GatewayError, match="at least one organisation"):
            await create_gateway(session, "hub-01", "Hub", [])
        assert list(await session.scalars(select(Gateway))) == []


async def test_duplicate_gateway_rejected(sessions: Sessions) -> None:
    await add_organizations(sessions, "org-a")
    await new_gateway(sessions, "hub-01", ["org-a"])
    async with sessions() as session:
        with pytest.raises(GatewayError, match="already exists"):
            await create_gateway(session, "hub-01", "Hub", ["org-a"])


async def test_gateways_by_id(sessions: Sessions) -> None:
    await add_organizations(sessions, "org-a", "org-b")
    await new_gateway(sessions, "hub-01", ["org-a", "org-b"])
    await new_gateway(sessions, "hub-02", ["org-b"])
    async with sessions() as session:
        found = await gateways_by_id(session, ["hub-01", "hub-02", "nope", "hub-01"])
        assert await gateways_by_id(session, []) == {}
    assert set(found) == {"hub-01", "hub-02"}
    gateway, orgs = found["hub-01"]
    assert gateway.id == "hub-01" and gateway.active
    assert orgs == {"org-a", "org-b"}
    assert found["hub-02"][1] == {"org-b"}
