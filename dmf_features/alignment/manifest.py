"""`<lake>/_alignment/latest.json`: the newest `dmf align` run's versions and lineage (no Spark), what
`features.item_vectors: aligned`, `dmf similar --version aligned` and `dmf compare --item-vectors` read."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from dmf_features.infra.lake_files import publish_file, read_bytes

FOLDER = "_alignment"


def read_manifest(lake_root: str) -> dict | None:
    data = read_bytes(f"{lake_root}/{FOLDER}/latest.json")
    return json.loads(data) if data else None


def write_manifest(lake_root: str, manifest: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "latest.json"
        path.write_text(json.dumps(manifest, indent=2))
        publish_file(path, f"{lake_root}/{FOLDER}/latest.json")


def aligned_versions(lake_root: str) -> dict[str, str]:
    """{modality: aligned version} of the newest `dmf align` run; LookupError when there is none."""
    manifest = read_manifest(lake_root)
    if manifest is None:
        raise LookupError(f"no aligned vectors under {lake_root}: run `dmf align` first")
    return {m: entry["version"] for m, entry in manifest["modalities"].items()}
