"""Per-epoch validation NDCG@10 and same-top-10 share of BERT4Rec on the demo (no early stopping), with the
mean item-embedding norm and the output bias spread: how BERT4Rec's collapse (issue 10) was diagnosed.

Usage::

    OMP_NUM_THREADS=1 python bench/bert4rec_demo_curve.py '{"lr": 0.002, "embedding_std": 0.02, "ft_ratio": 0}' 30 32

(model kwargs as JSON, epochs, batch size). Prints one line per epoch, then a final JSON line.
"""

from __future__ import annotations

import json
import sys

import lightning as L
import torch

from mmrec.datamodules.sequential import SequentialDataModule
from mmrec.models import create_model


class Curve(L.Callback):
    """Print and keep validation NDCG@10 / same-top-10 share and embedding statistics per epoch."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, model: L.LightningModule) -> None:
        met = trainer.callback_metrics
        if "val/ndcg@10" not in met:
            return
        with torch.no_grad():
            row = {
                "epoch": trainer.current_epoch,
                "ndcg@10": float(met["val/ndcg@10"]),
                "same_top10_share": float(met["val/same_top10_share"]),
                "bias_std": float(model.output_bias[1:].std()),
                "emb_norm": float(model.item_embedding.weight[1 : model.num_items + 1].norm(dim=1).mean()),
            }
        self.rows.append(row)
        print(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)


def main() -> None:
    torch.set_num_threads(1)
    args = json.loads(sys.argv[1])
    epochs = int(sys.argv[2])
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 128
    L.seed_everything(0, verbose=False)
    dm = SequentialDataModule("assets/demo", max_len=20, batch_size=batch, eval_batch_size=512, protocol="recbole")
    model = create_model("sequential/bert4rec", catalog=dm.catalog, **args)
    curve = Curve()
    L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=[curve],
        num_sanity_val_steps=0,
    ).fit(model, datamodule=dm)
    print(json.dumps({"model": "sequential/bert4rec", "args": args, "batch_size": batch, "curve": curve.rows}))


if __name__ == "__main__":
    main()
