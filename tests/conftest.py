"""Shared fixtures. Physics-order tests run in float64 inside ``jax.enable_x64``; nothing flips the
global flag, so float32 code paths are exercised as users get them.

The suite shares one JAX persistent compilation cache, a temporary folder removed when pytest exits (unless
``JAX_COMPILATION_CACHE_DIR`` is already set): many tests build the same jitted programs again (new closures of the
same train step, CLI subprocesses of the same tiny configs), and a cache hit skips XLA's compile. It is set in
``os.environ`` before JAX is imported so that the subprocesses the tests start, and
pytest-xdist's workers (started by the controlling process after it has read this file), inherit it: one cache,
removed once, by the controller.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # the tiny tests compile in well under 1 s
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache_dir = tempfile.mkdtemp(prefix="gust-tests-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
    atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)

import jax
import pytest

# In case a plugin imported JAX before this file: apply the same settings to the running process.
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
    "jax_persistent_cache_min_compile_time_secs", float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"])
)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def py2d_tiny_data(tmp_path_factory):
    """A real py2d turbulence run: 16², 2 trajectories × 9 frames = 18 samples of omega (seconds to make)."""
    from solvers.py2d_turbulence.solver import Py2DConfig, run

    d = tmp_path_factory.mktemp("py2d_tiny_data")
    cfg = Py2DConfig(NX=16, dt=0.01, t_total=0.4, save_interval=0.05, n_trajectories=2, Re=200.0)
    return str(run(cfg, d, progress=False))


@pytest.fixture(scope="session")
def tiny_trained_run(py2d_tiny_data, tmp_path_factory):
    """A tiny VQ-VAE (ch 8, 8×8 latent, scales 1,2,4,8, 32 codes) trained 6 steps on samples [0, 14) of
    ``py2d_tiny_data``; returns the run directory (model.eqx, config.txt, ...). Shared: treat as read-only."""
    from models.train_vqvae import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny_trained_run") / "run"
    cfg = TrainConfig(
        data_path=py2d_tiny_data,
        fields=("omega",),
        steps=6,
        sample_stop=14,
        batch_size=4,
        warmup_steps=2,
        ch=8,
        num_groups=4,
        embed_dim=8,
        codebook_size=32,
    )
    return train(cfg, out, progress=False)


def _at_chunk(n, make_simulation, action):
    """A make_simulation whose n-th chunk call first calls ``action()`` (driver-level solvers; chunk n is dispatched
    while frame n − 1 is checked and written, as the first chunk is dispatched before the frame loop)."""
    import dataclasses

    def make(cfg):
        sim = make_simulation(cfg)
        calls = {"n": 0}

        def chunk(state):
            calls["n"] += 1
            if calls["n"] == n:
                action()
            return sim.chunk(state)

        return dataclasses.replace(sim, chunk=chunk)

    return make


def _raise_keyboard_interrupt():
    raise KeyboardInterrupt


def _sigterm_self():
    """Send this process SIGTERM, as a batch scheduler does (the CLIs handle it: ``solvers.common.stop``)."""
    import signal

    os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture
def interrupted_at_chunk():
    """``interrupted_at_chunk(n, make_simulation)``: a make_simulation whose n-th chunk call raises
    KeyboardInterrupt, as a run killed between two chunks stops."""
    return lambda n, make_simulation: _at_chunk(n, make_simulation, _raise_keyboard_interrupt)


@pytest.fixture
def sigterm_at_chunk():
    """``sigterm_at_chunk(n, make_simulation)``: a make_simulation whose n-th chunk call sends this process SIGTERM."""
    return lambda n, make_simulation: _at_chunk(n, make_simulation, _sigterm_self)


def _start_two_processes(argv_of):
    """Start ``argv_of(address, i)`` for i = 0, 1 as two processes of one jax.distributed job on 127.0.0.1 (2
    simulated CPU devices each, from the repository root, text pipes); returns the two ``Popen``s."""
    import socket
    import subprocess
    from pathlib import Path

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    root = Path(__file__).resolve().parents[1]
    return [subprocess.Popen(argv_of(address, i), cwd=root, env=env, stdout=-1, stderr=-1, text=True) for i in range(2)]


def _wait_for_samples(out, n: int, procs) -> int:
    """Wait (at most 120 s) while every process in ``procs`` runs until the Gust file in folder ``out`` has ``n``
    committed samples; return how many it has then."""
    import time

    from solvers.common import hdf5_utils

    deadline, committed = time.time() + 120, 0
    while time.time() < deadline and all(p.poll() is None for p in procs) and committed < n:
        files = list(out.glob("*.h5"))
        if files:
            try:
                with hdf5_utils.open_dataset(files[0]) as f:
                    committed = f.n_samples
            except (OSError, hdf5_utils.GustFormatError):
                committed = 0
        time.sleep(0.005)
    return committed


@pytest.fixture
def wait_for_samples():
    """``wait_for_samples(out, n, procs)``: :func:`_wait_for_samples`, for tests that signal a running solver."""
    return _wait_for_samples


@pytest.fixture
def start_two_processes():
    """``start_two_processes(argv_of)``: :func:`_start_two_processes`, for a test that acts while they run."""
    return _start_two_processes


def _sigterm_process_0_of_two(args, ready) -> list[str]:
    """Run the CLI ``args`` as the 2 processes of one jax.distributed job (explicit coordinator flags), send SIGTERM
    to process 0 alone once ``ready(procs)`` returns, check that both processes exit 143, and return each one's last
    stderr line."""
    import signal

    from solvers.common import stop

    procs = _start_two_processes(
        lambda address, i: [*args, "--coordinator_address", address, "--num_processes", "2", "--process_id", str(i)]
    )
    try:
        ready(procs)
        procs[0].send_signal(signal.SIGTERM)
        errs = [p.communicate(timeout=120)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [stop.EXIT_TERMINATED] * 2, [e[-800:] for e in errs]
    return [e.strip().splitlines()[-1] for e in errs]


@pytest.fixture
def sigterm_process_0_of_two():
    """``sigterm_process_0_of_two(args, ready)``: :func:`_sigterm_process_0_of_two`."""
    return _sigterm_process_0_of_two


@pytest.fixture
def two_processes():
    """``two_processes(argv_of)``: run :func:`_start_two_processes` to the end; returns
    ``[(returncode, stdout, stderr), ...]``."""

    def run(argv_of, timeout=300):
        procs = _start_two_processes(argv_of)
        outs = [p.communicate(timeout=timeout) for p in procs]
        return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs, strict=True)]

    return run
