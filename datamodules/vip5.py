"""The VIP5 DataModule: personalized multimodal prompts for sequential, direct and explanation tasks.

Built from a canonical dataset (``mmrec data prepare``) and embedding stores (``mmrec embed``):

- **sequential** (A): leave-one-out by time (:func:`mmrec.datamodules.splits.leave_one_out`); training
  re-samples a target position of each user's training sequence every epoch (all prefixes over epochs),
  evaluation asks for the validation / test item given the history before it.
- **direct** (B): yes/no and choose-from-candidates prompts. Evaluation ranks 1 positive (the validation /
  test item) + ``negatives`` items the user never interacted with, drawn **once** per (dataset
  fingerprint, seed, negatives) and saved to ``<derived_dir>/vip5_direct_candidates-...npz`` (default
  ``derived_dir``: ``<dataset>/derived``), so every model and run ranks the same candidates. Training draws
  fresh negatives every epoch among the items the user never interacted with (training, validation and
  test positives all excluded).
- **explanation** (C): (user, item) pairs with a review, deduplicated (the latest review wins) and split by
  time consistently with leave-one-out: the pair of the user's test (validation) interaction is a test
  (validation) pair, earlier pairs are training pairs, so no test pair is ever trained on.

Each task has ``seen`` templates (trained on) and ``unseen`` ones (held out: A-9, B-8, C-12 of VIP5's
29); evaluation loaders exist per (task, template split[, direct kind]), and evaluation example ``j`` of
a group uses template ``j mod (#templates of the group)``. Sequential evaluation uses the next-item
templates (the yes/no ones, A-7 and A-8, are trained on only, as in VIP5). Templates whose fields the
dataset cannot fill (``{headline}`` without a headline column) are dropped with a warning. Settings come
in groups (:mod:`mmrec.datamodules.vip5_config`). Batch formats: :mod:`mmrec.datamodules.vip5_tasks`.

Example:
    >>> dm = VIP5DataModule("assets/demo", tokenizer="minilm", stores={"image": "cache/demo/image"},
    ...                     tasks=["sequential"], prompts=PromptConfig(max_history=5))  # doctest: +SKIP
    >>> dm.catalog["visual_tokens"]  # doctest: +SKIP
    2
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, cast

import lightning as L
import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader

from mmrec.config_groups import as_config, plain_hparams
from mmrec.data.canonical import CanonicalDataset, DatasetError, read_meta
from mmrec.datamodules.histories import interaction_matrix, sequences_by_user
from mmrec.datamodules.paths import resolve_user_path
from mmrec.datamodules.registry import DATAMODULES
from mmrec.datamodules.splits import SplitResult, leave_one_out
from mmrec.datamodules.vip5_config import (
    DirectConfig,
    EvaluationConfig,
    ExplanationConfig,
    PromptConfig,
    TaskName,
    TrainingConfig,
)
from mmrec.datamodules.vip5_explanation import ExplanationPairs, pairs_from_interactions
from mmrec.datamodules.vip5_items import (
    DirectCandidates,
    candidates_path,
    item_numbering,
    load_or_draw_candidates,
)
from mmrec.datamodules.vip5_plans import (
    PredictCollator,
    build_eval_sets,
    check_choose_lengths,
    resolve_tasks,
    train_plan,
)
from mmrec.datamodules.vip5_tasks import Collator, EpochSampler, EvalSet, MixedTaskTrainSet, TaskData
from mmrec.datamodules.vip5_templates import headline_column, token_facts, usable_templates
from mmrec.eval_protocol import EvalProtocol
from mmrec.prompts import (
    TASKS,
    PromptBuilder,
    TemplateSet,
    load_templates,
    require_templates,
    tokenizer_fingerprint,
)
from mmrec.prompts.pretrained import load_tokenizer
from mmrec.protocols import ModelInputs
from mmrec.store import EmbeddingStore, StoreError
from mmrec.store.reader import resolve_store_path

log = logging.getLogger(__name__)

# defaults (frozen dataclasses: one shared instance each is safe)
_PROMPTS = PromptConfig()
_TRAINING = TrainingConfig()
_DIRECT = DirectConfig()
_EXPLANATION = ExplanationConfig()
_EVALUATION = EvaluationConfig()


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
        prompts: templates, identifiers, visual tokens, length budgets (:class:`PromptConfig`).
        training: batch size, task weights, future targets (:class:`TrainingConfig`).
        direct: direct-task candidates (:class:`DirectConfig`).
        explanation: explanation text, headline and feature word (:class:`ExplanationConfig`).
        evaluation: evaluated tasks, template splits, user subsampling, history masking
            (:class:`EvaluationConfig`).
        seed: seeds indexing, negatives and the training sampler.
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
        prompts: PromptConfig = _PROMPTS,
        training: TrainingConfig = _TRAINING,
        direct: DirectConfig = _DIRECT,
        explanation: ExplanationConfig = _EXPLANATION,
        evaluation: EvaluationConfig = _EVALUATION,
        seed: int = 0,
        derived_dir: str | None = None,
        prepare_commands: list[str] | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        prompts = as_config(PromptConfig, prompts, "prompts")
        training = as_config(TrainingConfig, training, "training")
        direct = as_config(DirectConfig, direct, "direct")
        explanation = as_config(ExplanationConfig, explanation, "explanation")
        evaluation = as_config(EvaluationConfig, evaluation, "evaluation")
        self.save_hyperparameters()
        plain_hparams(self)  # dataclass groups -> dicts (checkpoints load with weights_only=True)
        self.prompts, self.training, self.direct = prompts, training, direct
        self.explanation, self.evaluation, self.seed = explanation, evaluation, int(seed)
        self.tasks, self.eval_tasks, self.task_weights = resolve_tasks(
            tasks, evaluation.tasks, training.task_weights
        )
        self.train_candidates = int(direct.train_candidates or direct.negatives + 1)
        self.val_splits = list(evaluation.val_template_splits or ["seen"])
        self.test_splits = list(evaluation.test_template_splits or ["seen", "unseen"])
        self.prepare_commands = list(prepare_commands or [])
        self.num_workers = int(num_workers)
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
        self.headline_column = headline_column(self.meta, explanation.headline_column, self.dataset_path)
        self.template_set: TemplateSet = usable_templates(
            load_templates(prompts.templates),
            sequential_yes_no=prompts.sequential_yes_no,
            headline=self.headline_column,
            tasks=[*self.tasks, *self.eval_tasks],
            where=self.dataset_path,
        )
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
        self._token_facts = token_facts(self.tokenizer, self.template_set, prompts)

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
        hp = self.prompts
        kinds = {task: sorted({t.kind or "next" for t in self.template_set.group(task)}) for task in TASKS}
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
            "template_kinds": kinds,
            "mask_history": bool(self.evaluation.mask_history),
            **self._token_facts,
        }

    # ----------------------------------------------------------------- setup
    def prepare_data(self) -> None:
        """Datasets come from ``mmrec data prepare``; only check they exist."""
        read_meta(self.dataset_path)

    def setup(self, stage: str | None = None) -> None:
        if self.task_data is not None:
            return
        hp = self.prompts
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
        numbers = item_numbering(self.sequences, n_items, hp.item_indexing, self.seed)
        titles = None
        if any("item_title" in t.fields for t in self.template_set.templates) and "title" in self.data.items:
            titles = [None, *self.data.items["title"].tolist()]
        self.builder = PromptBuilder(
            self.tokenizer,
            self.template_set,
            numbers,
            visual_tokens=hp.visual_tokens,
            max_source_length=hp.max_source_length,
            max_target_length=hp.max_target_length,
            max_whole_words=hp.max_whole_words,
            item_titles=titles,
            max_title_tokens=hp.max_title_tokens,
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
            future_targets=self.training.future_targets,
        )
        self._check_lengths()

    def _explanations(self, item_index: dict[str, int]) -> ExplanationPairs:
        assert self.data is not None
        user_index = {u: i for i, u in enumerate(self.user_ids)}
        return pairs_from_interactions(
            self.data.interactions,
            user_index,
            item_index,
            self.explanation,
            self.headline_column,
            self.dataset_path,
        )

    def _check_lengths(self) -> None:
        """Fail now, not mid-epoch, when a choose prompt cannot fit ``max_source_length``."""
        if "direct" in set(self.tasks) | set(self.eval_tasks):
            d = self._require()
            n = max(self.train_candidates, self.direct.negatives + 1)
            check_choose_lengths(d, n, num_users=len(self.user_ids))

    def _require(self) -> TaskData:
        if self.task_data is None:
            self.setup()
        assert self.task_data is not None
        return self.task_data

    # ----------------------------------------------------------------- loaders
    def train_plan(self) -> list[tuple[str, int]]:
        """``[(task, user)]`` of one epoch: ``round(weight * eligible users)`` examples per task."""
        return train_plan(self._require(), self.tasks, self.task_weights, self.seed, self.dataset_path)

    def train_dataloader(self) -> DataLoader:
        d = self._require()
        ds = MixedTaskTrainSet(d, self.train_plan(), self.seed)
        return DataLoader(
            ds,
            batch_size=self.training.batch_size,
            sampler=EpochSampler(len(ds), self.seed),
            collate_fn=self._collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def eval_sets(self, stage: Literal["valid", "test"]) -> list[EvalSet]:
        """The evaluation sets of ``stage``, one per (task, template split[, direct kind])."""
        if stage in self._eval_sets:
            return self._eval_sets[stage]
        d = self._require()
        assert self.splits is not None
        ev = self.evaluation
        sets = build_eval_sets(
            d,
            self.eval_tasks,
            stage,
            self.splits.valid if stage == "valid" else self.splits.test,
            self.val_splits if stage == "valid" else self.test_splits,
            limit=ev.val_max_users if stage == "valid" else ev.test_max_users,
            mask_history=bool(ev.mask_history),
            direct_candidates=self._direct_candidates,
            seed=self.seed,
        )
        self._eval_sets[stage] = sets
        return sets

    def _direct_candidates(self) -> dict[str, DirectCandidates]:
        assert self.splits is not None
        seed, negatives = self.seed, self.direct.negatives
        path = candidates_path(self.derived_dir, self.meta.get("fingerprint", "nofp"), seed, negatives)
        return load_or_draw_candidates(
            path,
            {
                "valid": (self.splits.valid.users, [t[0] for t in self.splits.valid.targets]),
                "test": (self.splits.test.users, [t[0] for t in self.splits.test.targets]),
            },
            self.sequences,
            len(self.item_ids),
            negatives,
            seed,
            str(self.meta.get("fingerprint", "nofp")),
        )

    def _loaders(self, stage: Literal["valid", "test"]) -> list[DataLoader]:
        loaders = []
        for s in self.eval_sets(stage):
            bs = self.evaluation.batch_size
            if s.kind == "yes_no":  # one prompt per candidate
                bs = max(1, bs // 4)
            loaders.append(
                DataLoader(
                    s,
                    batch_size=bs,
                    shuffle=False,
                    collate_fn=self._collate,
                    num_workers=self.num_workers,
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
            (u, s, s[-1], sorted(set(s)) if self.evaluation.mask_history else [])
            for u, s in enumerate(self.sequences)
        ]
        ds = EvalSet(
            d, "sequential", "seen", "", self.template_set.group("sequential", "seen", "")[:1], rows, 0
        )
        return DataLoader(
            ds, batch_size=self.evaluation.batch_size, collate_fn=PredictCollator(self._collate)
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
            predict_set = cast(EvalSet, self.predict_dataloader().dataset)
            self._serving_templates = list(predict_set.templates)  # predict's prompt
        rows: list[tuple[int, list[int], int, list[int]]] = [
            (int(u), list(h), int(h[-1]) if len(h) else 1, []) for h, u in zip(histories, users)
        ]
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

    def item_popularity(self) -> torch.Tensor:
        """``(N+1,)`` training interactions per item (validation and test interactions not counted)."""
        self._require()
        assert self.splits is not None
        counts = np.zeros(len(self.item_ids) + 1, dtype=np.float32)
        for seq in self.splits.train:
            np.add.at(counts, np.asarray(seq, dtype=np.int64), 1.0)
        return torch.from_numpy(counts)

    @property
    def protocol(self) -> EvalProtocol:
        """The protocol of the sequential evaluation (:mod:`mmrec.eval_protocol`): leave-one-out by time over
        the whole catalogue, history masked as ``evaluation.mask_history`` says. (The direct task ranks
        1 + ``direct.negatives`` sampled candidates; its metrics are named ``direct/...``.)"""
        return EvalProtocol(
            split="leave-one-out", mask_history=bool(self.evaluation.mask_history), ranking="full"
        )

    def model_inputs(self) -> ModelInputs:
        """Lazy model inputs (:class:`~mmrec.protocols.ModelInputs`): ``features`` (frozen tables),
        ``item_sequences`` (item target token ids, the decoding trie), ``item_popularity`` (training counts),
        and the standard ``train_interactions`` / ``train_sequences`` of the training split (MostPop and the
        other baselines are built from them on the same split)."""
        return ModelInputs(
            {
                "features": self.item_feature_tables,
                "item_sequences": self.item_target_sequences,
                "item_popularity": self.item_popularity,
                "train_interactions": self.train_interactions,
                "train_sequences": lambda: [list(s) for s in self._require_splits().train],
            }
        )

    def train_interactions(self) -> sp.csr_matrix:
        """``(U, N+1)`` CSR matrix of training-split interaction counts (column 0, padding, is empty)."""
        return interaction_matrix(self._require_splits().train, len(self.user_ids), len(self.item_ids))

    def _require_splits(self) -> SplitResult:
        self._require()
        assert self.splits is not None
        return self.splits
