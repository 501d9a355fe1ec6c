"""The boto3 side of the S3 sibling: one client per process and endpoint, and one line
saying why a call failed."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

DEFAULT_REGION = "us-east-1"
NOT_THERE = frozenset({"404", "NoSuchKey", "NotFound"})

# One client per process and endpoint (building one costs tens of milliseconds; a client
# must not cross a fork). Reset when the process id changes.
_clients: dict[tuple[str | None, str], Any] = {}
_clients_pid = 0
_clients_lock = threading.Lock()


def client_for(endpoint_url: str | None, region: str) -> S3Client:
    global _clients_pid
    with _clients_lock:
        if _clients_pid != os.getpid():
            _clients.clear()
            _clients_pid = os.getpid()
        client = _clients.get((endpoint_url, region))
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                connect_timeout=5,
                read_timeout=30,
                retries={"max_attempts": 3, "mode": "standard"},
                max_pool_connections=32,
                # S3-compatible stores (SeaweedFS, MinIO) rarely resolve virtual hosts.
                s3={"addressing_style": "path"} if endpoint_url else {},
            )
            session = boto3.session.Session()
            client = session.client(
                "s3", endpoint_url=endpoint_url, region_name=region, config=config
            )
            _clients[(endpoint_url, region)] = client
        return client


def default_region() -> str:
    """The region of the usual AWS chain (AWS_REGION, AWS_DEFAULT_REGION, config), else
    ``us-east-1`` (what S3-compatible stores expect)."""
    import boto3

    return boto3.session.Session().region_name or DEFAULT_REGION


def reason(exc: Exception) -> str:
    """One line saying why a call failed."""
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return "no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "?")
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return f"access denied ({code}): check the credentials"
        message = error.get("Message") or exc.response.get("ResponseMetadata", {}).get(
            "HTTPStatusCode", ""
        )
        return f"{code} {message}".strip()
    return " ".join(str(exc).split()) or type(exc).__name__


def error_code(exc: BaseException | None) -> str:
    """The S3 error code of a failed call ("NoSuchKey", "404", ...), or ""."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""
