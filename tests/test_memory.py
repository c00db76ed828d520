"""The CLI's malloc tuning: applied on glibc, a no-op elsewhere, never an error."""

from __future__ import annotations

import platform
import subprocess
import sys

from mirrorppr_cli import memory


def test_keep_freed_memory_takes_effect_on_glibc():
    code = "from mirrorppr_cli.memory import keep_freed_memory as k; print(k(), k())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    expected = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert out.stdout.split() == [str(expected)] * 2


def test_keep_freed_memory_changes_nothing_off_linux(monkeypatch):
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    assert memory.keep_freed_memory() is False
