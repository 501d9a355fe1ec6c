"""The callback address policy: checked at batch creation and again on the address connected."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api_helpers import assert_error, small_jpeg, upload, wait_for_batch
from api_server import running_in_thread
from pixelmill.api.app import create_app
from pixelmill.api.webhooks import (
    AddressPolicy,
    CallbackRefused,
    WebhookSender,
    redact_url,
)
from pixelmill.config import Settings
from webhook_receiver import webhook_receiver

NEVER = [
    ("http://169.254.169.254/latest/meta-data", "link-local"),
    ("http://[fe80::1]/hook", "link-local"),
    ("http://[fd00:ec2::254]/hook", "cloud metadata"),
    ("http://0.0.0.0:8080/hook", "unspecified"),
    ("http://0.1.2.3/hook", "unspecified"),
    ("http://[::]/hook", "unspecified"),
    ("http://224.0.0.1/hook", "multicast"),
    ("http://[ff02::1]/hook", "multicast"),
    ("http://[::ffff:169.254.169.254]/hook", "link-local"),
    ("http://[::ffff:0.0.0.0]/hook", "unspecified"),
]
PRIVATE = [
    ("http://127.0.0.1:9/hook", "loopback"),
    ("http://127.8.9.10/hook", "loopback"),
    ("http://[::1]:9/hook", "loopback"),
    ("http://localhost:9/hook", "loopback"),
    ("http://10.1.2.3/hook", "private"),
    ("http://172.16.0.1/hook", "private"),
    ("http://172.31.255.254/hook", "private"),
    ("http://192.168.1.1/hook", "private"),
    ("http://[fc00::1]/hook", "private"),
    ("http://[fd12:3456::1]/hook", "private"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback"),
    ("http://[::ffff:10.0.0.1]/hook", "private"),
    ("http://[::ffff:192.168.0.1]/hook", "private"),
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("policy-data")


@pytest.fixture(scope="module")
def client(data_dir: Path) -> Iterator[httpx.Client]:
    """A service with the default policy: no private callback targets."""
    settings = Settings(data_dir=data_dir, store="sqlite", workers=1)
    assert settings.webhook_allow_private is False
    with (
        running_in_thread(create_app(settings)) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        yield client


@pytest.mark.parametrize(("url", "what"), NEVER + PRIVATE)
def test_a_forbidden_callback_address_is_400_at_creation(
    client: httpx.Client, data_dir: Path, url: str, what: str
) -> None:
    response = client.post(
        "/v1/batches", files=[upload("a.jpg", small_jpeg(1))], data={"callback_url": url}
    )
    assert_error(response, 400, "invalid_request")
    message = response.json()["error"]["message"]
    assert what in message and "callback_url" in message, message
    spool = data_dir / "spool"
    assert not spool.is_dir() or list(spool.iterdir()) == []


def test_a_public_callback_address_is_allowed() -> None:
    """Checked without sending anything: tests never reach beyond loopback."""
    assert AddressPolicy().resolve("http://192.0.2.1:9/hook") == ["192.0.2.1"]
    assert AddressPolicy().resolve("https://[2001:db8::1]/hook") == ["2001:db8::1"]
    assert AddressPolicy().refusal("8.8.8.8") is None


@pytest.mark.parametrize(("url", "what"), NEVER)
def test_never_allowed_classes_stay_refused_when_private_is_allowed(url: str, what: str) -> None:
    with pytest.raises(CallbackRefused) as refused:
        AddressPolicy(allow_private=True).resolve(url)
    assert what in refused.value.message


@pytest.mark.parametrize(("url", "what"), PRIVATE)
def test_private_classes_pass_when_allowed(url: str, what: str) -> None:
    assert AddressPolicy(allow_private=True).resolve(url)
    with pytest.raises(CallbackRefused) as refused:
        AddressPolicy(allow_private=False).resolve(url)
    assert what in refused.value.message and "PIXELMILL_WEBHOOK_ALLOW_PRIVATE" in str(refused.value)


def test_the_send_time_check_refuses_a_forbidden_peer() -> None:
    """Even for a URL accepted earlier, the sender checks the address it would connect to."""
    sender = WebhookSender(None, attempts=3, backoff_s=0.01, allow_private=False)
    try:
        with webhook_receiver() as receiver:
            for url in (receiver.url, receiver.url.replace("127.0.0.1", "localhost")):
                assert sender.deliver(url, b"{}") is False
            assert receiver.calls == []
        # The transport itself sends only to a checked literal address, never to a name.
        with pytest.raises(CallbackRefused):
            sender._client.post("http://localhost:9/hook", content=b"{}")
        with pytest.raises(CallbackRefused):
            sender._client.post("http://127.0.0.1:9/hook", content=b"{}")
    finally:
        sender.close()


def test_the_sender_connects_to_the_checked_address_keeping_the_host_header() -> None:
    sender = WebhookSender(None, attempts=1, allow_private=True)
    try:
        with webhook_receiver() as receiver:
            by_name = receiver.url.replace("127.0.0.1", "localhost")
            assert sender.deliver(by_name, b'{"n":1}')
            call = receiver.wait_for(1)[0]
    finally:
        sender.close()
    assert call.headers["host"] == by_name.split("/")[2]
    assert call.body == b'{"n":1}'


def test_a_batch_posts_its_callback_when_private_is_allowed(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", store="sqlite", workers=1, webhook_allow_private=True
    )
    with (
        webhook_receiver() as receiver,
        running_in_thread(create_app(settings, webhook_backoff_s=0.05)) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        response = client.post(
            "/v1/batches",
            files=[upload("a.jpg", small_jpeg(3))],
            data={"callback_url": receiver.url},
        )
        assert response.status_code == 202, response.text
        wait_for_batch(client, response.json()["batch_id"])
        assert len(receiver.wait_for(1)) == 1


def test_credentials_and_query_strings_never_reach_a_log(caplog: pytest.LogCaptureFixture) -> None:
    url = "http://hook-user:s3cr3t-pw@127.0.0.1:9/hook?token=t0k3n-value"
    assert redact_url(url) == "http://***@127.0.0.1:9/hook?***"
    caplog.set_level(logging.DEBUG)
    for allow_private in (True, False):  # connection refused, then refused by the policy
        sender = WebhookSender(
            None, attempts=2, backoff_s=0.01, timeout_s=1, allow_private=allow_private
        )
        try:
            assert sender.deliver(url, b"{}") is False
        finally:
            sender.close()
    text = caplog.text
    assert "127.0.0.1:9/hook" in text
    assert "s3cr3t-pw" not in text and "t0k3n-value" not in text and "hook-user" not in text
