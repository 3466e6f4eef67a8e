"""One declaration per run parameter (digits.config.RUN_PARAMETERS): the pipeline, `digits run`,
the local runner and the compile-option commands are generated from it, and these tests fail
the moment one of them drifts."""

import click
import pytest
import typer
import yaml

from digits.app.cli import app
from digits.app.local_run import LocalRunSettings
from digits.app.options import COMPILE_OPTIONS, run_option_default
from digits.config import REQUIRED, RUN_PARAMETERS, run_parameter
from digits.pipelines.digits_pipeline import compile_pipeline

IR_TYPES = {str: "STRING", int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE", bool: "BOOLEAN"}


@pytest.fixture(scope="module")
def ir_parameters(tmp_path_factory) -> dict:
    package = compile_pipeline(tmp_path_factory.mktemp("ir") / "pipeline.yaml")
    spec = next(yaml.safe_load_all(package.read_text()))
    return spec["root"]["inputDefinitions"]["parameters"]


def _command(name: str) -> click.Command:
    return typer.main.get_command(app).commands[name]


def test_every_parameter_is_declared_once_with_a_type_and_help():
    names = [parameter.name for parameter in RUN_PARAMETERS]
    assert len(names) == len(set(names))
    options = [parameter.option for parameter in RUN_PARAMETERS if parameter.option]
    assert len(options) == len(set(options))
    for parameter in RUN_PARAMETERS:
        assert parameter.type in IR_TYPES, parameter.name
        assert parameter.help.strip().endswith("."), f"{parameter.name}: no help text"
        if not parameter.required:
            assert isinstance(parameter.default, parameter.type), parameter.name


def test_the_compiled_pipeline_takes_exactly_the_declared_parameters(ir_parameters):
    assert set(ir_parameters) == {parameter.name for parameter in RUN_PARAMETERS}
    for parameter in RUN_PARAMETERS:
        compiled = ir_parameters[parameter.name]
        assert compiled["parameterType"] == IR_TYPES[parameter.type], parameter.name
        assert compiled.get("isOptional", False) is not parameter.required, parameter.name
        if not parameter.required:
            assert compiled["defaultValue"] == parameter.default, parameter.name


def test_digits_run_has_an_option_per_declared_parameter_with_its_default_and_help():
    by_name = {param.name: param for param in _command("run").params}
    for parameter in RUN_PARAMETERS:
        if parameter.option is None:
            assert parameter.name not in by_name, parameter.name
            continue
        option = by_name[parameter.name]
        assert parameter.option in option.opts, parameter.name
        assert option.help == parameter.help, parameter.name
        assert option.default == run_option_default(parameter), parameter.name
        if parameter.type is bool:
            assert option.secondary_opts == [f"--no-{parameter.option[2:]}"], parameter.name


def test_the_local_runner_passes_every_parameter_and_refuses_unknown_ones(tmp_path):
    arguments = LocalRunSettings(output_dir=tmp_path).pipeline_arguments()
    assert set(arguments) == {parameter.name for parameter in RUN_PARAMETERS}
    for parameter in RUN_PARAMETERS:
        if parameter.local_default is REQUIRED and parameter.name != "mlflow_artifact_location":
            assert arguments[parameter.name] == parameter.default, parameter.name
    assert arguments["mlflow_tracking_uri"].startswith("sqlite:///")

    given = LocalRunSettings(arguments={"epochs": 3, "mlflow_tracking_uri": "http://x:5000"})
    assert given.pipeline_arguments()["epochs"] == 3
    assert given.pipeline_arguments()["mlflow_tracking_uri"] == "http://x:5000"
    with pytest.raises(ValueError, match="not pipeline parameters: epoch"):
        LocalRunSettings(arguments={"epoch": 3})


@pytest.mark.parametrize("command", ["compile", "submit", "upload", "schedule"])
def test_compile_options_are_the_same_on_every_command_that_compiles(command):
    by_name = {param.name: param for param in _command(command).params}
    for option in COMPILE_OPTIONS:
        assert option.name in by_name, f"{command}: --{option.name} missing"
        assert by_name[option.name].default == option.default


def test_run_parameter_lookup_names_the_missing_one():
    assert run_parameter("epochs").option == "--epochs"
    with pytest.raises(KeyError):
        run_parameter("epoch")
