"""The serving settings (signed URLs, public renditions, CORS) through the real command: a bad
value is one line and exit 2; good values, read from the environment, take effect."""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from api_helpers import small_jpeg, upload
from api_server import ServerProcess
from pixelmill.api.signing import signature
from pixelmill.config import Settings
from test_config import assert_one_line_usage_error, run_cli

BAD_SERVING_SETTINGS = [
    ("PIXELMILL_CORS_ORIGINS", "app.example", "scheme://host[:port]"),
    ("PIXELMILL_CORS_ORIGINS", "https://app.example/", "scheme://host[:port]"),
    ("PIXELMILL_CORS_ORIGINS", "https://a.example,https://b.example/page", "b.example/page"),
    ("PIXELMILL_CORS_ORIGINS", "http://localhost:99999", "scheme://host[:port]"),
    ("PIXELMILL_URL_TTL_S", "0", "greater than 0"),
    ("PIXELMILL_URL_TTL_S", "tomorrow", "valid integer"),
    ("PIXELMILL_URL_SIGNING_KEY", "short", "at least 16 characters"),
    ("PIXELMILL_PUBLIC_RENDITIONS", "perhaps", "boolean"),
    # Keys no header can carry as they are (a line end read from a file, a space, a
    # non-ASCII letter): every client got 401 with no hint why.
    ("PIXELMILL_API_KEY", "sesame-key\n", "visible ASCII"),
    ("PIXELMILL_API_KEY", "two words", "visible ASCII"),
    ("PIXELMILL_API_KEY", "clé-secrète", "visible ASCII"),
    ("PIXELMILL_URL_SIGNING_KEY", "0123456789abcdef ", "visible ASCII"),
]


@pytest.mark.parametrize(("variable", "value", "accepts"), BAD_SERVING_SETTINGS)
@pytest.mark.parametrize("command", ["serve", "run"])
def test_a_bad_serving_setting_is_one_line_and_exit_2(
    tmp_path: Path, command: str, variable: str, value: str, accepts: str
) -> None:
    args = ["serve", "--port", "1"] if command == "serve" else ["run", ".", "-o", "out"]
    result = run_cli(args, tmp_path, **{variable: value})
    assert_one_line_usage_error(result, f"{variable}={value!r}", accepts)


def test_an_origin_with_its_schemes_own_port_matches_what_browsers_send() -> None:
    """Browsers send ``Origin: https://a.example``, never with ``:443``."""
    settings = Settings(cors_origins="https://a.example:443, http://b.example:80, http://c:8080")
    assert settings.cors_origin_list == ("https://a.example", "http://b.example", "http://c:8080")


def test_empty_serving_settings_are_unset() -> None:
    """An empty variable (``PIXELMILL_CORS_ORIGINS=``) means the default, as for the API key."""
    settings = Settings(api_key="k", url_signing_key="", cors_origins=" , ")
    assert settings.url_signing_key is None and settings.cors_origin_list == ()
    derived = hmac.new(b"k", b"pixelmill url signing", hashlib.sha256).digest()
    assert settings.url_signing_secret == derived
    assert Settings(url_signing_key="0123456789abcdef").url_signing_secret is None


def test_serving_settings_from_the_environment_take_effect(tmp_path: Path) -> None:
    """An explicit signing key signs (not the API key's), the TTL bounds the expiry, and
    the listed origins (spaces and case as people write them) get CORS headers."""
    signing_key = "explicit-signing-key-0123456789"
    env = {
        "PIXELMILL_DATA_DIR": str(tmp_path / "data"),
        "PIXELMILL_WORKERS": "1",
        "PIXELMILL_API_KEY": "serving-key",
        "PIXELMILL_URL_SIGNING_KEY": signing_key,
        "PIXELMILL_URL_TTL_S": "600",
        "PIXELMILL_PUBLIC_RENDITIONS": "false",
        "PIXELMILL_CORS_ORIGINS": " https://App.example , http://localhost:3000",
    }
    server = ServerProcess(env, tmp_path / "server.log").start()
    try:
        headers = {"Authorization": "Bearer serving-key"}
        with httpx.Client(base_url=server.url, timeout=60) as client:
            made_at = time.time()
            created = client.post(
                "/v1/batches", headers=headers, files=[upload("a.jpg", small_jpeg(81))]
            )
            assert created.status_code == 202, created.text
            status_url = created.json()["status_url"]
            path, query = urlsplit(status_url).path, parse_qs(urlsplit(status_url).query)
            expires = int(query["expires"][0])
            assert 600 <= expires - made_at <= 600 + 60 + 2  # the bucket is a tenth of 600 s
            assert query["sig"] == [signature(signing_key.encode(), path, expires)]
            assert client.get(status_url).status_code == 200
            assert client.get(path).status_code == 401
            preflight = client.options(
                path,
                headers={
                    "Origin": "https://app.example",
                    "Access-Control-Request-Method": "GET",
                },
            )
            assert preflight.status_code == 200
            assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    finally:
        server.terminate()
