"""Continuous-latent floor of a VQ-VAE configuration: how much of its error is the autoencoder's, how much the codes'.

    python -m benchmarks.vqvae_floor --test_path HELD_OUT.h5 [--eval_batch 16] -- TRAIN_VQVAE_FLAGS...
    python -m benchmarks.vqvae_floor --test_path HELD_OUT.h5 --like RUN_DIR -- --output_dir FLOOR_DIR [FLAGS...]

trains the model that ``python -m models.train_vqvae TRAIN_VQVAE_FLAGS...`` would train, same data, schedule, seed and
losses (with ``--like``: the flags of the trained run in RUN_DIR, read from its ``config.txt``, followed by the flags
after ``--``, which override them), except that the decoder is fed the encoder output itself instead of the quantised
latent (the quantiser still runs, so its codebook loss and usage are logged as usual, but nothing of it reaches the
decoder). It then prints the held-out relative L2 error ‖x̂ − x‖ / ‖x‖ in physical units, the figure
``benchmarks.bench_vqvae`` reports, and writes it to ``OUTPUT_DIR/floor.json``. Model settings without a flag
(``wrap_upsample``) take their current default.

The result is a lower bound for the quantised model at the same budget: what the encoder and decoder reach when the
latent is free. If the two errors are independent, the codes' part is about sqrt(vq² − floor²); the README's
"Where the error comes from" compares both on the bench_vqvae data. The run directory is a diagnostic only: the
tokenizer and the analysis would quantise as usual, for a decoder that never saw quantised latents.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from models import models as vq
from models.inference import load_trained, normalized_batches, open_matching
from models.train_vqvae import flags_of_run
from models.train_vqvae import main as train_main
from solvers.common.atomic import atomic_text
from solvers.common.cli import OneLineArgumentParser


@contextlib.contextmanager
def continuous_latent() -> Iterator[None]:
    """Within the block, every quantiser returns the encoder output unchanged (its aux, losses and usage as usual)."""
    quantize = vq.MultiScaleQuantizer.__call__

    def passthrough(self, z):
        _, aux = quantize(self, z)
        return z, aux

    vq.MultiScaleQuantizer.__call__ = passthrough
    try:
        yield
    finally:
        vq.MultiScaleQuantizer.__call__ = quantize


@eqx.filter_jit
def _forward(model, x):
    return jax.vmap(lambda s: model(s)[0])(x)


def held_out_rel_l2(run_dir: Path, test_path: Path, batch_size: int) -> float:
    """‖x̂ − x‖ / ‖x‖ over every held-out sample, physical units, with the model's forward pass as it is patched now."""
    trained = load_trained(run_dir / "model.eqx", run_dir / "config.txt")
    std = np.asarray(trained.stats.std, np.float64)[:, None, None]
    mean = np.asarray(trained.stats.mean, np.float64)[:, None, None]
    err2 = ref2 = 0.0
    with open_matching(trained, test_path) as ds:
        for _, x in normalized_batches(trained, ds, batch_size):
            xs = np.asarray(x, np.float64)
            err2 += float(np.sum(((np.asarray(_forward(trained.model, x), np.float64) - xs) * std) ** 2))
            ref2 += float(np.sum((xs * std + mean) ** 2))
    return math.sqrt(err2 / ref2)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    p = OneLineArgumentParser(prog="python -m benchmarks.vqvae_floor", description=__doc__.split("\n\n")[0])
    p.add_argument("--test_path", type=Path, required=True, help="held-out Gust .h5 file (same fields and grid)")
    p.add_argument("--eval_batch", type=int, default=16, help="samples per evaluation batch (default 16)")
    p.add_argument("--like", type=Path, default=None, help="train with the settings of the run in this folder")
    args = p.parse_args(argv[:split])
    train_args = argv[split + 1 :]
    if not args.test_path.is_file():
        p.error(f"--test_path {args.test_path} is not a file")
    if args.like is not None:
        cfg = args.like / "config.txt"
        if not cfg.is_file():
            p.error(f"--like {args.like} has no config.txt (not a models.train_vqvae run folder)")
        try:
            train_args = flags_of_run(cfg.read_text(), str(cfg)) + train_args
        except ValueError as err:
            p.error(str(err))
    if args.eval_batch < 1:
        p.error(f"--eval_batch must be >= 1 (got {args.eval_batch})")
    if "--output_dir" not in train_args:
        p.error("the training flags after -- must include --output_dir (and --data_path, --fields)")
    out = Path(train_args[train_args.index("--output_dir") + 1])
    with continuous_latent():
        rc = train_main(train_args)
        if rc != 0:
            return rc
        rel = held_out_rel_l2(out, args.test_path, args.eval_batch)
    atomic_text(out / "floor.json", json.dumps({"rel_l2_continuous": rel, "test_path": str(args.test_path)}) + "\n")
    print(f"held-out rel L2 with the continuous latent: {rel:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
