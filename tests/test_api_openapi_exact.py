"""The OpenAPI document says exactly what the service takes: callback URLs, signed URLs,
listing cursors, and every status an operation can answer.

Against a real uvicorn with an API key: the document is read from ``/openapi.json``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from api_helpers import assert_error, small_jpeg
from api_server import running_in_thread
from pixelmill.api.app import create_app
from pixelmill.config import Settings

API_KEY = "openapi-exact-key-0123"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("openapi-exact"),
        store="sqlite",
        workers=1,
        api_key=API_KEY,
    )
    with running_in_thread(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def document(base_url: str) -> dict[str, Any]:
    schema: dict[str, Any] = httpx.get(f"{base_url}/openapi.json", timeout=30).json()
    return schema


@pytest.fixture(scope="module")
def rendered(base_url: str) -> dict[str, Any]:
    """A finished image's record, its rendition paths signed as the API hands them out."""
    files = {"file": ("seed.jpg", small_jpeg(31))}
    answer = httpx.post(f"{base_url}/v1/images?wait=true", files=files, headers=AUTH, timeout=60)
    assert answer.status_code == 200, answer.text
    record: dict[str, Any] = answer.json()
    return record


def parameter(operation: dict[str, Any], name: str) -> dict[str, Any] | None:
    found = [p for p in operation.get("parameters", []) if p["name"] == name]
    return found[0] if found else None


def test_callback_url_is_documented_as_an_absolute_http_url(
    base_url: str, document: dict[str, Any]
) -> None:
    """The service refuses a callback_url that is not an absolute http(s) URL (400): the
    document says which strings it takes, not any string."""
    form = document["paths"]["/v1/batches"]["post"]["requestBody"]["content"]
    field = form["multipart/form-data"]["schema"]["properties"]["callback_url"]
    assert field["format"] == "uri"
    pattern = re.compile(field["pattern"])
    for taken in ("https://hooks.example.com/pixelmill", "http://127.0.0.1:8080/x?y=1#z"):
        assert pattern.search(taken), taken
    refused = ("ftp://hooks.example.com/", "/relative/path", "hooks.example.com", "http://")
    for url in refused:
        assert not pattern.search(url), url
        files = [("files", ("a.jpg", small_jpeg(1)))]
        answer = httpx.post(
            f"{base_url}/v1/batches", files=files, data={"callback_url": url}, headers=AUTH
        )
        assert_error(answer, 400, "invalid_request")


def test_every_get_and_head_of_v1_takes_the_signed_url_parameters(
    document: dict[str, Any],
) -> None:
    """A signed URL (``?expires=&sig=``) authorises a GET or HEAD with no header: those
    operations list both parameters, optional; no other operation does."""
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            expires, sig = parameter(operation, "expires"), parameter(operation, "sig")
            if path.startswith("/v1/") and method in ("get", "head"):
                assert expires is not None and sig is not None, (method, path)
                assert (expires["in"], expires["required"]) == ("query", False)
                assert expires["schema"]["type"] == "integer"
                assert (sig["in"], sig["required"]) == ("query", False)
                assert sig["schema"]["pattern"] == "^[0-9a-f]{64}$"
            else:
                assert expires is None and sig is None, (method, path)
            if path.startswith("/v1/"):
                assert operation["security"] == [{"bearer": []}, {}], (method, path)
    bearer = document["components"]["securitySchemes"]["bearer"]
    assert "`expires`" in bearer["description"] and "`sig`" in bearer["description"]


def test_a_signed_url_fits_the_documented_parameters(
    base_url: str, document: dict[str, Any], rendered: dict[str, Any]
) -> None:
    """The signed paths the service hands out are what the document describes, and open
    the rendition without a header."""
    operation = document["paths"]["/v1/images/{sha256}/{filename}"]["get"]
    sig_pattern = re.compile(operation_schema(operation, "sig")["pattern"])
    path, _, query = rendered["renditions"][0]["path"].partition("?")
    fields = dict(item.split("=") for item in query.split("&"))
    assert set(fields) == {"expires", "sig"}
    assert fields["expires"].isascii() and fields["expires"].isdigit()
    assert sig_pattern.fullmatch(fields["sig"])
    assert httpx.get(f"{base_url}{path}?{query}", timeout=30).status_code == 200
    assert httpx.get(f"{base_url}{path}", timeout=30).status_code == 401


def operation_schema(operation: dict[str, Any], name: str) -> dict[str, Any]:
    found = parameter(operation, name)
    assert found is not None, name
    schema: dict[str, Any] = found["schema"]
    return schema


def test_a_waited_upload_lists_404(document: dict[str, Any]) -> None:
    """``?wait=true`` answers 404 when its batch is deleted during the wait."""
    responses = document["paths"]["/v1/images"]["post"]["responses"]
    assert "404" in responses
    assert responses["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }


def test_the_cursor_pattern_takes_ascii_digits_only(
    base_url: str, document: dict[str, Any], rendered: dict[str, Any]
) -> None:
    """``\\d`` is any script's digit to most regex engines: the pattern says ``[0-9]``, and
    the cursors the service hands out fit it."""
    cursor = operation_schema(document["paths"]["/v1/batches"]["get"], "cursor")
    pattern = cursor.get("pattern") or next(
        option["pattern"] for option in cursor["anyOf"] if "pattern" in option
    )
    assert "\\d" not in pattern
    second = {"file": ("second.jpg", small_jpeg(32))}
    made = httpx.post(f"{base_url}/v1/images", files=second, headers=AUTH, timeout=60)
    assert made.status_code == 202, made.text
    page = httpx.get(f"{base_url}/v1/batches", params={"limit": 1}, headers=AUTH).json()
    assert re.fullmatch(pattern, page["next_cursor"]), page
    assert not re.fullmatch(pattern, "\u0662\u0660\u0662\u0666" + page["next_cursor"][4:])


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("expires", "true"),
        ("expires", "-1"),
        ("expires", "\u0661\u0662\u0663"),
        ("expires", "1" * 13),
        ("sig", "ab"),
        ("sig", "AB" * 32),
        ("sig", "g" * 64),
    ],
)
def test_a_signed_url_parameter_of_another_shape_is_400_even_with_the_key(
    base_url: str, rendered: dict[str, Any], name: str, value: str
) -> None:
    """The document types ``expires`` and ``sig``: a value it does not allow is refused,
    not ignored because the header already authorised the request."""
    params = {"expires": "1700000000", "sig": "0" * 64, name: value}
    for path in (f"/v1/images/{rendered['sha256']}", f"/v1/batches/{rendered['batch_id']}"):
        answer = httpx.get(f"{base_url}{path}", params=params, headers=AUTH, timeout=30)
        assert_error(answer, 400, "invalid_request")
        assert repr(name) in answer.json()["error"]["message"]
    well_formed = {"expires": "1700000000", "sig": "0" * 64}
    answer = httpx.get(f"{base_url}/v1/batches", params=well_formed, headers=AUTH, timeout=30)
    assert answer.status_code == 200, answer.text
