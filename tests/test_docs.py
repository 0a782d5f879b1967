"""README.md documents every command-line flag of every CLI, and the docs name no flag that does not exist."""

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
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
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_]*", capsys.readouterr().out)) - {"--help"}


@pytest.mark.parametrize("module", sorted(CLIS))
def test_every_flag_is_in_the_readme(module, capsys):
    readme = (ROOT / "README.md").read_text()
    flags = set().union(*(flags_of(module, verb, capsys) for verb in CLIS[module]))
    assert flags, f"{module} --help lists no flags"
    missing = sorted(f for f in flags if not re.search(re.escape(f) + r"(?![a-z0-9_])", readme))
    assert not missing, f"{module}: flags not in README.md: {missing}"


# Flags of other tools that the docs show (sbatch/srun, ruff, pip, XLA, the duplicates tool): not Gust's to check.
OTHER_TOOLS = {"--array", "--ntasks", "--gpus", "--check", "--no", "--xla_cpu_multi_thread_eigen", "--change"}


def test_every_documented_flag_exists(capsys):
    known = set().union(*(flags_of(module, verb, capsys) for module, verbs in CLIS.items() for verb in verbs))
    for doc in ("README.md", "CLAUDE.md"):
        text = (ROOT / doc).read_text()
        stale = sorted(set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_]*", text)) - known - OTHER_TOOLS - {"--help"})
        assert not stale, f"{doc} documents flags no Gust CLI has: {stale}"
