"""pipeline.sweep: a tiny Rayleigh–Bénard Ra sweep end to end — manifest, splits, skip/resume, blow-up, shards,
and the validator catching corrupted and truncated files."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline import sweep
from solvers.common import hdf5_utils
from solvers.rayleigh_benard import solver

TINY = [
    "--set",
    "nx=16",
    "--set",
    "nz=9",
    "--set",
    "dt=0.05",
    "--set",
    "t_total=1.0",
    "--set",
    "save_interval=0.25",
    "--set",
    "ic_amplitude=0.3",
    "--no_progress",
]  # fmt: skip  (the tiny configuration of tests/test_rb_run.py: 5 frames of 9 x 16)
SWEEP = ["--solver", "rayleigh_benard", "--param", "rayleigh=2e4,3e4", "--seeds", "0", "--split", "train=0.5,test=0.5"]


def run(out, *extra, sweep_args=SWEEP):
    return sweep.main(["run", "--output_dir", str(out), *sweep_args, *TINY, *extra])


def manifest(path):
    return json.loads(path.read_text())


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def buoyancy(path):
    with hdf5_utils.open_dataset(path) as f:
        return f.read("buoyancy"), f.complete


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished 2 (Ra) x 1 (seed) sweep; tests that change it work on a copy."""
    out = tmp_path_factory.mktemp("sweep") / "rb"
    assert run(out) == 0
    return out


def copy(done, tmp_path):
    return shutil.copytree(done, tmp_path / "rb")


def test_sweep_writes_one_valid_file_per_point_and_the_manifest(done):
    m = manifest(done / "manifest.json")
    assert m["format"] == "gust-sweep" and m["sweep"]["solver"] == "rayleigh_benard"
    assert m["sweep"]["params"] == {"rayleigh": [2e4, 3e4]} and m["sweep"]["seeds"] == [0]
    assert m["sweep"]["set"]["nx"] == 16 and m["sweep"]["n_points"] == 2 and m["shard"] == [0, 1]
    assert "pipeline.sweep run" in m["provenance"]["command_line"] and m["provenance"]["code_version"]
    files = sorted((done / "files").rglob("*.h5"))
    assert len(files) == 2
    for k, (e, ra) in enumerate(zip(m["points"], (2e4, 3e4), strict=True)):
        path = done / e["file"]
        assert e["index"] == k and e["point_id"] == f"{k:04d}_rayleigh{ra:g}_seed0"
        assert e["file"] == f"files/{e['point_id']}/{path.name}" and path in files
        assert e["status"] == "complete" and e["reason"] is None and e["seed"] == 0
        assert e["values"] == {"rayleigh": ra, "seed": 0}
        assert e["parameters"]["rayleigh"] == ra and e["parameters"]["nz"] == 9 and e["parameters"]["dt"] == 0.05
        assert e["n_samples"] == 5 and e["bytes"] == path.stat().st_size and e["sha256"] == sha(path)
        assert hdf5_utils.validate(path) == []
        with hdf5_utils.open_dataset(path) as f:
            assert f.attrs["rayleigh"] == ra and f.n_samples == 5
    # 0.5 x 2 points: one each; which one is the seeded permutation's (documented rule)
    assert sorted(e["split"] for e in m["points"]) == ["test", "train"]
    assert [e["split"] for e in m["points"]] == sweep.assign_splits(2, [("train", 0.5), ("test", 0.5)], 0)


def test_validate_passes_on_a_clean_sweep(done, capsys):
    assert sweep.main(["validate", str(done / "manifest.json")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "2/2 points, 2 complete files, 10 samples" in out[0]
    assert "train 1 (5 samples), test 1 (5 samples)" in out[0] and "0 problem(s)" in out[0]
    assert sweep.main(["validate", str(done), "--no_hash"]) == 0


def test_rerun_skips_complete_files(done, monkeypatch):
    files = sorted((done / "files").rglob("*.h5"))
    before = [(f.stat().st_mtime_ns, sha(f)) for f in files]
    points = manifest(done / "manifest.json")["points"]

    def no_solver(*args, **kwargs):
        raise AssertionError("a complete point was run again")

    monkeypatch.setattr(solver, "run", no_solver)
    assert run(done) == 0
    assert [(f.stat().st_mtime_ns, sha(f)) for f in files] == before
    assert manifest(done / "manifest.json")["points"] == points


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_killed_sweep_resumes_the_partial_file_and_keeps_the_others(
    done, tmp_path, monkeypatch, capsys, interrupted_at_chunk, sigterm_at_chunk, signal_name
):
    out = copy(done, tmp_path)
    first, second = (out / e["file"] for e in manifest(out / "manifest.json")["points"])
    first_mtime = first.stat().st_mtime_ns
    second.unlink()  # point 1 never ran; the run is stopped in the middle of it
    real_make, real_run = solver.make_simulation, solver.run
    at_chunk_3 = interrupted_at_chunk if signal_name == "SIGINT" else sigterm_at_chunk
    monkeypatch.setattr(solver, "make_simulation", at_chunk_3(3, real_make))
    # Ctrl-C stops at once (frames 0 and 1 committed), exit 130; SIGTERM after frame 2 with its state, exit 143
    assert run(out) == {"SIGINT": 130, "SIGTERM": 143}[signal_name]
    if signal_name == "SIGTERM":
        assert "stopped by SIGTERM after frame 2" in capsys.readouterr().err
    m = manifest(out / "manifest.json")  # still valid JSON, point 1 still pending
    assert [e["status"] for e in m["points"]] == ["complete", "pending"]
    partial, complete = buoyancy(second)
    assert not complete and len(partial) == {"SIGINT": 2, "SIGTERM": 3}[signal_name]

    calls = []

    def spy(cfg, output_dir, **kw):
        calls.append((cfg.rayleigh, kw["resume"], kw["overwrite"]))
        return real_run(cfg, output_dir, **kw)

    monkeypatch.setattr(solver, "make_simulation", real_make)
    monkeypatch.setattr(solver, "run", spy)
    assert run(out) == 0
    assert calls == [(3e4, True, False)]  # only the partial file, continued with resume=True
    assert first.stat().st_mtime_ns == first_mtime
    e = manifest(out / "manifest.json")["points"][1]
    assert e["status"] == "complete" and e["n_samples"] == 5 and e["sha256"] == sha(second)
    resumed, complete = buoyancy(second)
    assert complete
    np.testing.assert_array_equal(resumed, buoyancy(done / e["file"])[0])  # bit-for-bit the uninterrupted run


def test_validator_catches_a_corrupted_file(done, tmp_path, capsys):
    out = copy(done, tmp_path)
    e = manifest(out / "manifest.json")["points"][0]
    path = out / e["file"]
    with h5py.File(path, "r") as f:
        ds = f["fields/buoyancy"]
        middle = ds.id.get_offset() + ds.dtype.itemsize * ds.size // 2
    with open(path, "r+b") as fh:
        fh.seek(middle)
        data = fh.read(8)
        fh.seek(middle)
        fh.write(bytes(b ^ 0x5A for b in data))
    assert sweep.main(["validate", str(out)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    problems = lines[:-1]
    assert problems == [f"{e['file']}: sha256 differs from the manifest (file changed or corrupted)"]
    assert "1 problem(s)" in lines[-1]


def test_validator_catches_a_truncated_file(done, tmp_path, capsys):
    out = copy(done, tmp_path)
    e = manifest(out / "manifest.json")["points"][1]
    path = out / e["file"]
    os.truncate(path, path.stat().st_size // 2)
    assert sweep.main(["validate", str(out / "manifest.json"), "--no_hash"]) == 1
    problems = capsys.readouterr().out.strip().splitlines()[:-1]
    assert problems and all(p.startswith(e["file"] + ": ") for p in problems)
    assert any("bytes, manifest records" in p for p in problems)
    assert any("unreadable" in p or "cannot open" in p for p in problems), problems


def test_validator_reports_missing_and_unexpected_files(done, tmp_path, capsys):
    out = copy(done, tmp_path)
    e = manifest(out / "manifest.json")["points"][0]
    (out / e["file"]).rename(out / "files" / "stray.h5")
    assert sweep.main(["validate", str(out), "--no_hash"]) == 1
    assert capsys.readouterr().out.strip().splitlines()[:-1] == [
        f"{e['file']}: missing",
        "files/stray.h5: unexpected file (not in the manifest)",
    ]


def test_a_file_left_by_a_run_killed_while_creating_a_point_is_named_then_removed(done, tmp_path, capsys):
    out = copy(done, tmp_path)
    e = manifest(out / "manifest.json")["points"][0]
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    stale = (out / e["file"]).with_name(f".{Path(e['file']).name}.{child.pid}.creating")
    stale.write_bytes(b"partial")  # hdf5_utils.create_writer's temporary, its process killed
    assert sweep.main(["validate", str(out), "--no_hash"]) == 1
    rel = stale.relative_to(out).as_posix()
    assert f"{rel}: left by an interrupted write; rerunning the sweep removes it" in capsys.readouterr().out
    assert run(out) == 0 and not stale.exists()
    assert sweep.main(["validate", str(out)]) == 0


def test_a_different_sweep_into_the_same_dir_is_refused(done, capsys):
    before = (done / "manifest.json").read_text()
    other = [*SWEEP[:3], "rayleigh=2e4,5e4", *SWEEP[4:]]
    assert run(done, sweep_args=other) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a different sweep (params differ)" in err[0] and "--overwrite" in err[0]
    assert run(done, "--set", "aspect=2") == 2  # a fixed field added: also a different sweep
    assert run(done, "--shard", "0/2", "--overwrite") == 2  # --overwrite never races other shards
    assert (done / "manifest.json").read_text() == before
    pairs = [TINY[i : i + 2] for i in range(0, len(TINY) - 1, 2)]  # the same --set flags in another order
    reordered = [flag for pair in reversed(pairs) for flag in pair]
    capsys.readouterr()
    assert sweep.main(["run", "--output_dir", str(done), *SWEEP, *reordered, "--no_progress"]) == 0
    assert "holds a different sweep" not in capsys.readouterr().err


def test_a_sweep_over_a_tuple_field_validates(tmp_path, capsys):
    # the manifest's JSON turns the fields tuple into a list: the validator rebuilt its point id wrongly
    args = ["--solver", "rayleigh_benard", "--param", "fields=buoyancy,buoyancy+w"]
    assert run(tmp_path / "rb", sweep_args=args) == 0, capsys.readouterr().out
    assert sweep.main(["validate", str(tmp_path / "rb"), "--no_hash"]) == 0


def test_points_that_would_compute_the_same_data_are_refused(tmp_path, capsys):
    # a deterministic initial condition makes the seeds equal; an unused option makes its values equal
    for args, message in (
        (["--seeds", "0,1", "--set", "ic=taylor_green"], "points 0000_seed0 and 0001_seed1 would compute the same"),
        (["--param", "cs=0.1,0.2"], "points 0000_cs0.1 and 0001_cs0.2 would compute the same data: a swept option"),
    ):
        code = sweep.main(["run", "--solver", "py2d_turbulence", "--output_dir", str(tmp_path / "py2d"), *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and message in err[0], err
        assert not (tmp_path / "py2d").exists()


def test_overwrite_deletes_only_what_the_manifest_lists(done, tmp_path, capsys):
    out = copy(done, tmp_path)
    (out / "files" / "mine.txt").write_text("a user's notes")
    (out / "notes").mkdir()
    assert run(out, "--overwrite") == 1  # the sweep reruns; the closing validation flags the file it kept
    assert "files/mine.txt: unexpected file (not in the manifest)" in capsys.readouterr().out
    assert (out / "files" / "mine.txt").read_text() == "a user's notes"
    assert (out / "notes").is_dir()
    assert [e["status"] for e in manifest(out / "manifest.json")["points"]] == ["complete", "complete"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--param", "rayleigh_number=1e6,1e7"], "--param rayleigh_number: not a field of rayleigh_benard's config"),
        (["--split_seed", "-1"], "--split_seed must be an integer in [0, 2**63) (got -1)"),
        (["--param", "rayleigh=1e6,abc"], "--param rayleigh='abc': expected a number"),
        (["--param", "rayleigh=1e6", "--set", "rayleigh=1e7"], "--set rayleigh: given more than once"),
        (["--param", "rayleigh=1e6", "--set", "nz=4"], "point 0000_rayleigh1e+06: --nz must be an integer >= 8"),
        (["--param", "rayleigh=1e6", "--seeds", "0", "--set", "seed=3"], "use either --seeds or --set seed"),
        (["--param", "rayleigh=1e6", "--split", "train=0.8,test=0.1"], "fractions sum to 0.9, not 1"),
        (["--param", "rayleigh=1e6", "--shard", "2/2"], "--shard '2/2': expected I/N with 0 <= I < N"),
        (["--param", "nz=9,4"], "point 0001_nz4: --nz must be an integer >= 8"),
        (["--param", "n_trajectories=1,2"], "--param n_trajectories: points with the same seed would share"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    out = tmp_path / "rb"
    assert sweep.main(["run", "--solver", "rayleigh_benard", "--output_dir", str(out), *args, "--no_progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_unknown_param_lists_the_allowed_fields(tmp_path, capsys):
    code = sweep.main(["run", "--solver", "py2d_turbulence", "--output_dir", str(tmp_path), "--param", "re=1,2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "allowed: dt, t_total, save_interval" in err and "Re," in err


def test_values_are_parsed_to_the_config_field_types():
    spec = sweep.parse_spec(
        "rayleigh_benard", ["fields=buoyancy,buoyancy+w", "nx=16,32"], ["ic_file=none", "grid=native", "aspect=2"]
    )
    assert spec.params == (("fields", (("buoyancy",), ("buoyancy", "w"))), ("nx", (16, 32)))
    assert spec.fixed == (("ic_file", None), ("grid", "native"), ("aspect", 2.0))
    points = sweep.make_points(spec)
    assert [p.config.fields for p in points] == [("buoyancy",), ("buoyancy",), ("buoyancy", "w"), ("buoyancy", "w")]
    assert [p.config.nx for p in points] == [16, 32, 16, 32]  # the last --param varies fastest
    assert points[3].point_id == "0003_fieldsbuoyancy+w_nx32" and points[0].config.aspect == 2.0
    assert sweep.parse_spec("rayleigh_benard", [], ["fields=u,w"], seeds="0").fixed == (("fields", ("u", "w")),)


def test_split_sizes_follow_the_largest_remainder_rule():
    well = [("train", 0.8), ("val", 0.1), ("test", 0.1)]
    # N = 35 (5 Ra x 7 Pr): 28 / 3.5 / 3.5 -> floors 28/3/3, the leftover point to val (first of the tie)
    for n, counts in ((35, (28, 4, 3)), (7, (5, 1, 1)), (2, (2, 0, 0)), (10, (8, 1, 1))):
        got = sweep.assign_splits(n, well, seed=0)
        assert tuple(got.count(name) for name, _ in well) == counts, (n, got)
        assert got == sweep.assign_splits(n, well, seed=0)  # deterministic
    assert sweep.assign_splits(35, well, seed=0) != sweep.assign_splits(35, well, seed=1)


def test_a_blow_up_marks_the_point_failed_and_the_sweep_goes_on(tmp_path, capsys):
    out = tmp_path / "rb"
    args = ["--solver", "rayleigh_benard", "--param", "rayleigh=2e4,1e6"]
    # Ra = 1e6 at 16 x 9 with dt = 0.25 exceeds the CFL limit within 5 time units (cf. tests/test_rb_run.py)
    tiny = [*args, "--set", "nx=16", "--set", "nz=9", "--set", "ic_amplitude=0.3", "--no_progress"]
    tiny += ["--set", "dt=0.25", "--set", "t_total=5", "--set", "save_interval=0.5"]
    assert sweep.main(["run", "--output_dir", str(out), *tiny]) == 3
    captured = capsys.readouterr()
    ok, bad = manifest(out / "manifest.json")["points"]
    assert ok["status"] == "complete" and ok["n_samples"] == 11
    assert bad["status"] == "failed" and "CFL" in bad["reason"] and bad["sha256"] is None and bad["n_samples"] >= 1
    assert f"{bad['file']}: status failed (" in captured.out
    assert sweep.main(["status", str(out)]) == 0
    assert "1 complete, 1 failed" in capsys.readouterr().out
    ok_file = out / ok["file"]
    mtime = ok_file.stat().st_mtime_ns
    assert sweep.main(["run", "--output_dir", str(out), *tiny]) == 3  # the failed point runs again (and fails again)
    assert "writing" in capsys.readouterr().err and ok_file.stat().st_mtime_ns == mtime
    assert [e["status"] for e in manifest(out / "manifest.json")["points"]] == ["complete", "failed"]


def test_shards_cover_the_sweep_and_validate_merges_them(done, tmp_path, capsys):
    out = tmp_path / "rb"
    assert run(out, "--shard", "0/2") == 0
    assert run(out, "--shard", "1/2") == 0
    shards = [manifest(out / f"manifest.{i}-of-2.json") for i in range(2)]
    assert [[e["index"] for e in m["points"]] for m in shards] == [[0], [1]]
    assert not (out / "manifest.json").exists()
    whole = manifest(done / "manifest.json")["points"]
    assert [m["points"][0]["split"] for m in shards] == [e["split"] for e in whole]  # the same global splits
    capsys.readouterr()
    assert sweep.main(["validate", str(out)]) == 0
    assert "(2 manifests): 2/2 points, 2 complete files, 10 samples" in capsys.readouterr().out
    assert sweep.main(["validate", str(out / "manifest.1-of-2.json")]) == 0  # one shard on its own
    (out / "manifest.1-of-2.json").unlink()
    assert sweep.main(["validate", str(out)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert "manifest.1-of-2.json: missing (sweep has 2 shard(s))" in lines
    assert "1 point(s) missing from the manifest(s) (first: [1])" in lines
    assert f"{whole[1]['file']}: unexpected file (not in the manifest)" in lines


def test_validator_catches_swapped_files_and_edited_entries(done, tmp_path, capsys):
    """Without hashes too: a file holding another point's run, and manifest entries edited away from what the sweep
    definition makes of their index (split, swept value, point id), are problems (they used to validate clean)."""
    out = copy(done, tmp_path)
    m = manifest(out / "manifest.json")
    first, second = m["points"]
    shutil.copy(out / second["file"], out / first["file"])  # point 0's name, point 1's run (Ra 3e4)
    assert sweep.main(["validate", str(out), "--no_hash"]) == 1
    problems = capsys.readouterr().out.strip().splitlines()[:-1]
    assert f"{first['file']}: its stored settings differ from the manifest's parameters (rayleigh)" in problems
    shutil.copy(done / first["file"], out / first["file"])
    first["split"] = "train" if first["split"] == "test" else "test"
    second["values"]["rayleigh"] = 9e4
    second["parameters"]["rayleigh"] = 9e4
    (out / "manifest.json").write_text(json.dumps(m))
    assert sweep.main(["validate", str(out), "--no_hash"]) == 1
    problems = capsys.readouterr().out.strip().splitlines()[:-1]
    assert problems[0] == f"point 0 ({first['point_id']}): split disagree with the sweep definition", problems
    assert problems[1] == f"point 1 ({second['point_id']}): values, parameters disagree with the sweep definition"
    assert any("its stored settings differ" in p and "(rayleigh)" in p for p in problems[2:]), problems
    m = manifest(done / "manifest.json")
    m["points"][1]["seed"] = 7  # its values, parameters and file all say 0
    (out / "manifest.json").write_text(json.dumps(m))
    shutil.copy(done / first["file"], out / first["file"])
    assert sweep.main(["validate", str(out), "--no_hash"]) == 1
    problems = capsys.readouterr().out.strip().splitlines()[:-1]
    assert problems == [f"point 1 ({second['point_id']}): seed disagree with the sweep definition"], problems


def test_a_file_of_another_run_under_a_points_name_is_kept_without_overwrite(done, tmp_path, capsys):
    """With the manifest gone, a rerun with other settings used to replace the finished files silently."""
    out = copy(done, tmp_path)
    (out / "manifest.json").unlink()
    before = {p: sha(p) for p in (out / "files").rglob("*.h5")}
    assert run(out, "--set", "cfl_safety=0.3") == 2  # no: the names are the same, the runs are not
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a run with other settings (cfl_safety) than point 0000_" in err[0], err
    assert {p: sha(p) for p in (out / "files").rglob("*.h5")} == before and not (out / "manifest.json").exists()
    assert run(out) == 0  # the same settings adopt the files, unchanged
    assert {p: sha(p) for p in (out / "files").rglob("*.h5")} == before
