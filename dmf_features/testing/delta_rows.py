"""A local Delta table's rows for tests, read from its add actions with pyarrow: delta-rs's own readers
(`to_pyarrow_table`, `to_pyarrow_dataset`) have been seen to abort the process at exit."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable


def table_dicts(path: Path | str) -> list[dict]:
    """Every row of the table's latest version as a dict, its partition values included."""
    path, rows = Path(path), []
    for file in pa.table(DeltaTable(str(path)).get_add_actions(flatten=True)).to_pylist():
        partition = {k.removeprefix("partition."): v for k, v in file.items() if k.startswith("partition.")}
        rows += [row | partition for row in pq.read_table(path / file["path"]).to_pylist()]
    return rows


def table_rows(path: Path, drop: Iterable[str] = ()) -> list[tuple[str, ...]]:
    """Every row with its partition values and without the `drop` columns, as the reprs of its values in
    column-name order, the rows sorted: two tables hold the same rows exactly when the lists are equal."""
    drop = set(drop)
    return sorted(tuple(repr(values[c]) for c in sorted(values) if c not in drop) for values in table_dicts(path))
