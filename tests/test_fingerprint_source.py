"""Step 0: fingerprint_source names the content behind a URI, so the cache follows the bytes."""

import hashlib
import os
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import pytest

from digits.components import fingerprint_source
from digits.errors import SourceNotFoundError


def test_a_local_file_is_fingerprinted_by_its_bytes_not_its_name_or_time(tmp_path):
    data = tmp_path / "train.csv"
    data.write_bytes(b"label,pixel0\n1,0\n")
    first = fingerprint_source.fingerprint_source(str(data))
    assert first == "sha256:" + hashlib.sha256(data.read_bytes()).hexdigest()

    os.utime(data, (1, 1))  # touched, same bytes: same fingerprint
    assert fingerprint_source.fingerprint_source(str(data)) == first
    data.write_bytes(b"label,pixel0\n2,0\n")  # overwritten in place, same size
    assert fingerprint_source.fingerprint_source(str(data)) != first


def test_an_http_file_is_fingerprinted_by_what_the_server_reports(tmp_path):
    data = tmp_path / "train.csv"
    data.write_bytes(b"label,pixel0\n1,0\n")
    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_port}/train.csv"
        try:
            first = fingerprint_source.fingerprint_source(url)
            data.write_bytes(b"label,pixel0\n1,0\n3,0\n")
            second = fingerprint_source.fingerprint_source(url)
        finally:
            server.shutdown()
    # Python's file server sends Last-Modified and Content-Length, no ETag.
    assert "Last-Modified=" in first and "size=17" in first
    assert second != first and "size=21" in second


def test_a_missing_file_fails_with_one_line(tmp_path):
    with pytest.raises(SourceNotFoundError, match=r"nope\.csv: file not found; check the path"):
        fingerprint_source.fingerprint_source(str(tmp_path / "nope.csv"))


def test_wrapper_returns_the_fingerprint(tmp_path):
    data = tmp_path / "train.csv"
    data.write_bytes(b"label,pixel0\n1,0\n")
    wrapper = fingerprint_source.component("digits:test").python_func
    assert wrapper(source_uri=str(data)).startswith("sha256:")
