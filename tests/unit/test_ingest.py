"""Where a pulled status report sits in the stream, read from its reply subject."""

from __future__ import annotations

import pytest

from controlplane.ingest import _stream_position


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("$JS.ACK.SHOAL_STATUS.c1.1.42.7.1764700000123456789.0", (42, 1764700000.1234567)),
        (
            "$JS.ACK.hub.ACCHASH.SHOAL_STATUS.c1.1.43.8.1764700000500000000.3.xyz",
            (43, 1764700000.5),
        ),
        ("", (0, None)),
        (None, (0, None)),
        ("_INBOX.abc", (0, None)),
    ],
)
def test_stream_position_from_both_reply_forms(
    reply: str | None, expected: tuple[int, float | None]
) -> None:
    seq, stored_at = _stream_position(reply)
    assert seq == expected[0]
    if expected[1] is None:
        assert stored_at is None
    else:
        assert stored_at == pytest.approx(expected[1])
