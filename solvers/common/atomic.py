"""Output files: atomic writes (every Gust output other than the HDF5 datasets, which commit in place) and hashes.

``atomic_write(path, write)`` calls ``write(tmp)`` on a temporary file in the same folder and then renames it onto
``path``: a reader, or a run killed at any instant, sees either the old file or the complete new one, never a
half-written file. With ``overwrite=False`` an existing ``path`` is never replaced (``FileExistsError``, checked
again at the rename through a hard link, so two writers cannot both win).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_text", "atomic_write", "file_sha256", "is_temporary", "remove_temporaries", "temporary_files"]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool = True) -> Path:
    """``write(tmp)`` to a temporary file next to ``path``, then move it onto ``path``; returns ``path``."""
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
    try:
        write(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path appeared meanwhile
            except FileExistsError:
                raise FileExistsError(f"{path} exists; pass --overwrite to replace it") from None
            except OSError:  # a filesystem without hard links
                if path.exists():
                    raise FileExistsError(f"{path} exists; pass --overwrite to replace it") from None
                os.replace(tmp, path)
            tmp.unlink(missing_ok=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def is_temporary(name: str) -> bool:
    """Whether a file name is that of a write in progress (or of one a killed process left): :func:`atomic_write`'s
    ``.NAME.*.tmp`` or ``hdf5_utils.create_writer``'s ``.NAME.PID.creating``."""
    return name.startswith(".") and name.endswith((".tmp", ".creating"))


def temporary_files(folder: str | os.PathLike, names) -> list[Path]:
    """The temporary files (see :func:`is_temporary`) of writes of ``names`` (file names or glob patterns, e.g.
    ``ckpt_*.eqx``) in ``folder``, whether their process still runs or not."""
    folder = Path(folder)
    return [tmp for name in names for suffix in ("tmp", "creating") for tmp in folder.glob(f".{name}.*.{suffix}")]


def remove_temporaries(folder: str | os.PathLike, names) -> list[Path]:
    """Delete the temporary files that writes of ``names`` (file names or glob patterns, e.g. ``ckpt_*.eqx``) into
    ``folder`` left behind when their process was killed: :func:`atomic_write`'s ``.NAME.*.tmp`` and
    ``hdf5_utils.create_writer``'s ``.NAME.PID.creating``, the latter only where process PID is gone (this host's
    PIDs). Call it only on a folder this process owns (its output folder). Returns what was deleted."""
    removed = []
    for tmp in temporary_files(folder, names):
        if tmp.name.endswith(".creating"):
            pid = tmp.name.removesuffix(".creating").rsplit(".", 1)[-1]
            if not pid.isdigit() or _alive(int(pid)):
                continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_text(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> Path:
    return atomic_write(path, lambda p: p.write_text(text), overwrite=overwrite)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (bounded memory for any size)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
