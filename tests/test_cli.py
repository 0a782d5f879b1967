"""solvers.common.cli: file-system and out-of-memory errors become one line (exit code 2 in every CLI)."""

import errno
import subprocess
import sys
from pathlib import Path

import pytest

from solvers.common.cli import OneLineArgumentParser, os_error_text, out_of_memory_text


def test_os_error_names_the_path_and_the_reason():
    err = PermissionError(errno.EACCES, "Permission denied", "/data/out/run.h5")
    assert os_error_text(err) == "/data/out/run.h5: Permission denied"
    # an atomic write's rename onto the user's path: the user's path, not the temporary file
    err = IsADirectoryError(errno.EISDIR, "Is a directory", "/data/.out.npz.x1.tmp", None, "/data/out.npz")
    assert os_error_text(err) == "/data/out.npz: Is a directory"


def test_h5py_open_failure_is_reduced_to_path_and_reason():
    # h5py raises OSError without a filename; its message carries both (h5py 3.x wording)
    err = OSError(
        "[Errno 13] Unable to synchronously create file (unable to open file: name = '/ro/x.h5', errno = 13, "
        "error message = 'Permission denied', flags = 13, o_flags = 242)"
    )
    assert os_error_text(err) == "/ro/x.h5: Permission denied"


def test_other_os_errors_keep_their_first_line():
    assert os_error_text(OSError("disk quota exceeded\ndetails")) == "disk quota exceeded"


def test_out_of_memory_is_recognised_in_the_cpu_and_gpu_wordings():
    cpu = RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 32000000000 bytes.")
    gpu = RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 2147483648 bytes.\nBufferAssignment")
    assert "an allocation of 29.8 GiB failed" in out_of_memory_text(cpu)
    assert "an allocation of 2 GiB failed" in out_of_memory_text(gpu)
    assert out_of_memory_text(RuntimeError("INTERNAL: something else")) is None
    host = MemoryError("Unable to allocate 745. GiB for an array with shape (100000000001,) and data type float64")
    assert out_of_memory_text(host) == (
        "out of host memory: Unable to allocate 745. GiB for an array with shape (100000000001,) and data type "
        "float64; lower the sizes that set memory"
    )


@pytest.mark.parametrize("code", [0, 2, 130])
def test_exit_process_ends_with_the_code_and_flushes_what_was_printed(code):
    """130 (Ctrl-C) ends the process at once (os._exit, no interpreter shutdown under JAX's threads): what was
    printed before must still come out."""
    script = f"from solvers.common.cli import exit_process\nprint('kept', end='')\nexit_process({code})\n"
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True, text=True, timeout=60)
    assert out.returncode == code and out.stdout == "kept"


def test_negative_numbers_with_an_exponent_are_values_not_options(capsys):
    # e.g. a negative beta-plane gradient, --beta -1e-1 (plain argparse: "expected one argument")
    p = OneLineArgumentParser(prog="x")
    p.add_argument("--beta", type=float)
    p.add_argument("--n", type=int)
    for text, value in (("-1e-1", -0.1), ("-2.5E+2", -250.0), ("-.5e1", -5.0), ("-3", -3.0)):
        assert p.parse_args(["--beta", text]).beta == value
    assert p.parse_args(["--n", "-4"]).n == -4
    with pytest.raises(SystemExit) as stop:
        p.parse_args(["--beta", "-x"])  # not a number: still an unknown option, one line, exit 2
    assert stop.value.code == 2 and capsys.readouterr().err.count("\n") == 1
