"""mmrec pieces plugged into other people's code, as the scripts in examples/ do (and those scripts run here).

(a) an mmrec encoder as a frozen item tower inside a plain PyTorch model;
(b) an embedding store exported as a RecBole atomic feature file and read back;
(c) a trained item table served by a user's own ``faiss.IndexFlatIP``, equal to ``mmrec recommend``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import faiss
import numpy as np
import pytest
import torch
from PIL import Image
from test_retrieval_cli import train_tiny_checkpoint
from torch import nn

from mmrec.cli import main
from mmrec.encoders import create_encoder, list_encoders
from mmrec.retrieval.recommender import Recommender
from mmrec.store import EmbeddingStore, write_store

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"mmrec_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------- (a)
def test_encoder_as_frozen_item_tower_in_plain_pytorch() -> None:
    tiny_image = [n for n in list_encoders(tiny=True, modality="image") if n == "timm/tiny"]
    assert tiny_image, f"no tiny image encoder registered: {list_encoders(tiny=True)}"
    torch.manual_seed(0)
    encoder = create_encoder(tiny_image[0], weights="random")

    class ItemTower(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.head = nn.Linear(encoder.output_dim, 16)

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.head(self.encoder.encode(pixels).clone())  # inference tensor -> normal tensor

    class TwoTower(nn.Module):
        def __init__(self, num_users: int) -> None:
            super().__init__()
            self.items = ItemTower()
            self.users = nn.Embedding(num_users, 16)

        def forward(self, users: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
            return self.users(users) @ self.items(pixels).T

    rng = np.random.default_rng(0)
    images = [Image.new("RGB", (32, 32), tuple(int(c) for c in rng.integers(0, 256, 3))) for _ in range(12)]
    pixels = encoder.collate([encoder.preprocess(im) for im in images])
    model = TwoTower(num_users=6)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(not n.startswith("items.encoder.") for n in trainable)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    head_before = model.items.head.weight.detach().clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    assert not encoder.training  # frozen encoders ignore train()
    target = torch.tensor([0, 3, 5, 7, 9, 11])
    losses = []
    for _ in range(15):
        loss = nn.functional.cross_entropy(model(torch.arange(6), pixels), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in before.items())
    assert not torch.equal(head_before, model.items.head.weight)
    assert all(p.grad is None for p in encoder.parameters())

    # the readable script does the same
    out = load_example("frozen_item_tower").train("timm/tiny", weights="random", steps=8)
    assert (
        out["encoder_unchanged"] == 1.0
        and out["encoder_training_mode"] == 0.0
        and out["last_loss"] < out["first_loss"]
    )


# --------------------------------------------------------------------------------------------- (b)
def test_store_exported_as_recbole_features(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(30, 5)).astype(np.float32) * np.float32(1e3) ** rng.uniform(
        -1, 1, (30, 1)
    ).astype(np.float32)
    mask = np.ones(30, bool)
    mask[[4, 9]] = False
    ids = [f"it{j}" for j in range(30)]
    store = write_store(tmp_path / "store", ids, vecs, mask, encoder="test/random")
    out = tmp_path / "toy.itememb"
    assert (
        main(
            [
                "export",
                "--store",
                str(store.path),
                "--format",
                "recbole",
                "--out",
                str(out),
                "--field",
                "img_emb",
            ]
        )
        == 0
    )

    # RecBole's atomic format, read the way RecBole reads it
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "item_id:token\timg_emb:float_seq"
    rows = [line.split("\t") for line in lines[1:]]
    assert all(len(r) == 2 for r in rows)
    got = {iid: np.array(cell.split(" "), dtype=np.float32) for iid, cell in rows}
    assert sorted(got) == sorted(i for i, m in zip(ids, mask) if m)  # valid rows only
    for j, iid in enumerate(ids):
        if mask[j]:
            np.testing.assert_array_equal(got[iid], vecs[j])  # float32 round-trips exactly

    # the readable script (export with the CLI + its own reader + check)
    example = load_example("export_recbole_features")
    assert example.export_and_check(store.path, tmp_path / "again.itememb") == 28
    cols = example.read_recbole_atomic(tmp_path / "again.itememb")
    assert cols["item_emb"]["type"] == "float_seq" and len(cols["item_id"]["values"]) == 28
    assert EmbeddingStore.open(store.path).num_items == 30


# --------------------------------------------------------------------------------------------- (c)
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_checkpoint(tmp_path_factory.getbasetemp() / "retrieval-model")


def test_own_faiss_index_gives_the_same_top10_as_mmrec_recommend(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users = ["u000", "u007", "u013", "u021", "u039"]
    (tmp_path / "users.txt").write_text("\n".join(users) + "\n")
    assert (
        main(
            [
                "recommend",
                "--ckpt",
                str(ckpt),
                "--users_file",
                str(tmp_path / "users.txt"),
                "--out",
                str(tmp_path / "r.jsonl"),
            ]
        )
        == 0
    )
    served = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    capsys.readouterr()

    # a user's own script: the item table into a plain IndexFlatIP, history filtered by over-fetching
    rec = Recommender.from_checkpoint(ckpt)
    table = rec.item_vectors().numpy()
    index = faiss.IndexFlatIP(table.shape[1])
    index.add(table)
    queries = rec.user_vectors(users).numpy()
    for uid, q, line in zip(users, queries, served):
        seen = set(rec.user_history(uid))
        scores, rows = index.search(q[None], 10 + len(seen))
        mine = [
            (rec.item_ids[r], float(s)) for s, r in zip(scores[0], rows[0]) if rec.item_ids[r] not in seen
        ][:10]
        assert line["user_id"] == uid and [i for i, _ in mine] == line["items"]
        np.testing.assert_allclose([s for _, s in mine], line["scores"], rtol=1e-5, atol=1e-5)

    # the readable script gives the same lists
    lines = load_example("faiss_from_checkpoint").recommend_with_faiss(str(ckpt), users, k=10)
    assert [x["items"] for x in lines] == [x["items"] for x in served]
