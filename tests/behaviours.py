"""What the suite asserts, test by test: `python -m tests.behaviours > behaviours.txt`.

For every test function (and every fixture, whose checks count too) it prints the file, the name, its
parametrized cases' ids when pytest can give them, and each check in its body as written: `assert`
statements, `pytest.raises(...)` and `pytest.fail(...)`, with helpers of the same file that assert
followed one level deep. Two listings taken before and after a change to the suite are compared line by
line (`diff`): a check that disappears must reappear in the test that absorbed it, so a reorganised suite
can be shown to assert everything it asserted before."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _checks(node: ast.AST, source: str) -> Iterator[str]:
    for child in ast.walk(node):
        if isinstance(child, ast.Assert):
            yield "assert " + " ".join(ast.get_source_segment(source, child.test).split())
        elif isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute):
            if (
                isinstance(child.func.value, ast.Name)
                and child.func.value.id == "pytest"
                and child.func.attr in ("raises", "fail")
            ):
                yield " ".join(ast.get_source_segment(source, child).split())


def _called_names(node: ast.AST) -> set[str]:
    return {c.func.id for c in ast.walk(node) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}


def _cases() -> dict[tuple[str, str], list[str]]:
    """(file, function) -> its parametrized ids, from pytest's own collection."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    cases: dict[tuple[str, str], list[str]] = defaultdict(list)
    for line in done.stdout.splitlines():
        if "::" not in line:
            continue
        path, _, name = line.partition("::")
        name = name.split("::")[-1]
        function, _, case = name.partition("[")
        cases[(path, function)].append(case.rstrip("]"))
    return cases


def listing() -> Iterator[str]:
    cases = _cases()
    for path in sorted((ROOT / "tests").rglob("*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        functions = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        helpers = {name: list(_checks(f, source)) for name, f in functions.items() if not name.startswith("test_")}
        relative = path.relative_to(ROOT).as_posix()
        for name, function in functions.items():
            is_fixture = any("fixture" in ast.get_source_segment(source, d) for d in function.decorator_list)
            if not name.startswith("test_") and not is_fixture:
                continue
            checks = list(_checks(function, source))
            for called in sorted(_called_names(function) & helpers.keys()):
                checks += [f"{check}  (via {called})" for check in helpers[called]]
            kind = "fixture" if is_fixture else "test"
            ids = [c for c in cases.get((relative, name), []) if c]
            yield f"{relative}::{name} ({kind}{', cases: ' + ', '.join(ids) if ids else ''})"
            yield from (f"    {check}" for check in checks)


if __name__ == "__main__":
    print("\n".join(listing()))
