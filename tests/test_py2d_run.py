"""The turbulence solver end to end: CLI, output file, ensembles, sharding, crash safety and bad input."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from solvers.common import driver, hdf5_utils
from solvers.common.atomic import file_sha256
from solvers.py2d_turbulence import initial_conditions as ic
from solvers.py2d_turbulence import run_solver, solver

REPO = Path(__file__).resolve().parents[1]
TINY = ["--NX", "16", "--dt", "0.01", "--t_total", "0.2", "--save_interval", "0.05", "--Re", "200", "--no_progress"]


def cli(tmp_path, *extra, out="out"):
    """Run the CLI in-process; return (exit code, output path or None)."""
    argv = ["--output_dir", str(tmp_path / out), *TINY, *extra]
    code = run_solver.main(argv)
    files = sorted((tmp_path / out).glob("*.h5"))
    return code, (files[0] if files else None)


def read_all(path, field="omega"):
    with hdf5_utils.open_dataset(path) as f:
        return f.read(field), f.samples(), f.diagnostics(), f.complete


def test_cli_run_writes_a_valid_complete_file(tmp_path, capsys):
    code, path = cli(tmp_path, "--fields", "omega,psi,u,v", "--seed", "3")
    assert code == 0
    assert capsys.readouterr().out.strip() == str(path)
    assert hdf5_utils.validate(path) == []
    with hdf5_utils.open_dataset(path) as f:
        assert f.fields == ["omega", "psi", "u", "v"] or sorted(f.fields) == ["omega", "psi", "u", "v"]
        assert f.n_samples == 5 and f.complete
        assert f.attrs["Re"] == 200.0 and f.attrs["seed"] == 3 and f.attrs["scheme"] == "ab2cn"
        assert f.grid.bc_x == "periodic" and f.grid.bc_y == "periodic"
        np.testing.assert_allclose(f.samples()["time"], [0, 0.05, 0.1, 0.15, 0.2], atol=1e-12)
        np.testing.assert_array_equal(f.samples()["step"], [0, 5, 10, 15, 20])
        omega, psi, u, v = (f.read(n).astype(np.float64) for n in ("omega", "psi", "u", "v"))
        d = f.diagnostics()
    # stored fields are consistent with each other: u = ∂ψ/∂y, v = −∂ψ/∂x, ω = −∇²ψ (spectrally)
    k = np.fft.fftfreq(16) * 16
    psi_hat = np.fft.fft2(psi)
    np.testing.assert_allclose(np.fft.ifft2(1j * k[:, None] * psi_hat).real, u, atol=1e-5)
    np.testing.assert_allclose(np.fft.ifft2(-1j * k[None, :] * psi_hat).real, v, atol=1e-5)
    np.testing.assert_allclose(np.fft.ifft2((k[:, None] ** 2 + k[None, :] ** 2) * psi_hat).real, omega, atol=1e-4)
    # diagnostics: energy from the stored velocity matches the logged energy at the frame times
    e_frames = 0.5 * np.mean(u**2 + v**2, axis=(1, 2))
    rows = np.searchsorted(d["time"], 0.2 - 1e-9)
    assert d["energy"][rows, 0] == pytest.approx(e_frames[-1], rel=1e-5)


def test_ensemble_members_equal_independent_runs(tmp_path):
    code, ens = cli(tmp_path, "--n_trajectories", "3", "--seed", "5", out="ens")
    assert code == 0
    omega, samples, _, _ = read_all(ens)
    for m in (0, 2):
        np.save(tmp_path / f"ic{m}.npy", ic.random_field(16, seed=5, trajectory=m))
        code, single = cli(tmp_path, "--ic_file", str(tmp_path / f"ic{m}.npy"), out=f"single{m}")
        assert code == 0
        alone, _, _, _ = read_all(single)
        mine = omega[samples["trajectory"] == m]
        np.testing.assert_allclose(mine, alone, rtol=0, atol=1e-6 * np.abs(alone).max())
    assert not np.allclose(omega[samples["trajectory"] == 0], omega[samples["trajectory"] == 1])


def test_four_simulated_devices_give_the_single_device_result(tmp_path):
    args = ["--output_dir", str(tmp_path / "sharded"), *TINY, "--n_trajectories", "4"]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    res = subprocess.run(
        [sys.executable, "-m", "solvers.py2d_turbulence.run_solver", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "4 device(s)" in res.stderr
    code, single = cli(tmp_path, "--n_trajectories", "4", out="single")
    assert code == 0
    sharded = next((tmp_path / "sharded").glob("*.h5"))
    a, b = read_all(sharded), read_all(single)
    np.testing.assert_allclose(a[0], b[0], rtol=0, atol=1e-6 * np.abs(b[0]).max())
    np.testing.assert_array_equal(a[1]["trajectory"], b[1]["trajectory"])


def test_two_processes_under_jax_distributed_give_the_single_process_result(tmp_path, two_processes):
    # 2 processes x 2 simulated CPU devices, joined by jax.distributed (gloo collectives); process 0 writes
    args = [sys.executable, "-m", "solvers.py2d_turbulence.run_solver", "--output_dir", str(tmp_path / "multi")]
    args += [*TINY, "--n_trajectories", "4"]
    res = two_processes(
        lambda address, i: [*args, "--coordinator_address", address, "--num_processes", "2", "--process_id", str(i)]
    )
    assert [r[0] for r in res] == [0, 0], [r[2][-2000:] for r in res]
    outs = [r[1:] for r in res]
    assert "4 device(s)" in outs[0][1]
    assert ".h5" in outs[0][0] and ".h5" not in outs[1][0]  # only process 0 reports (and writes) the file
    code, single = cli(tmp_path, "--n_trajectories", "4", out="single")
    assert code == 0
    multi = list((tmp_path / "multi").glob("*.h5"))
    assert len(multi) == 1 and hdf5_utils.validate(multi[0]) == []
    a, b = read_all(multi[0]), read_all(single)
    np.testing.assert_allclose(a[0], b[0], rtol=0, atol=1e-6 * np.abs(b[0]).max())
    np.testing.assert_allclose(a[2]["energy"], b[2]["energy"], rtol=1e-12)


def test_killed_run_keeps_its_samples_and_resumes_to_the_uninterrupted_result(tmp_path, wait_for_samples):
    args = ["--NX", "16", "--dt", "0.01", "--t_total", "15", "--save_interval", "0.01", "--no_progress"]
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "solvers.py2d_turbulence.run_solver", "--output_dir", str(out), *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    wait_for_samples(out, 20, [proc])
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed; make it longer"
    path = next(out.glob("*.h5"))
    problems = hdf5_utils.validate(path)
    assert len(problems) == 1 and "incomplete" in problems[0], problems
    partial, _, _, complete = read_all(path)
    assert not complete and len(partial) >= 20 and np.all(np.isfinite(partial))

    # without --resume the partial file is refused and left untouched
    before = path.read_bytes()
    assert run_solver.main(["--output_dir", str(out), *args]) == 2
    assert path.read_bytes() == before

    assert run_solver.main(["--output_dir", str(out), *args, "--resume"]) == 0
    resumed, r_samples, r_diag, complete = read_all(path)
    assert complete and hdf5_utils.validate(path) == []
    np.testing.assert_array_equal(resumed[: len(partial)], partial)

    assert run_solver.main(["--output_dir", str(tmp_path / "straight"), *args]) == 0
    straight, s_samples, s_diag, _ = read_all(next((tmp_path / "straight").glob("*.h5")))
    np.testing.assert_array_equal(resumed, straight)
    np.testing.assert_array_equal(r_samples["time"], s_samples["time"])
    np.testing.assert_array_equal(r_diag["energy"], s_diag["energy"])
    # --resume on a complete file changes nothing
    before = path.read_bytes()
    assert run_solver.main(["--output_dir", str(out), *args, "--resume"]) == 0
    assert path.read_bytes() == before


@pytest.mark.parametrize("state_seconds,state_at", [("0", 3), ("1e9", 1)])
def test_resume_continues_from_the_last_saved_state(
    tmp_path, monkeypatch, capsys, interrupted_at_chunk, state_seconds, state_at
):
    """The state is saved with frame 0, the last frame and the first frame after every --state_seconds (0: every
    frame); a resumed run rewinds to it, recomputes the frames after it and ends bit-for-bit as a straight run."""
    real = solver.make_simulation
    monkeypatch.setattr(solver, "make_simulation", interrupted_at_chunk(4, real))
    assert cli(tmp_path, "--state_seconds", state_seconds)[0] == 130  # Ctrl-C: exit 130, committed frames kept
    path = next((tmp_path / "out").glob("*.h5"))
    with hdf5_utils.open_dataset(path) as f:
        assert f.n_samples == 3 and f.state_counts[0] == state_at  # frames 0–2 committed; the state after frame 2 or 0
        assert f.n_state_saves == state_at
        first_start = {k: f.attrs[k] for k in hdf5_utils.PROVENANCE_KEYS}
    monkeypatch.setattr(solver, "make_simulation", real)
    capsys.readouterr()
    assert cli(tmp_path, "--resume", "--state_seconds", state_seconds)[0] == 0
    err = capsys.readouterr().err
    assert f"at frame {state_at}/5" in err
    assert ("recomputed" in err) == (state_at < 3), err
    resumed, r_samples, r_diag, complete = read_all(path)
    assert complete and hdf5_utils.validate(path) == []
    with hdf5_utils.open_dataset(path) as f:
        assert f.state_counts == (5, f.n_diag)  # the last frame always carries the state
        # the file keeps its first start's provenance and records the resume: from which frame, by which command
        assert {k: f.attrs[k] for k in hdf5_utils.PROVENANCE_KEYS} == first_start
        (resume,) = json.loads(f.attrs["resumes"])
        assert resume["frame"] == state_at and "--resume" in resume["command_line"] and resume["code_version"]
    assert cli(tmp_path, out="straight")[0] == 0
    straight, s_samples, s_diag, _ = read_all(next((tmp_path / "straight").glob("*.h5")))
    np.testing.assert_array_equal(resumed, straight)
    np.testing.assert_array_equal(r_samples["step"], s_samples["step"])
    np.testing.assert_array_equal(r_diag["time"], s_diag["time"])
    np.testing.assert_array_equal(r_diag["energy"], s_diag["energy"])


def test_a_format_1_0_file_resumes_with_the_state_saved_every_frame(
    tmp_path, monkeypatch, capsys, interrupted_at_chunk
):
    """A file begun by a 1.0 writer records no per-state counts, so its latest state must stay with its last frame:
    resuming it keeps saving the state with every frame whatever --state_seconds says."""
    import h5py

    real = solver.make_simulation
    monkeypatch.setattr(solver, "make_simulation", interrupted_at_chunk(4, real))
    assert cli(tmp_path, "--state_seconds", "0")[0] == 130  # as a 1.0 writer did: the state with every frame
    path = next((tmp_path / "out").glob("*.h5"))
    with h5py.File(path, "r+") as f:  # what a 1.0 writer left: no counts in the state slots
        for k in (0, 1):
            del f[f"state/slot{k}/counts"]
        f.attrs["format_version"] = "1.0"
    monkeypatch.setattr(solver, "make_simulation", real)
    capsys.readouterr()
    assert cli(tmp_path, "--resume")[0] == 0  # default --state_seconds 60
    assert "predates format 1.1" in capsys.readouterr().err
    with hdf5_utils.open_dataset(path) as f:
        assert f.complete and not f.records_state_counts
        assert f.n_state_saves == 5  # frames 0–2 before the interruption, then 3 and 4: every frame
    assert hdf5_utils.validate(path) == []
    assert cli(tmp_path, out="straight")[0] == 0
    np.testing.assert_array_equal(read_all(path)[0], read_all(next((tmp_path / "straight").glob("*.h5")))[0])


def test_state_is_saved_with_the_first_frame_after_each_interval(tmp_path, monkeypatch):
    clock = {"t": 0.0}

    def tick():  # every call of the driver's clock advances it by 1 s
        clock["t"] += 1.0
        return clock["t"]

    monkeypatch.setattr(driver, "_now", tick)
    assert cli(tmp_path, "--t_total", "0.5", "--state_seconds", "2.5")[0] == 0
    with hdf5_utils.open_dataset(next((tmp_path / "out").glob("*.h5"))) as f:
        # frame 0 saves; the clock starts at 1; frames 1–9 each read it once (2, 3, 4: 3 s ≥ 2.5 → save, which reads
        # it again: 5), so saves fall on frames 3, 6, 9, and the last frame (10) always saves: 5 saves
        assert f.n_samples == 11 and f.n_state_saves == 5 and f.state_counts[0] == 11


def test_resume_with_different_settings_is_refused(tmp_path, capsys):
    assert cli(tmp_path)[0] == 0
    capsys.readouterr()
    # --diag_every is not part of the file name, so the same file is found with another setting
    code, _ = cli(tmp_path, "--resume", "--diag_every", "1")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "diag_every" in err and len(err.splitlines()) == 1, err


def test_existing_output_is_refused_then_overwritten_on_request(tmp_path, capsys):
    assert cli(tmp_path)[0] == 0
    path = next((tmp_path / "out").glob("*.h5"))
    before = path.read_bytes()
    capsys.readouterr()
    code, _ = cli(tmp_path)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--overwrite" in err and len(err.splitlines()) == 1
    assert path.read_bytes() == before
    assert cli(tmp_path, "--overwrite", "--seed", "0")[0] == 0
    assert hdf5_utils.validate(path) == []


def sabotaged_chunk(call, change):
    """A make_simulation whose ``call``-th chunk returns ``change(state, fields, diags, finite)`` instead."""
    real = solver.make_simulation

    def make(cfg):
        sim = real(cfg)
        calls = {"n": 0}

        def chunk(state):
            calls["n"] += 1
            out = sim.chunk(state)
            return change(*out) if calls["n"] == call else out

        return dataclasses.replace(sim, chunk=chunk)

    return make


def test_blow_up_stops_keeps_good_frames_and_exits_nonzero(tmp_path, monkeypatch, capsys):
    def nan_state(new, fields, diags, finite):
        return new._replace(omega_hat=new.omega_hat * jnp.nan), fields, diags, finite & False

    monkeypatch.setattr(solver, "make_simulation", sabotaged_chunk(3, nan_state))
    code, path = cli(tmp_path)
    err = capsys.readouterr().err
    assert code == 3 and "blow-up" in err
    omega, _, _, complete = read_all(path)
    assert not complete and len(omega) == 3 and np.all(np.isfinite(omega))  # frame 0 + 2 good chunks
    with hdf5_utils.open_dataset(path) as f:
        assert "blow-up" in f.stop_reason


def test_ic_from_gust_file_sample(tmp_path):
    code, src = cli(tmp_path, out="src")
    assert code == 0
    with hdf5_utils.open_dataset(src) as f:
        sample = f.read("omega", 2, 3)[0]
    code, path = cli(tmp_path, "--ic_file", str(src), "--ic_sample", "2", out="dst")
    assert code == 0
    first = read_all(path)[0][0]
    np.testing.assert_allclose(first, sample, atol=1e-5 * np.abs(sample).max())
    # provenance names the initial file by content and by the run that wrote it
    with hdf5_utils.open_dataset(path) as f, hdf5_utils.open_dataset(src) as g:
        source = json.loads(f.attrs["ic_source"])
        assert source["sha256"] == file_sha256(src) and source["path"] == str(src.resolve())
        assert source["created"] == g.attrs["created"] and source["solver"] == g.attrs["solver"]


def test_taylor_green_run_decays_at_the_viscous_rate(tmp_path):
    code, path = cli(tmp_path, "--ic", "taylor_green", "--fkx", "0", "--alpha", "0", "--scheme", "etdrk4")
    assert code == 0
    omega, samples, _, _ = read_all(path)
    amp = np.abs(omega).max(axis=(1, 2))
    np.testing.assert_allclose(amp, 2 * np.exp(-2 * samples["time"] / 200), rtol=1e-6)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--NX", "7"], "got 7"),
        (["--NX", "4"], "got 4"),
        (["--NX", "abc"], "abc"),
        (["--Re", "0"], "--Re must be > 0 (got 0)"),
        (["--Re", "-5"], "got -5"),
        (["--dt", "0"], "--dt must be > 0"),
        (["--dt", "-0.01"], "got -0.01"),
        (["--save_interval", "0.015"], "--save_interval must be a positive multiple of --dt"),
        (["--t_total", "0.22"], "--t_total must be a multiple of --save_interval"),
        (["--fields", "omega,pressure"], "unknown field 'pressure'"),
        (["--fields", "omega,omega"], "twice"),
        (["--scheme", "rk4"], "rk4"),
        (["--precision", "float16"], "float16"),
        (["--fkx", "9"], "--fkx must be an integer in [0, 5]"),
        (["--alpha", "-1"], "--alpha must be >= 0"),
        (["--n_trajectories", "0"], "--n_trajectories must be >= 1"),
        (["--ic", "taylor_green", "--n_trajectories", "2"], "identical"),
        (["--ic_file", "/nonexistent/ic.npy"], "does not exist"),
        (["--dt", "0.25", "--save_interval", "0.25", "--t_total", "0.5", "--ic_kpeak", "4"], "initial CFL"),
        (["--overwrite", "--resume"], "exclude each other"),
        (["--t_total", "inf"], "--t_total must be a finite number (got inf)"),
        (["--spinup_time", "nan"], "--spinup_time must be a finite number (got nan)"),
        (["--Re", "inf"], "--Re must be a finite number"),
        (["--beta", "nan"], "--beta must be a finite number"),
        (["--seed", str(2**32)], "--seed must be an integer in [0, 2**32)"),  # PRNGKey would fold it onto seed 0
        (["--output_dir", ""], "--output_dir must not be empty"),
        # used to hang: a Python loop over 1e299 candidate diagnostic intervals, or 1e8 initial fields
        (["--dt", "1e-300"], "is 5e+298 steps of --dt=1e-300; at most 2147483647 steps are allowed"),
        (["--t_total", "1e12"], "is 2e+13 save intervals; at most 2147483646 are allowed"),
        (["--n_trajectories", "100000000000"], "--n_trajectories 100000000000 needs at least"),
        (["--state_seconds", "-1"], "--state_seconds must be a finite number >= 0 (got -1.0)"),
        (["--state_seconds", "nan"], "--state_seconds must be a finite number >= 0 (got nan)"),
        (["--sgs", "smag", "--cs", "1e200"], "--cs must be in (0, 10] (got 1e+200"),  # C_s² overflowed a float
        (["--diag_every", "-1"], "--diag_every must be 0 (automatic) or a positive divisor of 5 (got -1)"),
        (["--spinup_time", "-0.01"], "--spinup_time must be 0 or a positive multiple of --dt"),
        (["--coordinator_address", "notahost"], "--coordinator_address must be host:port (got 'notahost')"),
        (["--num_processes", "4", "--process_id", "9"], "--num_processes and --process_id need --coordinator_address"),
        (["--coordinator_address", "h:1", "--num_processes", "2", "--process_id", "2"], "--process_id must be in [0"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, needle):
    argv = ["--output_dir", str(tmp_path / "out"), *TINY, *args]
    with pytest.raises(SystemExit) as exc:
        sys.exit(run_solver.main(argv))
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2, err
    assert len(err.splitlines()) == 1, err
    assert needle in err, err
    assert not list((tmp_path / "out").glob("*.h5"))


def test_diagnostic_interval_is_the_largest_divisor_of_a_tenth_found_fast():
    brute = [max(d for d in range(1, n + 1) if n % d == 0 and d <= max(1, n // 10)) for n in range(1, 400)]
    assert [driver.largest_divisor_at_most(n, max(1, n // 10)) for n in range(1, 400)] == brute
    assert driver.largest_divisor_at_most(2**31 - 1, 2**31 // 10) == 1  # a prime: 46341 trials, not 2e9
    assert driver.largest_divisor_at_most(2**30, 2**30 // 10) == 2**26


def test_memory_check_refuses_only_an_ensemble_that_cannot_fit():
    cfg = solver.Py2DConfig(NX=64, n_trajectories=1000, precision="float32")  # 1000 * 64² * 4 B = 15.6 MiB
    driver.check_memory(cfg, available=16 * 2**20)
    with pytest.raises(ValueError, match=r"needs at least 0\.0153 GiB per device .* a device has 0\.0146 GiB"):
        driver.check_memory(cfg, available=15 * 2**20)


def test_output_dir_that_is_a_file_is_refused_and_kept(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert run_solver.main(["--output_dir", str(target), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"--output_dir {target} exists and is not a directory"), err
    assert target.read_text() == "mine"


def test_ic_file_with_wrong_shape_is_refused(tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.zeros((8, 8)))
    code, _ = cli(tmp_path, "--ic_file", str(tmp_path / "bad.npy"))
    err = capsys.readouterr().err
    assert code == 2 and "shape (8, 8)" in err
    np.save(tmp_path / "complex.npy", np.zeros((16, 16), complex))
    code, _ = cli(tmp_path, "--ic_file", str(tmp_path / "complex.npy"))
    assert code == 2 and "holds complex128 values" in capsys.readouterr().err
    np.save(tmp_path / "objects.npy", np.array([{}], dtype=object))
    code, _ = cli(tmp_path, "--ic_file", str(tmp_path / "objects.npy"))
    assert code == 2 and "is not a readable numeric .npy array" in capsys.readouterr().err
    code, _ = cli(tmp_path, "--ic_file", str(tmp_path / "bad.npy"), "--ic", "taylor_green")
    assert code == 2 and "--ic taylor_green and --ic_file exclude each other" in capsys.readouterr().err
    # a mean vorticity is impossible on the periodic square (zero circulation around it): refused, not kept all run
    np.save(tmp_path / "offset.npy", ic.taylor_green(16) + 1.0)
    code, _ = cli(tmp_path, "--ic_file", str(tmp_path / "offset.npy"))
    assert code == 2 and "has mean vorticity 1 (rms about it 1)" in capsys.readouterr().err
    for extra in (["--ic_file", str(tmp_path / "offset.npy")], []):  # a .npy holds one field; no file at all
        code, _ = cli(tmp_path, *extra, "--ic_sample", "7")
        assert code == 2 and "--ic_sample selects a sample of a Gust .h5 --ic_file" in capsys.readouterr().err


def test_spinup_is_simulated_but_not_saved(tmp_path):
    code, spun = cli(tmp_path, "--spinup_time", "0.1", "--t_total", "0.1", out="spun")
    assert code == 0
    code, straight = cli(tmp_path, "--t_total", "0.2", out="straight")
    assert code == 0
    a, sa, _, _ = read_all(spun)
    b, sb, _, _ = read_all(straight)
    np.testing.assert_allclose(sa["time"], [0.1, 0.15, 0.2], atol=1e-12)
    np.testing.assert_array_equal(sa["step"], sb["step"][2:])
    np.testing.assert_allclose(a, b[2:], rtol=0, atol=1e-6 * np.abs(b).max())


def test_fields_that_overflow_float32_count_as_a_blow_up(tmp_path, monkeypatch, capsys):
    """A float64 state of |ω| ~ 1e147 is finite, but its float32 output fields are inf: such a frame is a blow-up,
    not a good frame (it used to be committed, and the file failed validation)."""

    def overflowing(new, fields, diags, finite):  # the state stays finite; only the stored fields overflow
        return new, {k: v.at[:, 0, 0].set(jnp.inf) for k, v in fields.items()}, diags, finite

    monkeypatch.setattr(solver, "make_simulation", sabotaged_chunk(3, overflowing))
    code, path = cli(tmp_path)
    err = capsys.readouterr().err
    assert code == 3 and "t = 0.15: blow-up" in err and "stored as float32" in err, err
    omega, _, _, complete = read_all(path)
    assert not complete and len(omega) == 3 and np.all(np.isfinite(omega))
    assert hdf5_utils.validate(path) == [
        f"incomplete: 3/5 samples written (stop_reason: {err.split('error: ')[1].strip()})"
    ]


def test_storable_flags_each_trajectory_beyond_float32_range():
    fields = {"a": np.zeros((3, 2, 2)), "b": np.zeros((3, 2, 2))}
    fields["a"][1, 0, 1] = 1e39  # finite in float64, inf in float32
    fields["b"][2, 1, 1] = np.nan
    np.testing.assert_array_equal(driver.storable(fields, 3), [True, False, False])
    fields["a"][1, 0, 1] = 3e38  # within float32's range (max 3.4e38)
    np.testing.assert_array_equal(driver.storable(fields, 3), [True, True, False])


def test_non_finite_initial_state_is_bad_input(tmp_path, capsys):
    x = np.sin(2 * np.pi * np.arange(16) / 16)
    np.save(tmp_path / "huge.npy", 1.7e308 * np.outer(x, x))  # finite, but its spectrum and velocity overflow
    code, _ = cli(tmp_path, "--ic_file", str(tmp_path / "huge.npy"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.endswith("the initial state is not finite (CFL nan); check --ic_file"), err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.h5"))


def test_file_names_keep_settings_apart_and_stay_short(tmp_path):
    name = driver.name_number
    assert [name(1e6), name(0.001), name(1000), name(0.17)] == ["1e+06", "0.001", "1000", "0.17"]  # as before
    assert name(1000001.0) == "1000001" and name(0.1234567) == "0.1234567"  # %g would round both to 6 digits
    a = solver.Py2DConfig(NX=16, Re=1e6).output_name()
    assert a != solver.Py2DConfig(NX=16, Re=1000001.0).output_name() and "_Re1e+06_" in a
    # a run started from a run started from a run ...: the IC's stem is capped, so the chain's names stop growing
    stem = Path(a).stem
    for _ in range(3):
        (ic_file := tmp_path / f"{stem}.h5").touch()  # the config checks only that the file exists
        nxt = solver.Py2DConfig(NX=16, ic_file=str(ic_file), ic_sample=2).output_name()
        assert len(nxt) <= len(a) + 50, nxt
        stem = Path(nxt).stem
    assert "-s2_seed0" in nxt
    assert driver.name_stem("short_name.h5") == "short_name"


def test_existing_output_of_another_run_names_the_settings_that_differ(tmp_path, capsys):
    assert cli(tmp_path)[0] == 0
    capsys.readouterr()
    code, _ = cli(tmp_path, "--diag_every", "1")  # not in the file name: the same name, another run
    err = capsys.readouterr().err.strip()
    assert code == 2 and "already exists (written with different settings: diag_every)" in err, err


def test_output_path_taken_by_a_directory_is_refused(tmp_path, capsys):
    cfg = solver.Py2DConfig(NX=16, dt=0.01, t_total=0.2, save_interval=0.05, Re=200)
    (tmp_path / "out" / cfg.output_name()).mkdir(parents=True)
    code, _ = cli(tmp_path, "--overwrite")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "is a directory where the output file goes" in err, err


def test_run_stopped_in_the_spin_up_resumes_from_the_start(tmp_path, monkeypatch, capsys):
    """Ctrl-C during the spin-up leaves a file with no frame and no state: --resume starts it again (it used to
    refuse: 'no committed solver state'), and the result is the straight run's."""

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(driver, "_spin_up", interrupted)
    assert cli(tmp_path, "--spinup_time", "0.1")[0] == 130
    assert "rerun with --resume" in capsys.readouterr().err
    monkeypatch.undo()
    code, path = cli(tmp_path, "--spinup_time", "0.1", "--resume")
    assert code == 0 and "starting it again" in capsys.readouterr().err
    assert cli(tmp_path, "--spinup_time", "0.1", out="straight")[0] == 0
    np.testing.assert_array_equal(read_all(path)[0], read_all(next((tmp_path / "straight").glob("*.h5")))[0])


def test_each_chunk_queues_the_host_copies_of_its_outputs_but_not_of_its_state():
    """As the driver dispatches a chunk it queues the device→host copies of the chunk's fields, diagnostics and
    flags (ordered on the device ahead of the next chunk); the state stays on the device."""
    import types

    class Leaf:
        copies = 0

        def copy_to_host_async(self):
            self.copies += 1

    state, field, diags, finite = Leaf(), Leaf(), Leaf(), Leaf()
    sim = types.SimpleNamespace(chunk=lambda s: (state, {"omega": field}, diags, finite))
    assert driver._dispatch(sim, None) == (state, {"omega": field}, diags, finite)
    assert [x.copies for x in (state, field, diags, finite)] == [0, 1, 1, 1]
