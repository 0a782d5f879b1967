"""Run configuration and driver of the 2D turbulence solver: config → initial state → jitted chunks → HDF5.

The physics lives in ``py2d_core`` (operators, equation) and ``schemes`` (step functions); this
module only wires them together:

- :class:`Py2DConfig` is the one frozen, validated description of a run (the CLI, tests and the
  output file's ``config`` attribute all use it);
- :func:`make_simulation` builds the equation, the scheme's ``step`` and the jitted chunk function
  that advances ``save_every`` steps for all trajectories at once (``vmap``), collecting diagnostics
  every ``diag_every`` steps inside a ``lax.scan`` (no host synchronisation per step);
- LES: ``sgs`` selects a closure (``les.py``) for a run on an LES grid; ``coarse_grain_to`` = N_LES turns a
  DNS run into an LES training-data run (below);
- :func:`run` writes every chunk through ``solvers.common.hdf5_utils`` and commits it, so a killed
  run keeps every completed frame and ``resume=True`` continues bit-for-bit.

Ensembles (``n_trajectories`` = M) are laid out over the visible devices with a ``NamedSharding``
of the trajectory axis; trajectory m starts from ``fold_in(PRNGKey(seed), m)`` whatever M is, so an
ensemble member equals the same trajectory run alone. Samples are stored time-major: sample
i = frame·M + m.

LES training pairs (``coarse_grain_to`` = N_LES > 0). The Gust format holds one (H, W) grid per file, and the
driver resumes exactly one file, so such a run writes ONE file on the N_LES grid: the DNS is advanced at N as
usual (its full-precision state is in /state, so crash safety and resume are unchanged) and every saved frame
stores the filtered, coarse-grained fields — ``omega``, ``psi``, ``u``, ``v`` then mean ω̄, ψ̄, ū, v̄ at N_LES
(so the file can start an LES through ``--ic_file``) — and the a-priori SGS terms ``pi_omega`` (always) and
``tau_xx, tau_xy, tau_yy, sigma_x, sigma_y`` (when listed in ``fields``), all computed on the DNS grid with
dealiased products and then coarse-grained. The DNS fields at N are not stored in that file: rerun without
``coarse_grain_to`` (same seed ⇒ the same DNS trajectory) to keep them.
"""

from __future__ import annotations

import dataclasses
import json
import math
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
from . import initial_conditions, les
from .py2d_core import (
    LENGTH,
    Py2DEquation,
    SpectralGrid,
    cfl_number,
    energy,
    enstrophy,
    omega2psi,
    palinstrophy,
    psi2uv,
    to_physical,
    to_spectral,
)
from .schemes import SCHEMES, State

FIELDS = ("omega", "psi", "u", "v")
DIAGNOSTICS = ("energy", "enstrophy", "palinstrophy", "energy_injection", "cfl", "max_abs_omega")
IC_KINDS = ("random", "taylor_green")
PRECISIONS = ("float32", "float64")
SOLVER_NAME = "solvers.py2d_turbulence"
SEED_DERIVATION = "trajectory m starts from jax.random.fold_in(jax.random.PRNGKey(seed), m)"


@dataclass(frozen=True)
class Py2DConfig(driver.TimeGrid):
    """Every setting of a run. Validated on construction: a bad value raises a one-line ValueError."""

    NX: int = 128
    Re: float = 1000.0
    dt: float = 5e-4
    t_total: float = 20.0
    save_interval: float = 0.1
    spinup_time: float = 0.0
    fkx: int = 4
    fky: int = 0
    alpha: float = 0.1
    beta: float = 0.0
    ic: str = "random"
    ic_kpeak: float = 10.0
    ic_file: str | None = None
    ic_sample: int = 0
    seed: int = 0
    scheme: str = "ab2cn"
    precision: str = "float64"
    fields: tuple[str, ...] = ("omega",)
    n_trajectories: int = 1
    diag_every: int = 0  # steps between diagnostics; 0 = automatic (about 10 per saved frame)
    sgs: str = "none"
    cs: float = les.DEFAULT_CS
    coarse_grain_to: int = 0
    filter: str = "gaussian"

    def __post_init__(self):
        if not isinstance(self.NX, int) or self.NX < 8 or self.NX % 2:
            raise ValueError(f"--NX must be an even integer >= 8 for the 2/3 dealiasing rule (got {self.NX}); try 128")
        if not self.Re > 0:
            raise ValueError(f"--Re must be > 0 (got {self.Re:g})")
        self.check_time()
        if self.alpha < 0:
            raise ValueError(f"--alpha must be >= 0 (got {self.alpha:g})")
        kmax = (self.NX - 1) // 3
        for name in ("fkx", "fky"):
            k = getattr(self, name)
            if not isinstance(k, int) or not 0 <= k <= kmax:
                raise ValueError(f"--{name} must be an integer in [0, {kmax}] (resolved at --NX {self.NX}; got {k})")
        if self.ic not in IC_KINDS:
            raise ValueError(f"--ic must be one of {', '.join(IC_KINDS)} (got {self.ic!r})")
        if not self.ic_kpeak > 0:
            raise ValueError(f"--ic_kpeak must be > 0 (got {self.ic_kpeak:g})")
        if self.ic_sample < 0:
            raise ValueError(f"--ic_sample must be >= 0 (got {self.ic_sample})")
        if self.seed < 0:
            raise ValueError(f"--seed must be >= 0 (got {self.seed})")
        if self.scheme not in SCHEMES:
            raise ValueError(f"--scheme must be one of {', '.join(SCHEMES)} (got {self.scheme!r})")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})")
        if self.sgs not in les.SGS_MODELS:
            raise ValueError(f"--sgs must be one of {', '.join(les.SGS_MODELS)} (got {self.sgs!r})")
        if not 0 < self.cs <= les.MAX_CS:
            raise ValueError(f"--cs must be in (0, {les.MAX_CS:g}] (got {self.cs:g}; Smagorinsky's C_s is about 0.17)")
        if self.filter not in les.FILTERS:
            raise ValueError(f"--filter must be one of {', '.join(les.FILTERS)} (got {self.filter!r})")
        m = self.coarse_grain_to
        if not isinstance(m, int) or m < 0 or (m and (m < 8 or m % 2 or m >= self.NX)):
            raise ValueError(
                f"--coarse_grain_to must be 0 (off) or an even integer in [8, {self.NX}) below --NX (got {m})"
            )
        if m and self.sgs != "none":
            raise ValueError(f"--coarse_grain_to makes LES data from a DNS; use it with --sgs none (got {self.sgs})")
        if not self.fields:
            raise ValueError(f"--fields must name at least one of {', '.join(FIELDS)}")
        allowed = FIELDS + les.SGS_FIELDS if m else FIELDS
        for f in self.fields:
            if f in les.SGS_FIELDS and not m:
                raise ValueError(f"--fields {f} is an SGS term of LES data; it needs --coarse_grain_to N_LES")
            if f not in allowed:
                raise ValueError(f"--fields: unknown field {f!r}; allowed: {', '.join(allowed)}")
        if len(set(self.fields)) != len(self.fields):
            raise ValueError(f"--fields lists a field twice (got {','.join(self.fields)})")
        if not isinstance(self.n_trajectories, int) or self.n_trajectories < 1:
            raise ValueError(f"--n_trajectories must be >= 1 (got {self.n_trajectories})")
        if self.ic_file is not None and not Path(self.ic_file).is_file():
            raise ValueError(f"--ic_file {self.ic_file!r} does not exist or is not a file")
        if self.ic_sample and (self.ic_file is None or Path(self.ic_file).suffix == ".npy"):
            raise ValueError(
                f"--ic_sample selects a sample of a Gust .h5 --ic_file; it has no effect here (got {self.ic_sample})"
            )
        if self.ic_file is not None and self.ic != "random":
            raise ValueError(f"--ic {self.ic} and --ic_file exclude each other (the file gives the initial field)")
        if self.n_trajectories > 1 and (self.ic_file is not None or self.ic == "taylor_green"):
            what = "--ic_file" if self.ic_file is not None else "--ic taylor_green"
            raise ValueError(
                f"{what} gives one deterministic initial field, so the {self.n_trajectories} trajectories "
                "would be identical; use --ic random or --n_trajectories 1"
            )

    # --- derived quantities -----------------------------------------------------------------
    @property
    def dtype(self):
        return jnp.float64 if self.precision == "float64" else jnp.float32

    @property
    def grid_points(self) -> int:
        return self.NX * self.NX

    @property
    def output_fields(self) -> tuple[str, ...]:
        """The stored fields: ``fields``, plus ``pi_omega`` in an LES-data run."""
        if self.coarse_grain_to and "pi_omega" not in self.fields:
            return (*self.fields, "pi_omega")
        return self.fields

    @property
    def output_size(self) -> int:
        return self.coarse_grain_to or self.NX

    @property
    def uses_seed(self) -> bool:
        """Whether --seed changes the run (only the random initial condition draws from --seed)."""
        return self.ic_file is None and self.ic == "random"

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        # the LES settings are recorded only when used, so files written before they existed still resume
        if d["sgs"] == "none":
            del d["sgs"]
        if self.sgs not in ("smag", "leith"):
            del d["cs"]
        if not self.coarse_grain_to:
            del d["coarse_grain_to"], d["filter"]
        return json.dumps(d, sort_keys=True)

    def output_name(self) -> str:
        num = driver.name_number
        ic = self.ic
        if self.ic_file:
            ic = driver.name_stem(self.ic_file) + (f"-s{self.ic_sample}" if self.ic_sample else "")
        les_part = ""
        if self.sgs != "none":
            les_part += f"_sgs{self.sgs}" + (num(self.cs) if self.sgs in ("smag", "leith") else "")
        if self.coarse_grain_to:
            les_part += f"_les{self.coarse_grain_to}{self.filter}"
        return (
            f"py2d_Re{num(self.Re)}_N{self.NX}_fkx{self.fkx}_fky{self.fky}_alpha{num(self.alpha)}_beta{num(self.beta)}"
            f"_dt{num(self.dt)}_{self.scheme}_{self.precision}_{ic}_seed{self.seed}_M{self.n_trajectories}{les_part}.h5"
        )


# ------------------------------------------------------------------------------------ building blocks


def make_equation(cfg: Py2DConfig) -> Py2DEquation:
    grid = SpectralGrid(cfg.NX, dtype=cfg.dtype)
    closure = les.make_closure(cfg.sgs, grid, coefficient=cfg.cs)
    return Py2DEquation(grid, re=cfg.Re, alpha=cfg.alpha, beta=cfg.beta, fkx=cfg.fkx, fky=cfg.fky, closure=closure)


def initial_vorticity(cfg: Py2DConfig, trajectory: int) -> np.ndarray:
    """The (NX, NX) float64 initial vorticity of one trajectory."""
    if cfg.ic_file is not None:
        return initial_conditions.from_file(cfg.ic_file, cfg.NX, cfg.ic_sample)
    if cfg.ic == "taylor_green":
        return initial_conditions.taylor_green(cfg.NX)
    return initial_conditions.random_field(cfg.NX, cfg.seed, trajectory, cfg.ic_kpeak)


def output_fields(omega_hat, eq: Py2DEquation, names: tuple[str, ...]) -> dict[str, jnp.ndarray]:
    """Physical float32 fields (y, x) from the spectral vorticity."""
    grid = eq.grid
    psi_hat = omega2psi(omega_hat, grid)
    u_hat, v_hat = psi2uv(psi_hat, grid)
    spectral = {"omega": omega_hat, "psi": psi_hat, "u": u_hat, "v": v_hat}
    stacked = to_physical(jnp.stack([spectral[n] for n in names], axis=-3), grid.n)
    return {n: stacked[..., i, :, :].astype(jnp.float32) for i, n in enumerate(names)}


def les_output_fields(omega_hat, eq: Py2DEquation, g_hat, n_les: int, names: tuple[str, ...]):
    """Filtered, coarse-grained fields and a-priori SGS terms (``les.apriori_fields``) at n_les, float32."""
    spectral = les.apriori_fields(omega_hat, eq.grid, g_hat)
    coarse = les.coarse_grain(jnp.stack([spectral[n] for n in names], axis=-3), n_les)
    stacked = to_physical(coarse, n_les)
    return {n: stacked[..., i, :, :].astype(jnp.float32) for i, n in enumerate(names)}


def diagnostic_names_of(cfg: Py2DConfig) -> tuple[str, ...]:
    """DIAGNOSTICS, plus the eddy viscosity ``nu_eddy`` with an eddy-viscosity closure."""
    return DIAGNOSTICS + (("nu_eddy",) if cfg.sgs in les.EDDY_MODELS else ())


def diagnostics(omega_hat, eq: Py2DEquation, dt: float) -> jnp.ndarray:
    """The diagnostics of one state (``diagnostic_names_of``), stacked on the last axis."""
    grid = eq.grid
    w = to_physical(omega_hat, grid.n)
    values = [
        energy(omega_hat, grid),
        enstrophy(omega_hat, grid),
        palinstrophy(omega_hat, grid),
        eq.energy_injection(omega_hat),
        cfl_number(omega_hat, grid, dt),
        jnp.max(jnp.abs(w), axis=(-2, -1)),
    ]
    if eq.has_eddy_viscosity:
        values.append(eq.eddy_viscosity(omega_hat))
    return jnp.stack(values, axis=-1)


def repeated(step: Callable[[State], State], n: int) -> Callable[[State], State]:
    """``step`` applied ``n`` times inside a ``lax.fori_loop``."""
    return lambda s: jax.lax.fori_loop(0, n, lambda _, x: step(x), s)


@dataclass(frozen=True)
class Simulation:
    """The turbulence solver's building blocks for ``solvers.common.driver``; built by :func:`make_simulation`."""

    cfg: Py2DConfig
    eq: Py2DEquation
    init: Callable  # (M, ny, nx) physical → batched State
    chunk: Callable  # State → (State, fields dict (M, ny, nx) float32, diagnostics (rows, M, n_diag), finite (M,))
    advance: Callable  # (State, n_steps) → State, for the spin-up
    frame: Callable  # State → fields dict
    sharding: NamedSharding
    diagnostic_names: tuple[str, ...] = DIAGNOSTICS
    progress_diagnostics = MappingProxyType({"cfl": "cfl"})

    def initial_state(self) -> State:
        cfg = self.cfg
        omega0 = np.stack([initial_vorticity(cfg, m) for m in range(cfg.n_trajectories)])
        return self.init(driver.place(omega0.astype(np.dtype(cfg.dtype)), self.sharding))

    def check_initial(self, state: State) -> str:
        """ValueError if the largest initial CFL number exceeds the scheme's limit."""
        cfg = self.cfg
        cfl = float(jnp.max(cfl_number(state.omega_hat, self.eq.grid, cfg.dt)))
        limit = SCHEMES[cfg.scheme].cfl_limit
        if not math.isfinite(cfl):
            raise ValueError(f"the initial state is not finite (CFL {cfl}); check --ic_file")
        if cfl > limit:
            raise ValueError(
                f"initial CFL {cfl:.3g} exceeds the {cfg.scheme} limit {limit:g}; "
                f"use --dt <= {cfg.dt * limit / cfl:.3g}"
            )
        return f"initial CFL {cfl:.3f}"

    def state_arrays(self, host: State) -> dict[str, np.ndarray]:
        return {"omega_hat": host.omega_hat, "history": host.history, "step_counter": host.step}

    def state_from_arrays(self, arrays: dict[str, np.ndarray]) -> State:
        return State(arrays["omega_hat"], arrays["history"], arrays["step_counter"])

    def check_chunk(self, diags: np.ndarray, finite: np.ndarray) -> str | None:
        return driver.non_finite(finite)

    def retry(self, diags: np.ndarray, finite: np.ndarray) -> str | None:
        return None  # fixed dt: a failed chunk stops the run

    def new_writer(self, path: Path, overwrite: bool, argv) -> hdf5_utils.GustWriter:
        cfg = self.cfg
        m, n = cfg.n_trajectories, cfg.NX
        cdtype = np.dtype(np.complex128 if cfg.precision == "float64" else np.complex64)
        x = np.asarray(initial_conditions.coordinates(cfg.output_size))
        return hdf5_utils.create_writer(
            path,
            fields=cfg.output_fields,
            shape=(cfg.output_size, cfg.output_size),
            n_samples=cfg.n_frames * m,
            grid=hdf5_utils.Grid(x=x, y=x, bc_x="periodic", bc_y="periodic", length_x=LENGTH, length_y=LENGTH),
            diagnostics=self.diagnostic_names,
            n_diag=cfg.n_diag_rows,
            n_trajectories=m,
            state_spec={
                "omega_hat": ((m, n, n // 2 + 1), cdtype),
                "history": ((m, n, n // 2 + 1), cdtype),
                "step_counter": ((m,), np.dtype(np.int32)),
            },
            attrs=file_attrs(cfg, argv),
            overwrite=overwrite,
        )


def make_simulation(cfg: Py2DConfig) -> Simulation:
    """Build the equation and the jitted functions. Call inside ``jax.enable_x64(cfg.precision == 'float64')``."""
    eq = make_equation(cfg)
    scheme = SCHEMES[cfg.scheme]
    step = scheme.make_step(eq, cfg.dt)
    n_diag = cfg.save_every // cfg.diag_interval_steps
    inner = repeated(step, cfg.diag_interval_steps)
    cdtype = eq.forcing_hat.dtype
    if cfg.coarse_grain_to:
        g_hat = les.transfer_function(cfg.filter, les.default_width(cfg.coarse_grain_to), eq.grid)

        def fields_of(omega_hat):
            return les_output_fields(omega_hat, eq, g_hat, cfg.coarse_grain_to, cfg.output_fields)
    else:

        def fields_of(omega_hat):
            return output_fields(omega_hat, eq, cfg.fields)

    def init_one(omega):
        return scheme.init_state(eq, to_spectral(omega.astype(cfg.dtype)).astype(cdtype))

    def chunk_one(state: State):
        def body(s, _):
            s = inner(s)
            return s, diagnostics(s.omega_hat, eq, cfg.dt)

        state, diags = jax.lax.scan(body, state, None, length=n_diag)
        finite = jnp.all(jnp.isfinite(state.omega_hat.real) & jnp.isfinite(state.omega_hat.imag))
        return state, fields_of(state.omega_hat), diags, finite

    def advance_one(state: State, n_steps):
        return jax.lax.fori_loop(0, n_steps, lambda _, s: step(s), state)

    return Simulation(
        cfg=cfg,
        eq=eq,
        init=jax.jit(jax.vmap(init_one)),
        chunk=jax.jit(jax.vmap(chunk_one, out_axes=(0, 0, 1, 0))),
        advance=jax.jit(jax.vmap(advance_one, in_axes=(0, None))),
        frame=jax.jit(jax.vmap(lambda s: fields_of(s.omega_hat))),
        sharding=driver.trajectory_sharding(cfg.n_trajectories),
        diagnostic_names=diagnostic_names_of(cfg),
    )


def file_attrs(cfg: Py2DConfig, argv: list[str] | None) -> dict:
    attrs = {
        "solver": SOLVER_NAME,
        "equation": "dω/dt + u·∇ω = (1/Re)∇²ω − αω − f + βv, ∇²ψ = −ω, u = ∂ψ/∂y, v = −∂ψ/∂x, "
        "f = fkx cos(fkx x) + fky cos(fky y), domain [0, 2π)²",
        "config": cfg.to_json(),
        "Re": float(cfg.Re),
        "nu": 1.0 / cfg.Re,
        "alpha": float(cfg.alpha),
        "beta": float(cfg.beta),
        "fkx": int(cfg.fkx),
        "fky": int(cfg.fky),
        "NX": int(cfg.NX),
        "dt": float(cfg.dt),
        "save_interval": float(cfg.save_interval),
        "spinup_time": float(cfg.spinup_time),
        "t_total": float(cfg.t_total),
        "scheme": cfg.scheme,
        "scheme_citation": SCHEMES[cfg.scheme].citation,
        "dealiasing": "2/3 rule (square truncation, 3|k_i| < N)",
        "ic": "file" if cfg.ic_file else cfg.ic,
        "seed": int(cfg.seed),
        "seed_derivation": SEED_DERIVATION,
        "precision": cfg.precision,
        "n_trajectories": int(cfg.n_trajectories),
        "sample_order": "time-major: sample i = frame * n_trajectories + trajectory",
    }
    if cfg.ic_file:
        attrs["ic_source"] = json.dumps(driver.ic_source(cfg.ic_file))  # path, size, sha256, the run that wrote it
    if cfg.sgs != "none":
        attrs["sgs"] = cfg.sgs
        attrs["sgs_filter_width"] = les.default_width(cfg.NX)
        if cfg.sgs in ("smag", "leith"):
            attrs["cs"] = float(cfg.cs)
    if cfg.coarse_grain_to:
        attrs["coarse_grain_to"] = int(cfg.coarse_grain_to)
        attrs["les_filter"] = cfg.filter
        attrs["les_filter_width"] = les.default_width(cfg.coarse_grain_to)
        attrs["les_fields"] = (
            f"LES data at N_LES={cfg.coarse_grain_to} from the DNS at N={cfg.NX}: omega/psi/u/v are the filtered, "
            "coarse-grained fields; pi_omega = (J(ω,ψ))‾ − J(ω̄,ψ̄), J(a,b) = a_x b_y − a_y b_x, "
            "tau_ij = (u_i u_j)‾ − ū_i ū_j, sigma_i = (u_i ω)‾ − ū_i ω̄ (filter on the DNS grid, dealiased products, "
            "then coarse-grained); LES equation ∂ω̄/∂t + J(ω̄,ψ̄) = … − pi_omega"
        )
    attrs.update(hdf5_utils.provenance(argv))
    return attrs


def run(cfg: Py2DConfig, output_dir: str | Path, **options) -> Path:
    """Run the simulation described by ``cfg`` into ``output_dir``; return the output path. ``options`` are the
    keywords of ``solvers.common.driver.run`` (overwrite, resume, progress, argv, log, state_seconds).

    Raises ValueError for bad settings (before anything is written), FileExistsError for an existing
    output without ``overwrite``/``resume``, and BlowUpError when the solution becomes non-finite (the
    file then holds every good frame and says why it stopped).
    """
    return driver.run(make_simulation, cfg, output_dir, **options)
