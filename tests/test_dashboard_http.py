"""The dashboard's files over HTTP: headers, caching, the auth meta tag, what is reachable.

A real uvicorn on 127.0.0.1, with and without an API key. What the page does in a browser
is tested elsewhere; here only how its files are served.
"""

from __future__ import annotations

import http.client
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from api_helpers import assert_error
from api_server import app_client
from pixelmill.api.routes.dashboard import ASSET_TYPES, PAGE_FILE
from pixelmill.config import Settings

API_KEY = "dashboard-test-key-0123456789"
IMMUTABLE = "public, max-age=31536000, immutable"
ASSET_URL = re.compile(r'"(/dashboard/([^"?]+)\?v=([0-9a-f]+))"')


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A service without an API key."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("open"), workers=1)
    with app_client(settings) as client:
        yield client


@pytest.fixture(scope="module")
def keyed_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A service with an API key (the client sends none)."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("keyed"), workers=1, api_key=API_KEY)
    with app_client(settings) as client:
        yield client


def asset_urls(html: str) -> dict[str, str]:
    """File name -> versioned URL, as the page references them."""
    return {name: url for url, name, _ in ASSET_URL.findall(html)}


def raw_get(client: httpx.Client, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (httpx would resolve dot segments first)."""
    url = urlsplit(str(client.base_url))
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_the_page_is_html_revalidated_with_an_etag_and_locked_down(client: httpx.Client) -> None:
    """GET / answers the HTML, no-cache with an ETag, with CSP, nosniff and no referrer."""
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    assert re.fullmatch(r'"[0-9a-f]{32}"', page.headers["etag"])
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in page.headers["content-security-policy"].split(";")
    )
    assert policy == {
        "default-src": "'none'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": "'self' data: blob:",
        "connect-src": "'self'",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
    }
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.text.startswith("<!doctype html>")
    # No inline script or style: the CSP would refuse them.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page.text)
    assert "<style" not in page.text and " style=" not in page.text


def test_head_answers_the_same_headers_without_a_body(client: httpx.Client) -> None:
    """HEAD / and HEAD of an asset: same status and headers as GET, no body."""
    page = client.get("/")
    head = client.head("/")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == page.headers["etag"]
    assert head.headers["content-length"] == str(len(page.content))
    url = asset_urls(page.text)["dashboard.js"]
    assert client.head(url).headers["etag"] == client.get(url).headers["etag"]


def test_if_none_match_answers_304_on_the_page_and_every_asset(client: httpx.Client) -> None:
    """A matching If-None-Match (also weak, in a list, or *) is 304 without a body."""
    page = client.get("/")
    urls = ["/", *asset_urls(page.text).values()]
    for url in urls:
        etag = client.get(url).headers["etag"]
        for given in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            cached = client.get(url, headers={"If-None-Match": given})
            assert cached.status_code == 304, (url, given)
            assert cached.content == b""
            assert cached.headers["etag"] == etag
        assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200


def test_assets_are_versioned_by_content_and_immutable_at_that_version(
    client: httpx.Client,
) -> None:
    """Every shipped asset is referenced as ?v=<its hash>; that URL may be cached a year."""
    urls = asset_urls(client.get("/").text)
    assert set(urls) == set(ASSET_TYPES)
    for name, url in urls.items():
        asset = client.get(url)
        assert asset.status_code == 200
        assert asset.headers["content-type"] == ASSET_TYPES[name]
        assert asset.headers["content-type"].endswith("; charset=utf-8")
        assert asset.headers["cache-control"] == IMMUTABLE
        assert asset.headers["x-content-type-options"] == "nosniff"
        version = url.rsplit("=", 1)[1]
        assert asset.headers["etag"].strip('"').startswith(version)
        # Without the version (or another one) the same bytes, but revalidated.
        for other in (f"/dashboard/{name}", f"/dashboard/{name}?v=0000"):
            stale = client.get(other)
            assert stale.content == asset.content
            assert stale.headers["cache-control"] == "no-cache"


def test_query_parameters_are_ignored(client: httpx.Client) -> None:
    """Cache busters on / and on assets change nothing (no 400 as on /v1)."""
    page = client.get("/")
    assert client.get("/?v=2&utm=x").content == page.content
    url = asset_urls(page.text)["dashboard.css"]
    busted = client.get(f"{url}&again=1")
    assert busted.status_code == 200
    assert busted.headers["cache-control"] == IMMUTABLE


def test_the_meta_tag_says_whether_the_page_must_ask_for_a_key(
    client: httpx.Client, keyed_client: httpx.Client
) -> None:
    """content="none" without an API key, "key" with one; the page itself needs no key."""
    assert '<meta name="pixelmill-auth" content="none">' in client.get("/").text
    keyed = keyed_client.get("/")
    assert keyed.status_code == 200
    assert '<meta name="pixelmill-auth" content="key">' in keyed.text
    assert "{{auth}}" not in keyed.text
    for url in asset_urls(keyed.text).values():
        assert keyed_client.get(url).status_code == 200
    assert_error(keyed_client.get("/v1/presets"), 401, "unauthorized")


def test_an_unknown_asset_is_404_in_the_json_error_shape(client: httpx.Client) -> None:
    """Only the shipped files are served."""
    for path in ("/dashboard/nope.js", "/dashboard/index.html", "/dashboard/", "/dashboard"):
        assert_error(client.get(path), 404, "not_found")


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/../config.py",
        "/dashboard/%2e%2e/config.py",
        "/dashboard/%2e%2e%2fconfig.py",
        "/dashboard/..%2fconfig.py",
        "/dashboard/..%2f..%2fconfig.py",
        "/dashboard/%2e%2e%2f%2e%2e%2fconfig.py",
        "/dashboard/..%5cconfig.py",
        "/dashboard/%2fetc%2fpasswd",
        "/dashboard/../routes/dashboard.py",
    ],
)
def test_path_traversal_reaches_nothing(client: httpx.Client, path: str) -> None:
    """Dot segments, encoded or not, are 404: no path is ever joined to a folder."""
    status, body = raw_get(client, path)
    assert status == 404, body[:200]
    assert b'"not_found"' in body


def test_no_shipped_file_loads_anything_from_another_host() -> None:
    """No absolute http(s) URL (nor protocol-relative one) in any file of the page."""
    folder = resources.files("pixelmill.api") / "dashboard"
    names = [PAGE_FILE, *ASSET_TYPES]
    shipped = sorted(p.name for p in Path(str(folder)).iterdir())
    assert shipped == sorted(names)
    for name in names:
        text = folder.joinpath(name).read_text("utf-8")
        assert not re.search(r"https?://", text, re.IGNORECASE), name
        assert not re.search(r"""(src|href)\s*=\s*["']//""", text), name
        assert "@import" not in text, name


def test_the_openapi_document_does_not_list_the_page(client: httpx.Client) -> None:
    """The dashboard's routes stay out of the pinned operation set."""
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths
    assert not [path for path in paths if path.startswith("/dashboard")]


def test_the_page_and_its_files_are_small(client: httpx.Client) -> None:
    """Everything a first visit downloads, as served: under 100 KB (docs/dashboard.md)."""
    page = client.get("/")
    total = len(page.content)
    for url in asset_urls(page.text).values():
        total += len(client.get(url).content)
    assert 0 < total < 100_000, total
