"""README.md documents every command-line flag of every CLI, and the docs name no flag that does not exist."""

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLAG = r"(?<![\w-])--[a-z][a-z0-9_]*"  # a long option as it appears in --help output and in the docs
# module -> the verbs whose --help is read ([] for none). hdf5_utils' info/validate take only a FILE: nothing to check.
CLIS = {
    "solvers.py2d_turbulence.run_solver": [[]],
    "solvers.rayleigh_benard.run_solver": [[]],
    "pipeline.sweep": [["run"], ["validate"], ["status"]],
    "models.train_vqvae": [[]],
    "models.tokenizer": [["info"], ["save"]],
    "models.analyze_reconstruction": [[]],
    **{
        f"benchmarks.{p.stem}": [[]]
        for p in sorted((ROOT / "benchmarks").glob("*.py"))
        if p.stem != "__init__" and "def main(" in p.read_text()
    },
}


def flags_of(module: str, verb: list[str], capsys) -> set[str]:
    with pytest.raises(SystemExit) as exc:
        importlib.import_module(module).main([*verb, "--help"])
    assert exc.value.code == 0
    return set(re.findall(FLAG, capsys.readouterr().out)) - {"--help"}


@pytest.mark.parametrize("module", sorted(CLIS))
def test_every_flag_is_in_the_readme(module, capsys):
    readme = (ROOT / "README.md").read_text()
    flags = set().union(*(flags_of(module, verb, capsys) for verb in CLIS[module]))
    assert flags, f"{module} --help lists no flags"
    missing = sorted(f for f in flags if not re.search(re.escape(f) + r"(?![a-z0-9_])", readme))
    assert not missing, f"{module}: flags not in README.md: {missing}"


# Flags of other tools that the docs show (sbatch/srun, ruff, pip, XLA, the duplicates tool): not Gust's to check.
OTHER_TOOLS = {
    "--array",
    "--ntasks",
    "--gpus",
    "--signal",
    "--check",
    "--no",
    "--xla_cpu_multi_thread_eigen",
    "--change",
    "--dist",
    "--maxprocesses",
    "--pdb",
}


def test_every_documented_flag_exists(capsys):
    known = set().union(*(flags_of(module, verb, capsys) for module, verbs in CLIS.items() for verb in verbs))
    for doc in ("README.md", "CLAUDE.md"):
        text = (ROOT / doc).read_text()
        stale = sorted(set(re.findall(FLAG, text)) - known - OTHER_TOOLS - {"--help"})
        assert not stale, f"{doc} documents flags no Gust CLI has: {stale}"


def documented_commands(text: str) -> list[tuple[str, str, str]]:
    """(module, verb, flags text) of every ``python -m MODULE ...`` command the text shows: inline code spans and
    indented code lines (with backslash continuations). Flags after a bare ``--`` belong to another tool and are cut."""
    spans = re.findall(r"`(python3? -m [\w.]+[^`]*)`", text)
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("    ") and "python" in line and " -m " in line and not line.strip().startswith("#"):
            cmd, j = line.strip(), i
            while cmd.endswith("\\") and j + 1 < len(lines):
                j += 1
                cmd = cmd[:-1] + " " + lines[j].strip()
            spans.append(cmd)
    out = []
    for cmd in spans:
        for part in re.split(r"&&|\|", cmd):
            m = re.search(r"python3? -m ([\w.]+)(.*)", part, re.S)
            if m and m.group(1) in CLIS:
                rest = m.group(2).split(" -- ")[0]
                verb = next((v[0] for v in CLIS[m.group(1)] if v and rest.split()[:1] == v), "")
                out.append((m.group(1), verb, rest))
    return out


def test_every_documented_command_has_the_flags_it_shows(capsys):
    # e.g. a README row that shows `python -m benchmarks.bench_vqvae ... --seed 1` needs bench_vqvae to have --seed,
    # not just some other CLI
    cache = {}
    seen = 0
    for doc in ("README.md", "CLAUDE.md"):
        for module, verb, rest in documented_commands((ROOT / doc).read_text()):
            if (module, verb) not in cache:
                cache[module, verb] = flags_of(module, [verb] if verb else [], capsys)
            bad = sorted(set(re.findall(FLAG, rest)) - cache[module, verb] - {"--help"})
            assert not bad, f"{doc}: `python -m {module} {verb}` is shown with flags it does not have: {bad}"
            seen += 1
    assert seen > 30  # the docs show dozens of commands; finding none would mean the parsing broke
