"""Validation of the turbulence solver in py2d's standard configuration (not a unit test: ~2 min on a CPU).

    python -m benchmarks.validate_py2d --output_dir ./validation

1. Resolution: from the analytic initial field
       ω0(x, y) = sin(3x)cos(2y) + 0.8 cos(x + 4y) + 0.6 sin(5x − 2y)
   at Re = 1000, k_fx = 4, k_fy = 0, α = 0.1, dt = 5e-4 (py2d's Kolmogorov case), runs with N = 128
   and N = 256 must agree on energy and enstrophy at t = 1 to 1e-9 relative: the flow is resolved by
   both grids, so the dealiased truncation changes nothing at that level.
2. Physics: a random-IC run to t = 60 at N = 128, written through the Gust HDF5 writer; the
   time-averaged energy spectrum over t ∈ [30, 60] must fall off faster than k⁻³ for 8 ≤ k ≤ 32 (the
   enstrophy cascade of 2D turbulence, steepened by the linear drag; Boffetta & Ecke, Annu. Rev.
   Fluid Mech. 44, 2012, §4).
Prints every figure; exits 1 if a check fails.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from solvers.common.cli import OneLineArgumentParser, exit_process, output_dir_problem, positive_float, report
from solvers.common.hdf5_utils import open_dataset
from solvers.py2d_turbulence import py2d_core as core
from solvers.py2d_turbulence.schemes import SCHEMES
from solvers.py2d_turbulence.solver import Py2DConfig, repeated, run

RE, FKX, FKY, ALPHA, DT = 1000.0, 4, 0, 0.1, 5e-4


def analytic_omega0(n: int) -> np.ndarray:
    x = core.coordinates(n)
    X, Y = np.meshgrid(x, x)  # (y, x)
    return np.sin(3 * X) * np.cos(2 * Y) + 0.8 * np.cos(X + 4 * Y) + 0.6 * np.sin(5 * X - 2 * Y)


def energy_enstrophy_at(n: int, t_end: float, scheme: str) -> tuple[float, float, float]:
    grid = core.SpectralGrid(n)
    eq = core.Py2DEquation(grid, re=RE, alpha=ALPHA, fkx=FKX, fky=FKY)
    sch = SCHEMES[scheme]
    state = sch.init_state(eq, core.to_spectral(jnp.asarray(analytic_omega0(n))))
    state = jax.jit(repeated(sch.make_step(eq, DT), round(t_end / DT)))(state)
    _, e_k = core.energy_spectrum(state.omega_hat, grid)
    tail = float(jnp.sum(e_k[grid.kmax - 5 :]) / jnp.sum(e_k))
    return float(core.energy(state.omega_hat, grid)), float(core.enstrophy(state.omega_hat, grid)), tail


def spectral_slope(path: Path, t_from: float, k_lo: int, k_hi: int) -> tuple[float, np.ndarray]:
    with open_dataset(path) as f:
        times = f.samples()["time"]
        idx = np.flatnonzero(times >= t_from - 1e-9)
        omega = f.read("omega", int(idx[0]), int(idx[-1]) + 1).astype(np.float64)
    n = omega.shape[-1]
    grid = core.SpectralGrid(n)
    _, e_k = core.energy_spectrum(core.to_spectral(jnp.asarray(omega)), grid)
    e_mean = np.asarray(e_k).mean(axis=0)
    k = np.arange(k_lo, k_hi + 1)
    slope = np.polyfit(np.log(k), np.log(e_mean[k]), 1)[0]
    return float(slope), e_mean


def _plot_spectrum(e_mean: np.ndarray, slope: float, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = np.arange(1, 43)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.loglog(k, e_mean[k], "k.-", label="Gust, N=128, time mean t∈[30,60]")
    ax.loglog(k[7:32], e_mean[8] * (k[7:32] / 8.0) ** -3.0, "b--", label="k⁻³")
    ax.loglog(k[7:32], e_mean[8] * (k[7:32] / 8.0) ** slope, "r:", label=f"fit k^{slope:.2f} (8≤k≤32)")
    ax.set_xlabel("wavenumber k")
    ax.set_ylabel("E(k)")
    ax.set_title("Kolmogorov flow, Re=1000, k_f=4, α=0.1")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    print(f"    spectrum plot: {png}")


PROG = "python -m benchmarks.validate_py2d"
PNG = "validation_spectrum.png"


def steady_config(scheme: str, t_end: float) -> Py2DConfig:
    """Check 2's run: N = 128, random IC, a frame every time unit to ``t_end``."""
    return Py2DConfig(
        NX=128, Re=RE, dt=DT, t_total=t_end, save_interval=1.0, fkx=FKX, fky=FKY, alpha=ALPHA,
        scheme=scheme, precision="float64", seed=0,
    )  # fmt: skip


def main(argv=None) -> int:
    p = OneLineArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--output_dir", required=True, help="folder for the long run's HDF5 file")
    p.add_argument("--scheme", default="ab2cn", choices=list(SCHEMES))
    p.add_argument(
        "--t_end",
        type=positive_float,
        default=60.0,
        help="length of the statistically steady run, a whole number (default 60)",
    )
    p.add_argument("--overwrite", action="store_true", help=f"replace the steady run's file and {PNG}")
    args = p.parse_args(argv)
    if args.t_end != round(args.t_end):
        p.error(f"--t_end must be a whole number: the run saves a frame every time unit (got {args.t_end:g})")
    try:
        cfg = steady_config(args.scheme, args.t_end)
    except ValueError as err:
        p.error(str(err).replace("--t_total", "--t_end"))
    if problem := output_dir_problem(args.output_dir):
        p.error(problem)
    out = Path(args.output_dir)
    existing = [name for name in (cfg.output_name(), PNG) if (out / name).exists()]
    if existing and not args.overwrite:
        p.error(
            f"{out / existing[0]} already exists; pass --overwrite to replace "
            f"{'them' if len(existing) > 1 else 'it'}, or choose another --output_dir"
        )
    ok = True
    with jax.enable_x64(True):
        print(f"[1] resolution check, Re={RE:g}, kfx={FKX}, alpha={ALPHA:g}, dt={DT:g}, t=1, scheme {args.scheme}")
        e128, z128, tail128 = energy_enstrophy_at(128, 1.0, args.scheme)
        e256, z256, _ = energy_enstrophy_at(256, 1.0, args.scheme)
        de, dz = abs(e128 - e256) / e256, abs(z128 - z256) / z256
        print(f"    N=128: E={e128:.15e} Z={z128:.15e}  (energy fraction in the last 5 kept shells {tail128:.1e})")
        print(f"    N=256: E={e256:.15e} Z={z256:.15e}")
        print(f"    relative difference: energy {de:.2e}, enstrophy {dz:.2e}  (required <= 1e-9)")
        ok &= de <= 1e-9 and dz <= 1e-9

    print(f"[2] statistically steady state, N=128, random IC, t = 0 … {args.t_end:g}")
    t0 = time.perf_counter()
    try:
        path = run(cfg, args.output_dir, overwrite=args.overwrite, progress=True, argv=sys.argv)
    except BaseException as err:
        return report(PROG, err)
    print(f"    {path} written in {time.perf_counter() - t0:.0f} s")
    t_from = min(30.0, args.t_end / 2)
    with jax.enable_x64(True):
        slope, e_mean = spectral_slope(path, t_from, 8, 32)
    print(
        f"    time-mean E(k) over t in [{t_from:g}, {args.t_end:g}]: slope {slope:.2f} on 8 <= k <= 32 (required < -3)"
    )
    print("    k, E(k): " + ", ".join(f"{k}:{e_mean[k]:.2e}" for k in (1, 2, 4, 8, 16, 32)))
    with open_dataset(path) as f:
        d = f.diagnostics()
    e, t = d["energy"][:, 0], d["time"]
    halves = [
        e[(t >= a) & (t <= b)].mean()
        for a, b in ((t_from, (t_from + args.t_end) / 2), ((t_from + args.t_end) / 2, args.t_end))
    ]
    print(f"    stationarity: mean energy {halves[0]:.4f} (first half) vs {halves[1]:.4f} (second half)")
    _plot_spectrum(e_mean, slope, out / PNG)
    ok &= slope < -3
    print("validation", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    exit_process(main())
