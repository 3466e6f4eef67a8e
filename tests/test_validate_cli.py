"""`digits validate` on the malformed-file corpus: the one-line reason is the last line."""

import json
import re
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import pytest
from malformed_corpus import CASES, write_corpus
from typer.testing import CliRunner

from digits.app.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, sample_train):
    return write_corpus(sample_train, tmp_path_factory.mktemp("malformed"))


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_each_corpus_file_gives_its_verdict(corpus, case):
    result = runner.invoke(
        app, ["validate", str(corpus[case.name])] + (["--predict"] if case.predict else [])
    )

    last_line = result.output.rstrip("\n").splitlines()[-1]
    if case.error is None:
        assert result.exit_code == 0, result.output
        assert last_line == f"{corpus[case.name]}: passes validation"
    else:
        assert result.exit_code == 1, result.output
        assert re.search(case.error, last_line), last_line
        assert last_line.startswith(str(corpus[case.name]))
        assert "Traceback" not in result.output


def test_summary_lists_rows_reasons_classes_and_duplicates(corpus):
    result = runner.invoke(app, ["validate", str(corpus["duplicate rows"])])

    assert result.exit_code == 0
    assert "rows in         34" in result.output
    assert re.search(r"^class balance   0\.\d\d \(rarest / commonest\)$", result.output, re.M)
    assert "duplicate rows  4" in result.output


def test_rejections_are_summarized_by_reason_before_the_error(corpus):
    result = runner.invoke(app, ["validate", str(corpus["a row with too few fields"])])

    lines = result.output.splitlines()
    assert "  wrong number of fields: 1" in lines
    assert "  row 11: wrong number of fields: 400 fields, expected 785" in lines
    assert lines[-1].startswith(f"{corpus['a row with too few fields']}: 1 of 30 rows rejected")


def test_max_rejected_fraction_lets_a_few_bad_rows_pass(corpus):
    result = runner.invoke(
        app, ["validate", str(corpus["non-numeric cell"]), "--max-rejected-fraction", "0.05"]
    )
    assert result.exit_code == 0, result.output
    assert "valid           29" in result.output


def test_prediction_label_is_reported_as_ignored(corpus):
    result = runner.invoke(
        app, ["validate", str(corpus["prediction data with a label column"]), "--predict"]
    )
    assert "label column    present in prediction data; ignored" in result.output


def test_report_json_is_written_also_on_failure(corpus, tmp_path):
    report_path = tmp_path / "out" / "report.json"
    result = runner.invoke(
        app, ["validate", str(corpus["pixel out of range"]), "--report-json", str(report_path)]
    )

    report = json.loads(report_path.read_text())
    assert result.exit_code == 1
    assert report["passed"] is False and report["error"] == result.output.splitlines()[-1]
    assert (report["rows_in"], report["valid_rows"], report["rejected_rows"]) == (30, 29, 1)
    assert len(report["source_sha256"]) == 64


def test_missing_file(tmp_path):
    result = runner.invoke(app, ["validate", str(tmp_path / "nope.csv")])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        f"{tmp_path / 'nope.csv'}: file not found; check the path or URL"
    )


@pytest.fixture
def http_folder(tmp_path):
    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        Thread(target=server.serve_forever, daemon=True).start()
        yield tmp_path, f"http://127.0.0.1:{server.server_port}"
        server.shutdown()


def test_a_file_served_over_http_passes(http_folder, corpus):
    folder, url = http_folder
    (folder / "train.csv.gz").write_bytes(corpus["gzip"].read_bytes())

    result = runner.invoke(app, ["validate", f"{url}/train.csv.gz"])

    assert result.exit_code == 0, result.output


def test_missing_url_and_unreachable_server(http_folder):
    _, url = http_folder
    missing = runner.invoke(app, ["validate", f"{url}/nope.csv"])
    assert (
        missing.output.splitlines()[-1] == f"{url}/nope.csv: file not found; check the path or URL"
    )

    with ThreadingHTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler) as closed:
        port = closed.server_port  # bound then closed: nothing listens there any more
    unreachable = runner.invoke(
        app, ["validate", f"http://127.0.0.1:{port}/train.csv", "--retry-seconds", "1"]
    )
    assert unreachable.exit_code == 1
    assert re.fullmatch(
        rf"http://127\.0\.0\.1:{port}/train\.csv: cannot be reached \(.+\); check the URL, "
        r"the network and that the server is up \(tried \d+ times in 1 s\)",
        unreachable.output.splitlines()[-1],
    )
