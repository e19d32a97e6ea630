"""spec.schemaEvolution: parsed and checked, handed to the job as --schema-evolution, and read
back by the job's own parser; the CRD declares it with the same values and default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from iceberg_offload.core.schema_change import DEFAULT_MODE, MODES
from iceberg_offload.core.tables import SpecError
from iceberg_offload.operator.manifests import job_arguments
from test_manifests import CATALOG, PLAN, UPSTREAM_TARGETS, make_spec, parsed_request

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "offloadtables.offload.k2.io.yaml"


def test_default_is_evolve() -> None:
    spec = make_spec()
    assert spec.schema_evolution == DEFAULT_MODE == "evolve"
    args = job_arguments(spec, PLAN, CATALOG, UPSTREAM_TARGETS)
    assert args[args.index("--schema-evolution") + 1] == "evolve"
    assert args.count("--schema-evolution") == 1


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_reaches_the_job(mode: str) -> None:
    spec = make_spec(schemaEvolution=mode)
    assert spec.schema_evolution == mode
    assert parsed_request(job_arguments(spec, PLAN, CATALOG, UPSTREAM_TARGETS)).schema_evolution == mode


@pytest.mark.parametrize("value", ["Evolve", "ignore", "", 1, None])
def test_other_values_are_refused_in_one_line(value: Any) -> None:
    with pytest.raises(SpecError, match=r"^spec\.schemaEvolution: .* is not one of evolve, fail$"):
        make_spec(schemaEvolution=value)


def test_the_job_defaults_to_evolve_and_refuses_other_modes() -> None:
    assert (
        parsed_request(["--table", "t", "--timestamp-column", "ts", "--target", "c.n.t"]).schema_evolution == "evolve"
    )
    with pytest.raises(SystemExit):
        parsed_request(["--table", "t", "--timestamp-column", "ts", "--target", "c.n.t", "--schema-evolution", "x"])


def test_the_crd_declares_the_field_as_the_parser_reads_it() -> None:
    crd = yaml.safe_load(CRD.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    field = spec["schemaEvolution"]
    assert field["enum"] == list(MODES) and field["default"] == DEFAULT_MODE and field["description"]
    assert CRD.read_bytes() == (ROOT / "helm" / "iceberg-offload" / "crds" / CRD.name).read_bytes()
