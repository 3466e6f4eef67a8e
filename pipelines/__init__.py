"""The KFP pipeline definition and its compile step, installed as ``digits.pipelines``."""
