"""Per-step cost of the 2D turbulence solver next to the cost of the FFTs that step needs.

    python -m benchmarks.bench_py2d                       # CPU-sized default
    python -m benchmarks.bench_py2d --sizes 128,256,512,1024 --ensembles 1,64 --steps 200   # GPU

For each (scheme, N, precision, ensemble size M) it times, in the same process and the same way
(jitted ``fori_loop`` of n steps, compiled first, best of ``--repeats``):

- ``step``: the scheme's full step, vmapped over M trajectories;
- ``fft``:  only the FFTs one step performs — per explicit-term evaluation one batched inverse rfft2
  of (M, 2, N, N/2+1) (u, v) and one batched forward rfft2 of (M, 2, N, N) (uv, v²−u²) — chained
  so that XLA cannot drop them.

``ratio = step / fft`` is the overhead of everything that is not an FFT (goal on CPU: ≤ 1.5).
Absolute numbers mean something only on a GPU; the ratio is the portable figure.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from solvers.common.cli import (
    OneLineArgumentParser,
    comma_list,
    int_list,
    positive_int,
    positive_int_list,
    precision_list,
)
from solvers.py2d_turbulence import initial_conditions as ic
from solvers.py2d_turbulence import py2d_core as core
from solvers.py2d_turbulence.schemes import SCHEMES

EVALS_PER_STEP = {"ab2cn": 1, "rk3cn": 3, "etdrk4": 4}


def _time_pair(fn_a, arg_a, fn_b, arg_b, repeats):
    """Best-of-``repeats`` wall time of two jitted calls, measured alternately so drift hits both alike."""
    jax.block_until_ready(fn_a(arg_a))  # compile + warm up
    jax.block_until_ready(fn_b(arg_b))
    best_a = best_b = np.inf
    for _ in range(repeats):
        for fn, arg, which in ((fn_a, arg_a, "a"), (fn_b, arg_b, "b")):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(arg))
            dt = time.perf_counter() - t0
            if which == "a":
                best_a = min(best_a, dt)
            else:
                best_b = min(best_b, dt)
    return best_a, best_b


def bench_one(scheme_name, n, precision, m, steps, repeats):
    dtype = jnp.float64 if precision == "float64" else jnp.float32
    grid = core.SpectralGrid(n, dtype=dtype)
    eq = core.Py2DEquation(grid, re=1000.0, alpha=0.1, fkx=4)
    scheme = SCHEMES[scheme_name]
    step = scheme.make_step(eq, 1e-4)
    w0 = np.stack([ic.random_field(n, 0, i, 10.0) for i in range(m)]).astype(dtype)
    state = jax.vmap(lambda w: scheme.init_state(eq, core.to_spectral(w)))(jnp.asarray(w0))

    vstep = jax.vmap(step)
    run_steps = jax.jit(lambda s: jax.lax.fori_loop(0, steps, lambda _, x: vstep(x), s))

    evals = EVALS_PER_STEP[scheme_name]
    uv_hat = jnp.stack([state.omega_hat, state.omega_hat], axis=-3)

    def ffts(x):
        for _ in range(evals):
            phys = core.to_physical(x, n)
            x = core.to_spectral(phys * phys[..., ::-1, :, :]) * 1e-3
        return x

    run_ffts = jax.jit(lambda x: jax.lax.fori_loop(0, steps, lambda _, y: ffts(y), x))
    t_step, t_fft = _time_pair(run_steps, state, run_ffts, uv_hat, repeats)
    return t_step / steps, t_fft / steps


def main(argv=None):
    p = OneLineArgumentParser(prog="python -m benchmarks.bench_py2d", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--schemes", type=comma_list, default="ab2cn,rk3cn,etdrk4", help="comma list from " + ",".join(SCHEMES)
    )
    p.add_argument("--sizes", type=int_list, default="128,256,512", help="comma list of N (even, >= 8)")
    p.add_argument("--precisions", type=precision_list, default="float32,float64")
    p.add_argument("--ensembles", type=positive_int_list, default="1,8", help="comma list of ensemble sizes M")
    p.add_argument("--steps", type=positive_int, default=50, help="steps per timed call")
    p.add_argument("--repeats", type=positive_int, default=5)
    args = p.parse_args(argv)
    for name in args.schemes:
        if name not in SCHEMES:
            p.error(f"--schemes: unknown scheme {name!r}; allowed: {', '.join(SCHEMES)}")
    if not args.sizes or any(n < 8 or n % 2 for n in args.sizes):
        p.error(f"--sizes must be even integers >= 8 (got {','.join(map(str, args.sizes))})")
    dev = jax.devices()[0]
    print(f"device: {dev.device_kind} ({jax.default_backend()}), jax {jax.__version__}, {len(jax.devices())} device(s)")
    head = (
        f"{'scheme':<7} {'N':>5} {'prec':<7} {'M':>4} {'step ms':>9} {'fft ms':>9} {'ratio':>6} "
        f"{'steps/s':>9} {'traj-steps/s':>13}"
    )
    print(head)
    print("-" * len(head))
    for scheme_name in args.schemes:
        for n in args.sizes:
            for precision in args.precisions:
                for m in args.ensembles:
                    with jax.enable_x64(precision == "float64"):
                        t_step, t_fft = bench_one(scheme_name, n, precision, m, args.steps, args.repeats)
                    print(
                        f"{scheme_name:<7} {n:>5} {precision:<7} {m:>4} {t_step * 1e3:>9.3f} {t_fft * 1e3:>9.3f} "
                        f"{t_step / t_fft:>6.2f} {1 / t_step:>9.1f} {m / t_step:>13.1f}",
                        flush=True,
                    )


if __name__ == "__main__":
    raise SystemExit(main())
