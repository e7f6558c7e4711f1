"""FreeSeg's learnable task + class prompts (``LearnablePromptExtractor``), same names and layout.

For class name c under task phrase t, the sequence fed to CLIP's text tower is::

    [tokens(t)] [task_prompt x8] [SOT] [prefix_prompt x16] [tokens(c)] [suffix_prompt] ["."] [EOT] [pad ...]

(the task tokens come *before* SOT, as in the original), read at EOT, projected with
``text_projection`` and L2-normalised. Token embeddings of t and c are looked up in CLIP's
(possibly reloaded) ``token_embedding`` on every call; SOT/"."/EOT/pad are the buffers
``start_signal``/``dot_signal``/``end_signal``/``pad_signal`` that FreeSeg saves.
"""
from __future__ import annotations

import logging
import os

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ...utils.errors import FreeSegError
from .model import encode_text_embeddings, text_width
from .tokenizer import get_tokenizer

logger = logging.getLogger(__name__)


class PromptLearner(nn.Module):
    """Learned prompt vectors shared by all classes; task differs by its phrase tokens.

    Args:
        prompt_dim: width of the prompt vectors (= CLIP's token-embedding width).
        prefix_length / suffix_length: ``PROMPT_SHAPE`` (16, 0).
        task_prompt_length: ``TASK_PROMPT_SHAPE`` (8).
        token_embedding: CLIP's [V, prompt_dim] embedding table, to derive the signal buffers.
    """

    def __init__(
        self,
        *,
        prompt_dim: int,
        prefix_length: int = 16,
        suffix_length: int = 0,
        task_prompt_length: int = 8,
        token_embedding: nn.Embedding | None = None,
    ) -> None:
        super().__init__()
        self.prompt_dim = prompt_dim
        self.prefix_prompt = nn.Parameter(torch.empty(prefix_length, prompt_dim)) if prefix_length > 0 else None
        self.suffix_prompt = nn.Parameter(torch.empty(suffix_length, prompt_dim)) if suffix_length > 0 else None
        self.task_prompt = nn.Parameter(torch.empty(task_prompt_length, prompt_dim))
        for p in (self.prefix_prompt, self.suffix_prompt):
            if p is not None:
                nn.init.normal_(p, std=0.02)
        nn.init.kaiming_normal_(self.task_prompt, a=2)
        for name in ("start_signal", "dot_signal", "end_signal", "pad_signal"):
            self.register_buffer(name, torch.zeros(1, prompt_dim))
        if token_embedding is not None:
            self.init_signals(token_embedding)

    @torch.no_grad()
    def init_signals(self, token_embedding: nn.Embedding) -> bool:
        """SOT, ".", EOT and pad embeddings, from tokenising "X." as FreeSeg does.

        Returns False (signals left as they are) when the embedding width is not ``prompt_dim``:
        a CLIP built from its name before a checkpoint load rebuilds it may not match yet.
        """
        if token_embedding.weight.shape[1] != self.prompt_dim:
            return False
        tok = get_tokenizer()
        ids = [tok.sot_id, *tok.encode("X."), tok.eot_id, tok.pad_id]  # SOT, x, ., EOT, 0
        emb = token_embedding(torch.tensor(ids, device=token_embedding.weight.device))
        for name, idx in (("start_signal", 0), ("dot_signal", 2), ("end_signal", 3), ("pad_signal", 4)):
            setattr(self, name, emb[idx : idx + 1].detach().clone().to(self.task_prompt.dtype))
        return True

    @property
    def trainable(self) -> bool:
        """Whether any prompt vector still learns (False after a stage-1 checkpoint load)."""
        return any(p.requires_grad for p in self.parameters())

    def max_name_tokens(self, task: str, context_length: int) -> int:
        """The most BPE tokens a class name may have under ``task`` to fit CLIP's context."""
        fixed = len(get_tokenizer().encode(task)) + self.task_prompt.shape[0] + 1 + 2  # SOT, ".", EOT
        fixed += sum(p.shape[0] for p in (self.prefix_prompt, self.suffix_prompt) if p is not None)
        return context_length - fixed

    def check_names(self, class_names: list[str], task: str, context_length: int) -> list[list[int]]:
        """Token ids per class name; FreeSegError if a name does not fit CLIP's context."""
        limit = self.max_name_tokens(task, context_length)
        tokens = [get_tokenizer().encode(name) for name in class_names]
        for name, ids in zip(class_names, tokens):
            if not ids:
                raise FreeSegError(f"class name {name!r} has no CLIP tokens; give it a real name")
            if len(ids) > limit:
                raise FreeSegError(
                    f"class name {name!r} is {len(ids)} CLIP tokens, more than the {limit} that fit with "
                    f"task {task!r} and the prompts in CLIP's {context_length}-token context; shorten it"
                )
        return tokens

    def forward(self, class_names: list[str], task: str, clip_model: nn.Module) -> Tensor:
        """Normalised text features [K, D] for ``class_names`` under the task phrase ``task``."""
        if text_width(clip_model) != self.prompt_dim:
            raise FreeSegError(
                f"CLIP text width {text_width(clip_model)} != MODEL.CLIP_ADAPTER.PROMPT_DIM {self.prompt_dim}"
            )
        context_length = clip_model.positional_embedding.shape[0]
        name_tokens = self.check_names(class_names, task, context_length)
        embed = clip_model.token_embedding
        device = self.task_prompt.device
        task_emb = embed(torch.tensor(get_tokenizer().encode(task), device=device, dtype=torch.long))
        head = [task_emb, self.task_prompt, self.start_signal]
        head += [self.prefix_prompt] if self.prefix_prompt is not None else []
        tail = [self.suffix_prompt] if self.suffix_prompt is not None else []
        tail += [self.dot_signal, self.end_signal]
        sequences, eot_index = [], []
        for ids in name_tokens:
            noun = embed(torch.tensor(ids, device=device, dtype=torch.long))
            seq = torch.cat(head + [noun] + tail)  # [L_c, W]
            eot_index.append(seq.shape[0] - 1)
            pad = self.pad_signal.expand(context_length - seq.shape[0], -1)
            sequences.append(torch.cat([seq, pad]))
        x = torch.stack(sequences)  # [K, context, W]
        index = torch.tensor(eot_index, device=device)
        return F.normalize(encode_text_embeddings(clip_model, x, index), dim=-1)

    def load_prompt_checkpoint(self, path: str) -> None:
        """Load stage-1 prompts (``*prompt_learner*`` keys, first two dotted parts dropped), freeze.

        Task-phrase embeddings are not stored: they come from CLIP's token embedding.
        """
        if not os.path.isfile(path):
            raise FreeSegError(
                f"prompt checkpoint not found: {path!r}; set MODEL.CLIP_ADAPTER.PROMPT_CHECKPOINT to a "
                "stage-1 model_final.pth or to '' to learn the prompts here"
            )
        fix = "set MODEL.CLIP_ADAPTER.PROMPT_CHECKPOINT to a stage-1 model_final.pth"
        if os.path.getsize(path) == 0:
            raise FreeSegError(f"prompt checkpoint {path!r} is empty (0 bytes); {fix}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a cut-short or foreign file raises anything
            raise FreeSegError(
                f"prompt checkpoint {path!r} cannot be read: it is truncated, damaged or no PyTorch "
                f"checkpoint ({type(exc).__name__}); {fix}"
            ) from None
        state = state.get("model", state) if isinstance(state, dict) else {}
        prompts = {".".join(k.split(".")[2:]): v for k, v in state.items() if "prompt_learner" in k}
        if not prompts:
            raise FreeSegError(f"{path!r} holds no prompt_learner weights; is it a stage-1 checkpoint?")
        self._check_prompt_shapes(prompts, path)
        missing, unexpected = self.load_state_dict(prompts, strict=False)
        if missing or unexpected:
            logger.warning("prompt checkpoint %s: missing %s, unexpected %s", path, missing, unexpected)
        for p in self.parameters():
            p.requires_grad_(False)
        logger.info("loaded and froze the prompts from %s", path)

    def _check_prompt_shapes(self, prompts: dict[str, Tensor], path: str) -> None:
        """FreeSegError unless the checkpoint's prompt vectors have this learner's shapes (a
        missing or extra prompt would stay random, or be dropped, silently)."""
        names = ("prefix_prompt", "suffix_prompt", "task_prompt")
        own = {k: tuple(v.shape) for k, v in self.state_dict().items() if k in names}
        saved = {k: tuple(v.shape) for k, v in prompts.items() if k in names}
        if own == saved:
            return
        length = {k: shape[0] for k, shape in saved.items()}
        width = next(iter(saved.values()))[-1] if saved else self.prompt_dim
        raise FreeSegError(
            f"prompt checkpoint {path!r} holds {_shapes(saved)} but the config makes {_shapes(own)}; set "
            f"MODEL.CLIP_ADAPTER.PROMPT_SHAPE ({length.get('prefix_prompt', 0)}, {length.get('suffix_prompt', 0)}), "
            f"TASK_PROMPT_SHAPE {length.get('task_prompt', 0)} and PROMPT_DIM {width} as it was trained with, "
            "or PROMPT_CHECKPOINT '' to learn new prompts"
        )


def _shapes(shapes: dict[str, tuple[int, ...]]) -> str:
    return ", ".join(f"{k} {list(v)}" for k, v in sorted(shapes.items())) or "no prompts"
