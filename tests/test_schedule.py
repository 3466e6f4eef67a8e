"""`digits upload`, `digits schedule` and `digits submit --version` against the recording fake
of the KFP v2beta1 API (`kfp_recorder`), and the cron checks KFP's scheduler would make."""

import json
import re
import socket
import subprocess
from datetime import UTC, datetime

import pytest
import yaml
from typer.testing import CliRunner

from digits import __version__
from digits.app.cli import app
from digits.app.schedule import croniter_form, default_version_name, parse_cron
from digits.errors import CronError

runner = CliRunner()
API = "/apis/v2beta1"
COMMIT = "3f2c1ab9e4d0c7b6a5f4e3d2c1b0a9f8e7d6c5b4"
VERSION = f"{__version__}-3f2c1ab"
REQUIRED = [
    "--param",
    "train_data_uri=gs://b/train.csv",
    "--param",
    "predict_data_uri=gs://b/t.csv",
]
NEW_YEAR = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def no_token_and_a_known_commit(monkeypatch, tmp_path):
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "absent-token"))
    monkeypatch.setenv("DIGITS_GIT_COMMIT", COMMIT)


def _digits(kfp, command, *args, host=None):
    return runner.invoke(app, [command, "--host", host or kfp.url, *args])


def _ok(result):
    assert result.exit_code == 0, result.output
    return result.stdout


def _one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def _schedule(kfp, package, *args):
    return _digits(kfp, "schedule", "--package", str(package), *REQUIRED, *args)


# --- Cron: KFP's six fields, seconds first --------------------------------------------------------


def test_six_field_cron_is_handed_to_croniter_with_the_seconds_moved_last():
    assert croniter_form("30 15 3 * * *") == "15 3 * * * 30"
    assert croniter_form("0 0 3 * * *") == "0 3 * * * 0"

    times = parse_cron("30 15 3 * * *").next_times(3, after=NEW_YEAR)

    assert [t.isoformat() for t in times] == [
        "2026-01-01T03:15:30+00:00",
        "2026-01-02T03:15:30+00:00",
        "2026-01-03T03:15:30+00:00",
    ]


@pytest.mark.parametrize(
    ("cron", "first_three"),
    [
        ("0 0 3 * * *", ["01-01 03:00:00", "01-02 03:00:00", "01-03 03:00:00"]),
        ("0 0 9 ? * MON-FRI", ["01-01 09:00:00", "01-02 09:00:00", "01-05 09:00:00"]),
        ("0 5/15 * * * *", ["01-01 00:05:00", "01-01 00:20:00", "01-01 00:35:00"]),
        ("@daily", ["01-02 00:00:00", "01-03 00:00:00", "01-04 00:00:00"]),
        # robfig: both days restricted -> either matches (Friday or the 13th) ...
        ("0 0 0 13 * 5", ["01-02 00:00:00", "01-09 00:00:00", "01-13 00:00:00"]),
        # ... but a * in either (here */2) -> both must match (odd day and Monday).
        ("0 0 0 */2 * 1", ["01-05 00:00:00", "01-19 00:00:00", "02-09 00:00:00"]),
    ],
)
def test_fire_times_follow_kfp_cron_rules(cron, first_three):
    times = parse_cron(cron).next_times(3, after=NEW_YEAR)

    assert [f"{t:%m-%d %H:%M:%S}" for t in times] == first_three


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 61 * * * *", 'minute "61": out of range 0-59'),
        ("0 0 0 * * 7", 'day-of-week "7": out of range 0-6 (0 is Sunday; there is no 7)'),
        ("0 0 0 L * *", "day-of-month \"L\": 'L' is not a number"),
        ("0 0 25 * * *", 'hour "25": out of range 0-23'),
        ("0 */0 * * * *", 'minute "*/0": the step after / must be a positive number'),
        ("0 0 0 5-1 * *", "day-of-month \"5-1\": '5-1' starts after it ends"),
        ("0 0 0 1 FOO *", "month \"FOO\": 'FOO' is not a number"),
        ("* * *", "has 3 fields; KFP's cron has six: second minute hour"),
        ("0 0 0 30 2 *", "never fires"),
        ("@every 1h", 'cron "@every 1h" is not supported here'),
    ],
)
def test_invalid_cron_is_one_line_naming_the_field(cron, message):
    with pytest.raises(CronError, match=re.escape(message)):
        parse_cron(cron)


def test_five_field_cron_is_refused_with_the_six_field_form_before_anything_is_sent(
    kfp_server, package
):
    result = _schedule(kfp_server, package, "--cron", "0 3 * * *")

    line = _one_error_line(result)
    assert "has five fields" in line and 'you probably meant "0 0 3 * * *"' in line
    assert kfp_server.requests == []


def test_invalid_cron_is_refused_before_anything_is_sent(kfp_server, package):
    result = _schedule(kfp_server, package, "--cron", "0 0 3 * * 8")

    assert 'day-of-week "8": out of range 0-6' in _one_error_line(result)
    assert kfp_server.requests == []


def test_unknown_parameter_is_refused_before_anything_is_sent(kfp_server, package):
    result = _schedule(kfp_server, package, "--cron", "0 0 3 * * *", "--param", "epoch=3")

    assert "unknown pipeline parameter(s) epoch" in _one_error_line(result)
    assert kfp_server.requests == []


# --- Version names ------------------------------------------------------------------------------


def test_default_version_name_is_project_version_and_commit_dirty_on_changes(tmp_path, monkeypatch):
    monkeypatch.delenv("DIGITS_GIT_COMMIT")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.txt").write_text("a")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "a"], check=True)
    short = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()

    assert default_version_name(tmp_path) == f"{__version__}-{short}"
    (tmp_path / "a.txt").write_text("changed")
    assert default_version_name(tmp_path) == f"{__version__}-{short}-dirty"
    monkeypatch.setenv("DIGITS_GIT_COMMIT", COMMIT)
    assert default_version_name(tmp_path) == VERSION


# --- digits upload ------------------------------------------------------------------------------


def test_upload_creates_the_pipeline_then_uploads_the_named_version(kfp_server, package):
    out = _ok(_digits(kfp_server, "upload", "--package", str(package)))

    assert [(r.method, r.path) for r in kfp_server.posts()] == [
        ("POST", f"{API}/pipelines"),
        ("POST", f"{API}/pipelines/upload_version"),
    ]
    (looked_up,) = kfp_server.calls("GET", f"{API}/pipelines")
    predicate = json.loads(looked_up.query["filter"][0])["predicates"][0]
    assert predicate == {
        "operation": 1,
        "key": "display_name",
        "stringValue": "digits-recognizer",
    }
    created, uploaded = kfp_server.posts()
    assert created.body["display_name"] == "digits-recognizer"
    assert "pipeline_spec" not in json.dumps(created.body)  # the version carries the spec
    assert uploaded.query["pipelineid"] == ["pipeline-1"]
    assert uploaded.query["name"] == [VERSION]
    filename, sent = uploaded.files["uploadfile"]
    assert filename == "pipeline.yaml" and sent == package.read_bytes()
    assert "package sha256 " in uploaded.query["description"][0]

    assert "pipeline id  pipeline-1  (digits-recognizer, created)" in out
    assert f"version id   version-1  ({VERSION}, uploaded)" in out
    assert f"{kfp_server.url}/#/pipelines/details/pipeline-1/version/version-1" in out


def test_uploading_the_same_version_again_sends_nothing(kfp_server, package):
    _ok(_digits(kfp_server, "upload", "--package", str(package)))
    before = len(kfp_server.posts())

    out = _ok(_digits(kfp_server, "upload", "--package", str(package)))

    assert len(kfp_server.posts()) == before  # no POST: no duplicate version
    assert len(kfp_server.versions) == 1
    assert "already uploaded, same package: nothing sent" in out
    assert f"{kfp_server.url}/#/pipelines/details/pipeline-1/version/version-1" in out


def test_same_version_name_with_another_package_is_refused(kfp_server, package, tmp_path):
    _ok(_digits(kfp_server, "upload", "--package", str(package)))
    changed = tmp_path / "pipeline.yaml"
    changed.write_bytes(package.read_bytes() + b"# changed\n")
    before = len(kfp_server.posts())

    result = _digits(kfp_server, "upload", "--package", str(changed))

    line = _one_error_line(result)
    assert f"version {VERSION} of digits-recognizer already exists with another package" in line
    assert "pass --version NEW-NAME" in line
    assert len(kfp_server.posts()) == before


def test_upload_into_an_existing_pipeline_adds_only_the_version(kfp_server, package):
    kfp_server.add_pipeline("digits-recognizer")

    out = _ok(_digits(kfp_server, "upload", "--package", str(package), "--version", "v7"))

    assert [r.path for r in kfp_server.posts()] == [f"{API}/pipelines/upload_version"]
    assert "(digits-recognizer, found)" in out and "(v7, uploaded)" in out


# --- digits schedule ----------------------------------------------------------------------------


def test_schedule_creates_a_recurring_run_pinned_to_the_uploaded_version(kfp_server, package):
    out = _ok(
        _schedule(
            kfp_server, package,
            "--cron", "0 0 3 * * *",
            "--max-concurrency", "2",
            "--param", "epochs=3",
            "--param", "train_baseline=false",
            "--experiment", "digits-nightly",
            "--name", "nightly",
        )
    )  # fmt: skip

    assert [r.path for r in kfp_server.posts()] == [
        f"{API}/pipelines",
        f"{API}/pipelines/upload_version",
        f"{API}/experiments",
        f"{API}/recurringruns",
    ]
    (created,) = kfp_server.calls("POST", f"{API}/recurringruns")
    body = created.body
    assert body["display_name"] == "nightly"
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert body["max_concurrency"] == 2
    assert body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    assert body["experiment_id"] == "exp-7"
    assert body["pipeline_version_reference"] == {
        "pipeline_id": "pipeline-1",
        "pipeline_version_id": "version-1",
    }
    assert "pipeline_spec" not in body  # pinned to the version, no inline spec
    parameters = body["runtime_config"]["parameters"]
    assert parameters == {
        "train_data_uri": "gs://b/train.csv",
        "predict_data_uri": "gs://b/t.csv",
        "epochs": 3,
        "train_baseline": False,
        # Filled in, so the MLflow run and model version say which schedule and version.
        "schedule_name": "nightly",
        "pipeline_version": "0.1.0-3f2c1ab",
    }
    assert type(parameters["epochs"]) is int

    assert re.search(r"next runs\s+\d{4}-\d\d-\d\d 03:00:00 UTC\n\s+\d{4}-\d\d-\d\d 03:00:00", out)
    assert "schedule     recurring-1  (nightly, created; experiment digits-nightly)" in out
    assert f"{kfp_server.url}/#/recurringrun/details/recurring-1" in out


def test_catchup_and_an_existing_version_by_name(kfp_server, package):
    _ok(_digits(kfp_server, "upload", "--package", str(package), "--version", "v1"))
    uploads = len(kfp_server.calls("POST", f"{API}/pipelines/upload_version"))

    _ok(_schedule(kfp_server, package, "--cron", "@daily", "--version", "v1", "--catchup"))

    assert len(kfp_server.calls("POST", f"{API}/pipelines/upload_version")) == uploads
    (created,) = kfp_server.calls("POST", f"{API}/recurringruns")
    assert created.body["no_catchup"] is False
    assert created.body["trigger"]["cron_schedule"]["cron"] == "@daily"
    assert created.body["pipeline_version_reference"]["pipeline_version_id"] == "version-1"


def test_a_named_version_from_another_package_is_used_as_it_is(kfp_server, package, tmp_path):
    older = tmp_path / "pipeline.yaml"
    older.write_bytes(package.read_bytes() + b"# an older build\n")
    _ok(_digits(kfp_server, "upload", "--package", str(older), "--version", "v1"))

    out = _ok(_schedule(kfp_server, package, "--cron", "0 0 3 * * *", "--version", "v1"))

    assert len(kfp_server.calls("POST", f"{API}/pipelines/upload_version")) == 1
    assert (
        "(v1, already uploaded from another package than this checkout's: that one is used)" in out
    )
    (created,) = kfp_server.calls("POST", f"{API}/recurringruns")
    assert created.body["pipeline_version_reference"]["pipeline_version_id"] == "version-1"


def test_a_schedule_of_the_same_name_is_replaced_new_first_then_old_disabled(kfp_server, package):
    _ok(_schedule(kfp_server, package, "--cron", "0 0 3 * * *"))

    out = _ok(_schedule(kfp_server, package, "--cron", "0 30 4 * * *"))

    posts = [r.path for r in kfp_server.posts()]
    assert posts[-2:] == [f"{API}/recurringruns", f"{API}/recurringruns/recurring-1:disable"]
    assert kfp_server.recurring_runs["recurring-1"]["status"] == "DISABLED"
    assert kfp_server.recurring_runs["recurring-2"]["status"] == "ENABLED"
    assert "schedule     recurring-2  (digits-retrain, created" in out
    assert "replaced     recurring-1  (digits-retrain, now disabled)" in out


def test_the_same_schedule_again_sends_nothing(kfp_server, package):
    _ok(_schedule(kfp_server, package, "--cron", "0 0 3 * * *"))
    before = len(kfp_server.posts())

    out = _ok(_schedule(kfp_server, package, "--cron", "0 0 3 * * *"))

    assert len(kfp_server.posts()) == before
    assert "recurring-1  (digits-retrain, already in force, same settings: nothing sent" in out


def test_list_shows_version_cron_next_run_and_state(kfp_server, package):
    _ok(_schedule(kfp_server, package, "--cron", "0 0 3 * * *"))
    _ok(_schedule(kfp_server, package, "--cron", "0 30 4 * * *"))
    _ok(_schedule(kfp_server, package, "--cron", "0 0 5 * * 1", "--name", "weekly"))
    before = len(kfp_server.posts())

    out = _ok(_digits(kfp_server, "schedule", "--list"))

    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "CRON", "NEXT", "RUN", "(UTC)", "VERSION", "ID"]
    rows = {line.split()[-1]: line for line in lines[1:]}
    assert re.search(
        rf"digits-retrain +enabled +0 30 4 \* \* \* +\S+ 04:30:00 +{VERSION} ", rows["recurring-2"]
    )
    assert re.search(
        rf"digits-retrain +disabled +0 0 3 \* \* \* +- +{VERSION} ", rows["recurring-1"]
    )
    assert re.search(r"weekly +enabled +0 0 5 \* \* 1 +\S+ 05:00:00 ", rows["recurring-3"])
    assert len(kfp_server.posts()) == before  # listing changes nothing


def test_list_of_an_experiment_that_does_not_exist_creates_nothing(kfp_server):
    out = _ok(_digits(kfp_server, "schedule", "--list", "--experiment", "nope"))

    assert out.strip() == "no schedules in nope"
    assert kfp_server.posts() == []


def test_disable_then_enable(kfp_server, package):
    _ok(_schedule(kfp_server, package, "--cron", "0 0 3 * * *"))

    out = _ok(_digits(kfp_server, "schedule", "--disable", "digits-retrain"))
    assert "recurring-1  (digits-retrain) disabled" in out
    assert kfp_server.posts()[-1].path == f"{API}/recurringruns/recurring-1:disable"
    assert kfp_server.recurring_runs["recurring-1"]["status"] == "DISABLED"

    out = _ok(_digits(kfp_server, "schedule", "--enable", "digits-retrain"))
    assert "recurring-1  (digits-retrain) enabled" in out
    assert kfp_server.posts()[-1].path == f"{API}/recurringruns/recurring-1:enable"
    assert kfp_server.recurring_runs["recurring-1"]["status"] == "ENABLED"

    before = len(kfp_server.posts())
    out = _ok(_digits(kfp_server, "schedule", "--enable", "digits-retrain"))
    assert "already enabled: nothing sent" in out and len(kfp_server.posts()) == before


def test_disabling_an_unknown_schedule_is_one_line(kfp_server, package):
    _ok(_schedule(kfp_server, package, "--cron", "0 0 3 * * *"))

    result = _digits(kfp_server, "schedule", "--disable", "nightly")

    assert "no schedule named nightly in experiment digits" in _one_error_line(result)


def test_schedule_needs_exactly_one_action(kfp_server):
    result = _digits(kfp_server, "schedule", "--list", "--disable", "x")

    assert result.exit_code == 2
    assert "pass one of --cron, --list, --disable NAME or --enable NAME" in result.output


# --- digits submit --version --------------------------------------------------------------------


def test_submit_version_creates_a_run_of_the_version_without_an_inline_spec(kfp_server, package):
    _ok(_digits(kfp_server, "upload", "--package", str(package), "--version", "v1"))

    out = _ok(
        _digits(kfp_server, "submit", "--version", "v1", *REQUIRED, "--param", "epochs=2",
                "--run-name", "from-v1")
    )  # fmt: skip

    (run,) = kfp_server.calls("POST", f"{API}/runs")
    assert run.body["pipeline_version_reference"] == {
        "pipeline_id": "pipeline-1",
        "pipeline_version_id": "version-1",
    }
    assert "pipeline_spec" not in run.body
    assert run.body["display_name"] == "from-v1"
    assert run.body["experiment_id"] == "exp-7"
    assert run.body["runtime_config"]["parameters"]["epochs"] == 2
    assert f"{kfp_server.url}/#/runs/details/run-42" in out


def test_submit_version_checks_parameters_against_the_versions_own_ir(kfp_server, package):
    _ok(_digits(kfp_server, "upload", "--package", str(package), "--version", "v1"))

    result = _digits(kfp_server, "submit", "--version", "v1", *REQUIRED, "--param", "epochs=x")

    assert "--param epochs=x: epochs takes an integer" in _one_error_line(result)
    assert not kfp_server.calls("POST", f"{API}/runs")


def test_a_version_listed_without_its_ir_is_read_whole_to_check_parameters(kfp_server, package):
    _ok(_digits(kfp_server, "upload", "--package", str(package), "--version", "v1"))
    kfp_server.list_versions_without_spec = True

    result = _digits(kfp_server, "submit", "--version", "v1", *REQUIRED, "--param", "epoch=2")

    assert "unknown pipeline parameter(s) epoch" in _one_error_line(result)
    assert kfp_server.calls("GET", f"{API}/pipelines/pipeline-1/versions/version-1")
    assert not kfp_server.calls("POST", f"{API}/runs")


def test_submit_of_a_version_that_is_not_there_is_one_line(kfp_server, package):
    _ok(_digits(kfp_server, "upload", "--package", str(package)))

    result = _digits(kfp_server, "submit", "--version", "v9", *REQUIRED)

    assert _one_error_line(result) == (
        "digits submit: pipeline digits-recognizer has no version v9; "
        "upload it with `digits upload --version v9`"
    )


# --- Hosts and credentials ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize(
    "args",
    [["upload"], ["schedule", "--cron", "0 0 3 * * *", *REQUIRED], ["schedule", "--list"]],
    ids=["upload", "schedule", "list"],
)
def test_refused_credentials_are_one_line(kfp_server, package, status, args):
    kfp_server.refuse_with = status

    result = _digits(kfp_server, args[0], "--package", str(package), *args[1:], "--token", "old")

    assert f"refused the credentials (HTTP {status})" in _one_error_line(result)
    assert kfp_server.posts() == []


@pytest.mark.parametrize(
    "args",
    [["upload"], ["schedule", "--cron", "0 0 3 * * *", *REQUIRED]],
    ids=["upload", "schedule"],
)
def test_unreachable_host_is_one_line(package, args):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    result = runner.invoke(
        app, [args[0], "--host", f"http://127.0.0.1:{port}", "--package", str(package), *args[1:]]
    )

    assert f"cannot reach Kubeflow Pipelines at http://127.0.0.1:{port}" in _one_error_line(result)


def test_a_host_without_scheme_is_http(kfp_server, package):
    bare = kfp_server.url.removeprefix("http://")

    out = _ok(_digits(kfp_server, "upload", "--package", str(package), host=bare))
    assert f"version UI   http://{bare}/#/pipelines/details/" in out

    out = _ok(_digits(kfp_server, "submit", "--package", str(package), *REQUIRED, host=bare + "/"))
    assert f"run UI  http://{bare}/#/runs/details/run-42" in out


def test_the_recorded_upload_is_the_compiled_ir(kfp_server, package):
    _ok(_digits(kfp_server, "upload", "--package", str(package)))

    (version,) = kfp_server.versions.values()
    spec, platform = yaml.safe_load_all(package.read_text())
    assert version["pipeline_spec"]["pipeline_spec"] == json.loads(json.dumps(spec))
    assert version["pipeline_spec"]["platform_spec"] == json.loads(json.dumps(platform))
