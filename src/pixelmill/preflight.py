"""What ``pixelmill serve`` and ``pixelmill worker`` check before they start: every part
they need answers, so a wrong setting or a part that is down is one line and an exit code,
not a service that takes work it can never finish.

Exit codes, the same for both commands: 2 for settings that are wrong (a bad value, a
broker refusing the login or the vhost, a TMPDIR no worker socket can go under), 3 for a
part that does not answer (the storage, the store, the broker). Every check
is bounded: the command says why within seconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pixelmill.config import ConfigError, Settings

if TYPE_CHECKING:
    from celery import Celery

EXIT_WRONG_SETTINGS = 2
EXIT_UNREACHABLE = 3
STORE_PING_TIMEOUT_S = 3.0
BROKER_CHECK_TIMEOUT_S = 4
# What a broker says when it refuses the login or the vhost: a setting to fix, not an outage.
BROKER_REFUSALS = ("ACCESS_REFUSED", "NOT_ALLOWED", "WRONGPASS", "NOAUTH", "invalid password")


class CannotStart(Exception):
    """One line for the operator and the exit code that goes with it."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


def redact_url(url: str | None) -> str:
    """``url`` without its password (the same masking as the celery engine's logs)."""
    from urllib.parse import urlsplit, urlunsplit

    if not url:
        return "-"
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def _masked(text: str, url: str | None) -> str:
    """``text`` without the password of ``url`` (an error may quote the URL)."""
    from urllib.parse import urlsplit

    password = urlsplit(url).password if url else None
    return text.replace(password, "***") if password else text


def check_storage(settings: Settings) -> None:
    """The storage answers (a bucket: HEAD it). A missing extra is a setting (2)."""
    from pixelmill.storage import StorageUnavailable, open_storage

    try:
        open_storage(settings).check()
    except ConfigError as exc:
        raise CannotStart(EXIT_WRONG_SETTINGS, str(exc)) from None
    except ValueError as exc:  # botocore's word for an endpoint URL it cannot use
        raise CannotStart(EXIT_WRONG_SETTINGS, f"PIXELMILL_S3_ENDPOINT_URL: {exc}") from None
    except StorageUnavailable as exc:
        raise CannotStart(EXIT_UNREACHABLE, exc.message) from None


def check_store(settings: Settings) -> None:
    """A Redis store answers PING within a few seconds (SQLite is a local file: the service
    opens it at start and says so if it cannot)."""
    if not settings.store.startswith(("redis://", "rediss://", "unix://")):
        return
    import redis

    url = settings.store
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=STORE_PING_TIMEOUT_S, socket_timeout=STORE_PING_TIMEOUT_S
        )
        with client:
            client.ping()
    except (redis.RedisError, OSError, ValueError) as exc:
        why = _masked(f"{type(exc).__name__}: {exc}", url)
        if any(marker.lower() in str(exc).lower() for marker in BROKER_REFUSALS):
            raise CannotStart(
                EXIT_WRONG_SETTINGS, f"the store {redact_url(url)} refuses the login: {why}"
            ) from None
        raise CannotStart(
            EXIT_UNREACHABLE, f"the store {redact_url(url)} does not answer: {why}"
        ) from None


def broker_problem(app: Celery, timeout_s: int = BROKER_CHECK_TIMEOUT_S) -> tuple[int, str] | None:
    """``(exit code, why)`` when the broker refuses us (2) or does not answer (3), or None."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout_s, interval_start=0)
    except Exception as exc:
        text = str(exc) or type(exc).__name__
        if any(marker.lower() in text.lower() for marker in BROKER_REFUSALS):
            return EXIT_WRONG_SETTINGS, text
        return EXIT_UNREACHABLE, text
    return None


def check_broker(settings: Settings) -> None:
    """The celery engine's broker takes our login (2 if not) and answers (3 if not)."""
    if settings.engine != "celery":
        return
    try:
        from pixelmill.engine.celery_app import make_app
    except ImportError as exc:
        raise CannotStart(EXIT_WRONG_SETTINGS, celery_missing(exc)) from None

    app = make_app(settings)
    try:
        problem = broker_problem(app)
    finally:
        app.close()
    if problem is None:
        return
    code, why = problem
    url = redact_url(settings.broker_url)
    why = _masked(why, settings.broker_url)
    if code == EXIT_WRONG_SETTINGS:
        raise CannotStart(code, f"the broker {url} refuses this service: {why}")
    raise CannotStart(code, f"the broker {url} does not answer: {why}")


def check_workers(settings: Settings) -> None:
    """The local engine's worker processes can start: their fork server has a folder for
    its socket (a TMPDIR too long, with /tmp read-only, is a setting to fix: 2)."""
    if settings.engine != "local":
        return
    from pixelmill.engine.forkserver import NoSocketFolder, worker_context

    try:
        worker_context()
    except NoSocketFolder as exc:
        raise CannotStart(EXIT_WRONG_SETTINGS, str(exc)) from None


def celery_missing(exc: ImportError) -> str:
    """The one line for a celery engine without the celery extra installed."""
    extra = "pip install 'pixelmill[celery]'"
    return f"PIXELMILL_ENGINE=celery needs the celery extra: {extra} ({exc})"
