"""Per-field normalisation statistics, streamed in float64 over a dataset's selection.

`compute_stats(train)` visits every stored sample the dataset's selection touches exactly once (overlapping
windows do not count a frame twice), block by block, and merges the block moments with the pairwise update of
Chan, Golub & LeVeque ("Algorithms for computing the sample variance", 1983):

    n = n_a + n_b,  δ = mean_b − mean_a,  mean = mean_a + δ n_b / n,  M2 = M2_a + M2_b + δ² n_a n_b / n,

so the result does not depend on the block size and does not lose digits on long files. std is the population
standard deviation sqrt(M2 / n). Compute the statistics on the training selection and reuse them unchanged for
the test selection (`BatchLoader(test, ..., normalize=train_stats)`); save them next to a model with `save`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np

from solvers.common.atomic import atomic_text

from .dataset import GustDataset

__all__ = ["FieldStats", "compute_stats"]


@dataclass(frozen=True)
class FieldStats:
    """Mean and standard deviation per field (population std), and how many values went into them."""

    fields: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    count: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(self.fields))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if not (len(self.fields) == len(self.mean) == len(self.std)):
            raise ValueError(
                f"FieldStats needs one mean and std per field, got {len(self.fields)} fields, "
                f"{len(self.mean)} means, {len(self.std)} stds"
            )
        for name, m, s in zip(self.fields, self.mean, self.std, strict=True):
            if not (math.isfinite(s) and s > 0):
                raise ValueError(f"std of field {name!r} is {s!r}; normalising needs a positive finite std")
            if not math.isfinite(m):
                raise ValueError(f"mean of field {name!r} is {m!r}; normalising needs a finite mean")

    def to_dict(self) -> dict:
        return {"fields": list(self.fields), "mean": list(self.mean), "std": list(self.std), "count": self.count}

    @classmethod
    def from_dict(cls, d: dict) -> FieldStats:
        missing = [key for key in ("fields", "mean", "std", "count") if key not in d]
        if missing:
            raise ValueError(f"statistics dict misses {missing}; expected keys fields, mean, std, count")
        return cls(fields=d["fields"], mean=d["mean"], std=d["std"], count=int(d["count"]))

    def save(self, path: str | os.PathLike) -> None:
        """Write as a small JSON file, atomically (floats round-trip exactly)."""
        atomic_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike) -> FieldStats:
        with open(path) as fh:
            return cls.from_dict(json.load(fh))

    def check_fields(self, fields: list[str] | tuple[str, ...]) -> None:
        """ValueError unless these statistics are for exactly `fields`, in that order."""
        if tuple(fields) != self.fields:
            raise ValueError(f"statistics are for fields {list(self.fields)} but the dataset has {list(fields)}")

    def _shift_scale(self) -> tuple[np.ndarray, np.ndarray]:
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        inv_std = (1.0 / np.asarray(self.std, dtype=np.float64)).astype(np.float32)[:, None, None]
        return mean, inv_std

    def normalize_(self, x: np.ndarray) -> np.ndarray:
        """(x − mean) / std in place on a float32 array whose axis −3 is the channel axis; returns x."""
        mean, inv_std = self._shift_scale()
        x -= mean
        x *= inv_std
        return x

    def normalize(self, x):
        """(x − mean) / std for numpy or JAX arrays with channels on axis −3 (a new array)."""
        mean, inv_std = self._shift_scale()
        return (x - mean) * inv_std

    def denormalize(self, x):
        """Inverse of `normalize`: x * std + mean."""
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        return x * std + mean


def compute_stats(dataset: GustDataset, block_samples: int = 256) -> FieldStats:
    """Streaming float64 mean/std of each field over the samples selected by `dataset` (each sample once).

    Reads at most `block_samples` samples per field at a time, so memory stays bounded for any file size. A NaN or
    inf is a ValueError naming the field and the samples' block.
    """
    if isinstance(block_samples, bool) or not isinstance(block_samples, int) or block_samples < 1:
        raise ValueError(f"block_samples must be an integer >= 1, got {block_samples!r}")
    n_fields = dataset.n_channels
    count = 0
    mean = np.zeros(n_fields)
    m2 = np.zeros(n_fields)
    for k, samples in enumerate(dataset.unique_samples()):
        gf = dataset.file(k)
        for start in range(0, samples.size, block_samples):
            idx = samples[start : start + block_samples]
            block_mean = np.empty(n_fields)
            block_m2 = np.empty(n_fields)
            for c, field in enumerate(dataset.fields):
                block = gf.read_batch(field, idx).astype(np.float64)
                if not np.isfinite(block).all():
                    raise ValueError(
                        f"field {field!r} has non-finite values (NaN/inf) in samples {idx.min()}..{idx.max()} of "
                        f"{gf.path}"
                    )
                block_mean[c] = block.mean()
                block_m2[c] = np.square(block - block_mean[c]).sum()
            n_b = idx.size * dataset.shape[0] * dataset.shape[1]
            total = count + n_b
            delta = block_mean - mean
            mean = mean + delta * (n_b / total)
            m2 = m2 + block_m2 + delta**2 * (count * n_b / total)
            count = total
    return FieldStats(fields=tuple(dataset.fields), mean=tuple(mean), std=tuple(np.sqrt(m2 / count)), count=count)
