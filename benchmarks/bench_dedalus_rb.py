"""Gust's Rayleigh–Bénard solver and Dedalus 3 side by side, in one process, on the same core.

    OMP_NUM_THREADS=1 taskset -c 0 python -m benchmarks.bench_dedalus_rb --sizes 256x64,512x128
    OMP_NUM_THREADS=1 taskset -c 0 python -m benchmarks.bench_dedalus_rb --mode run --sizes 128x32 \
        --rayleigh 1e5 --t_end 300

Dedalus is not a Gust dependency: install it beside Gust to run this (README, "Rayleigh–Bénard against
Dedalus"). Both codes solve the same problem: Boussinesq convection in free-fall units, Pr = --prandtl, box
Lx = --aspect by 1, no-slip walls with b = 1 below and 0 above, Fourier × Chebyshev with 3/2 dealiasing, RK222
(ARS 2,2,2) in both, float64.

``--mode speed`` (default): for each size, seconds per RK222 iteration at a fixed dt on a developing convective
state: Dedalus (best of --repeats blocks of --steps iterations), then Gust float64 and float32 (the same timing
as ``benchmarks.bench_rayleigh_benard``), and the ratio Dedalus / Gust per step. The same dt in both, so the ratio
per step is also the ratio per simulated time unit.

``--mode run``: one full Dedalus run from the conductive state plus seeded noise (plus, with --roll, one roll
pair per box) to --t_end with its CFL-adaptive dt (safety --cfl_safety, at most --max_dt), the Nusselt numbers
(bottom and top wall flux, 1 + ⟨wb⟩/κ, thermal and kinetic dissipation) averaged over t ≥ --t_avg_from, and
the CPU seconds per simulated time unit; compare with ``benchmarks.validate_rayleigh_benard`` and a Gust run
with ``--max_dt``.

The Dedalus problem below is written here from the equations, in Dedalus 3's documented first-order tau form
(one tau term per wall condition, lifted onto the first derivative basis); it is not Dedalus' example script.
"""

from __future__ import annotations

import time

import numpy as np

from solvers.common.cli import (
    EXIT_RUN_FAILED,
    OneLineArgumentParser,
    fail,
    finite_float,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    scale_list,
)

PROG = "python -m benchmarks.bench_dedalus_rb"


def _dedalus():
    try:
        import dedalus.public as d3
    except ImportError:
        raise SystemExit(
            fail(PROG, "Dedalus 3 is not installed; see the README ('Rayleigh–Bénard against Dedalus') for the install")
        ) from None
    return d3


def dedalus_solver(nx, nz, rayleigh, prandtl, aspect, seed, amplitude, roll=0.0):
    """Dedalus 3 initial-value problem for the same convection set-up as Gust, and its RK222 solver; the initial
    buoyancy is conductive plus seeded noise, plus ``roll`` × sin(πz) cos(2πx/Lx) (one roll pair per box)."""
    d3 = _dedalus()
    coords = d3.CartesianCoordinates("x", "z")
    dist = d3.Distributor(coords, dtype=np.float64)
    xbasis = d3.RealFourier(coords["x"], size=nx, bounds=(0.0, aspect), dealias=1.5)
    zbasis = d3.ChebyshevT(coords["z"], size=nz, bounds=(0.0, 1.0), dealias=1.5)
    bases = (xbasis, zbasis)
    p = dist.Field(name="p", bases=bases)
    b = dist.Field(name="b", bases=bases)
    u = dist.VectorField(coords, name="u", bases=bases)
    tau_p = dist.Field(name="tau_p")
    tau_b = [dist.Field(name=f"tau_b{i}", bases=xbasis) for i in (1, 2)]
    tau_u = [dist.VectorField(coords, name=f"tau_u{i}", bases=xbasis) for i in (1, 2)]
    nu = (prandtl / rayleigh) ** 0.5
    kappa = (rayleigh * prandtl) ** -0.5
    _, ez = coords.unit_vector_fields(dist)
    lift_basis = zbasis.derivative_basis(1)

    def lift(field):
        return d3.Lift(field, lift_basis, -1)

    # First-order reduction: the gradients carry the first tau term, the equations the second.
    grad_u = d3.grad(u) + ez * lift(tau_u[0])
    grad_b = d3.grad(b) + ez * lift(tau_b[0])
    names = {
        "p": p,
        "b": b,
        "u": u,
        "tau_p": tau_p,
        "tau_b1": tau_b[0],
        "tau_b2": tau_b[1],
        "tau_u1": tau_u[0],
        "tau_u2": tau_u[1],
        "grad_u": grad_u,
        "grad_b": grad_b,
        "lift": lift,
        "ez": ez,
        "nu": nu,
        "kappa": kappa,
    }
    problem = d3.IVP([p, b, u, tau_p, *tau_b, *tau_u], namespace=names)
    problem.add_equation("trace(grad_u) + tau_p = 0")
    problem.add_equation("dt(b) - kappa*div(grad_b) + lift(tau_b2) = - u@grad(b)")
    problem.add_equation("dt(u) - nu*div(grad_u) + grad(p) - b*ez + lift(tau_u2) = - u@grad(u)")
    problem.add_equation("b(z=0) = 1")
    problem.add_equation("b(z=1) = 0")
    problem.add_equation("u(z=0) = 0")
    problem.add_equation("u(z=1) = 0")
    problem.add_equation("integ(p) = 0")
    solver = problem.build_solver(d3.RK222)

    x, z = dist.local_grids(xbasis, zbasis)
    b.fill_random("g", seed=seed, distribution="normal", scale=amplitude)
    b["g"] *= 4.0 * z * (1.0 - z)  # noise damped at the walls, as Gust's --ic_amplitude
    b["g"] += 1.0 - z + roll * np.sin(np.pi * z) * np.cos(2 * np.pi * x / aspect)
    diag = {"u": u, "b": b, "nu": nu, "kappa": kappa, "d3": d3, "aspect": aspect}
    return solver, diag


def dedalus_nusselt(diag):
    """Gust's five Nusselt numbers (README, Rayleigh–Bénard diagnostics) from Dedalus' current fields."""
    d3, u, b = diag["d3"], diag["u"], diag["b"]
    coords = u.tensorsig[0]
    ex, ez = coords.unit_vector_fields(u.dist)

    def dx(f):
        return d3.Differentiate(f, coords["x"])

    def dz(f):
        return d3.Differentiate(f, coords["z"])

    def mean(expr):  # over the Lx × 1 box
        return float(np.ravel(d3.Integrate(expr).evaluate()["g"])[0]) / diag["aspect"]

    def wall_mean(expr, z):
        return (
            float(np.ravel(d3.Integrate(d3.Interpolate(expr, coords["z"], z), coords["x"]).evaluate()["g"])[0])
            / (diag["aspect"])
        )

    ux, w = u @ ex, u @ ez
    kappa, nu = diag["kappa"], diag["nu"]
    return {
        "bottom": -wall_mean(dz(b), 0.0),
        "top": -wall_mean(dz(b), 1.0),
        "volume": 1.0 + mean(w * b) / kappa,
        "thermal": mean(dx(b) ** 2 + dz(b) ** 2),
        "kinetic": 1.0 + nu * mean(dx(ux) ** 2 + dz(ux) ** 2 + dx(w) ** 2 + dz(w) ** 2) / kappa,
    }


def time_dedalus(nx, nz, rayleigh, dt, steps, repeats, aspect=4.0):
    solver, _ = dedalus_solver(nx, nz, rayleigh, 1.0, aspect, seed=0, amplitude=0.1)
    for _ in range(steps):  # warm-up: builds and factorises the matrices, plans the transforms
        solver.step(dt)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            solver.step(dt)
        best = min(best, time.perf_counter() - t0)
    return best / steps


def run_dedalus(nx, nz, rayleigh, prandtl, aspect, t_end, t_avg_from, max_dt, cfl_safety, sample_every, seed, roll):
    """One Dedalus run with its CFL-adaptive dt: time-averaged Nusselt numbers and CPU-s per time unit."""
    d3 = _dedalus()
    solver, diag = dedalus_solver(nx, nz, rayleigh, prandtl, aspect, seed=seed, amplitude=1e-3, roll=roll)
    cfl = d3.CFL(
        solver, initial_dt=max_dt, cadence=10, safety=cfl_safety, threshold=0.05, max_change=1.5, min_change=0.5
    )
    cfl.add_velocity(diag["u"])
    cfl.max_dt = max_dt
    solver.stop_sim_time = t_end
    samples, next_sample = [], t_avg_from
    cpu0 = time.process_time()
    while solver.proceed:
        solver.step(cfl.compute_timestep())
        if solver.sim_time >= next_sample:
            samples.append(dedalus_nusselt(diag))
            next_sample += sample_every
        if not np.isfinite(np.max(np.abs(diag["b"]["c"]))):
            raise SystemExit(fail(PROG, f"the Dedalus run blew up at t = {solver.sim_time:.3f}", EXIT_RUN_FAILED))
    cpu = time.process_time() - cpu0
    means = {k: float(np.mean([s[k] for s in samples])) for k in samples[0]}
    return means, cpu / t_end, solver.iteration


def main(argv=None) -> int:
    p = OneLineArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("speed", "run"), default="speed")
    p.add_argument("--sizes", type=scale_list, default="256x64", help="comma list of nx x nz (256x64)")
    p.add_argument("--rayleigh", type=positive_float, default=1e6)
    p.add_argument("--prandtl", type=positive_float, default=1.0)
    p.add_argument("--aspect", type=positive_float, default=4.0)
    p.add_argument("--dt", type=positive_float, default=0.005, help="speed mode: fixed time step of both codes (0.005)")
    p.add_argument("--steps", type=positive_int, default=50, help="speed mode: steps per timed block (50)")
    p.add_argument("--repeats", type=positive_int, default=3, help="speed mode: timed blocks, best kept (3)")
    p.add_argument("--t_end", type=positive_float, default=300.0, help="run mode: simulated time (300)")
    p.add_argument(
        "--t_avg_from", type=nonnegative_float, default=150.0, help="run mode: averages over t >= this (150)"
    )
    p.add_argument("--max_dt", type=positive_float, default=0.125, help="run mode: largest time step (0.125)")
    p.add_argument("--cfl_safety", type=positive_float, default=0.5, help="run mode: Dedalus CFL safety factor (0.5)")
    p.add_argument("--sample_every", type=positive_float, default=0.25, help="run mode: time between Nu samples (0.25)")
    p.add_argument("--roll", type=finite_float, default=0.0, help="run mode: amplitude of a one-roll-pair seed (0)")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    args = p.parse_args(argv)
    if not args.t_avg_from < args.t_end:
        p.error(f"--t_avg_from must lie in [0, --t_end {args.t_end:g}) (got {args.t_avg_from:g})")
    for nx, nz in args.sizes:  # the grids both codes accept: Gust's RBConfig rule (even nx >= 4, nz >= 8)
        if nx < 4 or nx % 2 or nz < 8:
            p.error(f"--sizes: nx must be even >= 4 and nz >= 8 (got {nx}x{nz})")
    _dedalus()  # a clear error if Dedalus is missing
    import dedalus
    import jax

    print(
        f"Dedalus {dedalus.__version__} (float64) vs Gust on jax {jax.__version__} ({jax.default_backend()}); "
        f"Ra={args.rayleigh:g}, Pr={args.prandtl:g}, aspect {args.aspect:g}"
    )
    if args.mode == "run":
        for nx, nz in args.sizes:
            means, cpu_per_unit, iterations = run_dedalus(
                nx, nz, args.rayleigh, args.prandtl, args.aspect, args.t_end, args.t_avg_from,
                args.max_dt, args.cfl_safety, args.sample_every, args.seed, args.roll,
            )  # fmt: skip
            spread = (max(means.values()) - min(means.values())) / np.mean(list(means.values()))
            nus = " ".join(f"{k} {v:.4f}" for k, v in means.items())
            print(
                f"{nx}x{nz}: Nu over t in [{args.t_avg_from:g}, {args.t_end:g}]: {nus} (spread {spread:.2%}); "
                f"{iterations} iterations, {cpu_per_unit:.2f} CPU-s per time unit",
                flush=True,
            )
        return 0

    from benchmarks.bench_rayleigh_benard import bench_one

    head = f"{'size':>9} {'Dedalus ms/step':>16} {'Gust f64':>9} {'Gust f32':>9} {'ratio f64':>10} {'ratio f32':>10}"
    print(f"fixed dt = {args.dt:g}, best of {args.repeats} × {args.steps} steps; ratio = Dedalus / Gust per step")
    print(head)
    print("-" * len(head))
    for nx, nz in args.sizes:
        ded = time_dedalus(nx, nz, args.rayleigh, args.dt, args.steps, args.repeats, args.aspect)
        gust = {}
        for precision in ("float64", "float32"):
            with jax.enable_x64(precision == "float64"):
                gust[precision], finite = bench_one(
                    nx, nz, precision, 1, args.steps, args.repeats, args.rayleigh, args.dt
                )
            if not finite:
                msg = f"Gust's {precision} run at {nx}x{nz} went non-finite; lower --dt"
                return fail(PROG, msg, EXIT_RUN_FAILED)
        print(
            f"{nx}x{nz:<5} {ded * 1e3:>16.2f} {gust['float64'] * 1e3:>9.2f} {gust['float32'] * 1e3:>9.2f} "
            f"{ded / gust['float64']:>10.1f} {ded / gust['float32']:>10.1f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
