"""The pre-token table gives the tokenizer's own ids and offsets, is used only where it can, and gives way on a doubt.

Tokenizers of the kinds it serves (GPT-2's split, as the tiny preset's; Llama-3's; Qwen2's with its NFC
normaliser) and of kinds it must refuse are trained here, offline, with `tokenizers`, on the tiny model's corpus.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import PreTrainedTokenizerFast

from kairo.training import tinymodel
from kairo.training.pretokens import LLAMA3, QWEN2, PieceCache, encode_batch, refusal
from kairo.training.tokencache import packed_split
from kairo.training.tokenize import merge, tokenize_conversations, tokenize_file
from tests.fixtures import reference_tokenize as reference
from tests.test_tokenize import conversations

SPECIALS = ["<s>", "</s>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>", "<|eot_id|>", "<|end_header_id|>"]


def trained(pre_tokenizer=None, normalizer=None, model=None, post_processor=None) -> PreTrainedTokenizerFast:
    raw = Tokenizer(model or models.BPE())
    raw.pre_tokenizer = pre_tokenizer or pre_tokenizers.ByteLevel(add_prefix_space=False)
    if normalizer is not None:
        raw.normalizer = normalizer
    if post_processor is not None:
        raw.post_processor = post_processor
    raw.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    raw.train_from_iterator(tinymodel.corpus(), trainers.BpeTrainer(
        vocab_size=1500, special_tokens=SPECIALS, initial_alphabet=alphabet, show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="<|end|>")
    tokenizer.chat_template = tinymodel.CHAT_TEMPLATE
    return tokenizer


def split(regex: str) -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


SERVED = {
    "tiny preset (GPT-2's split)": lambda: tinymodel.build_tokenizer(),
    "Llama-3's split": lambda: trained(split(LLAMA3), post_processor=processors.ByteLevel(trim_offsets=False)),
    "Qwen2's split and NFC": lambda: trained(split(QWEN2), normalizers.NFC()),
    "offsets trimmed token by token": lambda: trained(
        post_processor=processors.ByteLevel(trim_offsets=True, add_prefix_space=False)),
}
REFUSED = {
    "a lowercasing normaliser": (lambda: trained(normalizer=normalizers.Lowercase()), "normaliser (Lowercase)"),
    "SentencePiece's Metaspace": (lambda: trained(pre_tokenizers.Metaspace()), "pre-tokenizer (Metaspace)"),
    "a prefix space": (lambda: trained(pre_tokenizers.ByteLevel(add_prefix_space=True)), "prefix space"),
    "an unknown split": (lambda: trained(split(r"\w+|\W+")), "not one known"),
    "BPE dropout": (lambda: trained(model=models.BPE(dropout=0.5)), "dropout"),
    "byte fallback": (lambda: trained(model=models.BPE(byte_fallback=True)), "falls back to bytes"),
    "offsets trimmed at a text's start": (lambda: trained(post_processor=processors.ByteLevel(
        trim_offsets=True, add_prefix_space=True)), "trims offsets differently"),
    "an added token with a space": (lambda: added(trained(), "New York", normalized=False), "holds a space"),
    "added tokens found in two passes": (lambda: added(trained(), "Paris", normalized=True), "some of its added"),
}


def added(tokenizer, token: str, normalized: bool):
    tokenizer.add_tokens([AddedToken(token, normalized=normalized)])
    return tokenizer


ODD = [
    "", " ", "  ", "\n", "a", " a", "a ", "a  b", "a   b", "a \n b", "x\n y", "x \ny", "\t\tx  \n\n  y ",
    "Emoji? 🇫🇷 ñ 東京 — café, ß\u0301 👩‍👩‍👧", "東京は日本の首都です。 北京 上海", "نص عربي مع مسافات", "e\u0301 \u0301x",
    "1234567 89 3.14159 1,000,000 v2.0", "it's 'sOK' I'LL WE'RE he'd", "a\u00a0b \u2003 c\u3000d \x85 e", "\x1c x \x0b y \r\n z",
    "<|end|> <s>  <|user|>\n", "<s><s> <|end|><|end|>x <|end_header_id|>\n\nHi", "Write <|end|> and <s> as text",
    "<|end", "|end|> <|en d|>", "<<s>> <|<|end|>|>", "    def f(x):\n        return x  # two\n\n\n",
    "trailing   \n", "   leading", "mixed \t tabs\t \tand  spaces", "\u2028line\u2029sep", "zero\u200bwidth",
    "https://example.com/a?b=c&d=e#f", "email@example.com", "!!!??? ... ---", "a" * 300, "ab " * 200,
]


def fuzz(seed: int, count: int = 300) -> list[str]:
    """Random strings of the characters most likely to break a cut: spaces of every kind, marks, tokens."""
    rng = random.Random(seed)
    alphabet = [" ", " ", " ", "\n", "\t", "\r", "\u00a0", "\u3000", "a", "b", "Z", "é", "\u0301", "7", "0", ".",
                "'", "s", "'s", "東", "🇫", "🇷", "<|end|>", "<s>", "<", "|", ">", "word", " the", "\n\n"]
    return ["".join(rng.choices(alphabet, k=rng.randint(0, 40))) for _ in range(count)]


def same_as_tokenizer(tokenizer, texts: list[str]) -> None:
    table = PieceCache(tokenizer)
    for _ in range(2):  # cold: every piece tokenized now; warm: every piece from the table
        got = table.encode(texts).split()
        wanted = encode_batch(tokenizer.backend_tokenizer, texts)
        for text, (ids, starts), (want_ids, want_starts) in zip(texts, got, wanted, strict=True):
            assert ids.tolist() == want_ids.tolist(), text
            assert starts.tolist() == want_starts.tolist(), text


@pytest.fixture(scope="module", params=sorted(SERVED))
def served(request):
    return SERVED[request.param]()


def test_tokenizers_of_the_kinds_it_serves_are_accepted(served):
    assert refusal(served) is None


def test_odd_texts_get_the_tokenizer_s_own_ids_and_offsets(served):
    same_as_tokenizer(served, ODD)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_texts_of_awkward_characters_get_the_tokenizer_s_own_ids_and_offsets(served, seed):
    same_as_tokenizer(served, fuzz(seed))


def test_rendered_conversations_get_the_tokenizer_s_own_ids_and_offsets(served):
    texts = [served.apply_chat_template(m, tokenize=False) for m in conversations() if m]
    same_as_tokenizer(served, texts)


def test_the_tiny_preset_s_tokenizer_is_tokenized_from_the_table_with_today_s_labels():
    tokenizer = tinymodel.build_tokenizer()
    rows = conversations()
    got = tokenize_conversations(tokenizer, rows, 160)
    assert got.encoder == "pieces" and got.pieces_found > got.pieces_missed
    expected = reference.tokenize_dataset(tokenizer, rows, 160)
    assert [(i.tolist(), j.tolist()) for i, j in got.examples()] == expected["examples"]


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_a_tokenizer_it_cannot_reproduce_is_refused_and_keeps_its_own_path(tmp_path, kind):
    build, reason = REFUSED[kind]
    tokenizer = build()
    assert reason in refusal(tokenizer)
    path = tmp_path / "train.jsonl"
    rows = conversations()[:40]
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in rows))
    lines: list[str] = []
    got = merge(list(tokenize_file(tokenizer, path, 160, processes=1, log=lines.append)))
    assert got.encoder == "tokenizer"
    assert lines == [f"train.jsonl: tokenizing with the tokenizer's batched encoder: {refusal(tokenizer)}"]
    if kind != "BPE dropout":  # dropout's tokens differ from one call to the next
        assert [(i.tolist(), j.tolist()) for i, j in got.examples()] == reference.tokenize_dataset(
            tokenizer, rows, 160)["examples"]


class LyingTable(PieceCache):
    """A table whose pieces holding `word` get other ids than the tokenizer gives them (a reading gone wrong)."""

    word = " Tokyo"

    def _alone(self, strings):
        ids, rel, counts = super()._alone(strings)
        ids = ids.copy()
        firsts = np.cumsum(counts) - counts
        for string, first, count in zip(strings, firsts, counts, strict=True):
            if self.word in string and count:
                ids[first] = (ids[first] + 1) % 1000
        return ids, rel, counts


def rows_with(word: str, at: int, count: int) -> list[list[dict[str, str]]]:
    plain = [m for m in conversations() if sum(len(x["content"]) for x in m) > 60  # longer than the one below
             and not any(word.strip() in x["content"] for x in m)]
    rows = [plain[i % len(plain)] for i in range(count)]
    rows[at] = [{"role": "user", "content": f"What is the capital of Japan?{word}?"},
                {"role": "assistant", "content": f"It is{word}."}]
    return rows


def test_a_table_that_differs_on_the_first_chunk_gives_way_to_the_tokenizer(tmp_path):
    tokenizer = tinymodel.build_tokenizer()
    rows = rows_with(LyingTable.word, 5, 300)
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in rows))
    lines: list[str] = []
    got = merge(list(tokenize_file(tokenizer, path, 160, processes=1, pieces=LyingTable(tokenizer),
                                   log=lines.append)))
    assert got.encoder == "tokenizer"
    assert len(lines) == 1 and "the pre-token table differs from the tokenizer: row 6:" in lines[0]
    assert [(i.tolist(), j.tolist()) for i, j in got.examples()] == reference.tokenize_dataset(
        tokenizer, rows, 160)["examples"]
    in_memory = tokenize_conversations(tokenizer, rows, 160, pieces=LyingTable(tokenizer))
    assert in_memory.encoder == "tokenizer" and in_memory.ids.tolist() == got.ids.tolist()


def test_a_table_that_differs_in_a_later_chunk_makes_the_file_again_with_the_tokenizer(tmp_path):
    tokenizer = tinymodel.build_tokenizer()
    rows = rows_with(LyingTable.word, 300, 600)  # the shortest conversation of the second chunk
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in rows))
    lines: list[str] = []
    packed = packed_split(path, tokenizer, 160, tmp_path / "cache", log=lines.append, processes=2,
                          pieces=LyingTable(tokenizer))
    assert "differs from the tokenizer (row 301:" in lines[0] and "tokenizing again" in lines[0]
    assert packed.meta["encoder"] == "tokenizer" and "by the tokenizer's batched encoder" in lines[-1]
    expected = reference.tokenize_dataset(tokenizer, rows, 160)["examples"]
    assert packed.meta["examples"] == len(expected)
    assert packed.meta["tokens"] == sum(len(ids) for ids, _ in expected)


def test_packed_split_says_the_table_made_the_tokens(tmp_path):
    tokenizer = tinymodel.build_tokenizer()
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in conversations()))
    lines: list[str] = []
    packed = packed_split(path, tokenizer, 160, tmp_path / "cache", log=lines.append)
    assert packed.meta["encoder"] == "pieces" and len(lines) == 1
    assert "from the pre-token table, checked against the tokenizer; " in lines[0]
