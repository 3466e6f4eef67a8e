"""Load a model from MLflow (registry or run) as a predictor: images -> probabilities."""

from __future__ import annotations

from digits.predictor import Predictor


def load_logged_predictor(model_uri: str, tracking_uri: str, batch_size: int = 512) -> Predictor:
    """An MLflow model URI (``models:/name/3``, as batch_predict pins aliases, or ``runs:/...``).

    The model is downloaded through ``tracking_uri`` (also the registry) and loaded from the
    local copy, so no process-wide MLflow URI is set.
    """
    import tempfile

    import mlflow.artifacts
    from mlflow import MlflowClient
    from mlflow.models import Model

    source = model_uri
    name, _, version = model_uri.removeprefix("models:/").rpartition("/")
    if model_uri.startswith("models:/") and name and version.isdigit():
        # Where the version's files are; download_artifacts would resolve models:/ URIs through
        # the process-wide registry instead of this one.
        client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
        source = client.get_model_version_download_uri(name, version)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=source,
        dst_path=tempfile.mkdtemp(prefix="digits-model-"),
        tracking_uri=tracking_uri,
    )
    flavors = Model.load(local).flavors
    if "keras" in flavors:
        import mlflow.keras

        model = mlflow.keras.load_model(local)
        return lambda images: model.predict(images, batch_size=batch_size, verbose=0)
    if "sklearn" in flavors:
        import mlflow.sklearn

        from digits.predictor import all_class_probabilities

        classifier = mlflow.sklearn.load_model(local)
        return lambda images: all_class_probabilities(classifier, images)
    raise ValueError(f"{model_uri}: flavors {sorted(flavors)}; expected keras or sklearn")
