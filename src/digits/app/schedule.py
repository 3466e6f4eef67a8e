"""Upload the pipeline as named versions and retrain on a schedule (KFP recurring runs).

A version is named from the project version and the git commit (``0.1.0-3f2c1ab``, ``-dirty``
when the checkout has changes) and carries the sha256 of its package in its description, so
uploading the same name again sends nothing when the package is the same and is refused when it
is not. A recurring run is pinned to one version (pipeline id + version id); KFP has no update,
so a schedule is replaced by creating the new one, then disabling the old one.

Cron expressions are checked here, before anything is sent, with the rules of the parser KFP's
scheduler uses (robfig/cron v1.2.0 ``cron.Parse``): six fields, seconds first, ``* ? , - /``,
month and weekday names, day of week 0-6, and the ``@yearly`` ... ``@hourly`` descriptors. That
parser also takes five fields, as seconds to month: ``0 3 * * *`` would run at minute 3 of every
hour, so five fields are refused with the six-field form meant. Fire times come from croniter,
fed the six fields with the seconds moved last (croniter's own six-field order).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

from digits import __version__
from digits.app.submit import (
    SubmitRequest,
    SubmittedRun,
    call_api,
    connect,
    normalize_host,
    pipeline_parameters,
    typed_arguments,
)
from digits.errors import CronError, ScheduleError, SubmitError

DEFAULT_PIPELINE_NAME = "digits-recognizer"  # the IR's pipelineInfo.name
DEFAULT_SCHEDULE_NAME = "digits-retrain"
_DIGEST = re.compile(r"package sha256 ([0-9a-f]{64})")


@dataclass(frozen=True)
class KfpTarget:
    """Which KFP API, as whom: what ``digits.app.submit.connect`` needs."""

    host: str
    token: str | None = None
    namespace: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "host", normalize_host(self.host))


# --- Cron ---------------------------------------------------------------------------------------

# (name, lowest, highest, names) in robfig/cron order: seconds first.
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_FIELDS = (
    ("second", 0, 59, {}),
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, {m: i + 1 for i, m in enumerate(_MONTHS)}),
    ("day-of-week", 0, 6, {d: i for i, d in enumerate(_WEEKDAYS)}),
)
_SIX_FIELDS = "second minute hour day-of-month month day-of-week"
# robfig/cron v1.2.0 parseDescriptor, as six fields.
_DESCRIPTORS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
_YEARS_SEARCHED = 5  # robfig/cron gives up (never fires) after five years without a match


@dataclass(frozen=True)
class CronSchedule:
    """A cron expression KFP's scheduler reads as meant.

    ``expression`` is sent to KFP as written; ``six_fields`` is its numeric six-field form
    (descriptors expanded, names as numbers, ``?`` as ``*``, ``N/S`` as ``N-max/S``).
    """

    expression: str
    six_fields: str
    day_or: bool  # robfig: day-of-month OR day-of-week only when neither has * or ?

    def next_times(
        self, count: int = 3, after: datetime | None = None, tz: tzinfo = UTC
    ) -> list[datetime]:
        """The next ``count`` fire times after ``after`` (default now), in ``tz``."""
        from croniter import croniter

        start = (after or datetime.now(UTC)).astimezone(tz)
        times = croniter(
            croniter_form(self.six_fields),
            start,
            day_or=self.day_or,
            max_years_between_matches=_YEARS_SEARCHED,
        )
        return [times.get_next(datetime) for _ in range(count)]


def croniter_form(six_fields: str) -> str:
    """KFP's ``sec min hour dom month dow`` as croniter's ``min hour dom month dow sec``."""
    fields = six_fields.split()
    if len(fields) != 6:
        raise ValueError(f"expected six fields, got {six_fields!r}")
    return " ".join([*fields[1:], fields[0]])


def parse_cron(expression: str) -> CronSchedule:
    """Check a cron expression against KFP's parser; refuse five fields with the form meant.

    Raises:
        CronError: one line naming the field at fault and the fix.
    """
    text = " ".join(expression.split())
    if not text:
        raise CronError(f'empty cron; give six fields, {_SIX_FIELDS}, e.g. "0 0 3 * * *"')
    if text.startswith("@"):
        six = _DESCRIPTORS.get(text)  # robfig matches descriptors case-sensitively
        if six is None:
            raise CronError(
                f'cron "{text}" is not supported here; give six fields, {_SIX_FIELDS} '
                '(e.g. "0 0 */6 * * *" for every six hours), or one of '
                f"{', '.join(_DESCRIPTORS)}"
            )
        parsed = parse_cron(six)
        schedule = CronSchedule(text, parsed.six_fields, parsed.day_or)
    else:
        fields = text.split()
        if len(fields) == 5:
            raise CronError(
                f'cron "{text}" has five fields, but KFP\'s cron has six, seconds first '
                f"({_SIX_FIELDS}), and would read these five as second to month; "
                f'you probably meant "0 {text}"'
            )
        if len(fields) != 6:
            raise CronError(
                f'cron "{text}" has {len(fields)} fields; KFP\'s cron has six: {_SIX_FIELDS}, '
                'e.g. "0 0 3 * * *" for 03:00 every day'
            )
        normalized = [
            _check_field(text, spec, value) for spec, value in zip(_FIELDS, fields, strict=True)
        ]
        starred = [any(r.split("/")[0] in ("*", "?") for r in f.split(",")) for f in fields]
        schedule = CronSchedule(text, " ".join(normalized), day_or=not (starred[3] or starred[5]))
    from croniter import CroniterBadDateError

    try:
        schedule.next_times(1)
    except CroniterBadDateError:
        raise CronError(
            f'cron "{text}" never fires (no matching date within {_YEARS_SEARCHED} years, '
            "e.g. 30 February): check day-of-month and month"
        ) from None
    return schedule


def _check_field(text: str, spec: tuple, value: str) -> str:
    """One field by robfig/cron v1.2.0's getField; its numeric form for croniter."""
    name, low, high, names = spec
    ranges = []
    for expr in value.split(","):
        where = f'cron "{text}": {name} "{value}"'
        range_part, *step = expr.split("/")
        if len(step) > 1:
            raise CronError(f"{where}: too many slashes in {expr!r}")
        bounds = range_part.split("-")
        if len(bounds) > 2:
            raise CronError(f"{where}: too many hyphens in {expr!r}")
        if bounds[0] in ("*", "?"):
            if len(bounds) > 1:
                raise CronError(f"{where}: {expr!r} is not a range; write LOW-HIGH")
            start, end = low, high
        else:
            start = _number(where, bounds[0], names)
            end = _number(where, bounds[-1], names)
        if step:
            if not re.fullmatch(r"[0-9]+", step[0]) or int(step[0]) == 0:
                raise CronError(f"{where}: the step after / must be a positive number")
            if len(bounds) == 1 and bounds[0] not in ("*", "?"):
                end = high  # robfig: "N/S" means N-max/S
        if start < low or end > high:
            extra = " (0 is Sunday; there is no 7)" if name == "day-of-week" else ""
            raise CronError(f"{where}: out of range {low}-{high}{extra}")
        if start > end:
            raise CronError(f"{where}: {expr!r} starts after it ends")
        star = bounds[0] in ("*", "?")
        core = "*" if star else (f"{start}" if start == end and not step else f"{start}-{end}")
        ranges.append(core + (f"/{step[0]}" if step else ""))
    return ",".join(ranges)


def _number(where: str, token: str, names: Mapping[str, int]) -> int:
    if token.lower() in names:
        return names[token.lower()]
    if re.fullmatch(r"[0-9]+", token):
        return int(token)
    allowed = "* ? , - / and numbers" + (
        f" or names ({', '.join(n.upper() for n in names)})" if names else ""
    )
    raise CronError(f"{where}: {token!r} is not a number; KFP's cron (robfig/cron) takes {allowed}")


# --- Version names ------------------------------------------------------------------------------


def default_version_name(checkout: Path | None = None) -> str:
    """``VERSION-COMMIT``, plus ``-dirty`` when ``git status --porcelain`` lists changes.

    The commit is ``DIGITS_GIT_COMMIT`` when set (images carry it; no dirty check there), else
    ``git rev-parse --short HEAD`` of the project's checkout.

    Raises:
        ScheduleError: no commit to name the version by.
    """
    commit = os.environ.get("DIGITS_GIT_COMMIT", "").strip()
    if commit:
        return f"{__version__}-{commit[:7]}"
    checkout = checkout or Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(checkout), *args], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    short = git("rev-parse", "--short", "HEAD")
    if not short:
        raise ScheduleError(
            f"cannot name the version: {checkout} is not a git checkout with a commit and "
            "DIGITS_GIT_COMMIT is not set; pass --version NAME"
        )
    dirty = git("status", "--porcelain")
    return f"{__version__}-{short}" + ("-dirty" if dirty else "")


def package_digest(package: Path) -> str:
    return hashlib.sha256(package.read_bytes()).hexdigest()


# --- Pipelines and versions ---------------------------------------------------------------------


# What happened to the version, as `lines()` says it.
UPLOADED = "uploaded"
SAME_PACKAGE = "already uploaded, same package: nothing sent"
NOT_COMPARED = "already uploaded: nothing sent"
OTHER_PACKAGE = "already uploaded from another package than this checkout's: that one is used"


@dataclass(frozen=True)
class PipelineVersion:
    """One uploaded version of a pipeline, and what this call did about it."""

    host: str
    pipeline_id: str
    pipeline_name: str
    version_id: str
    version_name: str
    parameters: Mapping[str, dict] | None  # from the version's own IR, when the server sent it
    created_pipeline: bool = False
    status: str = NOT_COMPARED

    @property
    def url(self) -> str:
        return f"{self.host}/#/pipelines/details/{self.pipeline_id}/version/{self.version_id}"

    def lines(self) -> list[str]:
        pipeline_state = "created" if self.created_pipeline else "found"
        version_state = self.status
        return [
            f"pipeline id  {self.pipeline_id}  ({self.pipeline_name}, {pipeline_state})",
            f"version id   {self.version_id}  ({self.version_name}, {version_state})",
            f"version UI   {self.url}",
        ]


def upload(
    target: KfpTarget, package: Path, pipeline_name: str, version_name: str
) -> PipelineVersion:
    """Create the pipeline when absent, then upload ``package`` as ``version_name`` unless there.

    A version of that name already there with the same package sha256 (in its description) is
    left as it is, and nothing is sent.

    Raises:
        ScheduleError: the name is taken by a different package, or the API refused.
    """
    client = connect(target)
    return _ensure_version(client, target, package, pipeline_name, version_name)


def _ensure_version(
    client,
    target: KfpTarget,
    package: Path,
    pipeline_name: str,
    version_name: str,
    before_upload: Callable[[], None] = lambda: None,
    strict: bool = True,
) -> PipelineVersion:
    """The version, uploaded from ``package`` when absent.

    ``strict``: a version of that name from another package is an error (it would be taken for
    this checkout's); otherwise it is used as it is (a version the user named).
    """
    digest = package_digest(package)
    pipeline = _find_pipeline(client, target, pipeline_name)
    if pipeline is not None:
        version = _find_version(client, target, pipeline.pipeline_id, version_name)
        if version is not None:
            theirs = _DIGEST.search(version.description or "")
            status = NOT_COMPARED if not theirs else SAME_PACKAGE
            if theirs and theirs[1] != digest:
                if strict:
                    raise ScheduleError(
                        f"version {version_name} of {pipeline_name} already exists with another "
                        f"package (sha256 {theirs[1][:12]} there, {digest[:12]} here); "
                        "commit your changes or pass --version NEW-NAME"
                    )
                status = OTHER_PACKAGE
            return _version(client, target, pipeline_name, version, status)
    before_upload()
    created_pipeline = pipeline is None
    if pipeline is None:
        models = client.api_models
        pipeline = _api(
            target,
            lambda: client.pipelines.pipeline_service_create_pipeline(
                pipeline=models.V2beta1Pipeline(
                    display_name=pipeline_name,
                    name=pipeline_name,
                    description="Kaggle Digit Recognizer: validate, train, register, predict",
                    namespace=target.namespace,
                )
            ),
        )
    description = f"digits {__version__}, package sha256 {digest}"
    uploaded = _api(
        target,
        lambda: client.upload_pipeline_version(
            str(package),
            version_name,
            pipeline_id=pipeline.pipeline_id,
            description=description,
        ),
    )
    return PipelineVersion(
        host=target.host,
        pipeline_id=pipeline.pipeline_id,
        pipeline_name=pipeline_name,
        version_id=uploaded.pipeline_version_id,
        version_name=version_name,
        parameters=pipeline_parameters(package),
        created_pipeline=created_pipeline,
        status=UPLOADED,
    )


def find_version(
    target: KfpTarget, pipeline_name: str, version_name: str, client=None
) -> PipelineVersion:
    """An uploaded version by pipeline and version name.

    Raises:
        ScheduleError: no such pipeline or version (naming the fix).
    """
    client = client or connect(target)
    pipeline = _find_pipeline(client, target, pipeline_name)
    if pipeline is None:
        raise ScheduleError(
            f"no pipeline named {pipeline_name} at {target.host}; upload it with `digits upload`"
        )
    version = _find_version(client, target, pipeline.pipeline_id, version_name)
    if version is None:
        raise ScheduleError(
            f"pipeline {pipeline_name} has no version {version_name}; upload it with "
            f"`digits upload --version {version_name}`"
        )
    return _version(client, target, pipeline_name, version)


def _version(
    client, target: KfpTarget, pipeline_name: str, version, status: str = NOT_COMPARED
) -> PipelineVersion:
    spec = version.pipeline_spec
    if not spec:  # a list answer without the IR: ask for the version itself
        spec = _api(
            target,
            lambda: client.get_pipeline_version(version.pipeline_id, version.pipeline_version_id),
        ).pipeline_spec
    return PipelineVersion(
        host=target.host,
        pipeline_id=version.pipeline_id,
        pipeline_name=pipeline_name,
        version_id=version.pipeline_version_id,
        version_name=version.display_name or version.name,
        parameters=spec_parameters(spec),
        status=status,
    )


def spec_parameters(spec: Mapping | None) -> dict[str, dict] | None:
    """A version's root parameters; KFP nests the IR under ``pipeline_spec`` when it has a
    platform spec (backend ``YamlStringToPipelineSpecStruct``)."""
    if not spec:
        return None
    spec = spec.get("pipeline_spec", spec)
    try:
        return dict(spec["root"].get("inputDefinitions", {}).get("parameters", {}))
    except (KeyError, TypeError, AttributeError):
        return None


def _find_pipeline(client, target: KfpTarget, name: str):
    found = [
        p
        for p in _all_pages(
            target,
            lambda token: client.list_pipelines(
                page_token=token,
                page_size=100,
                filter=_equals("display_name", name),
                namespace=target.namespace,
            ),
            "pipelines",
        )
        if p.display_name == name
    ]
    if len(found) > 1:
        raise ScheduleError(
            f"{len(found)} pipelines are named {name} at {target.host} "
            f"({', '.join(p.pipeline_id for p in found)}); rename or delete all but one"
        )
    return found[0] if found else None


def _find_version(client, target: KfpTarget, pipeline_id: str, name: str):
    found = [
        v
        for v in _all_pages(
            target,
            lambda token: client.list_pipeline_versions(
                pipeline_id, page_token=token, page_size=100, filter=_equals("display_name", name)
            ),
            "pipeline_versions",
        )
        if name in (v.display_name, v.name)
    ]
    return found[0] if found else None


# --- Runs of a version and recurring runs -------------------------------------------------------


def run_version(request: SubmitRequest, pipeline_name: str, version_name: str) -> SubmittedRun:
    """Create one run of an uploaded version (a pipeline_version_reference, no inline spec).

    Parameters are checked against that version's own IR before the run is created.
    """
    if request.package is not None:
        raise ScheduleError("pass --package or --version, not both")
    if request.enable_caching is not None:
        raise ScheduleError(
            "--cache/--no-cache cannot change a stored version: its caching was compiled in; "
            "upload a version compiled differently, or submit a package"
        )
    target = KfpTarget(request.host, request.token, request.namespace)
    client = connect(target)
    version = find_version(target, pipeline_name, version_name, client)
    if version.parameters is None:
        raise ScheduleError(
            f"{target.host} sent no pipeline spec for version {version_name} of {pipeline_name}, "
            "so its parameters cannot be checked; submit a package instead"
        )
    arguments = with_origin(typed_arguments(request.params, version.parameters), version, "")
    experiment = _api(
        target, lambda: client.create_experiment(request.experiment, namespace=target.namespace)
    )
    run_name = request.run_name or f"{version_name} {datetime.now():%Y-%m-%d %H-%M-%S}"
    run = _api(
        target,
        lambda: client.run_pipeline(
            experiment_id=experiment.experiment_id,
            job_name=run_name,
            params=arguments,
            pipeline_id=version.pipeline_id,
            version_id=version.version_id,
        ),
    )
    return SubmittedRun(
        run_id=run.run_id,
        experiment_id=experiment.experiment_id,
        url=f"{target.host}/#/runs/details/{run.run_id}",
        client=client,
    )


@dataclass(frozen=True)
class Schedule:
    """A recurring run as ``digits schedule --list`` shows it."""

    recurring_run_id: str
    name: str
    enabled: bool
    cron: str | None
    interval_seconds: int | None
    pipeline_id: str | None
    version_id: str | None
    parameters: Mapping[str, Any]
    max_concurrency: int | None
    no_catchup: bool
    created_at: datetime | None
    service_account: str | None = None
    version_name: str | None = None

    @classmethod
    def from_api(cls, run) -> Schedule:
        trigger = run.trigger
        cron = trigger.cron_schedule.cron if trigger and trigger.cron_schedule else None
        periodic = trigger.periodic_schedule if trigger else None
        reference = run.pipeline_version_reference
        mode = str(run.mode or "")
        enabled = mode == "ENABLE" if mode in ("ENABLE", "DISABLE") else run.status == "ENABLED"
        return cls(
            recurring_run_id=run.recurring_run_id,
            name=run.display_name,
            enabled=enabled,
            cron=cron,
            interval_seconds=int(periodic.interval_second) if periodic else None,
            pipeline_id=reference.pipeline_id if reference else None,
            version_id=reference.pipeline_version_id if reference else run.pipeline_version_id,
            parameters=dict((run.runtime_config.parameters or {}) if run.runtime_config else {}),
            max_concurrency=int(run.max_concurrency) if run.max_concurrency else None,
            no_catchup=bool(run.no_catchup),
            created_at=run.created_at,
            service_account=run.service_account or None,
        )

    def next_run(self, tz: tzinfo = UTC, now: datetime | None = None) -> str:
        if not self.enabled:
            return "-"
        if self.cron is None:
            return f"every {self.interval_seconds} s" if self.interval_seconds else "?"
        try:
            return f"{parse_cron(self.cron).next_times(1, now, tz)[0]:%Y-%m-%d %H:%M:%S}"
        except CronError:
            return "never (cron not understood)"


@dataclass(frozen=True)
class ScheduleRequest:
    """One recurring run to create (or to keep, when the same one already runs)."""

    target: KfpTarget
    cron: CronSchedule
    package: Path
    name: str = DEFAULT_SCHEDULE_NAME
    pipeline_name: str = DEFAULT_PIPELINE_NAME
    version_name: str | None = None  # None: default_version_name()
    experiment: str = "digits"
    params: Mapping[str, str] = field(default_factory=dict)  # raw KEY=VALUE text
    max_concurrency: int = 1
    no_catchup: bool = True
    service_account: str | None = None


@dataclass(frozen=True)
class ScheduleResult:
    version: PipelineVersion
    experiment: str
    experiment_id: str
    schedule: Schedule  # the one now in force
    created: bool  # False: an identical enabled schedule was already there
    disabled: list[Schedule] = field(default_factory=list)  # the ones it replaced

    @property
    def url(self) -> str:
        return f"{self.version.host}/#/recurringrun/details/{self.schedule.recurring_run_id}"

    def lines(self) -> list[str]:
        state = "created" if self.created else "already in force, same settings: nothing sent"
        lines = [
            *self.version.lines(),
            f"schedule     {self.schedule.recurring_run_id}  ({self.schedule.name}, {state}; "
            f"experiment {self.experiment})",
        ]
        lines += [
            f"replaced     {old.recurring_run_id}  ({old.name}, now disabled)"
            for old in self.disabled
        ]
        lines.append(f"schedule UI  {self.url}")
        return lines


def schedule(request: ScheduleRequest) -> ScheduleResult:
    """Pin a recurring run to a version (uploading it when absent), replacing one of that name.

    Parameters are checked before anything is sent when the version is this checkout's
    (no ``version_name``), else against the named version's own IR before anything is created.
    """
    local_parameters = pipeline_parameters(request.package)
    version_name = request.version_name or default_version_name()
    if request.version_name is None:
        typed_arguments(request.params, local_parameters)
    target = request.target
    client = connect(target)
    version = _ensure_version(
        client,
        target,
        request.package,
        request.pipeline_name,
        version_name,
        before_upload=lambda: typed_arguments(request.params, local_parameters),
        strict=request.version_name is None,
    )
    arguments = with_origin(
        typed_arguments(request.params, version.parameters or local_parameters),
        version,
        request.name,
        version.parameters or local_parameters,
    )
    experiment = _api(
        target, lambda: client.create_experiment(request.experiment, namespace=target.namespace)
    )
    existing = _schedules_named(client, target, experiment.experiment_id, request.name)
    for old in existing:
        if old.enabled and _same(old, request, version, arguments):
            return ScheduleResult(
                version, request.experiment, experiment.experiment_id, old, created=False
            )
    created = _api(
        target,
        lambda: client.create_recurring_run(
            experiment_id=experiment.experiment_id,
            job_name=request.name,
            description=f"digits schedule: {request.cron.expression}, version {version_name}",
            cron_expression=request.cron.expression,
            max_concurrency=request.max_concurrency,
            no_catchup=request.no_catchup,
            params=arguments,
            pipeline_id=version.pipeline_id,
            version_id=version.version_id,
            enabled=True,
            service_account=request.service_account,
        ),
    )
    disabled = []
    for old in existing:
        if old.enabled:
            _api(target, lambda old=old: client.disable_recurring_run(old.recurring_run_id))
            disabled.append(old)
    return ScheduleResult(
        version,
        request.experiment,
        experiment.experiment_id,
        Schedule.from_api(created),
        created=True,
        disabled=disabled,
    )


def with_origin(
    arguments: dict, version, schedule_name: str, parameters: Mapping | None = None
) -> dict:
    """The arguments plus the schedule's name and the pipeline version, where the version's
    pipeline takes them (the MLflow run and model version are tagged with both); a value the
    user passed with --param wins."""
    known = parameters if parameters is not None else (version.parameters or {})
    origin = {"pipeline_version": version.version_name, "schedule_name": schedule_name}
    for name, value in origin.items():
        if value and name in known:
            arguments.setdefault(name, value)
    return arguments


def _same(old: Schedule, request: ScheduleRequest, version: PipelineVersion, arguments) -> bool:
    return (
        old.version_id == version.version_id
        and old.cron == request.cron.expression
        and dict(old.parameters) == arguments
        and old.max_concurrency == request.max_concurrency
        and old.no_catchup == request.no_catchup
        # KFP fills in its default service account when none is given.
        and request.service_account in (None, old.service_account)
    )


def list_schedules(target: KfpTarget, experiment: str) -> list[Schedule] | None:
    """Every recurring run in the experiment, newest first, with its version's name.

    None when the experiment does not exist (nothing is created to list it).
    """
    client = connect(target)
    experiment_id = _experiment_id(client, target, experiment)
    if experiment_id is None:
        return None
    schedules = _schedules_named(client, target, experiment_id, None)
    names: dict[tuple, str] = {}
    named = []
    for item in schedules:
        key = (item.pipeline_id, item.version_id)
        if item.pipeline_id and item.version_id and key not in names:
            try:
                found = _api(target, lambda key=key: client.get_pipeline_version(*key))
                names[key] = found.display_name or found.name
            except SubmitError:
                names[key] = item.version_id  # deleted since, or not readable
        named.append(replace(item, version_name=names.get(key, item.version_id)))
    return named


def format_schedules(schedules: list[Schedule], tz: tzinfo = UTC) -> list[str]:
    zone = getattr(tz, "key", None) or str(tz)
    header = ("NAME", "STATE", "CRON", f"NEXT RUN ({zone})", "VERSION", "ID")
    rows = [
        (
            s.name,
            "enabled" if s.enabled else "disabled",
            s.cron or (f"every {s.interval_seconds} s" if s.interval_seconds else "-"),
            s.next_run(tz),
            s.version_name or "-",
            s.recurring_run_id,
        )
        for s in schedules
    ]
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table
    ]


def set_enabled(target: KfpTarget, experiment: str, name: str, enabled: bool) -> list[str]:
    """Disable every enabled schedule named ``name``, or enable the newest one; what happened.

    Raises:
        ScheduleError: no experiment or no schedule of that name.
    """
    client = connect(target)
    experiment_id = _experiment_id(client, target, experiment)
    found = _schedules_named(client, target, experiment_id, name) if experiment_id else []
    if not found:
        raise ScheduleError(
            f"no schedule named {name} in experiment {experiment}; "
            "`digits schedule --list` shows them"
        )
    if enabled:
        newest = found[0]
        if newest.enabled:
            return [f"{newest.recurring_run_id}  ({name}) already enabled: nothing sent"]
        _api(target, lambda: client.enable_recurring_run(newest.recurring_run_id))
        lines = [f"{newest.recurring_run_id}  ({name}) enabled"]
        lines += [
            f"{other.recurring_run_id}  ({name}, older) is enabled too"
            for other in found[1:]
            if other.enabled
        ]
        return lines
    lines = []
    for item in found:
        if item.enabled:
            _api(target, lambda item=item: client.disable_recurring_run(item.recurring_run_id))
            lines.append(f"{item.recurring_run_id}  ({name}) disabled")
    return lines or [f"{name}: every schedule of that name is already disabled: nothing sent"]


def _schedules_named(client, target: KfpTarget, experiment_id: str, name: str | None):
    """Schedules in the experiment (of that name, exactly), newest first."""
    found = [
        Schedule.from_api(run)
        for run in _all_pages(
            target,
            lambda token: client.list_recurring_runs(
                page_token=token,
                page_size=100,
                experiment_id=experiment_id,
                filter=_equals("display_name", name) if name else None,
            ),
            "recurring_runs",
        )
        if name is None or run.display_name == name
    ]
    oldest = datetime.min.replace(tzinfo=UTC)
    return sorted(found, key=lambda s: s.created_at or oldest, reverse=True)


def _experiment_id(client, target: KfpTarget, name: str) -> str | None:
    try:
        return _api(
            target, lambda: client.get_experiment(experiment_name=name, namespace=target.namespace)
        ).experiment_id
    except ValueError as error:  # kfp: "No experiment is found with name ..."
        if str(error).startswith("No experiment is found"):
            return None
        raise ScheduleError(f"experiment {name}: {error}") from None


# --- Plumbing -----------------------------------------------------------------------------------


def _api(target: KfpTarget, call: Callable[[], Any]) -> Any:
    """One KFP call: the links kfp.Client prints swallowed (we print ours), errors one line."""
    with contextlib.redirect_stdout(io.StringIO()):
        return call_api(target.host, call)


def _all_pages(target: KfpTarget, fetch: Callable[[str], Any], attribute: str) -> list:
    items, token = [], ""
    while True:
        page = _api(target, lambda token=token: fetch(token))
        items += getattr(page, attribute) or []
        token = page.next_page_token
        if not token:
            return items


def _equals(key: str, value: str) -> str:
    """A v2beta1 filter, as kfp.Client writes it (operation 1 is EQUALS)."""
    return json.dumps({"predicates": [{"operation": 1, "key": key, "stringValue": value}]})
