"""How the pipeline's pods run on a cluster: images, sizes, GPU placement, identity, secrets.

The DAG in ``digits_pipeline`` calls these helpers; kfp.local ignores everything they set, so one
pipeline definition serves local runs and the cluster. What KFP 2.17 adds on its own (see
README, "Secure pods"): the backend's Argo compiler gives every executor pod
``seccompProfile: RuntimeDefault`` and its user container ``allowPrivilegeEscalation: false``
and ``capabilities: drop [ALL]``; the driver drops ALL capabilities again when a task carries
a security context. It does not set ``runAsNonRoot`` or a uid on user containers (images such as
``python:3.12`` run as root), which is what :func:`secure` adds.
"""

# The settings live in the library (the InferenceService renderer reads them too); re-exported.
from digits.cluster import (  # noqa: F401
    MLFLOW_CREDENTIAL_KEYS,
    ClusterSettings,
    GpuToleration,
    Resources,
)


def secure(task, settings: ClusterSettings) -> None:
    """Run the task's container as the image's non-root user."""
    from kfp import kubernetes

    kubernetes.set_security_context(
        task,
        run_as_user=settings.run_as_user,
        run_as_group=settings.run_as_group,
        run_as_non_root=True,
    )


def size(task, resources: Resources) -> None:
    """Set CPU and memory requests and limits."""
    task.set_cpu_request(resources.cpu_request).set_cpu_limit(resources.cpu_limit)
    task.set_memory_request(resources.memory).set_memory_limit(resources.memory)


def place_on_gpu_pool(task, settings: ClusterSettings) -> None:
    """Request GPUs, size the task and pin it to the GPU node pool."""
    from kfp import kubernetes

    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(settings.gpu_count)
    size(task, settings.train_resources)
    # A preempted GPU node kills the pod; retrying reschedules it and resumes the checkpoint.
    task.set_retry(
        num_retries=settings.train_retries,
        backoff_duration=settings.train_retry_backoff,
        backoff_factor=2.0,
        backoff_max_duration="600s",
    )
    for key, value in settings.gpu_node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for toleration in settings.gpu_tolerations:
        kubernetes.add_toleration(
            task,
            key=toleration.key,
            operator=toleration.operator,
            value=toleration.value,
            effect=toleration.effect,
        )


def use_mlflow_credentials(task, settings: ClusterSettings) -> None:
    """Give a task that talks to MLflow the tracking credentials from the Kubernetes Secret."""
    from kfp import kubernetes

    kubernetes.use_secret_as_env(
        task,
        secret_name=settings.mlflow_secret,
        secret_key_to_env={key: key for key in MLFLOW_CREDENTIAL_KEYS},
        optional=True,
    )


def stream_output(task) -> None:
    """Unbuffered Python output: the pod's log (and kfp.local's task log) gets each line as it is
    printed, not in blocks or when the task ends; the images set it too, other images may not."""
    task.set_env_variable("PYTHONUNBUFFERED", "1")


def secure_and_size_all_tasks(settings: ClusterSettings) -> None:
    """Secure every container task of the pipeline being defined, stream its output, and size
    those not sized yet.

    Call it last in the ``@dsl.pipeline`` body: it walks all tasks built so far (inside
    ParallelFor and Condition groups too), so a task added later is covered without a new line.
    """
    from kfp.dsl import pipeline_context

    for task in pipeline_context.Pipeline.get_default_pipeline().tasks.values():
        if task.container_spec is None:  # importers and nested pipelines have no container
            continue
        secure(task, settings)
        stream_output(task)
        if task.container_spec.resources is None:
            size(task, settings.step_resources)
