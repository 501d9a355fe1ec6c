"""One contract, two siblings: the folder storage and the S3 storage (a real SeaweedFS).

Every test runs against both, through ``run_render_task`` as the engines call it, and looks
at what is really stored (the folder's files, the bucket's keys).
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import shutil
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from pixelmill.config import ConfigError, Settings
from pixelmill.core.render import render_renditions
from pixelmill.core.specs import OutputFormat, Preset, RenderSpec
from pixelmill.engine import task as task_module
from pixelmill.engine.task import RenderTask, TaskResult, run_render_task
from pixelmill.errors import ErrorCode
from pixelmill.storage import FolderStorage, Storage, StorageUnavailable, open_storage
from pixelmill.storage.s3 import S3Storage
from s3_server import REGION, S3Server

PRESETS = (Preset("small", 160, 160), Preset("big", 400, 400))
SPEC = RenderSpec(presets=PRESETS, formats=(OutputFormat.JPEG, OutputFormat.WEBP))
PREFIX = "pm/test"


class Sibling:
    """A storage under test and a way to see what it really holds."""

    def __init__(self, storage: Storage, data_dir: Path, server: S3Server | None = None) -> None:
        self.storage = storage
        self.data_dir = data_dir
        self.server = server

    def stored(self, sha256: str) -> set[str]:
        """File names stored for the image (in its folder, or under its key prefix)."""
        if self.server is None:
            assert isinstance(self.storage, FolderStorage)
            folder = self.storage.image_dir(sha256)
            return {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        assert isinstance(self.storage, S3Storage)
        prefix = f"{PREFIX}/renditions/{sha256[:2]}/{sha256}/"
        return {key.removeprefix(prefix) for key in self.server.keys(self.storage.bucket, prefix)}

    def scratch_files(self) -> list[Path]:
        """Files a render left outside the storage (S3: the scratch folders)."""
        scratch = self.data_dir / "tmp"
        return [p for p in scratch.rglob("*") if p.is_file()] if scratch.exists() else []


@pytest.fixture(params=["folder", "s3"])
def sibling(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sibling]:
    data_dir = tmp_path / "data"
    if request.param == "folder":
        yield Sibling(FolderStorage(data_dir), data_dir)
        return
    server: S3Server = request.getfixturevalue("s3_server")
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    env = server.env(server.new_bucket(), PREFIX)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(data_dir=data_dir, storage=env["PIXELMILL_STORAGE"],
                        s3_endpoint_url=server.endpoint_url)  # fmt: skip
    yield Sibling(open_storage(settings), data_dir, server)


def photo(folder: Path, seed: int = 0, size: tuple[int, int] = (640, 480)) -> tuple[Path, str]:
    image = Image.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, 120))
    for x in range(0, size[0], 16):
        image.paste((x % 256, seed % 256, 255 - x % 256), (x, 0, x + 8, size[1]))
    path = folder / f"photo{seed}.jpg"
    image.save(path, "JPEG", quality=90)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def render(
    storage: Storage,
    source: Path,
    sha256: str,
    spec: RenderSpec = SPEC,
    only: set[str] | None = None,
) -> TaskResult:
    task = RenderTask("job", str(source), sha256, storage, spec, frozenset(only) if only else None)
    return run_render_task(task)


def test_publish_then_read(sibling: Sibling, tmp_path: Path) -> None:
    storage = sibling.storage
    source, sha = photo(tmp_path)
    assert storage.read_manifest(sha) is None
    assert storage.missing_renditions(sha, SPEC) == set(SPEC.rendition_names())
    result = render(storage, source, sha)
    assert result.error_code is None, result.error_message
    names = set(SPEC.rendition_names())
    assert sibling.stored(sha) == names | {"manifest.json"}
    manifest = storage.read_manifest(sha)
    assert manifest is not None and {r["path"] for r in manifest["renditions"]} == names
    assert storage.missing_renditions(sha, SPEC) == set()
    assert all(storage.has_rendition(sha, name) for name in names)
    assert not storage.has_rendition(sha, "huge.jpg")
    for rendition in manifest["renditions"]:
        stored = storage.open_rendition(sha, rendition["path"])
        assert stored is not None and stored.size == rendition["bytes"]
        assert stored.etag.startswith('"') and stored.etag.endswith('"')
        body = b"".join(stored.read())
        assert len(body) == stored.size
        assert Image.open(io.BytesIO(body)).size == (rendition["width"], rendition["height"])
    assert sibling.scratch_files() == [], "the render left scratch files behind"


@pytest.mark.parametrize("sibling", ["s3"], indirect=True)
def test_s3_objects_carry_their_content_type_and_caching(sibling: Sibling, tmp_path: Path) -> None:
    assert isinstance(sibling.storage, S3Storage) and sibling.server is not None
    source, sha = photo(tmp_path)
    assert render(sibling.storage, source, sha).error_code is None
    client = sibling.server.client()
    folder = f"{PREFIX}/renditions/{sha[:2]}/{sha}/"
    expected = {"small.jpg": "image/jpeg", "big.webp": "image/webp"}
    for name, media_type in expected.items():
        head = client.head_object(Bucket=sibling.storage.bucket, Key=folder + name)
        assert head["ContentType"] == media_type
        assert head["CacheControl"] == "public, max-age=31536000, immutable"
    head = client.head_object(Bucket=sibling.storage.bucket, Key=folder + "manifest.json")
    assert head["ContentType"] == "application/json"


def test_a_run_stopped_between_renditions_leaves_nothing_unlisted(
    sibling: Sibling, tmp_path: Path
) -> None:
    storage = sibling.storage
    source, sha = photo(tmp_path)
    first = RenderSpec(presets=PRESETS, formats=(OutputFormat.JPEG,))
    assert render(storage, source, sha, first).error_code is None
    checks = 0

    def cancel_at_the_third_check() -> bool:
        nonlocal checks
        checks += 1
        return checks >= 3  # before it starts, before the first preset, then stop

    task_module.set_cancel_check(cancel_at_the_third_check)
    try:
        cancelled = render(storage, source, sha, SPEC, only={"small.webp", "big.webp"})
    finally:
        task_module.set_cancel_check(None)
    assert cancelled.error_code is ErrorCode.CANCELLED
    assert sibling.stored(sha) == {"small.jpg", "big.jpg", "manifest.json"}
    assert storage.missing_renditions(sha, SPEC) == {"small.webp", "big.webp"}
    assert sibling.scratch_files() == []


def test_a_process_killed_before_the_manifest_is_cleaned_up_by_discard_unlisted(
    sibling: Sibling, tmp_path: Path
) -> None:
    """What a SIGKILLed worker leaves (renditions published, no manifest) is what the engine
    then removes with ``discard_unlisted``; nothing unlisted stays, nothing listed goes."""
    storage = sibling.storage
    source, sha = photo(tmp_path)
    first = RenderSpec(presets=PRESETS, formats=(OutputFormat.JPEG,))
    assert render(storage, source, sha, first).error_code is None
    folder = storage.local_dir(sha)
    webp = ["small.webp", "big.webp"]
    render_renditions(str(source), folder, SPEC, sha, only=frozenset(webp))
    if sibling.server is not None:  # a folder has them in place already
        with pytest.raises(FileNotFoundError):  # the renditions went out, the manifest never
            storage.publish(sha, folder, webp)
    assert sibling.stored(sha) == {"small.jpg", "big.jpg", "manifest.json", *webp}
    assert storage.open_rendition(sha, "small.webp") is None, "served although unlisted"
    assert storage.discard_unlisted(sha, [*webp, "small.jpg"]) >= 2
    assert sibling.stored(sha) == {"small.jpg", "big.jpg", "manifest.json"}
    assert sibling.scratch_files() == []
    assert storage.discard_unlisted(sha, webp) == 0
    never_rendered = hashlib.sha256(b"nothing").hexdigest()
    assert storage.discard_unlisted(never_rendered, webp) == 0


def test_a_preset_change_renders_only_what_changed_and_keeps_the_rest(
    sibling: Sibling, tmp_path: Path
) -> None:
    storage = sibling.storage
    source, sha = photo(tmp_path)
    assert render(storage, source, sha).error_code is None
    changed = RenderSpec(presets=(PRESETS[0], Preset("big", 300, 300)), formats=SPEC.formats)
    missing = storage.missing_renditions(sha, changed)
    assert missing == {"big.jpg", "big.webp"}
    again = render(storage, source, sha, changed, only=set(missing))
    assert again.error_code is None and again.result is not None
    manifest = storage.read_manifest(sha)
    assert manifest is not None
    sizes = {r["path"]: (r["width"], r["height"]) for r in manifest["renditions"]}
    assert set(sizes) == set(SPEC.rendition_names())
    assert sizes["big.jpg"] == (300, 225) and sizes["small.jpg"] == (160, 120)
    assert storage.missing_renditions(sha, changed) == set()
    stored = storage.open_rendition(sha, "big.jpg")
    assert stored is not None
    assert Image.open(io.BytesIO(b"".join(stored.read()))).size == (300, 225)


def test_originals_put_fetch_delete(sibling: Sibling, tmp_path: Path) -> None:
    storage = sibling.storage
    source, sha = photo(tmp_path)
    dest = tmp_path / "fetched" / "original"
    assert storage.fetch_original(sha, dest) is False and not dest.exists()
    storage.put_original(sha, source)
    assert storage.fetch_original(sha, dest) is True
    assert dest.read_bytes() == source.read_bytes()
    storage.delete_original(sha)
    storage.delete_original(sha)  # gone already: no error
    assert storage.fetch_original(sha, tmp_path / "again") is False


def test_open_rendition_reads_ranges_and_only_what_is_listed(
    sibling: Sibling, tmp_path: Path
) -> None:
    storage = sibling.storage
    source, sha = photo(tmp_path)
    assert render(storage, source, sha).error_code is None
    stored = storage.open_rendition(sha, "big.jpg")
    assert stored is not None
    whole = b"".join(stored.read())
    assert b"".join(stored.read(0, 9)) == whole[:10]
    assert b"".join(stored.read(100, 199)) == whole[100:200]
    assert b"".join(stored.read(stored.size - 7)) == whole[-7:]
    for name in ("manifest.json", "huge.jpg", "../big.jpg", ".pixelmill-tmp-x", "big.jpg/x"):
        assert storage.open_rendition(sha, name) is None, name
    assert storage.open_rendition(hashlib.sha256(b"other").hexdigest(), "big.jpg") is None


def test_the_storage_travels_into_a_spawned_process(sibling: Sibling, tmp_path: Path) -> None:
    """Pickled with the task into a fresh interpreter (as a Celery or pool worker gets it)."""
    source, sha = photo(tmp_path)
    task = RenderTask("job", str(source), sha, sibling.storage, SPEC, None)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        result = pool.submit(run_render_task, task).result(timeout=60)
    assert result.error_code is None, result.error_message
    assert sibling.stored(sha) == set(SPEC.rendition_names()) | {"manifest.json"}
    assert sibling.scratch_files() == []


def test_sweep_removes_scratch_folders_of_dead_processes_only(
    sibling: Sibling, tmp_path: Path
) -> None:
    storage = sibling.storage
    _, sha = photo(tmp_path)
    if sibling.server is None:
        folder = storage.local_dir(sha)
        folder.mkdir(parents=True)
        (folder / ".pixelmill-tmp-half").write_bytes(b"x")
        assert storage.sweep_temp_files() == 1
        return
    scratch = sibling.data_dir / "tmp" / "s3"
    dead, alive = scratch / f"{sha}-999999999", scratch / f"{sha}-1"  # pid 1 is always there
    for folder in (dead, alive):
        folder.mkdir(parents=True)
        (folder / "small.jpg").write_bytes(b"x")
    assert storage.sweep_temp_files() == 1
    assert not dead.exists() and alive.exists()
    shutil.rmtree(alive)


def test_s3_check_names_a_missing_bucket_and_a_dead_endpoint(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.env("unused").items():
        monkeypatch.setenv(name, value)
    missing = S3Storage("no-such-bucket-here", "", scratch_root=tmp_path,
                        endpoint_url=s3_server.endpoint_url, region=REGION)  # fmt: skip
    with pytest.raises(StorageUnavailable, match="bucket 'no-such-bucket-here' does not exist"):
        missing.check()
    from api_server import free_port

    dead = S3Storage("pm-bucket", "", scratch_root=tmp_path,
                     endpoint_url=f"http://127.0.0.1:{free_port()}", region=REGION)  # fmt: skip
    with pytest.raises(StorageUnavailable) as raised:
        dead.check()
    assert "\n" not in raised.value.message and "pm-bucket" in raised.value.message
    with pytest.raises(StorageUnavailable):
        dead.read_manifest(hashlib.sha256(b"x").hexdigest())


def test_open_storage_reads_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    folder = open_storage(Settings(data_dir=data))
    assert isinstance(folder, FolderStorage) and folder.root == data.resolve()
    other = open_storage(Settings(data_dir=data, storage=f"file://{tmp_path / 'elsewhere'}"))
    assert isinstance(other, FolderStorage) and other.root == tmp_path / "elsewhere"
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    s3 = open_storage(Settings(data_dir=data, storage="s3://my-bucket/a/b"))
    assert isinstance(s3, S3Storage)
    assert (s3.bucket, s3.prefix, s3.region) == ("my-bucket", "a/b", "us-east-1")
    assert s3.scratch_root == data.resolve() / "tmp" / "s3"
    public = open_storage(
        Settings(data_dir=data, storage="s3://my-bucket/a", storage_public_url="https://cdn.x/")
    )
    sha = "ab" * 32
    assert public.public_url(sha, "big.jpg") == f"https://cdn.x/a/renditions/ab/{sha}/big.jpg"
    monkeypatch.setitem(sys.modules, "boto3", None)  # as if the s3 extra were not installed
    with pytest.raises(ConfigError, match=r"needs the s3 extra: pip install 'pixelmill\[s3\]'"):
        open_storage(Settings(data_dir=data, storage="s3://my-bucket"))


def test_delete_image_erases_renditions_and_manifest_of_that_image_only(
    sibling: Sibling, tmp_path: Path
) -> None:
    storage = sibling.storage
    source, sha = photo(tmp_path, seed=1)
    other_source, other_sha = photo(tmp_path, seed=2)
    assert render(storage, source, sha).error_code is None
    assert render(storage, other_source, other_sha).error_code is None
    storage.put_original(sha, source)
    assert storage.delete_image(sha) is True
    assert sibling.stored(sha) == set(), "files or objects left behind"
    assert storage.read_manifest(sha) is None
    assert storage.open_rendition(sha, "small.jpg") is None
    assert storage.missing_renditions(sha, SPEC) == set(SPEC.rendition_names())
    assert storage.delete_image(sha) is False, "nothing left to erase"
    assert sibling.stored(other_sha) == set(SPEC.rendition_names()) | {"manifest.json"}
    assert storage.fetch_original(sha, tmp_path / "kept"), "the distributed spool is not ours"
    # The same bytes render anew, every rendition of them.
    result = render(storage, source, sha)
    assert result.error_code is None and result.result is not None
    assert {r.filename for r in result.result.renditions} == set(SPEC.rendition_names())
    assert sibling.stored(sha) == set(SPEC.rendition_names()) | {"manifest.json"}


def test_delete_image_of_content_never_stored_is_false(sibling: Sibling) -> None:
    assert sibling.storage.delete_image("ab" * 32) is False
