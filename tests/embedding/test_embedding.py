"""The embedding stage end to end: real encoders in Spark pandas UDFs, real Delta, real FAISS."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pyspark.sql import functions as F

from dmf_features.embedding import images
from dmf_features.embedding.item_index import ItemIndex
from dmf_features.embedding.stage import EMPTY_TEXT, embed_items, fuse
from dmf_features.infra.config import load_config
from dmf_features.infra.lake import Lake, spark_schema
from dmf_features.schemas import ITEMS
from dmf_features.testing.tiny_clip import save_tiny_clip

pytestmark = pytest.mark.e2e


def encoded(img: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt)
    return buffer.getvalue()


def poster(colour) -> Image.Image:
    img = Image.new("RGB", (60, 90), colour)
    for y in range(0, 90, 10):
        img.paste((255 - colour[0], 40, 90), (0, y, 60, y + 4))
    return img


JPEG = encoded(poster((200, 40, 40)), "JPEG")
PNG = encoded(Image.effect_noise((64, 64), 40).convert("RGB"), "PNG")
# item id -> (title, image bytes, expected image outcome)
CATALOGUE = {
    1: ("Star Voyage", JPEG, None),
    2: ("Star Voyage II", encoded(poster((190, 50, 40)), "JPEG"), None),
    3: ("Grey poster", encoded(poster((90, 90, 90)).convert("L"), "JPEG"), None),
    4: ("CMYK poster", encoded(poster((10, 120, 200)).convert("CMYK"), "JPEG"), None),
    5: ("Transparent poster", encoded(poster((10, 200, 20)).convert("RGBA"), "PNG"), None),
    6: ("Palette poster", encoded(poster((200, 200, 20)).convert("P"), "PNG"), None),
    7: ("A PNG named .jpg", encoded(poster((120, 20, 200)), "PNG"), None),
    8: ("Corrupt", PNG[:300] + bytes(b ^ 0x5A for b in PNG[300:400]) + PNG[400:], images.CORRUPT),
    9: ("Truncated", JPEG[: len(JPEG) // 2], images.TRUNCATED),
    10: ("Zero bytes", b"", images.EMPTY),
    11: ("Not an image", b"%PDF-1.4 " + b"x" * 500, images.NOT_AN_IMAGE),
    12: ("Bomb", encoded(Image.new("1", (12_000, 12_000)), "PNG"), images.TOO_LARGE),
    13: ("", JPEG, None),  # empty title: quarantined for text only
    14: ("Амели — Le fabuleux destin d'Amélie Poulain 🎬", None, None),  # non-ASCII, no poster
    15: ("An extremely long title " * 400, None, None),
}


@pytest.fixture
def cfg(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"""
spark: {{master: "local[2]", shuffle_partitions: 4}}
lake: {{uri: {tmp_path / "lake"}}}
source: {{kind: movielens, movielens: {{path: {tmp_path}}}}}
embedding: {{batch_size: 4, items_per_task: 8}}
""")
    return load_config(config)


def write_items(spark, lake, catalogue):
    rows = [
        (i, title, None, [], [], data, None, "ok" if data else "missing", None, None, "test")
        for i, (title, data, _) in catalogue.items()
    ]
    df = (
        spark.createDataFrame(rows, spark_schema(ITEMS))
        .withColumn("image_sha256", F.sha2("image", 256))
        .withColumn("content_hash", F.sha2(F.concat_ws("|", "title", "image_sha256"), 256))
    )
    lake.merge(df, ITEMS.name, ITEMS.keys)


def vectors(spark, lake, modality):
    rows = lake.read(spark, "item_embeddings").where(F.col("modality") == modality).collect()
    return {(r.item_id, r.encoder_version): np.asarray(r.vector) for r in rows}


def test_every_item_is_embedded_or_quarantined_with_its_reason(spark, cfg):
    lake = Lake(cfg.lake)
    write_items(spark, lake, CATALOGUE)
    report = embed_items(spark, cfg, lake, progress=lambda _: None)

    counts = {c.modality: c for c in report.counts}
    assert all(c.balanced for c in report.counts)
    assert counts["text"].embedded == 14 and counts["text"].quarantined == {EMPTY_TEXT: 1}
    bad_images = {v[2] for v in CATALOGUE.values() if v[2]}
    assert counts["image"].quarantined == {reason: 1 for reason in sorted(bad_images)}
    assert counts["image"].embedded == 8 and counts["image"].without_input == 2
    quarantine = {
        r.record_id.split(":")[1] + ":" + r.record_id.split(":")[2]: r.reason for r in lake.read(spark, "quarantine").collect()
    }
    for item, (_, _, reason) in CATALOGUE.items():
        if reason:
            assert quarantine[f"{item}:image"] == reason
    assert quarantine["13:text"] == EMPTY_TEXT

    text, image, fused = (vectors(spark, lake, m) for m in ("text", "image", "fused"))
    assert {len(v) for v in text.values()} == {384} and {len(v) for v in image.values()} == {1280}
    assert len(fused) == 15 and {len(v) for v in fused.values()} == {384 + 1280}
    assert all(abs(np.linalg.norm(v) - 1) < 1e-5 for v in [*text.values(), *image.values(), *fused.values()])

    index = ItemIndex.load(lake)
    assert index.meta["items"] == 15
    assert index.similar(1, k=1)[0].item_id == 2  # the sequel: same words, same poster style


def test_rerun_embeds_nothing_and_a_changed_title_re_embeds_exactly_that_item(spark, cfg):
    lake = Lake(cfg.lake)
    small = {i: CATALOGUE[i] for i in (1, 2, 3, 14)}
    write_items(spark, lake, small)
    embed_items(spark, cfg, lake, progress=lambda _: None)
    before = {m: vectors(spark, lake, m) for m in ("text", "image", "fused")}

    built = ItemIndex.load(lake).meta["built_at"]
    said = []
    again = embed_items(spark, cfg, lake, progress=said.append)
    assert [c.embedded for c in again.counts] == [0, 0, 0]
    assert "nothing new to embed" in again.render()
    assert "building the nearest-item index" not in said and any("index is up to date" in line for line in said)
    assert ItemIndex.load(lake).meta["built_at"] == built and again.index_path

    write_items(spark, lake, {**small, 2: ("A completely different film", small[2][1], None)})
    said.clear()
    changed = embed_items(spark, cfg, lake, progress=said.append)
    assert {c.modality: c.embedded for c in changed.counts} == {"text": 1, "image": 0, "fused": 1}
    assert "building the nearest-item index" in said  # new vectors and a new title: rebuilt
    assert ItemIndex.load(lake).titles[2] == "A completely different film"
    after = {m: vectors(spark, lake, m) for m in ("text", "image", "fused")}
    assert after["image"].keys() == before["image"].keys()
    differs = {key for key in after["text"] if not np.allclose(after["text"][key], before["text"][key])}
    assert [item for item, _ in differs] == [2]


def test_a_new_encoder_version_adds_rows_beside_the_old_ones(spark, cfg, tmp_path):
    lake = Lake(cfg.lake)
    write_items(spark, lake, {i: CATALOGUE[i] for i in (1, 2, 14)})
    embed_items(spark, cfg, lake, progress=lambda _: None)
    clip = save_tiny_clip(tmp_path / "clip", seed=1)
    with_clip = cfg.model_copy(
        update={
            "embedding": cfg.embedding.model_copy(
                update={"text": cfg.embedding.text.model_copy(update={"kind": "clip-text", "path": str(clip)}), "image": None}
            )
        }
    )
    report = embed_items(spark, with_clip, lake, progress=lambda _: None)
    assert report.counts[0].embedded == 3
    versions = {version.split("@")[0] for _, version in vectors(spark, lake, "text")}
    assert len(versions) == 2 and "minilm-l6-v2" in versions
    assert len(vectors(spark, lake, "text")) == 6


def test_fusion_is_normalised_and_a_missing_modality_counts_as_zeros():
    text = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    image = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], np.float32)  # item 2 has no image
    fused = fuse([text, image], "concat")
    assert np.allclose(np.linalg.norm(fused, axis=1), 1)
    assert np.allclose(fused[1], [0, 1, 0, 0, 0])
    assert np.allclose(fuse([text, text], "mean"), text)
