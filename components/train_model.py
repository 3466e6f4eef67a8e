"""Step 4: train the CNN with a named recipe, checkpointing each epoch so a retry resumes.

The logic lives in :mod:`digits.training` (a sweep's trials train with it too).
"""

from digits import training

# This step's function and its result, from the library (a sweep's trials train with it too).
TrainResult, train_model = training.TrainResult, training.train_model


def component(image: str):
    """Build the KFP component that runs :func:`train_model` in ``image``."""
    from kfp import dsl
    from kfp.dsl import Artifact, Dataset, Input, Model, Output

    @dsl.component(base_image=image, install_kfp_package=False)
    def train_model(
        train: Input[Dataset],
        validation: Input[Dataset],
        recipe: str,
        epochs: int,
        batch_size: int,
        seed: int,
        checkpoint_root: str,
        checkpoint_dir: str,
        pipeline_run_id: str,
        model: Output[Model],
        history: Output[Artifact],
    ):
        """Fit the CNN with the named recipe; the model directory holds model.keras."""
        from pathlib import Path

        from digits.checkpoint import checkpoint_location
        from digits.components.train_model import train_model as run
        from digits.config import resolve_recipe

        result = run(
            Path(train.path),
            Path(validation.path),
            Path(model.path),
            Path(history.path),
            resolve_recipe(recipe, epochs=epochs, batch_size=batch_size, seed=seed),
            recipe=recipe,
            checkpoint_uri=checkpoint_location(checkpoint_dir, checkpoint_root, pipeline_run_id),
        )
        model.metadata.update({**vars(result), "recipe": recipe, "framework": "keras"})

    return train_model
