"""Stream Gust HDF5 files into JAX as batches.

Three pieces, each usable alone:

- `GustDataset` (dataset.py): random access to the samples of one or several Gust files (same fields and
  grid), restricted to a sample range and a set of trajectories; items are single samples (C, H, W) or
  time windows (T, C, H, W) of `n_steps_input + n_steps_output` frames that never cross a trajectory.
  `read_batch(indices)` reads every sample straight into its row of a fresh buffer (`GustFile.read_into`).
  `split_by_trajectory` gives disjoint train/test trajectory ids.
- `FieldStats`, `compute_stats` (stats.py): per-field mean/std streamed in float64 over a selection, saved and
  loaded as JSON, reused to normalise another selection.
- `BatchLoader`, `batch_sharding` (loader.py): seeded per-epoch permutations, a prefetching background thread
  that puts batches on the devices (optionally sharded over the batch axis), and an exact `state()` /
  `from_state()` resume.

Example:

    from dataloaders import BatchLoader, GustDataset, batch_sharding, compute_stats, split_by_trajectory

    train_ids, test_ids = split_by_trajectory(n_trajectories=16, test_fraction=0.25, seed=0)
    train = GustDataset("run.h5", ["omega"], trajectories=train_ids, n_steps_input=1, n_steps_output=1)
    stats = compute_stats(train)
    loader = BatchLoader(train, batch_size=32, seed=0, epochs=10, normalize=stats, sharding=batch_sharding())
    with loader:
        for batch in loader:  # (32, 2, 1, H, W) float32, split over the devices; 10 epochs
            x, y = batch[:, :1], batch[:, 1:]  # inputs, targets
            ...  # checkpoint loader.state() with the model; resume with BatchLoader.from_state
"""

from .dataset import GustDataset, split_by_trajectory
from .loader import BatchLoader, batch_sharding
from .stats import FieldStats, compute_stats

__all__ = ["BatchLoader", "FieldStats", "GustDataset", "batch_sharding", "compute_stats", "split_by_trajectory"]
