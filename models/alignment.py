"""MIM's content-interest fine-tuning (C-SFT) as a projection head over frozen item vectors.

A head maps an item's frozen content vector to a unit vector in which items that users click close
together lie close. It is trained with InfoNCE on behaviour pairs (anchor, positive): the other
positives of the batch are negatives (drawn in proportion to how often an item appears in pairs) and
so are `sampled_negatives` items drawn uniformly from the whole catalogue; each logit is corrected
by the log-probability of drawing its item (mixed negative sampling, Yang et al. 2020), so popular
items are not pushed away merely for being popular. The head sees content only, so it applies to
any item, including items no one has clicked yet: the point for cold-start.

No Spark here: the alignment stage (`dmf_features/alignment/`) builds the pairs and writes vectors.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dmf_features.embedding.encoders.text import TransformersTextEncoder
from dmf_features.infra.config import AlignmentConfig
from models.train import seed_everything


class ProjectionHead(nn.Module):
    """normalise(MLP(x) + P x): the linear path P starts as a random near-orthogonal projection, which keeps
    the frozen geometry, and the MLP learns what behaviour adds to it."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim_in, hidden), nn.GELU(), nn.Linear(hidden, dim_out))
        self.linear = nn.Linear(dim_in, dim_out, bias=False)
        nn.init.orthogonal_(self.linear.weight)
        nn.init.zeros_(self.mlp[2].weight)  # starts as the projection alone
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x) + self.linear(x), dim=-1)


@dataclass
class AlignedHead:
    """A trained head, its per-epoch history and how well each space ranks the held-out pairs."""

    head: ProjectionHead
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    heldout: dict[str, float] = field(default_factory=dict)  # recall@10 / mean rank, frozen and aligned

    def apply(self, vectors: np.ndarray, batch: int = 8_192) -> np.ndarray:
        self.head.eval()
        with torch.no_grad():
            parts = [self.head(torch.from_numpy(vectors[i : i + batch])).numpy() for i in range(0, len(vectors), batch)]
        return np.concatenate(parts) if parts else np.zeros((0, self.head.linear.out_features), np.float32)

    def to_bytes(self) -> bytes:
        """The weights as a numpy .npz (no pickle): what the stage keeps to extend the version to new items."""
        buffer = io.BytesIO()
        np.savez(buffer, **{k: v.detach().numpy() for k, v in self.head.state_dict().items()})
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> AlignedHead:
        with np.load(io.BytesIO(data)) as arrays:
            state = {k: torch.from_numpy(arrays[k]) for k in arrays.files}
        head = ProjectionHead(state["linear.weight"].shape[1], state["mlp.0.weight"].shape[0], state["linear.weight"].shape[0])
        head.load_state_dict(state)
        return cls(head)


def train_head(
    vectors: np.ndarray,
    pairs: np.ndarray,
    cfg: AlignmentConfig,
    on_epoch: Callable[[int, dict[str, float]], None] = lambda *_: None,
) -> AlignedHead:
    """A head over `vectors` [items, D] from `pairs` [P, 2] of row numbers (anchor, positive) in time
    order; the newest `heldout_fraction` of pairs choose the epoch and are never trained on."""
    if len(pairs) < 2:
        raise ValueError(f"alignment needs at least 2 behaviour pairs, got {len(pairs)}")
    seed_everything(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    train, heldout = _split(pairs, cfg.heldout_fraction)
    both_ways = np.concatenate([train, train[:, ::-1]])  # the relation is symmetric
    table = torch.from_numpy(np.ascontiguousarray(vectors, np.float32))
    log_q, log_uniform = _proposals(both_ways, len(vectors))
    head = ProjectionHead(table.shape[1], cfg.hidden, cfg.dim)
    optimiser = torch.optim.AdamW(head.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    result = AlignedHead(head)
    best_loss, best_state = float("inf"), None
    for epoch in range(1, cfg.epochs + 1):
        head.train()
        order = torch.randperm(len(both_ways), generator=generator).numpy()
        losses = []
        for start in range(0, len(order), cfg.batch_size):
            batch = torch.from_numpy(both_ways[order[start : start + cfg.batch_size]])
            negatives = torch.randint(0, len(vectors), (cfg.sampled_negatives,), generator=generator)
            loss = _info_nce(head, table, batch, negatives, log_q, log_uniform, cfg.temperature)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        metrics = {"train_loss": float(np.mean(losses))}
        if len(heldout):
            metrics["heldout_loss"] = _heldout_loss(head, table, heldout, log_q, log_uniform, cfg)
        result.history.append(metrics)
        on_epoch(epoch, metrics)
        score = metrics.get("heldout_loss", metrics["train_loss"])
        if score < best_loss:
            best_loss, result.best_epoch = score, epoch
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    if len(heldout):
        result.heldout = {
            **{f"frozen_{k}": v for k, v in ranking_quality(vectors, heldout).items()},
            **{f"aligned_{k}": v for k, v in ranking_quality(result.apply(vectors), heldout).items()},
        }
    return result


def _info_nce(
    head: ProjectionHead,
    table: torch.Tensor,
    batch: torch.Tensor,
    negatives: torch.Tensor,
    log_q: torch.Tensor,
    log_uniform: float,
    temperature: float,
) -> torch.Tensor:
    negative_vectors = head(table[negatives]) if len(negatives) else None
    return contrastive_loss(
        head(table[batch[:, 0]]),
        head(table[batch[:, 1]]),
        batch[:, 1],
        negative_vectors,
        negatives,
        log_q,
        log_uniform,
        temperature,
    )


def contrastive_loss(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    positive_ids: torch.Tensor,
    negative_vectors: torch.Tensor | None,
    negative_ids: torch.Tensor,
    log_q: torch.Tensor,
    log_uniform: float,
    temperature: float,
) -> torch.Tensor:
    """InfoNCE of unit `anchors` against their `positives`, the batch's other positives and the sampled
    negatives, each logit less the log-probability of drawing its item (`log_q` in batch, `log_uniform`
    sampled); an item equal to the anchor's positive is never its negative."""
    in_batch = anchors @ positives.T / temperature - log_q[positive_ids][None, :]
    same_item = positive_ids[None, :] == positive_ids[:, None]
    in_batch = in_batch.masked_fill(same_item & ~torch.eye(len(anchors), dtype=torch.bool), float("-inf"))
    logits = [in_batch]
    if negative_vectors is not None:
        sampled = anchors @ negative_vectors.T / temperature - log_uniform
        logits.append(sampled.masked_fill(negative_ids[None, :] == positive_ids[:, None], float("-inf")))
    return F.cross_entropy(torch.cat(logits, dim=1), torch.arange(len(anchors)))


def _proposals(pairs: np.ndarray, items: int) -> tuple[torch.Tensor, float]:
    """Log-probability of each item showing up as an in-batch negative (its share of positives), and of a uniform draw."""
    counts = np.bincount(pairs[:, 1], minlength=items).astype(np.float64)
    return torch.from_numpy(np.log(np.maximum(counts, 1) / counts.sum()).astype(np.float32)), float(np.log(1.0 / items))


def _split(pairs: np.ndarray, heldout_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The newest `heldout_fraction` of the (time-ordered) pairs apart, to choose the epoch on."""
    split = len(pairs) - int(len(pairs) * heldout_fraction)
    return pairs[:split], pairs[split:]


def _heldout_loss(
    head: ProjectionHead, table: torch.Tensor, heldout: np.ndarray, log_q: torch.Tensor, log_uniform: float, cfg: AlignmentConfig
) -> float:
    head.eval()
    generator = torch.Generator().manual_seed(cfg.seed + 1)  # the same negatives every epoch
    losses, sizes = [], []
    with torch.no_grad():
        for start in range(0, len(heldout), cfg.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(heldout[start : start + cfg.batch_size]))
            negatives = torch.randint(0, len(table), (cfg.sampled_negatives,), generator=generator)
            losses.append(float(_info_nce(head, table, batch, negatives, log_q, log_uniform, cfg.temperature)))
            sizes.append(len(batch))
    return float(np.average(losses, weights=sizes))


def ranking_quality(vectors: np.ndarray, pairs: np.ndarray, k: int = 10, max_pairs: int = 5_000) -> dict[str, float]:
    """How well a space finds each pair's positive among all items by cosine similarity to the anchor
    (the anchor itself excluded): recall@k and the mean rank. Computed on at most `max_pairs` pairs."""
    pairs = pairs[:max_pairs]
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    ranks = []
    for start in range(0, len(pairs), 512):
        chunk = pairs[start : start + 512]
        scores = unit[chunk[:, 0]] @ unit.T
        scores[np.arange(len(chunk)), chunk[:, 0]] = -np.inf
        target = scores[np.arange(len(chunk)), chunk[:, 1]]
        ranks.append((scores > target[:, None]).sum(axis=1) + 1)
    ranks = np.concatenate(ranks) if ranks else np.zeros(0)
    return {f"recall_at_{k}": float(np.mean(ranks <= k)), "mean_rank": float(np.mean(ranks))}


@dataclass
class TunedTextEncoder:
    """A text encoder whose last layers were fine-tuned on behaviour pairs, its history and held-out ranking."""

    encoder: TransformersTextEncoder
    history: list[dict[str, float]] = field(default_factory=list)
    heldout: dict[str, float] = field(default_factory=dict)

    def embed(self, titles: list[str]) -> np.ndarray:
        return self.encoder.embed(titles)

    def save(self, folder: Path) -> None:
        """`from_pretrained`-loadable (safetensors weights, config, tokenizer)."""
        self.encoder.model.save_pretrained(folder)
        self.encoder.tokenizer.save_pretrained(folder)


def tune_text_encoder(
    folder: str | Path | None,
    titles: list[str],
    pairs: np.ndarray,
    cfg: AlignmentConfig,
    on_epoch: Callable[[int, dict[str, float]], None] = lambda *_: None,
    progress: Callable[[str], None] = lambda _: None,
) -> TunedTextEncoder:
    """Fine-tune the last `cfg.text_encoder_layers` transformer layers of the text encoder in `folder`
    (None: the shipped MiniLM) with the same InfoNCE as the heads, on at most `text_encoder_pairs` of
    `pairs` (row numbers into `titles`, time-ordered); the rest of the model stays frozen, so on a CPU
    this takes minutes. The newest `heldout_fraction` of the pairs measure ranking before and after."""
    seed_everything(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    encoder = TransformersTextEncoder(folder, device=torch.device("cpu"), max_tokens=cfg.text_encoder_max_tokens)
    train, heldout = _split(pairs, cfg.heldout_fraction)
    if len(train) > cfg.text_encoder_pairs:  # the newest ones: closest in time to what the vectors will serve
        train = train[-cfg.text_encoder_pairs :]
    frozen = encoder.embed(titles) if len(heldout) else None
    layers = encoder.model.encoder.layer
    for parameter in encoder.model.parameters():
        parameter.requires_grad = False
    tuned = [p for layer in layers[len(layers) - cfg.text_encoder_layers :] for p in layer.parameters()]
    for parameter in tuned:
        parameter.requires_grad = True
    optimiser = torch.optim.AdamW(tuned, lr=cfg.text_encoder_learning_rate, weight_decay=cfg.weight_decay)
    both_ways = np.concatenate([train, train[:, ::-1]])
    log_q, log_uniform = _proposals(both_ways, len(titles))
    result = TunedTextEncoder(encoder)
    batch_size = cfg.text_encoder_batch_size
    steps = -(-len(both_ways) // batch_size)
    for epoch in range(1, cfg.text_encoder_epochs + 1):
        encoder.model.train()
        order = torch.randperm(len(both_ways), generator=generator).numpy()
        losses = []
        for start in range(0, len(order), batch_size):
            batch = torch.from_numpy(both_ways[order[start : start + batch_size]])
            negatives = torch.randint(0, len(titles), (min(cfg.sampled_negatives, batch_size),), generator=generator)
            # each distinct title of the step through the encoder once
            distinct, rows = torch.unique(torch.cat([batch[:, 0], batch[:, 1], negatives]), return_inverse=True)
            vectors = F.normalize(encoder._forward([titles[i] for i in distinct.tolist()]).float(), dim=-1)
            n = len(batch)
            loss = contrastive_loss(
                vectors[rows[:n]],
                vectors[rows[n : 2 * n]],
                batch[:, 1],
                vectors[rows[2 * n :]],
                negatives,
                log_q,
                log_uniform,
                cfg.temperature,
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            if len(losses) % 25 == 0:  # an epoch takes minutes on a CPU
                progress(f"  text encoder epoch {epoch}: step {len(losses)}/{steps}, loss {np.mean(losses[-25:]):.4f}")
        encoder.model.eval()
        result.history.append({"train_loss": float(np.mean(losses))})
        on_epoch(epoch, result.history[-1])
    if frozen is not None:
        result.heldout = {
            **{f"frozen_{k}": v for k, v in ranking_quality(frozen, heldout).items()},
            **{f"aligned_{k}": v for k, v in ranking_quality(result.embed(titles), heldout).items()},
        }
    return result
