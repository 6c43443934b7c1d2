"""A machine with nothing but pip: the dependencies ask for no system FFmpeg, a test whose program (a browser, a
database server) is absent skips with the line that installs it (and fails under CI=true), and `.ci/run` runs
exactly the README's two commands after installing only what the tests need."""

import re
from pathlib import Path

import pytest
from conftest import require_installed, running_in_ci

REPO_ROOT = Path(__file__).resolve().parents[1]


def readme_quick_start_commands() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_absent_program_skips_with_its_install_line_and_fails_under_ci():
    require_installed(
        True, "anything", "apt-get install anything", environ={"CI": "true"}
    )  # present: nothing
    with pytest.raises(pytest.skip.Exception, match=r"^Chromium is not installed: apt-get install chromium$"):
        require_installed(False, "Chromium", "apt-get install chromium", environ={})
    with pytest.raises(
        pytest.fail.Exception, match=r"^Chromium is not installed: apt-get install chromium \(CI=true"
    ):
        require_installed(False, "Chromium", "apt-get install chromium", environ={"CI": "true"})
    assert running_in_ci({"CI": "1"}) and running_in_ci({"CI": " True "})
    assert not running_in_ci({"CI": "false"}) and not running_in_ci({"CI": ""}) and not running_in_ci({})


def test_ci_runs_the_readme_commands_and_installs_no_ffmpeg():
    commands = readme_quick_start_commands()
    assert commands == [
        'pip install -e ".[dev]" && accelerate launch finetune/run.py --config configs/smoke_vit_hybrid.yaml',
        "python -m pytest",
    ]
    script = (REPO_ROOT / ".ci" / "run").read_text()
    lines = [
        line.strip() for line in script.splitlines() if line.strip() and not line.strip().startswith("#")
    ]
    assert commands[0] in lines
    assert any(line.startswith(commands[1]) for line in lines)
    [packages] = [line for line in lines if line.startswith("for pkg in ")]
    assert packages.split(";")[0].split()[3:] == ["postgresql", "chromium"], packages  # no ffmpeg
    assert 'export CI="${CI:-true}"' in lines  # in CI the programs are there, and their tests must run


def test_dependencies_need_no_system_ffmpeg():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = [
        line.split("#")[0].strip() for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
    ]
    for dependencies in (project["dependencies"], [r for r in requirements if r]):
        names = {re.split(r"[<>=\[ ;]", dep, maxsplit=1)[0].lower(): dep for dep in dependencies}
        assert "av" in names, "PyAV decodes audio (FFmpeg's libraries in its wheels)"
        assert "torchcodec" not in names, names["torchcodec"]
        assert "[audio]" not in names["datasets"], "datasets' audio extra installs torchcodec"
