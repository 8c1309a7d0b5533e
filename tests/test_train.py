"""Training loop: weight EMA (validated, saved, resumed), partial warm start, rotation sampling."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import make_labelled_folder

from tracker.models.checkpoint import load_checkpoint
from tracker.training.data import Augment, _rotation
from tracker.training.train import TrainConfig, Trainer, distill_loss, ema_avg_fn, prefetch


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_labelled_folder(tmp_path_factory.mktemp("faces"), 6, (96, 96), 30, 66, seed=0)


def _cfg(folder: Path, out: Path, **kw: object) -> TrainConfig:
    return replace(TrainConfig(train=str(folder), val=str(folder), out=str(out), epochs=1, batch=3,
                               threads=1), **kw)


def test_ema_weights_are_validated_saved_and_resumed(folder: Path, tmp_path: Path) -> None:
    cfg = _cfg(folder, tmp_path, ema=0.5)
    trainer = Trainer(cfg)
    trainer.run()
    raw = trainer.model.state_dict()["head.weight"]
    ema = trainer.ema.module.state_dict()["head.weight"]
    assert not torch.equal(raw, ema)  # the average lags the raw weights
    saved = load_checkpoint(tmp_path / "best.pt").model.state_dict()["head.weight"]
    assert torch.equal(saved, ema)  # epoch 1 is always the best so far: its EMA was saved
    resumed = Trainer(replace(cfg, resume=True))
    assert resumed.epoch == 1
    assert torch.equal(resumed.ema.module.state_dict()["head.weight"], ema)


def test_warm_start_copies_only_matching_tensors(folder: Path, tmp_path: Path) -> None:
    Trainer(_cfg(folder, tmp_path / "lite")).run()
    src = load_checkpoint(tmp_path / "lite" / "best.pt").model.state_dict()
    wide = Trainer(_cfg(folder, tmp_path / "wide", model="rcn_lite_wide",
                        init=str(tmp_path / "lite" / "best.pt")))
    own = wide.model.state_dict()
    same = [k for k in own if own[k].shape == src[k].shape]
    different = [k for k in own if own[k].shape != src[k].shape]
    assert same and different
    assert all(torch.equal(own[k], src[k]) for k in same)


def test_rotation_is_uniform_or_clipped_normal() -> None:
    rng = np.random.default_rng(3)
    uniform = np.array([_rotation(rng, Augment()) for _ in range(4000)])
    normal = np.array([_rotation(rng, Augment(rotate_sigma=12.0)) for _ in range(4000)])
    assert np.abs(uniform).max() <= 30 and np.abs(normal).max() <= 30
    assert uniform.std() == pytest.approx(30 / np.sqrt(3), rel=0.05)
    assert normal.std() == pytest.approx(12.0, rel=0.08)
    assert (np.abs(normal) == 30).any()  # the tail is clipped to the range, not redrawn


def test_ema_warms_up_then_uses_its_decay() -> None:
    avg = ema_avg_fn(0.998)
    a, c = [torch.zeros(3), torch.zeros(2)], [torch.ones(3), torch.ones(2)]
    avg(a, c, torch.tensor(0))
    assert all(torch.allclose(t, torch.full_like(t, 0.9)) for t in a)  # d = 1/10 at first
    a = [torch.zeros(3)]
    avg(a, [torch.ones(3)], torch.tensor(10_000))
    assert torch.allclose(a[0], torch.full((3,), 0.002))
    counter = [torch.tensor(100)]  # integer buffers follow the same average, truncated
    avg(counter, [torch.tensor(200)], torch.tensor(0))
    assert counter[0].item() == 190


def test_time_budget_shrinks_the_schedule_and_resume_keeps_it(folder: Path, tmp_path: Path) -> None:
    cfg = _cfg(folder, tmp_path, epochs=500, minutes=1e-6)  # a budget no epoch fits in
    trainer = Trainer(cfg)
    trainer.run()
    assert trainer.epoch == 1 and trainer.epochs == 1  # stopped after the first (timed) epoch
    total = trainer.sched.total_steps
    assert total == trainer.steps_per_epoch
    resumed = Trainer(replace(cfg, resume=True))
    assert resumed.epochs == 1 and resumed.sched.total_steps == total


def test_budget_uses_the_pace_after_the_first_epoch_and_can_grow() -> None:
    trainer = Trainer.__new__(Trainer)
    trainer.cfg = TrainConfig(lr=1e-2, epochs=100, minutes=1.0)
    trainer.opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-2)
    trainer.steps_per_epoch, trainer.epoch, trainer.epochs = 10, 1, 100
    trainer.fit_budget(30.0, [30.0])  # a slow first epoch: 1 more fits in the minute
    assert trainer.epochs == 2
    trainer.epoch = 2
    trainer.fit_budget(32.0, [30.0, 2.0])  # then 2 s an epoch: 14 more fit
    assert trainer.epochs == 16 and trainer.sched.total_steps == 160
    trainer.fit_budget(32.0, [30.0, 0.01])  # never beyond --epochs
    assert trainer.epochs == 100


def test_rebuilt_schedule_continues_where_the_steps_are() -> None:
    trainer = Trainer.__new__(Trainer)
    trainer.cfg = TrainConfig(lr=1e-2)
    trainer.opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-2)
    trainer.steps_per_epoch, trainer.epoch = 10, 5
    lrs = [trainer.one_cycle(e).get_last_lr()[0] for e in (10, 6)]
    assert lrs[1] < lrs[0]  # epoch 5 of 6 is further down the cosine than epoch 5 of 10


def test_prefetch_keeps_order_and_raises_the_producers_error() -> None:
    assert list(prefetch(iter(range(20)), depth=2)) == list(range(20))

    def broken():  # noqa: ANN202
        yield 1
        raise RuntimeError("bad image")

    got = []
    with pytest.raises(RuntimeError, match="bad image"):
        for item in prefetch(broken()):
            got.append(item)
    assert got == [1]


def test_distill_loss_is_smallest_at_the_teachers_maps() -> None:
    teacher = torch.randn(2, 3, 8, 8) * 3
    p = torch.softmax(teacher.reshape(2, 3, -1), -1)
    entropy = -(p * torch.log(p)).sum(-1).mean()
    assert torch.allclose(distill_loss(teacher, teacher), entropy, atol=1e-5)
    assert distill_loss(teacher + torch.randn_like(teacher), teacher) > entropy


def test_a_teacher_must_match_the_students_input(folder: Path, tmp_path: Path) -> None:
    Trainer(_cfg(folder, tmp_path / "t")).run()
    teacher = str(tmp_path / "t" / "best.pt")
    trainer = Trainer(_cfg(folder, tmp_path / "s", teacher=teacher, kd_weight=0.5))
    assert trainer.teacher is not None
    assert not any(p.requires_grad for p in trainer.teacher.parameters())
    trainer.run()
    assert (tmp_path / "s" / "best.pt").is_file()
    with pytest.raises(ValueError, match="teacher"):
        Trainer(_cfg(folder, tmp_path / "w", model="rcn_lite80", teacher=teacher))


def test_train_cli_option_errors_are_one_line(folder: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from tracker.cli.app import ExitCode, main

    base = ["train", "--train", str(folder), "--val", str(folder), "--out", str(tmp_path / "r"),
            "--epochs", "1", "--batch", "3", "--threads", "1"]
    cases = [["--device", "tpu"], ["--teacher", str(tmp_path / "missing.pt")]]
    if not torch.cuda.is_available():
        cases.append(["--device", "cuda"])
    for extra in cases:
        assert main([*base, *extra]) == ExitCode.USAGE
        err = capsys.readouterr().err.strip()
        assert err and "\n" not in err and "Traceback" not in err, err
