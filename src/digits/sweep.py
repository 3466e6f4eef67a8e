"""Hyperparameter sweeps: search spaces as data, parsed once, and the engines that plan trials.

A search space maps settings of :class:`~digits.config.TrainConfig` to a list of values, a
``{range: [min, max]}`` or a ``{log_range: [min, max]}``; :data:`digits.config.SEARCH_SPACES`
names a few, and a user passes their own inline as JSON or YAML::

    {"engine": "tpe", "parameters": {"learning_rate": {"log_range": [1e-3, 1e-2]},
                                     "schedule": ["one_cycle", "cosine"]}}

(``parameters`` may be left out: every key but ``engine`` is then a setting). Every problem of a
spec is found before anything runs and reported at once, one line, naming the setting and the
fix. :func:`plan` then fixes all trials of a sweep up front, reproducibly from a seed:

- ``grid``: every combination of the lists (a seeded subset of them when ``trials`` is smaller);
- ``random``: independent draws, uniform or log-uniform over ranges, uniform over lists;
- ``tpe``: Optuna's TPE sampler. The plan is made before any trial has a result, so TPE learns
  only from *earlier* sweeps: the finished trials of the same space and base recipe in the MLflow
  experiment (``history``) are told to the study first. With fewer than
  :data:`TPE_STARTUP_TRIALS` of them it samples at random (TPE's start-up); after that each new
  trial is drawn from the model of the good and bad earlier ones, with the trials already
  planned in this sweep held as pending ("constant liar") so a batch spreads out.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TypedDict

from digits.config import (
    AUGMENTATIONS,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    SEARCH_SPACES,
    TrainConfig,
)
from digits.errors import RecipeError, SweepError

ENGINES = ("grid", "random", "tpe")
# Finished trials of the same space TPE needs before it models them (Optuna's default).
TPE_STARTUP_TRIALS = 10
# Sampled floats keep 4 significant digits: readable run names, the same value in every place.
SIGNIFICANT_DIGITS = 4
CHOICES = {
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "augmentation": AUGMENTATIONS,
    "precision": PRECISIONS,
}
_TYPES = {"int": int, "float": float, "str": str, "bool": bool}
SETTING_TYPES: dict[str, type] = {f.name: _TYPES[str(f.type)] for f in fields(TrainConfig)}
EXAMPLE = '{"learning_rate": {"log_range": [0.001, 0.01]}, "schedule": ["one_cycle", "cosine"]}'


@dataclass(frozen=True)
class Dimension:
    """One swept setting: a list of ``values``, or a range from ``low`` to ``high``."""

    name: str
    type: type
    values: tuple = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False

    @property
    def kind(self) -> str:
        if self.values:
            return "list"
        return "log_range" if self.log else "range"

    def spec(self):
        """The dimension as written in a spec."""
        return list(self.values) if self.values else {self.kind: [self.low, self.high]}


@dataclass(frozen=True)
class SearchSpace:
    name: str  # the named space, or "inline"
    engine: str
    dimensions: tuple[Dimension, ...]

    def spec(self) -> dict:
        """The space as a spec (what a parent run logs, what :func:`parse_space` reads back)."""
        return {
            "engine": self.engine,
            "parameters": {dimension.name: dimension.spec() for dimension in self.dimensions},
        }

    def grid(self) -> list[dict]:
        """Every combination of the lists, in spec order (only for list dimensions)."""
        names = [dimension.name for dimension in self.dimensions]
        return [
            dict(zip(names, combination, strict=True))
            for combination in itertools.product(*(d.values for d in self.dimensions))
        ]

    def digest(self, base: TrainConfig) -> str:
        """Identity of the space over ``base`` (seed left out): trials with the same digest were
        trained the same way but for the swept settings, so TPE may learn from them."""
        settings = {key: value for key, value in asdict(base).items() if key != "seed"}
        text = json.dumps(
            {"parameters": self.spec()["parameters"], "base": settings}, sort_keys=True
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def typed(self, values: dict[str, str]) -> dict | None:
        """MLflow's string params of a trial back as this space's values; None if any is
        missing or outside the space (so TPE is told only trials it can model)."""
        typed = {}
        for dimension in self.dimensions:
            text = values.get(dimension.name)
            if text is None:
                return None
            try:
                value = _from_text(dimension.type, text)
            except ValueError:
                return None
            inside = (
                value in dimension.values
                if dimension.values
                else dimension.low <= value <= dimension.high
            )
            if not inside:
                return None
            typed[dimension.name] = value
        return typed


@dataclass(frozen=True)
class Trial:
    """One planned trial: the recipe's settings it changes."""

    trial_id: int
    overrides: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return trial_name(self.trial_id)

    def label(self) -> str:
        """``trial-03 learning_rate=0.002 schedule=cosine``: the name MLflow shows."""
        return trial_label(self.trial_id, self.overrides)


@dataclass(frozen=True)
class FinishedTrial:
    """A trial of an earlier sweep of the same space: its values and validation accuracy."""

    overrides: dict
    value: float


def trial_name(trial_id: int) -> str:
    return f"trial-{trial_id:02d}"


def trial_label(trial_id: int, overrides: dict) -> str:
    details = " ".join(f"{key}={value}" for key, value in sorted(overrides.items()))
    return f"{trial_name(trial_id)} {details}".strip()


def parse_space(sweep: str) -> SearchSpace:
    """A named space of :data:`~digits.config.SEARCH_SPACES`, or an inline JSON/YAML spec.

    Raises:
        SweepError: every problem of the spec at once, in one line, each naming the setting
            and the fix.
    """
    text = sweep.strip()
    if text in SEARCH_SPACES:
        return _parse(text, SEARCH_SPACES[text])
    spec = _load(text)
    if not isinstance(spec, dict):
        raise SweepError(
            f"sweep {sweep!r}: not a named search space ({', '.join(SEARCH_SPACES)}) nor a "
            f"JSON/YAML mapping of TrainConfig settings; pass a name, or e.g. {EXAMPLE}"
        )
    return _parse("inline", spec)


def check_sweep(sweep: str, trials: int) -> SearchSpace:
    """:func:`parse_space` plus the trial count: what the CLI checks before a run starts."""
    space = parse_space(sweep)
    if trials < 1:
        raise SweepError(f"trials={trials}: a sweep needs at least 1 trial; pass --trials N")
    return space


def plan(
    space: SearchSpace, trials: int, seed: int, history: Iterable[FinishedTrial] = ()
) -> list[Trial]:
    """The sweep's trials, fixed before any runs; the same arguments give the same trials.

    ``history`` (finished trials of the same space, oldest first) is used by ``tpe`` only.
    """
    if trials < 1:
        raise SweepError(f"trials={trials}: a sweep needs at least 1 trial; pass --trials N")
    if space.engine == "grid":
        chosen = _grid(space, trials, seed)
    elif space.engine == "random":
        chosen = _random(space, trials, seed)
    else:
        chosen = _tpe(space, trials, seed, list(history))
    return [Trial(trial_id, overrides) for trial_id, overrides in enumerate(chosen)]


# --- Parsing ------------------------------------------------------------------------------------


def _load(text: str):
    """JSON, else YAML (a superset of most JSON a shell leaves intact); None if neither."""
    import yaml

    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def _parse(name: str, spec: dict) -> SearchSpace:
    problems: list[str] = []
    if "parameters" in spec:
        parameters = spec["parameters"]
        for key in sorted(set(spec) - {"engine", "parameters"}):
            problems.append(f"{key}: not a spec key; use engine and parameters only")
        if not isinstance(parameters, dict):
            problems.append(
                "parameters: not a mapping of TrainConfig settings; give e.g. "
                '{"learning_rate": [0.001, 0.003]}'
            )
            parameters = {}
    else:
        parameters = {key: value for key, value in spec.items() if key != "engine"}
    dimensions = []
    for setting, value in parameters.items():
        dimension = _dimension(str(setting), value, problems)
        if dimension is not None:
            dimensions.append(dimension)
    if not parameters and not problems:
        problems.append(
            f"no settings to sweep; give at least one TrainConfig setting, e.g. {EXAMPLE}"
        )
    lists_only = all(dimension.values for dimension in dimensions)
    engine = spec.get("engine", "grid" if dimensions and lists_only else "random")
    if engine not in ENGINES:
        problems.append(f"engine {engine!r}: not one of {', '.join(ENGINES)}; use one of them")
    elif engine == "grid":
        for dimension in dimensions:
            if not dimension.values:
                problems.append(
                    f"{dimension.name}: engine grid needs a list of values (it has a "
                    f"{dimension.kind}); list them, or use engine random or tpe"
                )
    if problems:
        where = f"search space {name!r}" if name != "inline" else "sweep"
        raise SweepError(f"{where}: " + "; ".join(problems))
    return SearchSpace(name, engine, tuple(dimensions))


def _dimension(setting: str, value, problems: list[str]) -> Dimension | None:
    kind = SETTING_TYPES.get(setting)
    if kind is None:
        close = difflib.get_close_matches(setting, SETTING_TYPES, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        problems.append(
            f"{setting}: not a TrainConfig setting; {hint}use one of {', '.join(SETTING_TYPES)}"
        )
        return None
    if isinstance(value, list):
        return _list_dimension(setting, kind, value, problems)
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("range", "log_range"):
        return _range_dimension(setting, kind, *next(iter(value.items())), problems)
    shape = "a mapping" if isinstance(value, dict) else f"the single value {value!r}"
    problems.append(
        f"{setting}: {shape} is not a list, {{range: [min, max]}} or {{log_range: [min, max]}}; "
        f"give one of those, e.g. [{_example(kind)}]"
    )
    return None


def _list_dimension(setting: str, kind: type, values: list, problems: list[str]):
    if not values:
        problems.append(f"{setting}: the list is empty; give at least one value")
        return None
    typed, before = [], len(problems)
    for value in values:
        converted = _typed(setting, kind, value, problems)
        if converted is not None and _valid(setting, converted, problems):
            typed.append(converted)
    if len(problems) > before:
        return None
    return Dimension(setting, kind, values=tuple(dict.fromkeys(typed)))


def _range_dimension(setting: str, kind: type, range_kind: str, bounds, problems: list[str]):
    if kind in (str, bool):
        problems.append(
            f"{setting}: a {range_kind} on a {kind.__name__} setting; give a list of values, "
            f"e.g. [{_example(kind)}]"
        )
        return None
    if not isinstance(bounds, list) or len(bounds) != 2:
        problems.append(f"{setting}: {range_kind} needs [min, max], two numbers; got {bounds!r}")
        return None
    before = len(problems)
    low, high = (_typed(setting, kind, bound, problems) for bound in bounds)
    if len(problems) > before:
        return None
    if low > high:
        problems.append(f"{setting}: {range_kind} [{low}, {high}] has min > max; swap the bounds")
        return None
    if range_kind == "log_range" and low <= 0:
        problems.append(
            f"{setting}: log_range [{low}, {high}] needs both bounds > 0; use range to include "
            "0, or a small positive min"
        )
        return None
    if not (_valid(setting, low, problems) and _valid(setting, high, problems)):
        return None
    return Dimension(setting, kind, low=low, high=high, log=range_kind == "log_range")


def _typed(setting: str, kind: type, value, problems: list[str]):
    """``value`` as the setting's type, or None with the problem recorded."""
    if kind in (int, float) and isinstance(value, str):
        # YAML reads 1e-3 (no dot) as text; a number is meant.
        with contextlib.suppress(ValueError):
            value = float(value) if kind is float else int(value)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[kind]
    if kind is int and isinstance(value, float) and value.is_integer():
        value, ok = int(value), True
    if not ok:
        problems.append(
            f"{setting}: {value!r} is not {_a(kind)} ({setting} is {_a(kind)}); "
            f"give values like {_example(kind)}"
        )
        return None
    if kind is float:
        value = float(value)
        if not math.isfinite(value):
            problems.append(f"{setting}: {value!r} is not a finite number; give a finite one")
            return None
    if kind is str and setting in CHOICES and value not in CHOICES[setting]:
        problems.append(
            f"{setting}: {value!r} is not one of {', '.join(CHOICES[setting])}; use one of them"
        )
        return None
    return value


def _valid(setting: str, value, problems: list[str]) -> bool:
    """Whether TrainConfig takes ``value`` for ``setting`` (e.g. a batch size of at least 1)."""
    try:
        replace(TrainConfig(), **{setting: value})
    except RecipeError as error:
        problems.append(f"{setting}: {value!r} is refused ({error}); give a valid value")
        return False
    return True


def _a(kind: type) -> str:
    return {bool: "a bool", int: "an int", float: "a number", str: "text"}[kind]


def _example(kind: type) -> str:
    return {bool: "false, true", int: "32, 64", float: "0.001, 0.003", str: '"a", "b"'}[kind]


def _from_text(kind: type, text: str):
    if kind is bool:
        if text not in ("True", "False", "true", "false"):
            raise ValueError(text)
        return text.lower() == "true"
    return kind(float(text)) if kind is int else kind(text)


# --- Engines ------------------------------------------------------------------------------------


def _rounded(dimension: Dimension, value):
    """A sampled range value at :data:`SIGNIFICANT_DIGITS`, kept inside the range."""
    if dimension.type is int:
        return int(min(max(round(value), dimension.low), dimension.high))
    value = float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    return min(max(value, dimension.low), dimension.high)


def _grid(space: SearchSpace, trials: int, seed: int) -> list[dict]:
    import numpy as np

    combinations = space.grid()
    if trials >= len(combinations):
        return combinations
    chosen = np.random.default_rng(seed).choice(len(combinations), size=trials, replace=False)
    return [combinations[index] for index in sorted(chosen)]


def _random(space: SearchSpace, trials: int, seed: int) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(seed)
    chosen = []
    for _ in range(trials):
        overrides = {}
        for dimension in space.dimensions:
            if dimension.values:
                value = dimension.values[int(rng.integers(len(dimension.values)))]
            elif dimension.log:
                value = math.exp(rng.uniform(math.log(dimension.low), math.log(dimension.high)))
            elif dimension.type is int:
                value = int(rng.integers(dimension.low, dimension.high + 1))
            else:
                value = rng.uniform(dimension.low, dimension.high)
            overrides[dimension.name] = (
                _rounded(dimension, value) if not dimension.values else value
            )
        chosen.append(overrides)
    return chosen


def _distributions(space: SearchSpace) -> dict:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    distributions = {}
    for dimension in space.dimensions:
        if dimension.values:
            distributions[dimension.name] = CategoricalDistribution(list(dimension.values))
        elif dimension.type is int:
            distributions[dimension.name] = IntDistribution(
                int(dimension.low), int(dimension.high), log=dimension.log
            )
        else:
            distributions[dimension.name] = FloatDistribution(
                dimension.low, dimension.high, log=dimension.log
            )
    return distributions


def _tpe(
    space: SearchSpace, trials: int, seed: int, history: Sequence[FinishedTrial]
) -> list[dict]:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = _distributions(space)
    with warnings.catch_warnings():  # constant_liar is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=TPE_STARTUP_TRIALS, constant_liar=True
        )
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for finished in history:
        study.add_trial(
            optuna.trial.create_trial(
                params=finished.overrides, distributions=distributions, value=finished.value
            )
        )
    chosen = []
    for _ in range(trials):
        asked = study.ask(distributions)
        chosen.append(
            {
                dimension.name: asked.params[dimension.name]
                if dimension.values
                else _rounded(dimension, asked.params[dimension.name])
                for dimension in space.dimensions
            }
        )
    return chosen


# --- What passes between the sweep's steps ------------------------------------------------------


class TrialPlan(TypedDict):
    """One item of the plan the trial loop fans out over: everything a trial takes from
    upstream steps (kfp.local 2.17.3 replaces any other upstream output in a ParallelFor body
    with the loop item; see components/plan_prediction_shards.py)."""

    trial_id: int
    trial_name: str
    overrides: str  # JSON object: TrainConfig setting -> value
    parent_run_id: str  # the sweep's MLflow run ("" when not logged)
    experiment_id: str
    space_digest: str


# In each trial's model directory, beside training.json: the trial, its status and its history.
TRIAL_FILENAME = "trial.json"
TRIAL_HISTORY_FILENAME = "history.json"


@dataclass
class TrialRecord:
    """One trial's outcome: written by its train step, completed by its evaluation.

    ``status`` is ``succeeded`` or ``failed`` (then ``error`` says why, in one line).
    """

    trial_id: int
    overrides: dict
    status: str = "succeeded"
    error: str = ""
    seconds: float = 0.0
    epochs_run: int = 0
    val_accuracy: float | None = None
    mlflow_run_id: str = ""  # the trial's child run
    parent_run_id: str = ""  # the sweep's run
    evaluation: dict | None = None

    @property
    def name(self) -> str:
        return trial_name(self.trial_id)

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def fail(self, error: BaseException) -> None:
        """Mark the trial failed, with ``error`` on one line of at most 500 characters."""
        text = " ".join(str(error).split()) or type(error).__name__
        self.status, self.error = "failed", text if len(text) <= 500 else text[:497] + "..."

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, path: Path) -> TrialRecord:
        return cls(**json.loads(Path(path).read_text()))
