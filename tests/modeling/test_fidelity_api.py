"""End-to-end parity with the original FreeSeg through the public API only.

get_cfg → merge_from_file(fixture config.yaml, as is) → build_model → load_checkpoint →
set_vocabulary(fixture names and flags) → call on the fixture's images. Nothing registered.
"""
from __future__ import annotations

import pytest
import torch

import freeseg
from tests.conftest import load_pt

SEM = "semantic segmentation."


@pytest.fixture(scope="module")
def loaded(fixture_a):
    cfg = freeseg.get_cfg()
    cfg.merge_from_file(str(fixture_a / "config.yaml"))
    model = freeseg.build_model(cfg)
    missing, unexpected = freeseg.load_checkpoint(model, str(fixture_a / "model_final.pth"))
    assert missing == [] and unexpected == []
    inputs = load_pt(fixture_a / "inputs.pt")
    model.set_vocabulary(inputs["class_names"], inputs["trainable_flag"], inputs["thing_flags"])
    return model, inputs


@pytest.fixture(scope="module")
def predictions(loaded):
    model, inputs = loaded
    model.eval()
    out = []
    for i, image in enumerate(inputs["images"]):
        batch = [{"image": image, "height": inputs["heights"][i], "width": inputs["widths"][i]}]
        out.append((model(batch)[0], model.predict_tasks(batch)[0]))
    return out


def test_sem_seg_matches_reference(fixture_a, predictions):
    ref = load_pt(fixture_a / "outputs.pt")["per_image"]
    result, tasks = predictions[0]
    assert set(result) == {"sem_seg", "panoptic_seg", "instances"}
    torch.testing.assert_close(result["sem_seg"], ref[0]["sem_seg"], atol=1e-4, rtol=0)
    # Image 1: the reference's semantic-task mask logit at one pixel is 2.7e-7 from the 0.5
    # sigmoid threshold, so that pixel of one crop mask flips with any other summation order
    # (the fixture's own 1- vs 2-thread runs differ by 2.5e-5 on mask logits); the flip moves
    # that query's CLIP score and sem_seg by ~2e-4. Everything else is held to 1e-4.
    result, tasks = predictions[1]
    torch.testing.assert_close(result["sem_seg"], ref[1]["sem_seg"], atol=5e-4, rtol=0)


def test_per_task_predictions_match_reference(fixture_a, predictions):
    ref = load_pt(fixture_a / "outputs.pt")["per_image"]
    for i, (_, tasks) in enumerate(predictions):
        for task, pred in tasks.items():
            r = ref[i]["tasks"][task]
            torch.testing.assert_close(pred.class_embed, r["class_embed"], atol=1e-4, rtol=0)
            torch.testing.assert_close(pred.pred_logits, r["pred_logits"], atol=1e-3, rtol=0)
            torch.testing.assert_close(pred.pred_masks, r["pred_masks"], atol=1e-4, rtol=0)
            torch.testing.assert_close(torch.stack(pred.aux_pred_masks), r["aux_pred_masks"], atol=1e-4, rtol=0)
            torch.testing.assert_close(torch.stack(pred.aux_pred_logits), r["aux_pred_logits"], atol=1e-3, rtol=0)
            assert torch.equal(pred.region.valid, r["clip_valid"])
            torch.testing.assert_close(pred.region.boxes, r["clip_boxes"].float(), atol=0, rtol=0)
            tol = 5e-4 if (i, task) == (1, SEM) else 1e-4  # the one threshold flip, see above
            torch.testing.assert_close(pred.scores, r["ensembled_scores"], atol=tol, rtol=0)


def test_train_step_losses_match_reference(fixture_a, loaded):
    model, _ = loaded
    ref = load_pt(fixture_a / "train_step.pt")
    model.set_vocabulary(ref["class_names"])
    model.sem_seg_head.interaction.attn.dropout = 0.0  # the fixture ran with dropout 0
    model.train()
    batch = [{"image": im, **{k: t[k] for k in ("sem_instances", "ins_instances", "pan_instances")}}
             for im, t in zip(ref["images"], ref["targets"])]
    try:
        for task, r in ref["tasks"].items():
            losses = model.losses(batch, task)
            assert set(losses) == set(r["losses"])
            for name, value in r["losses"].items():
                torch.testing.assert_close(losses[name].detach(), torch.tensor(value), rtol=1e-4, atol=0, msg=name)
    finally:
        model.eval()
