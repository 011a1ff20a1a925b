"""Shared fixtures: real services (skip on a laptop without them, fail under FORMATION_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

REQUIRE_SERVICES = os.environ.get("FORMATION_REQUIRE_SERVICES") == "1"
POSTGRES_BASE_URL = os.environ.get("FORMATION_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MQTT_HOST = os.environ.get("FORMATION_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("FORMATION_TEST_MQTT_PORT", "1883"))


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int) -> None:
    """Skip (or fail under FORMATION_REQUIRE_SERVICES=1) when a service does not answer."""
    if _port_open(host, port):
        return
    reason = f"{name} not reachable at {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} and FORMATION_REQUIRE_SERVICES=1")
    pytest.skip(reason)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    need_service("PostgreSQL", "127.0.0.1", 5432)
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_BASE_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_BASE_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def mqtt_broker() -> tuple[str, int]:
    """Host and port of a running MQTT broker."""
    need_service("MQTT broker", MQTT_HOST, MQTT_PORT)
    return MQTT_HOST, MQTT_PORT


@pytest.fixture(autouse=True)
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Fail any async test that leaves tasks running on its loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # pragma: no cover - sync tests get no loop
        yield
        return
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()]
    for task in leaked:
        task.cancel()
    assert not leaked, f"test leaked asyncio tasks: {[t.get_name() for t in leaked]}"
