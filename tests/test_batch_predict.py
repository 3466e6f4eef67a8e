"""Step 8: batch_predict (champion from the registry, shards) and collect_predictions."""

from pathlib import Path

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

    # Shards arrive in any order (dsl.Collected does not promise one) and are streamed through
    # a few rows at a time: the same files.
    streamed = collect_predictions.collect_predictions(
        [submission for _, submission, _ in reversed(shards)],
        [probabilities for _, _, probabilities in reversed(shards)],
        tmp_path / "streamed.csv",
        tmp_path / "streamed.parquet",
        chunk_rows=7,
    )
    assert streamed.rows == 60
    assert (tmp_path / "streamed.csv").read_bytes() == (tmp_path / "submission.csv").read_bytes()
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "streamed.parquet"),
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


# Shards read only their own rows, chunk by chunk, and write what one whole read would.


def _regrouped(tmp_path, rows, group_rows: int):
    """The validated rows again, in row groups of ``group_rows`` (validate_data's layout, small)."""
    import pyarrow.parquet as pq

    path = tmp_path / f"valid-{group_rows}.parquet"
    pq.write_table(pq.read_table(rows), path, row_group_size=group_rows)
    assert pq.ParquetFile(path).metadata.num_row_groups > 1
    return path


@pytest.fixture
def scripted_model_dir(tmp_path, test_csv):
    """A deterministic model over the 60 test images: answers (ImageId * 7) % 10, exactly."""
    import scripted_models

    from digits.data import to_image_set

    (tmp_path / "scripted").mkdir()
    rows = _validated(tmp_path / "scripted", pd.read_csv(test_csv))
    images = to_image_set(pd.read_parquet(rows))
    classifier = scripted_models.ScriptedClassifier(images.images, images.source_rows * 7 % 10)
    return scripted_models.save(classifier, tmp_path / "scripted-model")


def test_the_row_groups_of_a_row_range():
    groups = [10, 10, 10, 5]  # rows 0-9, 10-19, 20-29, 30-34

    assert batch_predict.overlapping_row_groups(groups, 0, 35) == ([0, 1, 2, 3], 0)
    assert batch_predict.overlapping_row_groups(groups, 15, 30) == ([1, 2], 10)
    assert batch_predict.overlapping_row_groups(groups, 20, 21) == ([2], 20)
    assert batch_predict.overlapping_row_groups(groups, 9, 11) == ([0, 1], 0)
    assert batch_predict.overlapping_row_groups(groups, 12, 12) == ([], 12)
    assert batch_predict.shard_row_range(35, 2, 3) == (23, 35)


def test_a_shard_reads_only_the_row_groups_holding_its_rows(
    tmp_path, monkeypatch, scripted_model_dir, test_csv
):
    import pyarrow.parquet as pq

    rows = _regrouped(tmp_path, _validated(tmp_path, pd.read_csv(test_csv)), 10)  # 6 groups
    read_groups = []
    read_row_group = pq.ParquetFile.read_row_group

    def recording(self, group, *args, **kwargs):
        read_groups.append(group)
        return read_row_group(self, group, *args, **kwargs)

    def refused(*args, **kwargs):
        raise AssertionError("a shard read more than its row groups")

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", recording)
    for whole_read in ("read", "iter_batches", "read_row_groups"):
        monkeypatch.setattr(pq.ParquetFile, whole_read, refused)
    monkeypatch.setattr(pq, "read_table", refused)

    for count in (1, 4, 7):
        for index in range(count):
            read_groups.clear()
            summary, submission, _ = _predict(
                scripted_model_dir,
                rows,
                tmp_path / f"{count}",
                shard_index=index,
                shard_count=count,
            )
            start, end = 60 * index // count, 60 * (index + 1) // count
            assert read_groups == list(range(start // 10, (end - 1) // 10 + 1))
            assert pd.read_csv(submission)["ImageId"].tolist() == list(range(start + 1, end + 1))
            assert summary.rows == end - start


def test_k_shards_in_small_chunks_write_what_one_whole_read_did(
    tmp_path, scripted_model_dir, test_csv
):
    """Byte for byte the CSV, column for column the Parquet, that the whole-table code wrote."""
    import pyarrow.parquet as pq

    from digits.data import to_image_set
    from digits.predictor import load_predictor

    frame = pd.read_csv(test_csv).astype(object)
    frame.loc[4, "pixel300"] = None  # ImageId 5 is rejected: ImageIds skip it
    rows = _regrouped(tmp_path, _validated(tmp_path, frame, max_rejected_fraction=0.1), 10)
    # What batch_predict wrote before it read in chunks: one read, one predict, pandas writers.
    images = to_image_set(pq.read_table(rows).to_pandas())
    probabilities = load_predictor(scripted_model_dir)(images.images)
    pd.DataFrame({"ImageId": images.source_rows, "Label": probabilities.argmax(axis=1)}).to_csv(
        tmp_path / "whole.csv", index=False
    )
    whole = pd.DataFrame(probabilities.astype(np.float32), columns=[f"prob_{d}" for d in range(10)])
    whole.insert(0, "ImageId", images.source_rows)
    whole.to_parquet(tmp_path / "whole.parquet", index=False)

    for count in (1, 4):
        shards = [
            batch_predict.batch_predict(
                rows,
                tmp_path / f"sub-{count}-{index}.csv",
                tmp_path / f"probs-{count}-{index}.parquet",
                model_uri=str(scripted_model_dir),
                tracking_uri="",
                shard_index=index,
                shard_count=count,
                chunk_rows=7,  # chunks cross row groups and shard edges
            )
            for index in range(count)
        ]
        assert sum(summary.rows for summary in shards) == 59
        csvs = [(tmp_path / f"sub-{count}-{i}.csv").read_bytes() for i in range(count)]
        csv = csvs[0] + b"".join(later.split(b"\n", 1)[1] for later in csvs[1:])  # one header
        assert csv == (tmp_path / "whole.csv").read_bytes()
        probabilities = pd.concat(
            [pd.read_parquet(tmp_path / f"probs-{count}-{i}.parquet") for i in range(count)],
            ignore_index=True,
        )
        pd.testing.assert_frame_equal(probabilities, pd.read_parquet(tmp_path / "whole.parquet"))
        assert pq.read_schema(tmp_path / f"probs-{count}-0.parquet").equals(
            pq.read_schema(tmp_path / "whole.parquet"), check_metadata=True
        )
        labels = pd.read_csv(tmp_path / "whole.csv")["Label"]
        assert {d: sum(s.predicted_class_counts[d] for s in shards) for d in "0123456789"} == {
            str(d): int((labels == d).sum()) for d in range(10)
        }


def test_an_empty_shard_writes_a_header_and_the_schema(tmp_path, scripted_model_dir, test_csv):
    rows = _validated(tmp_path, pd.read_csv(test_csv).head(2))

    summary, submission, probabilities = _predict(
        scripted_model_dir, rows, tmp_path, shard_index=0, shard_count=3
    )

    assert summary.rows == 0 and sum(summary.predicted_class_counts.values()) == 0
    assert submission.read_text() == "ImageId,Label\n"
    empty = pd.read_parquet(probabilities)
    assert list(empty.columns) == ["ImageId", *[f"prob_{d}" for d in range(10)]]
    assert empty.dtypes.iloc[1] == np.float32 and len(empty) == 0


# Pinned to one version; the model download retried.


@pytest.fixture(scope="module")
def two_versions(mlflow_server, tmp_path_factory, test_csv):
    """A registered model whose v1 answers every test image 1 and v2 answers 2; champion=v1."""
    import scripted_models

    from digits.data import to_image_set

    work = tmp_path_factory.mktemp("two-versions")
    images = to_image_set(pd.read_parquet(_validated(work, pd.read_csv(test_csv)))).images
    client = MlflowClient(mlflow_server)
    name = f"pinned-{work.name}"
    experiment_id = client.create_experiment(name)
    client.create_registered_model(name)
    for answer in (1, 2):
        classifier = scripted_models.ScriptedClassifier(images, np.full(len(images), answer))
        scripted_models.register(client, name, classifier, experiment_id)
    client.set_registered_model_alias(name, "champion", "1")
    return name, experiment_id


def test_every_shard_predicts_with_the_version_the_gate_left_as_champion(
    tmp_path, mlflow_server, two_versions, test_csv
):
    name, experiment_id = two_versions
    client = MlflowClient(mlflow_server)
    cnn_run = client.create_run(experiment_id, run_name="this pipeline run's CNN")
    rows = _validated(tmp_path, pd.read_csv(test_csv))
    client.set_registered_model_alias(name, "champion", "2")  # moved after the gate said v1

    def shard(index: int, predict_model_uri: str = ""):
        out = tmp_path / f"{index}-{predict_model_uri.rsplit('@')[-1]}"
        submission = Dataset(name="submission", uri=str(out / "submission"))
        probabilities = Dataset(name="probabilities", uri=str(out / "probabilities"))
        out.mkdir()
        batch_predict.component("digits:test").python_func(
            rows=Dataset(name="rows", uri=str(rows)),
            mlflow_tracking_uri=mlflow_server,
            registered_model_name=name,
            predict_model_uri=predict_model_uri,
            champion_version="1",
            shard_index=index,
            shard_count=2,
            submission=submission,
            probabilities=probabilities,
            mlflow_run_id=cnn_run.info.run_id,
        )
        return submission

    try:
        for index in (0, 1):
            submission = shard(index)
            assert set(pd.read_csv(submission.path)["Label"]) == {1}
            assert submission.metadata["predicted_with"] == f"{name} v1 (models:/{name}@champion)"
            assert submission.metadata["model_version"] == "1"
            assert submission.metadata["model_uri"] == f"models:/{name}/1"
        tags = client.get_run(cnn_run.info.run_id).data.tags
        assert tags["predicted_with"] == f"{name} v1"
        assert tags["predicted_model_uri"] == f"models:/{name}/1"

        # predict_model_uri still overrides; an alias there is pinned when the shard starts.
        overridden = shard(0, f"models:/{name}@champion")
        assert set(pd.read_csv(overridden.path)["Label"]) == {2}
        assert overridden.metadata["model_uri"] == f"models:/{name}/2"
    finally:
        client.set_registered_model_alias(name, "champion", "1")


def test_the_model_download_is_retried_through_a_flaky_server(
    tmp_path, mlflow_server, two_versions, test_csv
):
    from fault_proxy import FaultProxy

    name, _ = two_versions
    client = MlflowClient(mlflow_server, registry_uri=mlflow_server)
    files = client.get_model_version_download_uri(name, "1").removeprefix("mlflow-artifacts:")
    lost = {
        "/api/2.0/mlflow/model-versions/get": 1,  # the version lookup
        "/api/2.0/mlflow/model-versions/get-download-uri": 2,
        f"/api/2.0/mlflow-artifacts/artifacts{files}/MLmodel": 1,
        f"/api/2.0/mlflow-artifacts/artifacts{files}/model.pkl": 2,
    }
    rows = _validated(tmp_path, pd.read_csv(test_csv))

    with FaultProxy(mlflow_server, lost) as proxy:
        summary = batch_predict.batch_predict(
            rows,
            tmp_path / "submission.csv",
            tmp_path / "probabilities.parquet",
            model_uri=f"models:/{name}/1",
            tracking_uri=proxy.url,
            timeout_s=60,
        )

    assert dict(proxy.failed) == lost  # every fault was met, and retried past
    assert summary.model_uri == f"models:/{name}/1" and summary.rows == 60
    assert set(pd.read_csv(tmp_path / "submission.csv")["Label"]) == {1}


def test_a_server_that_stays_down_is_one_line_naming_the_model_and_the_server(tmp_path, test_csv):
    import time

    rows = _validated(tmp_path, pd.read_csv(test_csv))
    started = time.monotonic()

    with pytest.raises(PredictionError) as error:
        batch_predict.batch_predict(
            rows,
            tmp_path / "s.csv",
            tmp_path / "p.parquet",
            model_uri="models:/digits-cnn/3",
            tracking_uri="http://127.0.0.1:9",
            timeout_s=3,
        )

    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("models:/digits-cnn/3: loading the model through MLflow at ")
    assert "http://127.0.0.1:9" in message and "after retrying for 3 s" in message
    assert time.monotonic() - started < 30


def test_only_a_download_failed_by_the_server_or_the_network_is_retried():
    """MLflow 3.17's wording of one file's failure, as seen through the fault proxy."""
    api = "API request to http://h/api/2.0/mlflow-artifacts/artifacts/0/m/MLmodel failed with"
    lost = f"{api} exception HTTPConnectionPool(...) (Caused by ResponseError('too many 503 error responses'))"  # noqa: E501
    refused = f"{api} exception HTTPConnectionPool(...) (Caused by NewConnectionError(...))"
    missing = "404 Client Error: NOT FOUND for url: http://h/api/2.0/mlflow-artifacts/artifacts/x"

    assert batch_predict._transient_failure(lost)
    assert batch_predict._transient_failure(refused)
    assert not batch_predict._transient_failure(missing)
    assert not batch_predict._transient_failure(f"{api} error code 403 != 200")


def test_collect_puts_empty_shards_last_and_keeps_one_header(tmp_path):
    def shard(name: str, image_ids: list[int]) -> tuple[Path, Path]:
        probabilities = np.full((len(image_ids), 10), 0.1, dtype=np.float32)
        frame = pd.DataFrame(probabilities, columns=[f"prob_{d}" for d in range(10)])
        frame.insert(0, "ImageId", np.array(image_ids, dtype=np.int64))
        frame.to_parquet(tmp_path / f"{name}.parquet", index=False)
        labels = pd.DataFrame({"ImageId": image_ids, "Label": [1] * len(image_ids)})
        labels.to_csv(tmp_path / f"{name}.csv", index=False)
        return tmp_path / f"{name}.csv", tmp_path / f"{name}.parquet"

    shards = [shard("empty", []), shard("later", [4, 5]), shard("first", [1, 2, 3])]

    collected = collect_predictions.collect_predictions(
        [csv for csv, _ in shards], [parquet for _, parquet in shards],
        tmp_path / "submission.csv", tmp_path / "probabilities.parquet", chunk_rows=2,
    )  # fmt: skip

    assert collected.rows == 5
    assert (tmp_path / "submission.csv").read_text().splitlines() == [
        "ImageId,Label", "1,1", "2,1", "3,1", "4,1", "5,1",
    ]  # fmt: skip
    assert pd.read_parquet(tmp_path / "probabilities.parquet")["ImageId"].tolist() == [
        1,
        2,
        3,
        4,
        5,
    ]
