"""solvers.common.atomic: atomic writes never leave a half-written file; leftovers of killed writes are removed."""

import os
import subprocess
import sys

import pytest

from solvers.common.atomic import atomic_text, remove_temporaries


def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = atomic_text(tmp_path / "a.json", "old")

    def broken(path):
        path.write_text("half")
        raise OSError("disk full")

    from solvers.common.atomic import atomic_write

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    with pytest.raises(FileExistsError, match="--overwrite"):
        atomic_text(target, "new", overwrite=False)
    assert target.read_text() == "old"


def test_remove_temporaries_deletes_what_killed_writes_left_and_nothing_else(tmp_path):
    gone = dead_pid()
    leftovers = [".model.eqx.x1y2.tmp", ".ckpt_00000030.eqx.k9.tmp", f".run.h5.{gone}.creating"]
    kept = [
        f".run.h5.{os.getpid()}.creating",  # a live writer (this process)
        ".manifest.shard1.json.a1.tmp",  # another tool's (or another shard's) write
        "model.eqx",
        ".model.eqx",
    ]
    for name in leftovers + kept:
        (tmp_path / name).write_text("x")
    removed = remove_temporaries(tmp_path, ["model.eqx", "ckpt_*.eqx", "run.h5"])
    assert sorted(p.name for p in removed) == sorted(leftovers)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
