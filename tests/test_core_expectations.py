"""check_outcome: the corpus vocabulary judged the way corpus/README.md defines it."""

from __future__ import annotations

import pytest

from corpus_expectations import check_outcome

OK = (True, None)


def _row(expected: str) -> dict[str, str]:
    return {"path": "some/file", "expected": expected}


@pytest.mark.parametrize(
    ("expected", "outcome", "fits"),
    [
        ("decode", OK, True),
        ("decode", (False, "corrupt_image"), False),
        ("decode (if HEIC supported; else clean reject)", OK, True),
        ("decode (if HEIC supported; else clean reject)", (False, "unsupported_format"), False),
        ("decode (metadata must be stripped on re-encode)", OK, True),
        ("reject", (False, "corrupt_image"), True),
        ("reject", (False, "unsupported_format"), True),
        ("reject", OK, False),
        ("reject", (False, "internal"), False),
        ("reject", (False, "worker_crashed"), False),
        ("reject_by_pixel_limit", (False, "too_many_pixels"), True),
        ("reject_by_pixel_limit", (False, "corrupt_image"), False),
        ("reject_by_pixel_limit", OK, False),
        ("decode_or_clean_reject", OK, True),
        ("decode_or_clean_reject", (False, "corrupt_image"), True),
        ("decode_or_clean_reject", (False, "internal"), False),
        ("no_crash (decode or clean error)", OK, True),
        ("no_crash (decode or clean error)", (False, "corrupt_image"), True),
        ("no_crash (decode or clean error)", (False, "timeout"), False),
        ("no_crash (reject preferred; tolerant decode acceptable)", (False, "internal"), False),
        ("reject_by_frame_or_time_limit (or decode first frame only)", OK, True),
        ("reject_by_frame_or_time_limit (or decode first frame only)", (False, "timeout"), True),
        ("reject_by_frame_or_time_limit (or decode first frame only)", (False, "internal"), False),
        ("n/a (licence notice, not an image)", (False, "unsupported_format"), True),
        ("n/a (licence notice, not an image)", (False, "corrupt_image"), False),
        ("n/a (licence notice, not an image)", OK, False),
        ("something new", OK, False),
    ],
)
def test_outcome_against_expected(
    expected: str, outcome: tuple[bool, str | None], fits: bool
) -> None:
    """Each expected value accepts exactly the outcomes corpus/README.md allows."""
    problem = check_outcome(_row(expected), *outcome)
    assert (problem is None) == fits, problem
    if problem is not None:
        assert "some/file" in problem


def test_inconsistent_outcomes_are_reported() -> None:
    """ok with an error code, or a failure without one, is itself a problem."""
    assert check_outcome(_row("decode"), True, "corrupt_image") is not None
    assert check_outcome(_row("reject"), False, None) is not None
