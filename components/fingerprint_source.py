"""Step 0: name the content behind a data URI, so KFP's cache follows the bytes, not the URI.

Never cached itself: it runs in every pipeline run and its output is an input of ``ingest_csv``,
whose cache key (and so every data step's after it) then changes exactly when the file does.
"""

from digits.sources import RETRY_BUDGET_S


def fingerprint_source(source_uri: str, retry_budget_s: float = RETRY_BUDGET_S) -> str:
    """The content fingerprint of ``source_uri`` (see :func:`digits.sources.fingerprint`).

    Raises:
        SourceNotFoundError: the path or URL does not exist or stays unreachable.
    """
    from digits.sources import fingerprint

    return fingerprint(source_uri, retry_budget_s)


def component(image: str):
    """Build the KFP component that runs :func:`fingerprint_source` in ``image``."""
    from kfp import dsl

    @dsl.component(base_image=image, install_kfp_package=False)
    def fingerprint_source(source_uri: str) -> str:
        """A string that changes whenever the file behind ``source_uri`` does."""
        from digits.components.fingerprint_source import fingerprint_source as run

        return run(source_uri)

    return fingerprint_source
