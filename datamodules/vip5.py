"""The VIP5 DataModule: personalized multimodal prompts for sequential, direct and explanation tasks.

Built from a canonical dataset (``mmrec data prepare``) and embedding stores (``mmrec embed``):

- **sequential** (A): leave-one-out by time (:func:`mmrec.datamodules.splits.leave_one_out`); training
  re-samples a target position of each user's training sequence every epoch (all prefixes over epochs),
  evaluation asks for the validation / test item given the history before it.
- **direct** (B): yes/no and choose-from-candidates prompts. Evaluation ranks 1 positive (the validation /
  test item) + ``negatives`` items the user never interacted with, drawn **once** per (dataset
  fingerprint, seed, negatives) and saved to ``<derived_dir>/vip5_direct_candidates-...npz`` (default
  ``derived_dir``: ``<dataset>/derived``), so every model and run ranks the same candidates. Training draws
  fresh negatives from the user's non-training items every epoch.
- **explanation** (C): (user, item) pairs with a review, deduplicated and split *by pair* (train / valid /
  test shares), so no test pair is ever seen in training.

Each task has ``seen`` templates (trained on) and ``unseen`` ones (held out); evaluation loaders exist per
(task, template split[, direct kind]), and evaluation example ``j`` of a group uses template
``j mod (#templates of the group)``. Batch formats: :mod:`mmrec.datamodules.vip5_tasks`.

Example:
    >>> dm = VIP5DataModule("assets/demo", tokenizer="minilm", stores={"image": "cache/demo/image"},
    ...                     tasks=["sequential"])  # doctest: +SKIP
    >>> dm.catalog["visual_tokens"]  # doctest: +SKIP
    2
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from mmrec.data.canonical import CanonicalDataset, DatasetError, read_meta
from mmrec.datamodules.registry import DATAMODULES
from mmrec.datamodules.sequential import resolve_user_path, sequences_by_user
from mmrec.datamodules.splits import SplitResult, leave_one_out
from mmrec.datamodules.vip5_tasks import (
    Collator,
    EpochSampler,
    EvalSet,
    ExplanationPairs,
    MixedTaskTrainSet,
    TaskData,
    candidates_path,
    explanation_pairs,
    item_numbering,
    load_or_draw_candidates,
)
from mmrec.prompts import (
    TASKS,
    PromptBuilder,
    TemplateSet,
    load_templates,
    require_templates,
    tokenizer_fingerprint,
)
from mmrec.prompts.pretrained import load_tokenizer
from mmrec.store import EmbeddingStore, StoreError
from mmrec.store.reader import resolve_store_path

log = logging.getLogger(__name__)

TaskName = Literal["sequential", "direct", "explanation"]


@DATAMODULES.register("data/vip5")
class VIP5DataModule(L.LightningDataModule):
    """Mixed-task VIP5 prompts from a canonical dataset and embedding stores.

    Args:
        dataset: canonical dataset folder.
        tokenizer: the backbone's tokenizer: hub id, local directory or ``minilm`` (must match the model's
            backbone; the model checks it).
        stores: feature name -> embedding store (``mmrec embed`` output); the model picks which feed the
            visual tokens (default ``image``).
        tasks: task families to train on (and evaluate).
        task_weights: training examples per eligible user (sequential, direct) or per training user with a
            review (explanation) per epoch, per task; default 1 each.
        templates: template file (YAML / JSON); ``None`` = the packaged VIP5 templates.
        item_indexing: ``random`` (default) or ``sequential`` (P5; leaks, warns).
        visual_tokens: placeholders ``k`` after every item mention (0 disables visual tokens).
        negatives: sampled negatives per user for direct-task evaluation (1 positive + ``negatives``).
        train_candidates: candidates listed in training choose-prompts (default ``negatives + 1``).
        seed: seeds indexing, negatives, the explanation split and the training sampler.
        max_history: most recent items in a sequential prompt.
        max_source_length: prompt length budget in tokens (history is cut from the oldest item).
        max_target_length: target length in tokens (explanations are truncated).
        max_whole_words: whole-word index range (the model's whole-word table size).
        batch_size: training prompts per step.
        eval_batch_size: evaluation examples per step (a yes/no direct example is ``negatives+1`` prompts).
        eval_tasks: tasks evaluated (default: ``tasks``).
        val_template_splits: template splits used for validation (model selection); ``["seen"]`` by default.
        test_template_splits: template splits reported on test.
        val_max_users: evaluate at most this many (seeded random) users / pairs per validation loader.
        test_max_users: the same for test (``None`` = all; set only to subsample, and report it).
        explanation_column: interaction column with the explanation text (default: ``explanation`` when
            present, else ``review``).
        explanation_mode: ``first_sentence`` (first sentence of >= 3 words) or ``full``.
        explanation_split: train / valid / test shares of the (user, item) pairs.
        mask_history: exclude history items from full-ranking metrics (encoder-only ranking head).
        derived_dir: where the direct-task candidates file goes (default ``<dataset>/derived``).
        prepare_commands: commands that create the dataset and stores, printed when they are missing.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        dataset: str,
        tokenizer: str = "t5-small",
        stores: dict[str, str] | None = None,
        tasks: list[TaskName] | None = None,
        task_weights: dict[str, float] | None = None,
        templates: str | None = None,
        item_indexing: Literal["random", "sequential"] = "random",
        visual_tokens: int = 2,
        negatives: int = 99,
        train_candidates: int | None = None,
        seed: int = 0,
        max_history: int = 20,
        max_source_length: int = 512,
        max_target_length: int = 64,
        max_whole_words: int = 512,
        batch_size: int = 16,
        eval_batch_size: int = 16,
        eval_tasks: list[TaskName] | None = None,
        val_template_splits: list[str] | None = None,
        test_template_splits: list[str] | None = None,
        val_max_users: int | None = None,
        test_max_users: int | None = None,
        explanation_column: str | None = None,
        explanation_mode: Literal["first_sentence", "full"] = "first_sentence",
        explanation_split: tuple[float, float, float] = (0.8, 0.1, 0.1),
        mask_history: bool = True,
        derived_dir: str | None = None,
        prepare_commands: list[str] | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.tasks = list(tasks or TASKS)
        bad = [t for t in self.tasks if t not in TASKS]
        if bad or not self.tasks:
            raise ValueError(f"tasks must be a non-empty subset of {list(TASKS)}, got {tasks}.")
        self.eval_tasks = list(eval_tasks or self.tasks)
        if [t for t in self.eval_tasks if t not in TASKS]:
            raise ValueError(f"eval_tasks must be a subset of {list(TASKS)}, got {eval_tasks}.")
        weights = {t: 1.0 for t in self.tasks}
        weights.update({k: float(v) for k, v in (task_weights or {}).items()})
        if set(weights) - set(self.tasks) or min(weights.values()) < 0:
            raise ValueError(
                f"task_weights must give non-negative weights for tasks {self.tasks}, got {task_weights}."
            )
        self.task_weights = weights
        for name, v in (
            ("negatives", negatives),
            ("max_history", max_history),
            ("batch_size", batch_size),
            ("eval_batch_size", eval_batch_size),
        ):
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}.")
        self.train_candidates = int(train_candidates or negatives + 1)
        if self.train_candidates < 2:
            raise ValueError("train_candidates must be >= 2 (the positive and at least one negative).")
        self.val_splits = list(val_template_splits or ["seen"])
        self.test_splits = list(test_template_splits or ["seen", "unseen"])
        self.prepare_commands = list(prepare_commands or [])
        self.dataset_path = resolve_user_path(dataset)
        try:
            self.meta = read_meta(self.dataset_path)
        except DatasetError as e:
            raise DatasetError(self._missing_message(str(e))) from None
        self.feature_paths: dict[str, Path] = {}
        self._feature_dims: dict[str, int] = {}
        for name, p in (stores or {}).items():
            path = resolve_store_path(resolve_user_path(p, base=self.dataset_path))
            try:
                self._feature_dims[name] = int(EmbeddingStore.read_manifest(path)["dim"])
            except StoreError as e:
                raise StoreError(self._missing_message(f"feature store {name!r}: {e}")) from None
            self.feature_paths[name] = path
        self.template_set: TemplateSet = load_templates(templates)
        require_templates(self.template_set, self.tasks, ("seen",))
        require_templates(self.template_set, self.eval_tasks, sorted(set(self.val_splits + self.test_splits)))
        self.tokenizer_name = tokenizer
        self.tokenizer = load_tokenizer(tokenizer)
        self.derived_dir = resolve_user_path(derived_dir) if derived_dir else self.dataset_path / "derived"
        self.data: CanonicalDataset | None = None
        self.splits: SplitResult | None = None
        self.builder: PromptBuilder | None = None
        self.task_data: TaskData | None = None
        self.user_ids: list[str] = []
        self.item_ids: list[str] = []
        self.sequences: list[list[int]] = []
        self._eval_sets: dict[str, list[EvalSet]] = {}
        self._collate = Collator(int(self.tokenizer.pad_token_id or 0))
        # the builder's token-level facts, needed by the catalog before setup
        probe = PromptBuilder(
            self.tokenizer,
            self.template_set,
            [0],
            visual_tokens=visual_tokens,
            max_source_length=max_source_length,
            max_target_length=max_target_length,
            max_whole_words=max_whole_words,
        )
        self._token_facts = {
            "pad_token_id": probe.pad_id,
            "eos_token_id": probe.eos_id,
            "placeholder_token_id": probe.placeholder_id,
            "answer_token_ids": list(probe.answer_token_ids()),
        }

    def _missing_message(self, problem: str) -> str:
        if not self.prepare_commands:
            return problem
        steps = "\n".join(f"  {c}" for c in self.prepare_commands)
        return f"{problem}\nThis configuration needs its prepared data and features first; run:\n{steps}"

    # ----------------------------------------------------------------- catalog
    @property
    def catalog(self) -> dict[str, Any]:
        """What the model must know before it is built (plain types; linked by the CLI)."""
        counts = self.meta["counts"]
        hp = self.hparams
        return {
            "num_items": int(counts["items"]),
            "num_users": int(counts["users"]),
            "max_len": int(hp.max_history),
            "feature_dims": dict(self._feature_dims),
            "dataset": str(self.meta.get("name", self.dataset_path.name)),
            "fingerprint": str(self.meta.get("fingerprint", "")),
            "tokenizer": str(self.tokenizer_name),
            "tokenizer_fingerprint": tokenizer_fingerprint(self.tokenizer),
            "visual_tokens": int(hp.visual_tokens),
            "max_whole_words": int(hp.max_whole_words),
            "item_indexing": str(hp.item_indexing),
            "tasks": list(self.tasks),
            "templates": self.template_set.describe(),
            **self._token_facts,
        }

    # ----------------------------------------------------------------- setup
    def prepare_data(self) -> None:
        """Datasets come from ``mmrec data prepare``; only check they exist."""
        read_meta(self.dataset_path)

    def setup(self, stage: str | None = None) -> None:
        if self.task_data is not None:
            return
        hp = self.hparams
        self.data = CanonicalDataset.load(self.dataset_path)
        self.item_ids = self.data.item_ids
        item_index = {iid: i + 1 for i, iid in enumerate(self.item_ids)}
        self.user_ids, self.sequences, _ = sequences_by_user(self.data.interactions, item_index)
        self.splits = leave_one_out(self.sequences)
        if self.splits.not_evaluated:
            log.warning(
                "%d of %d users have fewer than 3 interactions: trained on, not evaluated.",
                self.splits.not_evaluated,
                len(self.user_ids),
            )
        n_items = len(self.item_ids)
        numbers = item_numbering(self.sequences, n_items, hp.item_indexing, hp.seed)
        self.builder = PromptBuilder(
            self.tokenizer,
            self.template_set,
            numbers,
            visual_tokens=hp.visual_tokens,
            max_source_length=hp.max_source_length,
            max_target_length=hp.max_target_length,
            max_whole_words=hp.max_whole_words,
        )
        explanation: ExplanationPairs | None = None
        if "explanation" in set(self.tasks) | set(self.eval_tasks):
            explanation = self._explanations(item_index)
        self.task_data = TaskData(
            builder=self.builder,
            templates=self.template_set,
            num_items=n_items,
            train_sequences=self.splits.train,
            full_sequences=self.sequences,
            max_history=hp.max_history,
            train_candidates=self.train_candidates,
            explanation=explanation,
        )
        self._check_lengths()

    def _explanations(self, item_index: dict[str, int]) -> ExplanationPairs:
        assert self.data is not None
        inter = self.data.interactions
        col = self.hparams.explanation_column
        if col is None:
            col = next(
                (c for c in ("explanation", "review") if c in inter.columns and inter[c].notna().any()), None
            )
        if col is None or col not in inter.columns:
            raise DatasetError(
                f"{self.dataset_path} has no explanation or review text (interactions columns: "
                f"{list(inter.columns)}); drop 'explanation' from tasks or prepare the dataset with reviews."
            )
        user_index = {u: i for i, u in enumerate(self.user_ids)}
        users = inter["user_id"].map(user_index).to_numpy(dtype=np.int64)
        items = inter["item_id"].map(item_index).to_numpy(dtype=np.int64)
        ratings = (
            inter["rating"].fillna(0).to_numpy(dtype=np.float32)
            if "rating" in inter.columns
            else np.zeros(len(inter), np.float32)
        )
        pairs = explanation_pairs(
            users,
            items,
            ratings,
            inter[col].tolist(),
            self.hparams.explanation_split,
            self.hparams.seed,
            self.hparams.explanation_mode,
        )
        if not len(pairs.indices(0)):
            raise DatasetError(
                f"{self.dataset_path}: no (user, item) pair with a non-empty {col!r} to train on."
            )
        log.info(
            "explanation pairs from %r: %d train / %d valid / %d test (split by pair)",
            col,
            len(pairs.indices(0)),
            len(pairs.indices(1)),
            len(pairs.indices(2)),
        )
        return pairs

    def _check_lengths(self) -> None:
        """Fail now, not mid-epoch, when a choose prompt cannot fit ``max_source_length``."""
        d = self._require()
        if "direct" not in set(self.tasks) | set(self.eval_tasks):
            return
        lengths = [len(d.builder.item_tokens(i)) for i in range(1, d.num_items + 1)]
        longest = int(np.argmax(lengths)) + 1
        n = max(self.train_candidates, self.hparams.negatives + 1)
        for t in self.template_set.group("direct", kind="choose"):
            d.builder.encode_source(t, user=len(self.user_ids), candidates=[longest] * n)

    def _require(self) -> TaskData:
        if self.task_data is None:
            self.setup()
        assert self.task_data is not None
        return self.task_data

    # ----------------------------------------------------------------- loaders
    def train_plan(self) -> list[tuple[str, int]]:
        """``[(task, user)]`` of one epoch: ``round(weight * eligible users)`` examples per task."""
        d = self._require()
        rng = np.random.default_rng([self.hparams.seed, 2])
        plan: list[tuple[str, int]] = []
        for task in self.tasks:
            w = self.task_weights[task]
            if task == "sequential":
                keys = [u for u, s in enumerate(d.train_sequences) if len(s) >= 2]
            elif task == "direct":
                keys = [u for u, s in enumerate(d.train_sequences) if len(s) >= 1]
            else:  # users with training reviews; each epoch draws one of the user's pairs
                assert d.explanation is not None
                keys = sorted(d.explanation.train_rows_by_user())
            whole, frac = int(w), w - int(w)
            for _ in range(whole):
                plan.extend((task, u) for u in keys)
            if frac:
                extra = rng.choice(len(keys), size=round(frac * len(keys)), replace=False)
                plan.extend((task, keys[int(k)]) for k in sorted(extra.tolist()))
        if not plan:
            raise DatasetError(f"{self.dataset_path}: no training examples for tasks {self.tasks}.")
        return plan

    def train_dataloader(self) -> DataLoader:
        d = self._require()
        ds = MixedTaskTrainSet(d, self.train_plan(), self.hparams.seed)
        return DataLoader(
            ds,
            batch_size=self.hparams.batch_size,
            sampler=EpochSampler(len(ds), self.hparams.seed),
            collate_fn=self._collate,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def eval_sets(self, stage: Literal["valid", "test"]) -> list[EvalSet]:
        """The evaluation sets of ``stage``, one per (task, template split[, direct kind])."""
        if stage in self._eval_sets:
            return self._eval_sets[stage]
        d = self._require()
        assert self.splits is not None
        hp = self.hparams
        split = self.splits.valid if stage == "valid" else self.splits.test
        limit = hp.val_max_users if stage == "valid" else hp.test_max_users
        template_splits = self.val_splits if stage == "valid" else self.test_splits
        keep = _subsample(len(split), limit, hp.seed)
        sets: list[EvalSet] = []
        for task in self.eval_tasks:
            if task == "sequential":
                rows = []
                for j in keep:
                    target = split.targets[j][0]
                    exclude = [i for i in split.exclude[j] if i != target] if hp.mask_history else []
                    rows.append((split.users[j], split.histories[j], target, exclude))
                groups = [("", rows)]
            elif task == "direct":
                cands = self._direct_candidates()[stage]
                rows = [(int(cands.users[j]), cands.candidates[j].tolist()) for j in keep]
                groups = [("yes_no", rows), ("choose", rows)]
            else:
                assert d.explanation is not None
                pair_rows = d.explanation.indices(1 if stage == "valid" else 2)
                sel = _subsample(len(pair_rows), limit, hp.seed)
                groups = [("", [int(pair_rows[j]) for j in sel])]
            for tsplit in template_splits:
                for kind, rows in groups:
                    templates = self.template_set.group(task, tsplit, kind or None)
                    if templates and rows:
                        sets.append(EvalSet(d, task, tsplit, kind, templates, rows, hp.seed))
        self._eval_sets[stage] = sets
        return sets

    def _direct_candidates(self) -> dict[str, Any]:
        assert self.splits is not None
        hp = self.hparams
        path = candidates_path(self.derived_dir, self.meta.get("fingerprint", "nofp"), hp.seed, hp.negatives)
        return load_or_draw_candidates(
            path,
            {
                "valid": (self.splits.valid.users, [t[0] for t in self.splits.valid.targets]),
                "test": (self.splits.test.users, [t[0] for t in self.splits.test.targets]),
            },
            self.sequences,
            len(self.item_ids),
            hp.negatives,
            hp.seed,
            str(self.meta.get("fingerprint", "nofp")),
        )

    def _loaders(self, stage: Literal["valid", "test"]) -> list[DataLoader]:
        loaders = []
        for s in self.eval_sets(stage):
            bs = self.hparams.eval_batch_size
            if s.kind == "yes_no":  # one prompt per candidate
                bs = max(1, bs // 4)
            loaders.append(
                DataLoader(
                    s,
                    batch_size=bs,
                    shuffle=False,
                    collate_fn=self._collate,
                    num_workers=self.hparams.num_workers,
                )
            )
        return loaders

    def val_dataloader(self) -> list[DataLoader]:
        return self._loaders("valid")

    def test_dataloader(self) -> list[DataLoader]:
        return self._loaders("test")

    def predict_dataloader(self) -> DataLoader:
        """Every user with their full history, first seen sequential template (for ``predict``)."""
        d = self._require()
        rows = [
            (u, s, s[-1], sorted(set(s)) if self.hparams.mask_history else [])
            for u, s in enumerate(self.sequences)
        ]
        ds = EvalSet(d, "sequential", "seen", "", self.template_set.group("sequential", "seen")[:1], rows, 0)
        return DataLoader(
            ds, batch_size=self.hparams.eval_batch_size, collate_fn=_PredictCollator(self._collate)
        )

    def query_batch(self, histories: Sequence[Sequence[int]], users: Sequence[int]) -> dict[str, Any]:
        """Prompt batch for serving: ``histories`` (item indices 1..N, oldest first) of ``users`` (indices;
        -1 = a user unseen in training), in the first seen sequential template, as ``predict`` builds it.

        Only the prompt tensors matter (``query_vectors`` reads them); the target is a placeholder.

        Example:
            >>> batch = dm.query_batch([[3, 7, 2]], [0])  # doctest: +SKIP
            >>> model.query_vectors(batch).shape  # doctest: +SKIP
            torch.Size([1, 384])
        """
        d = self._require()
        if getattr(self, "_serving_templates", None) is None:
            self._serving_templates = list(self.predict_dataloader().dataset.templates)  # predict's prompt
        rows = [(int(u), list(h), int(h[-1]) if len(h) else 1, []) for h, u in zip(histories, users)]
        ds = EvalSet(d, "sequential", "seen", "", self._serving_templates, rows, 0)
        return self._collate([ds[j] for j in range(len(ds))])

    # ----------------------------------------------------------------- model-side data
    def item_feature_tables(
        self, dtype: torch.dtype = torch.float32
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """name -> ``(features (N+1, D), valid (N+1,))`` aligned to item indices; row 0 is padding."""
        self._require()
        tables = {}
        for name, path in self.feature_paths.items():
            vecs, mask = EmbeddingStore.open(path).aligned(self.item_ids, dtype=dtype)
            missing = int((~mask).sum())
            if missing:
                log.warning(
                    "feature %r: %d of %d items have no valid vector (zeros).", name, missing, len(mask)
                )
            tables[name] = (
                torch.cat([torch.zeros(1, vecs.shape[1], dtype=dtype), vecs]),
                torch.cat([torch.zeros(1, dtype=torch.bool), mask]),
            )
        return tables

    def item_target_sequences(self) -> list[list[int]]:
        """Target token ids (with eos) of every item index (entry 0 empty): the decoding trie's content."""
        return self._require().builder.item_target_sequences()

    def model_inputs(self) -> dict[str, Any]:
        """Everything a VIP5 model attaches at setup: feature tables and item target sequences."""
        return {"features": self.item_feature_tables(), "item_sequences": self.item_target_sequences()}


class _PredictCollator:
    """Predict batches carry the full history as targets-free ranking queries."""

    def __init__(self, inner: Collator) -> None:
        self.inner = inner

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(examples)
        batch["targets"] = torch.full_like(batch["targets"], -1)
        return batch


def _subsample(n: int, limit: int | None, seed: int) -> list[int]:
    if limit is None or limit >= n:
        return list(range(n))
    if limit < 1:
        raise ValueError(f"val_max_users / test_max_users must be >= 1, got {limit}.")
    return sorted(np.random.default_rng([seed, 5]).choice(n, size=limit, replace=False).tolist())
