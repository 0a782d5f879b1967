"""Command line for the Rayleigh–Bénard solver (physics and numerics: ``rb_core.py``).

    python -m solvers.rayleigh_benard.run_solver --output_dir ./output --rayleigh 1e6

Boussinesq convection between no-slip walls at z = 0 (b = 1) and z = 1 (b = 0), periodic in x with
length --aspect, in free-fall units; fixed --dt or adaptive dt with --max_dt. The default (Ra = 1e6,
Pr = 1, aspect 4, 256 × 64, dt = 0.01, 50 time units saved every 0.25) takes about a minute on a
2-core CPU. The output file name is derived from the parameters and printed on stdout; the
time-averaged Nusselt numbers are printed at the end.
"""

from __future__ import annotations

from ..common.cli import SOLVER_RUN_OPTIONS, OneLineArgumentParser, add_run_flags, comma_list, exit_process, run_main
from .solver import FIELDS, GRIDS, RBConfig, run

PROG = "python -m solvers.rayleigh_benard.run_solver"


def build_parser() -> OneLineArgumentParser:
    d = RBConfig()
    p = OneLineArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--output_dir", required=True, help="folder for the output .h5 file (created if missing)")
    g = p.add_argument_group("physics")
    g.add_argument("--rayleigh", type=float, default=d.rayleigh, help=f"Rayleigh number Ra (default {d.rayleigh:g})")
    g.add_argument("--prandtl", type=float, default=d.prandtl, help=f"Prandtl number Pr (default {d.prandtl:g})")
    g.add_argument("--aspect", type=float, default=d.aspect, help=f"box length Lx, height 1 (default {d.aspect:g})")
    g = p.add_argument_group("resolution and time")
    g.add_argument("--nx", type=int, default=d.nx, help=f"Fourier points in x, even (default {d.nx})")
    g.add_argument("--nz", type=int, default=d.nz, help=f"Chebyshev points in z, >= 8 (default {d.nz})")
    g.add_argument(
        "--dt",
        type=float,
        default=d.dt,
        help=f"time step, the initial one with --max_dt; the run stops if CFL > 1 (default {d.dt:g})",
    )
    g.add_argument(
        "--max_dt",
        type=float,
        default=d.max_dt,
        help="adaptive dt: after each frame dt = cfl_safety x the CFL-limited step, at most max_dt, "
        "starting from --dt (default 0: fixed --dt)",
    )
    g.add_argument(
        "--cfl_safety",
        type=float,
        default=d.cfl_safety,
        help=f"target CFL number of the adaptive dt, in (0, 1) (default {d.cfl_safety:g})",
    )
    g = p.add_argument_group("initial condition")
    g.add_argument(
        "--seed", type=int, default=d.seed, help="random seed; trajectory m uses fold_in(PRNGKey(seed), m) (default 0)"
    )
    g.add_argument(
        "--ic_amplitude",
        type=float,
        default=d.ic_amplitude,
        help=f"amplitude of the buoyancy noise on the conductive profile (default {d.ic_amplitude:g})",
    )
    g.add_argument(
        "--ic_file",
        default=None,
        help="start from the latest saved state of a Gust Rayleigh–Bénard file (same nx, nz; its first M trajectories)",
    )
    g = p.add_argument_group("output")
    g.add_argument(
        "--fields",
        type=comma_list,
        default=d.fields,
        help=f"comma list of fields to save, from {', '.join(FIELDS)} (default buoyancy)",
    )
    g.add_argument(
        "--grid",
        choices=GRIDS,
        default=d.grid,
        help="uniform: fields interpolated spectrally onto nz uniform z points (walls included); "
        "native: the Chebyshev points (default uniform)",
    )
    add_run_flags(p, d)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, build_parser(), RBConfig, run, argv, SOLVER_RUN_OPTIONS)


if __name__ == "__main__":
    exit_process(main())
