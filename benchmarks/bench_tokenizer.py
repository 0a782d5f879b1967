"""Tokenisation throughput of ``models.tokenizer`` next to the model's plain forward pass, on the same batches.

    python -m benchmarks.bench_tokenizer --checkpoint runs/x/model.eqx --config_path runs/x/config.txt \
        --data_path data.h5 [--batch_size 64] [--sample_stop N] [--repeats 5]

Runs on whatever JAX's default device is (CPU or GPU). The batches are read and normalised once and kept on the
device, so the first three rows time computation only; each row is the median over ``--repeats`` passes over all
batches (after one warm-up pass that compiles), in samples per second:

    forward           jax.vmap(model)(x): encoder, multi-scale quantiser, decoder (what training evaluates)
    encode            models.inference.encode_batch: per-scale codebook indices only
    tokenise          encode + vocabulary lookup (out-of-vocabulary remapping) + code counts, as ``save`` runs it
    tokenise (file)   models.tokenizer.tokenize end to end: HDF5 read, normalisation, transfer, tokens to host

``ratio`` is each row's throughput divided by the forward pass's.
"""

from __future__ import annotations

import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp

from models.inference import encode_batch, load_trained, normalized_batches, open_matching
from models.tokenizer import _batch_tokens, fit, tokenize
from solvers.common.cli import OneLineArgumentParser, exit_process, positive_int, tool_main


@eqx.filter_jit
def _forward(model, x):
    return jax.vmap(model)(x)[0]


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up: compiles every batch shape
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


PROG = "python -m benchmarks.bench_tokenizer"


def build_parser() -> OneLineArgumentParser:
    p = OneLineArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--config_path", required=True)
    p.add_argument("--data_path", required=True)
    p.add_argument("--batch_size", type=positive_int, default=64)
    p.add_argument("--sample_stop", type=positive_int, default=None, help="end of the samples used (default: all)")
    p.add_argument("--repeats", type=positive_int, default=5)
    return p


def run(args, argv) -> str:
    """Time the four passes; every input is checked (model, data, fields, grid) before the first computation."""
    trained = load_trained(args.checkpoint, args.config_path)
    model = trained.model
    try:
        ds = open_matching(trained, args.data_path, sample_stop=args.sample_stop)
    except ValueError as err:  # the dataset's own wording ("field 'omega' not in x.h5") does not name the flag
        raise ValueError(str(err) if str(err).startswith("--") else f"--data_path {args.data_path}: {err}") from None
    with ds:
        n = len(ds)
        vocab = fit(trained, ds, args.batch_size)
        batches = [x for _, x in normalized_batches(trained, ds, args.batch_size)]
        table, _ = vocab.lookup_tables(jax.device_get(model.quantizer.codebook))
        table = jnp.asarray(table, jnp.int32)

        def forward():
            jax.block_until_ready([_forward(model, x) for x in batches])

        def encode():
            jax.block_until_ready([encode_batch(model, x) for x in batches])

        def tok():
            jax.block_until_ready([_batch_tokens(model, x, table, vocab.trainable_scales) for x in batches])

        def tok_file():
            tokenize(trained, ds, vocab, args.batch_size)

        rows = [
            (name, _timed(fn, args.repeats))
            for name, fn in (("forward", forward), ("encode", encode), ("tokenise", tok), ("tokenise (file)", tok_file))
        ]
    c = trained.config
    lines = [
        f"device {jax.devices()[0].device_kind} ({jax.default_backend()}), {n} samples of "
        f"{c.in_channels}x{c.height}x{c.width}, batch {args.batch_size}, scales {len(c.scales)}, "
        f"codebook {c.codebook_size}, L = {vocab.seq_len}, median of {args.repeats}",
        f"{'pass':<16} {'seconds':>9} {'samples/s':>11} {'ratio':>7}",
    ]
    base = n / rows[0][1]
    lines += [f"{name:<16} {t:>9.4f} {n / t:>11.1f} {n / t / base:>7.2f}" for name, t in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return tool_main(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    exit_process(main())
