"""The compiled KFP v2 IR: DAG shape, images, and each task's pod settings.

Pod settings are asserted task by task over every task of every DAG in the IR (sub-DAGs of
ParallelFor and Condition included), so a task added later is checked without a new test.
"""

import inspect
import subprocess
import sys
import textwrap

import pytest
import yaml

from digits.config import DEFAULT_RECIPE
from digits.errors import SettingsError
from digits.pipelines.digits_pipeline import ClusterSettings, GpuToleration, compile_pipeline
from digits.pipelines.placement import MLFLOW_CREDENTIAL_KEYS, Resources
from digits.pipelines.stages import component_modules

STEPS = component_modules()
EXPECTED_DEPENDENCIES = {
    "fingerprint-source": set(),
    "ingest-csv": {"fingerprint-source"},
    "validate-data": {"ingest-csv"},
    "normalize-and-split": {"validate-data"},
    # dsl.If(sweep == "") / dsl.Else: the single training or a sweep; their MLflow run, version
    # and the gate's decision merged by dsl.OneOf (condition-2 / condition-3 inside).
    "condition-branches-1": {"normalize-and-split", "validate-data"},
    "fingerprint-source-2": set(),
    "ingest-csv-2": {"fingerprint-source-2"},
    "validate-data-2": {"ingest-csv-2"},
    # Each shard's plan pins the exact version the gate left as champion, and the MLflow run.
    "plan-prediction-shards": {"condition-branches-1"},
    # The loop body takes only its plan from upstream tasks (see plan_prediction_shards).
    "for-loop-8": {"plan-prediction-shards", "validate-data-2"},
    "collect-predictions": {"for-loop-8"},
    # Inside condition-7 (pipeline parameter deploy): serve the gate's champion with KServe.
    "condition-7": {"condition-branches-1"},
    "condition-5": {"normalize-and-split", "validate-data"},
}
# Inside condition-2 (sweep empty): the single training, its tasks and edges as before sweeps.
EXPECTED_SINGLE_TRAINING_DEPENDENCIES = {
    "train-model": set(),
    "evaluate-model": {"train-model"},
    "register-model": {"train-model", "evaluate-model"},
    "promote-model": {"evaluate-model", "register-model"},
}
# Inside condition-3 (sweep set): plan, the trial loop (for-loop-4: train-trial, evaluate-trial),
# the best trial, its registration and gate (tests/test_sweep_pipeline.py checks it).
EXPECTED_SWEEP_DEPENDENCIES = {
    "plan-trials": set(),
    "for-loop-4": {"plan-trials"},
    "select-best": {"for-loop-4"},
    "register-model-2": {"select-best"},
    "promote-model-2": {"select-best", "register-model-2"},
}
# Inside condition-5 (pipeline parameter train_baseline): the classical baseline on CPU, its own
# MLflow run, and (condition-6, baseline_candidate) its own pass through the promotion gate.
EXPECTED_BASELINE_DEPENDENCIES = {
    "train-baseline": set(),
    "evaluate-model-2": {"train-baseline"},
    "register-model-3": {"train-baseline", "evaluate-model-2"},
    "condition-6": {"evaluate-model-2", "register-model-3"},
}
CONTAINER_TASKS = (
    set(EXPECTED_DEPENDENCIES)
    - {"for-loop-8", "condition-5", "condition-7", "condition-branches-1"}
    | set(EXPECTED_SINGLE_TRAINING_DEPENDENCIES)
    | set(EXPECTED_SWEEP_DEPENDENCIES) - {"for-loop-4"}
    | set(EXPECTED_BASELINE_DEPENDENCIES) - {"condition-6"}
    | {"batch-predict", "promote-model-3", "deploy-model", "train-trial", "evaluate-trial"}
)


def _compile(tmp_path, settings=None) -> tuple[dict, dict]:
    path = compile_pipeline(tmp_path / "pipeline.yaml", settings)
    documents = list(yaml.safe_load_all(path.read_text()))
    spec = documents[0]
    platform = documents[1]["platforms"]["kubernetes"] if len(documents) > 1 else {}
    return spec, platform


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return _compile(tmp_path_factory.mktemp("compiled"))


def dag_tasks(spec: dict, group: str) -> dict:
    """The tasks of a sub-DAG (a condition or loop) by its task name in its parent DAG."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    for dag in dags:
        if group in dag["tasks"]:
            return spec["components"][dag["tasks"][group]["componentRef"]["name"]]["dag"]["tasks"]
    raise KeyError(group)


def task_spec(spec: dict, name: str) -> dict:
    """A task's spec, wherever it is in the DAGs."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    (task,) = [dag["tasks"][name] for dag in dags if name in dag["tasks"]]
    return task


def test_dag_has_the_expected_tasks_and_edges(compiled):
    spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    assert {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()} == (
        EXPECTED_DEPENDENCIES
    )


def test_without_a_sweep_the_single_training_runs_its_tasks_as_before(compiled):
    spec, _ = compiled
    branches = dag_tasks(spec, "condition-branches-1")
    assert branches["condition-2"]["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--sweep'] == ''"
    )
    assert "!(" in branches["condition-3"]["triggerPolicy"]["condition"]  # dsl.Else
    single = dag_tasks(spec, "condition-2")
    assert {name: set(task.get("dependentTasks", [])) for name, task in single.items()} == (
        EXPECTED_SINGLE_TRAINING_DEPENDENCIES
    )
    sweep = dag_tasks(spec, "condition-3")
    assert {name: set(task.get("dependentTasks", [])) for name, task in sweep.items()} == (
        EXPECTED_SWEEP_DEPENDENCIES
    )
    train = single["train-model"]["inputs"]
    assert set(train["parameters"]) == {
        "recipe", "epochs", "batch_size", "seed", "checkpoint_root", "checkpoint_dir",
        "pipeline_run_id",
    }  # fmt: skip
    assert set(train["artifacts"]) == {"train", "validation"}
    assert single["register-model"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"] == {
        "producerTask": "train-model",
        "outputArtifactKey": "model",
    }


def test_baseline_branch_is_switchable_and_scored_by_the_same_step(compiled):
    spec, _ = compiled
    condition = spec["root"]["dag"]["tasks"]["condition-5"]
    assert condition["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--train_baseline'] == true"
    )
    branch = spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]
    assert {name: set(task.get("dependentTasks", [])) for name, task in branch.items()} == (
        EXPECTED_BASELINE_DEPENDENCIES
    )
    assert branch["train-baseline"]["taskInfo"]["name"] == "train baseline"
    assert branch["evaluate-model-2"]["taskInfo"]["name"] == "evaluate baseline"
    evaluated = branch["evaluate-model-2"]["inputs"]["artifacts"]
    assert evaluated["model"]["taskOutputArtifact"]["producerTask"] == "train-baseline"
    # The same validation rows as the CNN's evaluation, through the same component code.
    assert evaluated["validation"]["componentInputArtifact"] == (
        "pipelinechannel--normalize-and-split-validation"
    )
    executors = spec["deploymentSpec"]["executors"]
    assert (
        executors["exec-evaluate-model-2"]["container"]["command"]
        == (executors["exec-evaluate-model"]["container"]["command"])
    )
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["train_baseline"]["defaultValue"] is True


def test_baseline_runs_on_cpu_only_off_the_gpu_pool(compiled):
    spec, platform = compiled
    container = spec["deploymentSpec"]["executors"]["exec-train-baseline"]["container"]
    assert "accelerator" not in container.get("resources", {})
    assert container["image"] == ClusterSettings().image
    placed = platform["deploymentSpec"]["executors"]["exec-train-baseline"]
    assert "nodeSelector" not in placed and "tolerations" not in placed


def test_each_component_runs_its_step_function(compiled):
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
    assert with_gpu == {"exec-train-model", "exec-train-trial"}
    placed = platform["deploymentSpec"]["executors"]
    for executor in with_gpu:
        accelerator = executors[executor]["container"]["resources"]["accelerator"]
        assert accelerator["resourceType"] == "nvidia.com/gpu"
        assert accelerator["resourceCount"] == "1"
        assert placed[executor]["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
        assert placed[executor]["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]


def test_images_retries_and_caching_are_set_in_the_pipeline(compiled):
    spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    settings = ClusterSettings()
    training = {"exec-train-model", "exec-train-trial"}
    for executor in training:
        assert executors[executor]["container"]["image"] == settings.train_image
    assert {e["container"]["image"] for n, e in executors.items() if n not in training} == {
        settings.image
    }
    for name in ("train-model", "train-trial"):
        retry = task_spec(spec, name)["retryPolicy"]
        assert retry["maxRetryCount"] == settings.train_retries
        assert retry["backoffDuration"] == settings.train_retry_backoff
        # The train task learns its run id, for <checkpoint_root>/<run id>/.
        assert "pipeline_run_id" in task_spec(spec, name)["inputs"]["parameters"]
    register = task_spec(spec, "register-model")
    assert register["retryPolicy"]["maxRetryCount"] == 3
    assert register["cachingOptions"].get("enableCache") is not True


def test_pipeline_parameters_and_their_defaults(compiled):
    spec, _ = compiled
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    defaults = {name: p.get("defaultValue") for name, p in parameters.items()}
    # The recipe is resolved in one place (digits.config); 0 keeps the recipe's own value.
    assert defaults["recipe"] == DEFAULT_RECIPE
    assert (defaults["epochs"], defaults["batch_size"], defaults["seed"]) == (0, 0, 2)
    assert "learning_rate" not in defaults and "rho" not in defaults
    assert defaults["checkpoint_root"] == "" and defaults["checkpoint_dir"] == ""
    assert not {"learning_rate", "rho", "augment", "lr_patience"} & set(defaults)
    assert defaults["validation_fraction"] == 0.1 and defaults["split_seed"] == 2
    assert defaults["promotion_margin"] == 0.0 and defaults["max_recall_drop"] == 0.005
    assert defaults["predict_model_uri"] == "" and defaults["predict_shards"] == 1
    assert defaults["train_baseline"] is True and defaults["baseline_candidate"] is False
    assert defaults["train_data_uri"] is None  # required at submit time


def test_custom_pool_and_images(tmp_path):
    settings = ClusterSettings(
        image="registry.example/digits:1",
        train_image="registry.example/digits:1-gpu",
        gpu_node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
        gpu_tolerations=(GpuToleration(key="pool", operator="Equal", value="gpu", effect=None),),
    )
    spec, platform = _compile(tmp_path, settings)

    train = spec["deploymentSpec"]["executors"]["exec-train-model"]["container"]
    assert train["image"] == "registry.example/digits:1-gpu"
    assert train["resources"]["accelerator"]["resourceCount"] == "1"
    placed = platform["deploymentSpec"]["executors"]["exec-train-model"]
    assert placed["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert placed["tolerations"] == [{"key": "pool", "operator": "Equal", "value": "gpu"}]


@pytest.mark.parametrize("step", STEPS, ids=lambda step: step.__name__.rsplit(".", 1)[1])
def test_wrapper_bodies_are_self_contained(tmp_path, step):
    """KFP ships only the wrapper's source: every name it uses must be imported inside it."""
    source = textwrap.dedent(inspect.getsource(step.component("x").python_func))
    # Names, not star imports: under a star import ruff reports an undefined name as F405.
    preamble = (
        "image = 'x'\n"
        "from kfp import dsl\n"
        "from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, "
        "Model, Output\n"
        "from typing import Dict, List, NamedTuple\n"
    )
    path = tmp_path / "wrapper.py"
    path.write_text(preamble + source)
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "F821", str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


# Step function -> expected setting. Steps not named here get the defaults below.
GPU_STEPS = {"train_model", "train_trial"}
# Caching, chosen for every task (README, "Caching by content"): the data steps are reused when
# the content fingerprint (never cached itself) is unchanged; training and everything that
# writes to MLflow or reads the registry runs every time.
TASK_CACHING = {
    "fingerprint-source": False,
    "fingerprint-source-2": False,
    "ingest-csv": True,
    "ingest-csv-2": True,
    "validate-data": True,
    "validate-data-2": True,
    "normalize-and-split": True,
    "plan-prediction-shards": True,
    "train-model": False,
    "evaluate-model": False,
    "train-baseline": False,
    "evaluate-model-2": False,
    "register-model": False,
    "register-model-2": False,
    "register-model-3": False,
    "promote-model": False,
    "promote-model-2": False,
    "promote-model-3": False,
    # The sweep: it opens, writes and reads MLflow runs, and trains.
    "plan-trials": False,
    "train-trial": False,
    "evaluate-trial": False,
    "select-best": False,
    "batch-predict": False,
    "collect-predictions": False,
    "deploy-model": False,
}
RETRIES = {
    "train_model": 3,
    "train_trial": 3,
    "evaluate_trial": 3,
    "register_model": 3,
    "promote_model": 3,
    "deploy_model": 2,
}


def _container_tasks(spec: dict, platform: dict):
    """Yield (task name, step function, task spec, executor, platform config) for every task
    that runs a container, in the root DAG and in every sub-DAG."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    executors = spec["deploymentSpec"]["executors"]
    placed = platform.get("deploymentSpec", {}).get("executors", {})
    for dag in dags:
        for name, task in dag["tasks"].items():
            label = spec["components"][task["componentRef"]["name"]].get("executorLabel")
            if label is None:  # a sub-DAG, walked on its own
                continue
            container = executors[label]["container"]
            step = container["args"][container["args"].index("--function_to_execute") + 1]
            yield name, step, task, container, placed.get(label, {})


def _talks_to_mlflow(spec: dict, task: dict) -> bool:
    inputs = spec["components"][task["componentRef"]["name"]].get("inputDefinitions", {})
    return "mlflow_tracking_uri" in inputs.get("parameters", {})


def test_every_task_is_covered_by_the_walk(compiled):
    spec, platform = compiled
    walked = {name for name, *_ in _container_tasks(spec, platform)}
    assert walked == CONTAINER_TASKS


def test_every_task_runs_as_the_images_non_root_user(compiled):
    spec, platform = compiled
    for name, _, _, _, placed in _container_tasks(spec, platform):
        # The proto's int64 fields serialize as strings.
        assert placed.get("securityContext") == {
            "runAsUser": "1000",
            "runAsGroup": "1000",
            "runAsNonRoot": True,
        }, name


def test_every_task_prints_unbuffered_so_its_log_streams(compiled):
    spec, platform = compiled
    for name, _, _, container, _ in _container_tasks(spec, platform):
        assert {"name": "PYTHONUNBUFFERED", "value": "1"} in container.get("env", []), name


def test_every_task_has_cpu_and_memory_requests_and_limits(compiled):
    spec, platform = compiled
    settings = ClusterSettings()
    for name, step, _, container, _ in _container_tasks(spec, platform):
        sizes = settings.train_resources if step in GPU_STEPS else settings.step_resources
        resources = container.get("resources", {})
        assert resources.get("resourceCpuRequest") == sizes.cpu_request, name
        assert resources.get("resourceCpuLimit") == sizes.cpu_limit, name
        assert resources.get("resourceMemoryRequest") == sizes.memory, name
        assert resources.get("resourceMemoryLimit") == sizes.memory, name


def test_only_gpu_steps_get_a_gpu_and_the_gpu_pool(compiled):
    spec, platform = compiled
    for name, step, _, container, placed in _container_tasks(spec, platform):
        on_gpu = step in GPU_STEPS
        assert ("accelerator" in container.get("resources", {})) == on_gpu, name
        assert ("nodeSelector" in placed) == on_gpu, name
        assert ("tolerations" in placed) == on_gpu, name


def test_mlflow_credentials_come_from_the_optional_secret_only_where_mlflow_is_used(compiled):
    spec, platform = compiled
    expected = [
        {
            "keyToEnv": [{"envVar": key, "secretKey": key} for key in MLFLOW_CREDENTIAL_KEYS],
            "optional": True,
            "secretName": "mlflow-credentials",
            "secretNameParameter": {"runtimeValue": {"constant": "mlflow-credentials"}},
        }
    ]
    with_secret = set()
    for name, _, task, container, placed in _container_tasks(spec, platform):
        assert placed.get("secretAsEnv", []) == (expected if _talks_to_mlflow(spec, task) else [])
        if placed.get("secretAsEnv"):
            with_secret.add(name)
        # Never a literal credential in the container's own environment.
        env_names = {variable["name"] for variable in container.get("env", [])}
        assert not env_names & set(MLFLOW_CREDENTIAL_KEYS), name
    assert {
        "register-model", "promote-model", "batch-predict", "register-model-2", "plan-trials",
        "evaluate-trial", "select-best",
    } <= with_secret  # fmt: skip


def test_caching_and_retries_task_by_task(compiled):
    spec, platform = compiled
    seen = set()
    for name, step, task, _, _ in _container_tasks(spec, platform):
        seen.add(step)
        # The IR leaves enableCache out when false; absent cachingOptions would mean KFP's default
        # (cached), so every task must carry the key's container.
        assert "cachingOptions" in task, f"{name}: caching left to KFP's default"
        caching = task["cachingOptions"].get("enableCache", False)
        assert caching is TASK_CACHING[name], name
        retries = task.get("retryPolicy", {}).get("maxRetryCount")
        assert retries == RETRIES.get(step), name
    assert seen >= GPU_STEPS
    assert {name for name, *_ in _container_tasks(spec, platform)} == set(TASK_CACHING)


def test_sizes_user_and_secret_name_come_from_cluster_settings(tmp_path):
    settings = ClusterSettings(
        train_resources=Resources(cpu_request="6", cpu_limit="12", memory="30Gi"),
        step_resources=Resources(cpu_request="500m", cpu_limit="1", memory="2Gi"),
        run_as_user=2000,
        run_as_group=3000,
        mlflow_secret="tracking-auth",
    )
    spec, platform = _compile(tmp_path, settings)
    for name, step, _, container, placed in _container_tasks(spec, platform):
        sizes = settings.train_resources if step in GPU_STEPS else settings.step_resources
        assert container["resources"]["resourceCpuLimit"] == sizes.cpu_limit, name
        assert container["resources"]["resourceMemoryLimit"] == sizes.memory, name
        assert placed["securityContext"]["runAsUser"] == "2000", name
        assert placed["securityContext"]["runAsGroup"] == "3000", name
        for secret in placed.get("secretAsEnv", []):
            assert secret["secretName"] == "tracking-auth", name


def test_more_than_one_gpu_is_refused_before_compiling():
    with pytest.raises(SettingsError, match="--gpus 1"):
        ClusterSettings(gpu_count=2)


def test_register_gets_the_schedule_time_on_a_cluster_and_the_schedule_parameters(compiled):
    spec, _ = compiled
    inputs = task_spec(spec, "register-model")["inputs"]["parameters"]
    scheduled_at = inputs["scheduled_at"]["runtimeValue"]["constant"]
    assert scheduled_at == "{{$.pipeline_job_schedule_time_utc}}"
    for name in ("schedule_name", "pipeline_version"):
        # Inside a condition a pipeline parameter arrives as "pipelinechannel--<name>".
        assert inputs[name]["componentInputParameter"] == f"pipelinechannel--{name}"


def test_every_mlflow_task_retries_within_the_run_parameter_mlflow_timeout_s(compiled):
    spec, platform = compiled
    timed = {}
    for name, _, task, _, _ in _container_tasks(spec, platform):
        if _talks_to_mlflow(spec, task) and name != "deploy-model":  # Kubernetes sets its pace
            timed[name] = task["inputs"]["parameters"].get("mlflow_timeout_s", {})
    assert "batch-predict" in timed
    for name, source in timed.items():
        parameter = source.get("componentInputParameter", "")
        assert parameter.endswith("mlflow_timeout_s"), (name, source)
