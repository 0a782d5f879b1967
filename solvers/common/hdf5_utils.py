"""Gust's common HDF5 format: the one writer and reader of solver output.

Layout (format "gust", version "1.1"):

    /fields/{name}            (N, H, W) float32, contiguous; axis 1 vertical (y or z), axis 2 x.
                              attrs: dims = ["sample", y|z, "x"], mean/std/min/max (float64, NaN until finalize)
    /samples/time             (N,) float64      /samples/trajectory, /samples/step  (N,) int64
    /grid/x, /grid/{y|z}      (W,), (H,) float64; attrs: boundary ("periodic"|"wall"), uniform, length
    /diagnostics/time         (D,) float64      /diagnostics/{name}  (D, n_trajectories) float64
    /state/slot0/*, slot1/*   two copies of the latest full-precision solver state, plus step/time scalars and
                              counts (2,) int64: [n_samples, n_diag] written when that state was saved (new in 1.1;
                              a 1.0 file, which saved the state with every commit, is read as counts = /progress,
                              and a writer resuming one must keep doing so: `records_state_counts` is False)
    /progress                 int64 [n_samples_written, n_diag_written, n_state_saves] -- the commit record
    root attrs                format, format_version, complete, stop_reason, resumes (JSON list, one record per
                              resume; absent before the first), plus the caller's attrs

Crash safety: every group, dataset (with early space allocation) and attribute, placeholders included,
is created and flushed before the file appears under its final name. Attributes change only when a run is
resumed (the `resumes` record, before any data) and at `finalize`. While a run goes on only the raw
data of those contiguous datasets is written; `commit()` flushes the data and only then writes the new
counters into /progress and flushes again. Readers trust /progress alone, so a process killed at any
moment (SIGKILL, OOM killer, preemption) leaves a file that opens, validates and exposes exactly the
committed samples. The valid state slot is (n_state_saves - 1) % 2; the next state goes to the other one.
The state need not be saved with every commit: a resumed run rewinds the counters to the state's `counts`
(`GustWriter.rewind_to_state`) and rewrites what came after it.
The default libver is used on purpose: latest-format superblocks record "open for writing" and refuse to
open after a crash. The guarantee covers the death of the writing process, not an OS crash or power
loss (nothing is fsynced). Readers open with locking=False so a file can be inspected during a run.

CLI:  python -m solvers.common.hdf5_utils info FILE
      python -m solvers.common.hdf5_utils validate FILE
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import math
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .atomic import remove_temporaries
from .cli import EXIT_BAD_INPUT, OneLineArgumentParser, exit_process, fail

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "Grid",
    "GustFile",
    "GustFormatError",
    "GustWriter",
    "create_writer",
    "info",
    "main",
    "open_dataset",
    "open_for_resume",
    "provenance",
    "validate",
]

FORMAT_NAME = "gust"
FORMAT_VERSION = "1.1"

BOUNDARIES = ("periodic", "wall")
VERTICAL_NAMES = ("y", "z")
STAT_NAMES = ("mean", "std", "min", "max")
STATE_SCALARS = ("step", "time", "counts")  # per-slot bookkeeping, not solver state
SAMPLE_DATASETS = {"time": np.float64, "trajectory": np.int64, "step": np.int64}
RESERVED_ATTRS = ("format", "format_version", "complete", "stop_reason", "resumes")
PROVENANCE_KEYS = ("code_version", "library_versions", "jax_backend", "command_line", "created")
RESUME_KEYS = ("code_version", "jax_backend", "command_line", "created")  # what a resume record names

# Bytes of float32 sample data read per block when streaming (stats, validation).
_BLOCK_BYTES = 16 * 2**20


class GustFormatError(ValueError):
    """A file is not a (readable) Gust file, or misses/malforms part of the format."""


# --------------------------------------------------------------------------------------------------
# Grid


@dataclass(frozen=True, eq=False)
class Grid:
    """Grid coordinates and boundary conditions; `y` is the vertical axis (named by `vertical_name`)."""

    x: np.ndarray
    y: np.ndarray
    bc_x: str
    bc_y: str
    length_x: float
    length_y: float
    vertical_name: str = "y"

    def fingerprint(self) -> str:
        """16 hex digits of the SHA-256 of the coordinates and boundary conditions: equal for equal grids."""
        h = hashlib.sha256(f"{self.bc_y},{self.bc_x},{self.vertical_name}".encode())
        for coords in (self.y, self.x):
            h.update(np.ascontiguousarray(coords, dtype="<f8").tobytes())
        return h.hexdigest()[:16]

    def __post_init__(self) -> None:
        for axis in ("x", "y"):
            coords = np.array(getattr(self, axis), dtype=np.float64)
            if coords.ndim != 1 or coords.size == 0:
                raise ValueError(f"Grid.{axis} must be a non-empty 1-D array, got shape {coords.shape}")
            if not np.all(np.isfinite(coords)):
                raise ValueError(f"Grid.{axis} contains NaN/inf")
            steps = np.diff(coords)
            if not (np.all(steps > 0) or np.all(steps < 0)):
                raise ValueError(f"Grid.{axis} must be strictly monotonic")
            coords.setflags(write=False)
            object.__setattr__(self, axis, coords)
        for name in ("bc_x", "bc_y"):
            if getattr(self, name) not in BOUNDARIES:
                raise ValueError(f"Grid.{name} must be one of {BOUNDARIES}, got {getattr(self, name)!r}")
        for name in ("length_x", "length_y"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"Grid.{name} must be a positive finite number, got {value!r}")
            object.__setattr__(self, name, value)
        if self.vertical_name not in VERTICAL_NAMES:
            raise ValueError(f"Grid.vertical_name must be one of {VERTICAL_NAMES}, got {self.vertical_name!r}")

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) = (number of vertical points, number of x points)."""
        return (self.y.size, self.x.size)


def _is_uniform(coords: np.ndarray) -> bool:
    if coords.size < 3:
        return True
    steps = np.diff(coords)
    return bool(np.allclose(steps, steps[0], rtol=1e-9, atol=0.0))


# --------------------------------------------------------------------------------------------------
# Small helpers


def _check_name(kind: str, name: Any, reserved: Sequence[str] = ()) -> str:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{kind} name {name!r} must be a valid identifier (letters, digits, '_')")
    if name in reserved:
        raise ValueError(f"{kind} name {name!r} is reserved")
    return name


def _check_names(kind: str, names: Sequence[str], reserved: Sequence[str] = ()) -> list[str]:
    if isinstance(names, str):
        raise ValueError(f"{kind} names must be a sequence of names, not the string {names!r}")
    checked = [_check_name(kind, name, reserved) for name in names]
    if len(set(checked)) != len(checked):
        raise ValueError(f"duplicate {kind} names in {checked}")
    return checked


def _check_keys(what: str, given: Mapping[str, Any], expected: Sequence[str]) -> None:
    missing = [name for name in expected if name not in given]
    extra = [name for name in given if name not in expected]
    if missing or extra:
        raise ValueError(f"{what}: expected exactly {list(expected)}; missing {missing}, unexpected {extra}")


def _time_vector(what: str, time: Any) -> np.ndarray:
    time = np.asarray(time, dtype=np.float64)
    if time.ndim != 1:
        raise ValueError(f"{what}: time must be a 1-D array, got shape {time.shape}")
    return time


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _create_dataset(group: h5py.Group, name: str, shape: tuple[int, ...], dtype: Any) -> h5py.Dataset:
    """Contiguous dataset with its file space allocated now and no fill write."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)  # fresh per dataset: h5py modifies it in place
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    ds = group.create_dataset(name, shape=shape, dtype=dtype, dcpl=dcpl, track_times=False)
    if ds.size and ds.id.get_offset() is None:
        # h5py ignores the dcpl for scalar datasets; writing once allocates their space now.
        ds[()] = np.zeros(shape, dtype=dtype)
    return ds


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _encode_attr(key: str, value: Any) -> Any:
    """Python value -> typed HDF5 attribute value (dicts/lists become JSON strings)."""
    if value is None:
        return h5py.Empty("f8")
    if isinstance(value, (bool, np.bool_)):
        return np.bool_(value)
    if isinstance(value, (int, np.integer)):
        return np.int64(value)
    if isinstance(value, (float, np.floating)):
        return np.float64(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=_json_default)
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf" and value.ndim == 1:
        return value
    raise TypeError(f"attribute {key!r}: unsupported value type {type(value).__name__}")


def _decode_attr(value: Any) -> Any:
    """HDF5 attribute value -> plain Python value (JSON strings stay strings)."""
    if isinstance(value, h5py.Empty):
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.dtype == object:
        return [_decode_attr(item) for item in value.tolist()]
    return value


def _read_attrs(obj: h5py.HLObject) -> dict[str, Any]:
    return {key: _decode_attr(obj.attrs[key]) for key in obj.attrs}


def _blocks(n: int, frame_bytes: int) -> Iterator[tuple[int, int]]:
    step = max(1, _BLOCK_BYTES // max(1, frame_bytes))
    for start in range(0, n, step):
        yield start, min(n, start + step)


def _open_h5_for_read(path: Path) -> h5py.File:
    """Open read-only without taking a file lock, so a file can be read while a writer runs."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not h5py.is_hdf5(path):
        raise GustFormatError(f"{path} is not an HDF5 file")
    try:
        return h5py.File(path, "r", locking=False)
    except OSError as exc:
        if "locking flag" not in str(exc):
            raise GustFormatError(f"{path}: cannot open HDF5 file ({exc})") from exc
    # The file is already open in this process (by a writer, which locks): share that handle.
    return h5py.File(path, "r")


# --------------------------------------------------------------------------------------------------
# Structure checks, shared by the writer (on resume), the reader and validate()


@dataclass
class _Layout:
    fields: list[str]
    shape: tuple[int, int]
    n_samples_planned: int
    diagnostics: list[str]
    n_diag_planned: int
    n_trajectories: int
    state_spec: dict[str, tuple[tuple[int, ...], np.dtype]]
    grid: Grid
    progress: tuple[int, int, int]
    state_counts: tuple[int, int]  # [n_samples, n_diag] when the latest committed state was saved
    records_state_counts: bool  # False for a 1.0 file: its state must then go with every commit
    complete: bool
    stop_reason: str
    attrs: dict[str, Any]


def _parse_major(version: Any) -> int | None:
    if not isinstance(version, str):
        return None
    try:
        major, _minor = version.split(".")
        return int(major) if _minor.isdigit() else None
    except ValueError:
        return None


def _inspect(f: h5py.File, path: Path) -> tuple[_Layout | None, list[str]]:
    """Check the file's structure. Returns (layout, []) or (None, problems).

    Raises GustFormatError for a foreign file or a newer major format version.
    """
    fmt = _decode_attr(f.attrs.get("format"))
    if not (isinstance(fmt, str) and fmt == FORMAT_NAME):  # a foreign file's 'format' may be a number or an array
        raise GustFormatError(f"{path} is not a Gust file (no 'format' attribute = {FORMAT_NAME!r})")
    version = _decode_attr(f.attrs.get("format_version"))
    major = _parse_major(version)
    if major is None:
        raise GustFormatError(f"{path}: malformed 'format_version' attribute {version!r}")
    if major > _parse_major(FORMAT_VERSION):
        raise GustFormatError(f"{path}: format version {version} is newer than this reader supports ({FORMAT_VERSION})")
    problems: list[str] = []

    def group(name: str) -> h5py.Group | None:
        obj = f.get(name)
        if obj is None:
            problems.append(f"missing group '{name}'")
        elif not isinstance(obj, h5py.Group):
            problems.append(f"'{name}' is not a group")
        else:
            return obj
        return None

    def dataset(name: str, shape: tuple[int, ...] | None = None, dtype: Any = None) -> h5py.Dataset | None:
        obj = f.get(name)
        if obj is None:
            problems.append(f"missing dataset '{name}'")
        elif not isinstance(obj, h5py.Dataset):
            problems.append(f"'{name}' is not a dataset")
        elif shape is not None and obj.shape != shape:
            problems.append(f"dataset '{name}' has shape {obj.shape}, expected {shape}")
        elif dtype is not None and obj.dtype != np.dtype(dtype):
            problems.append(f"dataset '{name}' has dtype {obj.dtype}, expected {np.dtype(dtype)}")
        elif obj.id.get_create_plist().get_layout() != h5py.h5d.CONTIGUOUS and obj.shape != ():
            problems.append(f"dataset '{name}' is not contiguous")
        else:
            return obj
        return None

    def attr(obj: h5py.HLObject, key: str, kinds: tuple[type, ...]) -> Any:
        value = _decode_attr(obj.attrs[key]) if key in obj.attrs else None
        if value is None or not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
            problems.append(f"missing or malformed attribute '{key}' on '{obj.name}'")
            return None
        return value

    complete = attr(f, "complete", (bool,))
    stop_reason = attr(f, "stop_reason", (str,))

    # fields
    fields: list[str] = []
    n_planned, shape = 0, (0, 0)
    fields_group = group("/fields")
    if fields_group is not None:
        names = attr(fields_group, "names", (list,))
        if names is not None:
            fields = [str(name) for name in names]
            if not fields:
                problems.append("no fields listed in attribute 'names' on '/fields'")
            if sorted(fields) != sorted(fields_group.keys()):
                problems.append(
                    f"'/fields' attribute 'names' {fields} does not match its datasets {sorted(fields_group)}"
                )
        first_shape = None
        for name in fields:
            ds = dataset(f"/fields/{name}", None, np.float32)
            if ds is None:
                continue
            if ds.ndim != 3:
                problems.append(f"dataset '/fields/{name}' must be 3-D (sample, vertical, x), got {ds.shape}")
                continue
            if first_shape is None:
                first_shape = ds.shape
            elif ds.shape != first_shape:
                problems.append(f"dataset '/fields/{name}' has shape {ds.shape}, expected {first_shape}")
            for key in STAT_NAMES:
                attr(ds, key, (float,))
        if first_shape is not None:
            n_planned, shape = first_shape[0], (first_shape[1], first_shape[2])

    # samples
    n_trajectories = 0
    samples_group = group("/samples")
    if samples_group is not None:
        n_trajectories = attr(samples_group, "n_trajectories", (int,)) or 0
        for name, dtype in SAMPLE_DATASETS.items():
            dataset(f"/samples/{name}", (n_planned,) if fields else None, dtype)

    # grid
    grid = None
    grid_group = group("/grid")
    if grid_group is not None:
        verticals = [name for name in VERTICAL_NAMES if name in grid_group]
        if len(verticals) != 1:
            problems.append("'/grid' must hold exactly one of the datasets 'y' and 'z'")
        else:
            axes = {}
            for axis, name, size in (("x", "x", shape[1]), ("y", verticals[0], shape[0])):
                ds = dataset(f"/grid/{name}", (size,) if fields else None, np.float64)
                if ds is not None:
                    axes[axis] = (
                        ds[()],
                        attr(ds, "boundary", (str,)),
                        attr(ds, "length", (float, int)),
                        attr(ds, "uniform", (bool,)),
                    )
            if len(axes) == 2 and not problems:
                try:
                    grid = Grid(
                        x=axes["x"][0],
                        y=axes["y"][0],
                        bc_x=axes["x"][1],
                        bc_y=axes["y"][1],
                        length_x=axes["x"][2],
                        length_y=axes["y"][2],
                        vertical_name=verticals[0],
                    )
                except ValueError as exc:
                    problems.append(f"malformed grid in '/grid': {exc}")

    # diagnostics
    diagnostics: list[str] = []
    n_diag_planned = 0
    diag_group = group("/diagnostics")
    if diag_group is not None:
        time_ds = dataset("/diagnostics/time", None, np.float64)
        if time_ds is not None:
            if time_ds.ndim != 1:
                problems.append(f"dataset '/diagnostics/time' must be 1-D, got {time_ds.shape}")
            else:
                n_diag_planned = time_ds.shape[0]
        diagnostics = [name for name in diag_group if name != "time"]
        for name in diagnostics:
            dataset(f"/diagnostics/{name}", (n_diag_planned, n_trajectories), np.float64)

    # state
    state_spec: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    slots = [group(f"/state/slot{k}") for k in (0, 1)]
    records_counts = all(slot is not None and "counts" in slot for slot in slots)
    if all(slot is not None for slot in slots):
        members = [
            {name: (ds.shape, ds.dtype) for name, ds in slot.items() if isinstance(ds, h5py.Dataset)} for slot in slots
        ]
        if members[0] != members[1]:
            problems.append("'/state/slot0' and '/state/slot1' hold different datasets")
        for k in (0, 1):
            dataset(f"/state/slot{k}/step", (), np.int64)
            dataset(f"/state/slot{k}/time", (), np.float64)
            if "counts" in slots[k]:
                dataset(f"/state/slot{k}/counts", (2,), np.int64)
        state_spec = {name: spec for name, spec in members[0].items() if name not in STATE_SCALARS}

    # progress
    progress = (0, 0, 0)
    progress_ds = dataset("/progress", (3,), np.int64)
    if progress_ds is not None:
        progress = tuple(int(v) for v in progress_ds[()])
        n_samples, n_diag, n_saves = progress
        if not 0 <= n_samples <= n_planned:
            problems.append(f"/progress: n_samples_written={n_samples} outside [0, {n_planned}]")
        if not 0 <= n_diag <= n_diag_planned:
            problems.append(f"/progress: n_diag_written={n_diag} outside [0, {n_diag_planned}]")
        if n_saves < 0:
            problems.append(f"/progress: n_state_saves={n_saves} is negative")
    state_counts = progress[:2]
    if not problems and progress[2] > 0:
        slot = f[f"/state/slot{(progress[2] - 1) % 2}"]
        if "counts" in slot:
            state_counts = tuple(int(v) for v in slot["counts"][()])
            if not (0 <= state_counts[0] <= progress[0] and 0 <= state_counts[1] <= progress[1]):
                problems.append(
                    f"{slot.name}/counts: {list(state_counts)} outside the committed counts {list(progress[:2])}"
                )

    if problems or grid is None:
        return None, problems or ["malformed '/grid'"]
    layout = _Layout(
        fields=fields,
        shape=shape,
        n_samples_planned=n_planned,
        diagnostics=diagnostics,
        n_diag_planned=n_diag_planned,
        n_trajectories=n_trajectories,
        state_spec=state_spec,
        grid=grid,
        progress=progress,
        state_counts=state_counts,
        records_state_counts=records_counts,
        complete=complete,
        stop_reason=stop_reason,
        attrs=_read_attrs(f),
    )
    return layout, []


def _layout_or_raise(f: h5py.File, path: Path) -> _Layout:
    layout, problems = _inspect(f, path)
    if layout is None:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise GustFormatError(f"{path}: {problems[0]}{more}")
    return layout


def _read_state(f: h5py.File, path: Path, layout_names: Sequence[str], n_saves: int):
    if n_saves <= 0:
        raise GustFormatError(f"{path}: no committed solver state (n_state_saves = 0)")
    slot = f[f"/state/slot{(n_saves - 1) % 2}"]
    arrays = {name: slot[name][()] for name in layout_names}
    return arrays, int(slot["step"][()]), float(slot["time"][()])


# --------------------------------------------------------------------------------------------------
# Writer


def create_writer(
    path: str | os.PathLike,
    *,
    fields: Sequence[str],
    shape: tuple[int, int],
    n_samples: int,
    grid: Grid,
    diagnostics: Sequence[str],
    n_diag: int,
    n_trajectories: int,
    state_spec: Mapping[str, tuple[tuple[int, ...], Any]],
    attrs: Mapping[str, Any],
    overwrite: bool = False,
) -> GustWriter:
    """Create a Gust file with all metadata in place and return its writer.

    The file is built under a temporary name in the same directory and appears under `path` only
    once complete, so `path` never holds a half-created file.
    """
    path = Path(path)
    exists_msg = f"{path} already exists; pass --overwrite to replace it or --resume to continue it"
    if path.exists() and not overwrite:
        raise FileExistsError(exists_msg)
    fields = _check_names("field", fields)
    if not fields:
        raise ValueError("at least one field is required")
    diagnostics = _check_names("diagnostic", diagnostics, reserved=("time",))
    state_names = _check_names("state", list(state_spec), reserved=STATE_SCALARS)
    if len(shape) != 2:
        raise ValueError(f"shape must be (H, W), got {shape!r}")
    H, W = (_positive_int("shape entry", n) for n in shape)
    n_samples = _positive_int("n_samples", n_samples)
    n_diag = _positive_int("n_diag", n_diag, minimum=0)
    n_trajectories = _positive_int("n_trajectories", n_trajectories)
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a Grid, got {type(grid).__name__}")
    if grid.shape != (H, W):
        raise ValueError(f"grid has {grid.shape} = (len(y), len(x)) points but shape is {(H, W)}")
    spec = {}
    for name in state_names:
        state_shape, dtype = state_spec[name]
        spec[name] = (tuple(int(n) for n in state_shape), np.dtype(dtype))
        if spec[name][1].kind not in "biufc":
            raise ValueError(f"state {name!r}: unsupported dtype {spec[name][1]}")
    clashes = [key for key in attrs if key in RESERVED_ATTRS]
    if clashes:
        raise ValueError(f"attrs {clashes} are reserved by the format and set by the writer")
    encoded = {}
    for key, value in attrs.items():
        if not isinstance(key, str) or not key or "/" in key:
            raise ValueError(f"attribute name {key!r} must be a non-empty string without '/'")
        encoded[key] = _encode_attr(key, value)
    if isinstance(attrs.get("config"), str):  # the readers parse it: a file they would refuse is never made
        try:
            json.loads(attrs["config"])
        except json.JSONDecodeError as exc:
            raise ValueError(f"attrs['config'] must be JSON ({exc})") from None
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: no such folder for {path.name}")

    remove_temporaries(path.parent, [glob.escape(path.name)])  # what a run killed while creating this file left behind
    tmp = path.with_name(f".{path.name}.{os.getpid()}.creating")
    f = h5py.File(tmp, "w")  # default libver on purpose (see module docstring)
    try:
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["complete"] = np.bool_(False)
        f.attrs["stop_reason"] = ""
        for key, value in encoded.items():
            f.attrs[key] = value

        vertical = grid.vertical_name
        fields_group = f.create_group("fields")
        fields_group.attrs["names"] = np.array(fields, dtype=h5py.string_dtype())
        for name in fields:
            ds = _create_dataset(fields_group, name, (n_samples, H, W), np.float32)
            ds.attrs["dims"] = np.array(["sample", vertical, "x"], dtype=h5py.string_dtype())
            for key in STAT_NAMES:
                ds.attrs[key] = np.float64(np.nan)

        samples_group = f.create_group("samples")
        samples_group.attrs["n_trajectories"] = np.int64(n_trajectories)
        for name, dtype in SAMPLE_DATASETS.items():
            _create_dataset(samples_group, name, (n_samples,), dtype)

        grid_group = f.create_group("grid")
        for name, coords, bc, length in (
            ("x", grid.x, grid.bc_x, grid.length_x),
            (vertical, grid.y, grid.bc_y, grid.length_y),
        ):
            ds = grid_group.create_dataset(name, data=coords, dtype=np.float64, track_times=False)
            ds.attrs["boundary"] = bc
            ds.attrs["uniform"] = np.bool_(_is_uniform(coords))
            ds.attrs["length"] = np.float64(length)

        diag_group = f.create_group("diagnostics")
        _create_dataset(diag_group, "time", (n_diag,), np.float64)
        for name in diagnostics:
            ds = _create_dataset(diag_group, name, (n_diag, n_trajectories), np.float64)
            ds.attrs["dims"] = np.array(["diag", "trajectory"], dtype=h5py.string_dtype())

        state_group = f.create_group("state")
        for k in (0, 1):
            slot = state_group.create_group(f"slot{k}")
            for name, (state_shape, dtype) in spec.items():
                _create_dataset(slot, name, state_shape, dtype)
            _create_dataset(slot, "step", (), np.int64)
            _create_dataset(slot, "time", (), np.float64)
            _create_dataset(slot, "counts", (2,), np.int64)

        progress = _create_dataset(f, "progress", (3,), np.int64)
        progress[...] = np.zeros(3, dtype=np.int64)
        f.flush()

        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic: fails if path appeared meanwhile
            except FileExistsError:
                raise FileExistsError(exists_msg) from None
            except OSError:  # filesystem without hard links
                if path.exists():
                    raise FileExistsError(exists_msg) from None
                os.replace(tmp, path)
            tmp.unlink(missing_ok=True)
    except BaseException:
        f.close()
        tmp.unlink(missing_ok=True)
        raise
    return GustWriter(f, path, _layout_or_raise(f, path))


def open_for_resume(path: str | os.PathLike) -> GustWriter:
    """Reopen an incomplete Gust file for writing, positioned at its committed counters."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not h5py.is_hdf5(path):
        raise GustFormatError(f"{path} is not an HDF5 file")
    try:
        f = h5py.File(path, "r+")
    except OSError as exc:
        raise OSError(f"{path}: cannot open for resuming; is another process still writing it? ({exc})") from exc
    try:
        layout = _layout_or_raise(f, path)
        if layout.complete:
            raise GustFormatError(f"{path} is complete; nothing to resume")
        # Forget what an earlier finalize(complete=False) recorded; it is recomputed at the next one.
        f.attrs.modify("stop_reason", "")
        for name in layout.fields:
            for key in STAT_NAMES:
                f["fields"][name].attrs.modify(key, np.nan)
        f.flush()
        layout.stop_reason = ""
        layout.attrs["stop_reason"] = ""
    except BaseException:
        f.close()
        raise
    return GustWriter(f, path, layout)


class GustWriter:
    """Appends samples/diagnostics/state to a Gust file; nothing is visible to readers until commit().

    Obtain one from create_writer() or open_for_resume().
    """

    def __init__(self, f: h5py.File, path: Path, layout: _Layout) -> None:
        self._f: h5py.File | None = f
        self.path = path
        self.fields = list(layout.fields)
        self.shape = layout.shape
        self.n_samples_planned = layout.n_samples_planned
        self.diagnostics = list(layout.diagnostics)
        self.n_diag_planned = layout.n_diag_planned
        self.n_trajectories = layout.n_trajectories
        self.state_spec = dict(layout.state_spec)
        self.attrs = dict(layout.attrs)
        self.n_samples_written, self.n_diag_written, self.n_state_saves = layout.progress
        self.state_counts = layout.state_counts
        self.records_state_counts = layout.records_state_counts
        self._pending = list(layout.progress)
        self._pending_state_counts = layout.state_counts
        self._fields = {name: f["fields"][name] for name in self.fields}
        self._samples = {name: f["samples"][name] for name in SAMPLE_DATASETS}
        self._diag = {name: f["diagnostics"][name] for name in ["time", *self.diagnostics]}
        self._progress = f["progress"]

    # context manager: closes without finalizing
    def __enter__(self) -> GustWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _file(self) -> h5py.File:
        if self._f is None:
            raise ValueError(f"writer for {self.path} is closed")
        return self._f

    def _check_room(self, what: str, start: int, n: int, planned: int, label: str) -> None:
        if start + n > planned:
            raise ValueError(
                f"{what}: rows [{start}, {start + n}) overflow the planned {label}={planned} of {self.path}"
            )

    def write_samples(self, fields: Mapping[str, np.ndarray], time: Any, trajectory: Any, step: Any) -> None:
        """Append n samples: fields {name: (n, H, W)}, time/trajectory/step (n,). Pending until commit()."""
        self._file()
        _check_keys("write_samples fields", fields, self.fields)
        time = _time_vector("write_samples", time)
        n = time.shape[0]
        arrays = {}
        for name in self.fields:
            data = np.asarray(fields[name])
            if data.shape != (n, *self.shape):
                raise ValueError(f"write_samples: field {name!r} has shape {data.shape}, expected {(n, *self.shape)}")
            if data.dtype.kind not in "biuf":
                raise ValueError(f"write_samples: field {name!r} has non-real dtype {data.dtype}")
            arrays[name] = np.ascontiguousarray(data, dtype=np.float32)
        ints = {}
        for label, values in (("trajectory", trajectory), ("step", step)):
            values = np.asarray(values)
            if values.shape != (n,) or values.dtype.kind not in "iu":
                raise ValueError(
                    f"write_samples: {label} must be an integer array of shape {(n,)}, "
                    f"got {values.dtype} {values.shape}"
                )
            ints[label] = values.astype(np.int64)
        if n and (ints["trajectory"].min() < 0 or ints["trajectory"].max() >= self.n_trajectories):
            raise ValueError(f"write_samples: trajectory ids must lie in [0, {self.n_trajectories})")
        start = self._pending[0]
        self._check_room("write_samples", start, n, self.n_samples_planned, "n_samples")
        if n == 0:
            return
        for name, data in arrays.items():
            self._fields[name][start : start + n] = data
        self._samples["time"][start : start + n] = time
        self._samples["trajectory"][start : start + n] = ints["trajectory"]
        self._samples["step"][start : start + n] = ints["step"]
        self._pending[0] = start + n

    def write_diagnostics(self, time: Any, values: Mapping[str, np.ndarray]) -> None:
        """Append r diagnostic rows: time (r,), values {name: (r, n_trajectories)}. Pending until commit()."""
        self._file()
        _check_keys("write_diagnostics values", values, self.diagnostics)
        time = _time_vector("write_diagnostics", time)
        r = time.shape[0]
        arrays = {}
        for name in self.diagnostics:
            data = np.asarray(values[name])
            if data.shape != (r, self.n_trajectories) or data.dtype.kind not in "biuf":
                raise ValueError(
                    f"write_diagnostics: {name!r} must be a real array of shape {(r, self.n_trajectories)}, "
                    f"got {data.dtype} {data.shape}"
                )
            arrays[name] = data.astype(np.float64)
        start = self._pending[1]
        self._check_room("write_diagnostics", start, r, self.n_diag_planned, "n_diag")
        if r == 0:
            return
        self._diag["time"][start : start + r] = time
        for name, data in arrays.items():
            self._diag[name][start : start + r] = data
        self._pending[1] = start + r

    def write_state(self, arrays: Mapping[str, np.ndarray], step: int, time: float) -> None:
        """Write the full solver state into the free slot; it becomes the valid one at commit()."""
        f = self._file()
        _check_keys("write_state arrays", arrays, list(self.state_spec))
        checked = {}
        for name, (shape, dtype) in self.state_spec.items():
            data = np.asarray(arrays[name])
            if data.shape != shape:
                raise ValueError(f"write_state: {name!r} has shape {data.shape}, expected {shape}")
            if not np.can_cast(data.dtype, dtype, casting="safe"):
                raise ValueError(f"write_state: {name!r} has dtype {data.dtype}, cannot store losslessly as {dtype}")
            checked[name] = data
        slot = f["state"][f"slot{self.n_state_saves % 2}"]
        for name, data in checked.items():
            slot[name][()] = data
        slot["step"][()] = np.int64(step)
        slot["time"][()] = np.float64(time)
        counts = (self._pending[0], self._pending[1])
        if self.records_state_counts:  # a 1.0 file has no counts: its writer saves the state with every commit
            slot["counts"][()] = np.array(counts, dtype=np.int64)
        self._pending[2] = self.n_state_saves + 1
        self._pending_state_counts = counts

    def read_state(self) -> tuple[dict[str, np.ndarray], int, float]:
        """The latest committed state: (arrays, step, time). GustFormatError if none was committed."""
        return _read_state(self._file(), self.path, list(self.state_spec), self.n_state_saves)

    def commit(self) -> None:
        """Make everything written so far visible: flush the data, then record the counters."""
        f = self._file()
        f.flush()
        self._progress[...] = np.array(self._pending, dtype=np.int64)
        f.flush()
        self.n_samples_written, self.n_diag_written, self.n_state_saves = self._pending
        self.state_counts = self._pending_state_counts

    def rewind_to_state(self) -> None:
        """Commit the sample and diagnostic counters back to where they stood when the latest committed state was
        saved, so that a resumed run continues from that state and rewrites what followed it. The rows after it stay
        in the file, invisible, until they are overwritten. No-op when the state was saved with the last commit."""
        self._file()
        if self.n_state_saves <= 0:
            raise GustFormatError(f"{self.path}: no committed solver state to rewind to")
        if self._pending != [self.n_samples_written, self.n_diag_written, self.n_state_saves]:
            raise ValueError("rewind_to_state() with uncommitted writes; call commit() first")
        if tuple(self.state_counts) == (self.n_samples_written, self.n_diag_written):
            return
        self._pending[0], self._pending[1] = self.state_counts
        self.commit()

    def record_resume(self, record: dict[str, Any]) -> None:
        """Append ``record`` (JSON-serialisable: who resumed the run, when, from where) to the root attribute
        ``resumes``, a JSON list; the run's own provenance attributes stay those of its first start."""
        f = self._file()
        old = f.attrs.get("resumes", "[]")
        try:
            text = json.dumps([*json.loads(old.decode() if isinstance(old, bytes) else old), record])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"record_resume: the record is not JSON-serialisable ({exc})") from None
        f.attrs["resumes"] = self.attrs["resumes"] = text
        f.flush()

    def finalize(self, complete: bool = True, stop_reason: str = "completed") -> None:
        """Compute per-field stats over the committed samples, record stop_reason and `complete`, close.

        Uncommitted writes are discarded; complete=True requires all planned samples and diagnostics rows to be
        committed.
        """
        if not isinstance(stop_reason, str):
            raise TypeError(f"finalize: stop_reason must be a string (got {stop_reason!r})")
        f = self._file()
        if complete:
            if self.n_samples_written != self.n_samples_planned:
                raise ValueError(
                    f"finalize(complete=True) with {self.n_samples_written}/{self.n_samples_planned} "
                    f"samples committed in {self.path}"
                )
            if self.n_diag_written != self.n_diag_planned:
                raise ValueError(
                    f"finalize(complete=True) with {self.n_diag_written}/{self.n_diag_planned} "
                    f"diagnostics rows committed in {self.path}"
                )
            if self._pending != [self.n_samples_written, self.n_diag_written, self.n_state_saves]:
                raise ValueError("finalize(complete=True) with uncommitted writes; call commit() first")
        for ds in self._fields.values():
            for key, value in _field_stats(ds, self.n_samples_written).items():
                ds.attrs.modify(key, value)
        f.attrs.modify("stop_reason", stop_reason)
        f.flush()
        f.attrs.modify("complete", np.bool_(complete))  # last: the file is complete only once all is in
        f.flush()
        self.attrs["stop_reason"] = stop_reason
        self.attrs["complete"] = bool(complete)
        self.close()

    def close(self) -> None:
        """Close without finalizing; uncommitted writes are lost (readers never saw them)."""
        if self._f is not None:
            self._f.close()
            self._f = None


def _field_stats(ds: h5py.Dataset, n: int) -> dict[str, float]:
    """mean/std/min/max over samples [0, n), streamed in float64 blocks (Chan et al. merge)."""
    count, mean, m2 = 0, 0.0, 0.0
    lo, hi = np.inf, -np.inf
    frame_bytes = int(np.prod(ds.shape[1:])) * 4
    for start, stop in _blocks(n, frame_bytes):
        block = ds[start:stop].astype(np.float64)
        k = block.size
        with np.errstate(invalid="ignore", over="ignore"):  # an inf gives nan/inf statistics, reported as they are
            block_mean = float(block.mean())
            block_m2 = float(np.square(block - block_mean).sum())
        delta = block_mean - mean
        total = count + k
        mean += delta * k / total
        m2 += block_m2 + delta * delta * count * k / total
        count = total
        lo = float(np.minimum(lo, block.min()))
        hi = float(np.maximum(hi, block.max()))
    if count == 0:
        return {key: math.nan for key in STAT_NAMES}
    return {"mean": mean, "std": math.sqrt(m2 / count), "min": lo, "max": hi}


# --------------------------------------------------------------------------------------------------
# Reader


def open_dataset(path: str | os.PathLike) -> GustFile:
    """Open a Gust file read-only (without locking) after validating its structure."""
    return GustFile(path)


class GustFile:
    """Read access to a Gust file; only committed samples/diagnostics are ever returned."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        # read_into's raw descriptor is opened with the file, not on first use: a file replaced under the same name
        # later (a rerun with --overwrite renames a new file onto it) must not be read at this file's offsets
        self._fd: int | None = None
        self._f: h5py.File | None = _open_h5_for_read(self.path)
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
            if os.fstat(self._fd).st_ino != os.fstat(self._f.id.get_vfd_handle()).st_ino:  # replaced in between
                raise GustFormatError(f"{self.path} was replaced while it was being opened; open it again")
            layout = _layout_or_raise(self._f, self.path)
            self.attrs: dict[str, Any] = layout.attrs
            config = self.attrs.get("config")
            self.config: dict[str, Any] = {}
            if isinstance(config, str):
                try:
                    self.config = json.loads(config)
                except json.JSONDecodeError as exc:
                    raise GustFormatError(f"{self.path}: attribute 'config' is not valid JSON ({exc})") from None
        except BaseException:
            self.close()
            raise
        self.fields = layout.fields
        self.shape = layout.shape
        self.grid = layout.grid
        self.vertical_name = layout.grid.vertical_name
        self.n_trajectories = layout.n_trajectories
        self.n_samples_planned = layout.n_samples_planned
        self.n_diag_planned = layout.n_diag_planned
        self.diagnostic_names = layout.diagnostics
        self.n_samples, self.n_diag, self.n_state_saves = layout.progress
        self.state_counts = layout.state_counts  # [n_samples, n_diag] when the latest state was saved
        self.records_state_counts = layout.records_state_counts  # False: a 1.0 file, state with every commit
        self.complete = layout.complete
        self.stop_reason = layout.stop_reason
        self._state_names = list(layout.state_spec)
        self._datasets = {name: self._f["fields"][name] for name in self.fields}  # group lookups cost ~40 us

    def __enter__(self) -> GustFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def identity(self) -> dict[str, Any]:
        """Which file and which run made it, without reading its data (cheap at any size): absolute path, the
        writing run's ``created`` time, code version and solver, committed samples, completeness and size. A rerun
        (``--overwrite``) has a new ``created``; a byte-exact identity needs the sha256 of the whole file."""
        return {
            "path": str(self.path.resolve()),
            "created": self.attrs.get("created"),
            "code_version": self.attrs.get("code_version"),
            "solver": self.attrs.get("solver"),
            "n_samples": int(self.n_samples),
            "complete": bool(self.complete),
            "size_bytes": os.fstat(self._fd).st_size if self._fd is not None else self.path.stat().st_size,
        }

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._f is not None:
            self._f.close()
            self._f = None

    def __repr__(self) -> str:
        return (
            f"GustFile({str(self.path)!r}, fields={self.fields}, shape={self.shape}, "
            f"samples={self.n_samples}/{self.n_samples_planned}, complete={self.complete})"
        )

    def _dataset(self, field: str) -> h5py.Dataset:
        if self._f is None:
            raise ValueError(f"{self.path} is closed")
        if field not in self._datasets:
            raise KeyError(f"no field {field!r} in {self.path}; fields are {self.fields}")
        return self._datasets[field]

    def read(self, field: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Samples [start, stop) of a field as float32 (n, H, W); stop defaults to the committed count."""
        ds = self._dataset(field)
        stop = self.n_samples if stop is None else stop
        if not 0 <= start <= stop <= self.n_samples:
            raise IndexError(
                f"samples [{start}, {stop}) out of range: {self.path} has {self.n_samples} committed samples"
            )
        out = np.empty((stop - start, *self.shape), dtype=np.float32)
        if stop > start:
            ds.read_direct(out, source_sel=np.s_[start:stop])
        return out

    def read_batch(self, field: str, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Samples at strictly increasing indices as float32 (len(indices), H, W), in one HDF5 read."""
        ds = self._dataset(field)
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise ValueError(f"read_batch: indices must be a 1-D integer sequence, got {idx.dtype} {idx.shape}")
        idx = idx.astype(np.int64)
        if idx.size == 0:
            return np.empty((0, *self.shape), dtype=np.float32)
        steps = np.diff(idx)
        if np.any(steps <= 0):
            k = int(np.argmax(steps <= 0))
            if steps[k] == 0:
                problem = f"duplicate index {idx[k]} at positions {k} and {k + 1}"
            else:
                problem = f"index {idx[k + 1]} at position {k + 1} follows {idx[k]} (unsorted)"
            raise ValueError(f"read_batch: indices must be sorted and unique; {problem}")
        if idx[0] < 0 or idx[-1] >= self.n_samples:
            bad = int(idx[0] if idx[0] < 0 else idx[-1])
            raise ValueError(
                f"read_batch: index {bad} out of range: {self.path} has {self.n_samples} committed samples"
            )
        first, last = int(idx[0]), int(idx[-1])
        if last - first + 1 == idx.size:
            # A consecutive run: one plain slab read. Otherwise one fancy-index read, which on contiguous
            # storage beats reading the covering slab even when it is only 1.25x longer (bench_hdf5.py).
            out = np.empty((idx.size, *self.shape), dtype=np.float32)
            ds.read_direct(out, source_sel=np.s_[first : last + 1])
            return out
        return ds[idx]

    def read_into(self, field: str, indices: Sequence[int] | np.ndarray, out: Sequence[np.ndarray]) -> None:
        """Read sample ``indices[j]`` (any order, repeats allowed) of ``field`` into ``out[j]``, a C-contiguous
        float32 (H, W) array (e.g. a row of a caller's batch buffer), without intermediate copies.

        Gust fields are contiguous, uncompressed float32 datasets whose space is allocated at creation, so each
        sample is a fixed byte range of the file: it is read with one ``os.preadv`` straight into ``out[j]``,
        bypassing h5py's global lock (bench_dataloader.py measures the gain). Other layouts fall back to h5py.
        """
        ds = self._dataset(field)
        idx = np.asarray(indices, dtype=np.int64)
        if len(out) != idx.size:
            raise ValueError(f"read_into: {idx.size} indices but {len(out)} output arrays")
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_samples):
            bad = int(idx.min() if idx.min() < 0 else idx.max())
            raise ValueError(f"read_into: index {bad} out of range: {self.path} has {self.n_samples} committed samples")
        for a in out:
            if a.shape != self.shape or a.dtype != np.float32 or not a.flags.c_contiguous:
                raise ValueError(
                    f"read_into: outputs must be C-contiguous float32 {self.shape}, got {a.dtype} {a.shape}"
                )
        offset = ds.id.get_offset()
        if offset is None or ds.chunks is not None or ds.dtype != np.dtype("<f4") or not hasattr(os, "preadv"):
            for a, i in zip(out, idx, strict=True):
                ds.read_direct(a, source_sel=np.s_[int(i)])
            return
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        frame = self.shape[0] * self.shape[1] * 4
        for a, i in zip(out, idx, strict=True):
            got = os.preadv(self._fd, [memoryview(a).cast("B")], offset + int(i) * frame)
            if got != frame:
                raise OSError(f"{self.path}: short read of sample {int(i)} of {field!r} ({got} of {frame} bytes)")

    def samples(self) -> dict[str, np.ndarray]:
        """time, trajectory and step of the committed samples."""
        f = self._open()
        return {name: f["samples"][name][: self.n_samples] for name in SAMPLE_DATASETS}

    def diagnostics(self) -> dict[str, np.ndarray]:
        """time (r,) and every diagnostic (r, n_trajectories) over the committed rows."""
        f = self._open()
        return {name: f["diagnostics"][name][: self.n_diag] for name in ["time", *self.diagnostic_names]}

    def read_state(self, names: Sequence[str] | None = None) -> tuple[dict[str, np.ndarray], int, float]:
        """The latest committed solver state: (arrays, step, time), the arrays ``names`` only (default all; ``()``
        reads just step and time). GustFormatError if none.

        The commit record is read again here: a writer that has committed since this file was opened writes its next
        state into the slot this reader would otherwise take for the latest (only committed states are returned)."""
        f = self._open()
        progress, n_saves = f["progress"], self.n_state_saves
        offset = progress.id.get_offset()  # contiguous: read the record from disk, past HDF5's caches
        if offset is not None and self._fd is not None:
            raw = os.pread(self._fd, progress.dtype.itemsize * 3, offset)
            n_saves = max(n_saves, int(np.frombuffer(raw, dtype=progress.dtype)[2]))
        return _read_state(f, self.path, self._state_names if names is None else list(names), n_saves)

    def field_stats(self, field: str) -> dict[str, float]:
        """The mean/std/min/max attributes recorded at finalize (NaN before)."""
        ds = self._dataset(field)
        return {key: float(ds.attrs[key]) for key in STAT_NAMES}

    def _open(self) -> h5py.File:
        if self._f is None:
            raise ValueError(f"{self.path} is closed")
        return self._f


# --------------------------------------------------------------------------------------------------
# validate / info


def validate(path: str | os.PathLike) -> list[str]:
    """Problems found in a Gust file ([] = valid). Data are read in blocks.

    Raises FileNotFoundError for a missing file and GustFormatError for a file that is not a Gust file
    (or has a newer major version); everything else is reported as a problem.
    """
    path = Path(path)
    with _open_h5_for_read(path) as f:
        layout, problems = _inspect(f, path)
        if layout is None:
            return problems
        n, n_planned = layout.progress[0], layout.n_samples_planned
        if not layout.complete:
            reason = f" (stop_reason: {layout.stop_reason})" if layout.stop_reason else ""
            problems.append(f"incomplete: {n}/{n_planned} samples written{reason}")
        elif n != n_planned:
            problems.append(f"marked complete but only {n}/{n_planned} samples written")
        elif layout.progress[1] != layout.n_diag_planned:
            problems.append(
                f"marked complete but only {layout.progress[1]}/{layout.n_diag_planned} diagnostics rows written"
            )

        frame_bytes = layout.shape[0] * layout.shape[1] * 4
        # A constant frame is suspect (unwritten or collapsed data), except at step 0: an initial condition
        # may legitimately be uniform (e.g. convection starting from rest).
        initial = f["samples"]["step"][:n] == 0
        for name in layout.fields:
            ds = f["fields"][name]
            nonfinite, constant = [], []
            for start, stop in _blocks(n, frame_bytes):
                frames = ds[start:stop].reshape(stop - start, -1)
                finite = np.isfinite(frames).all(axis=1)
                nonfinite.extend((start + np.flatnonzero(~finite)).tolist())
                flat = (frames.min(axis=1) == frames.max(axis=1)) & ~initial[start:stop]
                constant.extend((start + np.flatnonzero(flat & finite)).tolist())
            if nonfinite:
                problems.append(
                    f"field '{name}': {len(nonfinite)} sample(s) contain NaN/inf (first: sample {nonfinite[0]})"
                )
            if constant:
                problems.append(
                    f"field '{name}': {len(constant)} constant (all-equal) frame(s) (first: sample {constant[0]})"
                )
            if layout.complete and n and not nonfinite:
                stats = [float(ds.attrs[key]) for key in STAT_NAMES]
                if not all(math.isfinite(v) for v in stats):
                    problems.append(f"field '{name}': statistics attributes not computed in a complete file")

        samples = {name: f["samples"][name][:n] for name in SAMPLE_DATASETS}
        if not np.all(np.isfinite(samples["time"])):
            problems.append("samples: time contains NaN/inf")
        trajectory = samples["trajectory"]
        out_of_range = (trajectory < 0) | (trajectory >= layout.n_trajectories)
        if np.any(out_of_range):
            problems.append(
                f"samples: trajectory ids outside [0, {layout.n_trajectories}) "
                f"(first: sample {int(np.argmax(out_of_range))})"
            )
        # a solver's file is time-major (sample i = frame i // M of trajectory i % M): each frame a new time
        time_major = str(layout.attrs.get("sample_order", "")).startswith("time-major")
        if time_major and not np.any(out_of_range):
            wrong = np.flatnonzero(trajectory != np.arange(n) % layout.n_trajectories)
            if wrong.size:
                problems.append(f"samples: not in the time-major order sample_order states (first: sample {wrong[0]})")
        for label in ("time", "step"):
            for traj in np.unique(trajectory[~out_of_range]):
                where = np.flatnonzero(trajectory == traj)
                change = np.diff(samples[label][where])
                backwards = np.flatnonzero(change <= 0 if time_major else change < 0)
                if backwards.size:
                    what = "does not increase" if time_major else "decreases"
                    problems.append(
                        f"samples: {label} {what} within trajectory {int(traj)} "
                        f"(at sample {int(where[backwards[0] + 1])})"
                    )
        for name in ("config", "resumes"):
            text = layout.attrs.get(name)
            if isinstance(text, str):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    problems.append(f"attribute '{name}' is not valid JSON ({exc})")
                    continue
                if name == "resumes" and not isinstance(value, list):
                    problems.append(f"attribute 'resumes' is JSON {type(value).__name__}, not a list")

        n_diag = layout.progress[1]
        diag_time = f["diagnostics"]["time"][:n_diag]
        if not np.all(np.isfinite(diag_time)):
            problems.append("diagnostics: time contains NaN/inf")
        elif np.any(np.diff(diag_time) < 0):
            problems.append("diagnostics: time decreases")
        for name in layout.diagnostics:
            values = f["diagnostics"][name][:n_diag]
            bad_rows = np.flatnonzero(~np.isfinite(values).all(axis=1))
            if bad_rows.size:
                problems.append(
                    f"diagnostic '{name}': {bad_rows.size} row(s) contain NaN/inf (first: row {bad_rows[0]})"
                )

        if layout.progress[2] > 0:
            arrays, _step, _time = _read_state(f, path, list(layout.state_spec), layout.progress[2])
            for name, data in arrays.items():
                if data.dtype.kind in "fc" and not np.all(np.isfinite(data)):
                    problems.append(f"state '{name}': latest committed state contains NaN/inf")
    return problems


def _short(value: Any, limit: int = 100) -> str:
    text = repr(value) if not isinstance(value, str) else value
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _axis_line(label: str, coords: np.ndarray, bc: str, length: float) -> str:
    kind = "uniform" if _is_uniform(coords) else "non-uniform"
    return (
        f"  {label}: {coords.size} points in [{coords.min():.6g}, {coords.max():.6g}], "
        f"length {length:.6g}, {bc}, {kind}"
    )


def info(path: str | os.PathLike) -> str:
    """A human-readable summary of a Gust file."""
    with open_dataset(path) as g:
        H, W = g.shape
        version = g.attrs.get("format_version")
        status = "complete" if g.complete else "INCOMPLETE"
        reason = f" (stop_reason: {g.stop_reason})" if g.stop_reason else ""
        lines = [
            f"file: {g.path}",
            f"format: {FORMAT_NAME} {version}; {status}{reason}; {g.n_samples}/{g.n_samples_planned} samples committed",
            f"fields ({g.n_samples_planned} x {H} x {W} float32, dims [sample, {g.vertical_name}, x]):",
        ]
        for name in g.fields:
            stats = g.field_stats(name)
            text = "  ".join(f"{key}={value:.6g}" for key, value in stats.items())
            lines.append(f"  {name}: {text}")
        lines.append("grid:")
        lines.append(_axis_line("x", g.grid.x, g.grid.bc_x, g.grid.length_x))
        lines.append(_axis_line(f"{g.vertical_name} (vertical)", g.grid.y, g.grid.bc_y, g.grid.length_y))

        params = {
            key: value
            for key, value in g.attrs.items()
            if key not in RESERVED_ATTRS and key not in PROVENANCE_KEYS and key != "config"
        }
        lines.append("parameters:")
        for key, value in params.items():
            type_name = "none" if value is None else type(value).__name__
            lines.append(f"  {key} = {_short(value)} ({type_name})")
        if g.config:
            lines.append(f"  config = JSON object with keys {sorted(g.config)}")

        samples = g.samples()
        if g.n_samples:
            lines.append(
                f"time: {samples['time'].min():.6g} .. {samples['time'].max():.6g}; "
                f"steps {samples['step'].min()} .. {samples['step'].max()}"
            )
        else:
            lines.append("time: no committed samples")
        ids, counts = np.unique(samples["trajectory"], return_counts=True)
        per_traj = ", ".join(f"{i}: {c}" for i, c in zip(ids.tolist(), counts.tolist(), strict=True))
        lines.append(f"trajectories: {g.n_trajectories} (samples per trajectory: {per_traj or 'none'})")
        diag_names = ", ".join(g.diagnostic_names) or "none"
        lines.append(f"diagnostics: {diag_names} ({g.n_diag}/{g.n_diag_planned} rows committed)")
        latest = f" (the latest with {g.state_counts[0]} samples)" if g.n_state_saves else ""
        lines.append(f"state saves: {g.n_state_saves}{latest}")
        recorded = [key for key in PROVENANCE_KEYS if key in g.attrs]
        lines.append("provenance:" if recorded else "provenance: none recorded")
        lines.extend(f"  {key}: {_short(g.attrs[key], 300)}" for key in recorded)
        if "resumes" in g.attrs:
            lines.append(f"  resumes: {_short(g.attrs['resumes'], 300)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Provenance


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def git_code_version(where: Path) -> str:
    """The git commit of the checkout holding ``where``, ``-dirty`` when a tracked file differs from it (untracked
    files, such as outputs written inside the checkout, do not count); ``unknown`` outside a git checkout."""
    commit = _git(["rev-parse", "HEAD"], where)
    if commit is None:
        return "unknown"
    status = _git(["status", "--porcelain", "--untracked-files=no"], where)
    return commit.strip() + ("-dirty" if status is None or status.strip() else "")


def provenance(argv: list[str] | None = None) -> dict[str, str]:
    """code_version, library_versions (JSON), jax_backend, command_line, created (UTC ISO-8601)."""
    code_version = git_code_version(Path(__file__).resolve().parent)

    versions = {"python": platform.python_version(), "hdf5": h5py.version.hdf5_version}
    for package in ("numpy", "h5py", "jax", "jaxlib", "equinox", "optax"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    try:
        import jax

        backend = jax.default_backend()
    except Exception as exc:  # no jax, or no usable backend
        backend = f"unavailable ({type(exc).__name__})"

    if argv is None:
        argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    return {
        "code_version": code_version,
        "library_versions": json.dumps(versions, sort_keys=True),
        "jax_backend": backend,
        "command_line": shlex.join(argv),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------------------------------
# CLI


def _file_argument(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("FILE must not be empty")
    return Path(text)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: `info FILE` prints a summary; `validate FILE` prints "OK: ..." (exit 0) or one line per problem
    (exit 1). A missing, non-HDF5 or foreign file gives a one-line error and exit 2."""
    prog = "python -m solvers.common.hdf5_utils"
    parser = OneLineArgumentParser(prog=prog, description="Inspect and validate Gust HDF5 files.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{info,validate}")
    info_parser = commands.add_parser("info", help="print a summary of a Gust file")
    info_parser.add_argument("file", type=_file_argument)
    validate_parser = commands.add_parser("validate", help="check a Gust file; exit 1 if it has problems")
    validate_parser.add_argument("file", type=_file_argument)
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            print(info(args.file))
            return 0
        problems = validate(args.file)
    except (GustFormatError, OSError) as exc:  # missing, unreadable, not HDF5, not Gust
        return fail(prog, str(exc), EXIT_BAD_INPUT)
    if problems:
        for problem in problems:
            print(problem)
        return 1
    try:
        g = open_dataset(args.file)
    except (GustFormatError, OSError) as exc:  # changed since validate read it
        return fail(prog, str(exc), EXIT_BAD_INPUT)
    with g:
        H, W = g.shape
        print(
            f"OK: {args.file}: {len(g.fields)} field(s) {g.fields}, {g.n_samples}/{g.n_samples_planned} "
            f"samples of {H}x{W}, {g.n_trajectories} trajectories, complete"
        )
    return 0


if __name__ == "__main__":
    exit_process(main())
