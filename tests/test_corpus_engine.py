"""The whole corpus through the real engine: every file's outcome meets its manifest row."""

from __future__ import annotations

import os
import tempfile
import threading
from collections import Counter
from pathlib import Path

import pytest

from corpus_expectations import check_outcome
from pixelmill.core.encode import TEMP_PREFIX
from pixelmill.engine.base import ImageOutcome
from pixelmill.runner import EngineOptions, render_paths
from pixelmill.states import ImageStatus
from pixelmill.storage import LocalStorage

pytestmark = [pytest.mark.corpus, pytest.mark.slow]

# Files of the corpus folder that are not images and so have no manifest row.
NOT_IMAGES = {"README.md", "manifest.csv", "manifest.json"}
RENDERED = (ImageStatus.DONE, ImageStatus.DUPLICATE)


def must_render(row: dict[str, str]) -> bool:
    """Rows ``check_outcome`` requires to render: ``decode``, not ``decode_or_clean_reject``."""
    expected = row["expected"].strip()
    return expected.startswith("decode") and expected != "decode_or_clean_reject"


@pytest.fixture(scope="module")
def corpus_run(
    corpus: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, ImageOutcome], Path, Path]:
    """One engine run over the corpus folder: outcomes by corpus-relative path, OUT, temp dir."""
    out = tmp_path_factory.mktemp("corpus-out")
    temp = tmp_path_factory.mktemp("corpus-temp")
    outcomes: list[ImageOutcome] = []
    lock = threading.Lock()

    def on_outcome(outcome: ImageOutcome) -> None:
        with lock:
            outcomes.append(outcome)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(temp))  # where the engine keeps its run folder
        render_paths([str(corpus)], out, on_outcome, options=EngineOptions(workers=2))
    by_path = {os.path.relpath(o.job.source, corpus): o for o in outcomes}
    assert len(by_path) == len(outcomes), "a file got two outcomes"
    return by_path, out, temp


def test_every_row_has_exactly_one_outcome(
    corpus_run: tuple[dict[str, ImageOutcome], Path, Path], corpus_rows: list[dict[str, str]]
) -> None:
    """The walk covers every manifest row once, and nothing but rows and the corpus notes."""
    by_path, _, _ = corpus_run
    assert set(by_path) == {row["path"] for row in corpus_rows} | NOT_IMAGES


def test_every_outcome_meets_its_row(
    corpus_run: tuple[dict[str, ImageOutcome], Path, Path], corpus_rows: list[dict[str, str]]
) -> None:
    """``check_outcome`` accepts every row's outcome through the engine."""
    by_path, _, _ = corpus_run
    problems = []
    for row in corpus_rows:
        outcome = by_path[row["path"]]
        code = outcome.error.code.value if outcome.error else None
        problem = check_outcome(row, outcome.status in RENDERED, code)
        if problem is not None:
            problems.append(problem)
    assert problems == []


def test_no_internal_error_crash_or_cancel(
    corpus_run: tuple[dict[str, ImageOutcome], Path, Path],
) -> None:
    """No file ends ``internal``, ``worker_crashed`` or cancelled; failures carry a code."""
    by_path, _, _ = corpus_run
    codes = Counter(o.error.code.value for o in by_path.values() if o.error is not None)
    assert codes["internal"] == 0 and codes["worker_crashed"] == 0, codes
    assert [p for p, o in by_path.items() if o.status is ImageStatus.CANCELLED] == []
    failed = [o for o in by_path.values() if o.status is ImageStatus.FAILED]
    assert all(o.error is not None and o.error.message for o in failed)


def test_files_that_are_not_images_fail_unsupported_format(
    corpus_run: tuple[dict[str, ImageOutcome], Path, Path],
) -> None:
    """The corpus's own README and manifests are refused as ``unsupported_format``."""
    by_path, _, _ = corpus_run
    for name in sorted(NOT_IMAGES):
        error = by_path[name].error
        assert error is not None and error.code.value == "unsupported_format", name


def test_decode_rows_render_once_per_content(
    corpus_run: tuple[dict[str, ImageOutcome], Path, Path], corpus_rows: list[dict[str, str]]
) -> None:
    """Every ``decode`` row renders: the first copy of each content done, later copies duplicate."""
    by_path, _, _ = corpus_run
    seen: set[str] = set()
    wrong = []
    for path in sorted(by_path, key=lambda p: int(by_path[p].job.job_id)):  # walk order
        row = next((r for r in corpus_rows if r["path"] == path), None)
        if row is None or not must_render(row):
            continue
        wanted = ImageStatus.DUPLICATE if row["sha256"] in seen else ImageStatus.DONE
        seen.add(row["sha256"])
        if by_path[path].status is not wanted:
            wrong.append(f"{path}: {by_path[path].status.value}, expected {wanted.value}")
    assert wrong == []
    assert len(seen) < sum(must_render(r) for r in corpus_rows)  # copies were there to find


def test_rendered_outcomes_point_at_complete_manifests(
    corpus_run: tuple[dict[str, ImageOutcome], Path, Path], corpus_rows: list[dict[str, str]]
) -> None:
    """A rendered row has its own SHA-256, a manifest on disk and six rendition files."""
    by_path, out, _ = corpus_run
    storage = LocalStorage(out)
    for row in corpus_rows:
        outcome = by_path[row["path"]]
        if outcome.status not in RENDERED:
            continue
        assert outcome.job.sha256 == row["sha256"], row["path"]
        manifest = storage.read_manifest(row["sha256"])
        assert manifest is not None, row["path"]
        assert outcome.result is not None and len(outcome.result.renditions) == 6
        folder = storage.image_dir(row["sha256"])
        assert all((folder / r.filename).is_file() for r in outcome.result.renditions)


def test_no_temp_files_remain(corpus_run: tuple[dict[str, ImageOutcome], Path, Path]) -> None:
    """No ``.pixelmill-tmp-*`` under OUT and no engine run folder in the temp directory."""
    _, out, temp = corpus_run
    assert list(out.rglob(f"{TEMP_PREFIX}*")) == []
    assert list(temp.rglob("engine-*")) == []
