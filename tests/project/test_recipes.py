"""The scheduling recipes of docs/how-to/scheduled-jobs.md (cron, systemd, Kubernetes): their schedules parse and their
commands run."""

from __future__ import annotations

import configparser
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from croniter import croniter

from autolabel.errors import ExitCode
from runs import make_images, pipeline_dict

PAGE = Path(__file__).resolve().parents[2] / "docs" / "how-to" / "scheduled-jobs.md"


def recipe(name: str) -> str:
    match = re.search(rf"<!-- docs: recipe: {name} -->\n```\w+\n(.*?)```", PAGE.read_text(), re.S)
    assert match, f"{PAGE.name} has no {name} recipe"
    return match.group(1)


def run_recipe_command(argv: list[str], tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run a recipe's autolabel command with its paths pointed at a small test setup."""
    assert Path(argv[0]).name == "autolabel", argv
    make_images(tmp_path / "data" / "photos", 3)
    (tmp_path / "pipelines").mkdir(exist_ok=True)
    (tmp_path / "pipelines" / "detect.yaml").write_text(yaml.safe_dump(pipeline_dict()))
    args = [a.replace("/data/", f"{tmp_path}/data/") for a in argv[1:]]
    return subprocess.run([sys.executable, "-m", "autolabel", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def _check_run(done: subprocess.CompletedProcess, tmp_path: Path) -> None:
    assert done.returncode == ExitCode.OK, done.stderr
    assert (tmp_path / "data" / "runs" / "photos" / "coco.json").exists()


def test_cron_recipe(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    line = next(ln for ln in recipe("cron").splitlines() if ln and not ln.startswith("#"))
    fields = line.split()
    assert croniter.is_valid(" ".join(fields[:5])) and " ".join(fields[:5]) == "0 2 * * *"
    command = " ".join(fields[5:]).split("&&", 1)[1].split(">>")[0]
    _check_run(run_recipe_command(shlex.split(command), tmp_path, subprocess_env), tmp_path)


def test_systemd_recipe(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    units = configparser.ConfigParser(strict=False, interpolation=None)
    units.read_string(recipe("systemd"))
    assert units["Service"]["Type"] == "oneshot"
    assert units["Service"]["SuccessExitStatus"] == str(int(ExitCode.PARTIAL))
    assert units["Timer"]["OnCalendar"] == "*-*-* 02:00:00" and units["Timer"]["Persistent"] == "true"
    _check_run(run_recipe_command(shlex.split(units["Service"]["ExecStart"]), tmp_path, subprocess_env), tmp_path)


def test_kubernetes_recipe(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    job = yaml.safe_load(recipe("kubernetes"))
    assert job["kind"] == "CronJob" and croniter.is_valid(job["spec"]["schedule"])
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    _check_run(run_recipe_command(container["command"], tmp_path, subprocess_env), tmp_path)


@pytest.mark.parametrize("name", ["cron", "systemd", "kubernetes"])
def test_recipes_use_the_same_job(name: str) -> None:
    text = recipe(name)
    assert "pipelines/detect.yaml" in text and "/data/photos" in text and "/data/runs/photos" in text
