"""Benchmark CLIs refuse bad settings up front: one line, exit code 2 (nothing is timed, no data is made)."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import bench_py2d, bench_rayleigh_benard, bench_vqvae

REPO = Path(__file__).resolve().parents[1]


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


# ---------------------------------------------------------------------------------------------------------------------
# Every benchmark script: one line "python -m benchmarks.NAME: error: ..." naming the bad value, exit code 2, no
# traceback, and nothing written (the checks run before any computation or file). "{tmp}" is the test's folder.
# ---------------------------------------------------------------------------------------------------------------------
PREVIOUS_PROFILE = "{tmp}/prof"  # holds a profile.json of an earlier run (made by the test)
RB_CASE = "1e4:16x8:0.05"
LES = ["--output_dir", "{tmp}/new"]  # not there: a bad setting must not make it
TOKENIZER = ["--checkpoint", "{tmp}/model.eqx", "--config_path", "{tmp}/config.txt", "--data_path", "{tmp}/d.h5"]


def _rb_output_name() -> str:
    from solvers.rayleigh_benard.solver import RBConfig

    return RBConfig(rayleigh=1e4, nx=16, nz=8, dt=0.05, t_total=300.0, save_interval=1.0).output_name()


@pytest.mark.parametrize(
    "name, args, needle",
    [
        ("bench_hdf5", ["--samples", "0"], "argument --samples: must be >= 1 (got 0)"),
        ("bench_hdf5", ["--batches", "0"], "argument --batches: must be >= 1 (got 0)"),
        ("bench_hdf5", ["--repeats", "0"], "argument --repeats: must be >= 1 (got 0)"),
        ("bench_hdf5", ["--tmpdir", "{tmp}/missing"], "missing' is not an existing directory"),
        ("bench_hdf5", ["--batch", "32", "--samples", "16", "--tmpdir", "{tmp}"], "--batch 32 exceeds --samples 16"),
        ("bench_dataloader", ["--batch", "32", "--samples", "16", "--tmpdir", "{tmp}"], "--batch 32 exceeds --samples"),
        ("bench_dataloader", ["--batch", "0"], "argument --batch: must be >= 1 (got 0)"),
        ("bench_dataloader", ["--epochs", "0"], "argument --epochs: must be >= 1 (got 0)"),
        ("bench_dataloader", ["--workers", "0"], "argument --workers: must be >= 1 (got 0)"),
        ("bench_dataloader", ["--file", "{tmp}/missing.h5"], "missing.h5 does not exist or is not a file"),
        ("bench_tokenizer", TOKENIZER, "model.eqx does not exist or is not a file"),
        ("bench_tokenizer", [*TOKENIZER, "--batch_size", "0"], "argument --batch_size: must be >= 1 (got 0)"),
        ("bench_tokenizer", [*TOKENIZER, "--repeats", "0"], "argument --repeats: must be >= 1 (got 0)"),
        (
            "profile_step",
            ["--output_dir", "{tmp}/p", "--py2d_n", "7"],
            "py2d workload: --py2d_n must be an even integer >= 8",
        ),
        (  # every workload is checked before the first is traced: rb's grid fails before py2d runs
            "profile_step",
            ["--output_dir", "{tmp}/p", "--workloads", "py2d,rb", "--rb_grid", "32x4"],
            "rb workload: --rb_grid's nz must be an integer >= 8",
        ),
        (
            "profile_step",
            ["--output_dir", "{tmp}/p", "--state_seconds", "-1"],
            "argument --state_seconds: must be a finite number >= 0 (got '-1')",
        ),
        ("profile_step", ["--output_dir", "{tmp}/prof/profile.json"], "profile.json exists and is not a directory"),
        (
            "profile_step",
            ["--output_dir", PREVIOUS_PROFILE],
            "holds a previous profile (profile.json); pass --overwrite to replace it",
        ),
        (  # --overwrite deletes nothing while a setting is bad
            "profile_step",
            ["--output_dir", PREVIOUS_PROFILE, "--overwrite", "--frames", "0"],
            "argument --frames: must be >= 1 (got 0)",
        ),
        ("validate_rayleigh_benard", ["--output_dir", "{tmp}", "--cases", "1e4:abc:0.05"], "has grid 'abc', not NXxNZ"),
        (  # all cases are parsed before the first runs
            "validate_rayleigh_benard",
            ["--output_dir", "{tmp}", "--cases", f"{RB_CASE},1e4:16x8:abc"],
            "'1e4:16x8:abc' has dt 'abc', not a number",
        ),
        ("validate_rayleigh_benard", ["--output_dir", "{tmp}/rb", "--cases", RB_CASE], "already exists"),
        ("validate_py2d", ["--output_dir", "{tmp}", "--t_end", "-1"], "argument --t_end: must be a finite number > 0"),
        ("validate_py2d", ["--output_dir", "{tmp}", "--t_end", "2.5"], "--t_end must be a whole number"),
        ("bench_dedalus_rb", ["--steps", "0"], "argument --steps: must be >= 1 (got 0)"),
        ("bench_dedalus_rb", ["--rayleigh", "nan"], "argument --rayleigh: must be a finite number > 0 (got 'nan')"),
        ("bench_dedalus_rb", ["--sizes", "15x8"], "--sizes: nx must be even >= 4 and nz >= 8 (got 15x8)"),
        # validate_les: every setting is checked before the two runs; the folder is made only after them
        ("validate_les", [*LES, "--NX", "16"], "--NX must be an even integer >= 32 (got 16)"),
        ("validate_les", [*LES, "--NX", "20"], "--NX must be an even integer >= 32 (got 20)"),
        ("validate_les", [*LES, "--NX", "33"], "--NX must be an even integer >= 32 (got 33)"),
        ("validate_les", [*LES, "--dt", "0"], "argument --dt: must be a finite number > 0 (got '0')"),
        ("validate_les", [*LES, "--dt", "-0.001"], "argument --dt: must be a finite number > 0 (got '-0.001')"),
        ("validate_les", [*LES, "--every", "nan"], "argument --every: must be a finite number > 0 (got 'nan')"),
        (
            "validate_les",
            [*LES, "--every", "0.004", "--dt", "0.01"],
            "--every must be a positive multiple of --dt=0.01 (got 0.004 = 0.4 steps)",
        ),
        (
            "validate_les",
            [*LES, "--t_spinup", "0", "--t_avg", "0"],
            "argument --t_avg: must be a finite number > 0 (got '0')",
        ),
        ("validate_les", [*LES, "--t_spinup", "-1"], "argument --t_spinup: must be a finite number >= 0 (got '-1')"),
        ("validate_les", [*LES, "--t_spinup", "0.3"], "--t_spinup must be 0 or a multiple of --every=0.5 (got 0.3)"),
        ("validate_les", [*LES, "--t_avg", "0.7"], "--t_avg must be a positive multiple of --every=0.5 (got 0.7)"),
        ("validate_les", [*LES, "--cost_steps", "0"], "argument --cost_steps: must be >= 1 (got 0)"),
        ("validate_les", ["--output_dir", " "], "--output_dir must not be empty"),
        (
            "validate_les",
            ["--output_dir", "{tmp}/prof/profile.json/les"],
            "cannot be made: {tmp}/prof/profile.json is not a directory",
        ),
        (
            "validate_les",
            ["--output_dir", "{tmp}/les"],
            "les_validation.txt already exists; pass --overwrite to replace it",
        ),
        (  # --overwrite replaces nothing while a setting is bad
            "validate_les",
            ["--output_dir", "{tmp}/les", "--overwrite", "--dt", "nan"],
            "argument --dt: must be a finite number > 0 (got 'nan')",
        ),
    ],
)
def test_every_script_refuses_bad_input_before_any_work(name, args, needle, tmp_path, monkeypatch, capsys):
    (tmp_path / "prof").mkdir()
    (tmp_path / "prof" / "profile.json").write_text("{}\n")
    (tmp_path / "rb").mkdir()
    (tmp_path / "rb" / _rb_output_name()).write_text("an earlier run\n")
    (tmp_path / "les").mkdir()
    (tmp_path / "les" / "les_validation.txt").write_text("an earlier run\n")
    monkeypatch.chdir(tmp_path)  # anything written to a relative path would show up here too
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    main = importlib.import_module(f"benchmarks.{name}").main
    try:
        code = main([a.replace("{tmp}", str(tmp_path)) for a in args])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    needle = needle.replace("{tmp}", str(tmp_path))
    assert err.startswith(f"python -m benchmarks.{name}: error: ") and needle in err, err
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


def test_run_all_refuses_bad_settings_before_any_stage(tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "run_all.sh"
    for env, needle in (
        ({"BUDGET_S": "10m"}, "BUDGET_S must be a positive whole number of seconds"),
        ({"QUICK": "2"}, "QUICK must be 0 (GPU sizes) or 1 (tiny sizes) (got '2')"),
        ({"STAGES": "rb,bogus"}, "unknown stage 'bogus' in STAGES (stages: env py2d_goal rb "),
        ({"STAGES": "rb,env,rb"}, "stage 'rb' is named twice in STAGES"),
        ({"VQ_TRAIN_S": "0"}, "VQ_TRAIN_S must be a positive whole number of seconds"),
    ):
        out = tmp_path / "o u t"
        res = subprocess.run(
            ["bash", str(script), str(out)], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
        )
        err = res.stderr.strip()
        assert res.returncode == 2 and len(err.splitlines()) == 1 and needle in err, err
        assert err.startswith("bash benchmarks/run_all.sh: error: ") and not out.exists()


def test_run_all_runs_the_named_stages_in_the_given_order(tmp_path):
    """STAGES picks the stages a short device session runs first; the others must not run at all."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "run_all.sh"
    out = tmp_path / "out"
    env = {**os.environ, "QUICK": "1", "STAGES": "hdf5,env", "BUDGET_S": "300"}
    res = subprocess.run(["bash", str(script), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = (out / "status.txt").read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == ["hdf5", "env", "total"], lines
    assert all(" rc=0 " in ln for ln in lines[:2]), lines
    assert sorted(p.name for p in out.glob("*.log")) == ["env.log", "hdf5.log"]


def test_bench_vqvae_refuses_to_reuse_a_run_of_other_settings(
    tiny_trained_run, py2d_tiny_data, tmp_path, monkeypatch, capsys
):
    """The run kept in --output_dir from an earlier call must be the model this call describes: its quality used to be
    reported next to the new settings' speed and parameter count."""
    import shutil

    run_dir = tmp_path / "bench" / "py2d" / "run"
    shutil.copytree(tiny_trained_run, run_dir)  # ch 8, trained on py2d_tiny_data
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    monkeypatch.setattr(bench_vqvae, "make_data", lambda *a, **k: (Path(py2d_tiny_data), Path(py2d_tiny_data)))
    monkeypatch.setattr(bench_vqvae, "time_steps", lambda *a, **k: pytest.fail("timed before the check"))
    with pytest.raises(SystemExit) as exc:
        bench_vqvae.main(["--output_dir", str(tmp_path / "bench"), "--cases", "py2d", "--ch", "16", "--no_progress"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1, err
    assert f"{run_dir} was trained with other settings (" in err and " ch," in err and "--overwrite" in err, err
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


def test_bench_vqvae_stops_training_at_its_time_limit_and_still_reports(py2d_tiny_data, tmp_path, monkeypatch, capsys):
    """--train_seconds S fits the step count from the resident-batch step time less compilation, but the real loop
    can be slower (an H100 run: 32 ms per step with compilation against 22.3, and the stage was killed before it
    reported anything): training stops at 1.25 S of wall time, and the figures describe the steps actually taken."""
    speed = dict(ms_per_step=1e-3, samples_per_s=1e6, ms_per_forward=1e-3, step_over_forward=1.0, n_params=1)
    speed["compile_s"] = 0.00099  # the schedule is fitted to what compilation leaves: 0.01 ms / 1 µs = 10 steps
    monkeypatch.setattr(bench_vqvae, "make_data", lambda *a, **k: (Path(py2d_tiny_data), Path(py2d_tiny_data)))
    monkeypatch.setattr(bench_vqvae, "time_steps", lambda *a, **k: dict(speed))
    out = tmp_path / "bench"
    flags = ["--cases", "py2d", "--ch", "8", "--ch_mult", "1,2", "--embed_dim", "4", "--codebook_size", "16"]
    flags += ["--batch_size", "2", "--steps", "40", "--train_seconds", "0.001", "--no_progress"]
    assert bench_vqvae.main(["--output_dir", str(out), *flags]) == 0
    res = json.loads((out / "results.json").read_text())["cases"]["py2d"]
    assert res["planned_steps"] == 10 and res["steps"] < 10, res
    stdout = capsys.readouterr().out
    assert "float32: 0.0 ms/step" in stdout.split("###")[0]  # the step time, printed before training
    assert f"{res['steps']} steps in " in stdout and "stopped at the time limit (10 planned)" in stdout, stdout
    saved = (out / "py2d" / "run" / "config.txt").read_text()
    assert f"step = {res['steps']}" in saved and "steps = 10" in saved


def test_validate_les_reports_only_resolved_wavenumbers():
    """The printed shells are kept by the 2/3 rule (k <= k_max) and each appears once: at N = 32 (k_max = 10) the
    fixed list 1, 2, 4, 8, 12, 16 plus the last five shells printed k = 16 (E = 0) and k = 8 twice."""
    from benchmarks.validate_les import reported_wavenumbers
    from solvers.py2d_turbulence.py2d_core import SpectralGrid

    assert reported_wavenumbers(SpectralGrid(32).kmax) == [1, 2, 4, 6, 7, 8, 9, 10]
    assert reported_wavenumbers(SpectralGrid(128).kmax) == [1, 2, 4, 8, 12, 16, 24, 32, 38, 39, 40, 41, 42]
    for n in range(32, 4097, 2):  # every grid --NX allows, up to 4096
        ks = reported_wavenumbers((n - 1) // 3)
        assert ks == sorted(set(ks)) and ks[0] == 1 and ks[-1] == (n - 1) // 3, (n, ks)


def test_bench_vqvae_times_the_program_that_training_then_loads_from_the_cache(py2d_tiny_data, tmp_path):
    """The step is timed on arrays laid out as training lays them out (``train_vqvae.placements``): the same program,
    so the training's compilation is a load from the persistent cache. With the step timed on default-placed arrays
    the cache key differed and training compiled the step a second time (seconds on this CPU, tens on a GPU, out
    of --train_seconds). A fresh cache in a subprocess: exactly one train-step program is written to it."""
    cache = tmp_path / "cache"
    script = f"""
from benchmarks.bench_vqvae import time_steps
from models.train_vqvae import TrainConfig, train
cfg = TrainConfig(data_path={py2d_tiny_data!r}, fields=("omega",), steps=2, batch_size=2, ch=4, num_groups=2,
                  ch_mult=(1,), embed_dim=4, codebook_size=8, scales=((8, 8), (16, 16)), restart_every=0,
                  prefix_weight=0.0, log_every=1)
time_steps(cfg, (16, 16), ("periodic", "periodic"), 1)
train(cfg, {str(tmp_path / "run")!r}, progress=False)
"""
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "run" / "model.eqx").exists()
    steps = [p.name for p in cache.iterdir() if p.name.startswith("jit_train_step")]
    assert len(steps) == 1, steps
