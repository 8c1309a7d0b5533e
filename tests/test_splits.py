"""Training on several folders: the hashed selection split, held-out folders, per-folder NME."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from synthetic import make_labelled_folder

from tracker.models.checkpoint import load_checkpoint
from tracker.training import splits
from tracker.training.train import TrainConfig, Trainer


def named_folder(root: Path, names: list[str], seed: int) -> Path:
    """A labelled folder of noise images under the given file stems."""
    root.mkdir(parents=True)
    make_labelled_folder(root, len(names), (96, 96), 30, 66, seed=seed)
    for i, name in enumerate(names):
        for suffix in (".jpg", ".pts"):
            (root / f"f{i}{suffix}").rename(root / f"{name}{suffix}")
    return root


PERSONS = [f"Person_{k}" for k in range(12)]
INFANTS = [f"train_google-{k:02d}" for k in range(10)]
FACES = [f"{p}_{j:02d}{b}" for p in PERSONS for j, b in ((0, ""), (1, ""), (1, "b"))]


@pytest.mark.parametrize(("name", "group"), [
    ("Abdel_Aziz_Al-Hakim_01b", "Abdel_Aziz_Al-Hakim"),  # faces68: the person
    ("Abdullah_Gul_52.jpg", "Abdullah_Gul"),
    ("afw_111076519_2", "afw_111076519"),  # 300-W: the photo
    ("helen_train_100032540_1", "helen_train_100032540"),
    ("test_google_google-00", "test_google_google-00"),
    ("f3", "f3"),
])
def test_group_key_is_the_person_or_photo(name: str, group: str) -> None:
    assert splits.group_key(name) == group


def test_the_hash_is_pinned_and_persons_stay_together() -> None:
    # SHA-256 based: the same in every run, process and machine (Python's hash() is salted)
    assert splits.hash_fraction("Abdel_Aziz_Al-Hakim") == pytest.approx(0.6655849735898111)
    chosen = {n for n in FACES if splits.in_selection(n, 0.3)}
    for person in PERSONS:
        mine = {n for n in FACES if n.startswith(person + "_")}
        assert mine <= chosen or not mine & chosen, person
    assert 0 < len(chosen) < len(FACES)
    assert chosen <= {n for n in FACES if splits.in_selection(n, 0.6)}  # nested in the fraction


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("multi")
    a = named_folder(root / "faces" / "train", FACES, seed=0)
    b = named_folder(root / "infant", INFANTS + [f"test_google-{k:02d}" for k in range(4)], seed=1)
    return a, b


def test_selection_split_is_deterministic_disjoint_and_drops_infant_tests(
        folders: tuple[Path, Path]) -> None:
    a, b = folders
    one = splits.load_train_data([a, b], 0.3)
    two = splits.load_train_data([a, b], 0.3)
    names = lambda ss: [s.name for s in ss]  # noqa: E731
    assert names(one.train) == names(two.train) and names(one.select) == names(two.select)
    assert not set(names(one.train)) & set(names(one.select))
    assert sorted(names(one.train) + names(one.select)) == sorted(FACES + INFANTS)
    assert not any(n.startswith("test_") for n in names(one.train) + names(one.select))
    assert one.dropped == {str(b): 4}
    counts = one.counts()
    assert set(counts) == {str(a), str(b)} and all(t > 0 and s > 0 for t, s in counts.values())
    assert sum(s for _, s in counts.values()) == len(one.select)
    first, held = splits.load_kept(b, limit=3)  # the limit counts kept images only
    assert [s.name for s in first] == INFANTS[:3] and held == 4


@pytest.mark.parametrize("held_out", ["val", "test", "Validation"])
def test_held_out_folders_are_refused(tmp_path: Path, held_out: str) -> None:
    folder = named_folder(tmp_path / "data" / held_out, ["x_1", "y_1"], seed=0)
    with pytest.raises(ValueError, match="held out"):
        splits.load_train_data([folder], 0.5)
    ok = named_folder(tmp_path / "data" / "train", ["x_1", "y_1"], seed=0)
    with pytest.raises(ValueError, match="selection"):
        splits.load_train_data([ok], val=folder)


def test_bad_fraction_and_empty_selection_are_errors(folders: tuple[Path, Path]) -> None:
    a, _ = folders
    for frac in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="select-frac"):
            splits.load_train_data([a], frac)
    with pytest.raises(ValueError, match="selection set is empty"):
        splits.load_train_data([a], 1e-9)


def test_trainer_selects_on_the_split_and_reports_each_folder(folders: tuple[Path, Path],
                                                              tmp_path: Path) -> None:
    a, b = folders
    cfg = TrainConfig(train=(str(a), str(b)), select_frac=0.3, out=str(tmp_path), epochs=1,
                      batch=8, threads=1, limit=0)
    trainer = Trainer(cfg)
    trainer.run()
    assert set(trainer.best_by_folder) == {str(a), str(b)}
    log = (tmp_path / "log.txt").read_text()
    assert f"# data {b}: " in log and "4 InfAnFace test_ images held out" in log
    assert f"[{a} " in log  # the epoch line lists each folder's selection NME
    assert f"# best.pt selection NME {b}: " in log
    meta = load_checkpoint(tmp_path / "best.pt").meta
    assert set(meta["val_nme_by_folder"]) == {str(a), str(b)}
    assert TrainConfig(train=str(a)).train == (str(a),)  # one folder as a plain path still works
    assert replace(cfg, train=[str(a)]).train == (str(a),)


def test_train_cli_refuses_val_folders_in_one_line(folders: tuple[Path, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from tracker.cli.app import ExitCode, main

    a, _ = folders
    val = named_folder(tmp_path / "val", ["x_1", "y_1"], seed=3)
    base = ["train", "--out", str(tmp_path / "r"), "--epochs", "1", "--threads", "1"]
    cases = [["--data", str(val)], ["--data", str(a), "--data", str(val)],
             ["--data", str(a), "--val", str(val)],
             ["--data", str(a), "--val", str(a), "--select-frac", "0.2"],
             ["--data", str(a), "--select-frac", "1.5"],
             ["--data", str(a), "--flip-folder", str(val)],
             ["--data", str(a), "--select-on", str(val)]]
    for extra in cases:
        assert main([*base, *extra]) == ExitCode.USAGE, extra
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, err
    assert not (tmp_path / "r" / "best.pt").exists()


def test_folder_weights_resample_each_epoch(folders: tuple[Path, Path]) -> None:
    import numpy as np

    a, b = folders
    assert splits.folder_weight(f"{a}@3") == (str(a), 3.0)
    assert splits.folder_weight(a) == (str(a), 1.0)
    for bad in ("x", "0", "-1", "inf"):
        with pytest.raises(ValueError, match="sampling weight"):
            splits.folder_weight(f"{a}@{bad}")
    plain = splits.load_train_data([a, b], 0.3)
    data = splits.load_train_data([f"{a}@0.5", f"{b}@3"], 0.3)
    assert [s.name for s in data.select] == [s.name for s in plain.select]  # never reweighted
    assert set(data.counts()) == {str(a), str(b)}  # the folders are named without the weight
    n_a, n_b = data.counts()[str(a)][0], data.counts()[str(b)][0]
    rng = np.random.default_rng(0)
    order = data.epoch_order(rng)
    groups = np.array(data.train_groups, dtype=object)[order]
    assert len(order) == data.epoch_size() == round(0.5 * n_a) + 3 * n_b
    assert (groups == str(b)).sum() == 3 * n_b and (groups == str(a)).sum() == round(0.5 * n_a)
    b_idx = order[groups == str(b)]
    assert all(np.count_nonzero(b_idx == i) == 3 for i in set(b_idx.tolist()))  # each thrice
    assert len(set(order[groups == str(a)].tolist())) == round(0.5 * n_a)  # a half, no repeats
    assert not np.array_equal(data.epoch_order(rng), order)  # drawn afresh every epoch
    # weight 1 everywhere: the same order the unweighted trainer drew (a plain permutation)
    same = plain.epoch_order(np.random.default_rng(5))
    assert np.array_equal(same, np.random.default_rng(5).permutation(len(plain.train)))


def test_flip_folders_flip_only_their_images() -> None:
    """``batches`` with a per-sample flip mask: masked samples flip about half the time, the
    others never, whatever the augmentation's own ``flip``."""
    import numpy as np

    from tracker.io.pts import Sample
    from tracker.training.data import Augment, batches

    rng = np.random.default_rng(0)
    pts = np.stack([np.linspace(20, 70, 68), np.linspace(25, 75, 68) ** 1.02], 1).astype(np.float32)
    image = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
    samples = [Sample(f"s{i}", image, pts) for i in range(2)]
    aug = Augment(scale=0, rotate_deg=0, shift=0, box_jitter=0, flip=False, photometric=False,
                  occlude_p=0)
    plain = next(batches(samples, 32, 2, rng, None, shuffle=False))[1][0]
    flipped = {0: 0, 1: 0}
    for _ in range(40):
        _, out = next(batches(samples, 32, 2, rng, aug, shuffle=False, flip=np.array([False, True])))
        for i in (0, 1):
            flipped[i] += int(not np.allclose(out[i], plain, atol=1e-3))
    assert flipped[0] == 0 and 8 <= flipped[1] <= 32


def test_select_on_picks_best_by_one_folder_and_folders_are_checked(
        folders: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = folders
    with pytest.raises(ValueError, match="not one of the training folders"):
        TrainConfig(train=(str(a),), flip_folders=(str(b),))
    with pytest.raises(ValueError, match="not one of the training folders"):
        TrainConfig(train=(str(a),), select_on=str(b))
    cfg = TrainConfig(train=(f"{a}@2", str(b)), select_frac=0.3, out=str(tmp_path), epochs=2,
                      batch=8, threads=1, select_on=str(b), flip_folders=(str(a),), flip=False)
    trainer = Trainer(cfg)
    best = trainer.run()
    assert best == pytest.approx(trainer.best_by_folder[str(b)])


def test_the_temporal_model_trains_outside_the_selection_slice(tmp_path: Path) -> None:
    from tracker.training.temporal_train import training_samples

    folder = named_folder(tmp_path / "train", FACES, seed=5)
    every = training_samples((str(folder),), None)
    kept = training_samples((str(folder),), None, select_frac=0.3)
    left_out = {s.name for s in every} - {s.name for s in kept}
    assert left_out == {f for f in FACES if splits.in_selection(f, 0.3)} and left_out
    assert all(not splits.in_selection(s.name, 0.3) for s in kept)
    with pytest.raises(ValueError, match="held out"):
        training_samples((str(tmp_path / "val"),), None)
