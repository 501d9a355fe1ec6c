"""The OpenAPI document is exact, /docs works offline, unknown query parameters are 400.

Against a real uvicorn: the document is read from ``/openapi.json`` as a client reads it,
and schemathesis checks every operation's answers against it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from api_helpers import assert_error, small_jpeg, wait_for_empty_spool
from api_server import running_in_thread
from pixelmill.api.app import create_app
from pixelmill.config import Settings
from pixelmill.core.specs import OutputFormat
from pixelmill.errors import ErrorCode
from pixelmill.states import BatchStatus, ImageStatus

# Every operation of the API, by its short and stable id (DESIGN.md).
OPERATION_IDS = {
    "create_batch",
    "get_batch",
    "list_batches",
    "batch_events",
    "cancel_batch",
    "delete_batch",
    "create_image",
    "get_manifest",
    "head_manifest",
    "get_rendition",
    "head_rendition",
    "delete_image",
    "list_presets",
    "healthz",
    "metrics",
}
# The operations that ignore query parameters they do not know (cache busters).
LENIENT = {"get_manifest", "head_manifest", "get_rendition", "head_rendition", "metrics"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("openapi-data")


@pytest.fixture(scope="module")
def base_url(data_dir: Path) -> Iterator[str]:
    settings = Settings(
        data_dir=data_dir,
        store="sqlite",
        workers=1,
        max_upload_bytes=4 * 1024 * 1024,
        max_batch_bytes=12 * 1024 * 1024,
        client_timeout_s=2.0,
    )
    with running_in_thread(create_app(settings)) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def document(base_url: str) -> dict[str, Any]:
    schema: dict[str, Any] = httpx.get(f"{base_url}/openapi.json", timeout=30).json()
    return schema


@pytest.fixture(scope="module")
def rendered(base_url: str) -> dict[str, Any]:
    """A finished image: its record (``sha256``, ``renditions``) and its ``batch_id``."""
    files = {"file": ("seed.jpg", small_jpeg(4242))}
    response = httpx.post(f"{base_url}/v1/images?wait=true", files=files, timeout=60)
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    assert record["status"] == "done", record
    return record


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) for every operation of the document."""
    for path, by_method in document["paths"].items():
        for method, operation in by_method.items():
            yield method, path, operation


def test_the_operation_ids_are_exactly_the_documented_ones(document: dict[str, Any]) -> None:
    """Short, stable ids for every operation (HEAD included), and no other."""
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids)), ids
    assert set(ids) == OPERATION_IDS


def test_no_422_and_no_fastapi_validation_shapes(document: dict[str, Any]) -> None:
    """Refused requests are 400 in the service's error shape, never FastAPI's 422."""
    text = json.dumps(document)
    assert '"422"' not in text
    assert "HTTPValidationError" not in text and '"ValidationError"' not in text
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if method == "head" or not status.startswith(("4", "5")):
                continue
            body = "Health" if (path, status) == ("/healthz", "503") else "ErrorBody"
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": f"#/components/schemas/{body}"}, (path, status)


def test_every_operation_that_refuses_unknown_query_parameters_lists_400(
    document: dict[str, Any],
) -> None:
    for _, path, operation in operations(document):
        lists_400 = "400" in operation["responses"]
        if operation["operationId"] == "metrics":
            assert not lists_400, path  # it never answers 400
        else:  # manifests too: a malformed signed URL's parameter is 400
            assert lists_400, path


def test_status_fields_and_codes_are_enums(document: dict[str, Any]) -> None:
    """Every enum of the document is the service's own list, value for value."""
    components = document["components"]["schemas"]
    assert components["BatchStatus"]["enum"] == [s.value for s in BatchStatus]
    assert components["ImageStatus"]["enum"] == [s.value for s in ImageStatus]
    assert components["ErrorCode"]["enum"] == [c.value for c in ErrorCode]
    assert components["OutputFormat"]["enum"] == ["jpeg", "webp", "avif", "png"]
    assert [f.value for f in OutputFormat] == ["jpeg", "webp", "avif", "png"]
    rendition_format = components["RenditionOut"]["properties"]["format"]
    assert rendition_format == {"$ref": "#/components/schemas/OutputFormat"}
    health = components["Health"]["properties"]
    assert health["status"]["enum"] == ["ok", "unavailable"]
    assert components["ErrorDetail"]["properties"]["code"] == {
        "$ref": "#/components/schemas/ErrorCode"
    }


def test_every_body_has_a_schema(document: dict[str, Any]) -> None:
    """No answer with a body is left as ``{}``: JSON has a model, files and streams a type."""
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if method == "head":
                assert "content" not in response, (path, status)
            for media_type, content in response.get("content", {}).items():
                assert content.get("schema"), (method, path, status, media_type)


def test_the_manifest_and_the_renditions_are_described(document: dict[str, Any]) -> None:
    paths = document["paths"]
    manifest = paths["/v1/images/{sha256}"]["get"]["responses"]["200"]["content"]
    assert manifest["application/json"]["schema"] == {"$ref": "#/components/schemas/Manifest"}
    fields = document["components"]["schemas"]["Manifest"]["properties"]
    assert set(fields) >= {"sha256", "manifest_version", "source", "placeholder", "renditions"}
    rendition = paths["/v1/images/{sha256}/{filename}"]["get"]["responses"]
    assert set(rendition["200"]["content"]) == {"image/jpeg", "image/webp", "image/avif",
                                                "image/png"}  # fmt: skip
    assert {"206", "304", "416"} <= set(rendition)
    assert "multipart/byteranges" in rendition["206"]["content"]
    events = paths["/v1/batches/{batch_id}/events"]["get"]["responses"]["200"]
    assert set(events["content"]) == {"text/event-stream"}
    event = events["content"]["text/event-stream"]["schema"]
    assert set(event["properties"]["event"]["enum"]) == {"progress", "image", "done", "error"}
    data_schemas = {
        variant["properties"]["event"]["const"]: variant["properties"]["data"]["contentSchema"]
        for variant in event["oneOf"]
    }
    assert data_schemas["image"] == {"$ref": "#/components/schemas/ImageOut"}
    assert data_schemas["done"] == {"$ref": "#/components/schemas/BatchOut"}
    for event in ("event: progress", "event: image", "event: done"):
        assert event in events["description"]
    metrics = paths["/metrics"]["get"]["responses"]["200"]["content"]
    assert [media_type.split(";")[0] for media_type in metrics] == ["text/plain"]
    healthz = paths["/healthz"]["get"]["responses"]
    for status in ("200", "503"):
        schema = healthz[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Health"}


def test_bearer_auth_is_a_security_scheme_on_v1(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearer"]["description"],
    }
    for _, path, operation in operations(document):
        if path.startswith("/v1/"):
            assert {"bearer": []} in operation["security"], path
        else:
            assert "security" not in operation, path


def test_the_batch_upload_form_is_exact(document: dict[str, Any]) -> None:
    create = document["paths"]["/v1/batches"]["post"]
    assert {"400", "401", "408", "413", "507"} <= set(create["responses"])
    form = create["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["additionalProperties"] is False and form["properties"]["files"]["minItems"] == 1


# -- /docs with no internet ------------------------------------------------------------------


class _References(HTMLParser):
    """Every URL an HTML page loads or links to (src, href; ReDoc's spec-url)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = ("src", "href", "spec-url")
        self.urls += [value for name, value in attrs if name in names and value]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_everything_from_the_service(client: httpx.Client, page: str) -> None:
    """No CDN: every file the page references is served by the service itself."""
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    references = _References()
    references.feed(response.text)
    assert references.urls, response.text
    own = urlsplit(str(client.base_url))
    for url in references.urls:
        absolute = urlsplit(urljoin(f"{client.base_url}{page}", url))
        assert (absolute.scheme, absolute.netloc) == (own.scheme, own.netloc), url
        loaded = client.get(absolute.path)
        assert loaded.status_code == 200, url
        assert loaded.content, url
    # No other host named anywhere in the page (a script's URL, a validator badge).
    for scheme in ("http://", "https://", "//cdn", "//fonts"):
        assert scheme not in response.text, scheme
    assert "'/openapi.json'" in response.text or '"/openapi.json"' in response.text
    if page == "/docs":
        assert '"validatorUrl": null' in response.text


# -- unknown query parameters ---------------------------------------------------------------


def concrete_path(path: str, rendered: dict[str, Any]) -> str:
    """``path`` with its placeholders replaced by a real batch, image and rendition."""
    rendition = rendered["renditions"][0]["path"].rpartition("/")[2]
    return (
        path.replace("{batch_id}", rendered["batch_id"])
        .replace("{sha256}", rendered["sha256"])
        .replace("{filename}", rendition)
    )


def test_unknown_query_parameters_are_400_on_every_json_operation(
    client: httpx.Client, document: dict[str, Any], rendered: dict[str, Any]
) -> None:
    """Each operation but the lenient ones names the parameter it does not take; the
    request does nothing (a DELETE deletes nothing, an upload makes no batch)."""
    checked = set()
    for method, path, operation in operations(document):
        if operation["operationId"] in LENIENT:
            continue
        url = concrete_path(path, rendered)
        response = client.request(method.upper(), url, params={"wiat": "true"})
        assert_error(response, 400, "invalid_request")
        assert "'wiat'" in response.json()["error"]["message"], (method, path)
        checked.add(operation["operationId"])
    assert checked == {op["operationId"] for _, _, op in operations(document)} - LENIENT
    # Nothing was deleted or cancelled by a refused request.
    status = client.get(f"/v1/batches/{rendered['batch_id']}")
    assert status.status_code == 200 and status.json()["status"] == "completed"
    assert client.get(f"/v1/images/{rendered['sha256']}").status_code == 200


def test_a_known_query_parameter_given_twice_is_400(client: httpx.Client) -> None:
    files = {"file": ("twice.jpg", small_jpeg(77))}
    response = client.post("/v1/images?wait=true&wait=false", files=files)
    assert_error(response, 400, "invalid_request")
    assert "'wait'" in response.json()["error"]["message"]


def test_an_upload_field_sent_as_a_query_parameter_gets_a_hint(client: httpx.Client) -> None:
    response = client.post("/v1/batches?presets=thumbnail", files={"files": ("a.jpg", b"x")})
    assert_error(response, 400, "invalid_request")
    assert "form field" in response.json()["error"]["message"]
    response = client.get("/v1/presets", params={"v": "2"})
    assert "takes none" in response.json()["error"]["message"]


def test_known_and_signature_parameters_are_taken(
    client: httpx.Client, rendered: dict[str, Any]
) -> None:
    """``expires`` and ``sig`` (signed URLs) are never unknown; declared ones still work."""
    batch = f"/v1/batches/{rendered['batch_id']}"
    assert client.get(batch, params={"expires": "1", "sig": "ab" * 32}).status_code == 200
    files = {"file": ("known.jpg", small_jpeg(78))}
    response = client.post("/v1/images", params={"wait": "true", "timeout": "60"}, files=files)
    assert response.status_code == 200, response.text


def test_a_refused_upload_is_answered_while_its_body_is_still_coming(
    client: httpx.Client, data_dir: Path
) -> None:
    """The query string is checked before the body is read: the answer still arrives."""
    files = {"files": ("big.jpg", b"\xff\xd8\xff" + bytes(3 * 1024 * 1024))}
    response = client.post("/v1/batches", params={"callback": "x"}, files=files)
    assert_error(response, 400, "invalid_request")
    assert client.get("/healthz").status_code == 200
    wait_for_empty_spool(data_dir)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_cache_busters_are_ignored_on_manifests_and_renditions(
    client: httpx.Client, rendered: dict[str, Any], method: str
) -> None:
    manifest = f"/v1/images/{rendered['sha256']}"
    rendition = rendered["renditions"][0]["path"]
    for path in (manifest, rendition):
        plain = client.request(method, path)
        busted = client.request(method, path, params={"v": "1700000000", "_": ""})
        assert plain.status_code == busted.status_code == 200, busted.text
        assert busted.headers["etag"] == plain.headers["etag"]
        assert busted.content == plain.content
    assert client.get("/metrics", params={"name[]": "x"}).status_code == 200


# -- schemathesis: the service against its own document -------------------------------------

EXAMPLES_PER_OPERATION = 20
# A Range header is any string to the document: a malformed one (400) or one past the end of
# the file (416) is a well-formed request that a rendition route still refuses.
SCHEMATHESIS_CONFIG = """
[[operations]]
include-operation-id = ["get_rendition", "head_rendition"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "404", "416"]
"""
SCHEMA_BUDGET_S = 60.0


def own_schema(document: dict[str, Any], rendered: dict[str, Any]) -> dict[str, Any]:
    """The document for schemathesis: without ``callback_url`` (generated callbacks could
    point anywhere; the address policy is tested apart), and with the ids of a real batch
    and image as the only valid ones, so the 200s are checked too; the negative cases
    (any other id) bring the 404s."""
    schema = json.loads(json.dumps(document))
    body = schema["paths"]["/v1/batches"]["post"]["requestBody"]
    body["content"]["multipart/form-data"]["schema"]["properties"].pop("callback_url")
    real = {
        "batch_id": rendered["batch_id"],
        "sha256": rendered["sha256"],
        "filename": rendered["renditions"][0]["path"].rpartition("/")[2],
    }
    for _, _, operation in operations(schema):
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path" and parameter["name"] in real:
                parameter["schema"] = {"type": "string", "enum": [real[parameter["name"]]]}
    return schema


def check_operation(
    operation: Any, mode: Any, base_url: str, budget_s: float, called: set[str]
) -> str | None:
    """Up to EXAMPLES_PER_OPERATION cases of ``operation`` in ``mode`` (at least one, then
    while ``budget_s`` lasts); what failed, or None."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable

    deadline = time.monotonic() + budget_s

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        if operation.label in called and time.monotonic() > deadline:
            return
        called.add(operation.label)
        case.call_and_validate(base_url=base_url, timeout=30)

    try:
        check()
    except Unsatisfiable:
        return None  # nothing in this operation can be made invalid (no inputs)
    except Exception as exc:  # every failing operation is reported, not just the first
        return f"{operation.label} [{mode.value}]: {exc}"
    return None


def test_the_service_matches_its_own_openapi_document(
    base_url: str, data_dir: Path, document: dict[str, Any], rendered: dict[str, Any]
) -> None:
    """Positive and negative cases for every operation: no 5xx, and every status, header and
    body the service answers is one the document lists."""
    import schemathesis
    from schemathesis.generation import GenerationMode

    config = schemathesis.config.SchemathesisConfig.from_str(SCHEMATHESIS_CONFIG)
    schema = schemathesis.openapi.from_dict(own_schema(document, rendered), config=config)
    all_operations = [result.ok() for result in schema.get_all_operations()]
    assert len(all_operations) == len(list(operations(document)))
    modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    # Each operation and mode gets its share of the budget, so none is left out.
    share_s = SCHEMA_BUDGET_S / (len(modes) * len(all_operations))
    called: set[str] = set()
    failures = [
        check_operation(operation, mode, base_url, share_s, called)
        for operation in all_operations
        for mode in modes
    ]
    assert not any(failures), "\n\n".join(filter(None, failures))
    assert called == {operation.label for operation in all_operations}
    wait_for_empty_spool(data_dir)
