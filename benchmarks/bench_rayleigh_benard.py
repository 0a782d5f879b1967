"""Cost of a Rayleigh–Bénard step and of one simulated (free-fall) time unit.

    python -m benchmarks.bench_rayleigh_benard                         # CPU-sized default
    taskset -c 0 python -m benchmarks.bench_rayleigh_benard            # one CPU core, as the Dedalus figure
    python -m benchmarks.bench_rayleigh_benard --sizes 512x128 --ensembles 1,64   # GPU

For each (nx×nz, precision, ensemble size M) it times a jitted ``fori_loop`` of ``--steps`` RK222 steps on a
convecting state (Ra = --rayleigh, after a short spin-up), best of ``--repeats``, and prints ms per step,
trajectory-steps per second and the CPU/GPU seconds per simulated time unit at time step ``--dt``.
First, per size, it times the host set-up of the per-mode implicit inverses (``rb_core.make_solves``, float64
NumPy/LAPACK: once per run and once per new step count of an adaptive run), for a run's first step size and for
a later one, next to the bordered 2nz × 2nz (ω, ψ) inversion that ``make_solves`` used before it eliminated ψ.
Reference (from the issue, measured on a 2-core machine, one process): Dedalus 3 with RK222 at Ra = 1e6,
256×64 takes about 50 ms per iteration, 3.7 s per free-fall time unit; 15 ms at Ra = 1e5, 128×32.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from solvers.common.cli import (
    OneLineArgumentParser,
    positive_int,
    positive_int_list,
    precision_list,
    scale_list,
)
from solvers.rayleigh_benard import chebyshev as cheb
from solvers.rayleigh_benard import rb_core as rb


def bench_one(nx, nz, precision, m, steps, repeats, rayleigh, dt):
    dtype = jnp.float64 if precision == "float64" else jnp.float32
    model = rb.make_model(nx=nx, nz=nz, lx=4.0, rayleigh=rayleigh, prandtl=1.0, dt=dt, dtype=dtype)
    keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(0), i) for i in range(m)])
    state = jax.vmap(lambda k: rb.perturbed_state(model, k, 0.1))(keys)
    vstep = jax.vmap(model.step)
    run = jax.jit(lambda s: jax.lax.fori_loop(0, steps, lambda _, x: vstep(x), s))
    state = jax.block_until_ready(run(state))  # compile + spin-up
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        state = jax.block_until_ready(run(state))
        best = min(best, time.perf_counter() - t0)
    finite = bool(jnp.all(jnp.isfinite(jnp.abs(state.theta_hat))))
    return best / steps, finite


def bordered_solves(nx: int, nz: int, lx: float, nu: float, a: float) -> np.ndarray:
    """The reference: what ``rb_core.make_solves`` did before it eliminated ψ — per mode the θ inverse and the
    (ω, ψ) problem as one bordered 2nz × 2nz system, inverted whole. Returns the (ω, ψ) inverses (equal to
    make_solves' to round-off)."""
    d1 = cheb.diff_matrix(nz)
    d2, eye = d1 @ d1, np.eye(nz)
    out = np.zeros((nx // 2 + 1, 2 * nz, nz))
    for i, k in enumerate(2.0 * np.pi / lx * np.arange(1, nx // 2 + 1), start=1):
        lap = d2 - k * k * eye
        t = eye - a * nu * lap
        t[[0, -1]] = eye[[0, -1]]
        np.linalg.inv(t)  # θ, as make_solves (κ = ν here)
        big = np.zeros((2 * nz, 2 * nz))
        big[:nz, :nz] = eye - a * nu * lap
        big[[0, nz - 1], :nz] = 0.0
        big[0, nz:], big[nz - 1, nz:] = d1[0], d1[-1]
        big[nz:, :nz], big[nz:, nz:] = -eye, lap
        big[[nz, 2 * nz - 1], :] = 0.0
        big[nz, nz] = big[2 * nz - 1, 2 * nz - 1] = 1.0
        out[i] = np.linalg.inv(big)[:, :nz]
    return out


def time_setup(nx: int, nz: int, rayleigh: float, dt: float) -> tuple[float, float, float, float]:
    """Seconds for make_solves at a run's first step size (nothing cached), at a second one (the ψ-elimination
    cached), and for the bordered reference; plus the largest difference of the (ω, ψ) inverses relative to
    their largest entry."""
    nu = kappa = 1.0 / math.sqrt(rayleigh)
    a = rb.GAMMA * dt
    rb._dirichlet_poisson.cache_clear()
    t0 = time.perf_counter()
    new = rb.make_solves(nx, nz, 4.0, nu, kappa, a).omega_psi
    t1 = time.perf_counter()
    rb.make_solves(nx, nz, 4.0, nu, kappa, 0.8 * a)
    t2 = time.perf_counter()
    ref = bordered_solves(nx, nz, 4.0, nu, a) * np.r_[0.0, np.ones(nz - 2), 0.0][None, None, :]
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, float(np.abs(new - ref).max() / np.abs(ref).max())


def main(argv=None):
    p = OneLineArgumentParser(prog="python -m benchmarks.bench_rayleigh_benard", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=scale_list, default="128x32,256x64", help="comma list of nx x nz")
    p.add_argument("--precisions", type=precision_list, default="float32,float64")
    p.add_argument("--ensembles", type=positive_int_list, default="1,4", help="comma list of ensemble sizes M")
    p.add_argument("--steps", type=positive_int, default=20, help="steps per timed call")
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--rayleigh", type=float, default=1e6)
    p.add_argument("--dt", type=float, default=0.01, help="time step used to convert to time units (default 0.01)")
    args = p.parse_args(argv)
    if any(nx % 2 or nx < 4 or nz < 8 for nx, nz in args.sizes):
        p.error(f"--sizes: nx must be even >= 4 and nz >= 8 (got {','.join(f'{a}x{b}' for a, b in args.sizes)})")
    for name in ("rayleigh", "dt"):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) > 0):
            p.error(f"--{name} must be a finite number > 0 (got {getattr(args, name):g})")
    dev = jax.devices()[0]
    print(
        f"device: {dev.device_kind} ({jax.default_backend()}), jax {jax.__version__}; "
        f"Ra={args.rayleigh:g}, dt={args.dt:g}"
    )
    print("host set-up of the per-mode inverses (float64), seconds:")
    print(f"{'size':>9} {'first dt':>9} {'later dt':>9} {'bordered 2nz':>13} {'speed-up':>9} {'max rel diff':>13}")
    for nx, nz in args.sizes:
        first, later, ref, diff = time_setup(nx, nz, args.rayleigh, args.dt)
        row = f"{f'{nx}x{nz}':>9} {first:>9.3f} {later:>9.3f} {ref:>13.3f} {ref / first:>8.1f}x {diff:>13.1e}"
        print(row, flush=True)
    head = f"{'size':>9} {'prec':<7} {'M':>4} {'ms/step':>9} {'traj-steps/s':>13} {'s per time unit/traj':>21}"
    print(head)
    print("-" * len(head))
    for nx, nz in args.sizes:
        size = f"{nx}x{nz}"
        for precision in args.precisions:
            for m in args.ensembles:
                with jax.enable_x64(precision == "float64"):
                    t, finite = bench_one(nx, nz, precision, m, args.steps, args.repeats, args.rayleigh, args.dt)
                note = "" if finite else "  (non-finite: dt too large for this Ra)"
                print(
                    f"{size:>9} {precision:<7} {m:>4} {t * 1e3:>9.3f} {m / t:>13.1f} {t / m / args.dt:>21.3f}{note}",
                    flush=True,
                )


if __name__ == "__main__":
    raise SystemExit(main())
