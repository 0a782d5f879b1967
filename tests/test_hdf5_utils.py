"""Tests of Gust's common HDF5 format (solvers/common/hdf5_utils.py)."""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import h5py
import numpy as np
import pytest

from solvers.common import hdf5_utils as hu
from solvers.common.hdf5_utils import (
    Grid,
    GustFormatError,
    create_writer,
    open_dataset,
    open_for_resume,
    provenance,
    validate,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
H, W = 16, 12
FIELDS = ["u", "v"]
DIAGNOSTICS = ["energy", "enstrophy"]
STATE_SPEC = {"omega_hat": ((H, W // 2 + 1), np.complex128), "rng_key": ((2,), np.uint32)}
ATTRS = {
    "solver": "test_solver",
    "Re": 100.0,
    "alpha": 0.1,
    "seed": 42,
    "stochastic": True,
    "config": {"Re": 100.0, "grid": [H, W], "note": None},
    "sample_order": "trajectory-interleaved",
    "wavenumbers": [4, 8],
    "unset": None,
}


def _frame(i, H=16, W=12):
    """Deterministic, never-constant test frame for sample i."""
    y, x = np.mgrid[0:H, 0:W]
    return (np.sin(0.7 * x + 0.3 * i) * np.cos(0.5 * y - 0.1 * i) + 0.01 * i).astype(np.float32)


def make_grid(vertical="y"):
    return Grid(
        x=np.linspace(0, 2 * np.pi, W, endpoint=False),
        y=np.cos(np.linspace(0, np.pi, H)),  # Chebyshev-like: non-uniform, decreasing
        bc_x="periodic",
        bc_y="wall",
        length_x=2 * np.pi,
        length_y=2.0,
        vertical_name=vertical,
    )


def new_writer(path, n_samples=6, n_diag=4, n_trajectories=2, vertical="y", attrs_extra=None, **kwargs):
    return create_writer(
        path,
        fields=FIELDS,
        shape=(H, W),
        n_samples=n_samples,
        grid=make_grid(vertical),
        diagnostics=DIAGNOSTICS,
        n_diag=n_diag,
        n_trajectories=n_trajectories,
        state_spec=STATE_SPEC,
        attrs={**ATTRS, **(attrs_extra or {})},
        **kwargs,
    )


def write_chunk(writer, start, n, n_trajectories=2):
    """Samples [start, start + n): u = frame(i), v = -2 frame(i); trajectories interleaved."""
    idx = np.arange(start, start + n)
    frames = np.stack([_frame(i) for i in idx])
    writer.write_samples(
        {"u": frames, "v": -2 * frames},
        time=0.5 * (idx // n_trajectories),
        trajectory=idx % n_trajectories,
        step=10 * (idx // n_trajectories),
    )


def state_for(k):
    omega = np.full((H, W // 2 + 1), k + 0.5j * k, dtype=np.complex128)
    return {"omega_hat": omega, "rng_key": np.array([k, k + 1], dtype=np.uint32)}


def write_complete(path, **kwargs):
    """A finished 6-sample file, written in two committed chunks."""
    w = new_writer(path, **kwargs)
    for chunk in range(2):
        write_chunk(w, 3 * chunk, 3)
        w.write_diagnostics(
            [2.0 * chunk, 2.0 * chunk + 1],
            {"energy": np.full((2, 2), chunk + 1.0), "enstrophy": np.arange(4.0).reshape(2, 2) + chunk},
        )
        w.write_state(state_for(chunk + 1), step=100 * (chunk + 1), time=1.5 * (chunk + 1))
        w.commit()
    w.finalize()
    return path


def all_frames(n):
    return np.stack([_frame(i) for i in range(n)])


# --------------------------------------------------------------------------------------------------
# round trip


def test_round_trip(tmp_path):
    path = write_complete(tmp_path / "run.h5", vertical="z")
    with open_dataset(path) as g:
        assert g.fields == FIELDS
        assert g.shape == (H, W)
        assert (g.n_samples, g.n_samples_planned) == (6, 6)
        assert g.complete is True and g.stop_reason == "completed"
        assert g.n_trajectories == 2
        np.testing.assert_array_equal(g.read("u"), all_frames(6))
        np.testing.assert_array_equal(g.read("v", 2, 5), -2 * all_frames(6)[2:5])
        assert g.read("u").dtype == np.float32
        s = g.samples()
        np.testing.assert_array_equal(s["trajectory"], np.arange(6) % 2)
        np.testing.assert_array_equal(s["time"], 0.5 * (np.arange(6) // 2))
        np.testing.assert_array_equal(s["step"], 10 * (np.arange(6) // 2))
        assert s["time"].dtype == np.float64 and s["step"].dtype == np.int64
        d = g.diagnostics()
        np.testing.assert_array_equal(d["time"], [0.0, 1.0, 2.0, 3.0])
        np.testing.assert_array_equal(d["energy"], [[1, 1], [1, 1], [2, 2], [2, 2]])
        assert d["enstrophy"].shape == (4, 2)
        grid, ref = g.grid, make_grid("z")
        np.testing.assert_array_equal(grid.x, ref.x)
        np.testing.assert_array_equal(grid.y, ref.y)
        assert (grid.bc_x, grid.bc_y, grid.vertical_name) == ("periodic", "wall", "z")
        assert (grid.length_x, grid.length_y) == (ref.length_x, ref.length_y)
        arrays, step, t = g.read_state()
        assert (step, t) == (200, 3.0)
        np.testing.assert_array_equal(arrays["omega_hat"], state_for(2)["omega_hat"])
        assert arrays["omega_hat"].dtype == np.complex128
        np.testing.assert_array_equal(arrays["rng_key"], [2, 3])
        assert validate(path) == []
    with h5py.File(path, "r") as f:
        assert list(f["fields/u"].attrs["dims"]) == ["sample", "z", "x"]
        assert f["grid/z"].attrs["uniform"] == np.False_
        assert f["grid/x"].attrs["uniform"] == np.True_


def test_typed_attrs_survive(tmp_path):
    path = write_complete(tmp_path / "run.h5")
    with open_dataset(path) as g:
        a = g.attrs
        assert a["format"] == "gust" and a["format_version"] == "1.1"
        assert type(a["Re"]) is float and a["Re"] == 100.0
        assert type(a["seed"]) is int and a["seed"] == 42
        assert type(a["stochastic"]) is bool and a["stochastic"] is True
        assert a["solver"] == "test_solver"
        assert a["unset"] is None
        assert isinstance(a["config"], str)  # JSON strings stay strings ...
        assert g.config == {"Re": 100.0, "grid": [H, W], "note": None}  # ... and config is parsed
        assert json.loads(a["wavenumbers"]) == [4, 8]
    with h5py.File(path, "r") as f:  # typed in HDF5, not stringified
        assert f.attrs["Re"].dtype == np.float64
        assert f.attrs["seed"].dtype == np.int64
        assert f.attrs["stochastic"].dtype == np.bool_


@pytest.mark.parametrize(
    ("attrs", "error", "match"),
    [({"complete": True}, ValueError, "reserved"), ({"thing": object()}, TypeError, "unsupported")],
)
def test_bad_attrs_refused(tmp_path, attrs, error, match):
    with pytest.raises(error, match=match):
        create_writer(
            tmp_path / "a.h5",
            fields=FIELDS,
            shape=(H, W),
            n_samples=2,
            grid=make_grid(),
            diagnostics=[],
            n_diag=0,
            n_trajectories=1,
            state_spec={},
            attrs=attrs,
        )
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_file_layout_is_contiguous_and_preallocated(tmp_path):
    w = new_writer(tmp_path / "run.h5")
    w.close()
    with h5py.File(tmp_path / "run.h5", "r") as f:
        assert f.id.get_create_plist().get_version()[0] == 0  # default libver superblock, no open-for-write flag
        datasets = []
        f.visititems(lambda name, obj: datasets.append(obj) if isinstance(obj, h5py.Dataset) else None)
        assert len(datasets) > 10
        for ds in datasets:
            assert ds.chunks is None and ds.compression is None, ds.name
            assert ds.id.get_offset() is not None, f"{ds.name} has no allocated storage"
        plist = f["fields/u"].id.get_create_plist()
        assert plist.get_alloc_time() == h5py.h5d.ALLOC_TIME_EARLY
        assert plist.get_fill_time() == h5py.h5d.FILL_TIME_NEVER
        assert np.isnan(f["fields/u"].attrs["mean"])
        assert f.attrs["complete"] == np.False_


def test_run_writes_only_raw_data(tmp_path):
    """During a run, bytes outside the datasets' data regions (i.e. all metadata) never change."""
    path = tmp_path / "run.h5"
    w = new_writer(path)
    before = path.read_bytes()
    write_chunk(w, 0, 3)
    w.write_diagnostics([0.0], {"energy": np.ones((1, 2)), "enstrophy": np.ones((1, 2))})
    w.write_state(state_for(1), step=1, time=0.1)
    w.commit()
    write_chunk(w, 3, 2)
    w.write_state(state_for(2), step=2, time=0.2)
    w.commit()
    after = path.read_bytes()
    assert len(after) == len(before)
    mask = np.ones(len(before), dtype=bool)
    with h5py.File(path, "r") as f:  # same process as the writer: shares its handle
        regions = []
        f.visititems(
            lambda name, obj: (
                regions.append((obj.id.get_offset(), obj.id.get_storage_size()))
                if isinstance(obj, h5py.Dataset)
                else None
            )
        )
    for offset, size in regions:
        mask[offset : offset + size] = False
    a, b = np.frombuffer(before, np.uint8), np.frombuffer(after, np.uint8)
    assert np.any(a[~mask] != b[~mask])  # data did change ...
    assert np.array_equal(a[mask], b[mask])  # ... metadata did not
    w.close()


# --------------------------------------------------------------------------------------------------
# refusing, foreign and malformed files


def test_a_file_left_by_a_writer_killed_while_creating_is_removed_by_the_next(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    stale = tmp_path / f".run.h5.{child.pid}.creating"  # create_writer's temporary name, its process gone
    stale.write_bytes(b"partial")
    write_complete(tmp_path / "run.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]


def test_refuses_to_overwrite_existing_file(tmp_path):
    path = write_complete(tmp_path / "run.h5")
    content = path.read_bytes()
    with pytest.raises(FileExistsError) as err:
        new_writer(path)
    message = str(err.value)
    assert str(path) in message and "--overwrite" in message and "--resume" in message
    assert "\n" not in message
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]  # no temporary left behind
    w = new_writer(path, overwrite=True)
    w.close()
    with open_dataset(path) as g:
        assert g.n_samples == 0 and not g.complete


def test_foreign_files_refused(tmp_path):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(GustFormatError, match=r"is not a Gust file \(no 'format' attribute = 'gust'\)"):
        open_dataset(foreign)
    with pytest.raises(GustFormatError, match="not a Gust file"):
        validate(foreign)
    for value in (np.arange(3), 7, ["gust"]):  # another tool's 'format' attribute: an array, a number, a list
        with h5py.File(foreign, "a") as f:
            f.attrs["format"] = value
        with pytest.raises(GustFormatError, match="not a Gust file"):
            validate(foreign)
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(GustFormatError, match="is not an HDF5 file"):
        open_dataset(text)
    with pytest.raises(FileNotFoundError):
        open_dataset(tmp_path / "missing.h5")


def test_newer_major_version_refused(tmp_path):
    path = write_complete(tmp_path / "run.h5")
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = "2.0"
    with pytest.raises(GustFormatError, match="newer"):
        open_dataset(path)
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = "1.7"  # newer minor: still readable
    with open_dataset(path) as g:
        assert g.n_samples == 6


def test_missing_dataset_named_in_error(tmp_path):
    path = write_complete(tmp_path / "run.h5")
    with h5py.File(path, "r+") as f:
        del f["samples/step"]
    with pytest.raises(GustFormatError, match="missing dataset '/samples/step'") as err:
        open_dataset(path)
    assert str(path) in str(err.value)
    assert any("'/samples/step'" in problem for problem in validate(path))


def test_counters_out_of_bounds_reported(tmp_path):
    path = write_complete(tmp_path / "run.h5")
    with h5py.File(path, "r+") as f:
        f["progress"][0] = 7
    with pytest.raises(GustFormatError, match="n_samples_written=7"):
        open_dataset(path)


# --------------------------------------------------------------------------------------------------
# writing and commit semantics


def test_uncommitted_samples_invisible(tmp_path):
    path = tmp_path / "run.h5"
    w = new_writer(path)
    write_chunk(w, 0, 2)
    w.commit()
    write_chunk(w, 2, 3)  # not committed
    w.write_diagnostics([0.0], {"energy": np.ones((1, 2)), "enstrophy": np.ones((1, 2))})
    with open_dataset(path) as g:  # works while the writer holds the file
        assert g.n_samples == 2 and g.n_diag == 0
        assert len(g.samples()["time"]) == 2
        assert g.diagnostics()["time"].shape == (0,)
        with pytest.raises(IndexError):
            g.read("u", 0, 3)
        with pytest.raises(ValueError, match="out of range"):
            g.read_batch("u", [1, 2])
    w.close()  # closing without commit loses the pending chunk
    with open_dataset(path) as g:
        assert g.n_samples == 2
        np.testing.assert_array_equal(g.read("u"), all_frames(2))
    assert validate(path) == ["incomplete: 2/6 samples written"]


def test_read_beyond_committed_count_raises(tmp_path):
    path = write_complete(tmp_path / "run.h5")
    with open_dataset(path) as g:
        with pytest.raises(IndexError, match="6 committed samples"):
            g.read("u", 0, 7)
        with pytest.raises(IndexError):
            g.read("u", 6, 5)
        with pytest.raises(IndexError):
            g.read("u", -1)
        assert g.read("u", 6).shape == (0, H, W)
        with pytest.raises(KeyError, match="no field"):
            g.read("pressure")


def test_write_validation(tmp_path):
    w = new_writer(tmp_path / "run.h5")
    frames = all_frames(2)
    zeros = np.zeros(2, dtype=np.int64)
    with pytest.raises(ValueError, match="missing"):
        w.write_samples({"u": frames}, time=[0, 1], trajectory=zeros, step=zeros)
    with pytest.raises(ValueError, match="shape"):
        w.write_samples({"u": frames, "v": frames[:, :4]}, time=[0, 1], trajectory=zeros, step=zeros)
    with pytest.raises(ValueError, match="trajectory"):
        w.write_samples({"u": frames, "v": frames}, time=[0, 1], trajectory=[0, 2], step=zeros)
    with pytest.raises(ValueError, match="integer"):
        w.write_samples({"u": frames, "v": frames}, time=[0, 1], trajectory=[0.0, 1.0], step=zeros)
    big = np.zeros((7, H, W), dtype=np.float32)
    with pytest.raises(ValueError, match="overflow"):
        w.write_samples({"u": big, "v": big}, time=np.zeros(7), trajectory=np.zeros(7, int), step=np.zeros(7, int))
    with pytest.raises(ValueError, match="overflow"):
        w.write_diagnostics(np.zeros(5), {"energy": np.zeros((5, 2)), "enstrophy": np.zeros((5, 2))})
    bad_state = dict(state_for(1), rng_key=np.array([1.5, 2.5]))
    with pytest.raises(ValueError, match="losslessly"):
        w.write_state(bad_state, step=1, time=0.1)
    assert w._pending == [0, 0, 0]  # nothing was accepted
    with pytest.raises(ValueError, match="0/6 samples committed"):
        w.finalize()
    w.close()
    with pytest.raises(ValueError, match="closed"):
        write_chunk(w, 0, 1)


def test_state_double_buffered(tmp_path):
    path = tmp_path / "run.h5"
    w = new_writer(path)
    with pytest.raises(GustFormatError, match="no committed solver state"):
        w.read_state()
    w.write_state(state_for(1), step=10, time=1.0)
    w.commit()
    w.write_state(state_for(2), step=20, time=2.0)  # pending, goes to the other slot
    arrays, step, _ = w.read_state()
    assert step == 10 and arrays["rng_key"].tolist() == [1, 2]
    with open_dataset(path) as g:
        assert g.read_state()[1] == 10
    w.commit()
    assert w.read_state()[1] == 20 and w.n_state_saves == 2
    with h5py.File(path, "r") as f:  # same process as the writer: shares its handle
        assert f["state/slot0/step"][()] == 10 and f["state/slot1/step"][()] == 20
    w.close()


def test_resume_and_finalize(tmp_path):
    path = tmp_path / "run.h5"
    w = new_writer(path, n_diag=0)
    write_chunk(w, 0, 3)
    w.write_state(state_for(3), step=3, time=0.3)
    w.commit()
    write_chunk(w, 3, 1)  # lost
    w.finalize(complete=False, stop_reason="solver diverged at step 4")
    assert validate(path) == ["incomplete: 3/6 samples written (stop_reason: solver diverged at step 4)"]

    w = open_for_resume(path)
    assert (w.n_samples_written, w.n_diag_written, w.n_state_saves) == (3, 0, 1)
    assert w.read_state()[1] == 3
    write_chunk(w, 3, 3)
    w.write_state(state_for(6), step=6, time=0.6)
    w.commit()
    w.finalize()
    assert validate(path) == []
    with open_dataset(path) as g:
        assert g.complete and g.stop_reason == "completed"
        np.testing.assert_array_equal(g.read("u"), all_frames(6))
    with pytest.raises(GustFormatError, match="complete"):
        open_for_resume(path)


def test_resumes_are_recorded_beside_the_first_start_provenance(tmp_path):
    path = write_complete(tmp_path / "run.h5")
    with h5py.File(path, "r+") as f:  # as if stopped: open_for_resume refuses a complete file
        f.attrs["complete"] = False
    for frame in (2, 4):
        w = open_for_resume(path)
        w.record_resume({"frame": frame, "command_line": f"resume {frame}"})
        w.close()
    with open_dataset(path) as g:
        assert json.loads(g.attrs["resumes"]) == [
            {"frame": 2, "command_line": "resume 2"},
            {"frame": 4, "command_line": "resume 4"},
        ]
        assert g.attrs["solver"] == "test_solver"  # the other attributes untouched
    assert "  resumes: [{" in hu.info(path)
    with h5py.File(path, "r+") as f:
        f.attrs["resumes"] = '{"frame": 2}'
    assert "attribute 'resumes' is JSON dict, not a list" in validate(path)
    with pytest.raises(ValueError, match="reserved"):
        new_writer(tmp_path / "other.h5", attrs_extra={"resumes": ""})


def test_state_saved_less_often_than_commits_rewinds_on_resume(tmp_path):
    path = tmp_path / "run.h5"
    w = new_writer(path, n_diag=2)
    write_chunk(w, 0, 2)
    w.write_diagnostics([0.0], {"energy": np.ones((1, 2)), "enstrophy": np.ones((1, 2))})
    w.write_state(state_for(2), step=10, time=0.5)
    w.commit()
    write_chunk(w, 2, 2)  # two more commits without a state
    w.commit()
    write_chunk(w, 4, 2)
    w.write_diagnostics([1.0], {"energy": np.ones((1, 2)), "enstrophy": np.ones((1, 2))})
    w.commit()
    assert w.state_counts == (2, 1) and w.n_samples_written == 6
    w.close()
    with open_dataset(path) as g:
        assert g.state_counts == (2, 1) and g.n_samples == 6 and g.n_diag == 2
        assert "(the latest with 2 samples)" in hu.info(path)
    assert validate(path) == ["incomplete: 6/6 samples written"]  # the older state is valid

    w = open_for_resume(path)
    w.rewind_to_state()
    assert (w.n_samples_written, w.n_diag_written, w.n_state_saves) == (2, 1, 1)
    with open_dataset(path) as g:  # readers see the rewound prefix at once
        assert (g.n_samples, g.n_diag) == (2, 1)
        np.testing.assert_array_equal(g.read("u"), all_frames(2))
    w.rewind_to_state()  # nothing more to rewind
    assert w.n_samples_written == 2
    write_chunk(w, 2, 4)
    w.write_state(state_for(6), step=30, time=1.5)
    w.commit()
    with pytest.raises(ValueError, match=r"with 1/2 diagnostics rows committed"):
        w.finalize()  # a complete file has every planned diagnostics row
    w.write_diagnostics([1.0], {"energy": np.ones((1, 2)), "enstrophy": np.ones((1, 2))})
    w.write_state(state_for(6), step=30, time=1.5)
    w.commit()
    w.finalize()
    assert validate(path) == []
    with open_dataset(path) as g:
        assert g.state_counts == (6, 2)
        np.testing.assert_array_equal(g.read("u"), all_frames(6))


def test_state_counts_beyond_the_commit_record_fail_validation(tmp_path):
    path = write_complete(tmp_path / "run.h5")
    with h5py.File(path, "r+") as f:
        slot = f[f"state/slot{(int(f['progress'][2]) - 1) % 2}"]
        slot["counts"][...] = [7, 0]  # more samples than the 6 committed
    problems = validate(path)
    assert len(problems) == 1 and "counts: [7, 0] outside the committed counts [6, 4]" in problems[0], problems


def test_format_1_0_file_without_state_counts_reads_them_from_progress(tmp_path):
    path = write_complete(tmp_path / "run.h5")
    with h5py.File(path, "r+") as f:  # a 1.0 writer created no counts and saved the state with every commit
        for k in (0, 1):
            del f[f"state/slot{k}/counts"]
        f.attrs["format_version"] = "1.0"
    assert validate(path) == []
    with open_dataset(path) as g:
        assert g.state_counts == (6, 4) and list(g.read_state()[0]) == ["omega_hat", "rng_key"]


def test_field_stats_match_numpy(tmp_path, monkeypatch):
    monkeypatch.setattr(hu, "_BLOCK_BYTES", 2 * H * W * 4)  # force several blocks
    path = tmp_path / "run.h5"
    w = new_writer(path, n_samples=5, n_trajectories=1, n_diag=0)
    rng = np.random.default_rng(0)
    data = (3.0 + 2.0 * rng.standard_normal((5, H, W))).astype(np.float32)
    w.write_samples({"u": data, "v": data**2}, time=np.arange(5.0), trajectory=np.zeros(5, int), step=np.arange(5))
    w.commit()
    w.finalize()
    with open_dataset(path) as g:
        for name, values in (("u", data), ("v", data**2)):
            stats = g.field_stats(name)
            ref = values.astype(np.float64)
            np.testing.assert_allclose(
                [stats["mean"], stats["std"], stats["min"], stats["max"]],
                [ref.mean(), ref.std(), ref.min(), ref.max()],
                rtol=1e-12,
            )


# --------------------------------------------------------------------------------------------------
# read_batch


def test_read_batch_matches_fancy_indexing(tmp_path):
    path = tmp_path / "run.h5"
    w = new_writer(path, n_samples=20, n_trajectories=1)
    idx = np.arange(20)
    frames = all_frames(20)
    w.write_samples({"u": frames, "v": -frames}, time=idx * 0.1, trajectory=np.zeros(20, int), step=idx)
    w.commit()
    w.close()
    with open_dataset(path) as g:
        for batch in ([0, 19], [1, 2, 3], [4, 6, 7], [5], [0, 3, 9, 10, 18], list(range(20))):
            got = g.read_batch("u", np.array(batch))
            assert got.dtype == np.float32 and got.shape == (len(batch), H, W)
            np.testing.assert_array_equal(got, frames[batch])
        assert g.read_batch("v", []).shape == (0, H, W)
        for bad, message in (
            ([3, 1], "unsorted"),
            ([1, 1, 2], "duplicate"),
            ([5, 20], "out of range"),
            ([-1, 2], "out of range"),
            ([[1, 2]], "1-D"),
            ([0.0, 1.0], "integer"),
        ):
            with pytest.raises(ValueError, match=message):
                g.read_batch("u", bad)


def test_read_into_reads_any_order_straight_into_caller_buffers(tmp_path):
    path = tmp_path / "run.h5"
    w = new_writer(path, n_samples=22, n_trajectories=1)
    idx = np.arange(20)
    frames = all_frames(20)
    w.write_samples({"u": frames, "v": -frames}, time=idx * 0.1, trajectory=np.zeros(20, int), step=idx)
    w.commit()
    w.write_samples({"u": frames[:2], "v": frames[:2]}, time=[2, 2], trajectory=[0, 0], step=[20, 21])  # uncommitted
    w.close()
    with open_dataset(path) as g:
        order = [7, 3, 3, 19, 0]
        out = np.zeros((5, 2, H, W), np.float32)  # rows of a (B, C, H, W) batch as destinations
        g.read_into("v", order, [out[j, 1] for j in range(5)])
        np.testing.assert_array_equal(out[:, 1], -frames[order])
        assert not out[:, 0].any()  # nothing written elsewhere
        for bad_out, message in (
            ([np.zeros((H, W), np.float64)], "float32"),
            ([np.zeros((H, W + 1), np.float32)], "C-contiguous"),
        ):
            with pytest.raises(ValueError, match=message):
                g.read_into("u", [0], bad_out)
        with pytest.raises(ValueError, match="out of range"):
            g.read_into("u", [20], [np.zeros((H, W), np.float32)])  # sample 20 was written but never committed


# --------------------------------------------------------------------------------------------------
# validate


def test_validate_catches_nan_and_constant_frames(tmp_path):
    path = tmp_path / "run.h5"
    w = new_writer(path, n_samples=4, n_trajectories=1, n_diag=0)
    frames = all_frames(4)
    frames_v = frames.copy()
    frames[1, 2, 3] = np.nan
    frames_v[2] = 1.25  # constant frame
    idx = np.arange(4)
    w.write_samples({"u": frames, "v": frames_v}, time=idx * 1.0, trajectory=np.zeros(4, int), step=idx)
    w.commit()
    w.finalize()
    problems = validate(path)
    assert len(problems) == 2, problems
    assert re.search(r"field 'u': 1 sample\(s\) contain NaN/inf \(first: sample 1\)", problems[0])
    assert re.search(r"field 'v': 1 constant \(all-equal\) frame\(s\) \(first: sample 2\)", problems[1])


def test_validate_catches_time_going_backwards(tmp_path):
    path = tmp_path / "run.h5"
    w = new_writer(path, n_samples=4, n_diag=0)
    frames = all_frames(4)
    # trajectory 0: t = 0, 1 (fine); trajectory 1: t = 2, 0.5 (backwards)
    w.write_samples({"u": frames, "v": frames}, time=[0, 2, 1, 0.5], trajectory=[0, 1, 0, 1], step=[0, 0, 1, 1])
    w.commit()
    w.finalize()
    assert validate(path) == ["samples: time decreases within trajectory 1 (at sample 3)"]


def test_validate_complete_file_is_clean(tmp_path):
    assert validate(write_complete(tmp_path / "run.h5")) == []


def test_a_complete_file_needs_every_planned_diagnostics_row(tmp_path):
    path = write_complete(tmp_path / "run.h5")
    with h5py.File(path, "r+") as f:
        f["progress"][1] = 3  # the last of the 4 planned rows lost, the file still marked complete
        f["state/slot1/counts"][1] = 3  # (and the latest state saved with them)
    assert validate(path) == ["marked complete but only 3/4 diagnostics rows written"]
    w = new_writer(tmp_path / "other.h5", n_samples=1, n_diag=0)
    with pytest.raises(TypeError, match="stop_reason must be a string"):
        w.finalize(complete=False, stop_reason=None)
    w.close()


# --------------------------------------------------------------------------------------------------
# crash safety


_CHILD = """
import sys, time
import numpy as np
from solvers.common.hdf5_utils import Grid, create_writer

{frame}

H, W, N = 16, 12, {n}
grid = Grid(x=np.arange(W) * 1.0, y=np.arange(H) * 1.0, bc_x="periodic", bc_y="periodic",
            length_x=float(W), length_y=float(H))
w = create_writer(sys.argv[1], fields=["u"], shape=(H, W), n_samples=N, grid=grid, diagnostics=["energy"],
                  n_diag=N, n_trajectories=1, state_spec={{"omega_hat": ((H, W // 2 + 1), np.complex128)}},
                  attrs={{"solver": "sigkill-test"}})
i = 0
while i < N:
    idx = np.arange(i, min(i + 3, N))
    w.write_samples({{"u": np.stack([_frame(k) for k in idx])}}, time=0.1 * idx,
                    trajectory=np.zeros(len(idx), dtype=np.int64), step=idx)
    w.write_diagnostics(0.1 * idx, {{"energy": idx[:, None] * 1.0}})
    i = int(idx[-1]) + 1
    w.write_state({{"omega_hat": np.full((H, W // 2 + 1), i + 1j * i)}}, step=i, time=0.1 * i)
    w.commit()
    time.sleep(0.002)
time.sleep(600)
"""


def test_sigkill_leaves_valid_resumable_file(tmp_path):
    path = tmp_path / "killed.h5"
    n_planned = 3000
    script = _CHILD.format(frame=inspect.getsource(_frame), n=n_planned)
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(path)], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert child.poll() is None, child.communicate()[1].decode()
            assert time.monotonic() < deadline, "writer never committed 3 samples"
            if path.exists():  # appears only fully formed
                with open_dataset(path) as g:  # no lock: readable while the writer runs
                    if g.n_samples >= 3:
                        break
            time.sleep(0.01)
        if os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() != "FALSE":
            with pytest.raises(OSError, match="another process"):  # the running writer holds the lock
                open_for_resume(path)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed.h5"]

    with open_dataset(path) as g:
        k = g.n_samples
        assert k >= 3 and (k % 3 == 0 or k == n_planned)
        assert not g.complete
        np.testing.assert_array_equal(g.read("u"), np.stack([_frame(i) for i in range(k)]))
        np.testing.assert_array_equal(g.samples()["step"], np.arange(k))
        assert g.n_diag == k
        np.testing.assert_array_equal(g.diagnostics()["energy"][:, 0], np.arange(k))
        arrays, step, t = g.read_state()
        assert step == k and t == pytest.approx(0.1 * k)
        np.testing.assert_array_equal(arrays["omega_hat"], np.full((H, W // 2 + 1), k + 1j * k))
        if k < n_planned:
            with pytest.raises(IndexError):
                g.read("u", 0, k + 1)
    assert validate(path) == [f"incomplete: {k}/{n_planned} samples written"]

    w = open_for_resume(path)
    assert (w.n_samples_written, w.n_diag_written, w.n_state_saves) == (k, k, k // 3 + (k % 3 != 0))
    idx = np.arange(k, n_planned)
    if idx.size:
        w.write_samples(
            {"u": np.stack([_frame(i) for i in idx])}, time=0.1 * idx, trajectory=np.zeros(idx.size, int), step=idx
        )
        w.write_diagnostics(0.1 * idx, {"energy": idx[:, None] * 1.0})
    w.write_state({"omega_hat": np.zeros((H, W // 2 + 1), complex)}, step=n_planned, time=0.1 * n_planned)
    w.commit()
    w.finalize()
    assert validate(path) == []
    with open_dataset(path) as g:
        assert g.complete and g.n_samples == n_planned
        np.testing.assert_array_equal(g.read_batch("u", [0, k, n_planned - 1])[1], _frame(k))


# --------------------------------------------------------------------------------------------------
# provenance and CLI


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_code_version_is_dirty_for_a_changed_tracked_file_not_for_an_untracked_output(tmp_path):
    # outputs written inside the checkout (the README's e2e/ folder) used to mark every later file "-dirty"
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    commit = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True)
    (tmp_path / "e2e").mkdir()
    (tmp_path / "e2e" / "model.eqx").write_bytes(b"output")
    assert hu.git_code_version(tmp_path) == commit.stdout.strip()
    (tmp_path / "code.py").write_text("x = 2\n")
    assert hu.git_code_version(tmp_path) == commit.stdout.strip() + "-dirty"
    assert hu.git_code_version(tmp_path / "e2e") == commit.stdout.strip() + "-dirty"  # from a subfolder


def test_code_version_outside_a_checkout_is_unknown(tmp_path):
    assert hu.git_code_version(tmp_path) == "unknown"


def test_provenance():
    p = provenance(["python", "-m", "solvers.x", "--name", "a b"])
    assert set(p) == {"code_version", "library_versions", "jax_backend", "command_line", "created"}
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", p["code_version"])
    versions = json.loads(p["library_versions"])
    assert {"python", "numpy", "h5py", "jax"} <= set(versions)
    assert p["command_line"] == "python -m solvers.x --name 'a b'"
    assert datetime.fromisoformat(p["created"]).utcoffset().total_seconds() == 0
    assert isinstance(p["jax_backend"], str) and p["jax_backend"]


def test_cli_info_and_validate(tmp_path, capsys):
    path = write_complete(tmp_path / "run.h5")
    assert hu.main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    for expected in ("u:", "v:", "periodic", "wall", "Re = 100.0 (float)", "seed = 42 (int)", "complete", "6/6"):
        assert expected in out, expected
    assert hu.main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.startswith("OK: ")

    partial = tmp_path / "partial.h5"
    w = new_writer(partial)
    write_chunk(w, 0, 2)
    w.commit()
    w.close()
    assert hu.main(["validate", str(partial)]) == 1
    assert capsys.readouterr().out.splitlines() == ["incomplete: 2/6 samples written"]

    assert hu.main(["validate", str(tmp_path / "missing.h5")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m solvers.common.hdf5_utils: error: ") and err.count("\n") == 1
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w"):
        pass
    assert hu.main(["info", str(foreign)]) == 2
    assert "not a Gust file" in capsys.readouterr().err
    newer = write_complete(tmp_path / "newer.h5")
    with h5py.File(newer, "a") as f:
        f.attrs["format_version"] = "99.0"
    assert hu.main(["validate", str(newer)]) == 2
    assert "format version 99.0 is newer than this reader supports" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exc:
        hu.main(["frobnicate", str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m solvers.common.hdf5_utils: error: ") and err.count("\n") == 1


def test_cli_module_entry_point(tmp_path):
    path = write_complete(tmp_path / "run.h5")
    cmd = [sys.executable, "-m", "solvers.common.hdf5_utils"]
    ok = subprocess.run([*cmd, "validate", str(path)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("OK: "), ok.stderr
    missing = subprocess.run([*cmd, "info", str(tmp_path / "nope.h5")], cwd=REPO_ROOT, capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "error:" in missing.stderr


# --------------------------------------------------------------------------------------------------
# readers stay on what they opened; validate checks what the readers rely on


def test_reads_stay_on_the_file_that_was_opened(tmp_path):
    """A rerun with --overwrite renames a new file onto the name: a reader opened before keeps reading the old file
    through every path (read_into used to open its descriptor by name on first use and read the new file)."""
    path = write_complete(tmp_path / "run.h5")
    with open_dataset(path) as g:
        w = new_writer(path, overwrite=True)
        bad = np.full((2, H, W), -777.0, np.float32)
        w.write_samples({"u": bad, "v": bad}, time=[0.0, 0.0], trajectory=[0, 1], step=[0, 0])
        w.commit()
        out = [np.empty((H, W), np.float32) for _ in range(2)]
        g.read_into("u", [0, 1], out)
        np.testing.assert_array_equal(np.stack(out), all_frames(2))
        np.testing.assert_array_equal(g.read("u", 0, 2), all_frames(2))
        w.close()


def test_a_reader_returns_only_committed_states_after_the_writer_moved_on(tmp_path):
    """The reader opened at state save 1; the writer then commits save 2 (slot 1) and writes save 3 into slot 0
    without committing it: the reader's latest state is save 2, never the uncommitted one in the slot it first saw."""
    path = tmp_path / "run.h5"
    w = new_writer(path)
    w.write_state(state_for(1), step=10, time=1.0)
    w.commit()
    with open_dataset(path) as g:
        w.write_state(state_for(2), step=20, time=2.0)
        w.commit()
        w.write_state(state_for(3), step=30, time=3.0)
        arrays, step, _ = g.read_state()
        assert step == 20 and arrays["rng_key"].tolist() == [2, 3]
    w.close()


def test_validate_checks_what_the_readers_rely_on(tmp_path, capsys):
    path = write_complete(tmp_path / "run.h5")
    with h5py.File(path, "r+") as f:
        f.attrs["config"] = "{oops"
    assert validate(path) == ["attribute 'config' is not valid JSON (Expecting property name enclosed in double "
                              "quotes: line 1 column 2 (char 1))"]  # fmt: skip
    assert hu.main(["validate", str(path)]) == 1  # a problem line, not a traceback from the reader
    with pytest.raises(ValueError, match=r"attrs\['config'\] must be JSON"):
        create_writer(tmp_path / "new.h5", fields=["u"], shape=(H, W), n_samples=2, grid=make_grid(), diagnostics=[],
                      n_diag=0, n_trajectories=1, state_spec={}, attrs={"config": "{oops"})  # fmt: skip
    assert not (tmp_path / "new.h5").exists()


@pytest.mark.parametrize(
    "trajectory, time, problem",
    [
        ([0, 1, 1, 0], [0, 0, 1, 1], "samples: not in the time-major order sample_order states (first: sample 2)"),
        ([0, 1, 0, 1], [0, 0, 0, 1], "samples: time does not increase within trajectory 0 (at sample 2)"),
    ],
)
def test_validate_holds_a_time_major_file_to_its_order(tmp_path, trajectory, time, problem):
    path = tmp_path / "run.h5"
    attrs = {**ATTRS, "sample_order": "time-major: sample i = frame * n_trajectories + trajectory"}
    w = create_writer(path, fields=FIELDS, shape=(H, W), n_samples=4, grid=make_grid(), diagnostics=[], n_diag=0,
                      n_trajectories=2, state_spec={}, attrs=attrs)  # fmt: skip
    frames = all_frames(4)
    w.write_samples({"u": frames, "v": frames}, time=time, trajectory=trajectory, step=[0, 0, 1, 1])
    w.commit()
    w.finalize()
    assert problem in validate(path)
