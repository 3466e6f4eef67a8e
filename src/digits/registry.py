"""Load a model from MLflow (registry or run) as a predictor: images -> probabilities."""

from __future__ import annotations

from dataclasses import dataclass

from digits.predictor import PREDICT_BATCH_SIZE, Predictor

# What MLflow answers for a registered model, version or alias that is not there (an unknown
# alias comes back as INVALID_PARAMETER_VALUE).
NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def registry_client(tracking_uri: str):
    """An MlflowClient whose registry is the tracking server itself, never a process default."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri, registry_uri=tracking_uri)


def is_not_found(error: BaseException) -> bool:
    """Whether MLflow said the registered model, version or alias does not exist."""
    from mlflow.exceptions import MlflowException

    return isinstance(error, MlflowException) and error.error_code in NOT_FOUND_CODES


def load_logged_predictor(
    model_uri: str, tracking_uri: str, batch_size: int = PREDICT_BATCH_SIZE
) -> Predictor:
    """An MLflow model URI (``models:/name/3``, as batch_predict pins aliases, or ``runs:/...``).

    The model is downloaded through ``tracking_uri`` (also the registry) and loaded from the
    local copy, so no process-wide MLflow URI is set.
    """
    import tempfile

    import mlflow.artifacts
    from mlflow.models import Model

    source = model_uri
    name, _, version = model_uri.removeprefix("models:/").rpartition("/")
    if model_uri.startswith("models:/") and name and version.isdigit():
        # Where the version's files are; download_artifacts would resolve models:/ URIs through
        # the process-wide registry instead of this one.
        source = registry_client(tracking_uri).get_model_version_download_uri(name, version)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=source,
        dst_path=tempfile.mkdtemp(prefix="digits-model-"),
        tracking_uri=tracking_uri,
    )
    flavors = Model.load(local).flavors
    if "keras" in flavors:
        import mlflow.keras

        from digits.predictor import keras_predictor

        return keras_predictor(mlflow.keras.load_model(local), batch_size)
    if "sklearn" in flavors:
        import mlflow.sklearn

        from digits.predictor import all_class_probabilities

        classifier = mlflow.sklearn.load_model(local)
        return lambda images: all_class_probabilities(classifier, images)
    raise ValueError(f"{model_uri}: flavors {sorted(flavors)}; expected keras or sklearn")


@dataclass(frozen=True)
class ModelVersionRef:
    """A registered model version, pinned: what ``models:/name@alias`` pointed at when asked."""

    name: str
    version: str
    run_id: str
    requested: str  # the URI as given, alias or version

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def description(self) -> str:
        return f"{self.name} v{self.version} ({self.requested})"


def parse_version_uri(model_uri: str) -> tuple[str, str, str] | None:
    """(name, alias, number) of ``models:/NAME@ALIAS`` or ``models:/NAME/N``; None otherwise
    (``runs:/``, a path, a logged model's ``models:/<id>``)."""
    if not model_uri.startswith("models:/"):
        return None
    reference = model_uri.removeprefix("models:/")
    name, at, alias = reference.partition("@")
    number = ""
    if not at:
        name, _, number = reference.rpartition("/")
    if not name or not (at and alias or number.isdigit()):
        return None
    return name, alias, number


def resolve_version(model_uri: str, tracking_uri: str, client=None) -> ModelVersionRef:
    """Pin ``models:/name@alias`` or ``models:/name/N`` to the version it names now.

    Raises:
        RegistryLookupError: not a registered-model URI, or no such model, version or alias;
            one line listing the registered models and their aliases.
    """
    from digits.errors import RegistryLookupError

    parsed = parse_version_uri(model_uri)
    if parsed is None:
        raise RegistryLookupError(
            f"{model_uri}: expected a registered model version, models:/NAME@ALIAS (e.g. "
            "models:/digits-cnn@champion) or models:/NAME/VERSION"
        )
    name, alias, number = parsed
    client = client or registry_client(tracking_uri)
    try:
        found = (
            client.get_model_version_by_alias(name, alias)
            if alias
            else client.get_model_version(name, number)
        )
    except Exception as error:
        if not is_not_found(error):
            raise
        raise RegistryLookupError(
            f"{model_uri}: no such registered model, version or alias in {tracking_uri}; the "
            f"registry has {_registry_contents(client)}"
        ) from None
    return ModelVersionRef(
        name=found.name, version=str(found.version), run_id=found.run_id or "", requested=model_uri
    )


def _registry_contents(client) -> str:
    """'digits-cnn (champion=v3, challenger=v4), other (no aliases)' or 'no registered models'."""
    # Search results leave `aliases` empty: ask for each model.
    names = [model.name for model in client.search_registered_models(max_results=50)]
    if not names:
        return "no registered models"
    listed = []
    for name in names:
        aliases = client.get_registered_model(name).aliases or {}
        described = ", ".join(f"{alias}=v{version}" for alias, version in sorted(aliases.items()))
        listed.append(f"{name} ({described or 'no aliases'})")
    return ", ".join(listed)
