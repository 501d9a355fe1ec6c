"""Webhook signing and delivery, against a real HTTP receiver on 127.0.0.1.

The receiver is on loopback, so these senders allow private addresses (the address policy
itself is tested in test_webhook_policy.py).
"""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from pixelmill.api.webhooks import (
    MAX_IMAGES_IN_CALLBACK,
    SIGNATURE_HEADER,
    WebhookSender,
    callback_body,
    sign,
    validate_callback_url,
)
from pixelmill.errors import InvalidRequest
from webhook_receiver import webhook_receiver


def test_the_signature_is_the_hex_hmac_sha256_of_the_raw_body() -> None:
    body = b'{"batch_id":"x"}'
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert sign(body, "s3cret") == f"sha256={expected}"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "file:///etc/passwd",
        "/relative",
        "http://",
        "http://[::1",  # unbalanced IPv6 bracket: urlsplit raises ValueError
        "http://h:abc/",  # a port that is not a number
    ],
)
def test_only_absolute_http_urls_are_callbacks(url: str) -> None:
    """Anything but a well-formed absolute http(s) URL is invalid_request, never a 500."""
    with pytest.raises(InvalidRequest):
        validate_callback_url(url)


def test_http_and_https_urls_are_accepted() -> None:
    assert validate_callback_url(" https://hooks.example/p?q=1 ") == "https://hooks.example/p?q=1"
    assert validate_callback_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080/"


def test_big_batches_are_posted_without_their_images() -> None:
    small = {"batch_id": "b", "images": [{}] * 3}
    big = {"batch_id": "b", "images": [{}] * (MAX_IMAGES_IN_CALLBACK + 1)}
    assert "images" in json.loads(callback_body(small))
    assert "images" not in json.loads(callback_body(big))


def test_delivery_retries_until_a_2xx_and_signs_every_attempt() -> None:
    """Two failures, then success: three signed POSTs of the same bytes."""
    sender = WebhookSender("k", attempts=5, backoff_s=0.01, allow_private=True)
    try:
        with webhook_receiver() as receiver:
            receiver.answers = [500, 503]
            assert sender.deliver(receiver.url, b'{"ok":true}')
            calls = receiver.wait_for(3)
    finally:
        sender.close()
    assert len(calls) == 3
    for call in calls:
        assert call.body == b'{"ok":true}'
        assert call.headers["content-type"] == "application/json"
        assert call.headers[SIGNATURE_HEADER.lower()] == sign(call.body, "k")


def test_delivery_gives_up_after_the_configured_attempts() -> None:
    sender = WebhookSender(None, attempts=3, backoff_s=0.01, allow_private=True)
    try:
        with webhook_receiver() as receiver:
            receiver.answers = [500] * 10
            assert not sender.deliver(receiver.url, b"{}")
            assert len(receiver.calls) == 3
            assert SIGNATURE_HEADER.lower() not in receiver.calls[0].headers  # no secret
    finally:
        sender.close()


def test_an_unreachable_target_is_retried_then_dropped_without_raising() -> None:
    sender = WebhookSender(None, attempts=2, backoff_s=0.01, timeout_s=1, allow_private=True)
    try:
        future = sender.schedule(lambda: ("http://127.0.0.1:9/nothing-listens", b"{}"))
        assert future.result(timeout=10) is False
    finally:
        sender.close()
