"""Resumable evaluation: progress saved as images are done, a stopped run continued by the same
command, with metrics equal to an uninterrupted run's."""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from freeseg.evaluation import DatasetEvaluator, DatasetEvaluators, SemSegEvaluator, inference_on_dataset
from freeseg.evaluation.evaluator import EvaluationStopped
from freeseg.evaluation.progress import EvaluationProgress
from freeseg.utils.errors import FreeSegError

K = 3


@pytest.fixture
def samples(tmp_path):
    """6 images with 8x8 random ground truth label maps (some ignore pixels)."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(6):
        gt = rng.integers(0, K, size=(8, 8)).astype(np.uint8)
        gt[0, :2] = 255
        path = tmp_path / f"gt_{i}.png"
        Image.fromarray(gt).save(path)
        out.append({"file_name": f"img_{i}.jpg", "sem_seg_file_name": str(path), "image_id": i})
    return out


class Predictor(torch.nn.Module):
    """Scores from the image index; ``stop_at``: send ``signal_`` to itself before that image."""

    def __init__(self, stop_at: int | None = None, signal_: int = signal.SIGINT):
        super().__init__()
        self.stop_at, self.signal_, self.calls = stop_at, signal_, []

    def forward(self, batch):
        out = []
        for inp in batch:
            i = inp["image_id"]
            if i == self.stop_at:
                signal.raise_signal(self.signal_)  # handled before it returns
            self.calls.append(i)
            g = torch.Generator().manual_seed(100 + i)
            out.append({"sem_seg": torch.rand(K, 8, 8, generator=g)})
        return out


def _evaluator():
    return SemSegEvaluator(class_names=["a", "b", "c"], trainable_flag=[1, 1, 0])


def _loader(samples):
    return [[s] for s in samples]


def test_stopped_evaluation_continues_where_it_stopped_with_the_same_metrics(samples, tmp_path):
    full = inference_on_dataset(Predictor(), _loader(samples), _evaluator())["sem_seg"]

    path = str(tmp_path / "progress" / "eval_progress.rank0.pth")
    first = Predictor(stop_at=3)
    with pytest.raises(EvaluationStopped, match=r"^evaluation stopped by SIGINT: 3 of 6 images evaluated on "
                                                r"this process are saved in .*eval_progress.rank0.pth; run the same "
                                                r"command again to continue") as info:
        inference_on_dataset(first, _loader(samples), _evaluator(), EvaluationProgress(path, "settings A"))
    assert info.value.exit_status == 130 and first.calls == [0, 1, 2]
    assert os.path.isfile(path)

    second = Predictor()
    resumed = inference_on_dataset(second, _loader(samples), _evaluator(), EvaluationProgress(path, "settings A"))
    assert second.calls == [3, 4, 5]  # the first three are not evaluated again
    assert resumed["sem_seg"] == full
    assert not os.path.exists(path)  # done: the next run starts over


def test_sigterm_saves_too_and_exits_143(samples, tmp_path):
    path = str(tmp_path / "p.pth")
    with pytest.raises(EvaluationStopped, match="stopped by SIGTERM: 1 of 6") as info:
        inference_on_dataset(Predictor(stop_at=1, signal_=signal.SIGTERM), _loader(samples), _evaluator(),
                             EvaluationProgress(path, "s"))
    assert info.value.exit_status == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back


def test_other_settings_start_over(samples, tmp_path, caplog):
    path = str(tmp_path / "p.pth")
    with pytest.raises(EvaluationStopped):
        inference_on_dataset(Predictor(stop_at=2), _loader(samples), _evaluator(), EvaluationProgress(path, "weights A"))
    again = Predictor()
    inference_on_dataset(again, _loader(samples), _evaluator(), EvaluationProgress(path, "weights B"))
    assert again.calls == list(range(6))
    assert "from a run with other settings" in caplog.text


def test_a_data_set_edited_since_the_stop_is_an_error(samples, tmp_path):
    path = str(tmp_path / "p.pth")
    with pytest.raises(EvaluationStopped):
        inference_on_dataset(Predictor(stop_at=2), _loader(samples), _evaluator(), EvaluationProgress(path, "s"))
    edited = [samples[1], samples[0], *samples[2:]]
    with pytest.raises(FreeSegError, match=r"the data set changed since the interrupted evaluation saved in .*p.pth: "
                                           r"its sample 1 is img_1.jpg, was img_0.jpg; delete that file"):
        inference_on_dataset(Predictor(), _loader(edited), _evaluator(), EvaluationProgress(path, "s"))


class Flaky(SemSegEvaluator):
    """Stops (SIGINT) in the middle of processing image ``stop_at``: after counting it."""

    def __init__(self, stop_at=None):
        super().__init__(class_names=["a", "b", "c"], trainable_flag=[1, 1, 0])
        self.stop_at = stop_at

    def process(self, inputs, outputs):
        super().process(inputs, outputs)
        if inputs[0]["image_id"] == self.stop_at:
            signal.raise_signal(signal.SIGINT)


def test_a_stop_inside_the_evaluator_keeps_the_last_whole_image_state(samples, tmp_path):
    """The evaluator's state includes half of image 3 when the signal lands: saving it would count
    image 3 twice after the resume. The file saved after image 2 (interval 0: after every image)
    stands instead."""
    full = inference_on_dataset(Predictor(), _loader(samples), _evaluator())["sem_seg"]
    path = str(tmp_path / "p.pth")
    with pytest.raises(EvaluationStopped, match=r"stopped by SIGINT: 3 of 6 images evaluated on this process are saved"):
        inference_on_dataset(Predictor(), _loader(samples), Flaky(stop_at=3), EvaluationProgress(path, "s", 0.0))
    second = Predictor()
    resumed = inference_on_dataset(second, _loader(samples), Flaky(), EvaluationProgress(path, "s"))
    assert second.calls == [3, 4, 5]
    assert resumed["sem_seg"] == full


def test_an_error_outside_the_evaluator_saves_what_is_done(samples, tmp_path):
    class Broken(Predictor):
        def forward(self, batch):
            if batch[0]["image_id"] == 4:
                raise RuntimeError("CUDA out of memory")
            return super().forward(batch)

    path = str(tmp_path / "p.pth")
    with pytest.raises(RuntimeError, match="out of memory"):
        inference_on_dataset(Broken(), _loader(samples), _evaluator(), EvaluationProgress(path, "s"))
    second = Predictor()
    inference_on_dataset(second, _loader(samples), _evaluator(), EvaluationProgress(path, "s"))
    assert second.calls == [4, 5]


def test_stage1_samples_of_one_image_are_told_apart(tmp_path):
    """Stage-1 evaluation has one sample per class of an image: same file name, other class."""
    progress = EvaluationProgress(str(tmp_path / "p.pth"), "s")
    progress.done = ["a.jpg#1", "a.jpg#2"]
    assert progress.pending([{"file_name": "a.jpg", "category_id": 1}]) == []
    with pytest.raises(FreeSegError, match="its sample 2 is a.jpg#5, was a.jpg#2"):
        progress.pending([{"file_name": "a.jpg", "category_id": 5}])


def test_evaluators_without_a_state_run_without_progress(samples, tmp_path):
    class Counter(DatasetEvaluator):
        def reset(self):
            self.n = 0

        def process(self, inputs, outputs):
            self.n += len(inputs)

        def evaluate(self):
            return {"count": {"n": self.n}}

    path = tmp_path / "p.pth"
    res = inference_on_dataset(Predictor(), _loader(samples), DatasetEvaluators([_evaluator(), Counter()]),
                               EvaluationProgress(str(path), "s", 0.0))
    assert res["count"] == {"n": 6} and not path.exists()


def test_a_damaged_progress_file_means_starting_over(samples, tmp_path, caplog):
    path = tmp_path / "p.pth"
    path.write_bytes(b"not a checkpoint")
    again = Predictor()
    inference_on_dataset(again, _loader(samples), _evaluator(), EvaluationProgress(str(path), "s"))
    assert again.calls == list(range(6)) and "is unreadable" in caplog.text


def _child_interrupted() -> None:
    try:
        signal.raise_signal(signal.SIGINT)
        signal.pause()
    except KeyboardInterrupt:  # what PyTorch's worker loop expects, and exits quietly on
        os._exit(0)
    os._exit(3)


def test_forked_loader_workers_keep_the_default_signal_behaviour():
    """A terminal's Ctrl-C reaches the data loader workers too; forked during the evaluation they
    inherit its handler, which must not raise the main process's stop there (the worker would
    die with an error and the main process report that instead of saving)."""
    import multiprocessing

    from freeseg.evaluation.evaluator import _signals_raise_stop

    with _signals_raise_stop():
        child = multiprocessing.get_context("fork").Process(target=_child_interrupted)
        child.start()
        child.join(timeout=30)
    assert child.exitcode == 0


def test_a_failure_while_computing_metrics_keeps_every_image(samples, tmp_path):
    class FailingMetrics(SemSegEvaluator):
        def evaluate(self):
            raise RuntimeError("disk full")

    path = str(tmp_path / "p.pth")
    evaluator = FailingMetrics(class_names=["a", "b", "c"], trainable_flag=[1, 1, 0])
    with pytest.raises(RuntimeError, match="disk full"):  # interval 1 h: no save during the loop
        inference_on_dataset(Predictor(), _loader(samples), evaluator, EvaluationProgress(path, "s", 3600.0))
    again = Predictor()
    res = inference_on_dataset(again, _loader(samples), _evaluator(), EvaluationProgress(path, "s"))
    assert again.calls == [] and res["sem_seg"] == inference_on_dataset(Predictor(), _loader(samples), _evaluator())["sem_seg"]


def test_a_continued_run_does_not_read_the_images_it_skips(samples, tmp_path):
    """With the project's test loader, the samples done before the stop come through unmapped:
    their names are checked, their images not read."""
    from freeseg.data.loaders import build_test_loader_from

    mapped = []

    def mapper(d):
        mapped.append(d["image_id"])
        return dict(d)

    path = str(tmp_path / "p.pth")
    with pytest.raises(EvaluationStopped):
        inference_on_dataset(Predictor(stop_at=4), build_test_loader_from(samples, mapper), _evaluator(),
                             EvaluationProgress(path, "s"))
    mapped.clear()
    second = Predictor()
    res = inference_on_dataset(second, build_test_loader_from(samples, mapper), _evaluator(), EvaluationProgress(path, "s"))
    assert mapped == [4, 5] and second.calls == [4, 5]
    assert res["sem_seg"] == inference_on_dataset(Predictor(), _loader(samples), _evaluator())["sem_seg"]
