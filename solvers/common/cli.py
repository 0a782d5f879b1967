"""Shared command-line plumbing: one-line errors and exit codes for every Gust CLI.

Exit codes: 0 success, 1 unexpected failure, 2 bad input (argparse or a ValueError from a config
constructor, an output that exists without ``--overwrite``, or a file-system error on the user's paths such as an
unwritable folder), 3 the run stopped on a physics
failure (blow-up) after keeping what it had written, 130 Ctrl-C, 143 SIGTERM (``stop``: a solver or a training run
first finishes the frame or step in progress and saves what a resume needs).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path
from typing import NoReturn

from . import stop

EXIT_BAD_INPUT = 2
EXIT_RUN_FAILED = 3
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT), the shell's convention 128 + 2


class OneLineArgumentParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (``prog: error: ...``) with exit code 2, no usage dump, and which reads
    ``-1e-3`` as a negative number, as it does ``-1`` and ``-0.001`` (argparse took it for an unknown option)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def fail(prog: str, message: str, code: int = EXIT_BAD_INPUT) -> int:
    """Print a one-line error on stderr and return the exit code."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return code


def comma_list(text: str) -> tuple[str, ...]:
    """Parse ``a,b,c`` into a tuple of stripped, non-empty names."""
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _integer(text: str, minimum: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer (got {text!r})") from None
    if v < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum} (got {v})")
    return v


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _integer(text, 1)


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0 (seeds, offsets)."""
    return _integer(text, 0)


def _number(text: str, ok, rule: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number (got {text!r})") from None
    if not (math.isfinite(v) and ok(v)):
        raise argparse.ArgumentTypeError(f"must be a finite number{rule} (got {text!r})")
    return v


def finite_float(text: str) -> float:
    """argparse type: a finite number (no nan, no inf)."""
    return _number(text, lambda v: True, "")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _number(text, lambda v: v > 0, " > 0")


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _number(text, lambda v: v >= 0, " >= 0")


def int_list(text: str) -> tuple[int, ...]:
    """argparse type: ``1,2,2`` → (1, 2, 2)."""
    try:
        return tuple(int(s) for s in comma_list(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def positive_int_list(text: str) -> tuple[int, ...]:
    """argparse type: a non-empty comma list of integers >= 1 (e.g. ensemble sizes)."""
    values = int_list(text)
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"must be integers >= 1 (got {text!r})")
    return values


def precision_list(text: str) -> tuple[str, ...]:
    """argparse type: a non-empty comma list from float32, float64."""
    values = comma_list(text)
    if not values or not set(values) <= {"float32", "float64"}:
        raise argparse.ArgumentTypeError(f"must be float32 and/or float64 (got {text!r})")
    return values


def choice_list(allowed: tuple[str, ...]):
    """argparse type factory: a non-empty comma list of names from ``allowed`` (duplicates dropped, order kept)."""

    def parse(text: str) -> tuple[str, ...]:
        values = comma_list(text)
        if not values or not set(values) <= set(allowed):
            raise argparse.ArgumentTypeError(f"must be a comma list from {', '.join(allowed)} (got {text!r})")
        return tuple(dict.fromkeys(values))

    return parse


def scale_list(text: str) -> tuple[tuple[int, int], ...]:
    """argparse type for AxB pairs (VQ-VAE scales, grid sizes): ``1x1,2x2,4x8`` → ((1, 1), (2, 2), (4, 8))."""
    try:
        pairs = tuple(tuple(int(a) for a in s.lower().split("x")) for s in comma_list(text))
        if not pairs or any(len(p) != 2 or min(p) < 1 for p in pairs):
            raise ValueError
        return pairs
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected positive AxB pairs like 1x1,2x2,4x8, got {text!r}") from None


def add_trained_run_flags(group, data_help: str) -> None:
    """The flags of every tool that applies a trained VQ-VAE run to a Gust file (tokenizer, analysis)."""
    group.add_argument("--checkpoint", required=True, help="model.eqx of a models.train_vqvae run")
    group.add_argument("--config_path", required=True, help="config.txt of the same run")
    group.add_argument("--data_path", required=True, help=data_help)
    group.add_argument("--sample_start", type=int, default=0, help="first sample (default 0)")
    group.add_argument("--sample_stop", type=int, default=None, help="end of the samples (default: all)")
    group.add_argument("--fields", type=comma_list, default=None, help="must equal the model's fields (optional check)")


def add_distributed_flags(parser: argparse.ArgumentParser) -> None:
    """Flags to join a multi-process run through ``jax.distributed`` (process 0 writes the output)."""
    g = parser.add_argument_group("several hosts (jax.distributed; process 0 writes the file)")
    g.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() (auto-detects SLURM, Open MPI, ... launchers)",
    )
    g.add_argument("--coordinator_address", default=None, help="host:port of process 0 (implies --distributed)")
    g.add_argument("--num_processes", type=int, default=None, help="number of processes (with --coordinator_address)")
    g.add_argument("--process_id", type=int, default=None, help="this process' index (with --coordinator_address)")


def init_distributed(args: argparse.Namespace) -> None:
    """Join a multi-process JAX run before any computation, if the flags ask for it."""
    if args.coordinator_address is not None:
        host, _, port = args.coordinator_address.rpartition(":")
        if not (host and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"--coordinator_address must be host:port (got {args.coordinator_address!r})")
    explicit = [f"--{k}" for k in ("num_processes", "process_id") if getattr(args, k) is not None]
    if explicit and not (args.distributed or args.coordinator_address):
        raise ValueError(f"{' and '.join(explicit)} need --coordinator_address (or --distributed)")
    if args.num_processes is not None and args.num_processes < 1:
        raise ValueError(f"--num_processes must be >= 1 (got {args.num_processes})")
    if args.process_id is not None and not 0 <= args.process_id < (args.num_processes or 2**31):
        raise ValueError(f"--process_id must be in [0, --num_processes) (got {args.process_id})")
    if not (args.distributed or args.coordinator_address):
        return
    import jax

    keys = ("coordinator_address", "num_processes", "process_id")
    jax.distributed.initialize(**{k: getattr(args, k) for k in keys if getattr(args, k) is not None})


def check_seed(seed: int) -> None:
    """One-line ValueError unless 0 <= seed < 2**32: without x64, ``PRNGKey`` keeps 32 bits of the seed, so a larger
    one would silently repeat a smaller one's run."""
    if not 0 <= seed < 2**32:
        raise ValueError(f"--seed must be an integer in [0, 2**32) (got {seed})")


def os_error_text(err: OSError) -> str:
    """One line for a file-system error on the user's paths (unwritable folder, a folder where a file should be)."""
    if err.filename is not None:  # a rename (atomic writes) names the target second: that is the user's path
        name = err.filename2 if getattr(err, "filename2", None) is not None else err.filename
        return f"{name}: {err.strerror or type(err).__name__}"
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    h5 = re.search(r"name = '([^']*)'.*error message = '([^']*)'", text)  # h5py's wording of a failed open
    return f"{h5[1]}: {h5[2]}" if h5 else text


def out_of_memory_text(err: Exception) -> str | None:
    """One line for an allocation failure (settings too large for the machine): XLA's RESOURCE_EXHAUSTED or Python's
    MemoryError (numpy's "Unable to allocate ..."); None for any other error."""
    text = str(err)
    if isinstance(err, MemoryError):
        first = text.splitlines()[0] if text else "an allocation failed"
        return f"out of host memory: {first}; lower the sizes that set memory"
    if "RESOURCE_EXHAUSTED" not in text:
        return None
    m = re.search(r"Out of memory (?:while trying to )?allocat\w* (\d+) bytes", text)
    size = f" {int(m[1]) / 2**30:.3g} GiB" if m else ""
    return (
        f"out of device memory: an allocation of{size} failed; lower the sizes that set memory "
        "(grid, --n_trajectories, batch size, model width, codebook size)"
    )


def output_dir_problem(text: str, *, writable: bool = False) -> str | None:
    """Why ``--output_dir text`` cannot be used, or None: empty (``Path("")`` is the working directory), a broken
    symbolic link, or an existing non-directory; with ``writable``, also a folder that cannot be made or written
    (for tools that check before a long computation and make the folder after it)."""
    if not str(text).strip():
        return "--output_dir must not be empty"
    out = Path(text)
    if out.is_symlink() and not out.exists():
        return f"--output_dir {text} is a broken symbolic link"
    if out.exists() and not out.is_dir():
        return f"--output_dir {text} exists and is not a directory"
    if writable:
        probe = out.absolute()
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            return f"--output_dir {text} cannot be made: {probe} is not a directory"
        if not os.access(probe, os.W_OK | os.X_OK):
            verb = "written" if probe == out.absolute() else "made"
            return f"--output_dir {text} cannot be {verb}: {probe} is not writable"
    return None


def exit_process(code: int) -> NoReturn:
    """End a CLI process (its ``__main__``) with ``code``. After Ctrl-C (130) it ends at once, stdio flushed, without
    the interpreter's shutdown: every output is closed by then, and a shutdown that runs while JAX/XLA threads of the
    interrupted work still run crashed 2–3 of 15 interrupted analyses here (exit 134/139 after the one-line message;
    none in 26 with this)."""
    if code in (EXIT_INTERRUPTED, stop.EXIT_TERMINATED):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def report(prog: str, err: BaseException, interrupted: str | None = None) -> int:
    """The one-line report and exit code of an error that a CLI's work raised: bad input (ValueError,
    FileExistsError, OSError, an allocation XLA or numpy could not make) 2, a blow-up 3, Ctrl-C 130 (with the
    ``interrupted`` message, where the CLI keeps its work); anything else is re-raised (a bug: its traceback)."""
    from .driver import BlowUpError

    if isinstance(err, BlowUpError):  # a RuntimeError: before the allocation check
        return fail(prog, str(err), EXIT_RUN_FAILED)
    if isinstance(err, ValueError | FileExistsError):
        return fail(prog, str(err))
    if isinstance(err, OSError):
        return fail(prog, os_error_text(err))
    if isinstance(err, stop.Terminated) and interrupted:  # a loop's own message after a clean stop, or the default
        text = str(err) or "terminated by SIGTERM" + interrupted.removeprefix("interrupted")
        return fail(prog, text, stop.EXIT_TERMINATED)
    if isinstance(err, KeyboardInterrupt) and interrupted:
        return fail(prog, interrupted, EXIT_INTERRUPTED)
    if isinstance(err, RuntimeError | MemoryError) and (text := out_of_memory_text(err)) is not None:
        return fail(prog, text)
    raise err


def run_main(
    prog: str,
    parser: argparse.ArgumentParser,
    config_cls,
    run,
    argv: list[str] | None,
    run_options: tuple[str, ...] = (),
    check=None,
) -> int:
    """The body of every Gust CLI that builds a config and runs it (solvers, training): parse, build the frozen
    config (its ValueErrors become one-line errors, exit 2), join a distributed run if asked, call
    ``run(config, output_dir, ...)`` (plus the parsed ``run_options`` as keywords: settings of the execution
    that are not part of the config) and print the output path (process 0). ``check(args)``: the CLI's own
    test of the parsed flags (e.g. a flag that the other flags make meaningless), a message or None. A flag left
    at None (argparse default None: not given) takes the config's default."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.overwrite and args.resume:
        return fail(prog, "--overwrite and --resume exclude each other; pick one")
    if check is not None and (problem := check(args)):
        return fail(prog, problem)
    if problem := output_dir_problem(args.output_dir):
        return fail(prog, problem)
    try:
        fields = config_cls.__dataclass_fields__
        cfg = config_cls(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
        init_distributed(args)
        with stop.sigterm_handled():
            path = run(
                cfg,
                args.output_dir,
                overwrite=args.overwrite,
                resume=args.resume,
                progress=not args.no_progress,
                argv=[*prog.split(), *argv],
                **{name: getattr(args, name) for name in run_options},
            )
    except BaseException as err:
        return report(prog, err, "interrupted; what was committed is kept: rerun with --resume to continue")
    import jax

    if jax.process_index() == 0:
        print(path)
    return 0


def tool_main(prog: str, parser: argparse.ArgumentParser, body, argv: list[str] | None) -> int:
    """The body of a CLI that is not a run (tokenizer, analysis): parse, ``text = body(args, argv)``, print it.

    Errors from ``body`` are reported by :func:`report` (bad input: a one-line error and exit code 2; Ctrl-C: one
    line and exit code 130).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    try:
        with stop.sigterm_handled():
            text = body(args, argv)
    except BaseException as err:
        return report(prog, err, "interrupted; every file is written whole or not at all: rerun to finish")
    print(text)
    return 0


# the run_main ``run_options`` that add_run_flags defines (driver.run keywords, not part of the solver's config)
SOLVER_RUN_OPTIONS = ("state_seconds",)
# the full state is twice a frame of ω at 1024² (py2d, float32): saving it with every frame tripled the host
# I/O per frame of the production loop (benchmarks.profile_step on an H200)
DEFAULT_STATE_SECONDS = 60.0


def add_run_flags(parser: argparse.ArgumentParser, d) -> None:
    """The flags every solver shares, with defaults from its config ``d``: time grid, precision, ensemble,
    overwrite/resume and state saves, progress and the ``jax.distributed`` flags."""
    g = parser.add_argument_group("time grid")
    g.add_argument(
        "--t_total", type=float, default=d.t_total, help=f"saved duration after spin-up (default {d.t_total:g})"
    )
    g.add_argument(
        "--save_interval",
        type=float,
        default=d.save_interval,
        help=f"time between saved frames, a multiple of dt (default {d.save_interval:g})",
    )
    g.add_argument(
        "--spinup_time",
        type=float,
        default=d.spinup_time,
        help=f"time simulated before the first saved frame, not saved (default {d.spinup_time:g})",
    )
    g.add_argument(
        "--diag_every",
        type=int,
        default=d.diag_every,
        help="steps between diagnostics rows; must divide the steps per frame (default: ~10 per frame)",
    )
    g = parser.add_argument_group("execution")
    g.add_argument(
        "--precision",
        choices=("float32", "float64"),
        default=d.precision,
        help=f"solver precision (default {d.precision}); fields are stored float32",
    )
    g.add_argument(
        "--n_trajectories",
        type=int,
        default=d.n_trajectories,
        help="ensemble size M, advanced together and sharded over all visible devices (default 1)",
    )
    g.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from its last saved state (the frames committed after it are recomputed)",
    )
    g.add_argument(
        "--state_seconds",
        type=float,
        default=DEFAULT_STATE_SECONDS,
        help="wall-clock seconds between saves of the full state that --resume continues from, saved with the "
        f"first frame after each interval and with the last (default {DEFAULT_STATE_SECONDS:g}; 0: every frame)",
    )
    g.add_argument("--no_progress", action="store_true", help="no progress bar")
    add_distributed_flags(parser)
