"""The service the client tests talk to: a real uvicorn on loopback, one per test module.

Test modules take the fixtures ``service`` (its base URL) and ``client`` (a ``Client`` on
it) by importing them: ``from client_service import client_fixture, service_fixture``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from api_server import running_in_thread
from pixelmill.api.app import create_app
from pixelmill.client import Client
from pixelmill.config import Settings


@pytest.fixture(name="service", scope="module")
def service_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("client-data"), workers=2)
    with running_in_thread(create_app(settings)) as url:
        yield url


@pytest.fixture(name="client")
def client_fixture(service: str) -> Iterator[Client]:
    with Client(service) as connected:
        yield connected
