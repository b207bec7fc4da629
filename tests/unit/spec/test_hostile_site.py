"""Hostile site configs (issue 11, case 1): values that would inject lines into job scripts are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hostile import (
    problem_at,
)
from xvhpc.spec import SpecError, load_site

SITE = """\
name: hostile
architecture: x86_64
scheduler: slurm
launcher: srun
node: {cores: 2, memory_gb: 8}
queues:
  debug: {max_walltime: "01:00:00", max_nodes: 1}
"""


BAD_SITE_VALUES = [
    ("default_account", 'default_account: "abc\\n#SBATCH --uid=0"\n'),
    (
        "queues.debug; touch x",
        'queues:\n  "debug; touch x": {max_walltime: "01:00", max_nodes: 1}\n',
    ),
    ("default_queue", 'default_queue: "debug\\ntouch x"\n'),
    ("env.modules.0", 'env: {modules: ["cuda; touch x"]}\n'),
    ("env.variables.A B", 'env: {variables: {"A B": "1"}}\n'),
    ("env.variables.OK", 'env: {variables: {OK: "a\\ntouch x"}}\n'),
    ("env.python", 'env: {python: "$(touch x)"}\n'),
    ("env.setup.0", 'env: {setup: ["module purge\\ntouch x"]}\n'),
    ("alloc_flags", 'alloc_flags: "smt4\\" ; touch x"\n'),
    ("extra_directives.0", 'extra_directives: ["--constraint=gpu\\ntouch x"]\n'),
    ("srun_mpi", 'srun_mpi: "pmix --x"\n'),
    ("node.gpu_model", 'node: {cores: 2, memory_gb: 8, gpu_model: "V100\\n#SBATCH -x"}\n'),
    ("name", 'name: "hostile\\ntouch x"\n'),
]


@pytest.mark.parametrize("key,line", BAD_SITE_VALUES, ids=[k for k, _ in BAD_SITE_VALUES])
def test_site_values_that_would_inject_script_lines_are_refused(
    tmp_path: Path, key: str, line: str
) -> None:
    """Issue 11 item 1: every site value written into a job script is validated."""
    top = line.split(":")[0]  # the base's own line for that key makes way for the bad one
    lines = SITE.splitlines(keepends=True)
    if top == "queues":
        lines = [ln for ln in lines if not ln.startswith(("queues", "  debug"))]
    site = tmp_path / "site.yaml"
    site.write_text("".join(ln for ln in lines if not ln.startswith(top + ":")) + line)
    with pytest.raises(SpecError) as info:
        load_site(str(site))
    assert problem_at(info.value, site, key)
    assert len(str(info.value).splitlines()) == 1 + len(info.value.problems)  # one line each


def test_site_module_names_with_version_paths_are_accepted(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        SITE
        + "default_account: ABC-123_x.y\n"
        + "alloc_flags: gpumps smt4\n"
        + "env: {modules: [cuda/11.8, gcc+openmp/9.3.0, open-ce], python: /sw/bin/python3.11,"
        + ' variables: {OMP_NUM_THREADS: "7", _X1: "a b $c"}, setup: ["source $HOME/x"]}\n'
        + 'extra_directives: ["--mail-type=END", "-R \\"span[ptile=4]\\""]\n'
    )
    loaded = load_site(str(site))
    assert loaded.env.modules == ["cuda/11.8", "gcc+openmp/9.3.0", "open-ce"]
