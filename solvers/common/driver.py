"""The run loop shared by Gust's solvers: ensembles over devices, chunked jitted time stepping, HDF5 output,
crash-safe commits, resume, blow-up handling and the progress bar.

A solver supplies a :class:`Simulation` (its configuration and jitted functions); :func:`run` does the rest:

1. refuses an existing output unless ``overwrite`` or ``resume``; on resume checks that the stored
   configuration equals this one and reads the saved full-precision state;
2. builds the initial ensemble state, laid out over all devices along the trajectory axis
   (:func:`trajectory_sharding`; on several processes under ``jax.distributed`` each holds its shards);
3. runs the unsaved spin-up, writes frame 0, then advances one save interval per jitted ``chunk`` call,
   dispatching the next chunk before writing the current one so that I/O overlaps computation;
4. after each frame writes samples and diagnostics, then commits (``hdf5_utils``), so a killed run keeps
   every committed frame; the full-precision state goes with frame 0, the last frame and the first frame
   after every ``state_seconds`` of wall time, and a resumed run continues bit-for-bit from the latest one
   (rewriting the frames after it);
5. on a chunk that fails the solver's check (non-finite, CFL) lets the solver redo it from its start state
   at a smaller dt (adaptive stepping: ``Simulation.retry``) or stops, keeping every good frame, with the
   reason in the file.

Only process 0 writes; the others compute their shards and take part in the gathers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time as walltime
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import hdf5_utils, stop
from .atomic import file_sha256
from .cli import DEFAULT_STATE_SECONDS, check_seed


class BlowUpError(RuntimeError):
    """A non-finite value appeared during the run; every earlier frame is kept in the file."""


# Step and frame counts are 32-bit integers in the jitted loops (without x64) and in the file's metadata.
MAX_COUNT = 2**31 - 1


def name_number(x: float) -> str:
    """A number in an output file name: ``%g`` where that is exact (1e+06, 0.001), else the shortest repr that
    round-trips, so two runs with different settings (Re 1000000 and 1000001) never share a name."""
    short, exact = f"{x:g}", repr(float(x))
    return short if float(short) == x else exact.removesuffix(".0")


def name_stem(path: str | os.PathLike, keep: int = 32) -> str:
    """An input file's stem in an output file name, capped at ``keep`` characters plus a hash of the whole stem:
    runs started from runs' outputs would otherwise grow their names with every link of the chain."""
    stem = Path(path).stem
    if len(stem) <= keep + 9:
        return stem
    return f"{stem[:keep]}-{hashlib.sha1(stem.encode()).hexdigest()[:8]}"


def ic_source(path: str | os.PathLike) -> dict[str, Any]:
    """Provenance of an ``--ic_file`` (for the output's ``ic_source`` attribute, as JSON): absolute path, size,
    sha256 of the whole file and, for a Gust file, the run that wrote it (:meth:`GustFile.identity`)."""
    path = Path(path)
    record: dict[str, Any] = {"path": str(path.resolve()), "size_bytes": path.stat().st_size}
    record["sha256"] = file_sha256(path)
    if path.suffix == ".h5":
        with hdf5_utils.open_dataset(path) as f:
            record.update({k: v for k, v in f.identity().items() if k not in record})
    return record


def as_steps(value: float, dt: float, name: str, allow_zero: bool = False) -> int:
    """``value`` as an integer number of time steps of size ``dt``, or a one-line ValueError naming ``--name``."""
    ratio = value / dt
    if not ratio <= MAX_COUNT:
        raise ValueError(
            f"--{name}={value:g} is {ratio:.3g} steps of --dt={dt:g}; at most {MAX_COUNT} steps are allowed "
            "(raise --dt)"
        )
    n = round(ratio)
    if abs(ratio - n) > 1e-9 * max(1.0, abs(ratio)) or n < (0 if allow_zero else 1):
        what = "0 or a positive" if allow_zero else "a positive"
        raise ValueError(f"--{name} must be {what} multiple of --dt={dt:g} (got {value:g} = {ratio:.6g} steps)")
    return n


@dataclasses.dataclass(frozen=True)
class TimeGrid:
    """The time settings every solver config shares (subclasses redeclare the fields with their own defaults and
    call :meth:`check_time` from ``__post_init__``). Frames are saved at t = spinup_time + k·save_interval,
    k = 0 … t_total/save_interval; diagnostics every ``diag_every`` steps (0: about ten per frame)."""

    dt: float = 0.01
    t_total: float = 1.0
    save_interval: float = 0.1
    spinup_time: float = 0.0
    diag_every: int = 0

    def check_time(self) -> None:
        """One-line ValueErrors for non-finite numbers, a seed out of range and inconsistent time settings."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"--{f.name} must be a finite number (got {v:g})")
        check_seed(getattr(self, "seed", 0))
        for name in ("dt", "t_total", "save_interval"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be > 0 (got {getattr(self, name):g})")
        save_every = as_steps(self.save_interval, self.dt, "save_interval")
        as_steps(self.spinup_time, self.dt, "spinup_time", allow_zero=True)
        n = self.t_total / self.save_interval
        if not n < MAX_COUNT:
            raise ValueError(
                f"--t_total={self.t_total:g} is {n:.3g} save intervals; at most {MAX_COUNT - 1} are allowed "
                "(raise --save_interval)"
            )
        if abs(n - round(n)) > 1e-9 * max(1.0, n):
            raise ValueError(
                f"--t_total must be a multiple of --save_interval={self.save_interval:g} (got {self.t_total:g})"
            )
        if self.diag_every < 0:
            raise ValueError(
                f"--diag_every must be 0 (automatic) or a positive divisor of {save_every} (got {self.diag_every})"
            )
        if self.diag_every and save_every % self.diag_every:
            raise ValueError(
                f"--diag_every must divide the {save_every} steps between saved frames (got {self.diag_every})"
            )

    @property
    def save_every(self) -> int:
        return as_steps(self.save_interval, self.dt, "save_interval")

    @property
    def spinup_steps(self) -> int:
        return as_steps(self.spinup_time, self.dt, "spinup_time", allow_zero=True)

    @property
    def n_frames(self) -> int:
        return round(self.t_total / self.save_interval) + 1

    @property
    def diag_interval_steps(self) -> int:
        if self.diag_every:
            return self.diag_every
        return largest_divisor_at_most(self.save_every, max(1, self.save_every // 10))

    @property
    def n_diag_rows(self) -> int:
        """Diagnostics rows of a complete run: every ``diag_interval_steps`` steps after frame 0."""
        return (self.n_frames - 1) * (self.save_every // self.diag_interval_steps)


def largest_divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of ``n`` that is ``<= limit`` (1 at least); O(sqrt(n)) trials."""
    best = 1
    for i in range(1, math.isqrt(n) + 1):
        if n % i == 0:
            best = max([best] + [d for d in (i, n // i) if d <= limit])
    return best


class RunConfig(Protocol):
    """What the driver reads from a solver's frozen config."""

    n_trajectories: int
    precision: str
    dt: float
    save_interval: float
    spinup_time: float

    @property
    def grid_points(self) -> int: ...  # points of one field of one trajectory on the solver's grid

    @property
    def n_frames(self) -> int: ...
    @property
    def save_every(self) -> int: ...
    @property
    def spinup_steps(self) -> int: ...
    @property
    def diag_interval_steps(self) -> int: ...
    @property
    def n_diag_rows(self) -> int: ...
    def to_json(self) -> str: ...
    def output_name(self) -> str: ...


class Simulation(Protocol):
    """A solver's jitted building blocks, on batched (trajectory-first) states."""

    cfg: RunConfig
    diagnostic_names: tuple[str, ...]
    progress_diagnostics: dict[str, str]  # diagnostic name → progress-bar label (max over the ensemble)

    def initial_state(self) -> Any: ...  # placed on the devices; a pytree with ``.step``, the (M,) step counters
    def check_initial(self, state) -> str: ...  # ValueError if the run must not start; else a log note
    def advance(self, state, n_steps: int) -> Any: ...
    def chunk(self, state) -> tuple[Any, dict, Any, Any]: ...  # (state, fields, diags (rows, M, n), finite (M,))
    def frame(self, state) -> dict: ...  # output fields of a state
    def state_arrays(self, host_state) -> dict[str, np.ndarray]: ...  # what write_state stores
    def state_from_arrays(self, arrays: dict[str, np.ndarray]) -> Any: ...  # host pytree, inverse of the above
    def check_chunk(self, diags: np.ndarray, finite: np.ndarray) -> str | None: ...  # why to stop, or None
    # optional: check_state(state) -> str | None, why to stop after the spin-up (which saves no diagnostics)
    def retry(self, diags: np.ndarray, finite: np.ndarray) -> str | None: ...  # after a failed check: redo the
    # chunk from its start state (the solver has chosen a smaller dt; returns a note saying so) or None: stop
    def new_writer(self, path: Path, overwrite: bool, argv) -> hdf5_utils.GustWriter: ...


# ------------------------------------------------------------------------------------ devices


def device_memory_bytes() -> int:
    """Memory of one local device: its allocator limit where JAX reports one (GPU), else host RAM / devices."""
    dev = jax.local_devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // jax.local_device_count()


def check_memory(cfg: RunConfig, available: int | None = None) -> None:
    """One-line ValueError when even a lower bound of the ensemble's state, one field per trajectory, cannot fit
    on a device (so ``--n_trajectories 100000000`` fails at once rather than after hours of set-up)."""
    per_device = -(-cfg.n_trajectories // jax.device_count())
    need = per_device * cfg.grid_points * (8 if cfg.precision == "float64" else 4)
    available = device_memory_bytes() if available is None else available
    if need > available:
        raise ValueError(
            f"--n_trajectories {cfg.n_trajectories} needs at least {need / 2**30:.3g} GiB per device (one "
            f"{cfg.precision} field of {cfg.grid_points} points for each of {per_device} trajectories) but a "
            f"device has {available / 2**30:.3g} GiB; lower --n_trajectories or add devices"
        )


def trajectory_sharding(n_trajectories: int) -> NamedSharding:
    """Shard the trajectory axis over as many devices as divide M (all devices of all processes under
    ``jax.distributed``, where M must then be a multiple of the global device count)."""
    devices = jax.devices()
    if jax.process_count() > 1 and n_trajectories % len(devices):
        raise ValueError(
            f"--n_trajectories must be a multiple of the {len(devices)} devices of the distributed run "
            f"(got {n_trajectories})"
        )
    n_use = math.gcd(n_trajectories, len(devices))
    return NamedSharding(Mesh(np.array(devices[:n_use]), ("traj",)), PartitionSpec("traj"))


def place(tree, sharding: NamedSharding):
    """Lay host arrays (the same full arrays on every process) out over the devices along the trajectory
    axis; on several processes each one fills only its own shards."""
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda idx: np.asarray(x)[idx]), tree
    )


def gather(tree):
    """Bring a (possibly multi-process sharded) pytree to host numpy arrays, complete on every process."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, jax.device_get(tree))
    from jax.experimental import multihost_utils

    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


# ------------------------------------------------------------------------------------ the loop


class _NoWriter:
    """Stands in for the writer on processes other than 0 of a distributed run: they compute, 0 writes."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _config_diff(cfg: RunConfig, stored_json: str) -> list[str]:
    """The settings in which ``cfg`` differs from a stored run's config JSON."""
    stored, mine = json.loads(stored_json), json.loads(cfg.to_json())
    return sorted(k for k in set(stored) | set(mine) if stored.get(k) != mine.get(k))


def _check_same_config(cfg: RunConfig, stored_json: str, path: Path) -> None:
    if diff := _config_diff(cfg, stored_json):
        raise ValueError(f"--resume: {path} was written with different settings ({', '.join(diff)}); rerun with those")


def _differs(cfg: RunConfig, path: Path) -> str:
    """Why the existing output at ``path`` is not this run's, for the "already exists" error ("" if it is)."""
    try:
        with hdf5_utils.open_dataset(path) as existing:
            diff = _config_diff(cfg, existing.attrs.get("config", "{}"))
    except (OSError, ValueError):
        return " (and is not a readable Gust file)"
    return f" (written with different settings: {', '.join(diff)})" if diff else ""


def _stop(writer, msg: str):
    """Close the file as incomplete, saying why, and raise."""
    writer.finalize(complete=False, stop_reason=msg)
    raise BlowUpError(msg)


def non_finite(finite: np.ndarray) -> str | None:
    """The standard chunk check: the message for the first trajectory that went non-finite, or None."""
    if finite.all():
        return None
    return (
        f"blow-up: non-finite values in trajectory {int(np.argmin(finite))} (in the state, or in its fields once "
        "stored as float32); reduce --dt or raise the resolution"
    )


FLOAT32_MAX = float(np.finfo(np.float32).max)


def storable(fields: dict, m: int) -> np.ndarray:
    """(M,) whether each trajectory's output fields stay finite when the file stores them as float32: a float64
    value beyond float32's range (|x| > 3.4e38) is finite in the state but ±inf in the file."""
    ok = np.ones(m, dtype=bool)
    for a in fields.values():
        ok &= np.all(np.abs(np.asarray(a).reshape(m, -1)) <= FLOAT32_MAX, axis=1)  # NaN compares False
    return ok


def frame_time(cfg: RunConfig, frame: int) -> float:
    """Simulation time of saved frame ``frame`` (frame 0 follows the spin-up)."""
    return cfg.spinup_time + frame * cfg.save_interval


def _steps(state, m: int) -> np.ndarray:
    """The (M,) step counters of a device state (only they are copied to the host)."""
    return np.broadcast_to(np.asarray(gather(state.step), dtype=np.int64), (m,))


def _write_frame(sim: Simulation, writer, frame: int, fields: dict, state, save_state: bool) -> int:
    """Write one frame's samples and, if ``save_state``, the full state (copied to the host only then); return
    the step count reached (the solver's step counter)."""
    cfg = sim.cfg
    m = cfg.n_trajectories
    steps = _steps(state, m)
    t = frame_time(cfg, frame)
    writer.write_samples(fields, time=np.full(m, t), trajectory=np.arange(m, dtype=np.int64), step=steps)
    if save_state:
        writer.write_state(sim.state_arrays(gather(state)), int(steps.max()), t)
    return int(steps.max())


def _dispatch(sim: Simulation, state):
    """``sim.chunk(state)``, with the device→host copies of its outputs (fields, diagnostics, flags; not the state)
    queued at once (one process): ordered on the device right behind this chunk and ahead of the next one, so the
    host's later ``gather`` does not wait for the next chunk whatever streams the runtime uses for the copies."""
    out = sim.chunk(state)
    if jax.process_count() == 1:  # several processes gather by an all-gather on the devices instead
        for leaf in jax.tree.leaves(out[1:]):
            leaf.copy_to_host_async()
    return out


def _now() -> float:
    """The clock of the state saves (a module function, so that tests can replace it)."""
    return walltime.monotonic()


def _decide(last_save: float, state_seconds: float) -> tuple[bool, bool]:
    """(whether ``state_seconds`` of wall time have passed since ``last_save``, whether SIGTERM has arrived); on
    several processes process 0 decides both for all, in one broadcast per frame (the state's gather is collective
    and every process must stop at the same frame, so every process must agree)."""
    flags = np.array([_now() - last_save >= state_seconds, stop.pending()])
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        flags = np.asarray(multihost_utils.broadcast_one_to_all(flags))
    return bool(flags[0]), bool(flags[1])


def _spin_up(sim: Simulation, state, progress: bool):
    """Advance the unsaved spin-up in pieces of one save interval, with its own progress bar."""
    from tqdm import tqdm

    cfg = sim.cfg
    done = 0
    with tqdm(total=cfg.spinup_steps, unit="step", desc="spin-up", disable=not progress, file=sys.stderr) as bar:
        while done < cfg.spinup_steps:
            n = min(cfg.save_every, cfg.spinup_steps - done)
            state = sim.advance(state, n)
            jax.block_until_ready(state)
            done += n
            bar.update(n)
    return state


def _run_frames(
    sim: Simulation, writer, state, start: int, progress: bool, log: Callable[[str], None], state_seconds: float
) -> None:
    """Advance and write frames ``start … n_frames−1``, committing each one, with the state at the first frame
    after every ``state_seconds`` and at the last. The next chunk is dispatched before the current one is
    checked and written; a chunk that fails the check is redone from its start state if the solver chooses a
    smaller dt (``sim.retry``), else stops the run before it is written. On SIGTERM (``stop``) the frame in
    progress is written with the full state and the run stops (``stop.Terminated``), to resume from there."""
    from tqdm import tqdm

    cfg = sim.cfg
    names = sim.diagnostic_names
    shown = {label: names.index(name) for name, label in sim.progress_diagnostics.items()}
    bar = tqdm(
        total=cfg.n_frames - 1,
        initial=start - 1,
        unit="frame",
        disable=not progress,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    steps = int(_steps(state, cfg.n_trajectories).max())
    last_save = _now()
    pending = _dispatch(sim, state) if start < cfg.n_frames else None
    with bar, stop.graceful():
        for frame in range(start, cfg.n_frames):
            t0 = walltime.perf_counter()
            while True:
                new_state, fields, diags, finite = pending
                # dispatch the next chunk before waiting for this one's outputs, so the device also computes while
                # the host copies this frame back (no gain measured on an H200 where the host's writes dominate)
                pending = _dispatch(sim, new_state) if frame + 1 < cfg.n_frames else None
                fields, diags, finite = gather((fields, diags, finite))
                diags = np.asarray(diags, dtype=np.float64)
                finite = np.asarray(finite, dtype=bool) & storable(fields, cfg.n_trajectories)
                problem = sim.check_chunk(diags, finite)
                if not problem:
                    break
                note = sim.retry(diags, finite)
                if note is None:
                    _stop(writer, f"t = {frame_time(cfg, frame):g}: {problem}; kept {frame} good frames")
                (bar.write if progress else log)(f"t = {frame_time(cfg, frame - 1):g}: {note}")
                pending = _dispatch(sim, state)  # the speculative next chunk is dropped; redo this one from its start
            rows = diags.shape[0]
            t_diag = frame_time(cfg, frame - 1) + cfg.save_interval * np.arange(1, rows + 1) / rows
            writer.write_diagnostics(t_diag, {n: diags[:, :, i] for i, n in enumerate(names)})
            last = frame == cfg.n_frames - 1
            due, sigterm = _decide(last_save, state_seconds)
            halt = sigterm and not last  # SIGTERM: this frame goes with the full state, then the run stops
            save_state = last or halt or due
            steps_before, steps = steps, _write_frame(sim, writer, frame, fields, new_state, save_state)
            writer.commit()
            if halt:
                raise stop.Terminated(
                    f"stopped by SIGTERM after frame {frame} of {cfg.n_frames - 1} (t = {t_diag[-1]:g}), saved with "
                    "the full state: rerun with --resume to continue from there"
                )
            if save_state:
                last_save = _now()
            rate = (steps - steps_before) / max(walltime.perf_counter() - t0, 1e-12)
            post = {label: f"{diags[:, :, i].max():.3f}" for label, i in shown.items()}
            bar.set_postfix(t=f"{t_diag[-1]:.4g}", steps_s=f"{rate:.0f}", **post, refresh=False)
            bar.update(1)
            state = new_state


def run(
    make_simulation: Callable[[Any], Simulation],
    cfg: RunConfig,
    output_dir: str | Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    argv: list[str] | None = None,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
    state_seconds: float = DEFAULT_STATE_SECONDS,
) -> Path:
    """Run ``make_simulation(cfg)`` into ``output_dir / cfg.output_name()``; return the output path.

    The full state (what ``resume`` continues from) is saved with frame 0, the last frame and the first frame
    after every ``state_seconds`` of wall time (0: every frame); a resumed run recomputes the frames after it.

    The simulation is built and run inside ``jax.enable_x64(cfg.precision == "float64")``. Raises
    ValueError for bad settings (before anything is written), FileExistsError for an existing output
    without ``overwrite``/``resume``, and BlowUpError when the solution becomes non-finite.
    """
    if not (math.isfinite(state_seconds) and state_seconds >= 0):
        raise ValueError(f"--state_seconds must be a finite number >= 0 (got {state_seconds!r})")
    output_dir = Path(output_dir)
    path = output_dir / cfg.output_name()
    check_memory(cfg)
    is_writer = jax.process_index() == 0
    if not is_writer:
        progress, log = False, lambda s: None
    resumed = resume and path.exists()
    if path.is_dir():
        raise ValueError(
            f"{path} is a directory where the output file goes; move it away or choose another --output_dir"
        )
    if path.exists() and not (overwrite or resume):
        raise FileExistsError(
            f"{path} already exists{_differs(cfg, path)}; pass --overwrite to replace it, --resume to "
            "continue it, or choose another --output_dir"
        )
    saved = None
    if resumed:
        with hdf5_utils.open_dataset(path) as existing:
            _check_same_config(cfg, existing.attrs.get("config", "{}"), path)
            if existing.complete:
                log(f"{path} is already complete ({existing.n_samples} samples); nothing to resume")
                return path
            if existing.n_state_saves == 0:  # stopped before frame 0 (in the spin-up): nothing to keep
                log(f"{path} has no saved state yet (stopped before frame 0); starting it again")
                resumed, overwrite = False, True
            else:
                planned = (existing.n_samples_planned, existing.n_diag_planned)
                if planned != (cfg.n_frames * cfg.n_trajectories, cfg.n_diag_rows):
                    raise ValueError(
                        f"--resume: {path} plans {planned[0]} samples and {planned[1]} diagnostics rows where these "
                        f"settings plan {cfg.n_frames * cfg.n_trajectories} and {cfg.n_diag_rows} (written by a Gust "
                        "version with another automatic diagnostics interval?); rerun it with --overwrite"
                    )
                at_state = existing.state_counts[0]  # samples written when the latest state was saved
                if at_state % cfg.n_trajectories:
                    raise hdf5_utils.GustFormatError(f"{path}: the saved state's samples are not a multiple of M")
                start = at_state // cfg.n_trajectories
                redo = existing.n_samples // cfg.n_trajectories - start
                saved, _, _ = existing.read_state()
                if not existing.records_state_counts:  # format 1.0: the state must keep going with every frame
                    log(f"{path} predates format 1.1; saving the state with every frame (--state_seconds 0)")
                    state_seconds = 0.0
    with jax.enable_x64(cfg.precision == "float64"):
        sim = make_simulation(cfg)
        fresh = sim.initial_state()
        note = sim.check_initial(fresh)
        if jax.process_count() > 1:  # every process has read what it needs before process 0 opens the file
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("gust: before opening the output")
        if is_writer:
            output_dir.mkdir(parents=True, exist_ok=True)
            writer = hdf5_utils.open_for_resume(path) if resumed else sim.new_writer(path, overwrite, argv)
        else:
            writer = _NoWriter()
        try:
            if resumed:
                writer.rewind_to_state()  # the frames after the saved state become invisible until rewritten
                now = hdf5_utils.provenance(argv)  # the file's own provenance stays its first start's
                writer.record_resume({"frame": start, **{k: now[k] for k in hdf5_utils.RESUME_KEYS}})
                state = place(sim.state_from_arrays(saved), trajectory_sharding(cfg.n_trajectories))
                again = f"; its {redo} committed frame(s) after the last saved state are recomputed" if redo else ""
                log(f"resuming {path} at frame {start}/{cfg.n_frames}{again}")
            else:
                state = fresh
                log(f"writing {path}  ({note}, {len(jax.devices())} device(s))")
                if cfg.spinup_steps:
                    state = _spin_up(sim, state, progress)
                    if not np.all([np.isfinite(a).all() for a in jax.tree.leaves(gather(state))]):
                        _stop(writer, f"blow-up during the spin-up (t < {cfg.spinup_time:g}); reduce --dt")
                    if problem := getattr(sim, "check_state", lambda s: None)(state):
                        _stop(writer, f"t = {cfg.spinup_time:g}: {problem}")
                fields = gather(sim.frame(state))
                if not storable(fields, cfg.n_trajectories).all():
                    _stop(writer, f"t = {cfg.spinup_time:g}: frame 0 is not finite once stored as float32")
                _write_frame(sim, writer, 0, fields, state, save_state=True)
                writer.commit()
                start = 1
            _run_frames(sim, writer, state, start, progress, log, state_seconds)
            writer.finalize(complete=True, stop_reason="completed")
        except BaseException:
            writer.close()
            raise
    return path
