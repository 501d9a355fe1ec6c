"""Owed callbacks survive a slow receiver and a stop or crash of the service (issue 6 item 7)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from api_helpers import small_jpeg, upload, wait_for_batch
from api_server import ServerProcess, free_port
from test_api_process import DRAINED, server_env
from webhook_receiver import webhook_receiver

pytestmark = pytest.mark.slow

# More batches than the sender has threads, so some callbacks queue behind the slow ones.
BATCHES = 7


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_callbacks_queued_behind_a_slow_receiver_are_sent_by_the_next_start(
    how: str, tmp_path: Path
) -> None:
    """Every batch that finished owes its callback from that moment: the next start sends
    each one, even those never built before the service went down."""
    env = server_env(tmp_path / "data", PIXELMILL_WEBHOOK_ATTEMPTS="2")
    with webhook_receiver(port=free_port(), delay_s=60.0) as receiver:
        first = ServerProcess(env, tmp_path / "server.log").start()
        batch_ids = []
        try:
            with httpx.Client(base_url=first.url, timeout=60) as client:
                for i in range(BATCHES):
                    files = [upload(f"{i}.jpg", small_jpeg(9000 + i))]
                    created = client.post(
                        "/v1/batches", files=files, data={"callback_url": receiver.url}
                    )
                    batch_ids.append(created.json()["batch_id"])
                for batch_id in batch_ids:
                    assert wait_for_batch(client, batch_id)["status"] == "completed"
        finally:
            if how == "sigkill":
                first.kill()
            else:
                assert first.terminate() in DRAINED, first.log()
        owed = {p.name for p in (tmp_path / "data" / "callbacks").iterdir()}
        assert owed == set(batch_ids), "every finished batch owes its callback"
        receiver.delay_s = 0.0  # the receiver recovers
        second = ServerProcess(env, tmp_path / "server2.log").start()
        try:
            deadline = time.monotonic() + 60
            while not set(batch_ids) <= receiver.batch_ids():
                assert time.monotonic() < deadline, f"sent: {receiver.batch_ids()}"
                time.sleep(0.1)
        finally:
            assert second.terminate() in DRAINED, second.log()
        assert list((tmp_path / "data" / "callbacks").iterdir()) == [], "delivered, still owed"
