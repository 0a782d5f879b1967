"""Benchmark CLIs refuse bad settings up front: one line, exit code 2 (nothing is timed, no data is made)."""

import pytest

from benchmarks import bench_py2d, bench_rayleigh_benard, bench_vqvae


@pytest.mark.parametrize(
    "main, args, needle",
    [
        (bench_py2d.main, ["--sizes", "33"], "--sizes must be even integers >= 8 (got 33)"),
        (bench_py2d.main, ["--steps", "0"], "--steps: must be >= 1 (got 0)"),
        (bench_py2d.main, ["--schemes", "foo"], "unknown scheme 'foo'"),
        (
            bench_py2d.main,
            ["--precisions", "float16"],
            "--precisions: must be float32 and/or float64 (got 'float16')",
        ),
        (bench_rayleigh_benard.main, ["--dt", "nan"], "--dt must be a finite number > 0 (got nan)"),
        (bench_rayleigh_benard.main, ["--rayleigh", "-1"], "--rayleigh must be a finite number > 0 (got -1)"),
        (bench_rayleigh_benard.main, ["--sizes", "15x8"], "nx must be even >= 4 and nz >= 8 (got 15x8)"),
        (bench_rayleigh_benard.main, ["--ensembles", "0"], "argument --ensembles: must be integers >= 1 (got '0')"),
        (bench_vqvae.main, ["--output_dir", "unused", "--steps", "0"], "--steps must be an integer >= 1 (got 0)"),
        (bench_vqvae.main, ["--output_dir", "unused", "--lr", "nan"], "--lr must be a finite number > 0.0 (got nan)"),
        (bench_vqvae.main, ["--output_dir", "unused", "--ch_mult", "1,x"], "--ch_mult must be comma-separated"),
        (
            bench_vqvae.main,
            ["--output_dir", "unused", "--compute_dtype", "float16"],
            "--compute_dtype must be one of float32, bfloat16 (got 'float16')",
        ),
        (
            bench_vqvae.main,
            ["--output_dir", "unused", "--throughput_dtypes", "float32,fp8"],
            "argument --throughput_dtypes: must be a comma list from float32, bfloat16 (got 'float32,fp8')",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2(main, args, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and needle in err, err
