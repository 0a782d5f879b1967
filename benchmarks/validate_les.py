"""LES validation of the turbulence solver: an under-resolved run without closure vs with DSMAG, and the step
cost of every closure (not a unit test: a few minutes on a 2-core CPU).

    python -m benchmarks.validate_les --output_dir ./validation

1. py2d's LES case Re = 2·10⁴, k_fx = 4, k_fy = 0, α = 0.1 (Guan et al., J. Comput. Phys. 458, 111090, 2022)
   on an N = 128 grid (far too coarse for that Re: the enstrophy cascade reaches the 2/3-rule cut-off
   k_max = 42 undamped). From the same random initial field, runs without closure and with ``--sgs dsmag``
   (``ab2cn``, float64) are spun up for --t_spinup and their energy spectra averaged over --t_avg. Without a
   closure the enstrophy piles up at the grid scale: the spectrum flattens towards k_max. DSMAG removes it:
   the checks are that the no-closure tail energy (k_max−5 ≤ k ≤ k_max) exceeds the DSMAG one by more than 2×
   and that the log-slope of E(k) over k_max/2 ≤ k ≤ k_max is shallower than −3 without closure (pile-up) and
   steeper than −3 with DSMAG (the enstrophy-cascade k⁻³ or steeper). Spectra, the figure ``les_spectra.png``
   and the printed lines (``les_validation.txt``) go to --output_dir (created once the run is done; existing ones
   are replaced only with --overwrite).
2. Step cost: every ``--sgs`` choice timed side by side on the same state (jitted, ``ab2cn``, N, float64), as a
   ratio to no closure.
Prints every figure; exits 1 if a check fails, 2 on bad settings (one line, before anything runs or is written), 3
if a run blows up (non-finite spectrum; nothing is written).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from solvers.common.atomic import atomic_text, atomic_write
from solvers.common.cli import (
    OneLineArgumentParser,
    exit_process,
    nonnegative_float,
    output_dir_problem,
    positive_float,
    positive_int,
    report,
)
from solvers.common.driver import BlowUpError, as_steps
from solvers.common.hdf5_utils import provenance
from solvers.py2d_turbulence import initial_conditions as ic
from solvers.py2d_turbulence import les
from solvers.py2d_turbulence import py2d_core as core
from solvers.py2d_turbulence.schemes import SCHEMES
from solvers.py2d_turbulence.solver import repeated

PROG = "python -m benchmarks.validate_les"
RE, FKX, FKY, ALPHA = 2e4, 4, 0, 0.1
# the tail check sums k = k_max−5 … k_max, which must lie above the forcing k_f = 4: k_max = (N−1)//3 >= 10
MIN_NX = 32
OUTPUTS = ("les_spectra.png", "les_spectra.npz", "les_validation.txt")


def reported_wavenumbers(kmax: int) -> list[int]:
    """The shells printed: 1, 2, 4, 8, 12, 16, 24, 32, ... and the last five kept ones, all <= k_max, each once."""
    ks = {1, 2, 4, *range(kmax - 4, kmax + 1)}
    k = 8
    while k <= kmax:
        ks |= {k, 3 * k // 2}
        k *= 2
    return sorted(k for k in ks if 1 <= k <= kmax)


def check_times(dt: float, t_spinup: float, t_avg: float, every: float) -> tuple[int, int, int]:
    """(steps per sample, spin-up samples, averaged samples), or a one-line ValueError naming the flags."""
    per = as_steps(every, dt, "every")
    spin = as_steps(t_spinup, dt, "t_spinup", allow_zero=True)
    avg = as_steps(t_avg, dt, "t_avg")
    if spin % per:
        raise ValueError(f"--t_spinup must be 0 or a multiple of --every={every:g} (got {t_spinup:g})")
    if avg % per:
        raise ValueError(f"--t_avg must be a positive multiple of --every={every:g} (got {t_avg:g})")
    return per, spin // per, avg // per


def make_step(n: int, sgs: str, dt: float):
    grid = core.SpectralGrid(n)
    eq = core.Py2DEquation(
        grid, re=RE, alpha=ALPHA, fkx=FKX, fky=FKY, closure=les.make_closure(sgs, grid, coefficient=les.DEFAULT_CS)
    )
    return eq, SCHEMES["ab2cn"]


def spectra_run(n: int, sgs: str, dt: float, per: int, n_spin: int, n_avg: int, progress: bool):
    """Time-mean energy spectrum over the ``n_avg`` samples after ``n_spin`` ones, ``per`` steps apart, and the mean
    eddy viscosity."""
    from tqdm import tqdm

    eq, scheme = make_step(n, sgs, dt)
    state = scheme.init_state(eq, core.to_spectral(jnp.asarray(ic.random_field(n, seed=0, trajectory=0))))
    advance = jax.jit(repeated(scheme.make_step(eq, dt), per))
    spec, nus = [], []
    for i in tqdm(range(n_spin + n_avg), desc=f"N={n} sgs={sgs}", disable=not progress, file=sys.stderr):
        state = advance(state)
        if i >= n_spin:
            spec.append(np.asarray(core.energy_spectrum(state.omega_hat, eq.grid)[1]))
            nus.append(float(eq.eddy_viscosity(state.omega_hat)))
    if not np.all(np.isfinite(spec)):
        raise BlowUpError(f"the run with --sgs {sgs} blew up (non-finite spectrum) at --dt {dt:g}; reduce --dt")
    return np.mean(spec, axis=0), float(np.mean(nus))


def step_costs(n: int, dt: float, n_steps: int, repeats: int) -> dict[str, float]:
    """Seconds per step of every closure, measured on the same spun-up-free random state, best of ``repeats``."""
    omega0 = core.to_spectral(jnp.asarray(ic.random_field(n, seed=1, trajectory=0)))
    out = {}
    for sgs in les.SGS_MODELS:
        eq, scheme = make_step(n, sgs, dt)
        state = scheme.init_state(eq, omega0)
        run = jax.jit(repeated(scheme.make_step(eq, dt), n_steps))
        jax.block_until_ready(run(state))
        best = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(run(state))
            best = min(best, time.perf_counter() - t0)
        out[sgs] = best / n_steps
    return out


def plot(k, e_none, e_dsmag, n: int, png: Path, overwrite: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kmax = (n - 1) // 3
    kk = np.arange(1, kmax + 1)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.loglog(kk, e_none[kk], "r.-", label="no closure")
    ax.loglog(kk, e_dsmag[kk], "b.-", label="DSMAG")
    ax.loglog(kk[3:], e_dsmag[4] * (kk[3:] / 4.0) ** -3.0, "k--", lw=0.8, label="k⁻³")
    ax.axvline(kmax, color="gray", lw=0.5)
    ax.set_xlabel("wavenumber k")
    ax.set_ylabel("E(k), time mean")
    ax.set_title(f"LES N={n}, Re=2·10⁴, k_f=4, α=0.1")
    ax.legend()
    fig.tight_layout()
    try:
        atomic_write(png, lambda tmp: fig.savefig(tmp, format="png", dpi=120), overwrite=overwrite)
    finally:
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = OneLineArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--output_dir", required=True)
    p.add_argument("--NX", type=positive_int, default=128, help=f"LES grid, even >= {MIN_NX} (default 128)")
    p.add_argument("--dt", type=positive_float, default=1e-3, help="time step (default 1e-3)")
    p.add_argument(
        "--t_spinup", type=nonnegative_float, default=30.0, help="spin-up time, a multiple of --every (default 30)"
    )
    p.add_argument(
        "--t_avg", type=positive_float, default=20.0, help="averaging window, a multiple of --every (default 20)"
    )
    p.add_argument(
        "--every", type=positive_float, default=0.5, help="spectrum sampling interval, a multiple of --dt (default 0.5)"
    )
    p.add_argument("--cost_steps", type=positive_int, default=200, help="steps per timing (default 200)")
    p.add_argument("--overwrite", action="store_true", help=f"replace {', '.join(OUTPUTS)} in --output_dir")
    p.add_argument("--no_progress", action="store_true")
    args = p.parse_args(argv)
    n = args.NX
    if n < MIN_NX or n % 2:
        p.error(
            f"--NX must be an even integer >= {MIN_NX} (got {n}): the checked tail k_max−5 … k_max "
            f"(k_max = (NX−1)//3) must lie above the forcing k_f = {FKX}"
        )
    try:
        per, n_spin, n_avg = check_times(args.dt, args.t_spinup, args.t_avg, args.every)
    except ValueError as err:
        p.error(str(err))
    if problem := output_dir_problem(args.output_dir, writable=True):
        p.error(problem)
    out = Path(args.output_dir)
    existing = [name for name in OUTPUTS if (out / name).exists() or (out / name).is_symlink()]
    if existing and not args.overwrite:
        p.error(
            f"{out / existing[0]} already exists; pass --overwrite to replace "
            f"{'them' if len(existing) > 1 else 'it'}, or choose another --output_dir"
        )
    try:
        return validate(args, n, per, n_spin, n_avg, out, argv)
    except BaseException as err:
        return report(PROG, err)


def validate(args, n: int, per: int, n_spin: int, n_avg: int, out: Path, argv) -> int:
    """The two runs, the checks and the step costs; writes the outputs and prints the lines. 0 if the checks pass."""
    progress = not args.no_progress
    lines = [f"# LES validation, {jax.devices()[0].platform}, {jax.device_count()} device(s), N={n}, dt={args.dt:g}"]
    with jax.enable_x64(True):
        t0 = time.perf_counter()
        e_none, _ = spectra_run(n, "none", args.dt, per, n_spin, n_avg, progress)
        e_dsmag, nu = spectra_run(n, "dsmag", args.dt, per, n_spin, n_avg, progress)
        lines.append(
            f"spectra: t_spinup={args.t_spinup:g}, t_avg={args.t_avg:g}, every={args.every:g} "
            f"({n_avg} samples, {time.perf_counter() - t0:.0f} s)"
        )
        kmax = core.SpectralGrid(n).kmax
        k = np.arange(e_none.size)
        lines.append(f"mean DSMAG eddy viscosity ν_e = {nu:.3e}  (molecular 1/Re = {1 / RE:.1e})")
        lines.append(f"   k    E_none(k)    E_dsmag(k)   ratio   (k <= k_max = {kmax})")
        for kk in reported_wavenumbers(kmax):
            ratio = e_none[kk] / e_dsmag[kk] if e_dsmag[kk] > 0 else math.inf
            lines.append(f"{kk:4d}  {e_none[kk]:.4e}  {e_dsmag[kk]:.4e}  {ratio:7.2f}")
        tail = slice(kmax - 5, kmax + 1)
        tail_ratio = float(e_none[tail].sum() / e_dsmag[tail].sum())
        fit = np.arange(kmax // 2, kmax + 1)
        slope_none = float(np.polyfit(np.log(fit), np.log(e_none[fit]), 1)[0])
        slope_dsmag = float(np.polyfit(np.log(fit), np.log(e_dsmag[fit]), 1)[0])
        lines.append(f"tail energy (k={kmax - 5}..{kmax}) no closure / DSMAG = {tail_ratio:.2f}  (check > 2)")
        lines.append(
            f"log-slope of E(k) for k={kmax // 2}..{kmax}: no closure {slope_none:.2f}, DSMAG {slope_dsmag:.2f}"
        )
        lines.append("checks: tail ratio > 2, no-closure slope > −3 (pile-up), DSMAG slope < −3")
        costs = step_costs(n, args.dt, args.cost_steps, 5)
        lines.append(f"step cost (ab2cn, N={n}, float64, best of 5 × {args.cost_steps} steps):")
        for sgs, c in costs.items():
            lines.append(f"  {sgs:7s} {c * 1e3:8.3f} ms/step  ×{c / costs['none']:.2f}")
    ok = tail_ratio > 2 and slope_none > -3 > slope_dsmag
    lines.append("PASS" if ok else "FAIL")
    out.mkdir(parents=True, exist_ok=True)
    png = out / "les_spectra.png"
    plot(k, e_none, e_dsmag, n, png, args.overwrite)
    np_path = out / "les_spectra.npz"

    def save(tmp):
        with open(tmp, "wb") as fh:
            np.savez(fh, k=k, e_none=e_none, e_dsmag=e_dsmag, provenance=str(provenance(argv)))

    atomic_write(np_path, save, overwrite=args.overwrite)
    atomic_text(out / "les_validation.txt", "\n".join(lines) + "\n", overwrite=args.overwrite)
    print("\n".join(lines))
    print(f"figure: {png}")
    return 0 if ok else 1


if __name__ == "__main__":
    exit_process(main())
