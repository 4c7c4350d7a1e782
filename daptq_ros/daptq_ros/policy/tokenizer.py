"""Instruction tokenizer: a word-level `tokenizers` model trained on the instructions, fixed length.

Robot instructions come from a small vocabulary, so one id per word (lower-cased, punctuation
stripped) is enough and keeps the embedding table tiny; an unseen word maps to [UNK]. The
tokenizer.json written here is the standard `tokenizers` file, padding and truncation included.

An imported checkpoint's tokenizer comes with its processor's prompt template: pi0's processors
(transformers' PI0Processor, LeRobot's pipeline) feed `<bos>` + instruction + "\n" and add no
other special token, so `prefix` and `suffix` reproduce that (kept in daptq.json).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from tokenizers.trainers import WordLevelTrainer

from daptq_ros.errors import ModelError

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
PAD_ID = 0


class InstructionTokenizer:
    """Encode instructions to fixed-length id rows with an attention mask."""

    def __init__(self, tokenizer: Tokenizer, prefix: str = "", suffix: str = "") -> None:
        """`prefix` + instruction + `suffix` is encoded (the suffix once, if not already there);
        with either set, the template replaces the tokenizer's own special tokens."""
        padding = tokenizer.padding
        if padding is None or padding.get("length") is None:
            raise ModelError("the tokenizer has no fixed padding length; retrain it with train()")
        self._tokenizer = tokenizer
        self.prefix, self.suffix = prefix, suffix

    @classmethod
    def train(cls, instructions: Iterable[str], max_length: int = 16) -> InstructionTokenizer:
        """A word-level tokenizer over the words of `instructions`, padded to `max_length`."""
        tokenizer = Tokenizer(WordLevel(unk_token=UNK_TOKEN))
        tokenizer.normalizer = normalizers.Sequence(
            [
                normalizers.NFKC(),
                normalizers.Lowercase(),
                normalizers.Replace(Regex(r"[^\w\s]"), " "),
            ]
        )
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = WordLevelTrainer(special_tokens=[PAD_TOKEN, UNK_TOKEN], min_frequency=1)
        tokenizer.train_from_iterator(list(instructions), trainer=trainer)
        tokenizer.enable_padding(pad_id=PAD_ID, pad_token=PAD_TOKEN, length=max_length)
        tokenizer.enable_truncation(max_length=max_length)
        return cls(tokenizer)

    @classmethod
    def load(cls, path: str | Path, prefix: str = "", suffix: str = "") -> InstructionTokenizer:
        """Read a tokenizer.json; a ModelError if it is missing or not a tokenizers file."""
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: tokenizer file is missing; retrain or copy tokenizer.json")
        try:
            return cls(Tokenizer.from_file(str(path)), prefix, suffix)
        except Exception as error:  # tokenizers raises a bare Exception on malformed JSON
            raise ModelError(f"{path}: not a valid tokenizers file ({error})") from None

    def save(self, path: str | Path) -> Path:
        """Write tokenizer.json."""
        path = Path(path)
        self._tokenizer.save(str(path))
        return path

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    @property
    def max_length(self) -> int:
        """Fixed length of every encoded row."""
        return int(self._tokenizer.padding["length"])

    def prompt(self, text: str) -> str:
        """The text the model is fed for one instruction (the prompt template applied)."""
        ending = "" if self.suffix and text.endswith(self.suffix) else self.suffix
        return f"{self.prefix}{text}{ending}"

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids [B, L] int64 and attention mask [B, L] int64 (1 = real token)."""
        templated = bool(self.prefix or self.suffix)
        encodings = self._tokenizer.encode_batch(
            [self.prompt(t) for t in texts], add_special_tokens=not templated
        )
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return ids, mask

    def decode(self, ids: np.ndarray) -> str:
        """The normalised words of one id row, padding dropped."""
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)
