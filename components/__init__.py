"""The pipeline's steps, installed as ``digits.components``.

Each module holds one plain, typed function with the step's logic (no KFP needed to call it)
and ``component(image)``, which builds the thin KFP wrapper that maps artifact paths onto it.
"""
