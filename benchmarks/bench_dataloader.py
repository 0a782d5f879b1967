"""Throughput of `dataloaders.BatchLoader`: shuffled batches vs a raw sequential read, and a model fed by it.

    python -m benchmarks.bench_dataloader [--file RUN.h5] [--samples 2048] [--size 64] [--fields 2] [--batch 32]
                                          [--epochs 2] [--prefetch 2] [--workers 1] [--steps 60] [--width 16]
                                          [--tmpdir DIR]

Without --file, a synthetic Gust file (smooth random float32 fields, `--samples` x size x size per field) is
written to a temporary directory and removed afterwards. Figures (all in one run, same file, warm page cache):

    raw read          numpy.fromfile of each field's bytes at the dataset's byte offset (h5py get_offset):
                      a sequential read of the whole dataset, the ceiling for any reader of the file
    read_batch        GustDataset.read_batch of shuffled batches in the consumer thread (no prefetch, host only)
    BatchLoader       shuffled batches from the loader (--workers reader threads, device_put), consumer only waits
    model step        a small jitted conv net (2 layers, `--width` channels, MSE + SGD) fed by the loader (batches
                      in numpy memory, then staged in pinned host memory: `BatchLoader(pinned=True)`) vs the
                      same batches already on the device; the difference is the input-pipeline cost per step,
                      and the consumer's time inside next() is printed beside it (dispatch is asynchronous, so that
                      wait overlaps the step in flight: ~0 says the loader keeps ahead and any extra cost lies
                      elsewhere, e.g. host→device copies competing with the step or reader threads holding the GIL)

MB/s counts the float32 bytes delivered (batch x channels x H x W x 4).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from dataloaders import BatchLoader, GustDataset
from solvers.common.cli import OneLineArgumentParser, nonnegative_int, os_error_text, positive_int
from solvers.common.hdf5_utils import Grid, create_writer

from .bench_hdf5 import smooth_fields, writable_dir


def write_synthetic(path: Path, n: int, size: int, n_fields: int, seed: int) -> Path:
    fields = [f"f{c}" for c in range(n_fields)]
    grid = Grid(
        x=np.arange(size) * 1.0, y=np.arange(size) * 1.0, bc_x="periodic", bc_y="periodic", length_x=size, length_y=size
    )
    writer = create_writer(
        path,
        fields=fields,
        shape=(size, size),
        n_samples=n,
        grid=grid,
        diagnostics=[],
        n_diag=0,
        n_trajectories=1,
        state_spec={},
        attrs={"solver": "bench_dataloader"},
    )
    rng = np.random.default_rng(seed)
    for start in range(0, n, 256):
        idx = np.arange(start, min(n, start + 256))
        writer.write_samples(
            {name: smooth_fields(rng, idx.size, size) for name in fields},
            time=idx * 0.1,
            trajectory=np.zeros_like(idx),
            step=idx,
        )
        writer.commit()
    writer.finalize()
    return path


def raw_read_mb_s(path: Path, fields: list[str], repeats: int = 3) -> float:
    """Best-of-repeats MB/s of numpy.fromfile over each field dataset's bytes."""
    spans = []
    with h5py.File(path, "r", locking=False) as f:
        for name in fields:
            ds = f["fields"][name]
            spans.append((ds.id.get_offset(), int(np.prod(ds.shape))))
    total = sum(count for _, count in spans) * 4
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for offset, count in spans:
            data = np.fromfile(path, dtype=np.float32, count=count, offset=offset)
            assert data.size == count
        best = min(best, time.perf_counter() - t0)
    return total / best / 1e6


def conv_model(key: jax.Array, channels: int, width: int) -> dict[str, jax.Array]:
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (width, channels, 3, 3)) * 0.1,
        "w2": jax.random.normal(k2, (channels, width, 3, 3)) * 0.1,
    }


def _conv(x: jax.Array, w: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))


@jax.jit
def train_step(params: dict[str, jax.Array], x: jax.Array) -> tuple[dict[str, jax.Array], jax.Array]:
    """One SGD step of a 2-layer conv autoencoder-like map x -> x (a stand-in for a real model)."""

    def loss(p):
        y = _conv(jax.nn.gelu(_conv(x, p["w1"])), p["w2"])
        return jnp.mean((y - x) ** 2)

    value, grads = jax.value_and_grad(loss)(params)
    return jax.tree.map(lambda p, g: p - 1e-2 * g, params, grads), value


PROG = "python -m benchmarks.bench_dataloader"


def file_items(path: Path) -> int:
    """Items of the Gust file ``--file`` (one-line ValueError when it is missing or not a readable Gust file)."""
    if not path.is_file():
        raise ValueError(f"--file {path} does not exist or is not a file")
    try:
        with GustDataset(path) as ds:
            return len(ds)
    except (ValueError, OSError) as err:
        text = os_error_text(err) if isinstance(err, OSError) else str(err)
        raise ValueError(f"--file {path} cannot be read as a Gust file: {text}") from None


def main(argv: list[str] | None = None) -> int:
    ap = OneLineArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", type=Path, help="an existing Gust file (default: write a synthetic one)")
    ap.add_argument("--samples", type=positive_int, default=2048, help="samples of the synthetic file (2048)")
    ap.add_argument("--size", type=positive_int, default=64, help="grid side of the synthetic file (64)")
    ap.add_argument("--fields", type=positive_int, default=2, help="fields of the synthetic file (2)")
    ap.add_argument("--batch", type=positive_int, default=32, help="batch size (32)")
    ap.add_argument("--epochs", type=positive_int, default=4, help="epochs timed for the loader (4)")
    ap.add_argument("--prefetch", type=positive_int, default=2, help="loader prefetch depth (2)")
    ap.add_argument("--workers", type=positive_int, default=1, help="loader reader threads (1)")
    ap.add_argument("--steps", type=positive_int, default=60, help="timed model steps (60)")
    ap.add_argument("--width", type=positive_int, default=16, help="hidden channels of the model (16)")
    ap.add_argument("--seed", type=nonnegative_int, default=0)
    ap.add_argument(
        "--tmpdir", type=writable_dir, help="an existing folder for the synthetic file (default: system temp)"
    )
    args = ap.parse_args(argv)
    if args.file is not None:
        try:
            n_items = file_items(args.file)
        except ValueError as err:
            ap.error(str(err))
    else:
        n_items = args.samples
    if args.batch > n_items:
        what = f"the {n_items} items of --file {args.file}" if args.file is not None else f"--samples {n_items}"
        ap.error(f"--batch {args.batch} exceeds {what}; use --batch <= {n_items}")
    if args.epochs * (n_items // args.batch) < 2:  # the loader's rate is timed from its second batch on
        ap.error(
            f"--epochs {args.epochs} of {n_items // args.batch} batch(es) of {args.batch} leave no batch to time after "
            "the first; raise --epochs or lower --batch"
        )

    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        path = args.file or write_synthetic(Path(tmp) / "bench.h5", args.samples, args.size, args.fields, args.seed)
        with GustDataset(path) as ds:
            item_bytes = int(np.prod(ds.item_shape)) * 4
            print(f"file {path.name}: {len(ds)} samples x {ds.item_shape} float32, {len(ds) * item_bytes / 1e6:.1f} MB")
            print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), batch {args.batch}")
            raw = raw_read_mb_s(path, ds.fields)
            print(f"  raw read (numpy.fromfile, sequential)    {raw:9.0f} MB/s")

            loader = BatchLoader(
                ds, args.batch, seed=args.seed, epochs=args.epochs, prefetch=args.prefetch, workers=args.workers
            )
            n_batches = loader.batches_per_epoch * args.epochs
            t0 = time.perf_counter()
            for e in range(args.epochs):
                for b in range(loader.batches_per_epoch):
                    ds.read_batch(loader.batch_indices(e, b))
            host = n_batches * args.batch * item_bytes / (time.perf_counter() - t0) / 1e6
            print(f"  GustDataset.read_batch (shuffled)        {host:9.0f} MB/s  ({100 * host / raw:.0f}% of raw)")

            batches = iter(loader)
            next(batches).block_until_ready()  # thread start and first read are not part of the steady rate
            t0 = time.perf_counter()
            for batch in batches:
                batch.block_until_ready()
            mb_s = (n_batches - 1) * args.batch * item_bytes / (time.perf_counter() - t0) / 1e6
            label = f"BatchLoader (shuffled, prefetch {args.prefetch}, {args.workers} readers)"
            print(f"  {label:<40} {mb_s:9.0f} MB/s  ({100 * mb_s / raw:.0f}% of raw)")

            # model fed by the loader vs from memory: same number of steps, same batch shapes
            params = conv_model(jax.random.PRNGKey(0), ds.n_channels, args.width)
            warm = next(BatchLoader(ds, args.batch, seed=args.seed))
            params, value = train_step(params, warm)  # compile
            value.block_until_ready()
            resident = [jax.device_put(ds.read_batch(loader.batch_indices(0, b % loader.batches_per_epoch)))
                        for b in range(args.steps)]  # fmt: skip
            t0 = time.perf_counter()
            for x in resident:
                params, value = train_step(params, x)
            value.block_until_ready()
            t_mem = (time.perf_counter() - t0) / args.steps
            print(f"  {'model step, batches from memory':<52} {1e3 * t_mem:9.2f} ms")
            for pinned in (False, True):
                loader_kw = dict(seed=args.seed, prefetch=args.prefetch, workers=args.workers, pinned=pinned)
                with BatchLoader(ds, args.batch, **loader_kw) as feed:
                    # start the thread and fill the queue outside the timing, and give the step its first batch
                    # from this loader there too (a batch placed otherwise, e.g. committed, may compile it again)
                    params, value = train_step(params, next(feed))
                    value.block_until_ready()
                    waited = 0.0  # the consumer's time inside next(): ~0 when the loader keeps ahead of the model
                    t0 = time.perf_counter()
                    for _ in range(args.steps):
                        t1 = time.perf_counter()
                        x = next(feed)
                        waited += time.perf_counter() - t1
                        params, value = train_step(params, x)
                    value.block_until_ready()
                    t_loader = (time.perf_counter() - t0) / args.steps
                label = "model step, batches from BatchLoader" + (" (pinned staging)" if pinned else "")
                print(
                    f"  {label:<52} {1e3 * t_loader:9.2f} ms  "
                    f"({100 * (t_loader / t_mem - 1):+.0f}%; {args.width} hidden channels, {args.steps} steps)"
                )
                # the consumer's wait for the next batch, overlapping the step in flight (see the docstring)
                print(f"  {'  consumer waiting in next()':<52} {1e3 * waited / args.steps:9.2f} ms per step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
