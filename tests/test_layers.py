"""The package's architecture as a contract: imports point down the layers, no cycles, and
run-time code never imports training or evaluation code (``.importlinter``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the ``tracker`` package found under ``root``."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--config", str(root / ".importlinter"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_the_package_keeps_its_import_contracts() -> None:
    proc = lint(ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "3 kept, 0 broken" in proc.stdout


@pytest.mark.parametrize("module, line, broken", [
    # an upward import: the record types reaching for the command line
    ("types.py", "import tracker.cli.app  # noqa", "Layers"),
    # run-time code importing training code (also upward)
    ("engines/registry.py", "import tracker.training.data  # noqa", "Run-time code never imports"),
    # a cycle inside one package: base <-> registry
    ("engines/base.py", "import tracker.engines.registry  # noqa", "No import cycles"),
])
def test_a_violation_breaks_the_contract(tmp_path: Path, module: str, line: str,
                                         broken: str) -> None:
    shutil.copytree(ROOT / "tracker", tmp_path / "tracker",
                    ignore=shutil.ignore_patterns("weights", "detectors", "__pycache__", "demo"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    target = tmp_path / "tracker" / module
    target.write_text(target.read_text() + f"\n{line}\n")
    proc = lint(tmp_path)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert f"{broken}" in proc.stdout and "BROKEN" in proc.stdout, proc.stdout[-3000:]
