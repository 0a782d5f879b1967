"""The Rayleigh–Bénard solver end to end: CLI, output file, ensembles, resume, CFL guard and bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from solvers.common import hdf5_utils
from solvers.common.atomic import file_sha256
from solvers.rayleigh_benard import chebyshev as cheb
from solvers.rayleigh_benard import rb_core as rb
from solvers.rayleigh_benard import run_solver, solver

TINY = [
    "--rayleigh", "2e4", "--nx", "16", "--nz", "9", "--dt", "0.05", "--t_total", "1.0",
    "--save_interval", "0.25", "--ic_amplitude", "0.3", "--no_progress",
]  # fmt: skip


def cli(tmp_path, *extra, out="out"):
    code = run_solver.main(["--output_dir", str(tmp_path / out), *TINY, *extra])
    files = sorted((tmp_path / out).glob("*.h5"))
    return code, (files[0] if files else None)


def read_all(path, field="buoyancy"):
    with hdf5_utils.open_dataset(path) as f:
        return f.read(field), f.samples(), f.diagnostics(), f.complete


def test_cli_writes_a_valid_file_on_a_uniform_wall_bounded_grid(tmp_path, capsys):
    code, path = cli(tmp_path, "--fields", "buoyancy,u,w,vorticity,pressure")
    captured = capsys.readouterr()
    assert code == 0 and captured.out.strip() == str(path)
    assert "time-mean Nu" in captured.err
    assert hdf5_utils.validate(path) == []  # zero velocity at t = 0 is allowed (step 0)
    with hdf5_utils.open_dataset(path) as f:
        assert f.shape == (9, 16) and f.n_samples == 5 and f.complete
        assert f.grid.bc_x == "periodic" and f.grid.bc_y == "wall" and f.grid.vertical_name == "z"
        np.testing.assert_allclose(f.grid.y, np.linspace(0, 1, 9))
        assert f.attrs["rayleigh"] == 2e4 and f.attrs["prandtl"] == 1.0
        b, u, w = f.read("buoyancy"), f.read("u"), f.read("w")
    # boundary conditions in the stored fields: b = 1 at the bottom, 0 at the top; no-slip
    np.testing.assert_allclose(b[:, 0, :], 1.0, atol=1e-6)
    np.testing.assert_allclose(b[:, -1, :], 0.0, atol=1e-6)
    assert np.abs(u[:, [0, -1], :]).max() < 1e-6 and np.abs(w[:, [0, -1], :]).max() < 1e-6
    assert np.abs(w[-1]).max() > 1e-4  # something moves


def test_native_grid_stores_the_chebyshev_points(tmp_path):
    code, path = cli(tmp_path, "--grid", "native")
    assert code == 0
    with hdf5_utils.open_dataset(path) as f:
        np.testing.assert_allclose(f.grid.y, cheb.nodes(9))


def test_ensemble_members_equal_independent_runs(tmp_path):
    code, path = cli(tmp_path, "--n_trajectories", "3", "--seed", "4")
    assert code == 0
    b, samples, _, _ = read_all(path)
    cfg = solver.RBConfig(
        rayleigh=2e4, nx=16, nz=9, dt=0.05, t_total=1.0, save_interval=0.25, ic_amplitude=0.3, n_trajectories=1
    )
    with jax.enable_x64(True):
        sim = solver.make_simulation(cfg)
        for m in (0, 2):
            key = jax.random.fold_in(jax.random.PRNGKey(4), m)
            state = jax.tree.map(lambda a: a[None], rb.perturbed_state(sim.model, key, 0.3))
            frames = [np.asarray(sim.frame(state)["buoyancy"][0])]
            for _ in range(4):
                state, fields, _, _ = sim.chunk(state)
                frames.append(np.asarray(fields["buoyancy"][0]))
            np.testing.assert_allclose(b[samples["trajectory"] == m], np.stack(frames), atol=1e-6)
    assert not np.allclose(b[samples["trajectory"] == 0], b[samples["trajectory"] == 1])


def test_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, interrupted_at_chunk):
    real = solver.make_simulation
    monkeypatch.setattr(solver, "make_simulation", interrupted_at_chunk(3, real))
    assert cli(tmp_path)[0] == 130  # Ctrl-C's exit code; the committed frames stay
    path = next((tmp_path / "out").glob("*.h5"))
    partial, _, _, complete = read_all(path)
    assert not complete and len(partial) == 2  # frames 0, 1 (the 3rd chunk is dispatched before frame 2 is written)
    monkeypatch.setattr(solver, "make_simulation", real)
    assert cli(tmp_path, "--resume")[0] == 0
    resumed, _, r_diag, complete = read_all(path)
    assert complete
    assert cli(tmp_path, out="straight")[0] == 0
    straight, _, s_diag, _ = read_all(next((tmp_path / "straight").glob("*.h5")))
    np.testing.assert_array_equal(resumed, straight)
    np.testing.assert_array_equal(r_diag["nusselt_volume"], s_diag["nusselt_volume"])


def test_cfl_guard_stops_the_run_and_keeps_good_frames(tmp_path, capsys):
    code, path = cli(tmp_path, "--rayleigh", "1e6", "--dt", "0.25", "--t_total", "20", "--save_interval", "0.5")
    err = capsys.readouterr().err
    assert code == 3 and ("CFL" in err or "non-finite" in err), err
    with hdf5_utils.open_dataset(path) as f:
        assert not f.complete and f.n_samples >= 1 and ("CFL" in f.stop_reason or "non-finite" in f.stop_reason)
        assert np.all(np.isfinite(f.read("buoyancy")))


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--rayleigh", "0"], "--rayleigh must be > 0 (got 0)"),
        (["--prandtl", "-1"], "--prandtl must be > 0 (got -1)"),
        (["--aspect", "0"], "--aspect must be in"),
        (["--nx", "15"], "--nx must be an even integer >= 4 (got 15)"),
        (["--nz", "4"], "--nz must be an integer >= 8"),
        (["--dt", "0"], "--dt must be > 0"),
        (["--save_interval", "0.07"], "--save_interval must be a positive multiple of --dt"),
        (["--fields", "buoyancy,temperature"], "unknown field 'temperature'"),
        (["--grid", "cheb"], "cheb"),
        (["--ic_amplitude", "0"], "--ic_amplitude must be in (0, 1]"),
        (["--ic_amplitude", "1e300"], "--ic_amplitude must be in (0, 1] (the buoyancy contrast is 1; got 1e+300)"),
        (["--n_trajectories", "0"], "--n_trajectories must be >= 1"),
        (["--rayleigh", "inf"], "--rayleigh must be a finite number (got inf)"),
        (["--max_dt", "nan"], "--max_dt must be a finite number (got nan)"),
        (["--ic_file", "/nonexistent/state.h5"], "--ic_file '/nonexistent/state.h5' does not exist"),
        (["--n_trajectories", "100000000000"], "--n_trajectories 100000000000 needs at least"),
        (["--spinup_time", "1e300"], "at most 2147483647 steps are allowed"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, needle):
    with pytest.raises(SystemExit) as exc:
        sys.exit(run_solver.main(["--output_dir", str(tmp_path / "out"), *TINY, *args]))
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not list((tmp_path / "out").glob("*.h5"))


def test_ic_file_continues_from_the_saved_state(tmp_path):
    code, first = cli(tmp_path, out="first")
    assert code == 0
    code, second = cli(tmp_path, "--ic_file", str(first), out="second")
    assert code == 0 and "from-" in second.name
    b1, _, _, _ = read_all(first)
    b2, s2, _, _ = read_all(second)
    np.testing.assert_allclose(b2[0], b1[-1], atol=1e-6)  # frame 0 of the new run = last state of the old
    assert s2["time"][0] == 0.0
    with hdf5_utils.open_dataset(second) as f, hdf5_utils.open_dataset(first) as g:
        source = json.loads(f.attrs["ic_source"])  # the initial file by content, its run, and the state used
        assert source["sha256"] == file_sha256(first) and source["created"] == g.attrs["created"]
        assert (source["state_step"], source["state_time"]) == g.read_state()[1:]
    code, _ = cli(tmp_path, "--ic_file", str(first), "--nx", "32", out="third")
    assert code == 2
    # the same grid points in a box of another width: the state's wavenumbers would be reinterpreted (was accepted)
    code, _ = cli(tmp_path, "--ic_file", str(first), "--aspect", "2", out="fourth")
    assert code == 2 and not (tmp_path / "fourth").exists()


ADAPTIVE = ["--rayleigh", "1e5", "--nx", "32", "--nz", "13", "--dt", "0.02", "--max_dt", "0.1", "--t_total", "6",
            "--save_interval", "1", "--ic_amplitude", "0.3"]  # fmt: skip


def test_adaptive_dt_follows_the_cfl_and_keeps_frames_on_exact_times(tmp_path):
    code, path = cli(tmp_path, *ADAPTIVE)
    assert code == 0
    _, samples, d, complete = read_all(path)
    assert complete and hdf5_utils.validate(path) == []
    np.testing.assert_allclose(samples["time"], np.arange(7.0), atol=1e-12)
    dt, cfl = d["dt"][:, 0], d["cfl"][:, 0]
    assert dt.max() <= 0.1 + 1e-12 and len(np.unique(np.round(dt, 12))) > 1  # it adapted, within max_dt
    assert cfl.max() <= rb.CFL_LIMIT
    steps = samples["step"]
    np.testing.assert_allclose(np.diff(steps), np.round(1.0 / dt[9::10][: len(steps) - 1]), atol=0)


def test_adaptive_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, interrupted_at_chunk):
    real = solver.make_simulation
    monkeypatch.setattr(solver, "make_simulation", interrupted_at_chunk(4, real))
    assert cli(tmp_path, *ADAPTIVE)[0] == 130  # Ctrl-C's exit code; the committed frames stay
    monkeypatch.setattr(solver, "make_simulation", real)
    assert cli(tmp_path, *ADAPTIVE, "--resume")[0] == 0
    assert cli(tmp_path, *ADAPTIVE, out="straight")[0] == 0
    path = next((tmp_path / "out").glob("*.h5"))
    resumed, r_samples, r_diag, complete = read_all(path)
    straight, s_samples, s_diag, _ = read_all(next((tmp_path / "straight").glob("*.h5")))
    assert complete
    np.testing.assert_array_equal(r_samples["step"], s_samples["step"])
    np.testing.assert_array_equal(r_diag["dt"], s_diag["dt"])
    np.testing.assert_array_equal(resumed, straight)


def test_resume_of_a_file_planned_with_other_diagnostics_rows_is_refused_untouched(
    tmp_path, monkeypatch, capsys, interrupted_at_chunk
):
    """A file written while the automatic diagnostics interval was another (an older Gust) is refused, not
    resumed into a layout it does not have."""
    real = solver.make_simulation
    monkeypatch.setattr(solver, "make_simulation", interrupted_at_chunk(3, real))
    assert cli(tmp_path, *ADAPTIVE)[0] == 130
    path = next((tmp_path / "out").glob("*.h5"))
    before = path.read_bytes()
    monkeypatch.setattr(solver, "make_simulation", real)
    rows = solver.RBConfig.diag_interval_steps.fget
    monkeypatch.setattr(solver.RBConfig, "diag_interval_steps", property(lambda cfg: 2 * rows(cfg)))
    capsys.readouterr()
    assert cli(tmp_path, *ADAPTIVE, "--resume")[0] == 2
    err = capsys.readouterr().err.strip()
    assert "diagnostics rows where these settings plan" in err and len(err.splitlines()) == 1, err
    assert path.read_bytes() == before


# convection sets in within the second frame and outgrows the dt = 0.25 chosen from the quiet first one
BURST_SETUP = ["--rayleigh", "1e5", "--nx", "32", "--nz", "13", "--dt", "0.25", "--save_interval", "2",
               "--ic_amplitude", "0.3"]  # fmt: skip
BURST = [*BURST_SETUP, "--t_total", "8"]


def test_adaptive_dt_redoes_a_frame_that_outgrew_its_step(tmp_path, capsys):
    """Step rejection: the frame over t ∈ [2, 4] reaches CFL > 1 at the dt chosen from the quiet first frame. With
    fixed dt that stops the run; with adaptive dt the frame is redone from t = 2 at a smaller dt and the run ends."""
    code, _ = cli(tmp_path, *BURST, out="fixed")
    assert code == 3 and "CFL" in capsys.readouterr().err
    code, path = cli(tmp_path, *BURST, "--max_dt", "0.25", out="adaptive")
    err = capsys.readouterr().err
    assert code == 0 and "t = 2: CFL" in err and "redoing the frame at dt = " in err, err
    _, samples, d, complete = read_all(path)
    assert complete and hdf5_utils.validate(path) == []
    np.testing.assert_allclose(samples["time"], np.arange(0.0, 8.1, 2.0), atol=1e-12)
    dt, cfl = d["dt"][:, 0], d["cfl"][:, 0]
    assert dt[0] == 0.25 and dt[10:20].max() < 0.25 and cfl.max() <= rb.CFL_LIMIT  # rows 10-19: t in (2, 4]


@pytest.mark.parametrize("kill_at,frames_kept", [(5, 2), (6, 3)])
def test_a_run_with_a_redone_frame_resumes_to_the_uninterrupted_result(
    tmp_path, monkeypatch, interrupted_at_chunk, kill_at, frames_kept
):
    args = [*BURST, "--max_dt", "0.25"]
    real = solver.make_simulation
    # chunk calls: 1 frame 1, 2 frame 2 (fails), 3 frame 3 (dropped), 4 frame 2 redone, 5 frame 3, 6 frame 4: killed
    # at call 5 the run must replay the redo on resume; at call 6 it resumes after the redone frame
    monkeypatch.setattr(solver, "make_simulation", interrupted_at_chunk(kill_at, real))
    assert cli(tmp_path, *args)[0] == 130  # Ctrl-C's exit code; the committed frames stay
    assert len(read_all(next((tmp_path / "out").glob("*.h5")))[0]) == frames_kept
    monkeypatch.setattr(solver, "make_simulation", real)
    assert cli(tmp_path, *args, "--resume")[0] == 0
    assert cli(tmp_path, *args, out="straight")[0] == 0
    resumed, r_samples, r_diag, complete = read_all(next((tmp_path / "out").glob("*.h5")))
    straight, s_samples, s_diag, _ = read_all(next((tmp_path / "straight").glob("*.h5")))
    assert complete
    np.testing.assert_array_equal(r_samples["step"], s_samples["step"])
    np.testing.assert_array_equal(r_diag["dt"], s_diag["dt"])
    np.testing.assert_array_equal(resumed, straight)


def test_the_spin_up_redoes_a_failed_interval_as_the_saved_run_does(tmp_path, capsys):
    # at dt = 1 the very first interval [0, 2] reaches CFL > 1 and is redone, in the saved frames and in a spin-up
    args = [*BURST_SETUP, "--dt", "1", "--max_dt", "1", "--t_total", "2"]
    assert cli(tmp_path, *args, out="saved")[0] == 0
    assert "t = 0: CFL" in capsys.readouterr().err
    code, path = cli(tmp_path, *args, "--spinup_time", "2", out="spun")
    assert code == 0
    saved, _, _, _ = read_all(next((tmp_path / "saved").glob("*.h5")))
    spun, samples, _, complete = read_all(path)
    assert complete and samples["time"][0] == 2.0 and np.all(np.isfinite(spun))
    np.testing.assert_array_equal(spun[0], saved[1])  # t = 2 reached through the same redone interval


def test_adaptive_dt_gives_up_after_the_retries_and_keeps_the_good_frames(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(solver.StepControl, "MAX_RETRIES", 0)
    code, path = cli(tmp_path, *BURST, "--max_dt", "0.25")
    assert code == 3 and "CFL" in capsys.readouterr().err
    with hdf5_utils.open_dataset(path) as f:
        assert not f.complete and f.n_samples == 2 and "CFL" in f.stop_reason


def test_an_adaptive_spin_up_whose_retries_are_spent_stops_as_a_saved_frame_does(tmp_path, capsys, monkeypatch):
    # at dt = 1 the first interval [0, 2] reaches CFL > 1 (the test above); with no retry left the spin-up stops the
    # run (exit 3) as a saved frame does, instead of writing frame 0 from the over-CFL state
    monkeypatch.setattr(solver.StepControl, "MAX_RETRIES", 0)
    code, path = cli(tmp_path, *BURST_SETUP, "--dt", "1", "--max_dt", "1", "--t_total", "2", "--spinup_time", "2")
    err = capsys.readouterr().err
    assert code == 3 and "CFL" in err and "in the spin-up interval ending at t = 2" in err, err
    with hdf5_utils.open_dataset(path) as f:
        assert not f.complete and f.n_samples == 0 and "CFL" in f.stop_reason


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--max_dt", "0.01"], "--max_dt must be 0 (fixed dt) or >= --dt"),
        (["--max_dt", "0.1", "--cfl_safety", "1.5"], "--cfl_safety must be in (0, 1)"),
        (["--max_dt", "0.1", "--spinup_time", "0.1"], "--spinup_time must be a multiple of --save_interval"),
    ],
)
def test_bad_adaptive_settings(tmp_path, capsys, args, needle):
    code, _ = cli(tmp_path, *args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and len(err.splitlines()) == 1, err


def test_four_simulated_devices_give_the_single_device_result(tmp_path):
    args = ["--output_dir", str(tmp_path / "sharded"), *TINY, "--n_trajectories", "4"]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    res = subprocess.run(
        [sys.executable, "-m", "solvers.rayleigh_benard.run_solver", *args],
        cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert "4 device(s)" in res.stderr
    code, single = cli(tmp_path, "--n_trajectories", "4", out="single")
    assert code == 0
    sharded = next((tmp_path / "sharded").glob("*.h5"))
    (a, sa, da, _), (b, sb, db, _) = read_all(sharded), read_all(single)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * np.abs(b).max())
    np.testing.assert_array_equal(sa["trajectory"], sb["trajectory"])
    np.testing.assert_allclose(da["nusselt_volume"], db["nusselt_volume"], rtol=1e-6)


def test_adaptive_dt_reaches_max_dt_whatever_the_rows_per_frame(tmp_path):
    """Every step count adaptive dt picks is a multiple of the diagnostics rows per frame, so dt ≤ save_interval/rows.
    The automatic rows used to be 25 for 25 steps per frame (dt 0.01, save interval 0.25): dt never grew above its
    start, whatever --max_dt said. Now at most save_interval/max_dt rows (5 here), and dt reaches max_dt."""
    args = ["--rayleigh", "1e4", "--nx", "16", "--nz", "9", "--dt", "0.01", "--max_dt", "0.05",
            "--save_interval", "0.25", "--t_total", "3", "--ic_amplitude", "0.01", "--no_progress"]  # fmt: skip
    assert run_solver.main(["--output_dir", str(tmp_path), *args]) == 0
    path = next(tmp_path.glob("*.h5"))
    with hdf5_utils.open_dataset(path) as f:
        dt = f.diagnostics()["dt"][:, 0]
    assert len(dt) == 12 * 5  # 12 frames after frame 0, 5 rows each
    assert dt[0] == pytest.approx(0.01) and dt.max() == pytest.approx(0.05)


def test_a_fixed_dt_spin_up_past_the_cfl_limit_stops_instead_of_writing_frame_0(tmp_path, capsys):
    """The spin-up saves no diagnostics: a fixed-dt run whose CFL number ran away in it wrote a frame 0 of |b| ~ 4e20
    as a good frame. The state after the spin-up is now checked as every frame is."""
    args = ["--rayleigh", "1e6", "--nx", "32", "--nz", "16", "--dt", "0.1", "--save_interval", "0.5", "--spinup_time",
            "5", "--t_total", "5", "--ic_amplitude", "1", "--no_progress"]  # fmt: skip
    assert run_solver.main(["--output_dir", str(tmp_path), *args]) == 3
    err = capsys.readouterr().err
    assert "above the limit 1 at the end of the spin-up" in err, err
    with hdf5_utils.open_dataset(next(tmp_path.glob("*.h5"))) as f:
        assert f.n_samples == 0 and not f.complete
