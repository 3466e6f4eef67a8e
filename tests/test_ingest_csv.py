"""Step 1: ingest_csv."""

from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import pandas as pd
import pytest
from kfp.dsl import Dataset

from digits.components import ingest_csv
from digits.data import PIXEL_COLUMNS, SOURCE_ROW_COLUMN
from digits.errors import IngestError


def test_reads_gzipped_csv_into_parquet_keeping_every_cell(tmp_path, train_csv, sample_train):
    summary = ingest_csv.ingest_csv(str(train_csv), tmp_path / "out.parquet")

    frame = pd.read_parquet(tmp_path / "out.parquet")
    assert summary.rows == 400 and summary.columns == 785
    assert list(frame.columns) == [SOURCE_ROW_COLUMN, "label", *PIXEL_COLUMNS]
    assert frame[SOURCE_ROW_COLUMN].tolist() == list(range(1, 401))
    expected = sample_train.head(400)
    assert (frame[["label", *PIXEL_COLUMNS]].to_numpy() == expected.to_numpy()).all()


def test_reads_a_file_url(tmp_path, test_csv):
    summary = ingest_csv.ingest_csv(test_csv.as_uri(), tmp_path / "out.parquet")
    assert summary.rows == 60 and summary.columns == 784


def test_reads_gzipped_csv_over_http(tmp_path, train_csv):
    handler = partial(SimpleHTTPRequestHandler, directory=str(train_csv.parent))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_port}/{train_csv.name}"
        try:
            summary = ingest_csv.ingest_csv(url, tmp_path / "out.parquet")
        finally:
            server.shutdown()
    assert summary.rows == 400 and summary.source_uri == url


def test_non_numeric_cells_survive_as_text_for_validation_to_report(tmp_path):
    source = tmp_path / "bad.csv"
    source.write_text("label,pixel0\n3,0\n4,oops\n")

    ingest_csv.ingest_csv(str(source), tmp_path / "out.parquet")

    assert pd.read_parquet(tmp_path / "out.parquet")["pixel0"].tolist() == ["0", "oops"]


def test_missing_file_names_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(IngestError, match=r"nope\.csv: file not found; check the path or URL"):
        ingest_csv.ingest_csv(str(missing), tmp_path / "out.parquet")


def test_empty_file_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(IngestError, match=r"empty\.csv: not a readable CSV"):
        ingest_csv.ingest_csv(str(empty), tmp_path / "out.parquet")


def test_wrapper_writes_the_output_artifact_and_its_metadata(tmp_path, test_csv):
    dataset = Dataset(name="dataset", uri=str(tmp_path / "dataset"))

    ingest_csv.component("digits:test").python_func(source_uri=str(test_csv), dataset=dataset)

    assert len(pd.read_parquet(dataset.path)) == 60
    assert dataset.metadata["rows"] == 60 and dataset.metadata["source_uri"] == str(test_csv)
