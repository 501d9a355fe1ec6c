"""A tiny HTTP server on 127.0.0.1 that records the callbacks it receives."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    # Statuses to answer, in order; 200 once they run out.
    answers: list[int] = field(default_factory=list)
    calls: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Seconds to sit on each request before answering (a slow receiver); may change live.
    delay_s: float = 0.0

    def batch_ids(self) -> set[str]:
        """The ``batch_id`` of every callback received (JSON bodies)."""
        import json

        with self.lock:
            return {json.loads(call.body)["batch_id"] for call in self.calls}

    def wait_for(self, count: int, timeout_s: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.calls) >= count:
                    return list(self.calls)
            time.sleep(0.02)
        raise AssertionError(f"expected {count} callback(s), got {len(self.calls)}")


@contextmanager
def webhook_receiver(port: int = 0, delay_s: float = 0.0) -> Iterator[Receiver]:
    """A receiver on 127.0.0.1 (``port`` 0: any free one) answering after ``delay_s``."""
    receiver = Receiver(url="", delay_s=delay_s)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            deadline = time.monotonic() + receiver.delay_s
            while time.monotonic() < deadline and receiver.delay_s > 0:
                time.sleep(0.05)  # in slices, so a test can make a slow receiver fast
            with receiver.lock:
                receiver.calls.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                status = receiver.answers.pop(0) if receiver.answers else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
