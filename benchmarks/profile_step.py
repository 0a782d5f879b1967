"""Where a step goes: JAX profiler traces of the solvers' and the VQ-VAE's production runs, summed by kernel kind.

    python -m benchmarks.profile_step --output_dir ./profile [--workloads py2d,rb,vqvae] [--py2d_n 1024]
        [--rb_grid 512x128] [--vq_size 128] [--vq_batch 32] [--frames 8] [--vq_steps 40] [--precision float32]
        [--state_seconds 60] [--vq_compute_dtype float32] [--overwrite]

For each workload it runs the real entry point four times (the persistent compilation cache,
``JAX_COMPILATION_CACHE_DIR`` or else a temporary one, spares the later calls the XLA compilation): once to compile,
twice outside the profiler (``--frames`` and three times as many frames, or ``--vq_steps`` and three times as many
steps: their difference is the marginal cost per step in production, without the runs' fixed costs), then traced:

- ``py2d``: ``solvers.py2d_turbulence.solver.run`` at ``--py2d_n``², ab2cn, frames of 100 steps;
- ``rb``: ``solvers.rayleigh_benard.solver.run`` at ``--rb_grid``, Ra = 1e8, fixed dt, frames of 100 steps, four
  fields saved (as The Well's set);
- ``vqvae``: ``models.train_vqvae.train`` on a ``--vq_size``² ω file written by the py2d solver (units of one step),
  with the model of ``run_all.sh``'s ``vqvae_py2d`` stage (ch 32, ch_mult 1,2,2, D = 4, V = 256, the prefix loss on
  every 4th sample) and the encoder's and decoder's arithmetic in ``--vq_compute_dtype`` (bfloat16: mixed precision,
  as that stage trains).

The last call is traced with ``jax.profiler.trace`` (Perfetto JSON; device and runtime events, the Python tracer off
as it slows the host work being measured). The step program is the XLA module with the
most device events (the solver's chunk, the training step); its span in the trace is the production loop, whose
time per step is set next to the bare step loop (as ``bench_py2d`` / ``bench_rayleigh_benard`` time it: a jitted
``fori_loop`` of the step, no output), so the table shows what the production path adds (HDF5 writes, device→host
copies of the frames, diagnostics, Python between calls). The step program's device events (kernels and copies on
the accelerator; on a CPU the XLA thunks) are summed into kinds by name: FFT, matmul/conv (cuBLAS/cuDNN/CUTLASS/
Triton GEMMs, ``dot``/``convolution``), copy/transpose, memcpy (host↔device and device↔device), fused
elementwise/reduction, other. The union of all device events inside the loop over its length is the busy fraction;
the rest is time the device waited for the host (launch gaps, Python, I/O). Figures go to stdout and
``--output_dir/profile.json`` with the 15 costliest kernels of each workload; the traces stay in
``--output_dir/<workload>/``; a folder holding a previous profile is refused unless ``--overwrite`` (which replaces
that profile, traces included). Every workload's settings are checked before the first trace. ``--state_seconds``
is the solvers' flag (default 60: the full state goes with the first and last frames only in these short runs; 0
saves it with every frame, as the solvers did before the flag).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gzip
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from models.models import COMPUTE_DTYPES
from solvers.common.cli import (
    DEFAULT_STATE_SECONDS,
    OneLineArgumentParser,
    choice_list,
    fail,
    nonnegative_float,
    os_error_text,
    output_dir_problem,
    positive_int,
    scale_list,
)

KINDS = ("fft", "matmul/conv", "copy/transpose", "memcpy", "elementwise/reduce", "other")


def kind_of(name: str) -> str:
    """The kind of a device event from its (kernel or HLO op) name."""
    n = name.lower()
    if "memcpy" in n or "memset" in n:
        return "memcpy"
    if "fft" in n:
        return "fft"
    if any(s in n for s in ("gemm", "cublas", "cutlass", "xmma", "matmul", "dot", "conv", "cudnn", "wgmma", "mma")):
        return "matmul/conv"
    if "transpose" in n or n.startswith("copy") or "_copy" in n:
        return "copy/transpose"
    if any(s in n for s in ("fusion", "reduce", "loop_", "input_", "scatter", "gather", "concatenate", "slice")):
        return "elementwise/reduce"
    return "other"


def _device_events(trace_dir: Path) -> tuple[list[dict], str]:
    """Complete ('X') events of the accelerator's processes (on a CPU-only run: the XLA client thread)."""
    path = next(trace_dir.rglob("perfetto_trace.json.gz"))
    data = json.load(gzip.open(path))
    events = data["traceEvents"] if isinstance(data, dict) else data
    pname = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    tname = {
        (e["pid"], e.get("tid")): e["args"]["name"]
        for e in events
        if e.get("ph") == "M" and e.get("name") == "thread_name"
    }
    gpu_pids = {p for p, n in pname.items() if "/device:" in n and "CPU" not in n}
    if gpu_pids:
        dev = [e for e in events if e.get("ph") == "X" and e["pid"] in gpu_pids]
        return dev, "accelerator"
    # CPU backend: the XLA thunks run on the PjRt client's threads; skip the profiler's own bookkeeping events and
    # the control-flow thunks that contain other events
    cpu = [
        e
        for e in events
        if e.get("ph") == "X"
        and "XLA" in tname.get((e["pid"], e.get("tid")), "")
        and not e["name"].startswith(("ThreadpoolListener", "end: ", "ThunkExecutor", "while", "conditional", "call"))
    ]
    return cpu, "cpu"


def _union(intervals: list[tuple[float, float]]) -> float:
    """Total length of the union of (start, end) intervals (kernels on several streams may overlap)."""
    total, end = 0.0, -np.inf
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def summarize(trace_dir: Path, wall_s: float, steps: int) -> dict:
    """Per-kind device time of the step program, busy fraction of its loop, and the costliest kernels.

    The step program is the XLA module with the most device events (the solver's chunk or the training step); the
    kinds are summed over its events only, so set-up work (building matrices, first transfers, waits before the
    loop) does not blur the per-step split. The loop is the span from its first to its last event; ``busy`` is the
    union of all device events inside it.
    """
    events, source = _device_events(trace_dir)
    module = collections.Counter((e.get("args") or {}).get("hlo_module", "") for e in events)
    step_module = module.most_common(1)[0][0] if module else ""
    ours = [e for e in events if (e.get("args") or {}).get("hlo_module", "") == step_module]
    per_kind, per_name, count = collections.Counter(), collections.Counter(), collections.Counter()
    for e in ours:
        dur = float(e.get("dur", 0.0)) * 1e-6  # µs → s
        per_kind[kind_of(f"{e['name']} {(e.get('args') or {}).get('hlo_op', '')}")] += dur
        per_name[e["name"]] += dur
        count[e["name"]] += 1
    span = (0.0, 0.0)
    if ours:
        span = (min(float(e["ts"]) for e in ours), max(float(e["ts"]) + float(e.get("dur", 0.0)) for e in ours))
    inside = [
        (max(float(e["ts"]), span[0]), min(float(e["ts"]) + float(e.get("dur", 0.0)), span[1]))
        for e in events
        if float(e["ts"]) < span[1] and float(e["ts"]) + float(e.get("dur", 0.0)) > span[0]
    ]
    loop_s = (span[1] - span[0]) * 1e-6
    busy = _union(inside) * 1e-6
    total = sum(per_kind.values()) or 1.0
    return {
        "source": source,
        "step_module": step_module,
        "wall_s": wall_s,
        "steps": steps,
        "loop_ms_per_step": 1e3 * loop_s / steps,
        "busy_fraction_loop": busy / loop_s if loop_s else 0.0,
        "other_modules_ms": 1e3 * sum(float(e.get("dur", 0.0)) * 1e-6 for e in events if e not in ours),
        "events_per_step": len(ours) / steps,
        "kind_share": {k: per_kind[k] / total for k in KINDS},
        "kind_ms_per_step": {k: 1e3 * per_kind[k] / steps for k in KINDS},
        "top": [
            {"name": n[:120], "kind": kind_of(n), "ms_total": 1e3 * t, "count": count[n]}
            for n, t in per_name.most_common(15)
        ],
    }


def trace_options() -> jax.profiler.ProfileOptions:
    """Device and runtime events only. JAX's default also runs the Python tracer, which records every Python call and
    return: it slows the host side of the loop being measured (on this repository's CPU it added 40–60% to the
    host work of a 256² py2d frame: HDF5 writes, checks, commit) and :func:`summarize` uses none of its events."""
    options = jax.profiler.ProfileOptions()
    options.python_tracer_level = 0
    return options


def _timed(run) -> float:
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def profile(make_run, units: int, steps_per_unit: int, trace_dir: Path) -> dict:
    """Trace a production run of ``units`` units (frames or training steps) of ``steps_per_unit`` steps each.

    ``make_run(u)`` returns a callable that runs ``u`` units. A first call compiles (and fills the persistent
    compilation cache); then runs of ``units`` and ``3 units`` are timed without the profiler, whose difference is
    the marginal cost of a unit in production, free of each run's fixed costs (set-up, compilation-cache loads, the
    first frame, closing the file) and of any profiler overhead (``untraced_ms_per_step``; one pair of runs, so where
    the fixed costs vary by more than 2 units of work it is noise); the last call is traced.
    """
    make_run(units)()
    marginal = untraced_ms_per_step(make_run, units, steps_per_unit)
    if trace_dir.exists():
        shutil.rmtree(trace_dir)
    with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True, profiler_options=trace_options()):
        wall = _timed(make_run(units))
    return summarize(trace_dir, wall, units * steps_per_unit) | {"untraced_ms_per_step": marginal}


def untraced_ms_per_step(make_run, units: int, steps_per_unit: int) -> float:
    """The marginal ms per step of runs of ``units`` and ``3 units`` (see :func:`profile`)."""
    short, long = _timed(make_run(units)), _timed(make_run(3 * units))
    return 1e3 * (long - short) / (2 * units * steps_per_unit)


@contextlib.contextmanager
def copies_at_gather():
    """The driver as it was before it queued each chunk's device→host output copies at dispatch
    (``driver._dispatch``): the copies start when the host gathers the frame. For a before/after in one process."""
    from solvers.common import driver

    queued = driver._dispatch
    driver._dispatch = lambda sim, state: sim.chunk(state)
    try:
        yield
    finally:
        driver._dispatch = queued


PY2D_PER_FRAME, PY2D_DT = 100, 5e-5  # frames of 100 ab2cn steps
RB_DT, RB_INTERVAL = 0.002, 0.2  # frames of 100 RK222 steps at a fixed dt


def py2d_config(args, frames: int):
    from solvers.py2d_turbulence.solver import Py2DConfig

    n, per_frame, dt = args.py2d_n, PY2D_PER_FRAME, PY2D_DT
    return Py2DConfig(
        NX=n, dt=dt, t_total=frames * per_frame * dt, save_interval=per_frame * dt, precision=args.precision
    )


def rb_config(args, frames: int):
    from solvers.rayleigh_benard.solver import RBConfig

    nx, nz = args.rb_grid
    return RBConfig(
        rayleigh=1e8, nx=nx, nz=nz, dt=RB_DT, t_total=frames * RB_INTERVAL, save_interval=RB_INTERVAL,
        precision=args.precision, fields=("buoyancy", "u", "w", "pressure"),
    )  # fmt: skip


def vq_data_config(args):
    from solvers.py2d_turbulence.solver import Py2DConfig

    return Py2DConfig(NX=args.vq_size, t_total=4.0, save_interval=0.05, n_trajectories=2, precision="float32")


def vq_train_config(args, data, steps: int):
    """The model of run_all.sh's vqvae_py2d stage (128² → 32×32 latent, 48.0×)."""
    from models.train_vqvae import TrainConfig

    return TrainConfig(
        data_path=str(data), fields=("omega",), steps=steps, batch_size=args.vq_batch, ch=32,
        ch_mult=(1, 2, 2), embed_dim=4, codebook_size=256, log_every=10, checkpoint_every=10**6,
        compute_dtype=args.vq_compute_dtype, prefix_every=min(4, args.vq_batch),
    )  # fmt: skip


def _in_our_flags(err: ValueError, workload: str, names: dict[str, str]) -> ValueError:
    """A config's one-line ValueError with its flag names replaced by this script's (``--NX`` → ``--py2d_n``)."""
    text = str(err)
    for old, new in names.items():
        text = re.sub(re.escape(old) + r"(?![\w])", new, text)
    return ValueError(f"{workload} workload: {text}")


def check_settings(args, names) -> None:
    """Build every selected workload's configs before anything is traced: one-line ValueErrors in this script's
    flags (a bad --rb_grid fails at once, not after the py2d trace)."""
    forcing = {"--fkx": "fkx (the solver's default forcing)"}
    if "py2d" in names:
        try:
            py2d_config(args, args.frames)
        except ValueError as err:
            raise _in_our_flags(err, "py2d", {"--NX": "--py2d_n", **forcing}) from None
    if "rb" in names:
        try:
            rb_config(args, args.frames)
        except ValueError as err:
            raise _in_our_flags(err, "rb", {"--nx": "--rb_grid's nx", "--nz": "--rb_grid's nz"}) from None
    if "vqvae" in names:
        from models.train_vqvae import model_config

        try:
            data = vq_data_config(args)
        except ValueError as err:
            raise _in_our_flags(err, "vqvae", {"--NX": "--vq_size", **forcing}) from None
        renames = {"--batch_size": "--vq_batch", "--steps": "--vq_steps", "--compute_dtype": "--vq_compute_dtype"}
        try:
            config = vq_train_config(args, "checked-before-the-data-exists.h5", 3 * args.vq_steps)
        except ValueError as err:
            raise _in_our_flags(err, "vqvae", renames) from None
        try:
            model_config(config, args.vq_size, args.vq_size, "periodic", "periodic")
        except ValueError as err:
            text = str(err).replace("--ch_mult", "its ch_mult")
            raise ValueError(f"vqvae workload: --vq_size {args.vq_size} does not fit the model: {text}") from None
        samples = data.n_trajectories * (round(data.t_total / data.save_interval) + 1)
        if args.vq_batch > samples:
            raise ValueError(f"--vq_batch {args.vq_batch} exceeds the {samples} samples of the VQ-VAE's data")
        if args.vq_batch % jax.device_count():
            raise ValueError(f"--vq_batch {args.vq_batch} is not divisible by the {jax.device_count()} devices")


def previous_profile(out: Path) -> list[str]:
    """What a previous run of this script left in ``out``: profile.json and the workloads' trace folders."""
    return [name for name in ("profile.json", *WORKLOADS) if (out / name).exists() or (out / name).is_symlink()]


def workload_py2d(args, work: Path, out: Path) -> dict:
    from solvers.py2d_turbulence.solver import run

    from .bench_py2d import bench_one

    n, per_frame = args.py2d_n, PY2D_PER_FRAME

    def make_run(frames):
        cfg = py2d_config(args, frames)
        return lambda: run(
            cfg, work / "py2d", overwrite=True, progress=False, log=lambda s: None, state_seconds=args.state_seconds
        )

    res = profile(make_run, args.frames, per_frame, out / "py2d")
    with copies_at_gather():  # before/after of the queued output copies, measured after them in the same process
        res["untraced_ms_per_step_copies_at_gather"] = untraced_ms_per_step(make_run, args.frames, per_frame)
    bare = 1e3 * bench_one("ab2cn", n, args.precision, 1, per_frame, 3)[0]  # the benchmark's bare step loop
    return {"label": f"py2d {n}² ab2cn {args.precision}, frames of {per_frame} steps", "bare_ms": bare} | res


def workload_rb(args, work: Path, out: Path) -> dict:
    from solvers.rayleigh_benard.solver import run

    from .bench_rayleigh_benard import bench_one

    nx, nz = args.rb_grid
    dt, interval = RB_DT, RB_INTERVAL

    def make_run(frames):
        cfg = rb_config(args, frames)
        return lambda: run(
            cfg, work / "rb", overwrite=True, progress=False, log=lambda s: None, state_seconds=args.state_seconds
        )

    res = profile(make_run, args.frames, round(interval / dt), out / "rb")
    bare = 1e3 * bench_one(nx, nz, args.precision, 1, 100, 3, 1e8, dt)[0]  # the benchmark's bare step loop
    label = f"RB {nx}×{nz} {args.precision} Ra 1e8, fixed dt, frames of {round(interval / dt)} steps, 4 fields saved"
    return {"label": label, "bare_ms": bare} | res


def workload_vqvae(args, work: Path, out: Path) -> dict:
    from models.train_vqvae import train
    from solvers.py2d_turbulence.solver import run

    data = run(vq_data_config(args), work / "vq_data", overwrite=True, progress=False, log=lambda s: None)

    # one schedule for every run (the longest, the untraced 3 × --vq_steps), each stopping after its own count: the
    # schedule's length is in the step program, and a program per length would put a compilation into the timings
    config = vq_train_config(args, data, 3 * args.vq_steps)

    def make_run(steps):
        return lambda: train(config, work / "vq_run", overwrite=True, progress=False, stop_after=steps)

    res = profile(make_run, args.vq_steps, 1, out / "vqvae")
    label = (
        f"VQ-VAE train loop, {args.vq_size}² ω, batch {args.vq_batch}, ch 32, D 4, V 256, {args.vq_compute_dtype} "
        f"encoder/decoder, runs of {args.vq_steps} steps"
    )
    return {"label": label, "bare_ms": None} | res


WORKLOADS = {"py2d": workload_py2d, "rb": workload_rb, "vqvae": workload_vqvae}


PROG = "python -m benchmarks.profile_step"


def grid_pair(text: str) -> tuple[int, int]:
    """argparse type: one positive NXxNZ pair (``512x128``)."""
    pairs = scale_list(text)
    if len(pairs) != 1:
        raise argparse.ArgumentTypeError(f"expected one NXxNZ pair like 512x128, got {text!r}")
    return pairs[0]


def build_parser() -> OneLineArgumentParser:
    p = OneLineArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--output_dir", required=True)
    p.add_argument(
        "--workloads",
        type=choice_list(tuple(WORKLOADS)),
        default=tuple(WORKLOADS),
        help="comma list of py2d, rb, vqvae (default all)",
    )
    p.add_argument("--py2d_n", type=positive_int, default=1024, help="py2d grid N (default 1024)")
    p.add_argument("--rb_grid", type=grid_pair, default=(512, 128), help="RB nx x nz (default 512x128)")
    p.add_argument("--vq_size", type=positive_int, default=128, help="VQ-VAE field size (default 128)")
    p.add_argument("--vq_batch", type=positive_int, default=32, help="VQ-VAE batch (default 32)")
    p.add_argument("--vq_steps", type=positive_int, default=40, help="VQ-VAE training steps traced (default 40)")
    p.add_argument(
        "--vq_compute_dtype",
        choices=COMPUTE_DTYPES,
        default="float32",
        help="the VQ-VAE encoder's and decoder's arithmetic, as train_vqvae --compute_dtype (default float32)",
    )
    p.add_argument("--frames", type=positive_int, default=8, help="saved frames of the traced solver runs (default 8)")
    p.add_argument("--precision", choices=("float32", "float64"), default="float32")
    p.add_argument(
        "--state_seconds",
        type=nonnegative_float,
        default=DEFAULT_STATE_SECONDS,
        help=f"the solvers' --state_seconds (default {DEFAULT_STATE_SECONDS:g}; 0: the state with every frame)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a previous profile in --output_dir (profile.json and the py2d, rb, vqvae trace folders)",
    )
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    names = list(args.workloads)
    if problem := output_dir_problem(args.output_dir):
        p.error(problem)
    out = Path(args.output_dir)
    previous = previous_profile(out) if out.is_dir() else []
    if previous and not args.overwrite:
        p.error(
            f"--output_dir {out} holds a previous profile ({', '.join(previous)}); pass --overwrite to replace it, "
            "or choose another --output_dir"
        )
    try:
        check_settings(args, names)
    except ValueError as err:
        p.error(str(err))
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in previous:  # --overwrite: the old profile goes as a whole, so no stale trace outlives it
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    except OSError as err:
        return fail(PROG, os_error_text(err))
    if args.precision == "float64":
        jax.config.update("jax_enable_x64", True)
    device = jax.devices()[0]
    results = {"device": device.device_kind, "platform": device.platform, "jax": jax.__version__, "workloads": {}}
    print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}")
    with tempfile.TemporaryDirectory(prefix="gust_profile_") as tmp:
        # every run after the first loads its programs from the persistent cache (its own, for this process, unless
        # JAX_COMPILATION_CACHE_DIR names one): compiling them again would put seconds of compilation into the timings
        if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
            jax.config.update("jax_compilation_cache_dir", str(Path(tmp) / "jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        for name in names:
            res = WORKLOADS[name](args, Path(tmp), out)
            results["workloads"][name] = res
            (out / "profile.json").write_text(json.dumps(results, indent=1) + "\n")
            bare = f", bare step loop {res['bare_ms']:.3f} ms" if res["bare_ms"] is not None else ""
            if (before := res.get("untraced_ms_per_step_copies_at_gather")) is not None:
                bare += f" (untraced with the frame copies started at the gather, as before: {before:.3f} ms/step)"
            print(
                f"\n### {res['label']}\nproduction loop {res['loop_ms_per_step']:.3f} ms/step in the trace, "
                f"{res['untraced_ms_per_step']:.3f} ms/step untraced (marginal){bare}; step program "
                f"{sum(res['kind_ms_per_step'].values()):.3f} ms/step of device time, {res['events_per_step']:.1f} "
                f"events per step; device busy {100 * res['busy_fraction_loop']:.0f}% of the loop ({res['source']})"
            )
            print("| kind | share of device time | ms per step |\n|---|---|---|")
            for k in KINDS:
                print(f"| {k} | {100 * res['kind_share'][k]:.1f}% | {res['kind_ms_per_step'][k]:.4f} |")
            print(
                "costliest:",
                "; ".join(f"{t['name'][:60]} {t['ms_total']:.2f} ms ×{t['count']}" for t in res["top"][:6]),
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
