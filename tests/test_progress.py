"""digits.app.progress: kfp.local's output filed by task, and the step report drawn from it."""
# ruff: noqa: E501  (verbatim kfp.local output lines)

import io
import re

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
