"""A byte-level BPE tokenizer's results for the pieces of text it has seen before, kept: texts tokenized from them.

A byte-level BPE tokenizer (GPT-2's, Llama-3's, Qwen's, the tiny preset's) tokenizes a text in three
stages: it splits out its added tokens, cuts the rest into pre-tokens with a regex, and BPE-encodes each
pre-token alone. The Rust pre-tokenizer costs about a microsecond a token; instruction data repeats the
same pieces endlessly. So a text is cut around its added tokens (found as the tokenizer finds them:
leftmost, then longest) and at every space that has a non-space character on both sides, and each piece
(the space included, at its front) is looked up in a table of pieces seen before: ids and start offsets.
The pieces not seen yet are tokenized alone by the tokenizer, all of a chunk in one call, and remembered.

That gives the tokenizer's own tokens because, for the regexes in PATTERNS, such a space always starts a
pre-token (no alternative matches a non-space character followed by a space) and a pre-token starting
there is decided by the text after it alone (no look-behind); the tokenizer tokenizes the text between
two added tokens on its own anyway, and an added token holding no space never spans a cut space.
`refusal(tokenizer)` reads the tokenizer's JSON (normaliser, pre-tokenizer, model, post-processor, added
tokens) and says why a tokenizer is not of that kind; callers then keep the tokenizer's own batched path.
A reading of a JSON is not a proof, so `kairo.training.tokenize` also compares the two on the data itself
and falls back on any difference.

A normaliser that only puts text in a Unicode normal form (Qwen's NFC) is allowed: a text not already in
that form is tokenized by the tokenizer itself. The table is bounded (MAX_PIECES, then it starts again),
so a long-tailed vocabulary costs misses, never memory.
"""

from __future__ import annotations

import json
import re
import unicodedata
from array import array
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np

GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3 = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
          r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
PATTERNS = {GPT2: "GPT-2's", LLAMA3: "Llama-3's", QWEN2: "Qwen2's"}  # ByteLevel(use_regex=True) is GPT-2's
FORMS = ("NFC", "NFD", "NFKC", "NFKD")
MAX_PIECES = 1 << 19  # per process: ≈100 MB at most, then the table starts again

# A space with a non-space on both sides: where a text is cut. Python's \s (str.isspace) holds every
# character the tokenizer's regex calls \s (Unicode White_Space) and a few more, so it never cuts too much.
SAFE_SPACE = re.compile(r"(?<=\S) (?=\S)")
LEAD = "\x01"  # in front of a key: the piece starts a part between added tokens (no space heads it)
TOKEN_EDGE = " " + LEAD  # around each added token: split(" ") then makes it, and what follows it, leads
SPACED, OPENS_BADLY, ENDS_IN_SPACE = 1, 2, 4


def refusal(tokenizer: Any) -> str | None:
    """Why the piece table cannot reproduce this tokenizer's tokens, or None when it can."""
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is None:
        return "the tokenizer has no fast (Rust) backend"
    if backend.truncation is not None or backend.padding is not None:
        return "the tokenizer truncates or pads"
    if getattr(tokenizer, "split_special_tokens", False):
        return "the tokenizer splits its special tokens"
    spec = json.loads(backend.to_str())
    return (_normalizer_refusal(spec.get("normalizer")) or _pre_tokenizer_refusal(spec.get("pre_tokenizer"))
            or _model_refusal(spec.get("model") or {}) or _post_processor_refusal(spec.get("post_processor"))
            or _added_tokens_refusal(spec.get("added_tokens") or []))


def normal_form(tokenizer: Any) -> str | None:
    """The Unicode normal form the tokenizer's normaliser puts text in (None: no normaliser)."""
    normalizer = json.loads(tokenizer.backend_tokenizer.to_str()).get("normalizer")
    return normalizer["type"] if normalizer else None


def _normalizer_refusal(normalizer: dict | None) -> str | None:
    if normalizer is None or normalizer.get("type") in FORMS:
        return None
    return f"its normaliser ({normalizer.get('type')}) may change text across pieces"


def _pre_tokenizer_refusal(pre: dict | None) -> str | None:
    steps = pre.get("pretokenizers", []) if pre and pre.get("type") == "Sequence" else [pre] if pre else []
    if not steps or steps[-1].get("type") != "ByteLevel":
        kind = pre.get("type") if pre else "none"
        return f"its pre-tokenizer ({kind}) is not byte-level BPE's"
    if steps[-1].get("add_prefix_space"):
        return "its byte-level pre-tokenizer adds a prefix space to every part"
    for step in steps[:-1]:
        regex = (step.get("pattern") or {}).get("Regex")
        if step.get("type") != "Split" or step.get("behavior") != "Isolated" or step.get("invert"):
            return f"its pre-tokenizer has a {step.get('type')} step other than an isolating regex split"
        if regex not in PATTERNS:
            return f"its pre-tokenizer's regex {regex!r} is not one known to start a pre-token at every space"
    if len(steps) == 1 and not steps[0].get("use_regex", True):
        return "its byte-level pre-tokenizer splits nothing"
    return None


def _model_refusal(model: dict) -> str | None:
    if model.get("type") != "BPE":
        return f"its model is {model.get('type')}, not BPE"
    if model.get("dropout"):
        return "its BPE has dropout (tokens differ from one call to the next)"
    if model.get("byte_fallback"):
        return "its BPE falls back to bytes"
    return None


def _post_processor_refusal(post: dict | None) -> str | None:
    for step in (post.get("processors", []) if post and post.get("type") == "Sequence" else [post] if post else []):
        kind = step.get("type")
        if kind in ("ByteLevel", "RobertaProcessing") and step.get("trim_offsets", True) \
                and step.get("add_prefix_space", True):
            return f"its post-processor ({kind}) trims offsets differently at a text's start"
        if kind not in ("ByteLevel", "RobertaProcessing", "TemplateProcessing", "BertProcessing"):
            return f"its post-processor ({kind}) is not one known to leave offsets alone"
    return None


def _added_tokens_refusal(added: list[dict]) -> str | None:
    if len({bool(token.get("normalized")) for token in added}) > 1:  # two passes: not one leftmost-longest search
        return "some of its added tokens are found in the normalised text and some in the raw one"
    for token in added:
        if " " in token["content"] or LEAD in token["content"]:
            return f"its added token {token['content']!r} holds a space"
        if token.get("lstrip") or token.get("rstrip") or token.get("single_word"):
            return f"its added token {token['content']!r} strips whitespace or matches single words only"
    return None


@dataclass
class Encoded:
    """Tokens of several texts, flat: text k's are ids[o:o + counts[k]], o the sum of the counts before it."""

    ids: np.ndarray  # int32
    starts: np.ndarray  # int64: each token's start offset (characters) in its own text
    counts: np.ndarray  # int64: tokens per text

    def split(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(ids, starts) of each text."""
        bounds = np.cumsum(self.counts)[:-1]
        return list(zip(np.split(self.ids, bounds), np.split(self.starts, bounds), strict=True))


def joined(parts: list[tuple[np.ndarray, np.ndarray]]) -> Encoded:
    """Several texts' (ids, starts) as one Encoded."""
    if not parts:
        return Encoded(np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0, np.int64))
    return Encoded(np.concatenate([p[0] for p in parts]).astype(np.int32, copy=False),
                   np.concatenate([p[1] for p in parts]).astype(np.int64, copy=False),
                   np.asarray([len(p[0]) for p in parts], dtype=np.int64))


def encode_batch(backend: Any, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ids, start offsets) of each text from the tokenizer itself (no special tokens added)."""
    out = []
    for encoding in backend.encode_batch(texts, add_special_tokens=False):
        offsets = np.asarray(encoding.offsets, dtype=np.int64).reshape(-1, 2)
        out.append((np.asarray(encoding.ids, dtype=np.int32), offsets[:, 0]))
    return out


class PieceCache:
    """Texts tokenized from a table of pieces (see the module docstring); build one only when `refusal` is None.

    A piece is keyed by its text, the space that heads it left out; a piece that starts a part of the text
    between added tokens (or is an added token) has LEAD in front instead.
    """

    def __init__(self, tokenizer: Any):
        self._backend = tokenizer.backend_tokenizer
        self._form = normal_form(tokenizer)
        added = [t["content"] for t in json.loads(self._backend.to_str()).get("added_tokens") or [] if t["content"]]
        self._added = re.compile(_longest_first(added)) if added else None
        self._separator = _separator(json.loads(self._backend.to_str()).get("added_tokens") or [])
        self.hits = self.misses = 0
        self._clear()

    def _clear(self) -> None:
        self._pieces: dict[str, int] = {}  # key → piece number
        self._first, self._count, self._length = array("q"), array("q"), array("q")  # per piece number
        self._flags = array("B")  # per piece number: SPACED, OPENS_BADLY, ENDS_IN_SPACE
        self._ids, self._rel = array("i"), array("q")  # all pieces' tokens: id, start offset in the piece

    def __len__(self) -> int:
        return len(self._pieces)

    def keys(self, text: str, careful: bool = False) -> list[str]:
        """The keys of the text's pieces, in order (see the class docstring).

        The quick cut (one split around added tokens, one `str.split(" ")`, both in C) is right unless a
        space touches other whitespace, which `encode` finds from the pieces' flags; `careful` cuts only
        at spaces with a non-space on both sides.
        """
        parts = self._added.split(text) if self._added is not None else [text]
        if not careful:
            return (LEAD + TOKEN_EDGE.join(parts)).split(" ")
        keys = []
        for j, part in enumerate(parts):
            if j % 2:  # an added token
                keys.append(LEAD + part)
                continue
            pieces = SAFE_SPACE.split(part)
            keys.append(LEAD + pieces[0])
            keys += pieces[1:]
        return keys

    def encode(self, texts: list[str]) -> Encoded:
        """Each text's ids and token start offsets, as `backend.encode_batch(texts, add_special_tokens=False)`."""
        if len(self) > MAX_PIECES:
            self._clear()
        keys: list[str] = []
        pieces_per_text: list[int] = []
        own: list[int] = []  # texts the tokenizer tokenizes itself: not in the normaliser's form, or holding LEAD
        for t, text in enumerate(texts):
            if LEAD in text or (self._form is not None and not unicodedata.is_normalized(self._form, text)):
                own.append(t)
                pieces_per_text.append(0)
                continue
            text_keys = self.keys(text)
            keys += text_keys
            pieces_per_text.append(len(text_keys))
        numbers = self._numbers(keys)
        per_text = np.asarray(pieces_per_text, dtype=np.int64)
        for t in self._touching(numbers, per_text):  # cut again, carefully
            begin = int(per_text[:t].sum())
            careful = self.keys(texts[t], careful=True)
            numbers = np.concatenate([numbers[:begin], self._numbers(careful), numbers[begin + per_text[t]:]])
            per_text[t] = len(careful)
        lengths = np.asarray([len(x) for x in texts], dtype=np.int64)
        lengths[own] = 0  # not in the pieces: the tokenizer's own tokens take their place below
        fast = self._assemble(numbers, per_text, lengths)
        if not own:
            return fast
        mine = dict(zip(own, encode_batch(self._backend, [texts[t] for t in own]), strict=True))
        parts = fast.split()
        return joined([mine[t] if t in mine else parts[t] for t in range(len(texts))])

    def _numbers(self, keys: list[str]) -> np.ndarray:
        """The keys' piece numbers; the pieces not in the table are tokenized and put in it first."""
        numbers = np.fromiter(map(self._pieces.get, keys, repeat(-1)), dtype=np.intp, count=len(keys))
        missed = np.flatnonzero(numbers < 0)
        if len(missed):
            wanted = list(dict.fromkeys(keys[i] for i in missed.tolist()))
            self._learn(wanted)
            numbers[missed] = [self._pieces[keys[i]] for i in missed.tolist()]
            self.misses += len(wanted)  # pieces the tokenizer tokenized; every other one was found in the table
            self.hits -= len(wanted)
        self.hits += len(keys)
        return numbers

    def _touching(self, numbers: np.ndarray, pieces_per_text: np.ndarray) -> list[int]:
        """The texts in which a space the quick cut cut at touches other whitespace (see `keys`)."""
        flags = np.frombuffer(self._flags, dtype=np.uint8)[numbers]
        # A piece after a cut space: bad when it opens badly, or follows a piece ending in whitespace.
        # A text's first piece is never SPACED, so no pair across two texts counts.
        bad = (flags[1:] & OPENS_BADLY).astype(bool) | ((flags[1:] & SPACED).astype(bool)
                                                         & (flags[:-1] & ENDS_IN_SPACE).astype(bool))
        if not bad.any():
            return []
        starts = np.cumsum(pieces_per_text) - pieces_per_text
        return sorted(set((np.searchsorted(starts, np.flatnonzero(bad) + 1, side="right") - 1).tolist()))

    def _learn(self, keys: list[str]) -> None:
        """Tokenize the pieces of these keys alone and put them in the table."""
        strings = [key[1:] if key.startswith(LEAD) else " " + key for key in keys]
        if self._form is not None:
            for string in strings:  # never seen: a piece of a text in normal form is in it too
                if not unicodedata.is_normalized(self._form, string):
                    raise PiecesDisagree(f"the piece {string!r} of a text in {self._form} is not in {self._form}")
        ids, rel, counts = self._alone(strings)
        number = len(self._first)
        self._first.frombytes((len(self._ids) + np.cumsum(counts) - counts).tobytes())
        self._count.frombytes(counts.tobytes())
        self._length.frombytes(np.asarray([len(x) for x in strings], dtype=np.int64).tobytes())
        self._flags.extend(_flags(key) for key in keys)
        self._ids.frombytes(ids.astype(np.int32).tobytes())
        self._rel.frombytes(rel.astype(np.int64).tobytes())
        self._pieces.update(zip(keys, range(number, number + len(keys)), strict=True))

    def _alone(self, strings: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each string tokenized as if alone: ids and start offsets in its string (flat), and tokens per string.

        In one call of the tokenizer: the strings joined by one of its added tokens, which it splits out
        before anything else, so each string is tokenized on its own. Should the added token not be found
        exactly between the strings, they are tokenized one by one.
        """
        if self._separator is not None and len(strings) > 1:
            separator, separator_id = self._separator
            encoding = self._backend.encode(separator.join(strings), add_special_tokens=False)
            ids = np.asarray(encoding.ids, dtype=np.int32)
            offsets = np.asarray(encoding.offsets, dtype=np.int64).reshape(-1, 2)
            lengths = np.asarray([len(x) for x in strings], dtype=np.int64)
            begins = np.cumsum(lengths + len(separator)) - (lengths + len(separator))  # each string's start
            between = begins[1:] - len(separator)  # where each separator starts
            found = np.flatnonzero((ids == separator_id) & np.isin(offsets[:, 0], between))
            if np.array_equal(offsets[found, 0], between) and np.array_equal(offsets[found, 1],
                                                                             between + len(separator)):
                mine = np.ones(len(ids), dtype=bool)
                mine[found] = False
                string_of = np.searchsorted(begins, offsets[mine, 0], side="right") - 1
                return (ids[mine], offsets[mine, 0] - begins[string_of],
                        np.bincount(string_of, minlength=len(strings)).astype(np.int64))
        one_by_one = encode_batch(self._backend, strings)
        return (np.concatenate([i for i, _ in one_by_one]), np.concatenate([r for _, r in one_by_one]),
                np.asarray([len(i) for i, _ in one_by_one], dtype=np.int64))

    def _assemble(self, numbers: np.ndarray, pieces_per_text: np.ndarray, lengths: np.ndarray) -> Encoded:
        first = np.frombuffer(self._first, dtype=np.int64)[numbers]
        count = np.frombuffer(self._count, dtype=np.int64)[numbers]
        length = np.frombuffer(self._length, dtype=np.int64)[numbers]
        # Each piece's start in its text: the pieces of a text cover it end to end.
        piece_start = np.cumsum(length) - length
        text_start = np.cumsum(lengths) - lengths
        piece_start -= np.repeat(text_start, pieces_per_text)
        total = int(count.sum())
        piece_of_token = np.repeat(np.arange(len(numbers)), count)
        token_in_piece = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
        source = first[piece_of_token] + token_in_piece
        ids = np.frombuffer(self._ids, dtype=np.int32)[source]
        starts = piece_start[piece_of_token] + np.frombuffer(self._rel, dtype=np.int64)[source]
        counts = np.zeros(len(pieces_per_text), dtype=np.int64)
        texts_with_pieces = np.flatnonzero(pieces_per_text)
        if len(texts_with_pieces):
            bounds = (np.cumsum(pieces_per_text) - pieces_per_text)[texts_with_pieces]
            counts[texts_with_pieces] = np.add.reduceat(count, bounds)
        return Encoded(ids, starts, counts)


def _flags(key: str) -> int:
    """SPACED: a space heads the piece; OPENS_BADLY: it does and whitespace or nothing follows that space;
    ENDS_IN_SPACE: the piece ends in whitespace (str.isspace's, which holds the tokenizer's)."""
    spaced = not key.startswith(LEAD)
    rest = key if spaced else key[1:]
    return ((SPACED if spaced else 0) | (OPENS_BADLY if spaced and (not rest or rest[0].isspace()) else 0)
            | (ENDS_IN_SPACE if rest[-1:].isspace() or (spaced and not rest) else 0))


def _longest_first(words: list[str]) -> str:
    """A regex finding the words as the tokenizer finds its added tokens: leftmost, then longest (a trie)."""
    trie: dict = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def pattern(node: dict) -> str:
        branches = [re.escape(char) + pattern(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body  # greedy: the longer word first, this one on failure

    return "(" + pattern(trie) + ")"


def _separator(added: list[dict]) -> tuple[str, int] | None:
    """An added token (content, id) to join pieces by, matched on the raw text when the tokenizer has one."""
    ranked = sorted(added, key=lambda token: (token.get("normalized", True), len(token["content"])))
    return (ranked[0]["content"], ranked[0]["id"]) if ranked else None


class PiecesDisagree(Exception):
    """The piece table's tokens differ from the tokenizer's: the tokenizer's own path must be used."""
