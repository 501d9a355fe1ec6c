"""Typed uses of the client that ``make lint`` checks with ``mypy --strict`` (pyproject's
``[tool.mypy] files``): what docs/client.md advises must type-check for users too."""

from __future__ import annotations

from contextlib import aclosing

from pixelmill.client import AsyncClient, Event


async def first_event(client: AsyncClient, batch_id: str) -> Event | None:
    """``aclosing(client.iter_events(...))``: iter_events is an async generator."""
    async with aclosing(client.iter_events(batch_id)) as events:
        async for event in events:
            return event
    return None
