"""VQ-VAE benchmark: training throughput, and reconstruction quality on real solver output after a fixed budget.

    python -m benchmarks.bench_vqvae --output_dir ./bench_vqvae [--cases py2d,rb] [--steps 600] [--batch_size 16]
        [--ch 32] [--ch_mult 1,2,2,4] [--embed_dim 32] [--codebook_size 1024] [--lr 2e-3] [--restart_every 50]
        [--num_res_blocks 1] [--scales 1x1,2x2,4x4,8x8,16x16] [--spectral_weight 0] [--prefix_weight 0.1]
        [--prefix_every 1] [--beta 0.25]
        [--seed 0] [--compute_dtype float32]
        [--py2d_trajectories 8] [--throughput_steps 10] [--throughput_dtypes float32,bfloat16] [--train_seconds S]
        [--overwrite] [--no_progress]

For each case it
1. makes the data once (kept in ``--output_dir/data``; reused by later runs): a training file and a held-out file of
   a different seed, through the solvers' normal output path:
   - ``py2d``: 2D turbulence vorticity ``omega`` at 128² (Re 1000, k_f = 4, α = 0.1, solver defaults), spin-up 10,
     then 8 (``--py2d_trajectories``) trajectories × 80 frames (Δt_save 0.25) for training, 2 × 80 held out (seed 100);
   - ``rb``: Rayleigh–Bénard ``buoyancy`` (temperature) at Ra = 1e5, Pr = 1, 128×32 uniform grid, spin-up 100, then
     4 trajectories × 100 frames (Δt_save 0.5) for training, 1 × 100 held out (seed 100);
2. times the jitted training step (the one ``models.train_vqvae`` runs) on a device-resident batch, after
   compilation: ms per step and samples/s, next to the forward pass alone (encode → quantise → decode) for scale,
   in the training's ``--compute_dtype`` and in every other dtype of ``--throughput_dtypes`` (side by side in one
   run: the mixed-precision speed-up is their ratio);
3. trains ``--steps`` steps (or, with ``--train_seconds S``, as many as the measured step time fits in S seconds
   less the step's measured compilation,
   capped at ``--steps``; the schedule is set for that count before training starts, and training stops at
   1.25 S of wall time at the latest, with a checkpoint, reporting the steps it took) with
   ``models.train_vqvae.train`` into ``--output_dir/<case>/run`` (a normal run directory: model.eqx, config.txt,
   metrics.jsonl, loss.png; the tokenizer and analysis CLIs read it);
4. evaluates on the held-out file: relative L2 error ‖x̂ − x‖ / ‖x‖ over all held-out samples in physical units
   (and ‖x̂ − x‖ / ‖x − x̄‖ with x̄ the training mean, the stricter figure for fields with a large mean such as RB
   temperature),
   the same for the reconstruction from the first k scales (k = 1..K, should fall with k), codebook usage per scale
   (distinct codes used on the held-out set / V, and / min(V, tokens of that scale in the held-out set)), perplexity,
   and the compression ratio C·H·W·32 bits / Σ_k h_k w_k log2 V (a fixed-length code over the whole codebook; the
   tokenizer's ``info`` gives the smaller figure for the vocabulary actually used).

Figures go to stdout (a Markdown table per case) and ``--output_dir/results.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from models.inference import encode_batch, load_trained, normalized_batches, open_matching, prefix_batch
from models.models import COMPUTE_DTYPES, codebook_stats, make_model, with_compute_dtype
from models.train_vqvae import (
    LEGACY_TRAIN_VALUES,
    TrainConfig,
    make_optimizer,
    model_config,
    placements,
    read_settings,
    train,
    train_step_for,
)
from solvers.common import hdf5_utils
from solvers.common.cli import OneLineArgumentParser, choice_list, output_dir_problem, scale_list

CASES = ("py2d", "rb")
TRAIN_SLACK = 1.25  # --train_seconds S: training stops at this many times S of wall time at the latest
FIELD = {"py2d": "omega", "rb": "buoyancy"}


def make_data(case: str, data_dir: Path, progress: bool, py2d_trajectories: int = 8) -> tuple[Path, Path]:
    """The case's (train, held-out) files, made on the first call and reused after (validated)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for split, seed in (("train", 0), ("test", 100)):
        suffix = f"_m{py2d_trajectories}" if case == "py2d" and split == "train" and py2d_trajectories != 8 else ""
        folder = data_dir / f"{case}_{split}{suffix}"
        existing = sorted(folder.glob("*.h5")) if folder.exists() else []
        if existing and hdf5_utils.open_dataset(existing[0]).complete:
            out.append(existing[0])
            continue
        if case == "py2d":
            from solvers.py2d_turbulence.solver import Py2DConfig, run

            m = py2d_trajectories if split == "train" else 2
            cfg = Py2DConfig(NX=128, t_total=20.0, save_interval=0.25, spinup_time=10.0, seed=seed, n_trajectories=m)
        else:
            from solvers.rayleigh_benard.solver import RBConfig, run

            m = 4 if split == "train" else 1
            cfg = RBConfig(
                rayleigh=1e5, nx=128, nz=32, dt=0.02, t_total=50.0, save_interval=0.5, spinup_time=100.0, seed=seed,
                n_trajectories=m,
            )  # fmt: skip
        out.append(run(cfg, folder, overwrite=True, progress=progress))
    return out[0], out[1]


def time_steps(config: TrainConfig, shape: tuple[int, int], bc: tuple[str, str], n: int) -> dict:
    """ms per training step and per forward pass on a resident random batch (after one compiling call), both in
    ``config.compute_dtype``, and the seconds of the step's compiling call."""
    mconfig = model_config(config, *shape, *bc)
    model = make_model(mconfig, jax.random.PRNGKey(0))
    opt = make_optimizer(config, eqx.filter(model, eqx.is_inexact_array))
    opt_state = opt.init(eqx.filter(model, eqx.is_inexact_array))
    counts = jnp.zeros(mconfig.codebook_size, jnp.float32)
    batch = jax.random.normal(jax.random.PRNGKey(1), (config.batch_size, len(config.fields), *shape))
    # laid out as training lays them out: the same program, so training loads this compilation from the cache
    batch_placement, replicated = placements()
    model, opt_state, counts = jax.device_put((model, opt_state, counts), replicated)
    batch = jax.device_put(batch, batch_placement)
    step = train_step_for(config, opt)
    forward = eqx.filter_jit(lambda m, x: jax.vmap(with_compute_dtype(m, config.compute_dtype))(x)[0])

    compile_s = []

    def timed(fn):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(0))  # compile
        compile_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(n):
            out = fn(i + 1)
        jax.block_until_ready(out)
        return (time.perf_counter() - t0) / n

    state = [model, opt_state, counts]

    def train_once(i):
        m, o, c, metrics = step(*state, batch, jnp.asarray(i + 1, jnp.int32))
        state[:] = [m, o, c]
        return metrics["loss"]

    t_step = timed(train_once)
    t_fwd = timed(lambda i: forward(model, batch))
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array)))
    return {
        "ms_per_step": 1e3 * t_step,
        "samples_per_s": config.batch_size / t_step,
        "ms_per_forward": 1e3 * t_fwd,
        "step_over_forward": t_step / t_fwd,
        "compile_s": compile_s[0],  # the step's first call: compilation (or a cache load) and one step
        "n_params": int(n_params),
    }


def evaluate(run_dir: Path, test_path: Path, batch_size: int) -> dict:
    """Held-out relative L2 (full and per prefix), per-scale usage and perplexity, compression ratio."""
    trained = load_trained(run_dir / "model.eqx", run_dir / "config.txt")
    cfg = trained.config
    n_scales, v = len(cfg.scales), cfg.codebook_size
    err2 = np.zeros(n_scales)
    ref2 = anom2 = 0.0
    counts = np.zeros((n_scales, v))
    mean = np.asarray(trained.stats.mean, np.float32)[:, None, None]
    std = np.asarray(trained.stats.std, np.float32)[:, None, None]
    with open_matching(trained, test_path) as ds:
        n = len(ds)
        for _, x in normalized_batches(trained, ds, batch_size):
            prefixes = np.asarray(prefix_batch(trained.model, x), np.float64)  # (K, B, C, H, W)
            xs = np.asarray(x, np.float64)
            truth = xs * std + mean
            err2 += np.sum(((prefixes - xs) * std) ** 2, axis=(1, 2, 3, 4))
            ref2 += float(np.sum(truth**2))
            anom2 += float(np.sum((xs * std) ** 2))  # about the training mean
            for k, idx in enumerate(encode_batch(trained.model, x)):
                counts[k] += np.bincount(np.asarray(idx).ravel(), minlength=v)
    rel = np.sqrt(err2 / ref2)
    tokens = np.array([h * w * n for h, w in cfg.scales])
    used = (counts > 0).sum(axis=1)
    _, perplexity = codebook_stats(jnp.asarray(counts / tokens[:, None]))
    bits = sum(h * w for h, w in cfg.scales) * math.log2(v)
    return {
        "n_test": n,
        "rel_l2": float(rel[-1]),
        "rel_l2_anomaly": float(np.sqrt(err2[-1] / anom2)),
        "prefix_rel_l2": rel.tolist(),
        "usage": (used / v).tolist(),
        "usage_of_available": (used / np.minimum(v, tokens)).tolist(),
        "used_codes": used.tolist(),
        "perplexity": np.asarray(perplexity).tolist(),
        "tokens_per_sample": int(sum(h * w for h, w in cfg.scales)),
        "bits_per_sample": bits,
        "compression": cfg.in_channels * cfg.height * cfg.width * 32 / bits,
        "scales": [list(s) for s in cfg.scales],
    }


def settings_differ(run_dir: Path, config: TrainConfig, ignore: set[str]) -> list[str]:
    """The training settings (architecture included) in which the run in ``run_dir`` differs from ``config``."""
    saved = read_settings((run_dir / "config.txt").read_text(), str(run_dir / "config.txt"))
    mine = config.to_dict() | {"data_path": str(Path(config.data_path).resolve())}
    return sorted(
        k
        for k, v in mine.items()
        if k not in ignore and saved.get(k, LEGACY_TRAIN_VALUES.get(k)) != json.loads(json.dumps(v))
    )


def train_config(args: argparse.Namespace, data_path: str | Path, field: str) -> TrainConfig:
    """The training settings of one case from the command line (TrainConfig checks them: one-line ValueErrors)."""
    try:
        ch_mult = tuple(int(s) for s in args.ch_mult.split(","))
    except ValueError:
        raise ValueError(f"--ch_mult must be comma-separated integers (got {args.ch_mult!r})") from None
    return TrainConfig(
        data_path=str(data_path),
        fields=(field,),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        ch=args.ch,
        ch_mult=ch_mult,
        num_res_blocks=args.num_res_blocks,
        scales=args.scales,
        embed_dim=args.embed_dim,
        codebook_size=args.codebook_size,
        restart_every=args.restart_every,
        spectral_weight=args.spectral_weight,
        prefix_weight=args.prefix_weight,
        prefix_every=args.prefix_every,
        compute_dtype=args.compute_dtype,
        beta=args.beta,
        seed=args.seed,
        log_every=max(1, args.steps // 50),
        checkpoint_every=max(1, args.steps // 4),
    )


def main(argv=None) -> int:
    p = OneLineArgumentParser(prog="python -m benchmarks.bench_vqvae", description=__doc__.split("\n\n")[0])
    p.add_argument("--output_dir", required=True)
    p.add_argument("--cases", default="py2d,rb", help="comma list of py2d, rb (default py2d,rb)")
    p.add_argument("--steps", type=int, default=600, help="training steps per case (default 600)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--ch", type=int, default=32)
    p.add_argument("--ch_mult", default="1,2,2,4", help="per-level multipliers (default 1,2,2,4: latent = input / 8)")
    p.add_argument("--num_res_blocks", type=int, default=1)
    p.add_argument("--scales", type=scale_list, default=None, help="e.g. 1x1,2x2,4x4 (default: powers of 2 to latent)")
    p.add_argument("--embed_dim", type=int, default=32)
    p.add_argument("--codebook_size", type=int, default=1024)
    p.add_argument("--restart_every", type=int, default=50)
    p.add_argument("--spectral_weight", type=float, default=0.0)
    p.add_argument(
        "--prefix_weight",
        type=float,
        default=TrainConfig.prefix_weight,
        help=f"weight of the coarse-prefix loss (default {TrainConfig.prefix_weight})",
    )
    p.add_argument(
        "--prefix_every",
        type=int,
        default=TrainConfig.prefix_every,
        help=f"every n-th sample of a batch decodes a prefix (default {TrainConfig.prefix_every}: every sample)",
    )
    p.add_argument(
        "--beta", type=float, default=TrainConfig.beta, help=f"commitment weight (default {TrainConfig.beta})"
    )
    p.add_argument(
        "--seed", type=int, default=TrainConfig.seed, help=f"model init and batch order (default {TrainConfig.seed})"
    )
    p.add_argument(
        "--py2d_trajectories", type=int, default=8, help="training trajectories of the py2d data (default 8)"
    )
    p.add_argument(
        "--compute_dtype",
        default=TrainConfig.compute_dtype,
        help=f"training arithmetic, one of {', '.join(COMPUTE_DTYPES)} (default {TrainConfig.compute_dtype})",
    )
    p.add_argument("--throughput_steps", type=int, default=10, help="timed steps after compilation (default 10)")
    p.add_argument(
        "--throughput_dtypes",
        type=choice_list(COMPUTE_DTYPES),
        default=(),
        help="comma list of compute dtypes to time the step in, side by side (default: --compute_dtype only)",
    )
    p.add_argument(
        "--train_seconds",
        type=float,
        default=None,
        help="train as many steps as the measured step time fits in this many seconds (at most --steps)",
    )
    p.add_argument("--overwrite", action="store_true", help="retrain runs that exist (data is always reused)")
    p.add_argument("--no_progress", action="store_true")
    args = p.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    bad = [c for c in cases if c not in CASES]
    if bad or not cases:
        p.error(f"--cases {args.cases!r}: unknown {bad}; allowed: {', '.join(CASES)}")
    if args.train_seconds is not None and not args.train_seconds > 0:
        p.error(f"--train_seconds must be > 0 (got {args.train_seconds:g})")
    if args.py2d_trajectories < 1:
        p.error(f"--py2d_trajectories must be >= 1 (got {args.py2d_trajectories})")
    if args.throughput_steps < 1:
        p.error(f"--throughput_steps must be >= 1 (got {args.throughput_steps})")
    dtypes = [args.compute_dtype] + [d for d in args.throughput_dtypes if d != args.compute_dtype]
    try:  # every training setting, before minutes of data generation
        train_config(args, "checked-before-the-data-exists.h5", FIELD[cases[0]])
    except ValueError as e:
        p.error(str(e))
    if problem := output_dir_problem(args.output_dir):
        p.error(problem)
    out = Path(args.output_dir)
    progress = not args.no_progress
    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({device.platform}), {jax.device_count()} device(s), jax {jax.__version__}")
    results = {"device": device.device_kind, "platform": device.platform, "jax": jax.__version__, "cases": {}}
    results_path = out / "results.json"
    if results_path.exists():
        results["cases"] = json.loads(results_path.read_text()).get("cases", {})
    for case in cases:
        train_path, test_path = make_data(case, out / "data", progress, args.py2d_trajectories)
        with hdf5_utils.open_dataset(train_path) as f:
            shape, bc = tuple(f.shape), (f.grid.bc_y, f.grid.bc_x)
            n_train = f.n_samples
        config = train_config(args, train_path, FIELD[case])
        run_dir = out / case / "run"
        done = (run_dir / "model.eqx").exists() and not args.overwrite
        if done:  # the figures must describe the model this command asks for: reuse only a run of these settings
            budget = {"log_every", "checkpoint_every"} | ({"steps", "warmup_steps"} if args.train_seconds else set())
            budget |= {"scales"} if config.scales is None else set()  # None: the default for the grid, stored resolved
            if diff := settings_differ(run_dir, config, budget):
                p.error(
                    f"{run_dir} was trained with other settings ({', '.join(diff)}); pass --overwrite to retrain it"
                )
        by_dtype = {
            d: time_steps(dataclasses.replace(config, compute_dtype=d), shape, bc, args.throughput_steps)
            for d in dtypes
        }
        speed = by_dtype[config.compute_dtype]
        # the step times now, before training: a stage killed at its limit still leaves them in its log
        print(f"\n{case}: training step, batch {args.batch_size} (resident random batch, after compilation):")
        for d, sp in by_dtype.items():
            print(
                f"  {d}: {sp['ms_per_step']:.1f} ms/step ({sp['samples_per_s']:.1f} samples/s), forward "
                f"{sp['ms_per_forward']:.1f} ms (step/forward {sp['step_over_forward']:.2f}), compiling call "
                f"{sp['compile_s']:.1f} s"
                + (
                    ""
                    if d == config.compute_dtype
                    else f"; step time {d} / {config.compute_dtype} = {sp['ms_per_step'] / speed['ms_per_step']:.2f}"
                ),
                flush=True,
            )
        deadline = None
        if args.train_seconds is not None:
            # training loads its step from the persistent cache (time_steps compiled the same program), but the H100's
            # loop ran slower than the resident-batch step, so the compilation's time stays out of the fit as a margin
            fit = int(max(0.0, args.train_seconds - speed["compile_s"]) / (1e-3 * speed["ms_per_step"]))
            steps = max(1, min(args.steps, fit))
            config = dataclasses.replace(
                config,
                steps=steps,
                warmup_steps=None,  # steps // 10 again
                log_every=max(1, steps // 50),
                checkpoint_every=max(1, steps // 4),
            )
            # the real loop can be slower than the resident-batch step (an H100 run: 32 ms per step, compilation
            # included, against 22.3 ms), so training also stops at TRAIN_SLACK × S of wall time, compilation
            # included, and reports the steps it took
            deadline = time.monotonic() + TRAIN_SLACK * args.train_seconds
        planned = config.steps
        t0 = time.perf_counter()
        if not done:
            train(config, run_dir, overwrite=True, progress=progress, deadline=deadline)
        wall = time.perf_counter() - t0
        steps_done = read_settings((run_dir / "config.txt").read_text())["step"]
        quality = evaluate(run_dir, test_path, args.batch_size)
        res = {
            "field": FIELD[case],
            "shape": list(shape),
            "n_train": n_train,
            "steps": steps_done,
            "planned_steps": None if done else planned,
            "batch_size": args.batch_size,
            "train_wall_s": None if done else wall,
            "compute_dtype": config.compute_dtype,
            **speed,
            "throughput_by_dtype": by_dtype,
            **quality,
        }
        results["cases"][case] = res
        out.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=1) + "\n")
        head = f"{FIELD[case]} {shape[0]}x{shape[1]}, {n_train} training / {res['n_test']} held-out samples"
        print(f"\n### {case}: {head}")
        print(
            f"model {res['n_params']:,} parameters, batch {args.batch_size}: {res['ms_per_step']:.1f} ms/step "
            f"({res['samples_per_s']:.1f} samples/s), forward {res['ms_per_forward']:.1f} ms "
            f"(step/forward {res['step_over_forward']:.2f}); {steps_done} steps"
            + ("" if done else f" in {wall:.0f} s")
            + (f", stopped at the time limit ({planned} planned)" if not done and steps_done < planned else "")
            + f" ({config.compute_dtype})"
        )
        print(
            f"held-out rel L2 {res['rel_l2']:.4f} (of the anomaly about the training mean: "
            f"{res['rel_l2_anomaly']:.4f}); {res['tokens_per_sample']} tokens, "
            f"{res['bits_per_sample']:.0f} bits/sample, compression {res['compression']:.1f}x"
        )
        print("| scale | prefix rel L2 | codes used | usage (/V) | usage (/available) | perplexity |")
        print("|---|---|---|---|---|---|")
        for k, (h, w) in enumerate(res["scales"]):
            print(
                f"| {h}x{w} | {res['prefix_rel_l2'][k]:.4f} | {res['used_codes'][k]} | {res['usage'][k]:.2f} | "
                f"{res['usage_of_available'][k]:.2f} | {res['perplexity'][k]:.1f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
