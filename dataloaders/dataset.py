"""Random access to the samples (or time windows) of one or several Gust files.

A `GustDataset` is a flat list of *items* built once at construction:

- without windows (`n_steps_input=None`), item k is one stored sample, returned as (C, H, W) float32 with the
  channels in the order of `fields`;
- with windows, item k is `T = n_steps_input + n_steps_output` frames of ONE trajectory, `stride` saved frames
  apart, returned as (T, C, H, W); the first `n_steps_input` are the inputs, the rest the targets. Every valid
  start frame gives a window (windows overlap), and no window crosses a trajectory or file boundary.

Items are ordered file by file, then (windows) trajectory by trajectory, then by time; without windows in the
files' own time-major sample order. Only committed samples are used: a file still being written (or left by a
crash) contributes what it had committed when it was opened, with a warning.

All reads go through `solvers.common.hdf5_utils` (the one reader of the format): `read_batch` reads every needed
sample straight into its place in a freshly allocated array, in file order, with `GustFile.read_into`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np
from jaxtyping import Int

from solvers.common.hdf5_utils import GustFile, open_dataset

__all__ = ["GustDataset", "split_by_trajectory"]


def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def split_by_trajectory(
    n_trajectories: int, test_fraction: float = 0.2, seed: int = 0
) -> tuple[Int[np.ndarray, " n_train"], Int[np.ndarray, " n_test"]]:
    """Disjoint, sorted (train, test) trajectory ids covering range(n_trajectories), chosen at random by `seed`.

    The test set has round(test_fraction * n_trajectories) members, at least 1 and at most n - 1. Pass the two
    arrays as `trajectories=` to two `GustDataset`s, so that no trajectory leaks between training and testing
    (its neighbouring frames are strongly correlated). With several files, id m selects trajectory m of every
    file, so the (file, trajectory) pairs of the two sets are disjoint as well.
    """
    n = _positive_int("n_trajectories", n_trajectories, minimum=2)
    if isinstance(test_fraction, bool) or not (
        isinstance(test_fraction, (int, float, np.number)) and 0 < test_fraction < 1
    ):
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    n_test = min(n - 1, max(1, round(test_fraction * n)))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


class GustDataset:
    """Samples or windows of one or several Gust files with the same fields, grid shape and grid.

    Args:
        paths: one path or a sequence of paths to Gust `.h5` files.
        fields: field names to load as channels, in this order (default: all fields of the first file).
        sample_start, sample_stop: range of stored sample indices [start, stop) used in every file (samples are
            time-major, so a range of frames f0..f1 of M trajectories is [f0 * M, f1 * M)); `sample_stop=None`
            means each file's committed sample count.
        trajectories: trajectory ids to use in every file (default: all), e.g. from `split_by_trajectory`.
        n_steps_input, n_steps_output, stride: windows of n_steps_input + n_steps_output frames of one trajectory,
            `stride` saved frames apart (None: single samples).

    Keep one dataset per process; it holds the files open until `close()` (or the end of a `with` block).
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        fields: str | Sequence[str] | None = None,
        *,
        sample_start: int = 0,
        sample_stop: int | None = None,
        trajectories: Sequence[int] | np.ndarray | None = None,
        n_steps_input: int | None = None,
        n_steps_output: int = 0,
        stride: int = 1,
    ) -> None:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        paths = list(paths)
        if not paths:
            raise ValueError("paths is empty; give at least one Gust .h5 file")
        sample_start = _positive_int("sample_start", sample_start, minimum=0)
        if sample_stop is not None:
            sample_stop = _positive_int("sample_stop", sample_stop, minimum=sample_start + 1)
        if n_steps_input is None:
            if n_steps_output != 0 or stride != 1:
                raise ValueError(
                    f"n_steps_output={n_steps_output!r} and stride={stride!r} need windows; set n_steps_input >= 1"
                )
            self.window = None
        else:
            self.window = (
                _positive_int("n_steps_input", n_steps_input),
                _positive_int("n_steps_output", n_steps_output, minimum=0),
                _positive_int("stride", stride),
            )
        self.n_steps_input = n_steps_input
        self.n_steps_output = n_steps_output
        self.stride = stride
        self._files: list[GustFile] = []
        try:
            self._open(paths, fields, sample_start, sample_stop, trajectories)
        except BaseException:
            self.close()
            raise

    def _open(self, paths, fields, sample_start, sample_stop, trajectories) -> None:
        for path in paths:
            self._files.append(open_dataset(path))
        first = self._files[0]
        if fields is None:
            fields = list(first.fields)
        elif isinstance(fields, str):
            fields = [fields]
        fields = list(fields)
        if not fields:
            raise ValueError(f"fields is empty; available in {first.path.name}: {', '.join(first.fields)}")
        if len(set(fields)) != len(fields):
            raise ValueError(f"fields {fields} contain a duplicate")
        traj_ids = None
        if trajectories is not None:
            traj_ids = np.asarray(trajectories)
            if traj_ids.ndim != 1 or traj_ids.size == 0 or (traj_ids.dtype.kind not in "iu"):
                raise ValueError(f"trajectories must be a non-empty 1-D sequence of integers, got {trajectories!r}")
            traj_ids = np.unique(traj_ids.astype(np.int64))
        self.fields: list[str] = fields
        self.shape: tuple[int, int] = tuple(first.shape)
        self.grid = first.grid

        file_ids, sample_rows = [], []
        for k, gf in enumerate(self._files):
            name = gf.path.name
            for field in fields:
                if field not in gf.fields:
                    raise ValueError(f"field {field!r} not in {name}; available: {', '.join(gf.fields)}")
            if tuple(gf.shape) != self.shape:
                raise ValueError(f"{name} has grid shape {tuple(gf.shape)} but {first.path.name} has {self.shape}")
            if gf.grid.fingerprint() != self.grid.fingerprint():  # coordinates and boundaries
                raise ValueError(f"{name} has another grid (coordinates or boundaries) than {first.path.name}")
            if not gf.complete:
                warnings.warn(
                    f"{gf.path} is incomplete ({gf.n_samples} of {gf.n_samples_planned} samples committed, "
                    f"stop_reason {gf.stop_reason!r}); using the committed samples only",
                    stacklevel=3,
                )
            stop = gf.n_samples if sample_stop is None else sample_stop
            if stop > gf.n_samples:
                raise ValueError(
                    f"sample_stop={sample_stop} beyond the {gf.n_samples} committed samples of {name}; "
                    f"use sample_stop <= {gf.n_samples} or None"
                )
            if sample_start >= stop:
                raise ValueError(
                    f"sample_start={sample_start} leaves no samples in {name} (sample range ends at {stop})"
                )
            if traj_ids is not None:
                bad = traj_ids[(traj_ids < 0) | (traj_ids >= gf.n_trajectories)]
                if bad.size:
                    raise ValueError(
                        f"trajectory {bad[0]} not in {name}; it has trajectories 0..{gf.n_trajectories - 1}"
                    )
            index = np.arange(sample_start, stop, dtype=np.int64)
            traj = gf.samples()["trajectory"][sample_start:stop]
            if traj_ids is not None:
                keep = np.isin(traj, traj_ids)
                index, traj = index[keep], traj[keep]
            if self.window is None:
                rows = index[:, None]
            else:
                n_in, n_out, stride = self.window
                offsets = stride * np.arange(n_in + n_out)
                per_traj = []
                for m in np.unique(traj):
                    s = index[traj == m]  # this trajectory's samples in time order (storage is time-major)
                    n_windows = s.size - offsets[-1]
                    if n_windows > 0:
                        per_traj.append(s[np.arange(n_windows)[:, None] + offsets])
                rows = np.concatenate(per_traj) if per_traj else np.empty((0, n_in + n_out), np.int64)
            file_ids.append(np.full(rows.shape[0], k, dtype=np.int64))
            sample_rows.append(rows)
        self._file_ids = np.concatenate(file_ids)
        self._samples = np.concatenate(sample_rows)
        if self._file_ids.size == 0:
            what = "samples" if self.window is None else f"windows of {self._samples.shape[1]} frames"
            if self.window is not None:
                what += f", stride {self.stride}"
            raise ValueError(f"the selection holds no {what}; widen the sample range or trajectories")

    # ----------------------------------------------------------------------------------------------------

    @property
    def paths(self) -> list:
        return [gf.path for gf in self._files]

    @property
    def n_channels(self) -> int:
        return len(self.fields)

    @property
    def item_shape(self) -> tuple[int, ...]:
        """(C, H, W) for samples, (T, C, H, W) for windows."""
        if self.window is None:
            return (self.n_channels, *self.shape)
        return (self._samples.shape[1], self.n_channels, *self.shape)

    def item_samples(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(file index (n,), stored sample indices (n, T)) behind the given items; T = 1 without windows."""
        idx = self._check_indices(indices)
        return self._file_ids[idx], self._samples[idx]

    def unique_samples(self) -> list[np.ndarray]:
        """Per file, the sorted stored sample indices the selection touches (each once; used for statistics)."""
        return [np.unique(self._samples[self._file_ids == k]) for k in range(len(self._files))]

    def file(self, k: int) -> GustFile:
        """The open `GustFile` number k (in the order of `paths`)."""
        return self._files[k]

    def __len__(self) -> int:
        return int(self._file_ids.size)

    def __repr__(self) -> str:
        window = "" if self.window is None else f", window(in, out, stride)={self.window}"
        return f"GustDataset({len(self._files)} file(s), fields={self.fields}, items={len(self)}{window})"

    def __getitem__(self, i: int) -> np.ndarray:
        if isinstance(i, (slice, np.ndarray, list, tuple)):
            raise TypeError("GustDataset[i] takes one integer; use read_batch(indices) for several items")
        return self.read_batch([i])[0]

    def _check_indices(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise ValueError(f"indices must be a 1-D integer sequence, got {idx.dtype} array of shape {idx.shape}")
        idx = idx.astype(np.int64)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            bad = int(idx.min() if idx.min() < -n else idx.max())
            raise IndexError(f"item {bad} out of range for a dataset of {n} items")
        return np.where(idx < 0, idx + n, idx)

    def read_batch(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Items at `indices` (any order, repeats allowed) as a new float32 array (B, C, H, W) or (B, T, C, H, W).

        Rows come back in the order given. Each sample is read once per (row, time) straight into its place in a
        freshly allocated output buffer, which the caller owns, in file order (``GustFile.read_into``).
        """
        idx = self._check_indices(indices)
        files, samples = self._file_ids[idx], self._samples[idx]
        T = samples.shape[1]
        out = np.empty((idx.size, T, self.n_channels, *self.shape), dtype=np.float32)
        for k in np.unique(files):
            rows = np.flatnonzero(files == k)
            # (row, t) pairs in file order, so the reads walk the file forwards
            pairs = sorted((int(samples[r, t]), int(r), t) for r in rows for t in range(T))
            order = [p[0] for p in pairs]
            for c, field in enumerate(self.fields):
                self._files[k].read_into(field, order, [out[r, t, c] for _, r, t in pairs])
        return out[:, 0] if self.window is None else out

    def close(self) -> None:
        for gf in self._files:
            gf.close()

    def __enter__(self) -> GustDataset:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
