"""The one-line form of medssl's errors, as the bundles' exception hook prints it."""

from __future__ import annotations

from medssl.errors import DataError, clear_error, one_line


def test_one_line_of_a_data_error():
    assert one_line(DataError("/d/scan.nii.gz", "image holds 1 NaN")) == "DataError: /d/scan.nii.gz: image holds 1 NaN"


def test_one_line_of_a_worker_error_is_the_workers_message():
    """A DataLoader worker's error arrives with the worker's traceback as its message (one argument)."""
    message = (
        "Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    raise DataError(p, "bad")\n'
        "medssl.errors.DataError: /d/scan.nii.gz: image holds 1 NaN\n"
    )
    assert one_line(DataError(message)) == "DataError: /d/scan.nii.gz: image holds 1 NaN"


def test_clear_error_finds_medssls_error_under_monais_wrapper():
    inner = DataError("/d/dl.json", "names a missing file")
    try:
        try:
            raise inner
        except DataError as e:
            raise RuntimeError("Failed to evaluate ConfigExpression: ...") from e
    except RuntimeError as outer:
        assert clear_error(outer) is inner
    assert clear_error(RuntimeError("a bug")) is None
