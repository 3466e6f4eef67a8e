"""What `digits run` shows while kfp.local works: one line per step, an epoch bar, logs in files.

kfp.local runs each task as a subprocess and prints its output, with its own log lines, to
``sys.stdout``. :class:`TaskLogRouter` stands in for ``sys.stdout`` during the run: it splits that
stream into one log file per task (``OUTPUT_DIR/logs/<task>.log``, plus ``pipeline.log`` with
everything) and tells a :class:`StepReporter` when a task starts, prints an epoch line, and ends.
The log files are line-buffered, so ``tail -f`` shows each line as the task prints it (the tasks
themselves run with ``PYTHONUNBUFFERED=1``, set on every task by ``pipelines/placement.py``).
"""

from __future__ import annotations

import ast
import io
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r"Executing task '(?P<task>[^']+)'")
_FINISHED = re.compile(r"Task '(?P<task>[^']+)' finished with status (?P<status>[A-Z]+)")
_OUTPUTS = re.compile(r"Task '(?P<task>[^']+)' outputs:")
_NO_OUTPUTS = re.compile(r"Task '(?P<task>[^']+)' has no outputs")
# kfp.local logs a cache hit through the root logger; digits.app.local_run forwards that line here.
_CACHE_HIT = re.compile(r"Task '?(?P<task>[\w-]+)'? cache hit")
CACHED = "CACHED"
_RETRYING = re.compile(
    r"Task (?P<task>\S+) failed \(attempt (?P<attempt>\d+/\d+)\)\. Retrying in (?P<delay>[\d.]+)s"
)
_PARAMETER = re.compile(r"^ {4}(?P<name>\w+): (?P<value>.*)$")
_ARTIFACT = re.compile(r"^ {4}(?P<name>\w+): \w+\( name=")
_METADATA = re.compile(r"metadata=(?P<metadata>\{.*\}) \)$")
_EPOCH = re.compile(
    r"epoch (?P<epoch>\d+)/(?P<epochs>\d+)\s+loss (?P<loss>[\d.naninf]+).*?"
    r"val_accuracy (?P<val_accuracy>[\d.naninf]+)\s+lr (?P<lr>[\d.e+-]+)"
)
# The last line of a Python traceback: "package.module.SomeError: message".
_EXCEPTION = re.compile(
    r"^(?P<type>(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception)): (?P<message>.+)$"
)


@dataclass
class TaskRecord:
    """One task's life as the router saw it."""

    name: str
    log_path: Path
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0
    status: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, dict] = field(default_factory=dict)  # artifact name -> metadata
    error: str = ""  # the task's own one-line error, when it failed


class TaskLogRouter(io.TextIOBase):
    """A write-only text stream that files kfp.local's output by task."""

    def __init__(self, log_dir: Path, reporter: StepReporter, echo: IO[str] | None = None):
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.reporter = reporter
        self.echo = echo
        self.tasks: dict[str, TaskRecord] = {}  # the latest run of each task name
        self.finished: list[TaskRecord] = []  # every run of every task, loop iterations too
        # ParallelFor iterations run at once under one name: they share a log file and are
        # matched to their status lines first in, first out.
        self._running: dict[str, list[TaskRecord]] = {}
        self._files: dict[str, IO[str]] = {}
        self._current: TaskRecord | None = None
        self._outputs_of: TaskRecord | None = None
        self._finished_record: TaskRecord | None = None  # the last status line's task
        self._last_artifact: str | None = None
        self._partial = ""
        # Line-buffered: a reader of the logs sees each line as it arrives, not when a task ends.
        self._pipeline_log = open(log_dir / "pipeline.log", "w", buffering=1)  # noqa: SIM115

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self.echo is not None:
            self.echo.write(text)
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self._line(line)
        return len(text)

    def flush(self) -> None:
        if self.echo is not None:
            self.echo.flush()
        self._pipeline_log.flush()
        for handle in self._files.values():
            if not handle.closed:
                handle.flush()

    def close(self) -> None:
        if self.closed:
            return
        if self._partial:
            self._line(self._partial)
            self._partial = ""
        super().close()  # flushes first
        for handle in self._files.values():
            handle.close()
        self._pipeline_log.close()

    def _line(self, raw: str) -> None:
        line = _ANSI.sub("", raw)
        self._pipeline_log.write(line + "\n")
        if started := _STARTED.search(line):
            self._start(started["task"])
        if self._current is not None:
            self._files[self._current.name].write(line + "\n")
        if self._outputs_of is not None:
            self._output_line(line)
        if finished := _FINISHED.search(line):
            self._finish(finished["task"], finished["status"])
        elif cached := _CACHE_HIT.search(line):
            self._end_outputs()
            task = cached["task"]
            record = TaskRecord(task, self.log_dir / f"{task}.log", status=CACHED)
            self.tasks.setdefault(task, record)
            self.reporter.finished(record)
        elif retrying := _RETRYING.search(line):
            self.reporter.retrying(retrying["task"], retrying["attempt"], retrying["delay"])
        elif outputs := _OUTPUTS.search(line):
            self._outputs_of = self._just_finished(outputs["task"])
        elif no_outputs := _NO_OUTPUTS.search(line):
            if record := self._just_finished(no_outputs["task"]):
                self._report_finished(record)
        elif self._current is not None and (epoch := _EPOCH.search(line)):
            self.reporter.epoch(
                self._current.name,
                int(epoch["epoch"]),
                int(epoch["epochs"]),
                float(epoch["loss"]),
                float(epoch["val_accuracy"]),
                float(epoch["lr"]),
            )
        elif self._current is not None and (error := _EXCEPTION.match(line.strip())):
            self._current.error = _one_line_error(error["type"], error["message"])

    def _start(self, task: str) -> None:
        self._end_outputs()
        record = TaskRecord(task, self.log_dir / f"{task}.log")
        if task not in self._files or self._files[task].closed:
            # A retried task appends to the log of its earlier attempts.
            mode = "a" if task in self._files else "w"
            self._files[task] = open(record.log_path, mode, buffering=1)  # noqa: SIM115
        self._running.setdefault(task, []).append(record)
        self.tasks[task] = self._current = record
        self.reporter.started(record)

    def _finish(self, task: str, status: str) -> None:
        running = self._running.get(task)
        if not running:
            return
        record = running.pop(0)
        record.status, record.seconds = status, time.monotonic() - record.started
        self._finished_record = record
        self.finished.append(record)
        if status != "SUCCESS":
            self._report_finished(record)

    def _just_finished(self, task: str) -> TaskRecord | None:
        record = self._finished_record
        return record if record is not None and record.name == task else self.tasks.get(task)

    def _output_line(self, line: str) -> None:
        """Lines of kfp.local's 'outputs:' block: parameters and artifact metadata."""
        record = self._outputs_of
        if line.startswith("---") or not line.strip():
            self._end_outputs()
            return
        if artifact := _ARTIFACT.match(line):
            self._last_artifact = artifact["name"]
        elif (metadata := _METADATA.search(line)) and self._last_artifact:
            try:
                record.metadata[self._last_artifact] = ast.literal_eval(metadata["metadata"])
            except (ValueError, SyntaxError):
                record.metadata[self._last_artifact] = {}
        elif parameter := _PARAMETER.match(line):
            value = parameter["value"]
            try:
                record.parameters[parameter["name"]] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                record.parameters[parameter["name"]] = value

    def _end_outputs(self) -> None:
        if self._outputs_of is not None:
            record, self._outputs_of, self._last_artifact = self._outputs_of, None, None
            self._report_finished(record)

    def _report_finished(self, record: TaskRecord) -> None:
        if self._current is record:
            running = self._running.get(record.name)
            self._current = running[-1] if running else None
        if not self._running.get(record.name) and record.name in self._files:
            self._files[record.name].close()
        self.reporter.finished(record)

    def finish_pending(self) -> None:
        """Report a task whose outputs block was the last thing printed."""
        self._end_outputs()

    def failed_task(self) -> TaskRecord | None:
        failed = [record for record in self.tasks.values() if record.status == "FAILURE"]
        return failed[-1] if failed else None


def _one_line_error(exception_type: str, message: str) -> str:
    """Our own errors speak for themselves; anything else keeps its type for context."""
    if exception_type.startswith("digits.") or exception_type.split(".")[-1] in _OWN_ERRORS:
        return message.strip()
    return f"{exception_type.split('.')[-1]}: {message.strip()}"


_OWN_ERRORS = {
    "DigitsError",
    "IngestError",
    "DataValidationError",
    "RegistrationError",
    "PredictionError",
    "RecipeError",
    "TrainingError",
}


@dataclass(frozen=True)
class StepLabel:
    title: str
    describe: Any  # (TaskRecord) -> str


def _rows(record: TaskRecord, artifact: str) -> int | None:
    rows = record.metadata.get(artifact, {}).get("rows")
    return None if rows is None else int(rows)  # KFP metadata numbers come back as floats


def _source_name(record: TaskRecord) -> str:
    for metadata in record.metadata.values():
        source = metadata.get("source_uri") or metadata.get("source")
        if source:
            return Path(str(source)).name
    return ""


def _describe_ingest(record: TaskRecord) -> str:
    source = record.metadata.get("dataset", {})
    if "size_bytes" not in source:
        return ""
    return (
        f"{_source_name(record)}: {source['size_bytes'] / 1e6:.1f} MB, "
        f"sha256 {str(source.get('sha256', ''))[:12]}"
    )


def _describe_validate(record: TaskRecord) -> str:
    valid, rejected = _rows(record, "valid"), _rows(record, "rejected")
    if valid is None:
        return ""
    duplicates = int(record.metadata.get("report", {}).get("duplicate_rows", 0))
    return f"{_source_name(record)}: {valid:,} valid, {rejected or 0:,} rejected" + (
        f", {duplicates:,} duplicates" if duplicates else ""
    )


def _describe_split(record: TaskRecord) -> str:
    train, validation = _rows(record, "train"), _rows(record, "validation")
    return f"{train:,} train / {validation:,} validation" if train is not None else ""


def _describe_train(record: TaskRecord) -> str:
    model = record.metadata.get("model", {})
    if "final_val_accuracy" not in model:
        return ""
    resumed = int(model.get("resumed_after_epoch", 0))
    epochs = int(model.get("epochs_run", 0))
    return (
        f"{epochs} epoch{'' if epochs == 1 else 's'}, validation accuracy "
        f"{model['final_val_accuracy']:.2%} (best {model.get('best_val_accuracy', 0):.2%})"
        + (f", resumed after epoch {resumed}" if resumed else "")
    )


def _describe_baseline(record: TaskRecord) -> str:
    model = record.metadata.get("model", {})
    if "train_accuracy" not in model:
        return ""
    return (
        f"{model.get('model_family', 'scikit-learn')}, train accuracy {model['train_accuracy']:.2%}"
    )


def _describe_evaluate(record: TaskRecord) -> str:
    accuracy = record.metadata.get("metrics", {}).get("accuracy")
    return f"validation accuracy {accuracy:.2%}" if accuracy is not None else ""


def _describe_register(record: TaskRecord) -> str:
    version = record.parameters.get("model_version")
    run_id = str(record.parameters.get("mlflow_run_id", ""))[:12]
    if version:
        return f"model version v{version}, MLflow run {run_id}"
    return f"MLflow run {run_id}" if run_id else ""


def _describe_promote(record: TaskRecord) -> str:
    report = record.metadata.get("decision_report", {})
    decision = record.parameters.get("decision") or report.get("decision", "")
    reason = report.get("reason", "")
    return f"{decision}: {reason}" if decision else ""


def _describe_predict(record: TaskRecord) -> str:
    shard = record.metadata.get("submission", {})
    if "rows" not in shard:
        return ""
    where = (
        f"shard {int(shard['shard_index']) + 1}/{int(shard['shard_count'])}: "
        if shard.get("shard_count", 1) > 1
        else ""
    )
    return f"{where}{int(shard['rows']):,} rows with {shard.get('predicted_with', '?')}"


def _describe_collect(record: TaskRecord) -> str:
    submission = record.metadata.get("submission", {})
    if "rows" not in submission:
        return ""
    return f"{int(submission['rows']):,} predictions with {submission.get('predicted_with', '?')}"


# Labels by the step's function (the same in every DAG), and by display name where one task of a
# function is not like the others (the baseline's evaluate, register and gate).
STEP_LABELS: dict[str, StepLabel] = {
    "fingerprint_source": StepLabel(
        "fingerprint", lambda r: str(r.parameters.get("Output", ""))[:40]
    ),
    "ingest_csv": StepLabel("ingest", _describe_ingest),
    "validate_data": StepLabel("validate", _describe_validate),
    "normalize_and_split": StepLabel("split", _describe_split),
    "train_model": StepLabel("train", _describe_train),
    "train_baseline": StepLabel("baseline fit", _describe_baseline),
    "evaluate_model": StepLabel("evaluate", _describe_evaluate),
    "register_model": StepLabel("register", _describe_register),
    "promote_model": StepLabel("promote", _describe_promote),
    "plan_prediction_shards": StepLabel("plan shards", lambda r: ""),
    "batch_predict": StepLabel("predict", _describe_predict),
    "collect_predictions": StepLabel("collect", _describe_collect),
    "deploy_model": StepLabel("deploy", lambda r: str(r.parameters.get("Output", ""))),
    "evaluate baseline": StepLabel("baseline eval", _describe_evaluate),
    "register baseline": StepLabel("baseline run", _describe_register),
    "promote baseline": StepLabel("baseline gate", _describe_promote),
    # A sweep (by display name: pipelines/stages.sweep).
    "plan trials": StepLabel(
        "plan trials", lambda r: f"{len(r.parameters.get('Output') or [])} trials"
    ),
    "train trial": StepLabel("trial", lambda r: _describe_trial(r.metadata.get("model", {}))),
    "evaluate trial": StepLabel("trial eval", lambda r: _describe_trial_evaluation(r)),
    "select best": StepLabel(
        "select best",
        lambda r: f"{r.parameters.get('best_trial', '')}, {_describe_evaluate(r)}".strip(", "),
    ),
}


def _describe_trial(model: dict) -> str:
    if model.get("status") == "failed":
        return f"{model.get('trial', '')} failed: {model.get('error', '')}"
    return f"{model.get('trial', '')} trained" if model else ""


def _describe_trial_evaluation(record: TaskRecord) -> str:
    trial = record.metadata.get("trial", {})
    if trial.get("status") == "failed":
        return f"{trial.get('trial', '')} failed"
    return f"{trial.get('trial', '')}: {_describe_evaluate(record)}".strip(": ")


@dataclass(frozen=True)
class TaskIdentity:
    """What a kfp.local task name stands for in the DAG."""

    display_name: str  # taskInfo.name: set_display_name's, else the task name
    function: str  # the component's Python function, e.g. "evaluate_model"


def task_identities(pipeline) -> dict[str, TaskIdentity]:
    """Task name -> identity for every container task of a built pipeline (sub-DAGs included).

    kfp.local names tasks as the compiler does (``evaluate-model-2``); those names change with
    the DAG, so the report and the summary look tasks up here instead of guessing them.
    """
    from google.protobuf import json_format

    spec = json_format.MessageToDict(pipeline.pipeline_spec)
    executors = spec["deploymentSpec"]["executors"]
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    identities = {}
    for dag in dags:
        for name, task in dag["tasks"].items():
            label = spec["components"][task["componentRef"]["name"]].get("executorLabel")
            if label is None:
                continue
            args = executors[label]["container"].get("args", [])
            function = args[args.index("--function_to_execute") + 1]
            identities[name] = TaskIdentity(task["taskInfo"]["name"], function)
    return identities


def tasks_of(identities: dict[str, TaskIdentity], display_name: str) -> list[str]:
    """The task names whose display name is ``display_name``."""
    return [name for name, task in identities.items() if task.display_name == display_name]


def step_label(task: str, identities: dict[str, TaskIdentity] | None = None) -> StepLabel:
    """The label of a task: by display name, else by function; unknown tasks keep their name."""
    identity = (identities or {}).get(task)
    if identity is None:  # no DAG given: the compiler's task name for the function
        identity = TaskIdentity(task, re.sub(r"-\d+$", "", task).replace("-", "_"))
    return STEP_LABELS.get(
        identity.display_name, STEP_LABELS.get(identity.function, StepLabel(task, lambda r: ""))
    )


class StepReporter:
    """Prints one line per finished step and, while the model trains, a live bar on a terminal
    or one line per epoch elsewhere (a pipe, a CI log)."""

    def __init__(self, console, identities: dict[str, TaskIdentity] | None = None):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.console = console
        self.identities = identities or {}
        self._progress = Progress(
            TextColumn("  [bold]train[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("epochs  {task.fields[figures]}"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._bar = None

    def started(self, record: TaskRecord) -> None:
        pass

    def epoch(self, task, epoch, epochs, loss, val_accuracy, learning_rate) -> None:
        if not self.console.is_terminal:  # a log file or pipe: one plain line per epoch
            title = step_label(task, self.identities).title
            self.console.print(
                f"  {title:<13} epoch {epoch}/{epochs}  loss {loss:.4f}  "
                f"val accuracy {val_accuracy:.2%}",
                highlight=False,
            )
            return
        figures = f"loss {loss:.4f}  val acc {val_accuracy:.2%}  lr {learning_rate:.1e}"
        if self._bar is None:
            self._progress.start()
            self._bar = self._progress.add_task("train", total=epochs, figures=figures)
        self._progress.update(self._bar, completed=epoch, total=epochs, figures=figures)

    def retrying(self, task: str, attempt: str, delay: str) -> None:
        title = step_label(task, self.identities).title
        self.console.print(
            f"  [yellow]↻[/] {title:<13} attempt {attempt} failed; "
            f"retrying in {float(delay):.0f} s (the pipeline's retry policy)",
            highlight=False,
        )

    def finished(self, record: TaskRecord) -> None:
        if self._bar is not None:
            self._progress.stop()
            self._bar = None
        label = step_label(record.name, self.identities)
        if record.status == CACHED:
            self.console.print(
                f"[green]↺[/] {label.title:<13} reused from the cache (same content and settings)",
                highlight=False,
            )
            return
        ok = record.status == "SUCCESS"
        detail = label.describe(record) if ok else "failed"
        mark = "[green]✓[/]" if ok else "[red]✗[/]"
        self.console.print(
            f"{mark} {label.title:<13} {detail}  [dim]{record.seconds:.1f} s[/]",
            highlight=False,
            soft_wrap=True,
        )
