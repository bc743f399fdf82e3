"""One full-ranking test pass of RecBole's SASRec (hidden 64, 2 layers, untrained) on a CSV of interactions.

Run by ``bench/eval_speed.py --recbole-python <python with recbole>`` in RecBole's own environment; prints one
JSON line ``{"test_pass_s": ..., "users": ..., "recbole": version}``. Not importable from mmrec (RecBole is
not an mmrec dependency).

Usage:
    /work/wt/recbole-venv/bin/python bench/recbole_eval_pass.py --csv interactions.csv
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--csv", required=True, help="user_id,item_id,timestamp,rating")
    p.add_argument("--eval-batch", type=int, default=1024, help="users per test batch")
    args = p.parse_args()
    import recbole
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    torch.set_num_threads(1)
    inter = pd.read_csv(args.csv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "synth"
        folder.mkdir()
        with open(folder / "synth.inter", "w") as f:
            f.write("user_id:token\titem_id:token\ttimestamp:float\n")
            inter[["user_id", "item_id", "timestamp"]].to_csv(f, sep="\t", header=False, index=False)
        config = Config(
            model="SASRec",
            dataset="synth",
            config_dict={
                "data_path": tmp,
                "hidden_size": 64,
                "inner_size": 256,
                "n_layers": 2,
                "n_heads": 2,
                "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
                "MAX_ITEM_LIST_LENGTH": 50,
                "loss_type": "CE",
                "train_neg_sample_args": None,
                "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
                # full ranking: RecBole's batch is eval_batch_size // num_items users
                "eval_batch_size": args.eval_batch * (int(inter["item_id"].nunique()) + 1),
                "metrics": ["Hit", "NDCG", "MRR"],
                "topk": [10],
                "device": "cpu",
                "use_gpu": False,
                "show_progress": False,
                "checkpoint_dir": str(Path(tmp) / "ckpt"),
                "log_wandb": False,
            },
        )
        init_seed(0, True)
        dataset = create_dataset(config)
        _, _, test_data = data_preparation(config, dataset)
        model = SASRec(config, test_data._dataset).to("cpu")
        trainer = Trainer(config, model)
        start = time.perf_counter()
        result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
        seconds = time.perf_counter() - start
    users = int(dataset.user_num) - 1  # RecBole's user 0 is padding
    print(json.dumps({"test_pass_s": seconds, "users": users, "recbole": recbole.__version__,
                      "ndcg@10": float(result.get("ndcg@10", float("nan")))}))


if __name__ == "__main__":
    main()
