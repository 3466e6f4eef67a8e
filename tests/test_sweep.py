"""digits.sweep: search spaces parsed once (every bad spec one line naming the setting and the
fix), and the engines that plan a sweep's trials reproducibly."""

import json
import math

import pytest

from digits.config import SEARCH_SPACES, TrainConfig, resolve_recipe
from digits.errors import RecipeError, SweepError
from digits.sweep import (
    TPE_STARTUP_TRIALS,
    FinishedTrial,
    Trial,
    check_sweep,
    parse_space,
    plan,
)


@pytest.mark.parametrize("name", sorted(SEARCH_SPACES))
def test_every_named_space_parses_and_plans_valid_recipes(name):
    space = parse_space(name)
    assert space.name == name and space.engine == SEARCH_SPACES[name]["engine"]
    assert parse_space(json.dumps(space.spec())).spec() == space.spec()  # logged, read back
    for trial in plan(space, 4, seed=0):
        resolve_recipe("fast", overrides=trial.overrides)  # a valid TrainConfig


def test_inline_json_and_yaml_give_the_same_space():
    as_json = parse_space(
        '{"engine": "random", "parameters": {"learning_rate": {"log_range": [1e-4, 1e-2]},'
        ' "batch_norm": [false, true]}}'
    )
    as_yaml = parse_space(
        "engine: random\nlearning_rate: {log_range: [1e-4, 1e-2]}\nbatch_norm: [false, true]"
    )
    assert as_json.spec() == as_yaml.spec()
    assert as_json.spec()["parameters"] == {
        "learning_rate": {"log_range": [1e-4, 1e-2]},
        "batch_norm": [False, True],
    }


def test_the_engine_defaults_to_grid_for_lists_and_random_for_ranges():
    assert parse_space('{"batch_size": [32, 64]}').engine == "grid"
    assert parse_space('{"batch_size": [32, 64], "zoom": {"range": [0, 0.2]}}').engine == "random"
    # Whole numbers written as floats are fine for an int setting; ints for a float one.
    space = parse_space('{"epochs": {"range": [1.0, 3]}, "zoom": [0, 1]}')
    assert space.spec()["parameters"] == {"epochs": {"range": [1, 3]}, "zoom": [0.0, 1.0]}


BAD_SPECS = [
    ('{"learning_rat": [0.1]}', "learning_rat", "did you mean learning_rate"),
    ('{"learning_rate": []}', "learning_rate", "give at least one value"),
    ('{"learning_rate": {"range": [0.01, 0.001]}}', "learning_rate", "swap the bounds"),
    ('{"learning_rate": {"log_range": [0, 0.01]}}', "learning_rate", "bounds > 0"),
    ('{"weight_decay": {"log_range": [-1, 1]}}', "weight_decay", "bounds > 0"),
    ('{"epochs": [1, 2.5]}', "epochs", "is not an int"),
    ('{"batch_norm": {"range": [0, 1]}}', "batch_norm", "give a list of values"),
    ('{"batch_norm": [0, 1]}', "batch_norm", "is not a bool"),
    ('{"learning_rate": ["fast"]}', "learning_rate", "is not a number"),
    ('{"optimizer": ["adam"]}', "optimizer", "not one of rmsprop, adamw, sgd"),
    ('{"batch_size": [0, 64]}', "batch_size", "give a valid value"),
    ('{"learning_rate": 0.01}', "learning_rate", "is not a list"),
    ('{"learning_rate": {"rnge": [0, 1]}}', "learning_rate", "is not a list"),
    ('{"zoom": {"range": [0.1]}}', "zoom", "two numbers"),
    ('{"engine": "grid", "zoom": {"range": [0, 0.2]}}', "zoom", "engine grid needs a list"),
    ('{"engine": "bayes", "zoom": [0.1]}', "engine 'bayes'", "use one of them"),
    ("{}", "no settings to sweep", "give at least one"),
    ("lr", "not a named search space", "pass a name"),
    ('{"parameters": [1], "engine": "grid"}', "parameters", "give e.g."),
]


@pytest.mark.parametrize(("spec", "names", "fix"), BAD_SPECS, ids=[s[1] for s in BAD_SPECS])
def test_a_bad_spec_is_one_line_naming_the_setting_and_the_fix(spec, names, fix):
    with pytest.raises(SweepError) as raised:
        parse_space(spec)
    message = str(raised.value)
    assert "\n" not in message
    assert names in message and fix in message, message


def test_every_problem_of_a_spec_is_reported_at_once():
    with pytest.raises(SweepError) as raised:
        parse_space('{"learning_rat": [1], "zoom": [], "epochs": {"range": [3, 1]}}')
    message = str(raised.value)
    assert message.count(";") >= 2
    assert all(name in message for name in ("learning_rat", "zoom", "epochs"))


def test_a_sweep_needs_a_trial():
    with pytest.raises(SweepError, match="trials=0.*--trials"):
        check_sweep("lr-schedule", 0)


def test_grid_runs_every_combination_or_a_seeded_subset():
    space = parse_space('{"batch_size": [32, 64], "zoom": [0.0, 0.1, 0.2]}')
    everything = plan(space, 100, seed=0)
    assert [t.overrides for t in everything] == [
        {"batch_size": b, "zoom": z} for b in (32, 64) for z in (0.0, 0.1, 0.2)
    ]
    assert [t.trial_id for t in everything] == list(range(6))
    subset = plan(space, 3, seed=5)
    assert len(subset) == 3 and plan(space, 3, seed=5) == subset
    assert all(t.overrides in [e.overrides for e in everything] for t in subset)


def test_random_is_reproducible_from_its_seed_and_stays_inside_the_space():
    space = parse_space(
        '{"learning_rate": {"log_range": [1e-4, 1e-2]}, "epochs": {"range": [1, 3]},'
        ' "schedule": ["one_cycle", "cosine"]}'
    )
    trials = plan(space, 20, seed=7)
    assert trials == plan(space, 20, seed=7)
    assert trials != plan(space, 20, seed=8)
    for trial in trials:
        rate = trial.overrides["learning_rate"]
        assert 1e-4 <= rate <= 1e-2 and float(f"{rate:.4g}") == rate
        assert trial.overrides["epochs"] in (1, 2, 3) and type(trial.overrides["epochs"]) is int
        assert trial.overrides["schedule"] in ("one_cycle", "cosine")
    # Log-uniform: about as many draws below 1e-3 as above.
    assert 5 <= sum(t.overrides["learning_rate"] < 1e-3 for t in trials) <= 15


def test_tpe_without_history_is_its_seeded_random_start_up():
    space = parse_space('{"engine": "tpe", "zoom": {"range": [0.0, 0.2]}, "batch_norm": [false]}')
    trials = plan(space, 5, seed=3)
    assert trials == plan(space, 5, seed=3) != plan(space, 5, seed=4)
    assert all(0.0 <= t.overrides["zoom"] <= 0.2 for t in trials)


def test_tpe_learns_from_earlier_sweeps_of_the_same_space():
    space = parse_space('{"engine": "tpe", "learning_rate": {"log_range": [1e-4, 1e-1]}}')
    # Earlier sweeps: the closer to 1e-2, the better.
    rates = [10 ** (-4 + 3 * i / 29) for i in range(30)]
    history = [
        FinishedTrial({"learning_rate": rate}, 1 - abs(math.log10(rate) + 2)) for rate in rates
    ]
    assert len(history) >= TPE_STARTUP_TRIALS
    informed = plan(space, 8, seed=0, history=history)
    assert informed == plan(space, 8, seed=0, history=history)

    def distance(trials: list[Trial]) -> float:
        return sum(abs(math.log10(t.overrides["learning_rate"]) + 2) for t in trials) / len(trials)

    assert distance(informed) < distance(plan(space, 8, seed=0)) < 2
    assert distance(informed) < 0.6


def test_history_from_mlflow_params_is_read_back_typed_and_inside_the_space():
    space = parse_space('{"epochs": {"range": [1, 3]}, "batch_norm": [false, true]}')
    assert space.typed({"epochs": "2", "batch_norm": "True", "other": "x"}) == {
        "epochs": 2,
        "batch_norm": True,
    }
    assert space.typed({"epochs": "9", "batch_norm": "True"}) is None  # outside the range
    assert space.typed({"epochs": "2"}) is None


def test_the_space_digest_follows_the_space_and_base_recipe_not_the_seed():
    space = parse_space("lr-schedule")
    base = resolve_recipe("fast", epochs=2)
    assert space.digest(base) == space.digest(resolve_recipe("fast", epochs=2, seed=9))
    assert space.digest(base) != space.digest(resolve_recipe("fast", epochs=3))
    assert space.digest(base) != parse_space("regularisation").digest(base)


def test_resolve_recipe_applies_a_trials_overrides_last():
    config = resolve_recipe(
        "fast", epochs=1, overrides={"learning_rate": 0.005, "epochs": 2, "batch_norm": True}
    )
    assert (config.learning_rate, config.epochs, config.batch_norm) == (0.005, 2, True)
    assert config.optimizer == "adamw"  # the rest is the recipe's
    with pytest.raises(RecipeError, match="learning_rat: not TrainConfig settings"):
        resolve_recipe("fast", overrides={"learning_rat": 0.1})
    with pytest.raises(RecipeError, match="optimizer"):
        resolve_recipe("fast", overrides={"optimizer": "adam"})
    assert resolve_recipe("fast", overrides={}) == resolve_recipe("fast")
    assert isinstance(resolve_recipe("reference"), TrainConfig)
