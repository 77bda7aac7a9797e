"""Checks that the vendored Chart.js is the pinned release and its pin check works."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CHARTJS = Path(__file__).resolve().parents[1] / "static" / "vendor" / "chartjs"


def run_check(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(directory / "update.sh"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_vendored_chartjs_matches_the_pinned_sha256() -> None:
    result = run_check(CHARTJS)
    assert result.returncode == 0, result.stderr


def test_vendored_chartjs_is_the_version_named_in_version_file() -> None:
    version_line = (CHARTJS / "VERSION").read_text().splitlines()[0]
    name, version = version_line.split()
    banner = (CHARTJS / "chart.umd.min.js").read_text()[:200]
    assert name == "chart.js"
    assert version.startswith("4.")
    assert banner.startswith("/*!\n * Chart.js v4")
    assert f"Chart.js v{version}\n" in banner


def test_vendored_chartjs_points_at_no_missing_source_map() -> None:
    # Manifest static storage aborts collectstatic on a sourceMappingURL to an absent file.
    text = (CHARTJS / "chart.umd.min.js").read_text()
    assert "sourceMappingURL" not in text
    assert "MIT" in (CHARTJS / "LICENSE.md").read_text()


def test_check_fails_when_the_vendored_file_is_altered(tmp_path: Path) -> None:
    copy = tmp_path / "chartjs"
    shutil.copytree(CHARTJS, copy)
    with (copy / "chart.umd.min.js").open("a") as handle:
        handle.write("\n// tampered\n")
    result = run_check(copy)
    assert result.returncode != 0
    assert "sha256 mismatch" in result.stderr
