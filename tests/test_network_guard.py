"""The conftest kill switch: only loopback can be reached from tests."""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.conftest import NetworkBlocked


def test_resolving_a_public_host_fails() -> None:
    with pytest.raises(NetworkBlocked):
        socket.getaddrinfo("api.openai.com", 443)


def test_connecting_to_a_public_address_fails() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(NetworkBlocked):
        sock.connect(("93.184.216.34", 443))


async def test_httpx_cannot_reach_the_paid_api() -> None:
    async with httpx.AsyncClient() as http:
        with pytest.raises(NetworkBlocked):
            await http.post("https://api.openai.com/v1/images/generations", json={})


def test_loopback_is_allowed() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
            client.connect(server.getsockname())
