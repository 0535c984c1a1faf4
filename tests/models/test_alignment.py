"""The C-SFT head on planted data: users click within one hidden topic; the frozen vectors carry the
topic only in a few weak dimensions under strong noise. Behaviour must pull co-clicked items together,
and the head, seeing content only, must carry that to items no one clicked in training (cold)."""

import numpy as np
import pytest

from dmf_features.infra.config import AlignmentConfig
from models.alignment import AlignedHead, ranking_quality, train_head
from models.intervals import weighted_auc

TOPICS, ITEMS, DIM = 8, 400, 64


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(0)
    topic = rng.integers(0, TOPICS, ITEMS)
    centres = rng.normal(size=(TOPICS, 4))
    vectors = rng.normal(size=(ITEMS, DIM)).astype(np.float32)
    vectors[:, :4] += 0.8 * centres[topic]  # the topic: 4 of 64 dimensions, weaker than the noise overall
    cold = np.arange(ITEMS) >= 300  # never in a training pair
    warm_by_topic = [np.flatnonzero((topic == t) & ~cold) for t in range(TOPICS)]

    def pairs(n, seed):
        r = np.random.default_rng(seed)
        t = r.integers(0, TOPICS, n)
        return np.stack([r.choice(warm_by_topic[k], 2, replace=False) for k in t]).astype(np.int64)

    head = train_head(
        vectors, pairs(6_000, 1), AlignmentConfig(epochs=6, dim=32, hidden=64, sampled_negatives=128, batch_size=256)
    )
    return vectors, topic, cold, head, pairs


def test_aligned_space_ranks_co_clicked_items_closer(planted):
    vectors, _, _, head, pairs = planted
    fresh = pairs(1_000, 2)  # pairs from the same behaviour, never trained on
    frozen, aligned = ranking_quality(vectors, fresh), ranking_quality(head.apply(vectors), fresh)
    assert aligned["recall_at_10"] > frozen["recall_at_10"] + 0.1
    assert aligned["mean_rank"] < frozen["mean_rank"] / 2
    assert head.heldout["aligned_recall_at_10"] > head.heldout["frozen_recall_at_10"]
    assert head.history[-1]["train_loss"] < head.history[0]["train_loss"]


def test_a_model_on_aligned_vectors_scores_cold_items_better(planted):
    """A click model on DMF's target-aware similarity features (mean and max cosine between the target
    and the user's history), fitted on warm targets and scored on cold ones (in no training pair); a
    click when the target shares the user's topic."""
    from sklearn.linear_model import LogisticRegression

    vectors, topic, cold, head, _ = planted
    rng = np.random.default_rng(3)

    def rows(targets_from, n):
        users = rng.integers(0, TOPICS, n)
        histories = [rng.choice(np.flatnonzero((topic == t) & ~cold), 10) for t in users]
        targets = rng.choice(np.flatnonzero(targets_from), n)
        return histories, targets, (topic[targets] == users).astype(int)

    train, test = rows(~cold, 2_000), rows(cold, 1_000)

    def cold_auc(space):
        unit = space / np.linalg.norm(space, axis=1, keepdims=True)

        def features(histories, targets, _):
            sims = [unit[h] @ unit[t] for h, t in zip(histories, targets)]
            return np.array([[s.mean(), s.max()] for s in sims])

        model = LogisticRegression().fit(features(*train), train[2])
        return weighted_auc(test[2], model.predict_proba(features(*test))[:, 1], np.ones(len(test[2])))

    frozen, aligned = cold_auc(vectors), cold_auc(head.apply(vectors))
    assert aligned > frozen + 0.05, (frozen, aligned)


def test_a_saved_head_gives_the_same_vectors(planted):
    vectors, _, _, head, _ = planted
    again = AlignedHead.from_bytes(head.to_bytes())
    np.testing.assert_array_equal(again.apply(vectors), head.apply(vectors))


def test_the_same_inputs_train_the_same_head(planted):
    vectors, _, _, head, pairs = planted
    config = AlignmentConfig(epochs=6, dim=32, hidden=64, sampled_negatives=128, batch_size=256)
    np.testing.assert_array_equal(train_head(vectors, pairs(6_000, 1), config).apply(vectors), head.apply(vectors))


def test_tuning_the_text_encoder_changes_only_its_last_layer_and_keeps_unit_vectors():
    from dmf_features.embedding.encoders.text import TransformersTextEncoder
    from models.alignment import tune_text_encoder

    titles = [f"{colour} {thing}" for colour in ("red", "green", "blue", "black") for thing in ("car", "boat", "house", "tree")]
    pairs = np.array([[i, j] for i in range(16) for j in range(16) if i != j and i // 4 == j // 4] * 4)
    config = AlignmentConfig(text_encoder_layers=1, text_encoder_epochs=2, text_encoder_batch_size=16, sampled_negatives=8)
    tuned = tune_text_encoder(None, titles, pairs, config)
    original = TransformersTextEncoder(None, device=tuned.encoder.device)
    changed = {
        name
        for (name, before), after in zip(original.model.named_parameters(), tuned.encoder.model.parameters(), strict=True)
        if not np.array_equal(before.detach().numpy(), after.detach().numpy())
    }
    assert changed and all(name.startswith("encoder.layer.5.") for name in changed)
    vectors = tuned.embed(titles)
    assert vectors.shape == (16, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert {"frozen_recall_at_10", "aligned_recall_at_10"} <= set(tuned.heldout)
