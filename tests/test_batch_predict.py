"""Step 7: batch_predict writes Kaggle's submission format."""

import numpy as np
import pandas as pd
from kfp.dsl import Dataset, Model

from digits.artifacts import MODEL_FILENAME
from digits.components import batch_predict
from digits.components.ingest_csv import ingest_csv
from digits.components.validate_data import validate_data


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


def test_submission_is_imageid_label_from_1(tmp_path, trained_model, test_csv):
    rows = _validated(tmp_path, pd.read_csv(test_csv))

    summary = batch_predict.batch_predict(
        trained_model[0] / MODEL_FILENAME, rows, tmp_path / "sub.csv", tmp_path / "probs.parquet"
    )

    submission = pd.read_csv(tmp_path / "sub.csv")
    assert list(submission.columns) == ["ImageId", "Label"]
    assert submission["ImageId"].tolist() == list(range(1, 61))
    assert submission["Label"].between(0, 9).all()
    probabilities = pd.read_parquet(tmp_path / "probs.parquet")
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

    batch_predict.batch_predict(
        trained_model[0] / MODEL_FILENAME, rows, tmp_path / "sub.csv", tmp_path / "probs.parquet"
    )

    assert pd.read_csv(tmp_path / "sub.csv")["ImageId"].tolist()[:3] == [1, 3, 4]


def test_wrapper_tags_outputs_with_the_model_version(tmp_path, trained_model, test_csv):
    rows = _validated(tmp_path, pd.read_csv(test_csv))
    submission = Dataset(name="submission", uri=str(tmp_path / "submission"))
    probabilities = Dataset(name="probabilities", uri=str(tmp_path / "probabilities"))

    batch_predict.component("digits:test").python_func(
        model=Model(name="model", uri=str(trained_model[0])),
        rows=Dataset(name="rows", uri=str(rows)),
        model_version="7",
        submission=submission,
        probabilities=probabilities,
    )

    assert submission.metadata == {"rows": 60, "model_version": "7"}
    assert len(pd.read_csv(submission.path)) == 60
