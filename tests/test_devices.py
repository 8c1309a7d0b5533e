"""``tracker devices``: cameras from /dev/video* and sysfs names; none is not an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracker.cli import devices, main


def fake_v4l2(tmp_path: Path) -> tuple[Path, Path]:
    dev, sysfs = tmp_path / "dev", tmp_path / "sys"
    dev.mkdir()
    for n, name, index in ((0, "Integrated Camera: Integrated C", "0"), (1, "Integrated Camera", "1"),
                           (10, "USB Cam", "0")):
        (dev / f"video{n}").write_bytes(b"")
        (sysfs / f"video{n}").mkdir(parents=True)
        (sysfs / f"video{n}" / "name").write_text(name + "\n")
        (sysfs / f"video{n}" / "index").write_text(index + "\n")
    (dev / "videoX").write_bytes(b"")
    return dev, sysfs


def test_cameras_are_listed_with_their_names(tmp_path: Path) -> None:
    dev, sysfs = fake_v4l2(tmp_path)
    cams = devices.list_cameras(dev, sysfs, modes=False)
    assert [(c.index, c.name, c.capture) for c in cams] == [
        (0, "Integrated Camera: Integrated C", True), (1, "Integrated Camera", False),
        (10, "USB Cam", True)]


@pytest.mark.skipif(not devices.sys.platform.startswith("linux"), reason="Linux listing")
def test_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                     capsys: pytest.CaptureFixture[str]) -> None:
    dev, sysfs = fake_v4l2(tmp_path)
    monkeypatch.setattr(devices, "DEV", dev)
    monkeypatch.setattr(devices, "SYSFS", sysfs)
    monkeypatch.setattr(devices.shutil, "which", lambda _: None)
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert f"webcam:10  {dev / 'video10'}  USB Cam" in out and "metadata node" in out
    monkeypatch.setattr(devices, "DEV", tmp_path / "empty")
    assert main(["devices"]) == 0
    assert capsys.readouterr().out == "no cameras found\n"
