"""Kaggle Digit Recognizer on Kubeflow Pipelines: components, pipeline, CLI."""

__version__ = "0.1.0"
