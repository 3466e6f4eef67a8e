"""The command line on top of the library: `digits` (cli), the local runner (kfp.local) and its
step report, submitting, uploading and scheduling on a KFP cluster, and `digits validate`.

Nothing in ``digits`` itself imports this package; it may import the library, the components
and the pipeline.
"""
