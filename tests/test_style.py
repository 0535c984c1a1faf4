"""The code is `ruff` clean, lint and format, as configured in pyproject.toml; and project code never
loads data in a way that can run code from it, nor makes a server listen on every interface."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT_CODE = ("dmf_features", "models", "jobs", "dags", "bench")
# loaders that unpickle or construct arbitrary objects from what they read
UNSAFE_LOADERS = {"pickle.load", "pickle.loads", "cloudpickle.load", "cloudpickle.loads", "yaml.load", "yaml.unsafe_load"}


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff_is_clean(command):
    result = subprocess.run([sys.executable, "-m", "ruff", *command], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def unsafe_loads(source: str) -> list[str]:
    """Lines that can run code hidden in the data they load: `torch.load` without `weights_only=True`, a
    pickle or YAML loader of `UNSAFE_LOADERS`, `allow_pickle=True`, `eval` and `exec`."""

    def is_true(node: ast.expr | None) -> bool:
        return isinstance(node, ast.Constant) and node.value is True

    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name, keywords = ast.unparse(node.func), {k.arg: k.value for k in node.keywords}
        if name == "torch.load" and not is_true(keywords.get("weights_only")):
            found.append(f"{node.lineno}: torch.load without weights_only=True")
        elif name in UNSAFE_LOADERS or name in ("eval", "exec"):
            found.append(f"{node.lineno}: {name}")
        elif is_true(keywords.get("allow_pickle")):
            found.append(f"{node.lineno}: {name} with allow_pickle=True")
    return found


def project_files(pattern: str) -> list[Path]:
    return [path for folder in PROJECT_CODE for path in sorted((ROOT / folder).rglob(pattern))]


def test_the_unsafe_load_rule_finds_each_kind():
    source = """
torch.load(f)
torch.load(f, weights_only=False)
torch.load(f, map_location="cpu", weights_only=True)
pickle.loads(b)
yaml.load(text, Loader=yaml.Loader)
yaml.safe_load(text)
np.load(f, allow_pickle=True)
np.load(f)
eval(expression)
model.eval()
"""
    assert unsafe_loads(source) == [
        "2: torch.load without weights_only=True",
        "3: torch.load without weights_only=True",
        "5: pickle.loads",
        "6: yaml.load",
        "8: np.load with allow_pickle=True",
        "10: eval",
    ]


def test_project_code_loads_nothing_that_can_run_code():
    found = {str(path.relative_to(ROOT)): unsafe_loads(path.read_text()) for path in project_files("*.py")}
    assert not {path: lines for path, lines in found.items() if lines}


def test_no_server_listens_on_every_interface():
    files = [*project_files("*.py"), ROOT / "Makefile", *sorted((ROOT / "conf").rglob("*.yaml"))]
    assert [str(path.relative_to(ROOT)) for path in files if "0.0.0.0" in path.read_text()] == []
