"""Command line for the 2D turbulence solver (see ``solver.py`` for the physics and the file layout).

    python -m solvers.py2d_turbulence.run_solver --output_dir ./output --Re 1000 --NX 128

The default (N = 128, Re = 1000, Kolmogorov forcing k_fx = 4, drag α = 0.1, dt = 5e-4, 20 time units
saved every 0.1, float64) takes well under a minute on a 2-core CPU. The output file name is derived from
the parameters and printed on stdout.
"""

from __future__ import annotations

from ..common.cli import SOLVER_RUN_OPTIONS, OneLineArgumentParser, add_run_flags, comma_list, exit_process, run_main
from . import les
from .schemes import SCHEMES
from .solver import FIELDS, IC_KINDS, Py2DConfig, run

PROG = "python -m solvers.py2d_turbulence.run_solver"


def build_parser() -> OneLineArgumentParser:
    d = Py2DConfig()
    p = OneLineArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--output_dir", required=True, help="folder for the output .h5 file (created if missing)")
    g = p.add_argument_group("physics")
    g.add_argument("--Re", type=float, default=d.Re, help=f"Reynolds number Re = 1/ν (default {d.Re:g})")
    g.add_argument("--NX", type=int, default=d.NX, help=f"grid points per side N, even, >= 8 (default {d.NX})")
    g.add_argument(
        "--fkx", type=int, default=d.fkx, help=f"forcing wavenumber k_fx in f = k_fx cos(k_fx x) (default {d.fkx})"
    )
    g.add_argument(
        "--fky", type=int, default=d.fky, help=f"forcing wavenumber k_fy in f = k_fy cos(k_fy y) (default {d.fky})"
    )
    g.add_argument("--alpha", type=float, default=d.alpha, help=f"linear drag α (default {d.alpha:g})")
    g.add_argument("--beta", type=float, default=d.beta, help=f"β-plane coefficient, term +βv (default {d.beta:g})")
    g = p.add_argument_group("time")
    g.add_argument("--dt", type=float, default=d.dt, help=f"time step (default {d.dt:g})")
    g.add_argument(
        "--scheme",
        choices=list(SCHEMES),
        default=d.scheme,
        help=f"time integrator (default {d.scheme}): " + "; ".join(f"{k}: {s.citation}" for k, s in SCHEMES.items()),
    )
    g = p.add_argument_group("initial condition")
    g.add_argument(
        "--ic",
        choices=IC_KINDS,
        default=d.ic,
        help="random: seeded field with E(k) ∝ k⁴exp(−(k/k_p)²); taylor_green: ω = 2 sin x sin y (default random)",
    )
    g.add_argument(
        "--ic_kpeak",
        type=float,
        default=d.ic_kpeak,
        help=f"peak wavenumber k_p of the random IC (default {d.ic_kpeak:g})",
    )
    g.add_argument(
        "--ic_file", default=None, help="initial ω from a .npy (NX, NX) array laid out (y, x) or a Gust .h5 file"
    )
    g.add_argument(
        "--ic_sample",
        type=int,
        default=d.ic_sample,
        help="sample index of the omega field in a Gust --ic_file (default 0)",
    )
    g.add_argument(
        "--seed", type=int, default=d.seed, help="random seed; trajectory m uses fold_in(PRNGKey(seed), m) (default 0)"
    )
    g = p.add_argument_group("large-eddy simulation (see solvers/py2d_turbulence/les.py)")
    g.add_argument(
        "--sgs",
        choices=les.SGS_MODELS,
        default=d.sgs,
        help="SGS closure of an LES on this grid, Δ = 2·2π/NX (default none): smag/leith (coefficient --cs), "
        "dsmag/dleith (dynamic, Germano identity, sharp test filter |K| < NX/4), gm2/gm4/gm6 (gradient models)",
    )
    g.add_argument(
        "--cs",
        type=float,
        default=None,
        help=f"C_s of smag / C_l of leith: ν_e = (C_sΔ)²⟨|S|²⟩^½, (C_lΔ)³⟨|∇ω|⟩ (default {d.cs:g}, Lilly 1967; "
        "only with those two)",
    )
    g.add_argument(
        "--coarse_grain_to",
        type=int,
        default=d.coarse_grain_to,
        help="N_LES: store filtered fields and SGS terms (pi_omega always) coarse-grained to N_LES×N_LES "
        "instead of the DNS fields; even, in [8, NX) (default 0 = off)",
    )
    g.add_argument(
        "--filter",
        choices=les.FILTERS,
        default=None,
        help="filter of --coarse_grain_to, width Δ = 2·2π/N_LES: gaussian exp(−K²Δ²/24), box sinc(kxΔ/2)sinc(kyΔ/2), "
        "spectral |K| < π/Δ (default gaussian)",
    )
    g = p.add_argument_group("output")
    g.add_argument(
        "--fields",
        type=comma_list,
        default=d.fields,
        help=f"comma list of fields to save, from {', '.join(FIELDS)} (default omega); with --coarse_grain_to "
        f"also {', '.join(les.SGS_FIELDS)}",
    )
    add_run_flags(p, d)
    return p


def les_flags_apply(args) -> str | None:
    """A coefficient or filter that the other flags leave unused is an error, not silently ignored."""
    if args.cs is not None and args.sgs not in ("smag", "leith"):
        return f"--cs sets the coefficient of --sgs smag or leith; --sgs {args.sgs} does not use it"
    if args.filter is not None and not args.coarse_grain_to:
        return "--filter is the filter of --coarse_grain_to, which is off (0); give both or neither"
    return None


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, build_parser(), Py2DConfig, run, argv, SOLVER_RUN_OPTIONS, check=les_flags_apply)


if __name__ == "__main__":
    exit_process(main())
