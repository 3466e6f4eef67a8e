"""`digits run` on each malformed training file of the corpus: the step's own line ends the run.

Every case of the corpus goes through `digits validate` (tests/test_validate_cli.py), which runs
the same ingest and validation code. Through the whole local pipeline (about 20 s a case on
2 cores) go one case per failing step and kind of error: the run stops at ingest or validate,
exit code 1, no traceback, the failing step's one-line error last and the path of its log just
before.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from malformed_corpus import CASES, write_corpus

pytestmark = pytest.mark.slow

DIGITS = str(Path(sys.executable).with_name("digits"))
THROUGH_THE_PIPELINE = {
    "empty file",  # ingest: nothing to read
    "binary (a PNG)",  # ingest: not text
    "zip with two CSVs",  # ingest: an archive
    "truncated gzip",  # a damaged stream
    "a missing pixel column",  # validate: the header
    "non-numeric cell",  # validate: a rejected row
    "training data with one digit only",  # validate: the labels as a whole
}
FAILING_TRAINING_CASES = [case for case in CASES if case.name in THROUGH_THE_PIPELINE]
assert len(FAILING_TRAINING_CASES) == len(THROUGH_THE_PIPELINE)
assert all(case.error and not case.predict for case in FAILING_TRAINING_CASES)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, sample_train):
    return write_corpus(sample_train, tmp_path_factory.mktemp("malformed"))


@pytest.mark.parametrize(
    "case", FAILING_TRAINING_CASES, ids=[case.name for case in FAILING_TRAINING_CASES]
)
def test_the_run_ends_with_the_failing_steps_own_line(corpus, case, test_csv, tmp_path):
    result = subprocess.run(
        [DIGITS, "run", "--data", str(corpus[case.name]), "--predict-data", str(test_csv),
         "--output-dir", str(tmp_path), "--no-baseline"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    *_, log_line, last = result.stderr.strip().splitlines()
    step = re.match(r"digits run: (ingest-csv|validate-data) failed: (.*)$", last)
    assert step, last
    assert re.search(case.error, step[2]), last
    assert Path(log_line.split("full log: ", 1)[1]).name == f"{step[1]}.log"
    (run_dir,) = (tmp_path / "pipeline_root").iterdir()
    assert not (run_dir / "train-model").exists()  # no later step started
