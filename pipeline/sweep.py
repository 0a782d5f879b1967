"""Parameter sweeps: one Gust file per point, a ``manifest.json``, resumable file by file, validated at the end.

    python -m pipeline.sweep run --solver rayleigh_benard --output_dir sweeps/rb \\
        --param rayleigh=1e6,1e7 --param prandtl=0.1,1,10 --seeds 0,1 --set nx=128 --set nz=32
    python -m pipeline.sweep validate sweeps/rb            # or sweeps/rb/manifest.json; --no_hash skips sha256
    python -m pipeline.sweep status sweeps/rb

**Points.** Every ``--param NAME=V1,V2,...`` is a field of the solver's frozen config (``RBConfig``,
``Py2DConfig``) swept over its values; the points are the Cartesian product of the ``--param`` lists in the order
given (the last one varies fastest), times ``--seeds`` (innermost). ``--set NAME=VALUE`` fixes a field for every
point; fields neither swept nor set keep the solver's defaults. Values are parsed to the field's type (int, float,
str, ``none`` for an optional field); a tuple field (``fields``) takes its items joined by ``+``
(``--param fields=buoyancy,buoyancy+u+w``; in ``--set`` a comma also works). Every point's config is built, and so
validated, before anything runs: an unknown name or a bad value is a one-line error (exit 2). Point ``k`` gets the id
``<k>_<name><value>...`` (e.g. ``0003_rayleigh1e+06_prandtl1_seed0``, point 3 of the sweep below) and is written
by the solver's own ``run()`` into ``output_dir/files/<point_id>/`` under the solver's file name.

**Splits.** ``--split train=0.8,val=0.1,test=0.1`` (the default; any names, fractions summing to 1) assigns every
point to one split: the point indices are permuted by ``numpy.random.default_rng(--split_seed).permutation`` and
cut into consecutive blocks. Block sizes round by largest remainder: each split gets ``floor(f·N)`` points and the
points left over go one each to the splits with the largest fractional parts ``f·N − floor(f·N)`` (ties: the order
given in ``--split``); e.g. N = 35 with 0.8/0.1/0.1 gives 28/4/3, N = 2 gives 2/0/0. The assignment depends only on
the sweep definition, so every shard computes the same one.

**Manifest** (``output_dir/manifest.json``, rewritten atomically after every point, so a killed sweep always leaves a
valid one): ``format`` "gust-sweep" 1.0; ``sweep`` (solver, params, set, seeds, split, split_seed, n_shards, n_points:
the definition a rerun must match); ``shard`` [i, n]; ``provenance`` (code version, library versions, command line,
time of the run that created it) and ``last_run`` (the same for the latest run); ``points``: one entry per point of
this shard with ``index``, ``point_id``, ``file`` (relative to the manifest), ``values`` (the swept values and seed),
``parameters`` (the full config), ``seed``, ``split``, ``status`` (pending / complete / failed), ``reason`` (why it
failed, one line), ``n_samples`` (committed samples), ``sha256`` and ``bytes`` (complete files).

**Resuming.** Rerunning the same ``run`` command continues the sweep file by file: a complete file whose sha256
still matches the manifest is skipped untouched; a complete file the manifest does not know yet (killed between the
file and the manifest) is adopted if its stored config is the point's; a partially written file continues with the
solver's ``resume=True`` (bit-for-bit the uninterrupted result); a failed point, a missing file, an unreadable one or
a complete one whose sha256 changed is run again from the start. A blow-up (``BlowUpError``: non-finite values or
CFL above the limit) or a config the solver rejects marks that point failed with the reason and the sweep goes on;
the exit code is then 3. A ``run`` with a different definition (solver, params, set, seeds, split, shard count, or
solver defaults that changed the points' configs) into the same output_dir is refused (exit 2) unless
``--overwrite``, which deletes the previous sweep there first: the files its manifests list, the manifests, and the
folders under ``files/`` left empty (anything else stays, and the closing validation reports it). At the end the run
validates its manifest (as ``validate``, hashes included) and prints one line per problem and a summary line.

**Validation.** ``validate MANIFEST|DIR`` checks that every point is complete, its file exists, has the recorded
size, passes ``solvers.common.hdf5_utils.validate``, holds the recorded number of samples and (unless
``--no_hash``) the recorded sha256, and that ``files/`` holds nothing else; given a directory it merges the shard
manifests and checks that every shard is there and every point is covered exactly once. It prints one line per
problem (naming the file) and a summary (points, files, samples, bytes, per-split counts); exit 0 if clean, 1 if
not, 2 if there is no manifest to read.

**The Well-like Rayleigh–Bénard set** (Ra ∈ {1e6 … 1e10} × Pr ∈ {0.1 … 10}, 512 × 128, aspect 4, 201 frames
over 50 time units; add ``--seeds`` for several initial perturbations per (Ra, Pr); adaptive dt for the high Ra,
with CFL safety 0.2 for the onset burst at Ra >= 1e9 (README); check the resolution with the Nusselt spread each run
prints)::

    python -m pipeline.sweep run --solver rayleigh_benard --output_dir sweeps/rb_well \\
        --param rayleigh=1e6,1e7,1e8,1e9,1e10 --param prandtl=0.1,0.2,0.5,1,2,5,10 --seeds 0 \\
        --set nx=512 --set nz=128 --set aspect=4 --set t_total=50 --set save_interval=0.25 \\
        --set dt=0.0025 --set max_dt=0.0125 --set cfl_safety=0.2 --set fields=buoyancy+u+w+pressure \\
        --set precision=float32

**Several machines.** ``--shard i/n`` makes a process take the points with ``index % n == i`` and record them in its
own ``manifest.<i>-of-<n>.json`` (the splits are still those of the whole sweep); every process runs the identical
command except ``--shard``, on a shared filesystem or on separate disks copied together afterwards, and
``validate DIR`` merges the shards. Each process runs its points on all its local devices (ensembles with
``--set n_trajectories=M`` are sharded over them by the solver). With a SLURM job array::

    #SBATCH --array=0-7
    python -m pipeline.sweep run ... --shard ${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT} --no_progress
    python -m pipeline.sweep validate sweeps/rb_well   # once all tasks are done

A killed task is resumed by resubmitting it with the same command. ``--overwrite`` cannot be combined with
``--shard`` (another shard may be writing); clear the directory instead.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import importlib
import itertools
import json
import math
import re
import sys
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from solvers.common import hdf5_utils, stop
from solvers.common.atomic import atomic_text, file_sha256, is_temporary, remove_temporaries
from solvers.common.cli import EXIT_RUN_FAILED, OneLineArgumentParser, exit_process, report

__all__ = [
    "SOLVERS",
    "Point",
    "SweepSpec",
    "assign_splits",
    "main",
    "make_points",
    "parse_spec",
    "run_sweep",
    "validate",
]

PROG = "python -m pipeline.sweep"
MANIFEST_FORMAT = "gust-sweep"
MANIFEST_VERSION = "1.0"
MANIFEST_GLOB = "manifest*.json"
SHARD_NAME = re.compile(r"manifest\.(\d+)-of-(\d+)\.json")
DEFAULT_SPLIT = "train=0.8,val=0.1,test=0.1"

# solver name → (module with the frozen config and run(), config class name)
SOLVERS = {
    "rayleigh_benard": ("solvers.rayleigh_benard.solver", "RBConfig"),
    "py2d_turbulence": ("solvers.py2d_turbulence.solver", "Py2DConfig"),
}


def solver_module(name: str) -> types.ModuleType:
    return importlib.import_module(SOLVERS[name][0])


def config_class(name: str) -> type:
    return getattr(solver_module(name), SOLVERS[name][1])


def _json(value: Any) -> Any:
    """``value`` as plain JSON data (tuples → lists), the form stored in and compared with the manifest."""
    return json.loads(json.dumps(value))


# --------------------------------------------------------------------------------------------------
# The sweep definition


def _parse_value(flag: str, name: str, hint: Any, text: str) -> Any:
    """``text`` parsed to the config field type ``hint``; ValueError naming the flag, field and value."""
    text = text.strip()
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        if text.lower() == "none":
            return None
        (hint,) = [a for a in args if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        items = [s.strip() for s in re.split(r"[+,]", text) if s.strip()]
        return tuple(_parse_value(flag, name, args[0] if args else str, s) for s in items)
    if hint is bool:
        if text.lower() in ("true", "1", "yes", "false", "0", "no"):
            return text.lower() in ("true", "1", "yes")
        raise ValueError(f"{flag} {name}={text!r}: expected true or false")
    if hint is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{flag} {name}={text!r}: expected an integer") from None
    if hint is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{flag} {name}={text!r}: expected a number") from None
    if hint is str:
        if not text:
            raise ValueError(f"{flag} {name}: empty value")
        return text
    raise ValueError(f"{flag} {name}: fields of type {hint} cannot be set from the command line")


def _field_hints(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _split_assignment(flag: str, text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"{flag} {text!r}: expected NAME=VALUE")
    return name.strip(), value


def _parse_split(text: str) -> tuple[tuple[str, float], ...]:
    parts = []
    for item in (s for s in text.split(",") if s.strip()):
        name, value = _split_assignment("--split", item)
        try:
            frac = float(value)
        except ValueError:
            raise ValueError(f"--split {name}={value!r}: expected a fraction in [0, 1]") from None
        if not 0 <= frac <= 1:
            raise ValueError(f"--split {name}={value!r}: expected a fraction in [0, 1]")
        parts.append((name, frac))
    names = [n for n, _ in parts]
    if not parts or len(set(names)) != len(names):
        raise ValueError(f"--split {text!r}: expected distinct NAME=FRACTION items, e.g. {DEFAULT_SPLIT}")
    if abs(sum(f for _, f in parts) - 1.0) > 1e-9:
        raise ValueError(f"--split {text!r}: fractions sum to {sum(f for _, f in parts):g}, not 1")
    return tuple(parts)


@dataclass(frozen=True)
class SweepSpec:
    """A sweep's definition: what a rerun into the same output_dir must repeat exactly."""

    solver: str
    params: tuple[tuple[str, tuple[Any, ...]], ...]
    fixed: tuple[tuple[str, Any], ...] = ()
    seeds: tuple[int, ...] | None = None
    split: tuple[tuple[str, float], ...] = (("train", 0.8), ("val", 0.1), ("test", 0.1))
    split_seed: int = 0
    n_shards: int = 1

    @property
    def n_points(self) -> int:
        return math.prod(len(values) for _, values in self.params) * len(self.seeds or (None,))

    def definition(self) -> dict[str, Any]:
        return _json(
            {
                "solver": self.solver,
                "params": {name: list(values) for name, values in self.params},
                "set": dict(self.fixed),
                "seeds": None if self.seeds is None else list(self.seeds),
                "split": dict(self.split),
                "split_seed": self.split_seed,
                "n_shards": self.n_shards,
                "n_points": self.n_points,
            }
        )


def parse_spec(
    solver: str,
    params: Sequence[str],
    fixed: Sequence[str] = (),
    seeds: str | None = None,
    split: str = DEFAULT_SPLIT,
    split_seed: int = 0,
    n_shards: int = 1,
) -> SweepSpec:
    """Build a :class:`SweepSpec` from the command-line texts; a one-line ValueError on bad input."""
    if solver not in SOLVERS:
        raise ValueError(f"--solver {solver!r}: allowed: {', '.join(SOLVERS)}")
    if not 0 <= split_seed < 2**63:
        raise ValueError(f"--split_seed must be an integer in [0, 2**63) (got {split_seed})")
    hints = _field_hints(config_class(solver))
    seen: set[str] = set()

    def check_name(flag: str, name: str) -> None:
        if name not in hints:
            raise ValueError(f"{flag} {name}: not a field of {solver}'s config; allowed: {', '.join(hints)}")
        if name in seen:
            raise ValueError(f"{flag} {name}: given more than once (in --param or --set)")
        if name == "seed" and seeds is not None:
            raise ValueError(f"{flag} seed: use either --seeds or {flag} seed, not both")
        seen.add(name)

    swept = []
    for text in params:
        name, values = _split_assignment("--param", text)
        check_name("--param", name)
        parsed = tuple(_parse_value("--param", name, hints[name], v) for v in values.split(",") if v.strip())
        if not parsed:
            raise ValueError(f"--param {name}: no values given; expected {name}=V1,V2,...")
        if len(set(parsed)) != len(parsed):
            raise ValueError(f"--param {name}: a value is listed twice ({values})")
        if name == "n_trajectories":
            raise ValueError(
                "--param n_trajectories: points with the same seed would share trajectories (member m always starts "
                "from fold_in(PRNGKey(seed), m)); use --set n_trajectories=M and sweep --seeds"
            )
        swept.append((name, parsed))
    if not swept and seeds is None:
        raise ValueError("nothing to sweep: give at least one --param NAME=V1,V2,... or --seeds")
    set_values = []
    for text in fixed:
        name, value = _split_assignment("--set", text)
        check_name("--set", name)
        set_values.append((name, _parse_value("--set", name, hints[name], value)))
    seed_list = None
    if seeds is not None:
        try:
            seed_list = tuple(int(s) for s in seeds.split(",") if s.strip())
        except ValueError:
            raise ValueError(f"--seeds {seeds!r}: expected comma-separated integers >= 0") from None
        if not seed_list or min(seed_list) < 0 or len(set(seed_list)) != len(seed_list):
            raise ValueError(f"--seeds {seeds!r}: expected distinct comma-separated integers >= 0")
    return SweepSpec(solver, tuple(swept), tuple(set_values), seed_list, _parse_split(split), split_seed, n_shards)


# --------------------------------------------------------------------------------------------------
# Points and splits


def assign_splits(n: int, split: Sequence[tuple[str, float]], seed: int) -> list[str]:
    """The split of each of ``n`` points: a seeded permutation cut into largest-remainder-rounded blocks."""
    exact = [frac * n for _, frac in split]
    counts = [math.floor(x + 1e-9) for x in exact]
    by_remainder = sorted(range(len(split)), key=lambda j: (-(exact[j] - counts[j]), j))
    for j in by_remainder[: n - sum(counts)]:
        counts[j] += 1
    order = np.random.default_rng(seed).permutation(n)
    out = [""] * n
    start = 0
    for (name, _), count in zip(split, counts, strict=True):
        for i in order[start : start + count]:
            out[int(i)] = name
        start += count
    return out


def _slug(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, (tuple, list)):  # a list: a tuple read back from the manifest's JSON
        text = "+".join(map(str, value))
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "-", text)


@dataclass(frozen=True)
class Point:
    index: int
    point_id: str
    values: dict[str, Any]  # the swept values (and seed)
    config: Any  # the solver's frozen config
    split: str

    @property
    def file(self) -> str:
        """The output file, relative to the sweep's output_dir."""
        return f"files/{self.point_id}/{self.config.output_name()}"


def make_points(spec: SweepSpec) -> list[Point]:
    """Every point of the sweep, configs built (so validated) up front; ValueError naming the first bad point."""
    cls = config_class(spec.solver)
    names = [name for name, _ in spec.params] + (["seed"] if spec.seeds is not None else [])
    axes = [values for _, values in spec.params] + ([spec.seeds] if spec.seeds is not None else [])
    combos = list(itertools.product(*axes))
    splits = assign_splits(len(combos), spec.split, spec.split_seed)
    width = max(4, len(str(len(combos) - 1)))
    points = []
    for k, combo in enumerate(combos):
        values = dict(zip(names, combo, strict=True))
        point_id = f"{k:0{width}d}" + "".join(f"_{name}{_slug(v)}" for name, v in values.items())
        try:
            cfg = cls(**dict(spec.fixed), **values)
        except (ValueError, TypeError) as e:
            raise ValueError(f"point {point_id}: {e}") from None
        points.append(Point(k, point_id, values, cfg, splits[k]))
    # two points that would write the same data (a swept option the config does not use, e.g. cs without an
    # eddy-viscosity closure, or seeds with a deterministic initial condition) would also leak across splits
    seen: dict[str, str] = {}
    for p in points:
        run = json.loads(p.config.to_json())  # the options the run uses (unused LES options left out)
        if not p.config.uses_seed:
            run.pop("seed")
        if (twin := seen.setdefault(json.dumps(run, sort_keys=True), p.point_id)) != p.point_id:
            unused = "the seed (the initial condition draws nothing)" if not p.config.uses_seed else "a swept option"
            raise ValueError(f"points {twin} and {p.point_id} would compute the same data: {unused} has no effect")
    return points


# --------------------------------------------------------------------------------------------------
# Manifests


def manifest_name(shard: int, n_shards: int) -> str:
    return "manifest.json" if n_shards == 1 else f"manifest.{shard}-of-{n_shards}.json"


def _entry(point: Point, status: str = "pending", **kw: Any) -> dict[str, Any]:
    entry = {
        "index": point.index,
        "point_id": point.point_id,
        "file": point.file,
        "values": point.values,
        "parameters": dataclasses.asdict(point.config),
        "seed": point.config.seed,
        "split": point.split,
        "status": status,
        "reason": None,
        "n_samples": 0,
        "sha256": None,
        "bytes": None,
    }
    entry.update(kw)
    return _json(entry)


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable sweep manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path}: not a sweep manifest (no 'format' = {MANIFEST_FORMAT!r})")
    major = str(manifest.get("format_version", "")).split(".")[0]
    if major != MANIFEST_VERSION.split(".")[0]:
        raise ValueError(f"{path}: manifest version {manifest.get('format_version')!r}, this reader reads 1.x")
    return manifest


def _manifests_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob(MANIFEST_GLOB) if p.name == "manifest.json" or SHARD_NAME.fullmatch(p.name))


def _changed(old: dict, new: dict) -> list[str]:
    def text(d: dict, key: str) -> str:  # the --set flags' order does not matter; --param's and the split's do
        return json.dumps(d.get(key), sort_keys=key == "set")

    return [k for k in sorted(set(old) | set(new)) if text(old, k) != text(new, k)]


# --------------------------------------------------------------------------------------------------
# run


def _file_state(path: Path) -> tuple[str, int, str | None]:
    """(complete | incomplete | unreadable, committed samples, stored config JSON) of a point's file."""
    try:
        with hdf5_utils.open_dataset(path) as g:
            return ("complete" if g.complete else "incomplete"), g.n_samples, g.attrs.get("config")
    except (OSError, ValueError):
        return "unreadable", 0, None


def _config_diff(stored: str | None, config: Any) -> list[str]:
    """The settings in which a file's stored config JSON differs from ``config`` (a solver config, or the
    ``parameters`` dict of a manifest entry); a key the file does not store (an unused option) is not compared."""
    try:
        stored_dict = json.loads(stored or "")
    except ValueError:
        return ["config (unreadable)"]
    mine = config if isinstance(config, dict) else json.loads(config.to_json())
    if not isinstance(stored_dict, dict):
        return ["config (unreadable)"]
    return sorted(k for k in stored_dict if json.dumps(stored_dict[k]) != json.dumps(mine.get(k)))


def _remove_sweep(output_dir: Path, manifests: list[Path], log: Callable[[str], None]) -> None:
    """``--overwrite``: delete the files the previous manifests list, then the manifests, then the folders under
    ``files/`` left empty. Anything a manifest does not list (a user's own file) stays."""
    listed = {output_dir / e["file"] for m in manifests for e in _read_manifest(m).get("points", []) if e.get("file")}
    gone = [f for f in listed if f.is_file()]
    log(f"--overwrite: removing the previous sweep in {output_dir} ({len(gone)} file(s), {len(manifests)} manifest(s))")
    for f in gone:
        f.unlink()
    for m in manifests:
        m.unlink()
    files = output_dir / "files"
    if files.is_dir():
        for d in sorted((d for d in files.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True):
            if not any(d.iterdir()):
                d.rmdir()
        if not any(files.iterdir()):
            files.rmdir()


def run_sweep(
    spec: SweepSpec,
    output_dir: str | Path,
    *,
    shard: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    argv: list[str] | None = None,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
) -> tuple[Path, int]:
    """Run this shard's points of ``spec`` into ``output_dir``; return (manifest path, number of failed points).

    ValueError (one line) for a bad point config, or a different sweep already in ``output_dir`` without
    ``overwrite``. Per point, a BlowUpError or a ValueError from the solver marks it failed; anything else
    (disk full, KeyboardInterrupt) stops the sweep with the manifest saved up to the last finished point.
    """
    from tqdm import tqdm

    from solvers.common.driver import BlowUpError, check_memory

    if not 0 <= shard < spec.n_shards:
        raise ValueError(f"--shard {shard}/{spec.n_shards}: the index must be in [0, {spec.n_shards})")
    if overwrite and spec.n_shards > 1:
        raise ValueError("--overwrite cannot be combined with --shard (another shard may be writing); clear the dir")
    output_dir = Path(output_dir)
    points = make_points(spec)
    for point in points[shard :: spec.n_shards]:  # this shard's ensembles must fit, checked before anything is written
        try:
            check_memory(point.config)
        except ValueError as e:
            raise ValueError(f"point {point.point_id}: {e}") from None
    definition = spec.definition()
    by_index = {p.index: p for p in points}
    path = output_dir / manifest_name(shard, spec.n_shards)

    old_entries: dict[str, dict] = {}
    previous = _manifests_in(output_dir) if output_dir.is_dir() else []
    if overwrite and previous:
        _remove_sweep(output_dir, previous, log)
        previous = []
    created = None
    for other in previous:
        manifest = _read_manifest(other)
        diff = _changed(manifest.get("sweep", {}), definition)
        if not diff:
            for e in manifest.get("points", []):
                p = by_index.get(e.get("index"))
                if p is None or e.get("parameters") != _json(dataclasses.asdict(p.config)):
                    diff = [f"parameters of point {e.get('point_id')}"]
                    break
        if diff:
            raise ValueError(
                f"{other} holds a different sweep ({', '.join(diff)} differ); "
                "use another --output_dir or pass --overwrite to delete it"
            )
        if other == path:
            created = manifest.get("provenance")
            old_entries = {e["point_id"]: e for e in manifest.get("points", [])}

    mine = [p for p in points if p.index % spec.n_shards == shard]
    if not overwrite:  # a file under a point's name that holds another run is not this sweep's to replace
        for p in mine:
            file = output_dir / p.file
            state, _, stored = _file_state(file) if file.exists() else ("missing", 0, None)
            if state in ("complete", "incomplete") and (diff := _config_diff(stored, p.config)):
                raise ValueError(
                    f"{file} holds a run with other settings ({', '.join(diff)}) than point {p.point_id}; move it "
                    "away, or pass --overwrite to replace the sweep's files"
                )
    output_dir.mkdir(parents=True, exist_ok=True)
    prov = hdf5_utils.provenance(argv)
    manifest = {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "sweep": definition,
        "shard": [shard, spec.n_shards],
        "provenance": created or prov,
        "last_run": prov,
        "updated": None,
        "points": [],
    }
    entries = {}
    for p in mine:
        old = old_entries.get(p.point_id)
        entries[p.point_id] = old if old is not None and old.get("file") == p.file else _entry(p)

    def save() -> None:
        manifest["points"] = [entries[p.point_id] for p in mine]
        manifest["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        atomic_text(path, json.dumps(manifest, indent=1) + "\n", overwrite=True)

    save()
    run = solver_module(spec.solver).run
    n_failed = 0

    def note(point_id: str, text: str) -> None:  # the solver's log lines, tagged with the point, above the bars
        if progress:
            tqdm.write(f"[{point_id}] {text}", file=sys.stderr)
        else:
            log(f"[{point_id}] {text}")

    bar = tqdm(mine, desc=f"sweep {path.name}", unit="file", disable=not progress, file=sys.stderr)
    for p in bar:
        if stop.requested():  # SIGTERM came as the last point finished: stop before the next one starts
            raise stop.Terminated(f"stopped by SIGTERM before point {p.point_id}: rerun to continue")
        file = output_dir / p.file
        old = entries[p.point_id]
        say = functools.partial(note, p.point_id)
        if file.parent.is_dir():  # what a killed run left while creating the point's file (it alone writes there)
            remove_temporaries(file.parent, [glob.escape(file.name)])
        state, n_samples, stored = _file_state(file) if file.exists() else ("missing", 0, None)
        resume = overwrite_file = False
        if state == "complete":
            sha = file_sha256(file)
            if old["status"] == "complete" and old["sha256"] == sha:
                continue  # done and untouched
            if old["status"] == "complete":
                say("sha256 differs from the manifest; running it again")
                overwrite_file = True
            elif stored == p.config.to_json():
                say(f"adopting the complete file {p.file}")
                entries[p.point_id] = _entry(p, "complete", n_samples=n_samples, sha256=sha, bytes=file.stat().st_size)
                save()
                continue
            else:
                overwrite_file = True
        elif state == "incomplete":
            resume = old["status"] != "failed" and stored == p.config.to_json()
            overwrite_file = not resume
        elif state == "unreadable":
            overwrite_file = True
        if old["status"] != "pending":  # the manifest must not call a point complete while it is being redone
            entries[p.point_id] = _entry(p)
            save()
        status, reason = "complete", None
        try:
            written = run(
                p.config, file.parent, overwrite=overwrite_file, resume=resume, progress=progress, argv=argv, log=say
            )
            if Path(written) != file:
                raise RuntimeError(f"solver wrote {written}, expected {file}")
        except (BlowUpError, ValueError) as e:
            status, reason = "failed", " ".join(str(e).split())
            say(f"failed: {reason}")
            n_failed += 1
        state, n_samples, _ = _file_state(file) if file.exists() else ("missing", 0, None)
        if status == "complete":
            entries[p.point_id] = _entry(
                p, "complete", n_samples=n_samples, sha256=file_sha256(file), bytes=file.stat().st_size
            )
        else:
            entries[p.point_id] = _entry(p, "failed", reason=reason, n_samples=n_samples)
        save()
    bar.close()
    return path, n_failed


# --------------------------------------------------------------------------------------------------
# validate


def _load(target: Path) -> tuple[list[tuple[Path, dict]], bool]:
    """The manifests to check and whether they must cover the whole sweep (a directory, or an unsharded one)."""
    if target.is_dir():
        paths = _manifests_in(target)
        if not paths:
            raise ValueError(f"{target}: no manifest.json or manifest.<i>-of-<n>.json in this directory")
        return [(p, _read_manifest(p)) for p in paths], True
    if not target.exists():
        raise ValueError(f"{target}: no such manifest or directory")
    manifest = _read_manifest(target)
    return [(target, manifest)], manifest.get("shard", [0, 1])[1] == 1


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return ""


def _check_entry(root: Path, e: dict, check_hash: bool) -> list[str]:
    name = e.get("file", f"point {e.get('point_id')}")
    if e.get("status") != "complete":
        why = f" ({e['reason']})" if e.get("reason") else ""
        return [f"{name}: status {e.get('status')}{why}"]
    path = root / name
    if not path.is_file():
        return [f"{name}: missing"]
    problems = []
    size = path.stat().st_size
    if size != e.get("bytes"):
        problems.append(f"{name}: {size} bytes, manifest records {e.get('bytes')}")
    try:
        problems += [f"{name}: {msg}" for msg in hdf5_utils.validate(path)]
        with hdf5_utils.open_dataset(path) as g:
            if g.n_samples != e.get("n_samples"):
                problems.append(f"{name}: {g.n_samples} samples, manifest records {e.get('n_samples')}")
            if diff := _config_diff(g.attrs.get("config"), e.get("parameters") or {}):
                problems.append(
                    f"{name}: its stored settings differ from the manifest's parameters ({', '.join(diff)})"
                )
    except (OSError, ValueError) as exc:
        problems.append(f"{name}: unreadable ({' '.join(str(exc).replace(str(path), 'file').split())})")
    if check_hash and file_sha256(path) != e.get("sha256"):
        problems.append(f"{name}: sha256 differs from the manifest (file changed or corrupted)")
    return problems


def _check_definition(sweep: dict, entries: list[dict]) -> list[str]:
    """Each entry against what the sweep's definition makes of its index: swept values (and seed), point id, split,
    and the parameters that the values and the fixed settings (``set``) pin down."""
    params = sweep.get("params") or {}
    names = [*params, *(["seed"] if sweep.get("seeds") is not None else [])]
    axes = [*params.values(), *([sweep["seeds"]] if sweep.get("seeds") is not None else [])]
    combos = list(itertools.product(*axes))
    try:
        split = tuple((k, float(v)) for k, v in (sweep.get("split") or {}).items())
        splits = assign_splits(len(combos), split, int(sweep.get("split_seed", 0))) if split else []
    except (TypeError, ValueError):
        return ["the sweep definition's split is not NAME: FRACTION pairs"]
    width = max(4, len(str(len(combos) - 1)))
    problems = []
    for e in entries:
        k = e.get("index")
        if not isinstance(k, int) or not 0 <= k < len(combos):
            continue  # reported with the index checks
        values = dict(zip(names, combos[k], strict=True))
        point_id = f"{k:0{width}d}" + "".join(f"_{name}{_slug(v)}" for name, v in values.items())
        pinned = {**(sweep.get("set") or {}), **values}
        stored = e.get("parameters") or {}
        checks = {
            "values": json.dumps(e.get("values")) == json.dumps(values),
            "point_id": e.get("point_id") == point_id,
            "split": not splits or e.get("split") == splits[k],
            "parameters": all(json.dumps(stored.get(n)) == json.dumps(v) for n, v in pinned.items()),
            "seed": e.get("seed") == stored.get("seed"),
        }
        bad = [what for what, ok in checks.items() if not ok]
        if bad:
            problems.append(f"point {k} ({e.get('point_id')}): {', '.join(bad)} disagree with the sweep definition")
    return problems


def validate(target: str | Path, *, check_hash: bool = True) -> tuple[list[str], str]:
    """(problems, summary line) of a sweep manifest, or of a directory with its manifest shards merged.
    ValueError when there is no manifest to read."""
    target = Path(target)
    loaded, whole = _load(target)
    root = loaded[0][0].parent
    problems: list[str] = []
    first_path, first = loaded[0]
    sweep = first.get("sweep", {})
    n_points, n_shards = int(sweep.get("n_points", 0)), int(sweep.get("n_shards", 1))
    for other_path, other in loaded[1:]:
        diff = _changed(sweep, other.get("sweep", {}))
        if diff:
            problems.append(f"{other_path.name}: a different sweep from {first_path.name} ({', '.join(diff)})")
    if whole and target.is_dir():
        expected = {manifest_name(i, n_shards) for i in range(n_shards)}
        present = {p.name for p, _ in loaded}
        problems += [f"{name}: missing (sweep has {n_shards} shard(s))" for name in sorted(expected - present)]
        problems += [f"{name}: not a shard of this {n_shards}-shard sweep" for name in sorted(present - expected)]

    entries = [e for _, m in loaded for e in m.get("points", [])]
    indices = [e.get("index") for e in entries]
    wanted = set(range(n_points))
    if not whole:
        shard = first.get("shard", [0, 1])[0]
        wanted = {i for i in wanted if i % n_shards == shard}
    dup = sorted({i for i in indices if indices.count(i) > 1}, key=str)
    if dup:
        problems.append(f"points listed more than once: {dup[:10]}")
    missing = sorted(wanted - set(indices))
    if missing:
        problems.append(f"{len(missing)} point(s) missing from the manifest(s) (first: {missing[:10]})")
    extra = sorted(set(indices) - wanted, key=str)
    if extra:
        problems.append(f"point indices outside the sweep: {extra[:10]}")

    problems += _check_definition(sweep, entries)
    for e in entries:
        problems += _check_entry(root, e, check_hash)

    known = {e.get("file") for e in entries}
    scan = [root / "files"] if whole else [root / Path(e["file"]).parent for e in entries if e.get("file")]
    for top in scan:
        if top.is_dir():
            for f in sorted(top.rglob("*")):
                rel = f.relative_to(root).as_posix()
                if not f.is_dir() and rel not in known:
                    if is_temporary(f.name):
                        problems.append(f"{rel}: left by an interrupted write; rerunning the sweep removes it")
                    else:
                        problems.append(f"{rel}: unexpected file (not in the manifest)")

    done = [e for e in entries if e.get("status") == "complete"]
    per_split = {name: [0, 0] for name in sweep.get("split", {})}
    for e in done:
        per_split.setdefault(e.get("split"), [0, 0])
        per_split[e.get("split")][0] += 1
        per_split[e.get("split")][1] += int(e.get("n_samples") or 0)
    splits = ", ".join(f"{name} {c} ({s} samples)" for name, (c, s) in per_split.items())
    label = target.as_posix() + (f" ({len(loaded)} manifests)" if len(loaded) > 1 else "")
    summary = (
        f"{label}: {len(entries)}/{n_points if whole else len(wanted)} points, {len(done)} complete files, "
        f"{sum(int(e.get('n_samples') or 0) for e in done)} samples, "
        f"{_human_bytes(sum(int(e.get('bytes') or 0) for e in done))}; splits: {splits}; "
        f"{len(problems)} problem(s)" + ("" if check_hash else " (sha256 not checked)")
    )
    return problems, summary


def status(target: str | Path) -> str:
    """A short report: points per status and split, and why points failed."""
    loaded, _ = _load(Path(target))
    entries = [e for _, m in loaded for e in m.get("points", [])]
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.get("status")] = counts.get(e.get("status"), 0) + 1
    sweep = loaded[0][1].get("sweep", {})
    lines = [
        f"{Path(target).as_posix()}: {sweep.get('solver')} sweep of {sweep.get('n_points')} points over "
        f"{', '.join(sweep.get('params', {})) or 'seeds'}; {len(loaded)} manifest(s), {len(entries)} points listed: "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    ]
    lines += [f"  failed {e.get('point_id')}: {e.get('reason')}" for e in entries if e.get("status") == "failed"]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# CLI


def _shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 0 <= int(m[1]) < int(m[2]):
        raise ValueError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    return int(m[1]), int(m[2])


def build_parser() -> OneLineArgumentParser:
    p = OneLineArgumentParser(prog=PROG, description="Parameter sweeps of a Gust solver with a manifest.")
    commands = p.add_subparsers(dest="command", required=True, metavar="{run,validate,status}")
    r = commands.add_parser("run", help="run (or resume) a sweep")
    r.add_argument("--solver", required=True, choices=sorted(SOLVERS), help="which solver's config and run()")
    r.add_argument("--output_dir", required=True, type=Path, help="folder of manifest.json and files/ (created)")
    r.add_argument("--param", action="append", default=[], metavar="NAME=V1,V2,...", help="a swept config field")
    r.add_argument("--set", action="append", default=[], dest="fixed", metavar="NAME=VALUE", help="a fixed field")
    r.add_argument("--seeds", default=None, metavar="S1,S2,...", help="seed axis (default: none, the config's seed)")
    r.add_argument("--split", default=DEFAULT_SPLIT, help=f"split names and fractions (default {DEFAULT_SPLIT})")
    r.add_argument("--split_seed", type=int, default=0, help="seed of the split permutation (default 0)")
    r.add_argument("--shard", default=None, metavar="I/N", help="run the points with index %% N == I (default all)")
    r.add_argument("--overwrite", action="store_true", help="delete a previous sweep in --output_dir first")
    r.add_argument("--no_progress", action="store_true", help="no progress bars")
    for name, text in (("validate", "check a sweep; exit 1 on any problem"), ("status", "summarise a sweep")):
        c = commands.add_parser(name, help=text)
        c.add_argument("target", type=Path, help="a manifest*.json, or the sweep's directory (shards merged)")
        if name == "validate":
            c.add_argument("--no_hash", action="store_true", help="skip the sha256 comparison")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        with stop.sigterm_handled():
            if args.command == "status":
                print(status(args.target))
                return 0
            if args.command == "validate":
                problems, summary = validate(args.target, check_hash=not args.no_hash)
            else:
                shard, n_shards = _shard(args.shard) if args.shard else (0, 1)
                spec = parse_spec(
                    args.solver, args.param, args.fixed, args.seeds, args.split, args.split_seed, n_shards=n_shards
                )
                path, n_failed = run_sweep(
                    spec,
                    args.output_dir,
                    shard=shard,
                    overwrite=args.overwrite,
                    progress=not args.no_progress,
                    argv=[*PROG.split(), *argv],
                )
                problems, summary = validate(path)
    except BaseException as err:
        return report(PROG, err, "interrupted; the manifest keeps every finished point: rerun to continue")
    for problem in problems:
        print(problem)
    print(summary)
    if args.command == "run" and n_failed:
        return EXIT_RUN_FAILED
    return 1 if problems else 0


if __name__ == "__main__":
    exit_process(main())
