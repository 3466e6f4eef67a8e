"""Step 9 (optional, parameter ``deploy``): serve the champion the gate left with KServe.

Writes the ``serving.kserve.io/v1beta1`` InferenceService for the exact version and creates or
patches it in the namespace (RBAC: ``manifests/serving``). A new version beside an older one
goes out as a canary; ``digits deploy --promote`` moves it to all traffic.
"""

from digits.inference_service import DeployOutcome


def deploy_model(
    model_name: str,
    version: str,
    tracking_uri: str,
    service_name: str,
    namespace: str,
    image: str,
    mlflow_secret: str,
    canary_percent: int = 10,
) -> DeployOutcome:
    """Create or patch the InferenceService serving ``models:/<model_name>/<version>``.

    Raises:
        RegistryLookupError: the version does not exist.
        ServingError: the Kubernetes API refused (RBAC) or is unreachable.
    """
    from digits.inference_service import DeploySettings, deploy

    settings = DeploySettings(
        name=service_name,
        namespace=namespace,
        image=image,
        mlflow_uri=tracking_uri,
        mlflow_secret=mlflow_secret,
        canary_percent=canary_percent,
    )
    return deploy(f"models:/{model_name}/{version}", tracking_uri, settings, apply=True)


def component(image: str):
    """Build the KFP component that runs :func:`deploy_model` in ``image``."""
    from kfp import dsl

    @dsl.component(base_image=image, install_kfp_package=False)
    def deploy_model(
        mlflow_tracking_uri: str,
        registered_model_name: str,
        champion_version: str,
        service_name: str,
        namespace: str,
        serving_image: str,
        mlflow_secret: str,
        canary_percent: int,
    ) -> str:
        """Serve the gate's champion version with KServe; returns what was done, in one line."""
        from digits.components.deploy_model import deploy_model as run

        return run(
            registered_model_name,
            champion_version,
            mlflow_tracking_uri,
            service_name,
            namespace,
            serving_image,
            mlflow_secret,
            canary_percent,
        ).summary()

    return deploy_model
