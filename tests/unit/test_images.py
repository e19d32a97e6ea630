"""The Dockerfile cannot be built here (no Docker engine): check what it names exists and agrees
with what the operator tells the Spark Operator to run."""

from __future__ import annotations

import importlib
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import cast

import pytest
from iceberg_offload.core.settings import Settings
from iceberg_offload.operator.kube import Kube
from iceberg_offload.operator.reconciler import Controller

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instructions() -> list[tuple[str, str, str]]:
    """(stage, instruction, arguments) with line continuations joined."""
    stage, out = "", []
    for line in re.sub(r"\\\n\s*", " ", DOCKERFILE).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word == "FROM":
            stage = rest.split(" AS ")[-1].strip() if " AS " in rest else rest
        out.append((stage, word, rest))
    return out


def test_both_images_are_built_from_named_stages_as_non_root() -> None:
    stages = {s for s, word, _ in _instructions() if word == "FROM"}
    assert {"deps", "operator", "spark"} <= stages
    users = {s: rest for s, word, rest in _instructions() if word == "USER"}
    assert users["operator"].split(":")[0] not in ("0", "root")
    assert users["spark"].split(":")[0] not in ("0", "root")


def test_every_local_copy_source_exists() -> None:
    for _stage, word, rest in _instructions():
        if word != "COPY" or "--from=" in rest:
            continue
        sources = shlex.split(rest)[:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repository"


def test_the_spark_image_holds_the_main_file_the_operator_submits() -> None:
    main_file = Controller(Settings(), cast(Kube, None)).defaults.main_application_file
    assert main_file == Settings().main_application_file
    in_image = main_file.removeprefix("local://")
    assert "COPY spark_jobs/ /opt/iceberg-offload/spark_jobs/" in DOCKERFILE
    assert (ROOT / "spark_jobs" / Path(in_image).name).is_file()


def test_the_operator_entrypoint_module_is_importable() -> None:
    entry = next(rest for stage, word, rest in _instructions() if stage == "operator" and word == "ENTRYPOINT")
    assert '"-m", "iceberg_offload.operator.handlers"' in entry
    assert importlib.util.find_spec("iceberg_offload.operator.handlers") is not None


def test_the_images_set_only_settings_the_operator_knows() -> None:
    names = set(re.findall(r"\b(ICEBERG_OFFLOAD_[A-Z_]+)=", DOCKERFILE))
    assert names, "the images configure the DDL location"
    Settings.from_env({name: "/opt/iceberg-offload/ddl" for name in names})


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not on PATH (scripts/bootstrap.sh installs it)")
@pytest.mark.parametrize("extra", ["operator", "spark"])
def test_the_lock_file_exports_the_requirements_each_image_installs(extra: str) -> None:
    command = next(rest for _s, word, rest in _instructions() if word == "RUN" and "uv export" in rest)
    assert f"--extra {extra}" in command
    out = subprocess.run(
        ["uv", "export", "--frozen", "--no-dev", "--no-emit-project", "--extra", extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    wanted = {
        "operator": ["kopf==", "kubernetes==", "prometheus-client=="],
        "spark": ["pyspark==3.5.9", "snowpark-connect-deps-iceberg==1.0.2"],
    }
    for pin in [*wanted[extra], "pyiceberg==", "clickhouse-connect=="]:
        assert pin in out, f"uv.lock does not pin {pin} for the {extra} image"
