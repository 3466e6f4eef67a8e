"""Compile-time cluster settings: images, pod sizes, GPU placement, pod identity, secrets.

Read by the pipeline's pod wiring (``pipelines/placement.py``) and by the InferenceService
renderer (:mod:`digits.inference_service`), so both run the same image as the same user with the
same MLflow credentials.
"""

from dataclasses import dataclass, field

from digits import __version__

# Keys of the Kubernetes Secret that MLflow's client reads as environment variables (basic auth).
MLFLOW_CREDENTIAL_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@dataclass(frozen=True)
class GpuToleration:
    """Lets the training pod onto tainted GPU nodes (GKE and AKS taint them like this)."""

    key: str = "nvidia.com/gpu"
    operator: str = "Exists"
    value: str | None = None
    effect: str | None = "NoSchedule"


@dataclass(frozen=True)
class Resources:
    """CPU request and limit, and memory (request = limit: memory cannot be throttled, only
    OOM-killed, so a pod never counts on memory the node did not reserve for it)."""

    cpu_request: str
    cpu_limit: str
    memory: str


@dataclass(frozen=True)
class ClusterSettings:
    """Compile-time settings: images, pod sizes, GPU placement, pod identity and secrets."""

    image: str = f"digits-pipeline:{__version__}"
    train_image: str = f"digits-pipeline:{__version__}-gpu"
    # Set on GPU nodes by NVIDIA's GPU feature discovery (GPU operator).
    gpu_node_selector: dict[str, str] = field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"}
    )
    gpu_tolerations: tuple[GpuToleration, ...] = (GpuToleration(),)
    gpu_count: int = 1
    train_resources: Resources = Resources(cpu_request="4", cpu_limit="8", memory="16G")
    step_resources: Resources = Resources(cpu_request="1", cpu_limit="2", memory="4G")
    # With checkpoint_root set, each retry resumes after the last finished epoch, so a
    # preemption costs at most one epoch; size retries to the preemptions a run may meet.
    train_retries: int = 3
    train_retry_backoff: str = "30s"
    # A sweep's trials training at once (each on one GPU of the pool); 0: all. KFP's IR takes
    # the loop's parallelism as a number fixed at compile time, not as a run parameter.
    trial_parallelism: int = 4
    # The images' `digits` user (docker/Dockerfile: USER 1000:1000).
    run_as_user: int = 1000
    run_as_group: int = 1000
    # Secret with MLFLOW_CREDENTIAL_KEYS; optional, so a tracking server without auth works.
    mlflow_secret: str = "mlflow-credentials"

    def __post_init__(self) -> None:
        from digits.errors import SettingsError

        if self.trial_parallelism < 0:
            raise SettingsError(
                f"trial_parallelism={self.trial_parallelism}: pass 0 (every trial at once) or "
                "more (--trial-parallelism N)"
            )
        if self.gpu_count > 1:
            raise SettingsError(
                f"{self.gpu_count} GPUs requested, but the train step trains on one device, so "
                f"{self.gpu_count - 1} would sit idle: compile with --gpus 1 (a bigger GPU is "
                "the way to go faster)."
            )
