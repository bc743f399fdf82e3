"""Turn templates + ids into token ids, whole-word ids and visual-placeholder positions.

Prompts are assembled from pre-tokenised pieces (template text, user / item identifiers, separators), so
building one costs list concatenations, not a tokenizer call, and the builder knows exactly where every
item mention and its placeholders are:

- ``input_ids``: prefix specials (e.g. BERT's ``[CLS]``) + pieces + suffix specials (T5's ``</s>``).
- ``whole_word_ids``: P5's whole-word indices: words of the prompt are numbered 1, 2, ... in order; every
  sub-word token of a word (and every token of a user / item identifier, which some tokenizers split at
  ``_`` or digits) shares its word's number; the visual placeholders of an item share its identifier's
  number; special tokens are 0. Clamped at ``max_whole_words - 1``.
- ``feature_items`` / ``feature_slots``: at the ``k`` placeholder positions after an item mention, the
  item's index (1..N) and the slot ``0..k-1``; 0 elsewhere. The model replaces those input embeddings
  with the item's projected visual tokens in one batched gather.

Example:
    >>> from transformers import AutoTokenizer  # doctest: +SKIP
    >>> b = PromptBuilder(AutoTokenizer.from_pretrained("t5-small"), load_templates(), [0, 7, 3])  # doctest: +SKIP
    >>> enc = b.encode_source(b.templates.get("A-1"), user=0, history=[1, 2])  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mmrec.prompts.templates import Template, TemplateSet

#: tokens tried, in order, as the visual placeholder (its embedding is always replaced by the model)
PLACEHOLDER_CANDIDATES: tuple[str, ...] = ("<extra_id_0>", "[unused0]", "<unk>", "[UNK]")


@dataclass
class EncodedPrompt:
    """One encoded source prompt (plain lists; collated into tensors by the DataModule).

    Attributes:
        input_ids: ``(L,)`` token ids including special tokens.
        whole_word_ids: ``(L,)`` whole-word indices (0 for special tokens).
        feature_items: ``(L,)`` item index at visual placeholder positions, else 0.
        feature_slots: ``(L,)`` placeholder slot ``0..k-1`` at those positions, else 0.
        mention_items: ``(L,)`` item index at every position of an item mention (its identifier or title
            tokens and its placeholders), else 0.
        num_history: how many history items were kept (after truncation to the length budget).
    """

    input_ids: list[int] = field(default_factory=list)
    whole_word_ids: list[int] = field(default_factory=list)
    feature_items: list[int] = field(default_factory=list)
    feature_slots: list[int] = field(default_factory=list)
    mention_items: list[int] = field(default_factory=list)
    num_history: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class _Piece:
    """Tokens of a piece of text with local word numbers (0-based within the piece)."""

    ids: tuple[int, ...]
    words: tuple[int, ...]
    num_words: int


def _special_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """Special tokens the tokenizer puts before / after a single sequence."""
    plain = tokenizer("hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain) :])
    return [], list(full[len(plain) :])


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Stable hash of a tokenizer's vocabulary and special tokens (to check data and model agree).

    Example:
        >>> len(tokenizer_fingerprint(__import__("transformers").AutoTokenizer.from_pretrained(  # doctest: +SKIP
        ...     "t5-small")))
        16
    """
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    h = hashlib.sha256()
    for tok, idx in vocab:
        h.update(f"{idx}\t{tok}\n".encode())
    h.update(repr(_special_affixes(tokenizer)).encode())
    return h.hexdigest()[:16]


class PromptBuilder:
    """Encodes VIP5 prompts for one tokenizer and one item indexing.

    Args:
        tokenizer: a *fast* transformers tokenizer (the backbone's).
        templates: the template set.
        item_numbers: ``item_numbers[i]`` = the identifier number of item index ``i`` (1..N; entry 0 is
            padding and unused), from random or sequential indexing.
        visual_tokens: placeholders ``k`` after each item mention (0 = no visual tokens).
        max_source_length: longest prompt in tokens (history is cut from the oldest item to fit).
        max_target_length: longest target in tokens (explanations are truncated), eos included.
        max_whole_words: size of the whole-word embedding table (indices are clamped below it).
        item_titles: ``item_titles[i]`` = the title of item index ``i`` (entry 0 unused) for templates
            with ``{item_title}``; ``None`` / empty titles fall back to the item's identifier.
        max_title_tokens: titles are cut to this many tokens.

    Raises:
        ValueError: slow tokenizer, or lengths too small.
    """

    def __init__(
        self,
        tokenizer: Any,
        templates: TemplateSet,
        item_numbers: Sequence[int],
        visual_tokens: int = 2,
        max_source_length: int = 512,
        max_target_length: int = 64,
        max_whole_words: int = 512,
        item_titles: Sequence[str | None] | None = None,
        max_title_tokens: int = 16,
    ) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"{type(tokenizer).__name__} is a slow tokenizer; VIP5 prompts need a fast (Rust) tokenizer "
                "for word boundaries: load it with AutoTokenizer.from_pretrained(..., use_fast=True)."
            )
        if visual_tokens < 0:
            raise ValueError(f"visual_tokens must be >= 0, got {visual_tokens}.")
        if max_target_length < 2:
            raise ValueError(f"max_target_length must be >= 2 (one token + eos), got {max_target_length}.")
        self.tokenizer = tokenizer
        self.templates = templates
        self.visual_tokens = visual_tokens
        self.max_source_length = max_source_length
        self.max_target_length = max_target_length
        self.max_whole_words = max_whole_words
        self.prefix, self.suffix = _special_affixes(tokenizer)
        eos = self.suffix[-1] if self.suffix else tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the tokenizer has neither an end-of-sequence token nor a suffix special token.")
        self.eos_id = int(eos)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        unk = tokenizer.unk_token_id
        self.placeholder_id = next(
            (
                int(i)
                for t in PLACEHOLDER_CANDIDATES
                if (i := tokenizer.convert_tokens_to_ids(t)) is not None
                and (i != unk or t in ("<unk>", "[UNK]"))
            ),
            self.pad_id,
        )
        budget = max_source_length - len(self.prefix) - len(self.suffix)
        if budget < 8:
            raise ValueError(f"max_source_length={max_source_length} leaves no room for a prompt; use >= 32.")
        self._budget = budget
        self.item_numbers = list(item_numbers)
        texts = [templates.item_format.format(id=n) for n in self.item_numbers[1:]]
        self._items: list[_Piece] = [_Piece((), (), 0), *self._tokenize_many(texts)]
        if max_title_tokens < 1:
            raise ValueError(f"max_title_tokens must be >= 1, got {max_title_tokens}.")
        self._titles: list[_Piece] = list(self._items)
        if item_titles is not None:
            if len(item_titles) != len(self.item_numbers):
                raise ValueError(
                    f"item_titles has {len(item_titles)} entries, expected {len(self.item_numbers)} (entry 0 unused)."
                )
            idx = [i for i in range(1, len(item_titles)) if isinstance(item_titles[i], str) and item_titles[i].strip()]
            for i, piece in zip(idx, self._tokenize_many([" ".join(str(item_titles[i]).split()) for i in idx])):
                n = min(len(piece.ids), max_title_tokens)
                words = piece.words[:n]
                self._titles[i] = _Piece(piece.ids[:n], words, (max(words) + 1) if words else 0)
        self._users: dict[int, _Piece] = {}
        self._small: dict[str, _Piece] = {}
        self._literals: dict[int, list[tuple[_Piece, str | None]]] = {}
        self._sep = self._text(templates.list_separator.strip()) if templates.list_separator.strip() else None

    # ------------------------------------------------------------------ pieces
    def _tokenize_many(self, texts: Sequence[str]) -> list[_Piece]:
        if not texts:
            return []
        enc = self.tokenizer(list(texts), add_special_tokens=False)
        out = []
        for i in range(len(texts)):
            ids = enc["input_ids"][i]
            words = [w if w is not None else 0 for w in enc.word_ids(i)]
            uniq = sorted(set(words))
            remap = {w: j for j, w in enumerate(uniq)}
            out.append(_Piece(tuple(ids), tuple(remap[w] for w in words), len(uniq)))
        return out

    def _text(self, text: str) -> _Piece:
        if text not in self._small:
            self._small[text] = self._tokenize_many([text])[0] if text else _Piece((), (), 0)
        return self._small[text]

    def _user(self, user: int) -> _Piece:
        if user not in self._users:
            self._users[user] = self._tokenize_many([self.templates.user_format.format(id=user + 1)])[0]
        return self._users[user]

    def _template_pieces(self, template: Template) -> list[tuple[_Piece, str | None]]:
        if template.index not in self._literals:
            pieces = []
            for literal, name, _, _ in string.Formatter().parse(template.source):
                pieces.append((self._text(literal.strip()), name))
            self._literals[template.index] = pieces
        return self._literals[template.index]

    def item_tokens(self, item: int) -> list[int]:
        """Token ids of item index ``item``'s identifier (no specials)."""
        return list(self._items[item].ids)

    def item_identifier(self, item: int) -> str:
        """The identifier text of item index ``item`` (e.g. ``"1234"``)."""
        return self.templates.item_format.format(id=self.item_numbers[item])

    def user_identifier(self, user: int) -> str:
        """The identifier text of user index ``user`` (e.g. ``"user_1"`` for index 0)."""
        return self.templates.user_format.format(id=user + 1)

    def _mention_len(self, item: int, title: bool = False) -> int:
        return len((self._titles if title else self._items)[item].ids) + self.visual_tokens

    # ------------------------------------------------------------------ encoding
    def encode_source(
        self,
        template: Template,
        *,
        user: int,
        history: Sequence[int] | None = None,
        item: int | None = None,
        candidates: Sequence[int] | None = None,
        rating: float | None = None,
        headline: str | None = None,
        feature: str | None = None,
    ) -> EncodedPrompt:
        """Encode the source of ``template`` for one example.

        Args:
            template: the template.
            user: user index (0-based; written as ``user_format`` with ``user + 1``).
            history: item indices, oldest first; the oldest are dropped to fit ``max_source_length``.
            item: the item of ``{item}`` (its identifier) and ``{item_title}`` (its title).
            candidates: the items of ``{candidates}``, in listing order.
            rating: the rating of ``{rating}`` (rounded to an integer).
            headline: the text of ``{headline}`` (a review's headline / summary).
            feature: the word(s) of ``{feature}``.

        Returns:
            The :class:`EncodedPrompt` (``len <= max_source_length``).

        Raises:
            ValueError: a required value is missing, or the prompt cannot fit even with one history item.
        """
        pieces = self._template_pieces(template)
        values: dict[str, Any] = {
            "user": user,
            "history": history,
            "item": item,
            "item_title": item,
            "candidates": candidates,
            "headline": headline,
            "feature": feature,
        }
        for _, name in pieces:
            if name is not None and name != "rating" and values.get(name) is None:
                arg = "item" if name == "item_title" else name
                raise ValueError(f"template {template.id} needs {{{name}}}; pass {arg}=...")
        texts = {
            "rating": self._text(str(round(float(rating))) if rating is not None else ""),
            "headline": self._free_text(headline),
            "feature": self._free_text(feature),
        }
        sep_len = len(self._sep.ids) if self._sep else 0
        fixed = sum(len(p.ids) for p, _ in pieces)
        for _, name in pieces:
            if name == "user":
                fixed += len(self._user(user).ids)
            elif name in texts:
                fixed += len(texts[name].ids)
            elif name in ("item", "item_title"):
                fixed += self._mention_len(int(item), title=name == "item_title")  # type: ignore[arg-type]
            elif name == "candidates":
                assert candidates is not None
                fixed += sum(self._mention_len(int(c)) for c in candidates) + sep_len * max(
                    len(candidates) - 1, 0
                )
        kept: list[int] = []
        if history is not None and "history" in {n for _, n in pieces}:
            room = self._budget - fixed
            for h in reversed(list(history)):
                need = self._mention_len(int(h)) + (sep_len if kept else 0)
                if need > room:
                    break
                kept.append(int(h))
                room -= need
            kept.reverse()
            if history and not kept:
                raise ValueError(
                    f"template {template.id}: no history item fits in max_source_length="
                    f"{self.max_source_length}; increase max_source_length."
                )
        elif fixed > self._budget:
            raise ValueError(
                f"template {template.id}: the prompt needs {fixed + len(self.prefix) + len(self.suffix)} tokens "
                f"but max_source_length={self.max_source_length}; increase max_source_length (or use fewer "
                "candidates / negatives)."
            )
        out = EncodedPrompt(num_history=len(kept))
        for t in self.prefix:
            self._push(out, [t], [0])
        word = 1
        for literal, name in pieces:
            word = self._push_piece(out, literal, word)
            if name == "user":
                word = self._push_id(out, self._user(user), word)
            elif name in texts:
                word = self._push_piece(out, texts[name], word)
            elif name in ("item", "item_title"):
                word = self._push_mention(out, int(item), word, title=name == "item_title")  # type: ignore[arg-type]
            elif name in ("history", "candidates"):
                seq = kept if name == "history" else [int(c) for c in candidates or ()]
                for j, it in enumerate(seq):
                    if j and self._sep is not None:
                        word = self._push_piece(out, self._sep, word)
                    word = self._push_mention(out, it, word)
        for t in self.suffix:
            self._push(out, [t], [0])
        return out

    def _free_text(self, text: str | None) -> _Piece:
        """A per-example text (headline, feature word), not cached, cut to ``max_title_tokens``-like size."""
        if not text:
            return _Piece((), (), 0)
        piece = self._tokenize_many([" ".join(str(text).split())])[0]
        n = min(len(piece.ids), max(8, self.max_target_length))
        words = piece.words[:n]
        return _Piece(piece.ids[:n], words, (max(words) + 1) if words else 0)

    def _clamp(self, w: int) -> int:
        return min(w, self.max_whole_words - 1)

    def _push(self, out: EncodedPrompt, ids: Sequence[int], words: Sequence[int], item: int = 0) -> None:
        out.input_ids.extend(ids)
        out.whole_word_ids.extend(self._clamp(w) for w in words)
        out.feature_items.extend([0] * len(ids))
        out.feature_slots.extend([0] * len(ids))
        out.mention_items.extend([item] * len(ids))

    def _push_piece(self, out: EncodedPrompt, piece: _Piece, word: int) -> int:
        if piece.ids:
            self._push(out, piece.ids, [word + w for w in piece.words])
        return word + piece.num_words

    def _push_id(self, out: EncodedPrompt, piece: _Piece, word: int) -> int:
        self._push(out, piece.ids, [word] * len(piece.ids))
        return word + 1

    def _push_mention(self, out: EncodedPrompt, item: int, word: int, title: bool = False) -> int:
        if title:  # the title's words keep their own numbers; its visual tokens share the last word's
            piece = self._titles[item]
            self._push(out, piece.ids, [word + w for w in piece.words], item=item)
            word += max(piece.num_words, 1) - 1
        else:
            piece = self._items[item]
            self._push(out, piece.ids, [word] * len(piece.ids), item=item)
        k = self.visual_tokens
        if k:
            w = self._clamp(word)
            out.input_ids.extend([self.placeholder_id] * k)
            out.whole_word_ids.extend([w] * k)
            out.feature_items.extend([item] * k)
            out.feature_slots.extend(range(k))
            out.mention_items.extend([item] * k)
        return word + 1

    def encode_target(
        self,
        template: Template,
        *,
        target_item: int | None = None,
        answer: bool | None = None,
        explanation: str | None = None,
        rating: float | None = None,
    ) -> list[int]:
        """Target token ids (ending with eos) of ``template`` for one example.

        Args:
            template: the template.
            target_item: item index for ``{target}``.
            answer: True / False for ``{answer}`` (the ``answers`` words of the template file).
            explanation: the reference text for ``{explanation}`` (truncated to ``max_target_length``).
            rating: the rating for ``{rating}`` (C-7, C-8: ``"{rating} , {explanation}"``).
        """
        ids: list[int] = []
        for literal, slot, _, _ in string.Formatter().parse(template.target):
            if literal.strip():
                ids.extend(self._text(literal.strip()).ids)
            if slot == "target":
                if target_item is None:
                    raise ValueError(f"template {template.id} needs target_item.")
                ids.extend(self.item_tokens(int(target_item)))
            elif slot == "answer":
                if answer is None:
                    raise ValueError(f"template {template.id} needs answer=True/False.")
                ids.extend(self._text(self.templates.answers["positive" if answer else "negative"]).ids)
            elif slot == "rating":
                if rating is None:
                    raise ValueError(f"template {template.id} needs rating.")
                ids.extend(self._text(str(round(float(rating)))).ids)
            elif slot == "explanation":
                if explanation is None:
                    raise ValueError(f"template {template.id} needs explanation text.")
                ids.extend(self.tokenizer(explanation, add_special_tokens=False)["input_ids"])
        return [*list(ids[: self.max_target_length - 1]), self.eos_id]

    def target_text(self, template: Template, *, explanation: str, rating: float | None = None) -> str:
        """The reference text of an explanation template (``"4 , <explanation>"`` for C-7 / C-8)."""
        if "rating" in template.target_fields:
            return f"{round(float(rating or 0))} , {explanation}"
        return explanation

    def answer_token_ids(self) -> tuple[int, int]:
        """First token of the positive and negative answer words (for yes-probability scoring)."""
        pos = self._text(self.templates.answers["positive"]).ids
        neg = self._text(self.templates.answers["negative"]).ids
        if not pos or not neg or pos[0] == neg[0]:
            raise ValueError("the answer words must start with different tokens.")
        return int(pos[0]), int(neg[0])

    def item_target_sequences(self) -> list[list[int]]:
        """``[i]`` = target token ids (with eos) of item index ``i`` for ``i`` in 1..N (entry 0 empty)."""
        return [[]] + [[*list(p.ids), self.eos_id] for p in self._items[1:]]
