"""The compiled KFP v2 IR: DAG shape, images and GPU placement of the training task alone."""

import inspect
import subprocess
import sys
import textwrap

import pytest
import yaml

from digits.components import (
    batch_predict,
    evaluate_model,
    ingest_csv,
    normalize_and_split,
    register_model,
    train_model,
    validate_data,
)
from digits.pipelines.digits_pipeline import ClusterSettings, GpuToleration, compile_pipeline

STEPS = [
    ingest_csv,
    validate_data,
    normalize_and_split,
    train_model,
    evaluate_model,
    register_model,
    batch_predict,
]
EXPECTED_DEPENDENCIES = {
    "ingest-csv": set(),
    "validate-data": {"ingest-csv"},
    "normalize-and-split": {"validate-data"},
    "train-model": {"normalize-and-split"},
    "evaluate-model": {"train-model", "normalize-and-split"},
    "register-model": {"train-model", "evaluate-model"},
    "ingest-csv-2": set(),
    "validate-data-2": {"ingest-csv-2"},
    "batch-predict": {"train-model", "validate-data-2", "register-model"},
}


def _compile(tmp_path, settings=None) -> tuple[dict, dict]:
    path = compile_pipeline(tmp_path / "pipeline.yaml", settings)
    documents = list(yaml.safe_load_all(path.read_text()))
    spec = documents[0]
    platform = documents[1]["platforms"]["kubernetes"] if len(documents) > 1 else {}
    return spec, platform


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return _compile(tmp_path_factory.mktemp("compiled"))


def test_dag_has_the_expected_tasks_and_edges(compiled):
    spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    assert {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()} == (
        EXPECTED_DEPENDENCIES
    )


def test_seven_components_each_running_its_step_function(compiled):
    spec, _ = compiled
    functions = set()
    for executor in spec["deploymentSpec"]["executors"].values():
        args = executor["container"]["args"]
        functions.add(args[args.index("--function_to_execute") + 1])
    assert functions == {step.__name__.rsplit(".", 1)[1] for step in STEPS}


def test_only_the_training_task_asks_for_a_gpu_and_the_gpu_pool(compiled):
    spec, platform = compiled
    executors = spec["deploymentSpec"]["executors"]
    with_gpu = {
        name
        for name, executor in executors.items()
        if "accelerator" in executor["container"].get("resources", {})
    }
    assert with_gpu == {"exec-train-model"}
    accelerator = executors["exec-train-model"]["container"]["resources"]["accelerator"]
    assert accelerator["resourceType"] == "nvidia.com/gpu" and accelerator["resourceCount"] == "1"

    placed = platform["deploymentSpec"]["executors"]
    assert set(placed) == {"exec-train-model"}
    assert placed["exec-train-model"]["nodeSelector"]["labels"] == {
        "nvidia.com/gpu.present": "true"
    }
    assert placed["exec-train-model"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_images_retries_and_caching_are_set_in_the_pipeline(compiled):
    spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    settings = ClusterSettings()
    assert executors["exec-train-model"]["container"]["image"] == settings.train_image
    assert {e["container"]["image"] for n, e in executors.items() if n != "exec-train-model"} == {
        settings.image
    }
    tasks = spec["root"]["dag"]["tasks"]
    retry = tasks["train-model"]["retryPolicy"]
    assert retry["maxRetryCount"] == settings.train_retries
    assert retry["backoffDuration"] == settings.train_retry_backoff
    # The train task learns its run id, for <checkpoint_root>/<run id>/.
    train_inputs = tasks["train-model"]["inputs"]["parameters"]
    assert "pipeline_run_id" in train_inputs
    assert tasks["register-model"]["retryPolicy"]["maxRetryCount"] == 3
    assert tasks["register-model"]["cachingOptions"].get("enableCache") is not True


def test_pipeline_takes_a_recipe_name_and_few_overrides(compiled):
    from digits.config import DEFAULT_RECIPE

    spec, _ = compiled
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    defaults = {name: p.get("defaultValue") for name, p in parameters.items()}
    assert defaults["recipe"] == DEFAULT_RECIPE
    # 0: the recipe's own value; the recipe's other settings are resolved in digits.config.
    assert defaults["epochs"] == 0 and defaults["batch_size"] == 0 and defaults["seed"] == 2
    assert defaults["checkpoint_root"] == "" and defaults["checkpoint_dir"] == ""
    assert not {"learning_rate", "rho", "augment", "lr_patience"} & set(defaults)
    assert defaults["validation_fraction"] == 0.1 and defaults["split_seed"] == 2
    assert defaults["train_data_uri"] is None  # required at submit time


def test_custom_pool_and_images(tmp_path):
    settings = ClusterSettings(
        image="registry.example/digits:1",
        train_image="registry.example/digits:1-gpu",
        gpu_node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
        gpu_tolerations=(GpuToleration(key="pool", operator="Equal", value="gpu", effect=None),),
        gpu_count=2,
    )
    spec, platform = _compile(tmp_path, settings)

    train = spec["deploymentSpec"]["executors"]["exec-train-model"]["container"]
    assert train["image"] == "registry.example/digits:1-gpu"
    assert train["resources"]["accelerator"]["resourceCount"] == "2"
    placed = platform["deploymentSpec"]["executors"]["exec-train-model"]
    assert placed["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert placed["tolerations"] == [{"key": "pool", "operator": "Equal", "value": "gpu"}]


@pytest.mark.parametrize("step", STEPS, ids=lambda step: step.__name__.rsplit(".", 1)[1])
def test_wrapper_bodies_are_self_contained(tmp_path, step):
    """KFP ships only the wrapper's source: every name it uses must be imported inside it."""
    source = textwrap.dedent(inspect.getsource(step.component("x").python_func))
    preamble = "from kfp import dsl\nfrom kfp.dsl import *\nfrom typing import *\n"
    path = tmp_path / "wrapper.py"
    path.write_text(preamble + source)
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "F821", str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout
