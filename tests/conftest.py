"""Shared fixtures. Every test runs with the network closed except loopback: a test that tries to
reach any other host fails at once, so no test can spend money or depend on the internet."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.catalogue import Catalogue
from bot.config import Settings
from bot.store.db import Database
from tests.tracking import TrackingTransport

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def _is_loopback(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


class NetworkBlocked(RuntimeError):
    """A test tried to reach a host that is not loopback."""


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(address: Any) -> None:
        if isinstance(address, tuple) and not _is_loopback(address[0]):
            raise NetworkBlocked(f"test tried to reach {address[0]}: only loopback is allowed in tests")

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            check(address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            check(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_loopback(host):
            raise NetworkBlocked(f"test tried to resolve {host}: only loopback is allowed in tests")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(scope="session")
def catalogue() -> Catalogue:
    return Catalogue.load()


class NoSleep:
    """An injectable sleep that records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def no_sleep() -> NoSleep:
    return NoSleep()


@pytest.fixture
async def tracking() -> AsyncIterator[TrackingTransport]:
    """A real transport that fails the test if any response is left open."""
    transport = TrackingTransport()
    yield transport
    assert transport.open == 0, "a response was left open"


@pytest.fixture
async def client(tracking: TrackingTransport) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the tracking transport (respx mocks still apply)."""
    async with httpx.AsyncClient(transport=tracking) as http:
        yield http


NOW = dt.datetime(2026, 11, 24, 10, 30, tzinfo=dt.UTC)
"""The tests' "now": a Tuesday late in November 2026, before gpt-image-1.5's shutdown."""


class Clock:
    """A settable UTC clock for the ledger, the stores and the reports."""

    def __init__(self, now: dt.datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A real SQLite database with Easel's schema, in the test's own folder."""
    database = await Database.open(tmp_path / "data" / "easel.db")
    yield database
    await database.close()


SETTING_NAMES = tuple(str(field.validation_alias) for field in Settings.model_fields.values())
"""Every environment variable Easel reads."""


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Easel, OpenAI or Discord variable from the outside, and the test's own folder as the working dir."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
