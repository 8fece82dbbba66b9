"""`Retry-After`, read one way for fal and for video hosts."""

from __future__ import annotations

import pytest

from app.httpheaders import retry_after_seconds

NOW = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT


@pytest.mark.parametrize(("value", "seconds"), [
    ("7", 7.0), (" 7 ", 7.0), ("1.5", 1.5), ("0", 0.0), ("-3", 0.0),
    ("Tue, 14 Nov 2023 22:13:50 GMT", 30.0), ("Tue, 14 Nov 2023 22:00:00 GMT", 0.0),
    (None, None), ("", None), ("  ", None), ("soon", None), ("nan", None), ("inf", None),
    ("Tue, 14 Nov 2023 22:13:50 -0000", None),  # no zone: unreadable, not local time
])
def test_retry_after_seconds(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value, now=NOW) == seconds
