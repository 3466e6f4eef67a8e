"""Step 8: batch_predict (champion from the registry, shards) and collect_predictions."""

import numpy as np
import pandas as pd
import pytest
from kfp.dsl import Dataset
from mlflow import MlflowClient

from digits.components import batch_predict, collect_predictions, register_model
from digits.components.evaluate_model import evaluate_model
from digits.components.ingest_csv import ingest_csv
from digits.components.validate_data import validate_data
from digits.errors import PredictionError


def _validated(tmp_path, frame: pd.DataFrame, max_rejected_fraction=0.0):
    frame.to_csv(tmp_path / "test.csv", index=False)
    ingest_csv(str(tmp_path / "test.csv"), tmp_path / "dataset")
    validate_data(
        tmp_path / "dataset",
        tmp_path / "valid.parquet",
        tmp_path / "rejected.parquet",
        tmp_path / "report.json",
        source="test.csv",
        require_label=False,
        max_rejected_fraction=max_rejected_fraction,
    )
    return tmp_path / "valid.parquet"


def _predict(model_uri, rows, out, tracking_uri="", shard_index=0, shard_count=1):
    out.mkdir(parents=True, exist_ok=True)
    summary = batch_predict.batch_predict(
        rows,
        out / f"sub{shard_index}.csv",
        out / f"probs{shard_index}.parquet",
        model_uri=str(model_uri),
        tracking_uri=tracking_uri,
        shard_index=shard_index,
        shard_count=shard_count,
    )
    return summary, out / f"sub{shard_index}.csv", out / f"probs{shard_index}.parquet"


def test_submission_is_imageid_label_from_1(tmp_path, trained_model, test_csv):
    rows = _validated(tmp_path, pd.read_csv(test_csv))

    summary, submission_path, probabilities_path = _predict(trained_model[0], rows, tmp_path)

    submission = pd.read_csv(submission_path)
    assert list(submission.columns) == ["ImageId", "Label"]
    assert submission["ImageId"].tolist() == list(range(1, 61))
    assert submission["Label"].between(0, 9).all()
    probabilities = pd.read_parquet(probabilities_path)
    assert list(probabilities.columns) == ["ImageId", *[f"prob_{d}" for d in range(10)]]
    assert np.allclose(probabilities.iloc[:, 1:].sum(axis=1), 1.0, atol=1e-4)
    assert (probabilities.iloc[:, 1:].to_numpy().argmax(axis=1) == submission["Label"]).all()
    assert summary.rows == 60 and sum(summary.predicted_class_counts.values()) == 60


def test_image_ids_stay_those_of_the_source_rows_when_a_row_is_rejected(
    tmp_path, trained_model, test_csv
):
    frame = pd.read_csv(test_csv).astype(object)
    frame.loc[1, "pixel10"] = None  # ImageId 2 is rejected
    rows = _validated(tmp_path, frame, max_rejected_fraction=0.1)

    _, submission_path, _ = _predict(trained_model[0], rows, tmp_path)

    assert pd.read_csv(submission_path)["ImageId"].tolist()[:3] == [1, 3, 4]


def test_three_shards_collected_equal_one(tmp_path, trained_model, test_csv):
    rows = _validated(tmp_path, pd.read_csv(test_csv))
    _, whole, whole_probabilities = _predict(trained_model[0], rows, tmp_path / "one")
    shards = [
        _predict(trained_model[0], rows, tmp_path / "three", shard_index=i, shard_count=3)
        for i in range(3)
    ]
    assert [summary.rows for summary, _, _ in shards] == [20, 20, 20]

    collected = collect_predictions.collect_predictions(
        [submission for _, submission, _ in shards],
        [probabilities for _, _, probabilities in shards],
        tmp_path / "submission.csv",
        tmp_path / "probabilities.parquet",
        predicted_with=[summary.predicted_with for summary, _, _ in shards],
    )

    assert collected.rows == 60 and collected.shards == 3
    assert pd.read_csv(tmp_path / "submission.csv").equals(pd.read_csv(whole))
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "probabilities.parquet").reset_index(drop=True),
        pd.read_parquet(whole_probabilities),
    )


def test_collect_refuses_an_image_id_in_two_shards(tmp_path, trained_model, test_csv):
    rows = _validated(tmp_path, pd.read_csv(test_csv))
    _, submission, probabilities = _predict(trained_model[0], rows, tmp_path)
    with pytest.raises(PredictionError, match="ImageId 1 is in more than one prediction shard"):
        collect_predictions.collect_predictions(
            [submission, submission], [probabilities, probabilities], tmp_path / "s", tmp_path / "p"
        )


@pytest.fixture(scope="module")
def registered_champion(tmp_path_factory, mlflow_server, trained_model, split_sets):
    """The 1-epoch model, registered and given alias champion in a fresh registered model."""
    from digits.components.register_model import RunRecord

    work = tmp_path_factory.mktemp("registry")
    evaluate_model(trained_model[0], split_sets[1], work / "evaluation.json")
    name = f"predict-{work.name}"
    registration = register_model.register_model(
        RunRecord(
            model_dir=trained_model[0],
            history_path=trained_model[1],
            evaluation_path=work / "evaluation.json",
            validation_path=split_sets[1],
            pipeline_run_id=f"predict-{work.name}",
        ),
        tracking_uri=mlflow_server,
        experiment_name=name,
        registered_model_name=name,
    )
    MlflowClient(mlflow_server).set_registered_model_alias(
        name, "champion", registration.model_version
    )
    return name, registration.model_version


def test_predictions_through_the_registry_equal_the_versions_keras_file(
    tmp_path, mlflow_server, trained_model, registered_champion, test_csv
):
    name, version = registered_champion
    rows = _validated(tmp_path, pd.read_csv(test_csv))

    summary, submission, probabilities = _predict(
        batch_predict.champion_uri(name), rows, tmp_path / "registry", mlflow_server
    )
    _, direct_submission, direct_probabilities = _predict(trained_model[0], rows, tmp_path / "file")

    assert summary.predicted_with == f"{name} v{version} (models:/{name}@champion)"
    assert summary.model_version == version
    assert pd.read_csv(submission).equals(pd.read_csv(direct_submission))
    np.testing.assert_allclose(
        pd.read_parquet(probabilities).to_numpy(), pd.read_parquet(direct_probabilities).to_numpy()
    )


def test_an_unknown_alias_is_one_line_listing_what_exists(
    tmp_path, mlflow_server, registered_champion, test_csv
):
    name, version = registered_champion
    rows = _validated(tmp_path, pd.read_csv(test_csv))

    with pytest.raises(PredictionError) as error:
        _predict(f"models:/{name}@production", rows, tmp_path, mlflow_server)

    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"models:/{name}@production: no such registered model")
    assert f"{name} (champion=v{version})" in message


def test_wrapper_records_which_version_predicted(
    tmp_path, mlflow_server, registered_champion, test_csv
):
    name, version = registered_champion
    rows = _validated(tmp_path, pd.read_csv(test_csv))
    submission = Dataset(name="submission", uri=str(tmp_path / "submission"))
    probabilities = Dataset(name="probabilities", uri=str(tmp_path / "probabilities"))

    batch_predict.component("digits:test").python_func(
        rows=Dataset(name="rows", uri=str(rows)),
        mlflow_tracking_uri=mlflow_server,
        registered_model_name=name,
        predict_model_uri="",
        champion_version=version,
        shard_index=1,
        shard_count=2,
        submission=submission,
        probabilities=probabilities,
    )

    assert submission.metadata["predicted_with"] == f"{name} v{version} (models:/{name}@champion)"
    assert submission.metadata["rows"] == 30 and submission.metadata["shard_index"] == 1
    assert len(pd.read_csv(submission.path)) == 30
