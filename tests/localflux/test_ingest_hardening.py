"""Writes that used to stall, fail with a 500 or store what Core refuses, each against a real
`localflux serve`: a line with thousands of tags, timestamps out of range after scaling,
floats out of range."""

from __future__ import annotations

import threading

import pytest

from tests.localflux.helpers import rows, write_lp
from tests.support import PYTHON

NOW_S = 1_700_000_000


def test_a_line_with_ten_thousand_tags_is_written_in_linear_time(localflux_server):
    """Each tag used to cost a scan of every column name, under the write lock: 10,000 tags
    took 126 s and blocked every other writer. Now it is answered within the client's
    timeout, and so is a small write sent meanwhile."""
    tags = ",".join(f"t{i}=v{i}" for i in range(10_000))
    wide = f"wide,{tags} f=1 {NOW_S}000000000"
    answers: dict[str, int] = {}

    def small_write() -> None:
        answers["small"] = write_lp(localflux_server, f"small,host=a v=1i {NOW_S}").status_code

    other = threading.Thread(target=small_write)
    other.start()
    answers["wide"] = write_lp(localflux_server, wide).status_code
    other.join()
    assert answers == {"wide": 204, "small": 204}
    assert rows(localflux_server, "SELECT t0, t9999, f FROM wide") == [
        {"t0": "v0", "t9999": "v9999", "f": 1.0}
    ]


@pytest.mark.parametrize(
    ("precision", "bad"),
    [("s", "9223372036854775807"), ("ms", "-9223372036854775808"), ("us", "92233720368547758")],
)
def test_a_timestamp_out_of_range_is_a_line_error_and_the_rest_is_written(
    localflux_server, precision, bad
):
    """A refused line of its own shape used to end in a 500 (an IndexError) that stored
    nothing, and -2**63 ms wrapped around into a wrong time."""
    scale = {"s": 1, "ms": 10**3, "us": 10**6}[precision]
    bad_line = f"m,host=b,odd=1 v=2i {bad}"
    body = f"m,host=a v=1i {NOW_S * scale}\n{bad_line}\nm,host=c v=3i {NOW_S * scale}\n"
    response = write_lp(localflux_server, body, precision=precision)
    assert response.status_code == 400
    assert response.json()["data"] == [
        {
            "error_message": "timestamp out of range",
            "line_number": 2,
            "original_line": bad_line[:20],
        }
    ]
    assert rows(localflux_server, "SELECT host FROM m ORDER BY host") == [
        {"host": "a"},
        {"host": "c"},
    ]
    strict = write_lp(localflux_server, body, precision=precision, accept_partial="false")
    assert strict.status_code == 400
    assert strict.json()["data"]["line_number"] == 2


@pytest.mark.parametrize("lines", [1, 100])  # per-line parser, and the columnar path
def test_a_float_out_of_range_is_refused_as_core_refuses_it(localflux_server, lines):
    good = "".join(f"m,host=h{i} f=1.5 {NOW_S + i}000000000\n" for i in range(lines))
    body = good + f"m,host=x f=1e400 {NOW_S}000000000\nm,host=y f=-1e400 {NOW_S}000000000\n"
    response = write_lp(localflux_server, body)
    assert response.status_code == 400
    errors = response.json()["data"]
    assert [(e["line_number"], e["error_message"]) for e in errors] == [
        (lines + 1, "Unable to parse floating-point value '1e400'"),
        (lines + 2, "Unable to parse floating-point value '-1e400'"),
    ]
    assert rows(localflux_server, "SELECT count(*) AS n, max(f) AS top FROM m") == [
        {"n": lines, "top": 1.5}
    ]


def test_a_full_disk_is_reported_with_its_reason_and_loses_no_later_write(localflux_factory):
    """A storage error (here the file-size limit, as a full disk behaves) used to answer 500
    without the reason; a record cut short in the log must not hide the writes after it."""
    limit = (
        "import os, resource, sys; "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20)); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    server = localflux_factory(prefix=[PYTHON, "-c", limit])
    assert write_lp(server, f"m,host=a v=1i {NOW_S}", precision="s").status_code == 204
    big = "".join(f"m,host=big,n={i} v={i}i {NOW_S}\n" for i in range(150_000))
    assert 4 << 20 < len(big) < 10 << 20
    for api in ("v3", "v2"):
        response = write_lp(server, big, api=api, precision="s")
        assert response.status_code == 500, response.text
        assert "the write was not stored: File too large" in response.text
    assert write_lp(server, f"m,host=b v=2i {NOW_S + 1}", precision="s").status_code == 204
    server.kill()  # no compaction: the rows must come back from the log
    server.start()
    assert rows(server, "SELECT host, v FROM m ORDER BY v") == [
        {"host": "a", "v": 1},
        {"host": "b", "v": 2},
    ]
