"""The training example (examples/train_video_text.py) runs end to end on tiny sizes, and its pieces do what
its report says."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def example(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import train_video_text

    return train_video_text


def test_example_runs_a_few_steps_and_writes_its_report(example, tmp_path):
    pytest.importorskip("matplotlib")
    argv = ["--noise", "0.0", "0.6", "--steps", "3", "--lrs", "1e-3", "3e-3", "--train-pairs", "16",
            "--test-pairs", "10", "--batch", "8", "--dim", "8", "--threads", "1", "--out", str(tmp_path)]
    results = example.main(argv)
    assert sorted(results) == sorted((noise, method) for noise in (0.0, 0.6) for method in example.METHODS)
    for row in results.values():
        assert 0 <= row["R@1"] <= row["R@5"] <= 100 and 1 <= row["median rank"] <= 10
    report = (tmp_path / "results.md").read_text()
    assert report.count("| 0.6 |") == len(example.METHODS) + 1  # the retrieval rows and the skip-mass row
    assert "SIMD" in report and "UTC" in report
    for picture in ("training_curves.png", "alignment.png"):
        assert (tmp_path / picture).stat().st_size > 1000


def test_example_help():
    done = subprocess.run([sys.executable, str(EXAMPLES / "train_video_text.py"), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--noise" in done.stdout and "--steps" in done.stdout


BAD_ARGUMENTS = [["--noise", "0.4", "0.4"], ["--noise", "1.5"], ["--batch", "64", "--train-pairs", "32"],
                 ["--test-pairs", "1"]]


@pytest.mark.parametrize("bad", BAD_ARGUMENTS)
def test_example_refuses_bad_arguments(example, bad):
    with pytest.raises(SystemExit):
        example.parse_args(bad)


def test_retrieval_ranks(example):
    scores = torch.tensor([[3.0, 1.0, 2.0], [0.0, 1.0, 5.0], [1.0, 4.0, 2.0]])  # (captions, videos)
    # caption 0's video is ranked 1st, caption 1's 2nd, caption 2's 2nd
    assert example.retrieval(scores) == {"R@1": pytest.approx(100 / 3), "R@5": 100.0, "median rank": 2.0}
    # a model that scores everything alike has found nothing: ties rank the true video last
    assert example.retrieval(torch.zeros(6, 6)) == {"R@1": 0.0, "R@5": 0.0, "median rank": 6.0}


def test_synthetic_pairs_follow_the_noise_level(example):
    from video_text_data import STEPS_PER_TASK, make_pairs, make_world

    gen = torch.Generator().manual_seed(0)
    world = make_world(8, gen)
    clean, noisy = make_pairs(world, 50, 0.0, gen), make_pairs(world, 50, 0.9, gen)
    assert not clean.irrelevant_clips.any() and not clean.irrelevant_captions.any()
    # clean videos show every step, in order, each for one or two clips
    for captions, length in zip(clean.clip_captions, clean.video_lengths, strict=True):
        shown = captions[:length]
        assert (shown[1:] >= shown[:-1]).all() and set(shown.tolist()) == set(range(STEPS_PER_TASK))
        assert STEPS_PER_TASK <= length <= 2 * STEPS_PER_TASK and (captions[length:] == -1).all()
    assert noisy.irrelevant_clips.float().mean() > 0.1 and noisy.irrelevant_captions.float().mean() > 0.1
    padding = torch.arange(noisy.video.shape[1]) >= noisy.video_lengths[:, None]
    assert (noisy.video[padding] == 0).all() and not noisy.irrelevant_clips[padding].any()
