"""Judge one outcome against a corpus row's ``expected`` value (see corpus/README.md).

Dependency-free so every layer's corpus test (core, engine, CLI, API) can reuse it:

    problem = check_outcome(row, ok=False, error_code="corrupt_image")
    assert problem is None, problem
"""

from __future__ import annotations

# The codes a bad image may cleanly end with. `internal` is a bug, `worker_crashed` a crash,
# `timeout` a hang cut short, `cancelled` not an outcome of the image at all.
CLEAN_REJECT_CODES = frozenset(
    {"unsupported_format", "corrupt_image", "too_many_pixels", "file_too_large"}
)


def check_outcome(row: dict[str, str], ok: bool, error_code: str | None) -> str | None:
    """A description of how the outcome breaks the row's ``expected`` value, or None if it fits.

    ``ok`` is whether the image was rendered; ``error_code`` is the failure's code (None when ok).
    """
    path = row.get("path", "?")
    expected = row.get("expected", "").strip()
    if ok and error_code is not None:
        return f"{path}: inconsistent outcome, ok with error code {error_code!r}"
    if not ok and not error_code:
        return f"{path}: failed without an error code"
    outcome = "rendered" if ok else f"failed with {error_code!r}"

    if expected.startswith("n/a"):  # the licence notice: a text file among the photos
        wanted = {"unsupported_format"}
        return None if error_code in wanted else f"{path}: expected unsupported_format, {outcome}"
    if expected == "reject_by_pixel_limit":
        if error_code == "too_many_pixels":
            return None
        return f"{path}: a decompression bomb must fail too_many_pixels, {outcome}"
    if expected.startswith("reject_by_frame_or_time_limit"):
        if ok or error_code in CLEAN_REJECT_CODES | {"timeout"}:
            return None
        return f"{path}: a frame flood must render its first frame or be refused, {outcome}"
    if expected == "reject":
        if error_code in CLEAN_REJECT_CODES:
            return None
        return f"{path}: must be rejected with a clean error, {outcome}"
    if expected == "decode_or_clean_reject" or expected.startswith("no_crash"):
        if ok or error_code in CLEAN_REJECT_CODES:
            return None
        return f"{path}: must render or be rejected cleanly, {outcome}"
    if expected.startswith("decode"):  # also HEIC and the metadata-payload images
        return None if ok else f"{path}: must render, {outcome}"
    return f"{path}: unknown expected value {expected!r}"
