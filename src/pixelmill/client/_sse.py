"""Server-Sent Events: a line decoder (the WHATWG rules) and the resume bookkeeping.

``EventStreamState`` is shared by the sync and async clients: it turns lines into typed
events, remembers the last event id for ``Last-Event-ID``, drops an event it has already
delivered (ids only increase), and knows when ``done`` ended the stream. ``done`` is never
dropped: the service sends it again to a client that resumes from it (or from past it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import ValidationError

from pixelmill.client._errors import INVALID_RESPONSE, PixelmillError
from pixelmill.client._models import Batch, DoneEvent, Event, event_from
from pixelmill.client._wire import batch_path

# Without a hint from the service, wait this long before reconnecting a dropped stream.
DEFAULT_RETRY_S = 1.0
# The service's hint is followed only up to this: a client that waits should not stall.
MAX_RETRY_S = 30.0


@dataclass(frozen=True)
class ServerSentEvent:
    name: str
    data: str
    id: str | None


class SSEDecoder:
    """Feed it lines (without their line ending); it returns an event at each blank line."""

    def __init__(self) -> None:
        # The id of the last event dispatched: what a reconnection sends as Last-Event-ID.
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None
        self._reset_message()

    def _reset_message(self) -> None:
        self._name = ""
        self._data: list[str] = []
        # An id line counts once its message is complete: a stream cut after the line must
        # not resume past the message it belongs to.
        self._id = self.last_event_id

    def start_connection(self) -> None:
        """A new connection: a message the last one cut in half is dropped, not dispatched."""
        self._reset_message()

    def feed(self, line: str) -> ServerSentEvent | None:
        if not line:
            self.last_event_id = self._id
            if not self._data:
                self._name = ""
                return None
            event = ServerSentEvent(self._name or "message", "\n".join(self._data), self._id)
            self._reset_message()
            return event
        if line.startswith(":"):
            return None  # a comment: keep-alive
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self._name = value
        elif field == "data":
            self._data.append(value)
        elif field == "id" and "\0" not in value:
            self._id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None


class EventStreamState:
    """One batch's event stream across reconnections."""

    def __init__(self, batch_id: str, last_event_id: str | int | None = None) -> None:
        self.batch_id = batch_id
        self.decoder = SSEDecoder()
        self.decoder.last_event_id = None if last_event_id is None else str(last_event_id)
        self.decoder.start_connection()
        self.delivered = _as_int(self.decoder.last_event_id)
        self.finished = False

    @property
    def path(self) -> str:
        return f"{batch_path(self.batch_id)}/events"

    def request_headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.decoder.last_event_id is not None:
            headers["Last-Event-ID"] = self.decoder.last_event_id
        return headers

    def start_connection(self) -> None:
        self.decoder.start_connection()

    def feed(self, line: str) -> Event | None:
        """The event ``line`` completes, unless already delivered or of an unknown kind."""
        message = self.decoder.feed(line)
        if message is None:
            return None
        event_id = _as_int(message.id)
        seen = event_id is not None and self.delivered is not None and event_id <= self.delivered
        if seen and message.name != "done":
            return None  # the service started over (its store was reset): seen already
        try:
            data = json.loads(message.data)
            if message.name == "error":
                raise PixelmillError(str(data["code"]), str(data["message"]))
            event = event_from(message.name, event_id, data)
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            raise PixelmillError(
                INVALID_RESPONSE, f"unreadable {message.name!r} event: {exc}"
            ) from None
        if event_id is not None:
            self.delivered = event_id
        if isinstance(event, DoneEvent):
            self.finished = True
        return event

    def ended(self, batch: Batch) -> DoneEvent:
        """The ``done`` of a stream the service says had ended before (204 to a resume from
        its ``done``): the batch as it is now, with the id resumed from."""
        self.finished = True
        return DoneEvent(self.delivered, batch)

    def retry_delay(self, chosen_s: float | None, attempt: int) -> float:
        """Seconds to wait before reconnection number ``attempt`` (1, 2, ...)."""
        if chosen_s is not None:
            return chosen_s
        hint = self.decoder.retry_ms
        base = DEFAULT_RETRY_S if hint is None else hint / 1000
        # The first reconnect follows the hint; repeated failures back off, within bounds.
        return float(min(base * 2 ** (attempt - 1), MAX_RETRY_S))


def _as_int(event_id: str | None) -> int | None:
    if event_id is None or not (event_id.isascii() and event_id.isdigit()):
        return None
    return int(event_id)
