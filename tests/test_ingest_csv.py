"""Step 1: ingest_csv fetches the source once, hashes it and rejects what is not a CSV."""

import gzip
import hashlib
import json
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest
from kfp.dsl import Dataset

from digits.components import ingest_csv
from digits.errors import NotACsvError, SourceNotFoundError


def test_keeps_gzip_as_is_and_hashes_the_source_bytes(tmp_path, train_csv):
    info = ingest_csv.ingest_csv(str(train_csv), tmp_path / "dataset")

    kept = tmp_path / "dataset" / "rows.csv.gz"
    assert kept.read_bytes() == train_csv.read_bytes()
    assert info.sha256 == hashlib.sha256(train_csv.read_bytes()).hexdigest()
    assert (info.compression, info.size_bytes) == ("gzip", train_csv.stat().st_size)
    source = json.loads((tmp_path / "dataset" / "source.json").read_text())
    assert source == {
        "source_uri": str(train_csv),
        "sha256": info.sha256,
        "size_bytes": info.size_bytes,
        "compression": "gzip",
        "fingerprint": "",
    }


def test_recognizes_gzip_by_content_not_name(tmp_path, test_csv):
    disguised = tmp_path / "test.csv"
    disguised.write_bytes(gzip.compress(test_csv.read_bytes()))

    info = ingest_csv.ingest_csv(str(disguised), tmp_path / "dataset")

    assert info.compression == "gzip" and (tmp_path / "dataset" / "rows.csv.gz").exists()


def test_extracts_the_one_csv_of_a_zip(tmp_path, test_csv):
    import zipfile

    bundle = tmp_path / "test.zip"
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(test_csv, "digits/test.csv")

    info = ingest_csv.ingest_csv(str(bundle), tmp_path / "dataset")

    assert info.compression == "zip"
    assert info.sha256 == hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert (tmp_path / "dataset" / "rows.csv").read_bytes() == test_csv.read_bytes()
    assert sorted(p.name for p in (tmp_path / "dataset").iterdir()) == ["rows.csv", "source.json"]


def test_reads_a_file_url(tmp_path, test_csv):
    info = ingest_csv.ingest_csv(test_csv.as_uri(), tmp_path / "dataset")
    assert info.compression == "none" and info.source_uri == test_csv.as_uri()


def test_reads_gzipped_csv_over_http(tmp_path, train_csv):
    handler = partial(SimpleHTTPRequestHandler, directory=str(train_csv.parent))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_port}/{train_csv.name}"
        try:
            info = ingest_csv.ingest_csv(url, tmp_path / "dataset")
        finally:
            server.shutdown()
    assert info.sha256 == hashlib.sha256(train_csv.read_bytes()).hexdigest()


def test_missing_file_names_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(SourceNotFoundError, match=r"nope\.csv: file not found; check the path"):
        ingest_csv.ingest_csv(str(missing), tmp_path / "dataset")


def test_unreachable_server_is_not_reported_as_a_missing_file(tmp_path):
    with ThreadingHTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler) as closed:
        port = closed.server_port
    with pytest.raises(SourceNotFoundError, match=r"cannot be reached \(.*\); check the URL"):
        ingest_csv.ingest_csv(
            f"http://127.0.0.1:{port}/train.csv", tmp_path / "dataset", retry_budget_s=1
        )


class FlakyServer(ThreadingHTTPServer):
    """Serves a folder, but answers the first ``failures`` requests 503 (as a restarting proxy)."""

    def __init__(self, directory: Path, failures: int):
        self.failures, self.requests = failures, []
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(directory), **kwargs)

            def log_message(self, *args):
                pass

            def _flaky(self) -> bool:
                server.requests.append(self.command)
                if len(server.requests) <= server.failures:
                    self.send_error(503, "Service Unavailable")
                    return True
                return False

            def do_GET(self):
                if not self._flaky():
                    super().do_GET()

            def do_HEAD(self):
                if not self._flaky():
                    super().do_HEAD()

        super().__init__(("127.0.0.1", 0), Handler)

    def __enter__(self):
        Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


def test_transient_server_failures_are_retried_with_backoff(tmp_path, train_csv):
    with FlakyServer(train_csv.parent, failures=3) as server:
        url = f"http://127.0.0.1:{server.server_port}/{train_csv.name}"
        info = ingest_csv.ingest_csv(url, tmp_path / "dataset", retry_budget_s=60)
    assert server.requests[:3] == ["HEAD", "HEAD", "HEAD"] or len(server.requests) > 3
    assert info.sha256 == hashlib.sha256(train_csv.read_bytes()).hexdigest()


def test_a_server_that_stays_down_fails_with_one_line_naming_the_url(tmp_path, train_csv):
    with FlakyServer(train_csv.parent, failures=10**6) as server:
        url = f"http://127.0.0.1:{server.server_port}/{train_csv.name}"
        with pytest.raises(SourceNotFoundError) as raised:
            ingest_csv.ingest_csv(url, tmp_path / "dataset", retry_budget_s=2)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(url)
    assert "503" in message and "tried" in message and len(server.requests) >= 2


def test_a_file_changed_after_its_fingerprint_is_refused(tmp_path, test_csv):
    from digits.errors import IngestError

    stale = "sha256:" + hashlib.sha256(b"the bytes seen earlier").hexdigest()
    with pytest.raises(IngestError, match="changed while the pipeline read it"):
        ingest_csv.ingest_csv(str(test_csv), tmp_path / "dataset", fingerprint=stale)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"bad\.csv: the file is empty; expected a comma-separated text file"),
        (b"\xef\xbb\xbf\r\n", r"bad\.csv: the file is empty"),
        (b"label;pixel0;pixel1\n1;2;3\n", r"bad\.csv: looks `;`-separated \(the header has 2"),
        (b"label|pixel0|pixel1\n", r"bad\.csv: looks `\|`-separated"),
        (b"PK\x03\x04broken", r"bad\.csv: a damaged zip"),
        (b"\x1f\x8b\x08\x00broken", r"bad\.csv: a damaged gzip file"),
        (b"label,pixel0\n\x00\x01\x02", r"bad\.csv: not a text file \(byte 0x00 at offset 13"),
        (b"label,pixel0\n\xff\xfe", r"bad\.csv: not a text file \(byte 0xff at offset 13"),
        (b"0," * 40000, r"bad\.csv: no line break in the first 64 KiB"),
    ],
)
def test_files_that_are_not_a_csv_fail_with_one_line(tmp_path, content, message):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)

    with pytest.raises(NotACsvError, match=message) as error:
        ingest_csv.ingest_csv(str(bad), tmp_path / "dataset")
    assert "\n" not in str(error.value)


def test_a_multibyte_character_cut_at_the_sniffed_boundary_is_text(tmp_path):
    text = tmp_path / "long.csv"
    text.write_bytes(b"label,pixel0\n" + ("é" * 40000).encode() + b"\n")
    ingest_csv.ingest_csv(str(text), tmp_path / "dataset")


def test_wrapper_records_the_digest_in_the_artifact_metadata(tmp_path, test_csv):
    dataset = Dataset(name="dataset", uri=str(tmp_path / "dataset"))

    digest = hashlib.sha256(test_csv.read_bytes()).hexdigest()
    ingest_csv.component("digits:test").python_func(
        source_uri=str(test_csv), fingerprint=f"sha256:{digest}", dataset=dataset
    )

    assert dataset.metadata["sha256"] == digest
    assert dataset.metadata["fingerprint"] == f"sha256:{digest}"
    assert dataset.metadata["source_uri"] == str(test_csv)
    assert (tmp_path / "dataset" / "rows.csv").exists()
