"""Which VIP5 templates a dataset can fill: the review headline column, the template set without the
templates that need a field the dataset lacks (or that the configuration switches off), and the prompt
builder's token facts that models need before the data is set up."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmrec.data.canonical import DatasetError
from mmrec.datamodules.vip5_config import PromptConfig
from mmrec.prompts import PromptBuilder, Template, TemplateSet

# the VIP5 DataModule's logger: these messages keep the name they had before this module existed
log = logging.getLogger("mmrec.datamodules.vip5")


def headline_column(meta: Mapping[str, Any], wanted: str | None, where: Path) -> str | None:
    """The interactions column holding review headlines.

    Args:
        meta: the dataset's ``dataset.json`` (``columns.interactions`` lists the columns).
        wanted: the configured column (``explanation.headline_column``); ``None`` = ``summary`` or
            ``headline`` when present.
        where: the dataset folder, named in the error.

    Returns:
        The column, or ``None`` when the dataset has none.

    Raises:
        DatasetError: ``wanted`` is not an interactions column.

    Example:
        >>> headline_column({"columns": {"interactions": ["user_id", "summary"]}}, None, Path("d"))
        'summary'
    """
    cols = list((meta.get("columns") or {}).get("interactions") or [])
    if wanted is not None:
        if wanted not in cols:
            raise DatasetError(
                f"explanation.headline_column {wanted!r} is not an interactions column of "
                f"{where} ({cols}); fix it or leave it unset."
            )
        return wanted
    return next((c for c in ("summary", "headline") if c in cols), None)


def usable_templates(
    ts: TemplateSet,
    *,
    sequential_yes_no: bool,
    headline: str | None,
    tasks: Sequence[str],
    where: Path,
) -> TemplateSet:
    """Drop the templates this dataset / configuration cannot fill, saying which and why.

    Args:
        ts: all templates.
        sequential_yes_no: keep the sequential yes/no templates (``prompts.sequential_yes_no``).
        headline: the headline column (:func:`headline_column`); ``None`` drops the templates naming
            ``{headline}``.
        tasks: the trained and evaluated tasks (the drop is only worth a warning when explanation is one).
        where: the dataset folder, named in the warning.
    """
    dropped: list[str] = []

    def keep(t: Template) -> bool:
        if t.task == "sequential" and t.kind == "yes_no" and not sequential_yes_no:
            return False  # switched off on purpose (prompts.sequential_yes_no: false)
        if "headline" in t.fields and headline is None:
            dropped.append(t.id)
            return False
        return True

    out = ts.select(keep)
    if dropped and "explanation" in set(tasks):
        log.warning(
            "templates %s need a review headline; %s has none (no summary / headline column): dropped.",
            dropped,
            where,
        )
    return out


def token_facts(tokenizer: Any, templates: TemplateSet, prompts: PromptConfig) -> dict[str, Any]:
    """The prompt builder's token-level facts (pad, eos, visual placeholder and answer token ids), from a
    probe builder over one item: the catalog needs them before setup.

    Args:
        tokenizer: the backbone's tokenizer.
        templates: the usable templates.
        prompts: visual tokens and length budgets (:class:`~mmrec.datamodules.vip5_config.PromptConfig`).
    """
    probe = PromptBuilder(
        tokenizer,
        templates,
        [0],
        visual_tokens=prompts.visual_tokens,
        max_source_length=prompts.max_source_length,
        max_target_length=prompts.max_target_length,
        max_whole_words=prompts.max_whole_words,
    )
    return {
        "pad_token_id": probe.pad_id,
        "eos_token_id": probe.eos_id,
        "placeholder_token_id": probe.placeholder_id,
        "answer_token_ids": list(probe.answer_token_ids()),
    }
