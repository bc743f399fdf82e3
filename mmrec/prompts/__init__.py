"""Personalized prompts for VIP5-style models: templates as data and the prompt builder.

Example:
    >>> from mmrec.prompts import load_templates
    >>> ts = load_templates()  # the packaged VIP5 templates
    >>> sorted(ts.describe())
    ['direct', 'explanation', 'sequential']
"""

from mmrec.prompts.builder import EncodedPrompt, PromptBuilder, tokenizer_fingerprint
from mmrec.prompts.templates import (
    DEFAULT_TEMPLATES,
    TASKS,
    TEMPLATE_SPLITS,
    Template,
    TemplateError,
    TemplateSet,
    default_templates_path,
    load_templates,
    parse_templates,
    require_templates,
)

__all__ = [
    "DEFAULT_TEMPLATES",
    "TASKS",
    "TEMPLATE_SPLITS",
    "EncodedPrompt",
    "PromptBuilder",
    "Template",
    "TemplateError",
    "TemplateSet",
    "default_templates_path",
    "load_templates",
    "parse_templates",
    "require_templates",
    "tokenizer_fingerprint",
]
