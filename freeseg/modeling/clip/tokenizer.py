"""CLIP's BPE tokenizer (open_clip's bundled vocabulary), returning plain token-id lists."""
from __future__ import annotations

from functools import lru_cache

from open_clip.tokenizer import SimpleTokenizer


class ClipTokenizer:
    """Token ids without SOT/EOT, plus the special ids the prompt learner needs."""

    def __init__(self) -> None:
        self._bpe = SimpleTokenizer()
        self.sot_id: int = self._bpe.sot_token_id
        self.eot_id: int = self._bpe.eot_token_id
        self.pad_id: int = 0  # CLIP pads with token 0 ("!")

    def encode(self, text: str) -> list[int]:
        """BPE ids of ``text`` (lower-cased, whitespace-cleaned), no SOT/EOT."""
        return list(self._bpe.encode(text))


@lru_cache(maxsize=1)
def get_tokenizer() -> ClipTokenizer:
    """The shared tokenizer (loading the BPE merges takes ~0.3 s, so do it once)."""
    return ClipTokenizer()
