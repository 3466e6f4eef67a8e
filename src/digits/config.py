"""Training recipes as data, resolved in one place.

A recipe is a :class:`TrainConfig`; :data:`RECIPES` names them and :func:`resolve_recipe` turns a
name plus the few overrides users set (epochs, batch size, seed) into the full config that the
train step runs and logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from digits.errors import RecipeError

OPTIMIZERS = ("rmsprop", "adamw", "sgd")
SCHEDULES = ("plateau", "one_cycle", "cosine")
# "layers": Keras random layers inside the model (on the accelerator when there is one);
# "pipeline": the same rotation/zoom/shift family applied to NumPy batches in the input pipeline.
AUGMENTATIONS = ("none", "layers", "pipeline")
# "float32" everywhere; "mixed": bfloat16 (float16 on GPUs without it) compute with float32
# weights, only where the hardware does it natively (see digits.model.compute_dtype_policy).
PRECISIONS = ("float32", "mixed")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of one training run; the defaults are the reference Kaggle kernel's."""

    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "rmsprop"
    # Peak rate for the one_cycle and cosine schedules, starting rate for plateau.
    learning_rate: float = 1e-3
    rho: float = 0.9  # RMSprop
    epsilon: float = 1e-8  # RMSprop
    momentum: float = 0.9  # SGD
    weight_decay: float = 0.0  # AdamW
    schedule: str = "plateau"
    # ReduceLROnPlateau on val_accuracy (schedule "plateau").
    lr_patience: int = 3
    lr_factor: float = 0.5
    min_learning_rate: float = 1e-5
    # Share of the steps spent warming up (one_cycle).
    warmup_fraction: float = 0.0
    label_smoothing: float = 0.0
    augmentation: str = "layers"
    rotation_degrees: float = 10.0
    zoom: float = 0.1
    shift: float = 0.1
    # BatchNormalization after every conv and the dense layer: an explicit variant, off by default.
    batch_norm: bool = False
    precision: str = "float32"
    seed: int = 2

    def __post_init__(self) -> None:
        for field_name, value, allowed in (
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("schedule", self.schedule, SCHEDULES),
            ("augmentation", self.augmentation, AUGMENTATIONS),
            ("precision", self.precision, PRECISIONS),
        ):
            if value not in allowed:
                raise RecipeError(
                    f"TrainConfig.{field_name}={value!r} is not one of {', '.join(allowed)}"
                )
        if self.epochs < 1 or self.batch_size < 1:
            raise RecipeError(
                f"epochs={self.epochs}, batch_size={self.batch_size}: both must be at least 1"
            )


RECIPES: dict[str, TrainConfig] = {
    # The Kaggle kernel exactly: RMSprop, batch 64, 30 epochs, ReduceLROnPlateau, random layers.
    "reference": TrainConfig(),
    # Chosen by measurement (bench/recipe_levers.py, bench/train_bench.py): same CNN, AdamW on
    # a one-cycle schedule (5% warm-up to 3e-3, cosine down), label smoothing, 14 epochs; the
    # kernel's augmentation done on NumPy batches by two prefetching threads instead of by the
    # Keras random layers (which cap a 2-core CPU at ~700 img/s); bfloat16 compute where the
    # hardware has it (twice the float32 images/s of oneDNN on an AVX512-BF16 CPU). Batch 64
    # over 128 and 256: with bfloat16 it costs under 10% images/s, and 128 reached 98.5%
    # held-out about as soon but ended lower, 256 was later and lower.
    "fast": TrainConfig(
        epochs=14,
        batch_size=64,
        optimizer="adamw",
        learning_rate=3e-3,
        weight_decay=1e-4,
        schedule="one_cycle",
        warmup_fraction=0.05,
        label_smoothing=0.1,
        augmentation="pipeline",
        precision="mixed",
    ),
}
DEFAULT_RECIPE = "fast"


# Search spaces for `sweep` (digits.sweep parses them, as it parses a user's inline spec): each
# maps TrainConfig settings of the recipe to a list of values, a {range: [min, max]} or a
# {log_range: [min, max]}; the engine plans the trials (grid, random, or Optuna's TPE).
SEARCH_SPACES: dict[str, dict] = {
    # The one-cycle peak and warm-up around the default recipe's (3e-3, 5%), and cosine beside it.
    "lr-schedule": {
        "engine": "tpe",
        "parameters": {
            "learning_rate": {"log_range": [1e-3, 1e-2]},
            "warmup_fraction": {"range": [0.0, 0.2]},
            "schedule": ["one_cycle", "cosine"],
        },
    },
    # How hard the recipe regularises: weight decay, label smoothing, augmentation strength.
    "regularisation": {
        "engine": "random",
        "parameters": {
            "weight_decay": {"log_range": [1e-5, 1e-3]},
            "label_smoothing": {"range": [0.0, 0.2]},
            "rotation_degrees": {"range": [0.0, 15.0]},
            "zoom": [0.05, 0.1, 0.15],
        },
    },
    # Every combination of batch size and peak rate (6 trials).
    "batch-lr-grid": {
        "engine": "grid",
        "parameters": {"batch_size": [64, 128], "learning_rate": [1.5e-3, 3e-3, 6e-3]},
    },
}
DEFAULT_SEARCH_SPACE = "lr-schedule"


def resolve_recipe(
    name: str,
    *,
    epochs: int = 0,
    batch_size: int = 0,
    seed: int = 2,
    overrides: Mapping[str, object] | None = None,
) -> TrainConfig:
    """The named recipe with the user's overrides; 0 keeps the recipe's own epochs/batch size.

    ``overrides`` (a sweep trial's values, by TrainConfig field) are applied last, so a trial's
    value wins over ``epochs``/``batch_size``/``seed``.

    Raises:
        RecipeError: ``name`` is not in :data:`RECIPES`, an override names no TrainConfig
            setting, or the result is not a valid TrainConfig.
    """
    if name not in RECIPES:
        raise RecipeError(
            f"unknown training recipe {name!r}: use one of {', '.join(sorted(RECIPES))}"
        )
    recipe = RECIPES[name]
    resolved = replace(
        recipe,
        epochs=epochs or recipe.epochs,
        batch_size=batch_size or recipe.batch_size,
        seed=seed,
    )
    if not overrides:
        return resolved
    unknown = sorted(set(overrides) - {field.name for field in fields(TrainConfig)})
    if unknown:
        raise RecipeError(
            f"{', '.join(unknown)}: not TrainConfig settings; override only "
            f"{', '.join(field.name for field in fields(TrainConfig))}"
        )
    return replace(resolved, **overrides)


# --- Run parameters: the pipeline's parameters, declared once -------------------------------
#
# The pipeline's signature (pipelines/digits_pipeline.py), the `digits run` options, the local
# runner's arguments and the `--param` checks of `digits submit`/`schedule` (read from the
# compiled IR) are all generated from this table; tests/test_parameters.py fails on any drift.

REQUIRED = object()  # no default: the caller must pass it (the two data URIs on a cluster)
DEFAULT_MLFLOW_URI = "http://mlflow.mlflow.svc.cluster.local:5000"


@dataclass(frozen=True)
class RunParameter:
    """One pipeline parameter.

    ``option`` is its `digits run` option (``None``: cluster-only, or set by the local runner;
    pass it with ``--param`` to submit and schedule); ``local_default`` is what `digits run` uses
    when the option is not given, where that differs from ``default`` (``REQUIRED`` keeps the
    pipeline's; ``None`` means the local runner fills it in, e.g. the bundled sample).
    """

    name: str
    type: type
    default: object
    help: str
    option: str | None = None
    local_default: object = REQUIRED

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


RUN_PARAMETERS: tuple[RunParameter, ...] = (
    # Data
    RunParameter(
        "train_data_uri", str, REQUIRED, "Labeled train CSV (path or URL).", "--data", None
    ),
    RunParameter(
        "predict_data_uri", str, REQUIRED, "Unlabeled test CSV to score (path or URL).",
        "--predict-data", None,
    ),
    RunParameter(
        "max_rejected_fraction", float, 0.0,
        "Share of invalid rows to drop before failing the run.", "--max-rejected-fraction",
    ),
    RunParameter(
        "validation_fraction", float, 0.1, "Share of labeled rows held out for validation."
    ),
    RunParameter("split_seed", int, 2, "Seed of the stratified train/validation split."),
    # Training
    RunParameter(
        "recipe", str, DEFAULT_RECIPE, "Training recipe: " + ", ".join(sorted(RECIPES)) + ".",
        "--recipe",
    ),
    RunParameter("epochs", int, 0, "Training epochs; 0: the recipe's.", "--epochs"),
    RunParameter("batch_size", int, 0, "Training batch size; 0: the recipe's.", "--batch-size"),
    RunParameter("seed", int, 2, "Seed of weights, order and augmentation.", "--seed"),
    RunParameter(
        "checkpoint_root", str, "",
        "Folder or fsspec URI under which each pipeline run checkpoints every epoch.",
    ),
    RunParameter(
        "checkpoint_dir", str, "",
        "Checkpoint every epoch in this folder itself; rerun with it to resume a killed run.",
        "--checkpoint-dir",
    ),
    # Sweep (digits.sweep): trials planned up front, trained in parallel, the best registered.
    RunParameter(
        "sweep", str, "",
        "Hyperparameter sweep: a search space (" + ", ".join(SEARCH_SPACES) + ") or an inline "
        "JSON/YAML spec; empty: one training.", "--sweep",
    ),
    RunParameter(
        "trials", int, 8, "Trials of a sweep (a grid runs at most its combinations).", "--trials"
    ),
    RunParameter(
        "sweep_seed", int, 0, "Seed of the sweep's engine: the same seed plans the same trials.",
        "--sweep-seed",
    ),
    RunParameter(
        "train_baseline", bool, True,
        "Fit the scikit-learn baseline beside the CNN (its own MLflow run).", "--baseline",
    ),
    RunParameter(
        "baseline_candidate", bool, False,
        "Register the baseline too and let it meet the promotion gate.", "--baseline-candidate",
    ),
    # MLflow
    RunParameter(
        "mlflow_tracking_uri", str, DEFAULT_MLFLOW_URI,
        "MLflow tracking URI; `digits run`: a SQLite store under --output-dir.", "--mlflow-uri",
        None,
    ),
    RunParameter("experiment_name", str, "digits", "MLflow experiment.", "--experiment"),
    RunParameter(
        "registered_model_name", str, "digits-cnn", "MLflow registered model.", "--model-name"
    ),
    RunParameter(
        "mlflow_artifact_location", str, "",
        "Artifact root of a new experiment; empty: the server's default.",
    ),
    RunParameter(
        "run_name", str, "", "MLflow run name; default: the recipe and what differs from it.",
        "--run-name",
    ),
    RunParameter("kfp_ui_url", str, "", "KFP UI address, for links from MLflow back to the run."),
    RunParameter(
        "schedule_name", str, "", "The recurring run that started this run (`digits schedule`)."
    ),
    RunParameter(
        "pipeline_version", str, "",
        "The uploaded pipeline version this run executes (`digits schedule`, `submit --version`).",
    ),
    RunParameter("mlflow_timeout_s", float, 300.0, "Seconds each MLflow step keeps retrying."),
    # Promotion
    RunParameter(
        "promotion_margin", float, 0.0, "Accuracy the new model must gain over the champion.",
        "--promotion-margin",
    ),
    RunParameter(
        "max_recall_drop", float, 0.005, "Largest per-digit recall drop a new champion may have.",
        "--max-recall-drop",
    ),
    # Prediction
    RunParameter(
        "predict_model_uri", str, "",
        "MLflow model URI to predict with; default: the version the gate left as champion.",
        "--predict-model-uri",
    ),
    RunParameter("predict_shards", int, 1, "Parallel prediction shards.", "--predict-shards"),
    # Serving
    RunParameter(
        "deploy", bool, False,
        "After the gate, create or patch a KServe InferenceService serving the champion "
        "(RBAC: manifests/serving).",
    ),
    RunParameter("deploy_name", str, "digits", "Name of the InferenceService."),
    RunParameter("deploy_namespace", str, "kubeflow", "Namespace of the InferenceService."),
    RunParameter(
        "canary_percent", int, 10, "Traffic share of a new version beside an older one."
    ),
)  # fmt: skip


def run_parameter(name: str) -> RunParameter:
    """The row of :data:`RUN_PARAMETERS` called ``name``."""
    for parameter in RUN_PARAMETERS:
        if parameter.name == name:
            return parameter
    raise KeyError(name)
