"""SIGTERM (a scheduler's time limit or preemption, ``solvers.common.stop``): the solvers stop after the frame in
progress with the full state saved, training after the step in progress with a checkpoint, both exit 143 and resume
to the uninterrupted result; outside those loops the signal stops a CLI at once, keeping what was committed."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from models import train_vqvae
from solvers.common import hdf5_utils, stop
from solvers.py2d_turbulence import run_solver, solver

REPO = Path(__file__).resolve().parents[1]
PY2D = ["--NX", "16", "--dt", "0.01", "--t_total", "0.3", "--save_interval", "0.05", "--Re", "200", "--no_progress"]


def py2d_file(out: Path) -> Path:
    return next(out.glob("*.h5"))


def test_solver_stops_after_the_frame_in_progress_with_its_state_and_resumes_to_the_straight_run(
    tmp_path, monkeypatch, capsys, sigterm_at_chunk
):
    real = solver.make_simulation
    monkeypatch.setattr(solver, "make_simulation", sigterm_at_chunk(3, real))
    previous = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "stopped"
    # --state_seconds 3600: without the signal the state would go with frame 0 and the last frame only
    assert run_solver.main(["--output_dir", str(out), *PY2D, "--state_seconds", "3600"]) == stop.EXIT_TERMINATED
    assert signal.getsignal(signal.SIGTERM) is previous  # the CLI's handler is removed again
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "stopped by SIGTERM after frame 2 of 6" in err and "--resume" in err, err
    with hdf5_utils.open_dataset(py2d_file(out)) as f:
        assert not f.complete and f.n_samples == 3  # frames 0, 1, 2
        assert f.state_counts[0] == 3  # the state saved with frame 2, the last one written
    monkeypatch.setattr(solver, "make_simulation", real)
    assert run_solver.main(["--output_dir", str(out), *PY2D, "--resume"]) == 0
    err = capsys.readouterr().err
    assert "at frame 3/7" in err and "recomputed" not in err, err  # nothing written before the stop is redone
    assert run_solver.main(["--output_dir", str(tmp_path / "straight"), *PY2D]) == 0
    assert hdf5_utils.validate(py2d_file(out)) == []
    with hdf5_utils.open_dataset(py2d_file(out)) as a, hdf5_utils.open_dataset(py2d_file(tmp_path / "straight")) as b:
        assert a.complete
        np.testing.assert_array_equal(a.read("omega"), b.read("omega"))
        np.testing.assert_array_equal(a.samples()["step"], b.samples()["step"])


def test_sigterm_outside_the_frame_loop_stops_at_once_keeping_what_was_committed(tmp_path, monkeypatch, capsys):
    """In the spin-up (before frame 0) nothing is committed: exit 143 at once, and the rerun starts again."""
    real = solver.make_simulation

    def make(cfg):
        sim = real(cfg)

        def advance(state, n):
            os.kill(os.getpid(), signal.SIGTERM)
            return sim.advance(state, n)

        return dataclasses.replace(sim, advance=advance)

    monkeypatch.setattr(solver, "make_simulation", make)
    args = ["--output_dir", str(tmp_path / "out"), *PY2D, "--spinup_time", "0.1"]
    assert run_solver.main(args) == stop.EXIT_TERMINATED
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "terminated by SIGTERM; what was committed is kept" in err, err
    with hdf5_utils.open_dataset(py2d_file(tmp_path / "out")) as f:
        assert f.n_samples == 0 and f.n_state_saves == 0
    monkeypatch.setattr(solver, "make_simulation", real)
    assert run_solver.main([*args, "--resume"]) == 0
    assert "has no saved state yet" in capsys.readouterr().err


def test_training_stops_after_the_step_in_progress_with_a_checkpoint_and_resumes_bit_exact(
    py2d_tiny_data, tmp_path, monkeypatch, capsys
):
    base = ["--data_path", py2d_tiny_data, "--fields", "omega", "--steps", "8", "--batch_size", "4"]
    base += ["--sample_stop", "14", "--warmup_steps", "2", "--log_every", "1", "--checkpoint_every", "100"]
    base += ["--ch", "8", "--num_groups", "4", "--embed_dim", "8", "--codebook_size", "32", "--no_progress"]
    assert train_vqvae.main([*base, "--output_dir", str(tmp_path / "straight")]) == 0

    class SigtermAtBatch(train_vqvae.BatchLoader):  # batch 3 is drawn for step 3: that step completes, then the stop
        def __next__(self):
            self.drawn = getattr(self, "drawn", 0) + 1
            if self.drawn == 3:
                os.kill(os.getpid(), signal.SIGTERM)
            return super().__next__()

    monkeypatch.setattr(train_vqvae, "BatchLoader", SigtermAtBatch)
    out = tmp_path / "stopped"
    capsys.readouterr()
    assert train_vqvae.main([*base, "--output_dir", str(out)]) == stop.EXIT_TERMINATED
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "stopped by SIGTERM at step 3 of 8, with a checkpoint" in err, err
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 3
    monkeypatch.setattr(train_vqvae, "BatchLoader", SigtermAtBatch.__mro__[1])
    assert train_vqvae.main([*base, "--output_dir", str(out), "--resume"]) == 0
    for name in ("model.eqx", "ckpt_00000008.eqx"):
        assert (out / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()


LONG = ["--NX", "16", "--dt", "0.01", "--t_total", "15", "--save_interval", "0.01", "--no_progress"]


def test_a_solver_process_sent_sigterm_exits_143_with_its_last_frame_and_state_saved(tmp_path, wait_for_samples):
    """The real signal from outside, as a scheduler sends it, to the CLI in its own process."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "solvers.py2d_turbulence.run_solver", "--output_dir", str(out), *LONG],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for_samples(out, 20, [proc])
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == stop.EXIT_TERMINATED, (proc.returncode, err[-500:])
    assert "stopped by SIGTERM after frame" in err.strip().splitlines()[-1], err[-500:]
    with hdf5_utils.open_dataset(py2d_file(out)) as f:
        assert not f.complete and 20 <= f.n_samples < 1500
        assert f.state_counts[0] == f.n_samples  # the state goes with the last frame written


def test_under_jax_distributed_process_0_decides_and_every_process_stops_at_the_same_frame(
    tmp_path, sigterm_process_0_of_two, wait_for_samples
):
    """SIGTERM to process 0 only: process 1 stops with it (the decision is broadcast), at the same frame."""
    out = tmp_path / "multi"
    args = [sys.executable, "-m", "solvers.py2d_turbulence.run_solver", "--output_dir", str(out), *LONG]
    args += ["--n_trajectories", "4"]
    last = sigterm_process_0_of_two(args, lambda procs: wait_for_samples(out, 4 * 10, procs))
    assert "stopped by SIGTERM after frame" in last[0] and last[0] == last[1], last
    with hdf5_utils.open_dataset(py2d_file(out)) as f:
        assert not f.complete and f.n_samples >= 40 and f.n_samples % 4 == 0
        assert f.state_counts[0] == f.n_samples
