"""Validation runs of the Rayleigh–Bénard solver (not unit tests; minutes on a CPU).

    python -m benchmarks.validate_rayleigh_benard --output_dir ./validation_rb [--cases 1e4:64x16:0.05,...]

Each case "Ra:NXxNZ:dt" or "Ra:NXxNZ:dt:aspect" (aspect = box length Lx at height 1, default 4) runs Pr =
--prandtl (default 1) from the seeded conductive-plus-noise state to --t_end (default 300) through the
solver's normal output path, then prints the time-mean Nusselt numbers over t ∈ [--t_avg_from, --t_end] by
the five definitions (bottom and top wall flux, volume flux, thermal and kinetic dissipation) and their
spread, which for a resolved, statistically steady run is within 1–2%.
Reference numbers for the same set-up (Dedalus 3, RK222, CFL safety 0.5, aspect 4, Pr = 1, averaged over
t ∈ [150, 300]; quoted in the issue): Nu ≈ 5.00 ± 0.10 at Ra = 1e5 on 128×32, Nu ≈ 7.63 at Ra = 1e6 on
256×64. Running one Ra on several grids shows the spatial convergence.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from solvers.common import hdf5_utils
from solvers.common.cli import (
    OneLineArgumentParser,
    exit_process,
    nonnegative_float,
    output_dir_problem,
    positive_float,
    report,
)
from solvers.rayleigh_benard.solver import NUSSELT, RBConfig, run

DEFAULT_CASES = "1e4:64x16:0.05,1e5:64x16:0.02,1e5:128x32:0.02,1e5:256x64:0.01,1e6:256x64:0.005"


PROG = "python -m benchmarks.validate_rayleigh_benard"


def parse_case(case: str) -> tuple[str, str, str, str]:
    """``Ra:NXxNZ:dt[:aspect]`` → (ra, size, dt, aspect) as written; one-line ValueError naming the bad part."""
    parts = case.split(":")
    if len(parts) not in (3, 4):
        raise ValueError(f"--cases: {case!r} is not Ra:NXxNZ:dt or Ra:NXxNZ:dt:aspect")
    ra, size, dt = parts[:3]
    aspect = parts[3] if len(parts) == 4 else "4"
    for name, text in (("Ra", ra), ("dt", dt), ("aspect", aspect)):
        try:
            float(text)
        except ValueError:
            raise ValueError(f"--cases: {case!r} has {name} {text!r}, not a number") from None
    dims = size.lower().split("x")
    if len(dims) != 2 or not all(d.strip().isdigit() for d in dims):
        raise ValueError(f"--cases: {case!r} has grid {size!r}, not NXxNZ with integers (e.g. 64x16)")
    return ra, size, dt, aspect


# the RB config's flag names as this script's --cases parts and flags
RENAMES = {
    "--rayleigh": "Ra",
    "--nx": "NX",
    "--nz": "NZ",
    "--dt": "dt",
    "--aspect": "aspect",
    "--t_total": "--t_end",
    "--save_interval=": "the save interval ",
    "--save_interval": "the save interval",
}


def case_config(text: str, case: tuple[str, str, str, str], args) -> RBConfig:
    ra, size, dt, aspect = case
    nx, nz = (int(d) for d in size.lower().split("x"))
    try:
        return RBConfig(
            rayleigh=float(ra),
            prandtl=args.prandtl,
            aspect=float(aspect),
            nx=nx,
            nz=nz,
            dt=float(dt),
            t_total=args.t_end,
            save_interval=1.0,
        )
    except ValueError as err:
        message = str(err)
        for flag, name in RENAMES.items():
            message = re.sub(re.escape(flag) + r"(?![\w])", name, message)
        raise ValueError(f"--cases {text}: {message}") from None


def main(argv=None) -> int:
    p = OneLineArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--output_dir", required=True)
    p.add_argument(
        "--cases",
        default=DEFAULT_CASES,
        help=f"comma list of Ra:NXxNZ:dt or Ra:NXxNZ:dt:aspect (aspect default 4; default {DEFAULT_CASES})",
    )
    p.add_argument("--prandtl", type=positive_float, default=1.0, help="Prandtl number of every case (1)")
    p.add_argument("--t_end", type=positive_float, default=300.0)
    p.add_argument("--t_avg_from", type=nonnegative_float, default=150.0)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    if not args.t_avg_from < args.t_end:
        p.error(f"--t_avg_from must be below --t_end {args.t_end:g} (got {args.t_avg_from:g})")
    if problem := output_dir_problem(args.output_dir):
        p.error(problem)
    out = Path(args.output_dir)
    try:  # every case, before the first one runs
        texts = args.cases.split(",")
        cases = [parse_case(c) for c in texts]
        configs = [case_config(t, c, args) for t, c in zip(texts, cases, strict=True)]
    except ValueError as err:
        p.error(str(err))
    names = [cfg.output_name() for cfg in configs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        p.error(f"--cases lists one run twice (output {twice[0]}); drop the repeat")
    existing = [n for n in names if (out / n).exists()]
    if existing and not args.overwrite:
        p.error(
            f"{out / existing[0]} already exists ({len(existing)} of the {len(names)} outputs do); "
            "pass --overwrite to replace them, or choose another --output_dir"
        )
    rows = []
    for (ra, size, dt, aspect), cfg in zip(cases, configs, strict=True):
        t0 = time.perf_counter()
        try:
            path = run(cfg, args.output_dir, overwrite=args.overwrite, progress=False, log=lambda s: None)
        except BaseException as err:
            return report(PROG, err)
        wall = time.perf_counter() - t0
        with hdf5_utils.open_dataset(path) as f:
            d = f.diagnostics()
        sel = d["time"] >= args.t_avg_from
        means = [float(d[n][sel].mean()) for n in NUSSELT]
        std_vol = float(d["nusselt_volume"][sel].std())
        spread = max(means) / min(means) - 1
        rows.append((ra, aspect, size, dt, *means, spread, std_vol, wall))
        nus = " ".join(f"{n.removeprefix('nusselt_')} {v:.3f}" for n, v in zip(NUSSELT, means, strict=True))
        head = f"Ra={float(ra):g} Lx={aspect} {size:>7} dt={dt:<6}"
        print(f"{head} Nu {nus}  spread {100 * spread:.2f}%  ({wall:.0f} s)", flush=True)
    print(f"\nPr = {args.prandtl:g}; Nu averaged over t in [{args.t_avg_from:g}, {args.t_end:g}]")
    print("\n| Ra | aspect | grid | dt | Nu bottom | Nu top | Nu volume | Nu thermal | Nu kinetic | spread | time |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for ra, aspect, size, dt, *rest in rows:
        nus = " | ".join(f"{x:.5f}" for x in rest[:5])
        print(f"| {float(ra):g} | {aspect} | {size} | {dt} | {nus} | {100 * rest[5]:.2f}% | {rest[7]:.0f} s |")
    return 0 if np.all(np.isfinite([r[4:9] for r in rows])) else 1


if __name__ == "__main__":
    exit_process(main())
