"""digits.app.progress: kfp.local's output filed by task, and the step report drawn from it."""
# ruff: noqa: E501  (verbatim kfp.local output lines)

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from digits.app.progress import StepReporter, TaskLogRouter

CYAN, GREEN, RED, RESET = "\x1b[96m", "\x1b[92m", "\x1b[91m", "\x1b[0m"

# What kfp.local 2.17 prints for two tasks, colours included (abridged executor logs).
KFP_OUTPUT = f"""00:34:54.996 - INFO - Running pipeline: 'digits-recognizer'
--------------------------------------------------------------------------------
00:34:55.016 - INFO - Executing task {CYAN}'ingest-csv'{RESET}
00:34:55.016 - INFO - Streamed logs:

    [KFP Executor 2026-11-26 00:34:55,104 INFO]: Got executor_input:
    {{"inputs": {{}}}}

00:34:56.771 - INFO - Task {CYAN}'ingest-csv'{RESET} finished with status {GREEN}SUCCESS{RESET}
00:34:56.771 - INFO - Task {CYAN}'ingest-csv'{RESET} outputs:
    dataset: Dataset( name='dataset',
                      uri='/out/pipeline_root/run/ingest-csv/dataset',
                      metadata={{'sha256': '67d163ebdda2', 'source_uri': '/data/train.csv', 'size_bytes': 1101936.0}} )
--------------------------------------------------------------------------------
00:35:03.683 - INFO - Executing task {CYAN}'train-model'{RESET}
00:35:03.683 - INFO - Streamed logs:

    epoch 1/2  loss 2.2962  accuracy 0.1370  val_loss 2.2378  val_accuracy 0.2333  lr 3.00e-03  8.7 s
    epoch 2/2  loss 1.9000  accuracy 0.3000  val_loss 1.8000  val_accuracy 0.4500  lr 3.00e-03  8.1 s
00:35:27.897 - INFO - Task {CYAN}'train-model'{RESET} finished with status {GREEN}SUCCESS{RESET}
00:35:27.897 - INFO - Task {CYAN}'train-model'{RESET} outputs:
    model: Model( name='model',
                  uri='/out/pipeline_root/run/train-model/model',
                  metadata={{'final_val_accuracy': 0.45, 'best_val_accuracy': 0.45, 'epochs_run': 2.0}} )
--------------------------------------------------------------------------------
00:35:31.184 - INFO - Executing task {CYAN}'validate-data'{RESET}
00:35:31.184 - INFO - Streamed logs:

    Traceback (most recent call last):
      File "/x/executor_main.py", line 109, in <module>
    digits.errors.ColumnError: /data/train.csv: 783 pixel columns (pixel0..pixel782): missing pixel783; expected exactly 784

00:35:32.000 - ERROR - Task {CYAN}'validate-data'{RESET} finished with status {RED}FAILURE{RESET}
"""


class RecordingReporter(StepReporter):
    def __init__(self):
        # force_terminal: draw the live bar as on a terminal.
        super().__init__(Console(file=io.StringIO(), width=200, force_terminal=True))
        self.epochs, self.finished_tasks = [], []

    def epoch(self, task, epoch, epochs, loss, val_accuracy, learning_rate):
        self.epochs.append((task, epoch, epochs, val_accuracy))
        super().epoch(task, epoch, epochs, loss, val_accuracy, learning_rate)

    def finished(self, record):
        self.finished_tasks.append((record.name, record.status))
        super().finished(record)


def _route(tmp_path, text: str, chunk: int = 37) -> tuple[TaskLogRouter, RecordingReporter]:
    reporter = RecordingReporter()
    router = TaskLogRouter(tmp_path / "logs", reporter)
    for start in range(0, len(text), chunk):  # the stream arrives in arbitrary pieces
        router.write(text[start : start + chunk])
    router.finish_pending()
    router.close()
    return router, reporter


def test_each_task_gets_its_own_log_and_the_pipeline_log_gets_all(tmp_path):
    router, _ = _route(tmp_path, KFP_OUTPUT)

    logs = tmp_path / "logs"
    assert sorted(path.name for path in logs.iterdir()) == [
        "ingest-csv.log",
        "pipeline.log",
        "train-model.log",
        "validate-data.log",
    ]
    assert "epoch 2/2" in (logs / "train-model.log").read_text()
    assert "epoch" not in (logs / "ingest-csv.log").read_text()
    assert "\x1b[" not in (logs / "pipeline.log").read_text()  # colours stripped
    assert (logs / "pipeline.log").read_text().count("Executing task") == 3


def test_the_report_follows_epochs_outputs_and_the_failing_steps_own_error(tmp_path):
    router, reporter = _route(tmp_path, KFP_OUTPUT)

    assert reporter.epochs == [("train-model", 1, 2, 0.2333), ("train-model", 2, 2, 0.45)]
    assert reporter.finished_tasks == [
        ("ingest-csv", "SUCCESS"),
        ("train-model", "SUCCESS"),
        ("validate-data", "FAILURE"),
    ]
    assert router.tasks["ingest-csv"].metadata["dataset"]["size_bytes"] == 1101936.0
    failed = router.failed_task()
    assert failed.name == "validate-data"
    assert failed.error.startswith("/data/train.csv: 783 pixel columns")  # no class name
    report = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", reporter.console.file.getvalue())
    assert "✓ ingest        train.csv: 1.1 MB, sha256 67d163ebdda2" in report
    assert "✓ train         2 epochs, validation accuracy 45.00%" in report
    assert "✗ validate      failed" in report


def test_verbose_echoes_everything_as_it_comes(tmp_path):
    echo = io.StringIO()
    router = TaskLogRouter(tmp_path / "logs", RecordingReporter(), echo=echo)
    router.write(KFP_OUTPUT)
    router.close()
    assert echo.getvalue() == KFP_OUTPUT


def test_labels_come_from_the_compiled_dag_not_from_guessed_task_names():
    """The baseline's evaluate task is found by its display name, whatever kfp.local calls it."""
    from digits.app.progress import step_label, task_identities, tasks_of
    from digits.pipelines.digits_pipeline import build_pipeline

    identities = task_identities(build_pipeline())

    (baseline_eval,) = tasks_of(identities, "evaluate baseline")
    assert step_label(baseline_eval, identities).title == "baseline eval"
    cnn_eval = [
        n for n, t in identities.items() if t.function == "evaluate_model" and n != baseline_eval
    ]
    assert [step_label(name, identities).title for name in cnn_eval] == ["evaluate"]
    # Every task of the DAG has a label of its own, none falls back to its raw task name.
    for name in identities:
        assert step_label(name, identities).title != name, name


def test_a_task_log_has_each_line_while_the_task_still_runs(tmp_path):
    """Readers of the logs (`tail -f`, the slow test) see a line when it is written."""
    router = TaskLogRouter(tmp_path / "logs", RecordingReporter())
    training = KFP_OUTPUT[: KFP_OUTPUT.index("    epoch 2/2")]  # the task is mid-training
    router.write(training)

    assert "epoch 1/2" in (tmp_path / "logs" / "train-model.log").read_text()
    assert "epoch 1/2" in (tmp_path / "logs" / "pipeline.log").read_text()
    router.close()


def test_off_a_terminal_each_epoch_is_one_plain_line_before_the_step_line(tmp_path):
    reporter = StepReporter(Console(file=io.StringIO(), width=200, force_terminal=False))
    router = TaskLogRouter(tmp_path / "logs", reporter)
    router.write(KFP_OUTPUT)
    router.finish_pending()
    router.close()

    lines = reporter.console.file.getvalue().splitlines()
    train = [line for line in lines if line.lstrip().startswith(("train", "✓ train"))]
    assert train[:2] == [
        "  train         epoch 1/2  loss 2.2962  val accuracy 23.33%",
        "  train         epoch 2/2  loss 1.9000  val accuracy 45.00%",
    ]
    assert train[2].startswith("✓ train         2 epochs, validation accuracy 45.00%")
    assert len(train) == 3
    assert "\x1b[" not in reporter.console.file.getvalue()


@pytest.mark.slow
def test_digits_run_streams_each_epoch_to_the_task_log_and_stdout_while_training(
    tmp_path, sample_train, test_csv
):
    """A real `digits run` into a pipe: epoch 1 is in train-model.log and on stdout while
    epoch 3 is still to come. The run is stopped once the train step's line is out."""
    data = tmp_path / "train.csv"
    sample_train.head(600).to_csv(data, index=False)
    log = tmp_path / "out" / "logs" / "train-model.log"
    run = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("digits")), "run",
            "--data", str(data), "--predict-data", str(test_csv),
            "--epochs", "3", "--no-baseline", "--output-dir", str(tmp_path / "out"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the kill takes the task processes too
        env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip
    snapshots: list[str] = []  # the train log's text each time it changed
    stop = threading.Event()

    def watch_log() -> None:
        while not stop.is_set():
            text = log.read_text() if log.exists() else ""
            if not snapshots or text != snapshots[-1]:
                snapshots.append(text)
            time.sleep(0.02)

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)

    watcher, deadline = threading.Thread(target=watch_log), threading.Timer(600, kill)
    watcher.start()
    deadline.start()
    stdout, log_at_first_epoch_line = [], None
    try:
        for line in run.stdout:  # as `digits run` writes it
            stdout.append(line.rstrip("\n"))
            if "epoch 1/3" in line and log_at_first_epoch_line is None:
                log_at_first_epoch_line = log.read_text()
            if line.startswith(("✓ train", "✗")):
                break
    finally:
        stop.set()
        deadline.cancel()
        kill()
        run.wait()
        watcher.join()

    output = "\n".join(stdout)
    assert any(line.startswith("✓ train") for line in stdout), output
    # The task log had epoch 1 while training went on, not only when the task ended.
    assert any("epoch 1/3" in text and "epoch 3/3" not in text for text in snapshots), snapshots
    # Off a terminal, one line per epoch as it ends, before the train step's line.
    epoch_lines = [line for line in stdout if re.match(r"  train +epoch \d/3 ", line)]
    assert [line.split()[2] for line in epoch_lines] == ["1/3", "2/3", "3/3"], output
    assert re.fullmatch(r"  train +epoch 1/3  loss [\d.]+  val accuracy [\d.]+%", epoch_lines[0])
    assert log_at_first_epoch_line is not None and "epoch 3/3" not in log_at_first_epoch_line
