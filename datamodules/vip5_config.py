"""Grouped, typed settings of the VIP5 DataModule (read from YAML by jsonargparse / LightningCLI).

- :class:`PromptConfig` (``prompts:``): templates, item identifiers, visual tokens and length budgets;
- :class:`TrainingConfig` (``training:``): what one epoch of training examples holds;
- :class:`DirectConfig` (``direct:``): candidates of the direct (yes/no, choose) task;
- :class:`ExplanationConfig` (``explanation:``): where explanations, headlines and feature words come from;
- :class:`EvaluationConfig` (``evaluation:``): which tasks / template splits / users are evaluated, and the
  protocol (history masking).

In YAML::

    data:
      class_path: mmrec.datamodules.vip5.VIP5DataModule
      init_args:
        dataset: assets/demo
        tokenizer: minilm
        stores: {image: cache/demo/image}
        tasks: [sequential]
        prompts: {visual_tokens: 2, max_history: 5, max_source_length: 64, sequential_yes_no: false}
        training: {batch_size: 16, future_targets: 3}
        evaluation: {val_max_users: 300, mask_history: true}

Example:
    >>> PromptConfig(visual_tokens=2).visual_tokens
    2
    >>> EvaluationConfig(val_template_splits=["test"])
    Traceback (most recent call last):
    ...
    ValueError: evaluation.val_template_splits must be a subset of ['seen', 'unseen'], got ['test'].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TEMPLATE_SPLIT_NAMES = ("seen", "unseen")
TaskName = Literal["sequential", "direct", "explanation"]


def _at_least(group: str, name: str, value: int | None, low: int, hint: str = "") -> None:
    if value is not None and value < low:
        raise ValueError(f"{group}.{name} must be >= {low}, got {value}" + (f"; {hint}." if hint else "."))


@dataclass(frozen=True)
class PromptConfig:
    """How prompts are written and tokenised.

    Args:
        templates: template file (YAML / JSON); ``None`` = the packaged 29 VIP5 templates.
        item_indexing: ``random`` (default) or ``sequential`` (P5's indexing; leaks, warned).
        visual_tokens: placeholders ``k`` after every item mention (0 disables visual tokens).
        max_history: most recent items in a sequential prompt.
        max_source_length: prompt length budget in tokens (history is cut from the oldest item).
        max_target_length: target length in tokens (explanations are truncated).
        max_whole_words: whole-word index range (the model's whole-word table size).
        max_title_tokens: item titles written by ``{item_title}`` are cut to this many tokens.
        sequential_yes_no: also train the sequential yes/no templates (A-7, A-8: "will the user buy this
            item next?"); the encoder-only ranking head needs ``false``.
    """

    templates: str | None = None
    item_indexing: Literal["random", "sequential"] = "random"
    visual_tokens: int = 2
    max_history: int = 20
    max_source_length: int = 512
    max_target_length: int = 64
    max_whole_words: int = 512
    max_title_tokens: int = 16
    sequential_yes_no: bool = True

    def __post_init__(self) -> None:
        if self.item_indexing not in ("random", "sequential"):
            raise ValueError(f"prompts.item_indexing must be 'random' or 'sequential', got {self.item_indexing!r}.")
        _at_least("prompts", "visual_tokens", self.visual_tokens, 0)
        _at_least("prompts", "max_history", self.max_history, 1)
        _at_least("prompts", "max_source_length", self.max_source_length, 16, "64 fits a short history")
        _at_least("prompts", "max_target_length", self.max_target_length, 2, "one token + eos")
        _at_least("prompts", "max_whole_words", self.max_whole_words, 1)
        _at_least("prompts", "max_title_tokens", self.max_title_tokens, 1)


@dataclass(frozen=True)
class TrainingConfig:
    """One training epoch.

    Args:
        batch_size: training prompts per step.
        task_weights: training examples per eligible user (sequential, direct) or per training user with a
            review (explanation) per epoch, per task; default 1 each (fractions draw a seeded subset).
        future_targets: sequential examples also carry the next ``future_targets`` training items after
            the target (``future_items``), for models with a dense all-action loss; 0 = none.
    """

    batch_size: int = 16
    task_weights: dict[str, float] | None = None
    future_targets: int = 0

    def __post_init__(self) -> None:
        _at_least("training", "batch_size", self.batch_size, 1)
        _at_least("training", "future_targets", self.future_targets, 0)
        if self.task_weights is not None and min(self.task_weights.values(), default=0) < 0:
            raise ValueError(f"training.task_weights must be >= 0, got {self.task_weights}.")


@dataclass(frozen=True)
class DirectConfig:
    """The direct task's candidates.

    Args:
        negatives: sampled negatives per user for evaluation (1 positive + ``negatives``), drawn once per
            (dataset, seed, negatives) and saved.
        train_candidates: candidates listed in training choose-prompts (default ``negatives + 1``).
    """

    negatives: int = 99
    train_candidates: int | None = None

    def __post_init__(self) -> None:
        _at_least("direct", "negatives", self.negatives, 1)
        _at_least("direct", "train_candidates", self.train_candidates, 2, "the positive and one negative")


@dataclass(frozen=True)
class ExplanationConfig:
    """Explanation targets and the fields of their prompts.

    Explanation pairs follow the leave-one-out split by time: a user's pair for their test (validation)
    interaction is a test (validation) pair, every earlier pair a training pair, so no test pair is ever
    trained on and no explanation from the future is used.

    Args:
        column: interaction column with the explanation text (default: ``explanation`` when present,
            else ``review``).
        mode: ``first_sentence`` (first sentence of >= 3 words) or ``full``.
        headline_column: interaction column with the review headline for ``{headline}`` (default:
            ``summary`` / ``headline`` when present; templates needing it are dropped without one).
        feature_column: interaction column with a feature word for ``{feature}`` (default: derived from the
            explanation: its rarest word of >= 4 letters over the training explanations).
    """

    column: str | None = None
    mode: Literal["first_sentence", "full"] = "first_sentence"
    headline_column: str | None = None
    feature_column: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("first_sentence", "full"):
            raise ValueError(f"explanation.mode must be 'first_sentence' or 'full', got {self.mode!r}.")


@dataclass(frozen=True)
class EvaluationConfig:
    """What is evaluated, and how.

    Args:
        tasks: tasks evaluated (default: the training tasks).
        batch_size: evaluation examples per step (a yes/no direct example is ``negatives+1`` prompts).
        val_template_splits: template splits used for validation (model selection); ``[seen]`` by default.
        test_template_splits: template splits reported on test (``[seen, unseen]`` by default).
        val_max_users: evaluate at most this many (seeded random) users / pairs per validation loader.
        test_max_users: the same for test (``None`` = all; set only to subsample, and report it).
        mask_history: sequential evaluation never ranks the user's history items (full ranking and
            constrained generation alike); ``false`` ranks them as RecBole does for sequential models.
    """

    tasks: list[TaskName] | None = None
    batch_size: int = 16
    val_template_splits: list[str] | None = None
    test_template_splits: list[str] | None = None
    val_max_users: int | None = None
    test_max_users: int | None = None
    mask_history: bool = True

    def __post_init__(self) -> None:
        _at_least("evaluation", "batch_size", self.batch_size, 1)
        _at_least("evaluation", "val_max_users", self.val_max_users, 1)
        _at_least("evaluation", "test_max_users", self.test_max_users, 1)
        for name in ("val_template_splits", "test_template_splits"):
            value = getattr(self, name)
            if value is not None and (not value or set(value) - set(TEMPLATE_SPLIT_NAMES)):
                raise ValueError(
                    f"evaluation.{name} must be a subset of {list(TEMPLATE_SPLIT_NAMES)}, got {value}."
                )


__all__ = [
    "DirectConfig",
    "EvaluationConfig",
    "ExplanationConfig",
    "PromptConfig",
    "TaskName",
    "TrainingConfig",
]
