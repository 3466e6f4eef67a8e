"""Command-line options generated from the tables that declare them, so each is written once.

`digits run` gets one option per row of :data:`digits.config.RUN_PARAMETERS` that has an
``option``; `compile`, `submit`, `upload` and `schedule` share :data:`COMPILE_OPTIONS`. Typer
reads a command's options from its signature; :func:`with_options` extends a command's signature
with generated ones and hands their values to it as one dict.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Annotated

import typer

from digits.config import REQUIRED, RUN_PARAMETERS, RunParameter


def run_option_default(parameter: RunParameter):
    """What `digits run` passes when the option is not given (None: the local runner decides)."""
    return parameter.default if parameter.local_default is REQUIRED else parameter.local_default


def run_options() -> list[inspect.Parameter]:
    """One keyword parameter per `digits run` option of the run-parameter table."""
    options = []
    for parameter in RUN_PARAMETERS:
        if parameter.option is None:
            continue
        default = run_option_default(parameter)
        declaration = parameter.option
        if parameter.type is bool:
            declaration = f"{parameter.option}/--no-{parameter.option.removeprefix('--')}"
        kind = parameter.type if default is not None else parameter.type | None
        options.append(_option(parameter.name, kind, default, parameter.help, declaration))
    return options


def _option(name: str, kind, default, help_text: str, *declarations: str) -> inspect.Parameter:
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        annotation=Annotated[kind, typer.Option(*declarations, help=help_text)],
        default=default,
    )


# Compile options: images, pod sizes, GPU placement, a sweep's parallelism and the MLflow
# Secret (ClusterSettings).
COMPILE_OPTIONS: tuple[inspect.Parameter, ...] = (
    _option("image", str | None, None, "Image of the CPU steps."),
    _option("train_image", str | None, None, "Image of the GPU training step."),
    _option(
        "gpu_node_selector", list[str] | None, None,
        "KEY=VALUE label of the GPU node pool (repeatable).",
    ),
    _option(
        "gpu_toleration", list[str] | None, None,
        "KEY[=VALUE][:EFFECT] taint of the GPU node pool (repeatable).",
    ),
    _option("gpus", int, 1, "nvidia.com/gpu limit of the training task."),
    _option(
        "trial_parallelism", int | None, None,
        "A sweep's trials training at once, each on a GPU of the pool (0: all); default 4.",
    ),
    _option("train_cpu", str | None, None, "CPU request of the training task."),
    _option("train_cpu_limit", str | None, None, "CPU limit of the training task."),
    _option(
        "train_memory", str | None, None, "Memory request = limit of the training task, e.g. 16G."
    ),
    _option("step_cpu", str | None, None, "CPU request of each CPU step."),
    _option("step_cpu_limit", str | None, None, "CPU limit of each CPU step."),
    _option("step_memory", str | None, None, "Memory request = limit of each CPU step, e.g. 4G."),
    _option(
        "mlflow_secret", str | None, None,
        "Kubernetes Secret with MLFLOW_TRACKING_USERNAME/PASSWORD for the MLflow steps "
        "(optional at run time).",
    ),
)  # fmt: skip


def with_options(options: Sequence[inspect.Parameter], into: str) -> Callable:
    """Add ``options`` to a command's signature; their values reach it as the dict ``into``."""

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command, eval_str=True)  # resolved in its own module
        own = [p for p in signature.parameters.values() if p.name != into]
        names = [option.name for option in options]

        @functools.wraps(command)
        def wrapper(**kwargs):
            collected = {name: kwargs.pop(name) for name in names}
            return command(**kwargs, **{into: collected})

        # Typer needs keyword-only parameters after the command's own, in one valid order.
        positional = [p for p in own if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        keyword = [p for p in own if p.kind is inspect.Parameter.KEYWORD_ONLY]
        wrapper.__signature__ = inspect.Signature(
            [
                *positional,
                *options,
                *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in keyword),
            ]
        )
        return wrapper

    return decorate
