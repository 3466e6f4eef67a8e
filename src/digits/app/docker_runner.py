"""`digits run --runner docker`: kfp.local's DockerRunner on the locally built images, checked
before the run starts (a daemon answers, the images exist, GPUs can be passed through)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from digits.errors import DockerRunError


@dataclass(frozen=True)
class DockerSettings:
    """Run every task in its container image instead (kfp.local.DockerRunner)."""

    image: str | None = None  # default: the pipeline's CPU image, ClusterSettings.image
    train_image: str | None = None  # default: the GPU image with ``gpus``, else ``image``
    gpus: str | None = None  # "all" or a count: GPUs passed through to the containers


def docker_runner(settings: DockerSettings, paths: list[str]):
    """(kfp.local.DockerRunner, ClusterSettings naming its images) after checking both exist.

    DockerRunner bind-mounts only the pipeline root; the local files among ``paths`` (inputs,
    the default MLflow store) are mounted at the same paths so the tasks' arguments stay valid.
    kfp 2.17 gives every container the same arguments, so ``gpus`` reaches all of them; only
    the train image carries CUDA.
    """
    import docker
    from docker.types import DeviceRequest, Mount
    from kfp import local

    from digits.pipelines.digits_pipeline import ClusterSettings

    defaults = ClusterSettings()
    image = settings.image or defaults.image
    train_image = settings.train_image or (defaults.train_image if settings.gpus else image)
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        raise DockerRunError(
            f"--runner docker: no Docker daemon answers ({error}); start dockerd "
            "(bash scripts/start_docker.sh as root) or set DOCKER_HOST"
        ) from None
    device_requests = []
    if settings.gpus:
        count = -1 if settings.gpus == "all" else int(settings.gpus)
        device_requests = [DeviceRequest(count=count, capabilities=[["gpu"]])]
    try:
        for name in dict.fromkeys((image, train_image)):
            try:
                client.images.get(name)
            except docker.errors.ImageNotFound:
                raise DockerRunError(
                    f"--runner docker: image {name} is not in the local Docker daemon; "
                    "build it with scripts/build_images.sh"
                ) from None
        if device_requests:
            # Without NVIDIA's toolkit every task would fail to start; say so once, up front.
            probe = client.containers.create(train_image, "true", device_requests=device_requests)
            try:
                probe.start()
            except docker.errors.APIError as error:
                raise DockerRunError(
                    f"--gpus {settings.gpus}: Docker cannot pass GPUs to containers here "
                    f"({error.explanation}); install the NVIDIA Container Toolkit, or leave out "
                    "--gpus"
                ) from None
            finally:
                probe.remove(force=True)
    finally:
        client.close()
    mounts = [
        Mount(target=str(path), source=str(path), type="bind")
        for path in (Path(p).resolve() for p in paths if p and "://" not in p)
        if path.exists()
    ]
    run_args: dict = {
        # Host networking reaches a tracking server on 127.0.0.1; the host's uid owns the
        # mounted pipeline root, so the tasks run as that uid.
        "network_mode": "host",
        "user": f"{os.getuid()}:{os.getgid()}",
        "mounts": mounts,
        # As for the subprocesses: TensorFlow's C++ start-up chatter buries the task logs.
        "environment": {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")},
    }
    if device_requests:
        run_args["device_requests"] = device_requests
    return local.DockerRunner(**run_args), ClusterSettings(image=image, train_image=train_image)
