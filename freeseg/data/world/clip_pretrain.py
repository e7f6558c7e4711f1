"""Contrastive pre-training of a tiny CLIP on the quickstart world (stand-in for web-scale CLIP).

Real FreeSeg starts from OpenAI's CLIP, which has read every word, including the names of the
classes FreeSeg never segments in training. Our stand-in reads captions of whole scenes and of
single segments of *every* class (novel ones included) and learns to match them to pixels; the
segmentation stages then train on base classes only, so the unseen-class score measures real
zero-shot transfer. The model is an ordinary open_clip ``CLIP`` saved with OpenAI's key names,
so it loads through the same code path as a released ``ViT-B-16.pt``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from open_clip import get_tokenizer
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from tqdm import tqdm

from ...modeling.clip.region import CLIP_PIXEL_MEAN, CLIP_PIXEL_STD, crop_regions, mask_boxes

from .classes import world_classes
from .scene import render_scene, caption

# OpenAI CLIP's pixel statistics on the 0..255 scale; crops are filled with the mean (FreeSeg's).
_MEAN = torch.tensor(CLIP_PIXEL_MEAN) * 255
_STD = torch.tensor(CLIP_PIXEL_STD) * 255
_TEMPLATES = ("a {}.", "a photo of a {}.", "{}", "there is a {} here.")


@dataclass(frozen=True)
class TinyClipSpec:
    """A CLIP small enough to train on a laptop CPU in a couple of minutes."""

    embed_dim: int = 128  # = text width, as FreeSeg's prompt learner (PROMPT_DIM) requires
    vision_width: int = 128
    vision_layers: int = 3
    patch_size: int = 16  # 4x4 patches + CLS: image encoding is most of the cost
    image_size: int = 64  # region crops are resized to the CLIP's input size
    text_width: int = 128
    text_layers: int = 2
    # Longest use: FreeSeg's prompt (task phrase 5 + 8 task + SOT + 16 prefix + name + "." + EOT
    # = 34 tokens) and scene captions (~35); 77 would double the text cost for nothing.
    context_length: int = 48


def build_tiny_clip(spec: TinyClipSpec = TinyClipSpec()) -> CLIP:
    vision = CLIPVisionCfg(layers=spec.vision_layers, width=spec.vision_width, head_width=64,
                           patch_size=spec.patch_size, image_size=spec.image_size)
    text = CLIPTextCfg(context_length=spec.context_length, width=spec.text_width,
                       heads=spec.text_width // 64, layers=spec.text_layers)
    return CLIP(spec.embed_dim, vision, text, quick_gelu=True)


def _region_crops(image: np.ndarray, masks: list[np.ndarray], size: int) -> np.ndarray:
    """The model's own region crops (box, mean fill, normalise, bicubic resize): float [N,3,s,s]."""
    img = torch.from_numpy(image).permute(2, 0, 1)  # H W C -> C H W
    m = torch.from_numpy(np.stack(masks))
    crops = crop_regions(img, m, mask_boxes(m), fill=_MEAN, pixel_mean=_MEAN, pixel_std=_STD, size=size)
    return crops.numpy()


def _full_image(image: np.ndarray, size: int) -> np.ndarray:
    """The whole scene as CLIP input (a crop whose mask covers everything)."""
    return _region_crops(image, [np.ones(image.shape[:2], bool)], size)[0]


def make_pairs(num_scenes: int, seed: int, image_size: int) -> tuple[np.ndarray, list[str]]:
    """Image–text pairs: every scene with its caption, and every segment with its name."""
    rng = np.random.default_rng(seed)
    classes = world_classes()
    images, texts = [], []
    for _ in range(num_scenes):
        scene = render_scene(classes, rng)
        images.append(_full_image(scene.image, image_size))
        texts.append(caption(scene, rng))
        images.extend(_region_crops(scene.image, [seg.mask for seg in scene.segments], image_size))
        for seg in scene.segments:
            texts.append(_TEMPLATES[int(rng.integers(len(_TEMPLATES)))].format(seg.category.name))
    return np.stack(images).astype(np.float16), texts  # fp16 halves the in-memory set


def pretrain_tiny_clip(out_path: Path, *, num_scenes: int = 500, steps: int = 400,
                       batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
                       spec: TinyClipSpec = TinyClipSpec(), log_every: int = 50) -> dict:
    """Train the tiny CLIP and save its state dict (OpenAI key names) to ``out_path``.

    Returns a summary with the final loss and zero-shot region accuracy on held-out scenes.
    """
    torch.manual_seed(seed)
    model = build_tiny_clip(spec)
    tokenizer = get_tokenizer("ViT-B-16")
    images, texts = make_pairs(num_scenes, seed, spec.image_size)
    unique = sorted(set(texts))
    text_index = {t: i for i, t in enumerate(unique)}
    text_ids = torch.tensor([text_index[t] for t in texts])
    tokens = tokenizer(unique, context_length=spec.context_length)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    start, loss_value = time.time(), float("nan")
    bar = tqdm(range(steps), desc="tiny CLIP pre-training", leave=False)
    for step in bar:
        idx = torch.randint(len(texts), (batch_size,), generator=gen)
        batch_ids = text_ids[idx]
        # Several samples share a caption ("a red square."): all of them are positives.
        uniq, inverse = torch.unique(batch_ids, return_inverse=True)
        img_f = F.normalize(model.encode_image(torch.from_numpy(images[idx.numpy()]).float()), dim=-1)
        txt_f = F.normalize(model.encode_text(tokens[uniq]), dim=-1)
        logits = model.logit_scale.exp() * img_f @ txt_f.t()  # [B, U]
        loss_i = F.cross_entropy(logits, inverse)
        pos = (inverse[None, :] == torch.arange(len(uniq))[:, None]).float()  # [U, B]
        loss_t = -(F.log_softmax(logits.t(), dim=-1) * pos / pos.sum(1, keepdim=True)).sum(1).mean()
        loss = 0.5 * (loss_i + loss_t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100))
        loss_value = float(loss.detach())
        if step % log_every == 0:
            bar.set_postfix(loss=f"{loss_value:.3f}")
    model.eval()
    accuracy = region_zero_shot_accuracy(model, tokenizer, seed + 1, spec.image_size)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(out_path)
    summary = {"loss": loss_value, "seconds": time.time() - start, **accuracy,
               "spec": spec.__dict__}
    out_path.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    return summary


@torch.no_grad()
def region_zero_shot_accuracy(model: CLIP, tokenizer, seed: int, image_size: int,
                              num_scenes: int = 40) -> dict[str, float]:
    """Top-1 accuracy of classifying held-out segments by name, seen and unseen classes."""
    classes = world_classes()
    rng = np.random.default_rng(seed)
    prompts = tokenizer([f"a {c.name}." for c in classes],
                        context_length=model.positional_embedding.shape[0])
    text_f = F.normalize(model.encode_text(prompts), dim=-1)
    hits = {True: [], False: []}
    for _ in range(num_scenes):
        scene = render_scene(classes, rng)
        crops = _region_crops(scene.image, [s.mask for s in scene.segments], image_size)
        img_f = F.normalize(model.encode_image(torch.from_numpy(crops)), dim=-1)
        pred = (img_f @ text_f.t()).argmax(-1)
        for seg, p in zip(scene.segments, pred.tolist()):
            hits[seg.category.seen].append(classes[p].id == seg.category.id)
    return {"region_acc_seen": float(np.mean(hits[True])),
            "region_acc_unseen": float(np.mean(hits[False])) if hits[False] else float("nan")}

