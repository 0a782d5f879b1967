"""Random batch reads from HDF5 sample storage: contiguous vs chunked vs compressed layouts.

    python -m benchmarks.bench_hdf5 [--samples 2000] [--size 128] [--batch 32] [--batches 300] [--tmpdir DIR]

Writes the same smooth synthetic float32 fields (samples x size x size) into three files in a temporary
directory (removed afterwards) and times reading batches of sorted sample indices:

    (a) contiguous dataset (Gust's format, written by create_writer), one sorted fancy-index read per batch
    (b) contiguous, read the covering slab [min, max] then select
    (c) one-sample chunks, one read per sample
    (d) one-sample chunks, one fancy-index read
    (e) gzip-compressed one-sample chunks, one fancy-index read
    (f) GustFile.read_batch (what Gust's readers use)

Three index patterns: "random" (batch indices drawn from the whole file), "clustered" (drawn from a
random window 1.5x the batch size, as a loader reading nearby samples would) and "run" (consecutive
indices, as a sequential scan would). The files are freshly
written, so reads come from the OS page cache (warm); cold reads from disk are slower for all variants
and favour fewer, larger reads.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from solvers.common.cli import OneLineArgumentParser, fail, nonnegative_int, positive_int
from solvers.common.hdf5_utils import Grid, create_writer, open_dataset


def smooth_fields(rng: np.random.Generator, n: int, size: int, k_max: int = 12) -> np.ndarray:
    """n random band-limited fields (size x size, float32), roughly like low-Re vorticity snapshots."""
    spectrum = np.zeros((n, size, size // 2 + 1), dtype=np.complex128)
    k = np.fft.fftfreq(size, 1.0 / size)
    kx, ky = np.meshgrid(np.arange(size // 2 + 1), k)
    band = (kx**2 + ky**2 <= k_max**2) & (kx**2 + ky**2 > 0)
    amp = 1.0 / (1.0 + kx[band] ** 2 + ky[band] ** 2)
    m = int(band.sum())
    spectrum[:, band] = amp * (rng.standard_normal((n, m)) + 1j * rng.standard_normal((n, m)))
    return (np.fft.irfft2(spectrum, s=(size, size)) * size * size / 10).astype(np.float32)


def write_files(tmp: Path, args: argparse.Namespace) -> tuple[dict[str, Path], dict[str, float]]:
    n, size = args.samples, args.size
    paths = {"contiguous": tmp / "contiguous.h5", "chunked": tmp / "chunked.h5", "gzip": tmp / "gzip.h5"}
    grid = Grid(
        x=np.arange(size) * 1.0, y=np.arange(size) * 1.0, bc_x="periodic", bc_y="periodic", length_x=size, length_y=size
    )
    writer = create_writer(
        paths["contiguous"],
        fields=["omega"],
        shape=(size, size),
        n_samples=n,
        grid=grid,
        diagnostics=[],
        n_diag=0,
        n_trajectories=1,
        state_spec={},
        attrs={"solver": "bench_hdf5"},
    )
    files = {
        "chunked": h5py.File(paths["chunked"], "w"),
        "gzip": h5py.File(paths["gzip"], "w"),
    }
    datasets = {
        "chunked": files["chunked"].create_dataset("omega", (n, size, size), np.float32, chunks=(1, size, size)),
        "gzip": files["gzip"].create_dataset(
            "omega", (n, size, size), np.float32, chunks=(1, size, size), compression="gzip", compression_opts=4
        ),
    }
    write_s = dict.fromkeys(paths, 0.0)
    rng = np.random.default_rng(args.seed)
    block = 100
    for start in range(0, n, block):
        stop = min(n, start + block)
        data = smooth_fields(rng, stop - start, size)
        t0 = time.perf_counter()
        idx = np.arange(start, stop)
        writer.write_samples({"omega": data}, time=idx * 0.1, trajectory=np.zeros_like(idx), step=idx)
        writer.commit()
        write_s["contiguous"] += time.perf_counter() - t0
        for name, ds in datasets.items():
            t0 = time.perf_counter()
            ds[start:stop] = data
            write_s[name] += time.perf_counter() - t0
    t0 = time.perf_counter()
    writer.finalize()  # streams over the file once for the per-field stats
    write_s["finalize"] = time.perf_counter() - t0
    for name, f in files.items():
        t0 = time.perf_counter()
        f.close()
        write_s[name] += time.perf_counter() - t0
    return paths, write_s


def make_batches(rng: np.random.Generator, pattern: str, args: argparse.Namespace) -> list[np.ndarray]:
    batches = []
    for _ in range(args.batches):
        if pattern == "random":
            idx = rng.choice(args.samples, size=args.batch, replace=False)
        elif pattern == "run":
            idx = int(rng.integers(0, args.samples - args.batch + 1)) + np.arange(args.batch)
        else:
            window = min(args.samples, int(1.5 * args.batch))
            start = int(rng.integers(0, args.samples - window + 1))
            idx = start + rng.choice(window, size=args.batch, replace=False)
        batches.append(np.sort(idx))
    return batches


def per_sample(ds: h5py.Dataset, idx: np.ndarray) -> np.ndarray:
    out = np.empty((idx.size, *ds.shape[1:]), dtype=ds.dtype)
    for j, i in enumerate(idx.tolist()):
        ds.read_direct(out, source_sel=np.s_[i], dest_sel=np.s_[j])
    return out


def covering_slab(ds: h5py.Dataset, idx: np.ndarray) -> np.ndarray:
    first, last = int(idx[0]), int(idx[-1])
    return ds[first : last + 1][idx - first]


def time_reader(read: Callable[[np.ndarray], np.ndarray], batches: list[np.ndarray], repeats: int) -> float:
    """Best-of-`repeats` mean seconds per batch."""
    read(batches[0])  # warm-up
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for idx in batches:
            read(idx)
        best = min(best, (time.perf_counter() - t0) / len(batches))
    return best


PROG = "python -m benchmarks.bench_hdf5"


def writable_dir(text: str) -> Path:
    """argparse type: an existing folder this process may write into (checked before anything is written)."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not an existing directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text!r} is not writable")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=positive_int, default=2000)
    parser.add_argument("--size", type=positive_int, default=128, help="fields are size x size float32")
    parser.add_argument("--batch", type=positive_int, default=32)
    parser.add_argument("--batches", type=positive_int, default=100, help="batches per timing pass")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timing passes; the best is reported")
    parser.add_argument(
        "--tmpdir", type=writable_dir, default=None, help="an existing folder for the files (default: system temp)"
    )
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    args = parser.parse_args(argv)
    if args.batch > args.samples:
        parser.error(f"--batch {args.batch} exceeds --samples {args.samples}; use --batch <= --samples")

    frame_mb = args.size * args.size * 4 / 2**20
    print(
        f"{args.samples} samples of {args.size}x{args.size} float32 ({args.samples * frame_mb:.0f} MB per file), "
        f"batches of {args.batch} sorted indices, {args.batches} batches x best of {args.repeats}"
    )
    with tempfile.TemporaryDirectory(dir=args.tmpdir, prefix="bench_hdf5_") as tmp:
        paths, write_s = write_files(Path(tmp), args)
        print(f"\n{'file':<12} {'size MB':>9} {'write s':>9} {'write MB/s':>11}")
        for name, path in paths.items():
            size_mb = path.stat().st_size / 2**20
            rate = args.samples * frame_mb / write_s[name]
            print(f"{name:<12} {size_mb:>9.1f} {write_s[name]:>9.2f} {rate:>11.0f}")
        print(f"(contiguous: write_samples + commit per 100 samples; finalize stats pass {write_s['finalize']:.2f} s)")

        with (
            h5py.File(paths["contiguous"], "r") as fc,
            h5py.File(paths["chunked"], "r") as fk,
            h5py.File(paths["gzip"], "r") as fz,
            open_dataset(paths["contiguous"]) as gust,
        ):
            contiguous, chunked, gz = fc["fields/omega"], fk["omega"], fz["omega"]
            variants: dict[str, Callable[[np.ndarray], np.ndarray]] = {
                "(a) contiguous, fancy index": lambda idx: contiguous[idx],
                "(b) contiguous, covering slab": lambda idx: covering_slab(contiguous, idx),
                "(c) 1-sample chunks, per-sample": lambda idx: per_sample(chunked, idx),
                "(d) 1-sample chunks, fancy index": lambda idx: chunked[idx],
                "(e) gzip chunks, fancy index": lambda idx: gz[idx],
                "(f) GustFile.read_batch": lambda idx: gust.read_batch("omega", idx),
            }
            rng = np.random.default_rng(args.seed + 1)
            for pattern in ("random", "clustered", "run"):
                batches = make_batches(rng, pattern, args)
                reference = contiguous[batches[0]]
                for name, read in variants.items():
                    if not np.array_equal(read(batches[0]), reference):
                        return fail(PROG, f"{name} returned different data", code=1)
                print(f"\n{pattern} batches")
                print(f"{'variant':<34} {'ms/batch':>9} {'vs (a)':>7} {'MB/s':>7}")
                base = None
                for name, read in variants.items():
                    seconds = time_reader(read, batches, args.repeats)
                    base = base or seconds
                    rate = args.batch * frame_mb / seconds
                    print(f"{name:<34} {seconds * 1e3:>9.3f} {seconds / base:>7.2f} {rate:>7.0f}")
    print(
        "\nNote: the files were just written, so reads are served from the OS page cache (warm). "
        "Cold reads from disk are slower for every variant."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
