"""VIP5 prompt templates (data) and the prompt builder: placeholders, whole words, truncation, indexing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_vip5_support import tiny_t5_dir

from mmrec.datamodules.vip5_tasks import item_numbering
from mmrec.prompts import (
    TASKS,
    PromptBuilder,
    TemplateError,
    default_templates_path,
    load_templates,
    parse_templates,
    tokenizer_fingerprint,
)
from mmrec.prompts.pretrained import MissingBackboneError, load_tokenizer, resolve_pretrained


@pytest.fixture(scope="module")
def t5_tok(tmp_path_factory: pytest.TempPathFactory):
    return load_tokenizer(tiny_t5_dir(tmp_path_factory.mktemp("tok")))


def test_packaged_templates_are_vip5s_29_with_the_last_of_each_family_held_out() -> None:
    ts = load_templates()
    assert default_templates_path().is_file() and default_templates_path().suffix == ".yaml"
    ids = [t.id for t in ts.templates]
    expected = [f"A-{i}" for i in range(1, 10)] + [f"B-{i}" for i in range(1, 9)] + [f"C-{i}" for i in range(1, 13)]
    assert ids == expected and len(ids) == 29
    assert [t.id for t in ts.templates if t.split == "unseen"] == ["A-9", "B-8", "C-12"]
    for task in TASKS:
        assert ts.group(task, "seen") and ts.group(task, "unseen"), task
    assert {t.kind for t in ts.group("direct")} == {"yes_no", "choose"}
    assert [t.id for t in ts.group("sequential", kind="yes_no")] == ["A-7", "A-8"]
    assert [t.id for t in ts.group("direct", kind="yes_no")] == ["B-1", "B-2", "B-3", "B-4"]
    assert [t.id for t in ts.templates if t.target == "{rating} , {explanation}"] == ["C-7", "C-8"]
    assert [t.index for t in ts.templates] == list(range(len(ts.templates)))


def test_unseen_templates_produce_other_token_sequences_than_every_seen_one(t5_tok) -> None:
    ts = load_templates()
    b = PromptBuilder(t5_tok, ts, [0, 17, 3, 250, 42], visual_tokens=2, max_source_length=256,
                      item_titles=[None, "red shirt", "blue dress", "green hat", "black bag"])  # fmt: skip
    values = {"user": 2, "history": [1, 2, 3], "item": 4, "candidates": [1, 2, 3, 4], "rating": 4.0,
              "headline": "so comfy", "feature": "fabric"}  # fmt: skip
    for unseen in ts.templates:
        if unseen.split != "unseen":
            continue
        kw = {f: values[f if f != "item_title" else "item"] for f in unseen.fields}
        ids = b.encode_source(unseen, **{("item" if k == "item_title" else k): v for k, v in kw.items()}).input_ids
        for seen in ts.group(unseen.task, "seen", unseen.kind if unseen.task != "explanation" else None):
            skw = {("item" if f == "item_title" else f): values[f if f != "item_title" else "item"]
                   for f in seen.fields}  # fmt: skip
            assert b.encode_source(seen, **skw).input_ids != ids, (unseen.id, seen.id)


def test_item_titles_headlines_features_and_rating_targets(t5_tok) -> None:
    ts = load_templates()
    b = PromptBuilder(t5_tok, ts, [0, 7, 8], visual_tokens=2, max_source_length=128,
                      item_titles=[None, "great soft fabric for the colour okay", None], max_title_tokens=3)  # fmt: skip
    enc = b.encode_source(ts.get("C-1"), user=0, item=1)  # "... about this product : {item_title}"
    title = t5_tok("great soft fabric", add_special_tokens=False)["input_ids"][:3]
    first = enc.feature_items.index(1)
    assert enc.input_ids[first - 3 : first] == title  # cut to max_title_tokens, then the visual tokens
    assert [m for m in enc.mention_items if m] == [1] * 5  # 3 title tokens + 2 placeholders
    assert b.encode_source(ts.get("C-1"), user=0, item=2).input_ids != b.encode_source(
        ts.get("C-1"), user=0, item=1
    ).input_ids  # no title: the identifier stands in
    enc2 = b.encode_source(ts.get("C-2"), user=0, item=1, headline="very warm", feature=None)
    warm = t5_tok("very warm", add_special_tokens=False)["input_ids"]
    assert any(enc2.input_ids[i : i + len(warm)] == warm for i in range(len(enc2.input_ids)))
    with pytest.raises(ValueError, match="headline"):
        b.encode_source(ts.get("C-2"), user=0, item=1)
    target = b.encode_target(ts.get("C-7"), explanation="nice fit", rating=4.4)
    assert target == t5_tok("4 , nice fit", add_special_tokens=False)["input_ids"] + [b.eos_id]
    assert b.target_text(ts.get("C-7"), explanation="nice fit", rating=4.4) == "4 , nice fit"
    assert b.target_text(ts.get("C-1"), explanation="nice fit", rating=4.4) == "nice fit"
    seq_yes_no = b.encode_source(ts.get("A-7"), user=0, history=[1], item=2)
    assert [i for i in seq_yes_no.feature_items if i] == [1, 1, 2, 2]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ({"id": "X", "source": "hi {user} {history} {bogus}", "target": "{target}"}, "bogus"),
        ({"id": "X", "source": "hi {user}", "target": "{target}"}, "{history}"),
        ({"id": "X", "source": "{history}", "target": "item {target}"}, "must be one of"),
        ({"id": "X", "kind": "choose", "source": "{history}", "target": "{target}"}, "take kind"),
        ({"id": "X", "kind": "yes_no", "source": "{history}", "target": "{answer}"}, "one of"),
        ({"id": "X", "source": "{history}", "target": "{target}", "split": "maybe"}, "split"),
        ({"source": "{history}", "target": "{target}"}, "id"),
    ],
)
def test_bad_templates_are_rejected_with_the_fix(template: dict, message: str) -> None:
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")):
        parse_templates({"tasks": {"sequential": [template]}})


def test_templates_from_json_file(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(
        '{"tasks": {"sequential": [{"id": "S", "source": "{user} : {history}", "target": "{target}"}]}}'
    )
    ts = load_templates(path)
    assert ts.get("S").fields == ("user", "history")
    with pytest.raises(TemplateError, match="does not exist"):
        load_templates(tmp_path / "missing.yaml")


def test_placeholders_follow_each_item_mention(t5_tok) -> None:
    ts = load_templates()
    numbers = [0, 17, 3, 250, 42]
    b = PromptBuilder(t5_tok, ts, numbers, visual_tokens=2, max_source_length=128)
    enc = b.encode_source(ts.get("A-1"), user=4, history=[1, 2, 3])
    assert len(enc.input_ids) == len(enc.whole_word_ids) == len(enc.feature_items) == len(enc.feature_slots)
    assert len(enc.mention_items) == len(enc.input_ids)
    assert enc.input_ids[-1] == t5_tok.eos_token_id and enc.whole_word_ids[-1] == 0
    ph = [i for i, it in enumerate(enc.feature_items) if it > 0]
    assert [enc.feature_items[i] for i in ph] == [1, 1, 2, 2, 3, 3]
    assert [enc.feature_slots[i] for i in ph] == [0, 1] * 3
    assert all(enc.input_ids[i] == b.placeholder_id for i in ph)
    for item in (1, 2, 3):  # the identifier tokens come right before the item's placeholders
        first = enc.feature_items.index(item)
        ident = b.item_tokens(item)
        assert enc.input_ids[first - len(ident) : first] == ident
        # identifier tokens and placeholders share one whole-word index, distinct from the neighbours
        words = enc.whole_word_ids[first - len(ident) : first + 2]
        assert len(set(words)) == 1 and words[0] > 0
        assert enc.mention_items[first - len(ident) : first + 2] == [item] * (len(ident) + 2)
    assert sum(1 for m in enc.mention_items if m) == sum(len(b.item_tokens(i)) + 2 for i in (1, 2, 3))
    user_tokens = t5_tok("user_5", add_special_tokens=False)["input_ids"]
    assert len(user_tokens) > 1  # the tokenizer splits the user id: whole-word ids glue it together
    start = next(
        i for i in range(len(enc.input_ids)) if enc.input_ids[i : i + len(user_tokens)] == user_tokens
    )
    assert len(set(enc.whole_word_ids[start : start + len(user_tokens)])) == 1
    assert b.encode_target(ts.get("A-1"), target_item=2) == [*b.item_tokens(2), b.eos_id]


def test_history_is_cut_from_the_oldest_item(t5_tok) -> None:
    ts = load_templates()
    b = PromptBuilder(t5_tok, ts, list(range(0, 101)), visual_tokens=2, max_source_length=60)
    enc = b.encode_source(ts.get("A-4"), user=0, history=list(range(1, 101)))
    assert len(enc) <= 60 and 0 < enc.num_history < 100
    kept = sorted({i for i in enc.feature_items if i})
    assert kept == list(range(101 - enc.num_history, 101))  # the most recent ones
    with pytest.raises(ValueError, match="max_source_length"):
        b.encode_source(ts.get("B-5"), user=0, candidates=list(range(1, 101)))


def test_whole_word_index_is_clamped(t5_tok) -> None:
    ts = load_templates()
    b = PromptBuilder(
        t5_tok, ts, list(range(0, 41)), visual_tokens=1, max_source_length=400, max_whole_words=8
    )
    enc = b.encode_source(ts.get("A-1"), user=0, history=list(range(1, 41)))
    assert max(enc.whole_word_ids) == 7


def test_no_visual_tokens_and_answers(t5_tok) -> None:
    ts = load_templates()
    b = PromptBuilder(t5_tok, ts, [0, 5, 6], visual_tokens=0)
    enc = b.encode_source(ts.get("B-1"), user=1, item=2)
    assert not any(enc.feature_items)
    yes, no = b.answer_token_ids()
    assert yes != no
    assert b.encode_target(ts.get("B-1"), answer=True)[0] == yes
    assert b.encode_target(ts.get("B-1"), answer=False)[0] == no
    long = " ".join(["great"] * 200)
    assert len(b.encode_target(ts.get("C-1"), explanation=long)) == b.max_target_length


def test_item_indexing_random_is_a_permutation_sequential_warns(caplog: pytest.LogCaptureFixture) -> None:
    seqs = [[3, 1, 2], [2, 4]]
    rnd = item_numbering(seqs, 5, "random", seed=0)
    assert sorted(rnd[1:]) == [1, 2, 3, 4, 5] and rnd == item_numbering(seqs, 5, "random", seed=0)
    assert rnd != item_numbering(seqs, 5, "random", seed=1)
    with caplog.at_level(logging.WARNING):
        seq = item_numbering(seqs, 5, "sequential", seed=0)
    assert "leaks" in caplog.text
    assert seq == [0, 2, 3, 1, 4, 5]  # 3 -> 1, 1 -> 2, 2 -> 3, 4 -> 4, unseen 5 -> 5
    with pytest.raises(ValueError, match="random"):
        item_numbering(seqs, 5, "alphabetical", seed=0)


def test_tokenizer_sources(t5_tok, tmp_path: Path) -> None:
    assert resolve_pretrained("minilm").endswith("model")
    assert len(tokenizer_fingerprint(t5_tok)) == 16
    assert tokenizer_fingerprint(t5_tok) != tokenizer_fingerprint(load_tokenizer("minilm"))
    with pytest.raises(MissingBackboneError, match="three ways"):
        resolve_pretrained(str(tmp_path / "nope"))
