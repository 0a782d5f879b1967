"""Pipelines that chain Gust's pieces at scale.

- ``pipeline.sweep`` — a parameter sweep of one solver (e.g. Rayleigh–Bénard over Ra × Pr, as The Well's set)
  written as one Gust file per point plus a ``manifest.json`` (file, sha256, sample count, parameters, seed,
  train/val/test split), resumable file by file, spread over machines with ``--shard i/n``, and validated at the
  end (``python -m pipeline.sweep validate``). Each point is run by the solver's own ``run()``.
"""
