"""Load a model from MLflow (registry or run) as a predictor: images -> probabilities."""

from __future__ import annotations

from digits.predictor import Predictor


def load_logged_predictor(model_uri: str, tracking_uri: str, batch_size: int = 512) -> Predictor:
    """An MLflow model URI (``models:/name@alias``, ``models:/name/3``, ``runs:/...``)."""
    import mlflow
    from mlflow.models import Model

    # models:/ and runs:/ URIs resolve through the fluent API's tracking and registry URIs.
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)

    flavors = Model.load(model_uri).flavors
    if "keras" in flavors:
        import mlflow.keras

        model = mlflow.keras.load_model(model_uri)
        return lambda images: model.predict(images, batch_size=batch_size, verbose=0)
    if "sklearn" in flavors:
        import mlflow.sklearn

        from digits.predictor import all_class_probabilities

        classifier = mlflow.sklearn.load_model(model_uri)
        return lambda images: all_class_probabilities(classifier, images)
    raise ValueError(f"{model_uri}: flavors {sorted(flavors)}; expected keras or sklearn")
