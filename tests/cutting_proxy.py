"""A TCP proxy on 127.0.0.1 that drops a batch's event streams on purpose.

It sits between a client and a real service and passes bytes through untouched, except on
connections that ask for ``/v1/batches/<id>/events``: the first ``cut_streams`` of those are
cut in the middle of an ``image`` event once ``cut_after_images`` whole ones went through
(the client sees a truncated chunked body, as when a network path dies), and with
``refuse_events`` every such request is answered by closing the connection.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from types import TracebackType

_EVENTS_REQUEST = re.compile(rb"GET /v1/batches/[^ ]+/events HTTP/1\.1\r\n(.*?)\r\n\r\n", re.S)
_IMAGE_EVENT = b"event: image\n"


class CuttingProxy:
    def __init__(
        self,
        upstream_url: str,
        *,
        cut_streams: int = 1,
        cut_after_images: int = 3,
        refuse_events: bool = False,
    ) -> None:
        host, port = upstream_url.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.cut_streams = cut_streams
        self.cut_after_images = cut_after_images
        self.refuse_events = refuse_events
        self.events_requests: list[dict[str, str]] = []  # the headers of each one
        self.cuts = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = False
        self._sockets: list[socket.socket] = []

    def __enter__(self) -> CuttingProxy:
        threading.Thread(target=self._accept, daemon=True, name="cutting-proxy").start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                _close(sock)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._serve, args=(client, upstream), daemon=True).start()

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        """Client to service here; service to client in a second thread."""
        # Set when this connection's current request is an event stream to cut.
        cut_this = threading.Event()
        threading.Thread(
            target=self._pump_back, args=(upstream, client, cut_this), daemon=True
        ).start()
        try:
            while data := client.recv(65536):
                request = _EVENTS_REQUEST.search(data)
                if request is not None:
                    headers = _headers(request.group(1))
                    with self._lock:
                        self.events_requests.append(headers)
                        if self.refuse_events:
                            break
                        if self.cuts < self.cut_streams:
                            self.cuts += 1
                            cut_this.set()
                upstream.sendall(data)
        except OSError:
            pass
        _close(client)
        _close(upstream)

    def _pump_back(
        self, upstream: socket.socket, client: socket.socket, cut_this: threading.Event
    ) -> None:
        seen = b""
        try:
            while data := upstream.recv(65536):
                if cut_this.is_set():
                    seen += data
                    cut_at = self._cut_point(seen)
                    if cut_at is not None:
                        client.sendall(data[: max(cut_at - (len(seen) - len(data)), 0)])
                        break
                client.sendall(data)
        except OSError:
            pass
        _close(client)
        _close(upstream)

    def _cut_point(self, seen: bytes) -> int | None:
        """Where to cut, once the next image event is in: cuts take turns between the
        middle of its ``data:`` line and just before the blank line that ends it."""
        start = _nth(seen, _IMAGE_EVENT, self.cut_after_images + 1)
        end = None if start is None else seen.find(b"\n\n", start)
        if start is None or end is None or end < 0:
            return None
        data_line = seen.find(b"\ndata: ", start)
        return end + 1 if self.cuts % 2 == 0 else data_line + 12


def _nth(data: bytes, needle: bytes, n: int) -> int | None:
    """Where the ``n``-th ``needle`` starts in ``data`` (1-based), or None."""
    at = -1
    for _ in range(n):
        at = data.find(needle, at + 1)
        if at < 0:
            return None
    return at


def _headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
