"""The sequential zoo: GRU4Rec, BERT4Rec and SASRec's BCE loss (padding, masking, loss values, negatives)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import toy_dataset

from mmrec.cli import main
from mmrec.datamodules.sequential import SequentialDataModule
from mmrec.models import MODELS, SASRec, create_model
from mmrec.models.bert4rec import BERT4Rec, cloze_mask
from mmrec.models.gru4rec import GRU4Rec, front_to_left, left_to_front
from mmrec.nn.bidirectional_encoder import BidirectionalTransformer
from mmrec.nn.losses import NextItemLoss, full_softmax_ce, pair_keys, sample_negatives, sampled_bce
from mmrec.protocols import ModelInputs, TrainingWindowPreference

CAT = {"num_items": 20, "num_users": 5, "max_len": 6}
ZOO = ("sequential/gru4rec", "sequential/bert4rec")


def _trainer(epochs: int) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        deterministic=True,
    )


# ---------------------------------------------------------------------------------------------- registry
@pytest.mark.parametrize("name", ZOO)
def test_registered_with_tiny_config(name: str) -> None:
    assert name in MODELS.list("sequential/*")
    tiny = MODELS.meta(name)["tiny"]
    model = create_model(name, catalog=CAT, **tiny)
    q = model.query_vectors({"input_ids": torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4]])})
    assert q.shape == (2, model.item_vectors().shape[1])
    assert model.item_vectors().shape[0] == CAT["num_items"] + 1
    scores = model.score_all({"input_ids": torch.tensor([[0, 1, 2]])})
    assert scores.shape == (1, 21) and scores[0, 0] == float("-inf") and torch.isfinite(scores[0, 1:]).all()


# ---------------------------------------------------------------------------------------------- losses
def test_full_softmax_ce_matches_hand_computation() -> None:
    items = torch.tensor([[9.0, 9.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # row 0 (padding) is ignored
    hidden = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([1, 3])
    # row 0 logits over items 1..3: [2, 0, 2] -> -log(e^2 / (2e^2 + 1)); row 1: [0, 1, 1] -> -log(e / (2e + 1))
    expected = (-math.log(math.e**2 / (2 * math.e**2 + 1)) - math.log(math.e / (2 * math.e + 1))) / 2
    assert float(full_softmax_ce(hidden, items, targets)) == pytest.approx(expected, rel=1e-6)
    loss = NextItemLoss("ce", num_items=3)
    batch_hidden = torch.stack([torch.zeros(2), hidden[0], hidden[1]])[None]  # (1, 3, 2), first slot padding
    assert float(loss(batch_hidden, items, torch.tensor([[0, 1, 3]]))) == pytest.approx(expected, rel=1e-6)


def test_sampled_bce_matches_hand_computation() -> None:
    items = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]])
    hidden = torch.tensor([[1.0, 1.0], [0.5, 0.0]])
    pos, neg = torch.tensor([1, 2]), torch.tensor([3, 3])
    # s+ = [1, 0], s- = [0, -0.5]
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = (-math.log(sig(1)) - math.log(1 - sig(0)) - math.log(sig(0)) - math.log(1 - sig(-0.5))) / 2
    assert float(sampled_bce(hidden, items, pos, neg)) == pytest.approx(expected, rel=1e-6)


def test_negatives_never_forbidden_and_cover_the_rest() -> None:
    torch.manual_seed(0)
    owned = {0: [1, 2, 3, 4, 5, 6, 7, 8], 1: [9, 10]}  # user 0 owns 8 of 10 items
    keys = (
        pair_keys(
            torch.tensor([u for u, s in owned.items() for _ in s]),
            torch.tensor([i for s in owned.values() for i in s]),
            10,
        )
        .sort()
        .values
    )
    owners = torch.tensor([0, 1] * 2000)
    negs = sample_negatives(owners, keys, 10)
    for u, items in owned.items():
        drawn = set(negs[owners == u].tolist())
        assert not drawn & set(items)
        assert drawn == set(range(1, 11)) - set(items)  # every allowed item can be drawn
    with pytest.raises(RuntimeError, match="loss: ce"):
        sample_negatives(torch.tensor([0]), pair_keys(torch.zeros(10), torch.arange(1, 11), 10), 10)


def test_bce_negatives_exclude_the_row_items_without_user_data() -> None:
    torch.manual_seed(0)
    loss = NextItemLoss("bce", num_items=6)
    seen = torch.tensor([[0, 1, 2], [3, 4, 5]])
    targets = torch.tensor([[0, 2, 3], [4, 5, 6]])
    for _ in range(50):
        negs = loss.draw_negatives(targets, seen=seen).tolist()
        assert len(negs) == 5
        assert all(n in (4, 5, 6) for n in negs[:2])  # row 0 owns 1, 2, 3
        assert all(n in (1, 2) for n in negs[2:])  # row 1 owns 3, 4, 5, 6


def test_sasrec_bce_negatives_exclude_the_users_whole_training_sequence(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ds = toy_dataset(tmp_path, num_items=15, num_users=20, min_len=8, max_len=12)
    dm = SequentialDataModule(str(ds.path), max_len=3, batch_size=20)
    model = SASRec(catalog=dm.catalog, dim=8, num_layers=1, loss="bce")
    model.attach_data(dm.model_inputs())
    assert model.next_item_loss.users_attached
    batch = next(iter(dm.train_dataloader()))
    train = dm.splits.train  # type: ignore[union-attr]
    users = batch["user"].tolist()
    window = [
        set(batch["input_ids"][r].tolist()) | set(batch["target_ids"][r].tolist()) for r in range(len(users))
    ]
    assert any(set(train[u]) - window[r] for r, u in enumerate(users))  # the window is not the whole history
    keep = batch["target_ids"] > 0
    rows = torch.arange(len(users))[:, None].expand_as(keep)[keep]
    for _ in range(20):
        negs = model.next_item_loss.draw_negatives(batch["target_ids"], users=batch["user"])
        for r, n in zip(rows.tolist(), negs.tolist()):
            assert n not in train[users[r]] and 1 <= n <= 15
    assert torch.isfinite(model.training_loss(batch))


def test_loss_name_is_checked() -> None:
    with pytest.raises(ValueError, match=r"loss must be one of \['ce', 'bce', 'sampled', 'inbatch'\]"):
        SASRec(catalog=CAT, loss="bpr")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="loss must be one of"):
        GRU4Rec(catalog=CAT, loss="softmax")  # type: ignore[arg-type]


def test_ce_models_do_not_load_user_items() -> None:
    loaded: list[str] = []
    inputs = ModelInputs({"train_sequences": lambda: loaded.append("x") or [[1, 2]]})
    SASRec(catalog=CAT, dim=8, num_layers=1).attach_data(inputs)
    GRU4Rec(catalog=CAT, embedding_dim=8, hidden_size=8).attach_data(inputs)
    assert loaded == []


# ---------------------------------------------------------------------------------------------- GRU4Rec
def test_shift_helpers_round_trip() -> None:
    ids = torch.tensor([[0, 0, 7, 8], [1, 2, 3, 4], [0, 0, 0, 0]])
    lengths = (ids != 0).sum(1)
    front = left_to_front(ids, lengths)
    assert front.tolist() == [[7, 8, 0, 0], [1, 2, 3, 4], [0, 0, 0, 0]]
    assert torch.equal(front_to_left(front, lengths), ids)
    x = torch.randn(3, 4, 5) * (ids != 0)[..., None]
    assert torch.equal(front_to_left(left_to_front(x, lengths), lengths), x)


def test_gru4rec_query_ignores_left_padding() -> None:
    torch.manual_seed(0)
    model = GRU4Rec(catalog=CAT, embedding_dim=8, hidden_size=12, num_layers=2).eval()
    with torch.no_grad():  # a non-zero padding embedding: only packing keeps padding out of the GRU state
        model.item_embedding.weight[0].normal_()
    short = model.query_vectors({"input_ids": torch.tensor([[5, 6, 7]])})
    padded = model.query_vectors({"input_ids": torch.tensor([[0, 0, 0, 0, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7]])})
    assert torch.allclose(padded[0], short[0], atol=1e-6)
    assert not torch.allclose(padded[1], short[0], atol=1e-3)  # a longer history does change the query
    # the hidden state after each item is the query of the prefix ending there; padding positions are 0
    hidden = model.sequence_hidden(torch.tensor([[0, 0, 5, 6, 7]]))
    assert torch.all(hidden[0, :2] == 0)
    prefix = model.query_vectors({"input_ids": torch.tensor([[5, 6]])})
    assert torch.allclose(hidden[0, 3], prefix[0], atol=1e-6)
    assert torch.allclose(hidden[0, 4], short[0], atol=1e-6)
    empty = model.query_vectors({"input_ids": torch.tensor([[0, 0]])})
    assert empty.shape == (1, 8) and torch.isfinite(empty).all()


# ---------------------------------------------------------------------------------------------- BERT4Rec
def test_cloze_mask_masks_only_real_items() -> None:
    gen = torch.Generator().manual_seed(0)
    seq = torch.tensor([[0, 0, 0, 4, 5, 6], [1, 2, 3, 4, 5, 6]]).repeat(500, 1)
    inputs, labels = cloze_mask(seq, mask_id=99, mask_prob=0.2, generator=gen)
    masked = inputs == 99
    assert torch.equal(masked, labels > 0)
    assert torch.equal(labels[masked], seq[masked])  # labels are the original items
    assert torch.equal(inputs[~masked], seq[~masked])  # the rest is untouched
    assert not masked[seq == 0].any()  # padding never masked
    assert masked.any(dim=1).all()  # every row has a masked position
    rate = masked[1::2].float().mean().item()  # full rows: about mask_prob (plus the at-least-one rule)
    assert 0.18 < rate < 0.26


def test_cloze_mask_poses_the_evaluation_task_in_ft_ratio_of_the_rows() -> None:
    # evaluation queries a [MASK] after the whole history; with the random cloze alone a window poses that
    # task (last item masked, nothing to its right) in only ~mask_prob of the rows, and BERT4Rec ranked the
    # demo's users by popularity. RecBole's ft_ratio: a share of rows masks only the last item.
    gen = torch.Generator().manual_seed(0)
    seq = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]]).repeat(1000, 1)
    inputs, labels = cloze_mask(seq, mask_id=99, mask_prob=0.2, last_only_prob=1.0, generator=gen)
    assert torch.equal(labels[:, -1], seq[:, -1]) and labels[:, :-1].eq(0).all()
    assert inputs[:, -1].eq(99).all() and torch.equal(inputs[:, :-1], seq[:, :-1])
    inputs, labels = cloze_mask(seq, mask_id=99, mask_prob=0.2, last_only_prob=0.5, generator=gen)
    only_last = (labels[:, :-1] == 0).all(dim=1) & (labels[:, -1] > 0)
    # 0.5 + half x P(a random row ends up with only its last item masked: drawn alone, or nothing drawn)
    expected = 0.5 + 0.5 * ((0.8**3 * 0.2 + 0.8**4) + (0.8**5 * 0.2 + 0.8**6)) / 2
    assert abs(only_last.float().mean().item() - expected) < 0.04
    model = BERT4Rec(catalog=CAT, dim=8, num_layers=1, num_heads=2)
    assert model.ft_ratio == 0.5  # RecBole's default
    with pytest.raises(ValueError, match="ft_ratio"):
        BERT4Rec(catalog=CAT, dim=8, num_layers=1, num_heads=2, ft_ratio=1.5)


def test_bert4rec_item_scores_are_not_drowned_by_the_bias() -> None:
    # BERT's N(0, 0.02) item embeddings gave h . e_i a spread of ~0.1 against an output bias that learns
    # log-popularity in a few steps: every user got the same top-10. Items start at unit norm now.
    torch.manual_seed(0)
    model = BERT4Rec(catalog={"num_items": 200, "num_users": 5, "max_len": 6}, dim=64, num_layers=1).eval()
    norms = model.item_embedding.weight[1:].norm(dim=1)
    assert 0.8 < norms.mean().item() < 1.2 and model.item_embedding.weight[0].eq(0).all()
    assert 0.8 < model.encoder.positions.weight.norm(dim=1).mean().item() < 1.2
    with torch.no_grad():
        h = model.query_vectors({"input_ids": torch.tensor([[0, 3, 4, 5, 6, 7]])})[0, :-1]
        spread = (model.item_vectors()[1:, :-1] @ h).std().item()
    assert spread > 0.5  # the same order as log-popularity differences (~1), not 0.1
    legacy = BERT4Rec(catalog={"num_items": 200, "num_users": 5, "max_len": 6}, dim=64, embedding_std=0.02)
    assert legacy.item_embedding.weight[1:].norm(dim=1).mean().item() < 0.2


def test_bidirectional_encoder_sees_both_sides_but_not_padding() -> None:
    torch.manual_seed(0)
    enc = BidirectionalTransformer(dim=8, num_layers=2, num_heads=2, max_len=5, dropout=0.0).eval()
    ids = torch.tensor([[0, 0, 3, 4, 5]])
    emb = torch.randn(1, 5, 8)
    out = enc(emb, ids)
    later = emb.clone()
    later[0, 4] += torch.randn(8)  # change the last item: earlier positions change too (non-causal)
    assert not torch.allclose(enc(later, ids)[0, 2], out[0, 2])
    pad = emb.clone()
    pad[0, 0] += torch.randn(8)  # change a padding slot: nothing changes
    assert torch.allclose(enc(pad, ids), out, atol=1e-6) and torch.all(out[0, :2] == 0)
    assert torch.allclose(enc(emb[:, 2:], ids[:, 2:])[0], out[0, 2:], atol=1e-6)  # padding width irrelevant


def test_bert4rec_queries_a_mask_after_the_history() -> None:
    torch.manual_seed(0)
    model = BERT4Rec(catalog=CAT, dim=8, num_layers=1, num_heads=2).eval()
    ids = torch.tensor([[0, 0, 3, 4]])
    assert model.with_mask_token(ids).tolist() == [[0, 0, 3, 4, 21]]
    full = model.with_mask_token(torch.arange(1, 9)[None])  # longer than max_len: oldest items dropped
    assert full.tolist() == [[3, 4, 5, 6, 7, 8, 21]]
    q = model.query_vectors({"input_ids": ids})
    assert torch.allclose(model.query_vectors({"input_ids": torch.tensor([[3, 4]])}), q, atol=1e-6)
    assert torch.allclose(model.encode(model.with_mask_token(ids))[:, -1], q)
    assert q[0, -1] == 1.0  # the bias column
    items = model.item_vectors()
    assert items.shape == (21, 9)  # [MASK] (id 21) is never a candidate
    with torch.no_grad():
        model.output_bias[7] = 5.0
    with torch.no_grad():
        items = model.item_vectors()
        h = model.encode(model.with_mask_token(ids))[0, -1, :-1]
        s = model.score_all({"input_ids": ids})[0]
    assert float(s[7]) == pytest.approx(float(h @ items[7, :-1]) + 5.0, rel=1e-5)  # the bias enters the score


def test_bert4rec_loss_only_on_masked_positions(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = BERT4Rec(catalog=CAT, dim=8, num_layers=1, num_heads=2, dropout=0.0)
    seen: dict[str, torch.Tensor] = {}

    def cloze_spy(
        seq: torch.Tensor, mask_id: int, mask_prob: float, **kw: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        seen["window"] = seq
        inputs, labels = cloze_mask(seq, mask_id, mask_prob, **kw)
        seen["labels"] = labels
        return inputs, labels

    def ce_spy(hidden: torch.Tensor, items: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        seen["targets"] = targets
        return full_softmax_ce(hidden, items, targets)

    monkeypatch.setattr("mmrec.models.bert4rec.cloze_mask", cloze_spy)
    monkeypatch.setattr("mmrec.nn.losses.full_softmax_ce", ce_spy)  # BERT4Rec's default loss: ce
    batch = {
        "input_ids": torch.tensor([[0, 0, 1, 2], [3, 4, 5, 6]]),
        "target_ids": torch.tensor([[0, 0, 2, 9], [4, 5, 6, 7]]),
    }
    assert torch.isfinite(model.training_loss(batch))
    # the window is the history plus its last next item; the loss covers exactly the masked positions
    assert seen["window"].tolist() == [[0, 0, 1, 2, 9], [3, 4, 5, 6, 7]]
    labels = seen["labels"]
    assert torch.equal(seen["targets"], labels[labels > 0]) and labels[:, :2][0].eq(0).all()


def test_bert4rec_gets_every_prefix_as_a_training_window_unless_the_user_sets_a_stride(tmp_path: Path) -> None:
    # BERT4Rec poses the next-item task at each window's last item only: with the default non-overlapping
    # windows a demo user posed 1 of ~9 targets per epoch and the model stayed at popularity level
    ds = toy_dataset(tmp_path)

    def stride_and_windows(model: L.LightningModule, **data: int) -> tuple[int | None, int]:
        dm = SequentialDataModule(str(ds.path), max_len=6, batch_size=4, **data)
        trainer = _trainer(1)
        dm.trainer = trainer
        trainer.strategy.connect(model)
        return dm.effective_window_stride(), len(dm.train_dataloader().dataset)

    bert = BERT4Rec(catalog=CAT, dim=8, num_layers=1, num_heads=2)
    sas = SASRec(catalog=CAT, dim=8, num_layers=1, num_heads=2)
    assert isinstance(bert, TrainingWindowPreference) and not isinstance(sas, TrainingWindowPreference)
    stride, prefixes = stride_and_windows(bert)
    assert stride == 1
    dm = SequentialDataModule(str(ds.path), max_len=6)
    dm.setup()
    assert dm.splits is not None
    assert prefixes == sum(len(t) - 1 for t in dm.splits.train if len(t) > 1)  # one window per target
    assert stride_and_windows(sas)[0] is None  # SASRec: every position is a target already
    assert stride_and_windows(bert, window_stride=3)[0] == 3  # the user's setting wins
    assert dm.effective_window_stride() is None  # no Trainer, no model: the datamodule's own default


# ---------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("sequential/gru4rec", {"embedding_dim": 32, "hidden_size": 32, "dropout": 0.1, "lr": 5e-3}),
        ("sequential/bert4rec", {"dim": 32, "num_layers": 1, "dropout": 0.1, "lr": 5e-3, "mask_prob": 0.3}),
        ("sequential/sasrec", {"dim": 32, "num_layers": 1, "dropout": 0.1, "lr": 5e-3, "loss": "bce"}),
    ],
)
def test_models_learn_sequential_pattern(tmp_path: Path, name: str, kwargs: dict) -> None:
    L.seed_everything(0, verbose=False)
    ds = toy_dataset(tmp_path, num_items=40, num_users=120, min_len=5, max_len=10)
    dm = SequentialDataModule(str(ds.path), max_len=8, batch_size=32)
    model = create_model(name, catalog=dm.catalog, **kwargs)
    before = _trainer(1).test(model, datamodule=dm, verbose=False)[0]["test/hr@10"]
    _trainer(25).fit(model, datamodule=dm)
    after = _trainer(1).test(model, datamodule=dm, verbose=False)[0]
    # users walk through consecutive items: the next item is learnable far above chance (10/40 with masking)
    assert after["test/hr@10"] > 0.8 > before
    assert after["test/num_users"] == 120


@pytest.mark.parametrize(
    ("config", "name"),
    [
        ("gru4rec_demo.yaml", "sequential/gru4rec"),
        ("bert4rec_demo.yaml", "sequential/bert4rec"),
        ("sasrec_bce_demo.yaml", "sequential/sasrec"),
    ],
)
def test_demo_configs_run_through_mmrec_fit(tmp_path: Path, config: str, name: str) -> None:
    ds = toy_dataset(tmp_path, num_items=25, num_users=30, min_len=3, max_len=7)
    cfg = Path(__file__).resolve().parents[1] / "configs" / config
    tiny = MODELS.meta(name).get("tiny", {"dim": 8, "num_layers": 1})
    args = [
        "fit",
        "--config",
        str(cfg),
        f"--data.init_args.dataset={ds.path}",
        "--trainer.max_epochs=1",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        *[f"--model.init_args.{k}={v}" for k, v in tiny.items()],
    ]
    assert main(args) == 0
    metrics = json.loads(next((tmp_path / "runs").glob("*/version_0/test_metrics.json")).read_text())
    assert metrics["num_users"] == 30 and 0.0 <= metrics["ndcg@10"] <= 1.0
