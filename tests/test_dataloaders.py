"""dataloaders: exact content of samples, windows and batches, statistics, resume, prefetch thread, sharding.

The files are synthetic Gust files with known content: sample i of file `base` holds
u = base + i + 0.001 (y + 2x) (so u[0, 0] identifies the sample exactly) and v = 0.5 - 2u.
"""

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import h5py
import jax
import numpy as np
import pytest

from dataloaders import BatchLoader, FieldStats, GustDataset, batch_sharding, compute_stats, split_by_trajectory
from solvers.common.hdf5_utils import Grid, GustFormatError, create_writer

REPO = Path(__file__).resolve().parents[1]
H, W = 8, 6


def frames(base, idx, shape=(H, W)):
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (base + np.asarray(idx, dtype=np.float64)[:, None, None] + 0.001 * (y + 2 * x)).astype(np.float32)


def write_file(path, *, base, n_traj, n_frames, committed=None, shape=(H, W), x_shift=0.0):
    n = n_traj * n_frames
    grid = Grid(
        x=np.arange(shape[1]) + x_shift,
        y=np.arange(shape[0]) * 1.0,
        bc_x="periodic",
        bc_y="periodic",
        length_x=float(shape[1]),
        length_y=float(shape[0]),
    )
    w = create_writer(
        path,
        fields=["u", "v"],
        shape=shape,
        n_samples=n,
        grid=grid,
        diagnostics=[],
        n_diag=0,
        n_trajectories=n_traj,
        state_spec={},
        attrs={"solver": "test_dataloaders"},
    )
    for idx in np.split(np.arange(n), [n if committed is None else committed]):
        u = frames(base, idx, shape)
        traj, frame = idx % n_traj, idx // n_traj
        w.write_samples({"u": u, "v": 0.5 - 2 * u}, time=0.1 * frame, trajectory=traj, step=frame)
        if committed is None or idx[0] == 0:
            w.commit()
    if committed is None:
        w.finalize()
    else:  # a run killed after committing `committed` samples: the rest was written but never committed
        w.close()
    return path


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("dl")
    foreign = d / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.zeros(3)
    return {
        "a": write_file(d / "a.h5", base=0, n_traj=3, n_frames=8),  # 24 samples
        "b": write_file(d / "b.h5", base=1000, n_traj=2, n_frames=5),  # 10 samples
        "partial": write_file(d / "partial.h5", base=2000, n_traj=2, n_frames=6, committed=7),
        "small": write_file(d / "small.h5", base=0, n_traj=1, n_frames=4, shape=(4, 6)),
        "shifted": write_file(d / "shifted.h5", base=0, n_traj=1, n_frames=4, x_shift=0.5),
        "foreign": foreign,
    }


def h5_read(path, field, i):
    with h5py.File(path, "r", locking=False) as f:  # the reader under test holds the file open without locking
        return f["fields"][field][i]


def ids(batch, base=0):
    """Sample index encoded in u[0, 0] of (..., C, H, W) arrays (u is channel 0)."""
    return np.rint(np.asarray(batch)[..., 0, 0, 0] - base).astype(int)


# --------------------------------------------------------------------------------------------------
# dataset


def test_items_are_the_stored_samples_file_by_file(files):
    with GustDataset([files["a"], files["b"]], ["v", "u"]) as ds:
        assert len(ds) == 34 and ds.item_shape == (2, H, W)
        expected = {0: (files["a"], 0), 23: (files["a"], 23), 24: (files["b"], 0), 33: (files["b"], 9)}
        for i, (path, j) in expected.items():
            item = ds[i]
            assert item.dtype == np.float32 and item.shape == (2, H, W)
            np.testing.assert_array_equal(item[0], h5_read(path, "v", j))  # channels in the order asked for
            np.testing.assert_array_equal(item[1], h5_read(path, "u", j))
        np.testing.assert_array_equal(ds[-1], ds[33])


def test_sample_range_and_trajectories_select_exactly_those_samples(files):
    with GustDataset(files["a"], "u", sample_start=6, sample_stop=21, trajectories=[2, 0]) as ds:
        expected = [i for i in range(6, 21) if i % 3 in (0, 2)]
        assert ids(ds.read_batch(np.arange(len(ds)))).tolist() == expected
        _, samples = ds.item_samples(np.arange(len(ds)))
        assert samples[:, 0].tolist() == expected


def test_read_batch_keeps_the_given_order_and_returns_fresh_buffers(files):
    with GustDataset([files["a"], files["b"]], ["u", "v"]) as ds:
        order = [30, 2, 25, 2, 17, 0]  # unsorted, across files, with a repeat
        batch = ds.read_batch(order)
        assert batch.shape == (6, 2, H, W)
        np.testing.assert_array_equal(batch, np.stack([ds[i] for i in order]))
        assert ids(batch[[1, 3, 4, 5]]).tolist() == [2, 2, 17, 0]
        assert ids(batch[[0, 2]], base=1000).tolist() == [6, 1]
        again = ds.read_batch(order)
        assert not np.shares_memory(batch, again)


def test_windows_follow_one_trajectory_with_the_stride(files):
    # file a: 3 trajectories x 8 frames; windows of 2 + 1 frames, 2 frames apart span 5 frames -> 4 per trajectory
    with GustDataset(files["a"], ["u", "v"], n_steps_input=2, n_steps_output=1, stride=2) as ds:
        assert len(ds) == 3 * 4 and ds.item_shape == (3, 2, H, W)
        batch = ds.read_batch(np.arange(len(ds)))
        assert batch.shape == (12, 3, 2, H, W)
        got = ids(batch)  # (12, 3) sample ids
        expected = [[3 * (f0 + 2 * k) + m for k in range(3)] for m in range(3) for f0 in range(4)]
        assert got.tolist() == expected
        np.testing.assert_array_equal(batch[5, 2, 1], h5_read(files["a"], "v", expected[5][2]))


def test_windows_never_cross_files_or_the_selection(files):
    with GustDataset([files["a"], files["b"]], "u", trajectories=[1], sample_stop=10, n_steps_input=3) as ds:
        # a: trajectory 1 has samples 1, 4, 7 below 10 -> 1 window; b: samples 1, 3, 5, 7, 9 -> 3 windows
        assert len(ds) == 4
        files_, samples = ds.item_samples(np.arange(4))
        assert files_.tolist() == [0, 1, 1, 1]
        assert samples.tolist() == [[1, 4, 7], [1, 3, 5], [3, 5, 7], [5, 7, 9]]
        assert ids(ds.read_batch([1, 0]), base=1000)[0].tolist() == [1, 3, 5]


def test_split_by_trajectory_is_disjoint_complete_and_seeded():
    train, test = split_by_trajectory(10, test_fraction=0.3, seed=4)
    assert len(test) == 3 and len(train) == 7
    assert sorted([*train, *test]) == list(range(10))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    again = split_by_trajectory(10, test_fraction=0.3, seed=4)
    np.testing.assert_array_equal(again[1], test)
    assert any(not np.array_equal(split_by_trajectory(10, 0.3, seed=s)[1], test) for s in range(5, 10))
    assert len(split_by_trajectory(2, test_fraction=0.01)[1]) == 1  # both sides non-empty
    same = split_by_trajectory(np.int64(10), test_fraction=np.float32(0.3), seed=np.int64(4))  # numpy scalars
    assert all(np.array_equal(a, b) for a, b in zip(same, again, strict=True))
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\), got 1.5"):
        split_by_trajectory(10, test_fraction=1.5)


def test_incomplete_file_warns_and_exposes_the_committed_samples_only(files):
    with pytest.warns(UserWarning, match=r"partial.h5 is incomplete \(7 of 12 samples committed"):
        ds = GustDataset(files["partial"], "u")
    with ds:
        assert len(ds) == 7
        assert ids(ds.read_batch(range(7)), base=2000).tolist() == list(range(7))


@pytest.mark.parametrize(
    ("key", "kwargs", "error", "message"),
    [
        ("a", {"fields": ["omgea"]}, ValueError, "field 'omgea' not in a.h5; available: u, v"),
        ("a", {"sample_stop": 30}, ValueError, "sample_stop=30 beyond the 24 committed samples of a.h5"),
        ("a", {"trajectories": [0, 5]}, ValueError, "trajectory 5 not in a.h5; it has trajectories 0..2"),
        ("a", {"n_steps_input": 3, "stride": 4}, ValueError, "holds no windows of 3 frames, stride 4"),
        ("a", {"stride": 2}, ValueError, "need windows; set n_steps_input >= 1"),
        ("a", {"n_steps_input": 0}, ValueError, "n_steps_input must be an integer >= 1, got 0"),
        ("foreign", {}, GustFormatError, "foreign.h5"),
        ("missing", {}, FileNotFoundError, "missing.h5"),
    ],
)
def test_bad_dataset_arguments_fail_with_one_line(files, key, kwargs, error, message):
    path = files[key] if key in files else files["a"].parent / "missing.h5"
    with pytest.raises(error) as info:
        GustDataset(path, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_files_must_share_fields_shape_and_grid(files):
    with pytest.raises(ValueError, match=r"small.h5 has grid shape \(4, 6\) but a.h5 has \(8, 6\)"):
        GustDataset([files["a"], files["small"]])
    with pytest.raises(ValueError, match=r"shifted\.h5 has another grid"):
        GustDataset([files["a"], files["shifted"]])


# --------------------------------------------------------------------------------------------------
# statistics


def test_streamed_stats_equal_float64_numpy_over_the_selection(files, tmp_path):
    with GustDataset(files["a"], ["u", "v"], sample_start=3, trajectories=[0, 1], n_steps_input=2) as ds:
        stats = compute_stats(ds, block_samples=4)  # several blocks, the last one partial
        with h5py.File(files["a"], "r", locking=False) as f:
            sel = [i for i in range(3, 24) if i % 3 in (0, 1)]  # each frame once although windows overlap
            for c, field in enumerate(["u", "v"]):
                data = f["fields"][field][sel].astype(np.float64)
                assert stats.mean[c] == pytest.approx(data.mean(), rel=1e-13)
                assert stats.std[c] == pytest.approx(data.std(), rel=1e-12)
        assert stats.count == len(sel) * H * W
        assert compute_stats(ds, block_samples=1000).mean == pytest.approx(stats.mean, rel=1e-13)
    stats.save(tmp_path / "stats.json")
    assert FieldStats.load(tmp_path / "stats.json") == stats
    x = np.stack([frames(0, [5])[0], 0.5 - 2 * frames(0, [5])[0]])
    np.testing.assert_allclose(stats.denormalize(stats.normalize(x)), x, rtol=1e-6)
    np.testing.assert_allclose(stats.normalize(x)[1], (x[1] - stats.mean[1]) / stats.std[1], rtol=1e-5)


def test_stats_reject_a_zero_std_and_other_fields():
    with pytest.raises(ValueError, match=r"std of field 'p' is 0\.0"):
        FieldStats(fields=("p",), mean=(1.0,), std=(0.0,), count=4)
    with pytest.raises(ValueError, match=r"mean of field 'q' is nan; normalising needs a finite mean"):
        FieldStats.from_dict({"fields": ["p", "q"], "mean": [0.0, "NaN"], "std": [1.0, 1.0], "count": 4})
    stats = FieldStats(fields=("u",), mean=(1.0,), std=(2.0,), count=4)
    with pytest.raises(ValueError, match=r"statistics are for fields \['u'\] but the dataset has \['u', 'v'\]"):
        stats.check_fields(["u", "v"])


# --------------------------------------------------------------------------------------------------
# loader


def test_epochs_are_seeded_permutations_and_batches_hold_those_items(files):
    with GustDataset(files["a"], ["u", "v"]) as ds:
        loader = BatchLoader(ds, 5, seed=3, epochs=2, drop_remainder=False)
        batches = list(loader)
        assert loader.batches_per_epoch == 5 and len(batches) == 10
        assert [b.shape[0] for b in batches] == [5, 5, 5, 5, 4] * 2
        for e in range(2):
            got = np.concatenate([ids(b) for b in batches[5 * e : 5 * e + 5]])
            np.testing.assert_array_equal(np.sort(got), np.arange(24))  # every sample exactly once per epoch
            np.testing.assert_array_equal(got, np.random.default_rng([3, e]).permutation(24))
        assert not np.array_equal(ids(batches[0]), ids(batches[5]))  # a new order each epoch
        assert all(isinstance(b, jax.Array) and b.dtype == np.float32 for b in batches)
        np.testing.assert_array_equal(np.asarray(batches[7]), ds.read_batch(loader.batch_indices(1, 2)))
        with pytest.raises(StopIteration):
            next(loader)


def test_drop_remainder_and_no_shuffle(files):
    with GustDataset(files["a"], "u") as ds:
        batches = list(BatchLoader(ds, 7, shuffle=False, epochs=2))
        assert [ids(b).tolist() for b in batches] == [list(range(0, 7)), list(range(7, 14)), list(range(14, 21))] * 2


def test_a_loader_abandoned_mid_epoch_is_stopped_before_the_interpreter_exits(files):
    """A generator holding an open loader, abandoned by an exception, used to leave its reader running into the
    interpreter's shutdown: an atexit hook joins it first."""
    child = textwrap.dedent(
        f"""
        import atexit
        atexit.register(lambda: print("interpreter shutdown", flush=True))  # runs after handlers registered later
        from dataloaders import BatchLoader, GustDataset, loader

        close = loader.BatchLoader.close
        def traced(self):
            if self._thread is not None:
                print("reader joined", flush=True)
            close(self)
        loader.BatchLoader.close = traced

        def batches(ds):
            with BatchLoader(ds, 2, epochs=None, prefetch=2) as it:
                yield from it

        ds = GustDataset({str(files["a"])!r}, "u")
        gen = batches(ds)
        next(gen)  # the reader runs; the generator is never closed
        """
    )
    out = subprocess.run([sys.executable, "-c", child], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["reader", "joined", "interpreter", "shutdown"], out.stdout


def test_batches_stay_intact_after_later_batches_are_produced(files):
    # every batch is read into a fresh buffer: holding all of them until the end must not change any
    with GustDataset(files["a"], ["u", "v"]) as ds, BatchLoader(ds, 4, seed=1, epochs=3, prefetch=3) as loader:
        held = list(loader)
        for k, batch in enumerate(held):
            np.testing.assert_array_equal(np.asarray(batch), ds.read_batch(loader.batch_indices(k // 6, k % 6)))


def test_resumed_loader_yields_exactly_the_uninterrupted_batches(files):
    with GustDataset([files["a"], files["b"]], "u", n_steps_input=1, n_steps_output=1) as ds:
        reference = [np.asarray(b) for b in BatchLoader(ds, 6, seed=7, epochs=3)]
        assert len(reference) == 3 * (len(ds) // 6)
        first = BatchLoader(ds, 6, seed=7, epochs=3)
        # 2-frame windows: a has 3 x 7, b 2 x 4, so 29 items, 4 batches of 6 per epoch; stop inside epoch 1
        assert first.batches_per_epoch == 4
        seen = [np.asarray(next(first)) for _ in range(7)]
        state = json.loads(json.dumps(first.state()))  # survives a JSON round trip
        first.close()
        assert (state["epoch"], state["position"]) == (1, 3)
        resumed = BatchLoader.from_state(ds, state, epochs=3)
        rest = [np.asarray(b) for b in resumed]
        assert len(seen) + len(rest) == len(reference)
        for got, want in zip(seen + rest, reference, strict=True):
            np.testing.assert_array_equal(got, want)
        numpy_ints = {k: np.int64(v) if type(v) is int else v for k, v in state.items()}  # e.g. an array checkpoint
        again = [np.asarray(b) for b in BatchLoader.from_state(ds, numpy_ints, epochs=np.int64(3))]
        assert all(np.array_equal(a, b) for a, b in zip(again, rest, strict=True))
        with pytest.raises(ValueError, match="state has seed=7 but this loader has seed=8"):
            BatchLoader(ds, 6, seed=8, state=state)


def test_reader_threads_deliver_the_same_batches_in_the_same_order(files):
    # several reader threads build batches at once; the consumer must see exactly the one-reader sequence, and a
    # loader resumed mid-epoch with readers must continue it
    with GustDataset([files["a"], files["b"]], ["u", "v"]) as ds:
        one = [np.asarray(b) for b in BatchLoader(ds, 3, seed=5, epochs=2, workers=1)]
        many = BatchLoader(ds, 3, seed=5, epochs=2, workers=4, prefetch=1)
        got = [np.asarray(next(many)) for _ in range(5)]
        resumed = BatchLoader.from_state(ds, many.state(), epochs=2, workers=3)
        many.close()
        got += [np.asarray(b) for b in resumed]
        assert len(got) == len(one) > 5
        for a, b in zip(got, one, strict=True):
            np.testing.assert_array_equal(a, b)


def test_normalized_batches(files):
    with GustDataset(files["a"], ["u", "v"]) as ds:
        stats = compute_stats(ds)
        batch = next(BatchLoader(ds, 8, seed=0, normalize=stats))
        raw = ds.read_batch(BatchLoader(ds, 8, seed=0).batch_indices(0, 0)).astype(np.float64)
        want = (raw - np.array(stats.mean)[:, None, None]) / np.array(stats.std)[:, None, None]
        np.testing.assert_allclose(np.asarray(batch), want, rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match=r"statistics are for fields \['u', 'v'\] but the dataset has \['u'\]"):
            BatchLoader(GustDataset(files["a"], "u"), 8, normalize=stats)


class _FailingDataset(GustDataset):
    def read_batch(self, indices):
        if self.calls == 2:
            raise OSError("disk went away")
        self.calls += 1
        return super().read_batch(indices)


def test_producer_errors_reach_the_consumer_and_close_joins_the_thread(files):
    ds = _FailingDataset(files["a"], "u")
    ds.calls = 0
    loader = BatchLoader(ds, 4, seed=0)
    next(loader)
    next(loader)
    with pytest.raises(OSError, match="disk went away"):
        next(loader)
    assert not any(t.name == "gust-batch-loader" and t.is_alive() for t in threading.enumerate())
    assert loader.state()["position"] == 2  # the failed batch is next again
    with GustDataset(files["a"], "u") as ds2:
        loader = BatchLoader(ds2, 4, seed=0, prefetch=2)
        next(loader)
        time.sleep(0.2)  # the producer is now blocked on a full queue
        thread = loader._thread
        loader.close()
        assert not thread.is_alive()
        assert loader.state()["position"] == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"batch_size": 25}, "batch_size=25 exceeds the 24 items of the dataset"),
        ({"batch_size": 4, "prefetch": 0}, "prefetch must be an integer >= 1, got 0"),
        ({"batch_size": 4, "workers": 0}, "workers must be an integer >= 1, got 0"),
        ({"batch_size": 4, "epochs": 0}, "epochs must be None (endless) or an integer >= 1, got 0"),
    ],
)
def test_bad_loader_arguments_fail_with_one_line(files, kwargs, message):
    with GustDataset(files["a"], "u") as ds, pytest.raises(ValueError) as info:
        BatchLoader(ds, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_pinned_staging_delivers_the_same_batches_to_device_memory(files):
    with GustDataset(files["a"], ["u", "v"]) as ds:
        stats = compute_stats(ds)
        plain = [np.asarray(b) for b in BatchLoader(ds, 4, seed=3, epochs=1, normalize=stats)]
        pinned = list(BatchLoader(ds, 4, seed=3, epochs=1, normalize=stats, pinned=True))
        assert len(pinned) == len(plain) == 6
        for a, b in zip(pinned, plain, strict=True):
            assert a.sharding.memory_kind == "device"  # staged in pinned host memory, delivered to the device
            np.testing.assert_array_equal(np.asarray(a), b)
        with pytest.raises(TypeError, match="pinned must be True or False, got 1"):
            BatchLoader(ds, 4, pinned=1)


def test_single_device_sharding_puts_batches_on_that_device(files):
    with GustDataset(files["a"], "u") as ds:
        sharding = batch_sharding()
        batch = next(BatchLoader(ds, 4, sharding=sharding))
        assert batch.sharding == sharding and batch.shape == (4, 1, H, W)


FOUR_DEVICES = """
import sys
import numpy as np, jax
from dataloaders import BatchLoader, GustDataset, batch_sharding
assert jax.device_count() == 4
ds = GustDataset(sys.argv[1], ["u", "v"])
try:
    BatchLoader(ds, 6, sharding=batch_sharding())
except ValueError as e:
    print("ERROR", e)
for pinned in (False, True):
    loader = BatchLoader(ds, 8, seed=5, epochs=1, sharding=batch_sharding(), pinned=pinned)
    for k, batch in enumerate(loader):
        shards = sorted(batch.addressable_shards, key=lambda s: s.index[0].start)
        assert [s.data.shape for s in shards] == [(2, 2, 8, 6)] * 4, [s.data.shape for s in shards]
        assert len({s.device for s in shards}) == 4 and batch.sharding.memory_kind == "device"
        np.testing.assert_array_equal(np.asarray(batch), ds.read_batch(loader.batch_indices(0, k)))
    print("BATCHES", k + 1)
"""


def test_four_simulated_devices_split_the_batch(files):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    res = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FOUR_DEVICES), str(files["a"])],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("ERROR batch_size=6 is not a multiple of the 4 devices the sharding splits the batch")
    assert lines[1:] == ["BATCHES 3", "BATCHES 3"]  # numpy memory, then staged in pinned host memory


TWO_PROCESSES = """
import sys
import numpy as np, jax
jax.distributed.initialize(coordinator_address=sys.argv[2], num_processes=2, process_id=int(sys.argv[3]))
from jax.experimental import multihost_utils
from dataloaders import BatchLoader, GustDataset, batch_sharding
assert jax.device_count() == 4 and jax.local_device_count() == 2
ds = GustDataset(sys.argv[1], ["u", "v"])
by_process = [[d for d in jax.devices() if d.process_index == p] for p in (0, 1)]
alternating = [by_process[0][0], by_process[1][0], by_process[0][1], by_process[1][1]]
for devices in (None, alternating):  # the processes' devices side by side in the mesh, or alternating
    for pinned in (False, True):
        loader = BatchLoader(ds, 8, seed=5, epochs=1, sharding=batch_sharding(devices), pinned=pinned)
        for k, batch in enumerate(loader):
            assert batch.shape == (8, 2, 8, 6) and len(batch.addressable_shards) == 2
            whole = multihost_utils.process_allgather(batch, tiled=True)
            np.testing.assert_array_equal(whole, ds.read_batch(loader.batch_indices(0, k)))
        print("BATCHES", k + 1)
"""


def test_two_processes_assemble_the_global_batch_from_their_own_rows(files, two_processes):
    # 2 processes x 2 simulated CPU devices under jax.distributed: each reads only its rows, and the global
    # array assembled by make_array_from_process_local_data equals the single-process batch
    script = textwrap.dedent(TWO_PROCESSES)
    res = two_processes(lambda address, i: [sys.executable, "-c", script, str(files["a"]), address, str(i)], 180)
    assert [r[0] for r in res] == [0, 0], [r[2][-1500:] for r in res]
    assert all(r[1].count("BATCHES 3") == 4 for r in res)  # 2 device orders x (numpy memory, pinned staging)


def test_windows_of_a_real_turbulence_run_follow_time_within_one_trajectory(tmp_path):
    from solvers.py2d_turbulence.solver import Py2DConfig, run

    config = Py2DConfig(
        NX=16, dt=0.01, t_total=0.2, save_interval=0.05, n_trajectories=3, fields=("omega", "u"), Re=200.0
    )
    path = run(config, tmp_path, progress=False)  # 5 frames x 3 trajectories
    train_ids, test_ids = split_by_trajectory(3, test_fraction=0.34, seed=1)
    with GustDataset(path, ["u", "omega"], trajectories=train_ids, n_steps_input=2, n_steps_output=1) as ds:
        assert len(ds) == len(train_ids) * 3
        gf = ds.file(0)
        meta = gf.samples()
        _, samples = ds.item_samples(np.arange(len(ds)))
        traj = meta["trajectory"][samples]
        assert np.all(traj == traj[:, :1]) and set(traj[:, 0]) == set(train_ids.tolist())
        np.testing.assert_allclose(np.diff(meta["time"][samples], axis=1), 0.05, rtol=1e-9)
        batch = next(BatchLoader(ds, 4, seed=2))
        rows = BatchLoader(ds, 4, seed=2).batch_indices(0, 0)
        for b, item in enumerate(rows):
            for t, s in enumerate(samples[item]):
                np.testing.assert_array_equal(np.asarray(batch[b, t, 0]), gf.read("u", s, s + 1)[0])
                np.testing.assert_array_equal(np.asarray(batch[b, t, 1]), gf.read("omega", s, s + 1)[0])
    with GustDataset(path, "omega", trajectories=test_ids) as test:
        _, test_samples = test.item_samples(np.arange(len(test)))
        assert set(meta["trajectory"][test_samples[:, 0]]) == set(test_ids.tolist())
