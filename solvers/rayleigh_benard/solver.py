"""Run configuration of the Rayleigh–Bénard solver and its building blocks for ``solvers.common.driver``.

Physics and numerics are in ``rb_core.py``; this module turns a frozen :class:`RBConfig` into jitted
ensemble functions (``vmap`` over trajectories, sharded over devices) and output fields, and runs them
through the shared driver (crash-safe HDF5 output, resume, progress bar). Trajectory m starts from the
conductive state plus noise drawn with ``fold_in(PRNGKey(seed), m)``.

Time step: fixed ``--dt`` or adaptive (``--max_dt``, see :class:`StepControl`), with a CFL guard: a frame
whose CFL number dt·max(|u|/Δx + |w|/Δz) (local Chebyshev spacing Δz) exceeds ``rb_core.CFL_LIMIT`` or that
turns non-finite stops the run, keeping every frame already written; with adaptive dt such a frame is first
redone from its start at a smaller dt, up to ``MAX_RETRIES`` times (step rejection).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from ..common import driver, hdf5_utils
from ..common.driver import BlowUpError  # noqa: F401  (re-exported for the CLI)
from . import chebyshev as cheb
from . import rb_core as rb

FIELDS = ("buoyancy", "u", "w", "vorticity", "pressure")
GRIDS = ("uniform", "native")
PRECISIONS = ("float32", "float64")
DIAGNOSTICS = (
    "nusselt_bottom",
    "nusselt_top",
    "nusselt_volume",
    "nusselt_thermal",
    "nusselt_kinetic",
    "kinetic_energy",
    "reynolds",
    "cfl",
    "max_abs_w",
    "dt",
)
NUSSELT = DIAGNOSTICS[:5]
SOLVER_NAME = "solvers.rayleigh_benard"
SEED_DERIVATION = "trajectory m: noise from jax.random.fold_in(jax.random.PRNGKey(seed), m) (float32 normals)"


@dataclass(frozen=True)
class RBConfig(driver.TimeGrid):
    """Every setting of a run. Validated on construction: a bad value raises a one-line ValueError."""

    rayleigh: float = 1e6
    prandtl: float = 1.0
    aspect: float = 4.0
    nx: int = 256
    nz: int = 64
    dt: float = 0.01
    max_dt: float = 0.0  # > 0: adaptive dt (CFL-controlled, at most max_dt); 0: fixed dt
    cfl_safety: float = 0.4
    t_total: float = 50.0
    save_interval: float = 0.25
    spinup_time: float = 0.0
    fields: tuple[str, ...] = ("buoyancy",)
    grid: str = "uniform"
    seed: int = 0
    ic_amplitude: float = 1e-3
    ic_file: str | None = None
    n_trajectories: int = 1
    precision: str = "float64"
    diag_every: int = 0  # steps between diagnostics rows; 0 = automatic (about 10 per saved frame)

    def __post_init__(self):
        if not self.rayleigh > 0:
            raise ValueError(f"--rayleigh must be > 0 (got {self.rayleigh:g})")
        if not self.prandtl > 0:
            raise ValueError(f"--prandtl must be > 0 (got {self.prandtl:g})")
        if not 0.01 <= self.aspect <= 1000:  # far outside, the per-mode implicit matrices become singular
            raise ValueError(
                f"--aspect must be in [0.01, 1000] (the width Lx in units of the height; got {self.aspect:g})"
            )
        if not isinstance(self.nx, int) or self.nx < 4 or self.nx % 2:
            raise ValueError(f"--nx must be an even integer >= 4 (got {self.nx}); try 256")
        if not isinstance(self.nz, int) or self.nz < 8:
            raise ValueError(f"--nz must be an integer >= 8 Chebyshev points (got {self.nz}); try 64")
        self.check_time()
        if self.ic_file is not None and not Path(self.ic_file).is_file():
            raise ValueError(f"--ic_file {self.ic_file!r} does not exist or is not a file")
        if self.max_dt < 0 or (self.max_dt and self.dt > self.max_dt):
            raise ValueError(f"--max_dt must be 0 (fixed dt) or >= --dt={self.dt:g} (got {self.max_dt:g})")
        if not 0 < self.cfl_safety < rb.CFL_LIMIT:
            raise ValueError(f"--cfl_safety must be in (0, {rb.CFL_LIMIT:g}) (got {self.cfl_safety:g})")
        if (
            self.max_dt
            and abs(self.spinup_time / self.save_interval - round(self.spinup_time / self.save_interval)) > 1e-9
        ):
            raise ValueError(
                f"with --max_dt, --spinup_time must be a multiple of --save_interval={self.save_interval:g} "
                f"(got {self.spinup_time:g})"
            )
        if not self.fields:
            raise ValueError(f"--fields must name at least one of {', '.join(FIELDS)}")
        for f in self.fields:
            if f not in FIELDS:
                raise ValueError(f"--fields: unknown field {f!r}; allowed: {', '.join(FIELDS)}")
        if len(set(self.fields)) != len(self.fields):
            raise ValueError(f"--fields lists a field twice (got {','.join(self.fields)})")
        if self.grid not in GRIDS:
            raise ValueError(f"--grid must be one of {', '.join(GRIDS)} (got {self.grid!r})")
        if self.seed < 0:
            raise ValueError(f"--seed must be >= 0 (got {self.seed})")
        if not 0 < self.ic_amplitude <= 1:  # b runs from 1 (bottom) to 0 (top): noise beyond that is not a perturbation
            raise ValueError(
                f"--ic_amplitude must be in (0, 1] (the buoyancy contrast is 1; got {self.ic_amplitude:g})"
            )
        if not isinstance(self.n_trajectories, int) or self.n_trajectories < 1:
            raise ValueError(f"--n_trajectories must be >= 1 (got {self.n_trajectories})")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})")

    @property
    def dtype(self):
        return jnp.float64 if self.precision == "float64" else jnp.float32

    @property
    def grid_points(self) -> int:
        return self.nx * self.nz

    @property
    def uses_seed(self) -> bool:
        """Whether --seed changes the run (it seeds the perturbation of the conductive state; an --ic_file draws
        nothing)."""
        return self.ic_file is None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @property
    def diag_interval_steps(self) -> int:
        """Steps between diagnostics rows. Adaptive dt keeps the rows per frame fixed (the file's layout), so every
        step count it picks is a multiple of them and dt ≤ save_interval / rows: automatic rows are then at most
        save_interval / max_dt (and 10), or max_dt could never be reached."""
        if self.diag_every or not self.max_dt:
            return super().diag_interval_steps
        cap = max(1, min(10, math.floor(self.save_interval / self.max_dt + 1e-9)))
        return self.save_every // driver.largest_divisor_at_most(self.save_every, cap)

    def output_name(self) -> str:
        num = driver.name_number
        start = f"from-{driver.name_stem(self.ic_file)}" if self.ic_file else f"seed{self.seed}"
        return (
            f"rb_Ra{num(self.rayleigh)}_Pr{num(self.prandtl)}_Lx{num(self.aspect)}_{self.nx}x{self.nz}"
            f"_dt{num(self.dt)}_{self.precision}_{start}_M{self.n_trajectories}.h5"
        )

    def output_z(self) -> np.ndarray:
        """Vertical coordinates of the stored fields."""
        return np.linspace(0.0, 1.0, self.nz) if self.grid == "uniform" else cheb.nodes(self.nz)


def output_fields(
    model: rb.RBModel, s: rb.RBState, names: tuple[str, ...], to_grid, pressure_solve
) -> dict[str, jnp.ndarray]:
    """Physical float32 fields (z, x): b = 1 − z + θ, u, w, ω, p, on the output grid (``to_grid``: nz × nz)."""
    u_hat, w_hat = model.velocity_hat(s)
    om = s.omega_hat.at[:, 0].set(model.dz(s.mean_u[:, None])[:, 0].astype(s.omega_hat.dtype))
    spectral = {"buoyancy": s.theta_hat, "u": u_hat, "w": w_hat, "vorticity": om}
    if "pressure" in names:
        spectral["pressure"] = model.pressure_hat(s, pressure_solve)
    phys = model.physical(jnp.stack([spectral[n] for n in names]))
    phys = jnp.einsum("oz,fzx->fox", to_grid, phys, precision=rb.HIGHEST)
    out = {}
    for i, n in enumerate(names):
        f = phys[i]
        if n == "buoyancy":
            z = jnp.matmul(to_grid, jnp.asarray(cheb.nodes(model.nz), f.dtype), precision=rb.HIGHEST)
            f = f + (1.0 - z)[:, None]
        out[n] = f.astype(jnp.float32)
    return out


@dataclass(frozen=True)
class Simulation:
    """The Rayleigh–Bénard solver's building blocks for ``solvers.common.driver``."""

    cfg: RBConfig
    model: rb.RBModel
    chunk: Callable
    advance: Callable
    frame: Callable
    sharding: NamedSharding
    control: StepControl
    diagnostic_names: tuple[str, ...] = DIAGNOSTICS
    progress_diagnostics = MappingProxyType({"nusselt_volume": "Nu", "cfl": "cfl", "dt": "dt"})

    def initial_state(self) -> rb.RBState:
        cfg = self.cfg
        if cfg.ic_file is not None:
            return driver.place(saved_state(cfg), self.sharding)
        keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(cfg.seed), m) for m in range(cfg.n_trajectories)])
        states = jax.vmap(lambda k: rb.perturbed_state(self.model, k, cfg.ic_amplitude))(keys)
        return driver.place(driver.gather(states), self.sharding)

    def max_cfl(self, state) -> float:
        """The largest CFL number of the ensemble's state (at the nominal dt)."""
        return float(jnp.max(jax.vmap(lambda s: self.model.diagnostics(s)["cfl"])(state)))

    def check_state(self, state) -> str | None:
        """After the spin-up (which saves no diagnostics rows): why to stop, as :meth:`check_chunk` would. An adaptive
        spin-up checks and redoes each interval itself (:func:`make_simulation`'s ``advance``) and leaves here why it
        gave up on one once its retries were spent."""
        if self.cfg.max_dt:
            return self.control.spinup_problem
        cfl = self.max_cfl(state)
        if not cfl <= rb.CFL_LIMIT:
            return (
                f"CFL {cfl:.3g} above the limit {rb.CFL_LIMIT:g} at the end of the spin-up; reduce --dt or use --max_dt"
            )
        return None

    def check_initial(self, state) -> str:
        """ValueError if the initial CFL number (non-zero when starting from --ic_file) exceeds the limit."""
        cfg = self.cfg
        cfl = self.max_cfl(state)
        if not math.isfinite(cfl):
            raise ValueError(f"the initial state is not finite (CFL {cfl}); check --ic_file and --ic_amplitude")
        if cfl > rb.CFL_LIMIT:
            raise ValueError(
                f"initial CFL {cfl:.3g} exceeds the limit {rb.CFL_LIMIT:g}; "
                f"use --dt <= {cfg.dt * rb.CFL_LIMIT / cfl:.3g}"
            )
        return f"Ra={cfg.rayleigh:g}, Pr={cfg.prandtl:g}, {cfg.nx}x{cfg.nz}, initial CFL {cfl:.3f}"

    def retry(self, diags: np.ndarray, finite: np.ndarray) -> str | None:
        """After a chunk that failed ``check_chunk``: with adaptive dt, choose a smaller dt to redo it with (the
        driver reruns the frame from its start) and say so; None with fixed dt or when the retries are spent."""
        cfl = diags[:, :, DIAGNOSTICS.index("cfl")].max() if finite.all() else math.inf
        redo = self.control.retry(float(cfl))
        if redo is None:
            return None
        old, new = (self.cfg.save_interval / n for n in redo)
        why = f"CFL {cfl:.3g}" if math.isfinite(cfl) else "non-finite values"
        return f"{why} at dt = {old:.3g}; redoing the frame at dt = {new:.3g}"

    def check_chunk(self, diags: np.ndarray, finite: np.ndarray) -> str | None:
        problem = driver.non_finite(finite)
        if problem:
            return problem
        cfl = diags[:, :, DIAGNOSTICS.index("cfl")].max()
        if cfl > rb.CFL_LIMIT:
            fix = "lower --cfl_safety or --max_dt" if self.cfg.max_dt else "reduce --dt or use --max_dt"
            return f"CFL {cfl:.3g} above the limit {rb.CFL_LIMIT:g}; {fix}"
        self.control.update(float(diags[-1, 0, DIAGNOSTICS.index("dt")]), float(cfl))
        return None

    def state_arrays(self, host: rb.RBState) -> dict[str, np.ndarray]:
        return {
            "omega_hat": host.omega_hat,
            "psi_hat": host.psi_hat,
            "theta_hat": host.theta_hat,
            "mean_u": host.mean_u,
            "step_counter": host.step,
            "steps_per_frame": self.control.snapshot(),
        }

    def state_from_arrays(self, a: dict[str, np.ndarray]) -> rb.RBState:
        self.control.restore(a["steps_per_frame"])
        return rb.RBState(a["omega_hat"], a["psi_hat"], a["theta_hat"], a["mean_u"], a["step_counter"])

    def new_writer(self, path: Path, overwrite: bool, argv) -> hdf5_utils.GustWriter:
        cfg = self.cfg
        m, nz, nkx = cfg.n_trajectories, cfg.nz, cfg.nx // 2 + 1
        real = np.dtype(np.float64 if cfg.precision == "float64" else np.float32)
        cplx = np.dtype(np.complex128 if cfg.precision == "float64" else np.complex64)
        x = np.arange(cfg.nx) * (cfg.aspect / cfg.nx)
        grid = hdf5_utils.Grid(
            x=x, y=cfg.output_z(), bc_x="periodic", bc_y="wall", length_x=cfg.aspect, length_y=1.0, vertical_name="z"
        )
        return hdf5_utils.create_writer(
            path,
            fields=cfg.fields,
            shape=(cfg.nz, cfg.nx),
            n_samples=cfg.n_frames * m,
            grid=grid,
            diagnostics=DIAGNOSTICS,
            n_diag=cfg.n_diag_rows,
            n_trajectories=m,
            state_spec={
                "omega_hat": ((m, nz, nkx), cplx),
                "psi_hat": ((m, nz, nkx), cplx),
                "theta_hat": ((m, nz, nkx), cplx),
                "mean_u": ((m, nz), real),
                "step_counter": ((m,), np.dtype(np.int32)),
                "steps_per_frame": ((2,), np.dtype(np.int64)),
            },
            attrs=file_attrs(cfg, argv),
            overwrite=overwrite,
        )


def saved_state(cfg: RBConfig) -> rb.RBState:
    """The latest full-precision state of the first M trajectories stored in the Gust file ``cfg.ic_file``."""
    path = Path(cfg.ic_file)
    if not path.exists():
        raise ValueError(f"--ic_file {str(path)!r} does not exist")
    with hdf5_utils.open_dataset(path) as f:
        if f.attrs.get("solver") != SOLVER_NAME:
            raise ValueError(
                f"--ic_file {str(path)!r} was not written by {SOLVER_NAME} (solver: {f.attrs.get('solver')})"
            )
        stored = json.loads(f.attrs["config"])
        if (stored["nx"], stored["nz"]) != (cfg.nx, cfg.nz) or stored["n_trajectories"] < cfg.n_trajectories:
            raise ValueError(
                f"--ic_file {str(path)!r} holds {stored['n_trajectories']} trajectories at "
                f"{stored['nx']}x{stored['nz']}; this run needs {cfg.n_trajectories} at {cfg.nx}x{cfg.nz}"
            )
        if stored.get("aspect", 4.0) != cfg.aspect:  # the spectral state is per wavenumber 2πk/Lx: Lx must match
            raise ValueError(
                f"--ic_file {str(path)!r} is a box of aspect {stored.get('aspect', 4.0):g}; this run has --aspect "
                f"{cfg.aspect:g} (they must be equal)"
            )
        a, _, _ = f.read_state()
    real, cplx = np.dtype(cfg.dtype), np.dtype(np.complex128 if cfg.precision == "float64" else np.complex64)
    m = cfg.n_trajectories
    return rb.RBState(
        a["omega_hat"][:m].astype(cplx),
        a["psi_hat"][:m].astype(cplx),
        a["theta_hat"][:m].astype(cplx),
        a["mean_u"][:m].astype(real),
        np.zeros(m, np.int32),
    )


class StepControl:
    """Host-side choice of the step count per saved frame (dt = save_interval / n, constant within a frame).

    Fixed mode (``max_dt`` = 0): n = save_interval / dt throughout. Adaptive mode: after each frame the CFL
    number it reached sets the next dt to ``cfl_safety`` times the CFL-limited step, capped at ``max_dt``: it
    shrinks at once but grows by one notch of n per frame (the next frame is already dispatched when a frame's
    CFL is known); n is a multiple of the diagnostics rows, so frames and diagnostics fall on exact times.
    A frame that fails (CFL above the limit or non-finite, e.g. in a plume burst that outgrows the previous
    frame's CFL) is rejected and redone at least twice as finely (:meth:`retry`), at most ``MAX_RETRIES``
    times in a row. The per-mode implicit inverses of each n are built once and cached.
    """

    MAX_RETRIES = 5  # dt / 32 at the least

    def __init__(self, cfg: RBConfig, rows: int):
        self.cfg, self.rows = cfg, rows
        self.n = cfg.save_every  # for the next chunk to dispatch
        self.in_flight: list[int] = []  # n of dispatched chunks whose CFL is not known yet
        self.queued: list[int] = []  # n already decided for the next dispatches (restored on resume)
        self._solves: dict[int, rb.RBSolves] = {}
        self.retries = 0  # rejected attempts at the current frame
        self.spinup_problem: str | None = None  # why an adaptive spin-up gave up on an interval (retries spent)

    def next_n(self) -> int:
        n = self.queued.pop(0) if self.queued else self.n
        self.in_flight.append(n)
        return n

    def snapshot(self) -> np.ndarray:
        """(n of the chunk after the last written frame, n of the one after it): what a resumed run must use."""
        first = self.queued[0] if self.queued else (self.in_flight[0] if self.in_flight else self.n)
        second = self.queued[1] if len(self.queued) > 1 else self.n
        return np.array([first, second], dtype=np.int64)

    def restore(self, snapshot) -> None:
        self.queued = [int(x) for x in np.asarray(snapshot).reshape(-1)]
        self.n = self.queued[-1]

    def steps_for(self, dt: float) -> int:
        return self.rows * math.ceil(self.cfg.save_interval / (self.rows * dt) - 1e-9)

    def solves(self, n: int) -> rb.RBSolves:
        if n not in self._solves:
            cfg = self.cfg
            nu, kappa = math.sqrt(cfg.prandtl / cfg.rayleigh), 1.0 / math.sqrt(cfg.rayleigh * cfg.prandtl)
            a = rb.GAMMA * cfg.save_interval / n
            host = rb.make_solves(cfg.nx, cfg.nz, cfg.aspect, nu, kappa, a)
            self._solves[n] = rb.RBSolves(*(jnp.asarray(x, dtype=cfg.dtype) for x in host))
        return self._solves[n]

    def retry(self, cfl: float) -> tuple[int, int] | None:
        """A chunk failed: (its n, the larger n to redo it with), forgetting every dispatched chunk; None with fixed
        dt or after ``MAX_RETRIES`` rejections of the same frame. The new dt is at most half the failed one and,
        when the failed chunk's CFL number is known, at most ``cfl_safety`` times its CFL-limited step."""
        if not self.cfg.max_dt or self.retries >= self.MAX_RETRIES:
            return None
        failed = self.in_flight[0] if self.in_flight else self.n
        n = 2 * failed
        if math.isfinite(cfl) and cfl > 0:
            n = max(n, self.steps_for(self.cfg.save_interval / failed * self.cfg.cfl_safety / cfl))
        self.retries += 1
        self.in_flight.clear()
        self.queued.clear()
        self.n = n
        return failed, n

    def update(self, dt_used: float, cfl: float) -> None:
        self.retries = 0
        if self.in_flight:
            self.in_flight.pop(0)
        if not self.cfg.max_dt:
            return
        target = min(dt_used * self.cfg.cfl_safety / max(cfl, 1e-12), self.cfg.max_dt)
        k_used = round(self.cfg.save_interval / dt_used) // self.rows
        # shrink dt at once, grow it by one notch of n per frame: the next frame is already running
        self.n = self.rows * max(self.steps_for(target) // self.rows, k_used - 1, 1)


def make_simulation(cfg: RBConfig) -> Simulation:
    """Build the model and the jitted ensemble functions (inside ``jax.enable_x64`` for float64)."""
    model = rb.make_model(
        nx=cfg.nx, nz=cfg.nz, lx=cfg.aspect, rayleigh=cfg.rayleigh, prandtl=cfg.prandtl, dt=cfg.dt, dtype=cfg.dtype
    )
    to_grid = jnp.asarray(
        cheb.evaluate(cfg.nz, cfg.output_z()) if cfg.grid == "uniform" else np.eye(cfg.nz), dtype=cfg.dtype
    )
    p_solve = jnp.asarray(rb.make_pressure_solve(cfg.nx, cfg.nz, cfg.aspect), dtype=cfg.dtype)
    n_rows = cfg.save_every // cfg.diag_interval_steps
    control = StepControl(cfg, n_rows)

    def chunk_one(s: rb.RBState, solves, dt, steps_per_row):
        m = model._replace(solves=solves, dt=dt)

        def body(x, _):
            x = jax.lax.fori_loop(0, steps_per_row, lambda _, y: m.step(y), x)
            d = m.diagnostics(x)
            return x, jnp.stack([d[n] for n in DIAGNOSTICS])

        s, diags = jax.lax.scan(body, s, None, length=n_rows)
        finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(jnp.abs(a))) for a in (s.omega_hat, s.theta_hat)]))
        return s, output_fields(model, s, cfg.fields, to_grid, p_solve), diags, finite

    jitted = jax.jit(jax.vmap(chunk_one, in_axes=(0, None, None, None), out_axes=(0, 0, 1, 0)))

    def chunk(state):
        n = control.next_n()
        dt = jnp.asarray(cfg.save_interval / n, dtype=cfg.dtype)
        return jitted(state, control.solves(n), dt, n // n_rows)

    fixed_advance = jax.jit(
        jax.vmap(lambda s, n: jax.lax.fori_loop(0, n, lambda _, y: model.step(y), s), in_axes=(0, None))
    )

    def advance(state, n_steps):
        """Spin-up by n_steps of the nominal dt; with adaptive dt in whole save intervals at the controlled dt."""
        if not cfg.max_dt:
            return fixed_advance(state, n_steps)
        done = 0
        while done < n_steps:
            new_state, _, diags, finite = chunk(state)
            d, finite = np.asarray(driver.gather(diags), dtype=np.float64), driver.gather(finite)
            if problem := sim.check_chunk(d, finite):  # (which on success sets the next dt)
                if sim.retry(d, finite):
                    continue  # redo this save interval from ``state`` at a smaller dt
                # retries spent: the driver reports a non-finite state, or this problem through check_state
                t_end = (done + cfg.save_every) * cfg.dt
                control.spinup_problem = f"{problem} (in the spin-up interval ending at t = {t_end:g})"
                return new_state
            state, done = new_state, done + cfg.save_every
        return state

    sim = Simulation(
        cfg=cfg,
        model=model,
        chunk=chunk,
        advance=advance,
        frame=jax.jit(jax.vmap(lambda s: output_fields(model, s, cfg.fields, to_grid, p_solve))),
        sharding=driver.trajectory_sharding(cfg.n_trajectories),
        control=control,
    )
    return sim


def file_attrs(cfg: RBConfig, argv) -> dict:
    attrs = {
        "solver": SOLVER_NAME,
        "equation": "Boussinesq, free-fall units: du/dt + u·∇u = −∇p + (Pr/Ra)^½ ∇²u + b z, "
        "db/dt + u·∇b = (Ra Pr)^−½ ∇²b, ∇·u = 0; b = 1 (z=0), 0 (z=1); no-slip walls; x periodic",
        "config": cfg.to_json(),
        "rayleigh": float(cfg.rayleigh),
        "prandtl": float(cfg.prandtl),
        "aspect": float(cfg.aspect),
        "nu": math.sqrt(cfg.prandtl / cfg.rayleigh),
        "kappa": 1.0 / math.sqrt(cfg.rayleigh * cfg.prandtl),
        "nx": int(cfg.nx),
        "nz": int(cfg.nz),
        "dt": float(cfg.dt),
        "max_dt": float(cfg.max_dt),
        "cfl_safety": float(cfg.cfl_safety),
        "time_step": "adaptive (CFL-controlled per frame, see /diagnostics/dt)" if cfg.max_dt else "fixed",
        "save_interval": float(cfg.save_interval),
        "spinup_time": float(cfg.spinup_time),
        "t_total": float(cfg.t_total),
        "scheme": "RK222 (Ascher, Ruuth & Spiteri 1997)",
        "discretisation": "Fourier (x) x Chebyshev collocation (z), 3/2-rule dealiasing in x and z",
        "vertical_grid": cfg.grid,
        "seed": int(cfg.seed),
        "seed_derivation": SEED_DERIVATION,
        "ic_amplitude": float(cfg.ic_amplitude),
        "ic": "file" if cfg.ic_file else "conductive profile + seeded noise",
        "precision": cfg.precision,
        "n_trajectories": int(cfg.n_trajectories),
        "sample_order": "time-major: sample i = frame * n_trajectories + trajectory",
    }
    if cfg.ic_file:  # path, size, sha256, the run that wrote it, and the time of its latest state (the one used)
        source = driver.ic_source(cfg.ic_file)
        with hdf5_utils.open_dataset(cfg.ic_file) as f:
            _, source["state_step"], source["state_time"] = f.read_state(names=())
        attrs["ic_source"] = json.dumps(source)
    attrs.update(hdf5_utils.provenance(argv))
    return attrs


def nusselt_summary(path: Path, t_from: float | None = None) -> str:
    """Time averages of the five Nusselt definitions over the second half of the saved window (or t ≥ t_from)."""
    with hdf5_utils.open_dataset(path) as f:
        d = f.diagnostics()
    t = d["time"]
    if t.size == 0:
        return "no diagnostics written"
    t_from = 0.5 * (t[0] + t[-1]) if t_from is None else t_from
    sel = t >= t_from
    means = {n: float(d[n][sel].mean()) for n in NUSSELT}
    spread = max(means.values()) / min(means.values()) - 1.0
    body = ", ".join(f"{n.removeprefix('nusselt_')} {v:.4f}" for n, v in means.items())
    return f"time-mean Nu over t in [{t[sel][0]:g}, {t[-1]:g}]: {body}; spread {100 * spread:.2f}%"


def run(cfg: RBConfig, output_dir: str | Path, **options) -> Path:
    """Run ``cfg`` into ``output_dir`` through the shared driver; log the Nusselt summary; return the path.
    ``options`` are the keywords of ``solvers.common.driver.run`` (overwrite, resume, progress, argv, log,
    state_seconds)."""
    log = options.setdefault("log", lambda s: print(s, file=sys.stderr))
    path = driver.run(make_simulation, cfg, output_dir, **options)
    if jax.process_index() == 0:
        log(nusselt_summary(path))
    return path
