"""The Helm chart without a cluster: lint, render, schema, hardening, RBAC, runbook tables, alerts.

helm comes from scripts/install-helm.sh (3.17.2, cached); the alerts are unit-tested with
Prometheus' own `promtool test rules` (Debian package `prometheus`, installed by
`scripts/bootstrap.sh --e2e`; only promtool is used, the server is never started).
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "iceberg-offload"
INSTALL_HELM = ROOT / "scripts" / "install-helm.sh"
RELEASE, NAMESPACE = "offload", "trading"
FULLNAME = f"{RELEASE}-iceberg-offload"

#: Every option on: what `helm template` must render into valid objects.
EVERYTHING = {
    "clusterWide": True,
    "replicas": 2,
    "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
    "runbookTables": {"enabled": True},
    "catalogConfigMap": {"create": True},
    "rbac": {"secretNames": ["clickhouse-offload", "iceberg-catalog"]},
    "watchNamespaces": [NAMESPACE, "analytics"],
}

#: What the operator calls, per namespace, and where in the code (the e2e test records the calls
#: of a real run and checks the Role equals this set).
OPERATOR_RULES = {
    ("offload.k2.io", "offloadtables", "list"),  # kopf's watch (initial listing), also for handlers.offload_tables
    ("offload.k2.io", "offloadtables", "watch"),  # kopf's watch of the timer's resource
    ("offload.k2.io", "offloadtables", "patch"),  # kopf: its annotations and finalizer
    ("offload.k2.io", "offloadtables/status", "patch"),  # handlers.patch_status via kopf
    ("offload.k2.io", "offloadtables", "get"),  # kube.get_table: a backfill's table
    ("offload.k2.io", "offloadbackfills", "list"),  # kopf's watch of the backfills' timer
    ("offload.k2.io", "offloadbackfills", "watch"),
    ("offload.k2.io", "offloadbackfills", "patch"),  # kopf: its annotations
    ("offload.k2.io", "offloadbackfills/status", "patch"),  # handlers.reconcile_offloadbackfill
    ("sparkoperator.k8s.io", "sparkapplications", "list"),  # kube.list_runs
    ("sparkoperator.k8s.io", "sparkapplications", "create"),  # kube.create_run
    ("sparkoperator.k8s.io", "sparkapplications", "delete"),  # kube.delete_run (deadline, Replace, history)
    ("", "configmaps", "get"),  # kube.config_map: the catalog
    ("", "secrets", "get"),  # kube.secret_value: the two passwords
    ("", "pods/log", "get"),  # kube.log_tail: the failed driver's error line
    ("", "events", "create"),  # kopf.event
}
PEERING_RULES = {("kopf.dev", "kopfpeerings", v) for v in ("list", "watch", "patch")}


# -- helpers -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm() -> Path:
    proc = subprocess.run([str(INSTALL_HELM)], capture_output=True, text=True, check=False, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"scripts/install-helm.sh failed: {proc.stderr.strip()}", pytrace=False)
    return Path(proc.stdout.strip().splitlines()[-1])


def run_helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HELM_CACHE_HOME": "/tmp/iceberg-offload-helm-cache",
        "HELM_CONFIG_HOME": "/tmp/iceberg-offload-helm-config",
    }
    proc = subprocess.run([str(helm), *args], capture_output=True, text=True, check=False, timeout=60, env=env)
    if check:
        assert proc.returncode == 0, f"helm {' '.join(args[:2])}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def values_file(tmp_path: Path, values: Mapping[str, Any]) -> str:
    path = tmp_path / f"values-{len(list(tmp_path.glob('values-*')))}.yaml"
    path.write_text(yaml.safe_dump(dict(values)))
    return str(path)


def render(helm: Path, tmp_path: Path, values: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    out = run_helm(
        helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", values_file(tmp_path, values or {})
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc is not None]


def only(objects: Sequence[Mapping[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return dict(found[0])


def of_kind(objects: Sequence[Mapping[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [dict(o) for o in objects if o["kind"] == kind]


def container(objects: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    (c,) = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(c)


def triples(rules: Sequence[Mapping[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


# -- lint and render ---------------------------------------------------------------------------


@pytest.mark.parametrize("values", [{}, EVERYTHING], ids=["defaults", "everything"])
def test_lint_strict(helm: Path, tmp_path: Path, values: Mapping[str, Any]) -> None:
    proc = run_helm(helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, "-f", values_file(tmp_path, values))
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("values", "kinds"),
    [
        (
            {},
            {"Deployment", "ServiceAccount", "Role", "RoleBinding", "Service"},
        ),
        (
            EVERYTHING,
            {
                "Deployment",
                "ServiceAccount",
                "Role",
                "RoleBinding",
                "ClusterRole",
                "ClusterRoleBinding",
                "ClusterKopfPeering",
                "Service",
                "ServiceMonitor",
                "PrometheusRule",
                "ConfigMap",
                "OffloadTable",
            },
        ),
    ],
    ids=["defaults", "everything"],
)
def test_template_renders_objects_that_parse(
    helm: Path, tmp_path: Path, values: Mapping[str, Any], kinds: set[str]
) -> None:
    objects = render(helm, tmp_path, values)
    assert {o["kind"] for o in objects} == kinds
    for obj in objects:
        assert obj["apiVersion"] and obj["metadata"]["name"], obj
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", obj["metadata"]["name"]), obj["metadata"]["name"]
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"):
            assert obj["metadata"]["namespace"] in (NAMESPACE, "analytics"), obj["metadata"]
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "iceberg-offload"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["helm.sh/chart"] == "iceberg-offload-0.1.0"
    if values:
        assert len(of_kind(objects, "OffloadTable")) == 9


def test_crds_are_identical_to_the_top_level_crds() -> None:
    top = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    chart = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert top == chart
    assert "offloadtables.offload.k2.io.yaml" in top
    for name in top:
        assert filecmp.cmp(ROOT / "crds" / name, CHART / "crds" / name, shallow=False), name
    names = {
        doc["metadata"]["name"] for p in (CHART / "crds").glob("*.yaml") for doc in yaml.safe_load_all(p.read_text())
    }
    assert names == {
        "offloadtables.offload.k2.io",
        "offloadbackfills.offload.k2.io",
        "kopfpeerings.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
    }


# -- the schema ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "replicas=-1"], "replicas"),
        (["--set", "replicas=0"], "replicas"),
        (["--set", "image.pullPolicy=Sometimes"], "image.pullPolicy"),
        (["--set", "bogus=1"], "bogus"),
        (["--set", "image.registry=docker.io"], "registry"),
        (["--set", "metrics.prometheusRule.failing.bogus=1"], "bogus"),
        (["--set", "securityContext.runAsNonRoot=false"], "securityContext.runAsNonRoot"),
        (["--set", "securityContext.readOnlyRootFilesystem=false"], "securityContext.readOnlyRootFilesystem"),
        (["--set", "securityContext.allowPrivilegeEscalation=true"], "securityContext.allowPrivilegeEscalation"),
        (["--set", "securityContext.runAsUser=0"], "securityContext.runAsUser"),
        (["--set", "securityContext.capabilities.drop={NET_RAW}"], "securityContext.capabilities.drop"),
        (["--set", "securityContext.capabilities.add={NET_ADMIN}"], "add"),
        (["--set", "podSecurityContext.seccompProfile.type=Unconfined"], "podSecurityContext.seccompProfile.type"),
        (["--set", "metrics.port=70000"], "metrics.port"),
        (["--set", "operator.reconcileSeconds=0"], "operator.reconcileSeconds"),
        (["--set", "watchNamespaces={Not_A_Namespace}"], "watchNamespaces.0"),
        (["--set", "rbac.secretNames={Bad Name}"], "rbac.secretNames.0"),
        (["--set", "runbookTables.schedule=every 15 minutes"], "runbookTables.schedule"),
        (["--set", "metrics.prometheusRule.failing.for=5 minutes"], "metrics.prometheusRule.failing.for"),
        (["--set", "catalogConfigMap.type=hive"], "catalogConfigMap.type"),
        (["--set", "clusterWide=yes"], "clusterWide"),
        (["--set-string", "replicas=2"], "replicas"),
    ],
)
def test_schema_rejects_bad_values_naming_the_key(helm: Path, args: list[str], message: str) -> None:
    for command in (["lint", "--strict"], ["template", RELEASE]):
        proc = run_helm(helm, *command, str(CHART), *args, check=False)
        assert proc.returncode != 0, f"helm {command[0]} accepted {args}"
        output = proc.stdout + proc.stderr
        assert "schema" in output and message in output, output


def test_schema_is_strict_draft_07_everywhere() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: Mapping[str, Any], value: Any, path: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path or '(root)'}: additionalProperties"
            assert isinstance(value, dict), path
            assert set(value) <= set(node["properties"]), f"{path}: {set(value) - set(node['properties'])}"
            for key, child in value.items():
                walk(node["properties"][key], child, f"{path}.{key}".lstrip("."))
        else:
            assert "type" in node or "oneOf" in node, f"{path}: no type"

    walk(schema, values, "")


def test_every_value_has_a_comment() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^\s*[A-Za-z][\w.-]*:", line):
            previous = lines[number - 1].strip() if number else ""
            assert previous.startswith("#"), f"values.yaml line {number + 1} has no comment: {line.strip()}"


# -- the Deployment ------------------------------------------------------------------------------


def test_deployment_is_hardened(helm: Path, tmp_path: Path) -> None:
    objects = render(helm, tmp_path)
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    c = container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert pod["serviceAccountName"] == FULLNAME


def test_deployment_runs_kopf_like_the_image(helm: Path, tmp_path: Path) -> None:
    objects = render(helm, tmp_path)
    deployment = only(objects, "Deployment")
    c = container(objects)
    assert c["image"] == "ghcr.io/k2/iceberg-offload:0.1.0"  # tag = appVersion
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["command"] == ["kopf", "run", "-m", "iceberg_offload.operator.handlers"]
    assert c["args"] == [
        f"--namespace={NAMESPACE}",
        "--standalone",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--log-format=full",
    ]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # two standalone operators never overlap
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env == {
        "ICEBERG_OFFLOAD_RECONCILE_SECONDS": "10",
        "ICEBERG_OFFLOAD_SPARK_IMAGE": "ghcr.io/k2/iceberg-offload-spark:0.1.0",
        "ICEBERG_OFFLOAD_SPARK_SERVICE_ACCOUNT": "iceberg-offload-spark",
        "ICEBERG_OFFLOAD_MIRROR": "true",
        "ICEBERG_OFFLOAD_METRICS_PORT": "9090",
        "ICEBERG_OFFLOAD_METRICS_ADDRESS": "0.0.0.0",
        "POD_ID": None,  # fieldRef metadata.name: kopf's identity of the replica
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    service = only(objects, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"operator": {"reconcileSeconds": 30, "mirror": False}, "metrics": {"enabled": False}},
        {"spark": {"image": {"tag": "1.2.3"}, "serviceAccount": {"name": "spark-driver"}}},
    ],
)
def test_operator_accepts_the_deployment_environment(helm: Path, tmp_path: Path, values: Mapping[str, Any]) -> None:
    """Every ICEBERG_OFFLOAD_* variable the chart sets is a setting the operator knows (it refuses
    unknown ones) with a value it accepts."""
    from iceberg_offload.core.settings import Settings, known_variables

    env = {e["name"]: e["value"] for e in container(render(helm, tmp_path, values))["env"] if "value" in e}
    ours = {k: v for k, v in env.items() if k.startswith("ICEBERG_OFFLOAD_")}
    assert set(ours) <= set(known_variables())
    settings = Settings.from_env(ours)
    assert settings.metrics_address == "0.0.0.0"
    assert settings.reconcile_seconds == (values.get("operator") or {}).get("reconcileSeconds", 10)
    assert settings.mirror == (values.get("operator") or {}).get("mirror", True)
    assert settings.metrics_port == (0 if values.get("metrics") else 9090)
    if values.get("spark"):
        assert (settings.spark_image, settings.spark_service_account) == (
            "ghcr.io/k2/iceberg-offload-spark:1.2.3",
            "spark-driver",
        )


def test_replicas_and_namespaces_options(helm: Path, tmp_path: Path) -> None:
    two = render(helm, tmp_path, {"replicas": 2, "watchNamespaces": [NAMESPACE, "analytics"]})
    c = container(two)
    assert c["args"][:3] == [f"--namespace={NAMESPACE}", "--namespace=analytics", f"--peering={FULLNAME}"]
    assert "--standalone" not in c["args"]
    assert only(two, "Deployment")["spec"]["strategy"]["type"] == "RollingUpdate"
    peerings = of_kind(two, "KopfPeering")
    assert {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings} == {
        (NAMESPACE, FULLNAME),
        ("analytics", FULLNAME),
    }
    operator_roles = [r for r in of_kind(two, "Role") if r["metadata"]["name"] == FULLNAME]
    assert {r["metadata"]["namespace"] for r in operator_roles} == {NAMESPACE, "analytics"}
    bindings = [b for b in of_kind(two, "RoleBinding") if b["metadata"]["name"] == FULLNAME]
    for binding in bindings:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    spark_accounts = [s for s in of_kind(two, "ServiceAccount") if s["metadata"]["name"] == "iceberg-offload-spark"]
    assert {s["metadata"]["namespace"] for s in spark_accounts} == {NAMESPACE, "analytics"}

    wide = render(helm, tmp_path, {"clusterWide": True, "replicas": 2})
    c = container(wide)
    assert c["args"][:2] == ["--all-namespaces", f"--peering={FULLNAME}"]
    assert only(wide, "ClusterKopfPeering")["metadata"]["name"] == FULLNAME
    assert not [r for r in of_kind(wide, "Role") if r["metadata"]["name"] == FULLNAME]

    refused = run_helm(
        helm,
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "-f",
        values_file(tmp_path, {"watchNamespaces": ["analytics"], "runbookTables": {"enabled": True}}),
        check=False,
    )
    assert refused.returncode != 0 and "runbookTables.enabled" in refused.stderr


# -- RBAC ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [{}, EVERYTHING, {"replicas": 2}], ids=["defaults", "everything", "peering"])
def test_rbac_has_no_wildcards_and_grants_exactly_what_the_operator_uses(
    helm: Path, tmp_path: Path, values: Mapping[str, Any]
) -> None:
    objects = render(helm, tmp_path, values)
    roles = of_kind(objects, "Role") + of_kind(objects, "ClusterRole")
    for role in roles:
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], f"{role['kind']} {role['metadata']['name']}: wildcard {key}"
            if "secrets" in rule["resources"]:
                assert rule["verbs"] == ["get"] and rule["resources"] == ["secrets"]
    peering = bool(values.get("replicas", 1) > 1)
    if values.get("clusterWide"):
        operator_rules = only(objects, "ClusterRole")["rules"]
        expected = OPERATOR_RULES | ({("kopf.dev", "clusterkopfpeerings", v) for v in ("list", "watch", "patch")})
        assert only(objects, "ClusterRoleBinding")["subjects"][0]["name"] == FULLNAME
    else:
        assert not of_kind(objects, "ClusterRole") and not of_kind(objects, "ClusterRoleBinding")
        operator_rules = only(objects, "Role", FULLNAME)["rules"]
        expected = OPERATOR_RULES | (PEERING_RULES if peering else set())
    assert triples(operator_rules) == expected
    secret_rule = next(r for r in operator_rules if r["resources"] == ["secrets"])
    if (values.get("rbac") or {}).get("secretNames"):
        assert secret_rule["resourceNames"] == ["clickhouse-offload", "iceberg-catalog"]
    else:
        assert "resourceNames" not in secret_rule

    # The Spark driver: its executors' pods and their services, configmaps and PVCs, nothing else.
    for role in [r for r in of_kind(objects, "Role") if r["metadata"]["name"] == f"{FULLNAME}-spark"]:
        assert {r for _, r, _ in triples(role["rules"])} == {"pods", "services", "configmaps", "persistentvolumeclaims"}


# -- the runbook's tables and catalog -------------------------------------------------------------


def test_runbook_tables_match_examples(helm: Path, tmp_path: Path) -> None:
    objects = render(helm, tmp_path, {"runbookTables": {"enabled": True}, "catalogConfigMap": {"create": True}})
    rendered = {t["metadata"]["name"]: t for t in of_kind(objects, "OffloadTable")}
    examples = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "examples").glob("[1-3]*.yaml"))]
    assert len(examples) == 9 and set(rendered) == {e["metadata"]["name"] for e in examples}
    for example in examples:
        table = rendered[example["metadata"]["name"]]
        assert table["apiVersion"] == example["apiVersion"] and table["kind"] == example["kind"]
        assert table["spec"] == example["spec"], example["metadata"]["name"]
        assert example["metadata"]["labels"].items() <= table["metadata"]["labels"].items()
        assert table["metadata"]["namespace"] == NAMESPACE

    (connections_map,) = [
        d
        for d in yaml.safe_load_all((ROOT / "examples" / "00-connections.yaml").read_text())
        if d["kind"] == "ConfigMap"
    ]
    catalog = only(objects, "ConfigMap")
    assert catalog["metadata"]["name"] == connections_map["metadata"]["name"]
    assert catalog["data"] == connections_map["data"]


def test_runbook_tables_follow_values(helm: Path, tmp_path: Path) -> None:
    values = {
        "runbookTables": {
            "enabled": True,
            "schedule": "*/5 * * * *",
            "suspend": True,
            "clickhouse": {"host": "ch.example", "secure": True, "passwordSecret": {"name": "ch", "key": "pw"}},
            "catalog": {"configMapName": "cat", "passwordSecret": {"name": "", "key": "password"}},
        }
    }
    for table in of_kind(render(helm, tmp_path, values), "OffloadTable"):
        spec = table["spec"]
        assert spec["schedule"] == "*/5 * * * *" and spec["suspend"] is True
        assert spec["source"]["connection"]["host"] == "ch.example" and spec["source"]["connection"]["secure"] is True
        assert spec["source"]["connection"]["passwordSecretRef"] == {"name": "ch", "key": "pw"}
        assert spec["target"]["catalogRef"] == {"name": "cat"} and "catalogPasswordSecretRef" not in spec["target"]


# -- metrics and alerts -------------------------------------------------------------------------


def monitoring(helm: Path, tmp_path: Path) -> list[dict[str, Any]]:
    return render(
        helm, tmp_path, {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}}
    )


def test_service_monitor_scrapes_the_metrics_service(helm: Path, tmp_path: Path) -> None:
    objects = monitoring(helm, tmp_path)
    monitor, service = only(objects, "ServiceMonitor"), only(objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is True  # the metrics' own `namespace` label (the OffloadTable's)
    kinds = {o["kind"] for o in render(helm, tmp_path)}
    assert not {"ServiceMonitor", "PrometheusRule"} & kinds  # their CRDs may be missing: only when enabled


def alert_rules(helm: Path, tmp_path: Path) -> dict[str, dict[str, Any]]:
    rule = only(monitoring(helm, tmp_path), "PrometheusRule")
    (group,) = rule["spec"]["groups"]
    return {r["alert"]: r for r in group["rules"]}


def test_prometheus_rule_has_the_runbook_thresholds(helm: Path, tmp_path: Path) -> None:
    rules = alert_rules(helm, tmp_path)
    assert set(rules) == {
        "IcebergOffloadFailing",
        "IcebergOffloadLagging",
        "IcebergOffloadRowsDecreasing",
        "IcebergOffloadOutOfSync",
    }
    failing, lagging, decreasing = (
        rules["IcebergOffloadFailing"],
        rules["IcebergOffloadLagging"],
        rules["IcebergOffloadRowsDecreasing"],
    )
    # Runbook: "failure_count > 3" (critical), "last_successful_run > 30 minutes ago" (warning),
    # "Iceberg row count decreasing" (critical, data loss).
    assert re.fullmatch(r"max by \(namespace, table\) \(iceberg_offload_consecutive_failures\) > 3", failing["expr"])
    assert re.fullmatch(
        r"min by \(namespace, table\) \(iceberg_offload_lag_seconds - iceberg_offload_candle_interval_seconds\) > 1800",
        lagging["expr"],
    )
    assert " ".join(decreasing["expr"].split()) == (
        "max by (namespace, table) (iceberg_offload_iceberg_rows) < "
        "max by (namespace, table) (max_over_time(iceberg_offload_iceberg_rows[1h]))"
    )
    # The cold tier stays equal to ClickHouse: buckets the last audit left differing, for 30 minutes.
    out_of_sync = rules["IcebergOffloadOutOfSync"]
    assert out_of_sync["expr"] == "max by (namespace, table) (iceberg_offload_audit_buckets_differing) > 0"
    assert out_of_sync["for"] == "30m"
    expected = {
        "IcebergOffloadFailing": ("critical", "#offload-failure-critical"),
        "IcebergOffloadLagging": ("warning", "#offload-lag-warning"),
        "IcebergOffloadRowsDecreasing": ("critical", "#data-loss-critical"),
        "IcebergOffloadOutOfSync": ("warning", "#late-data-warning"),
    }
    for name, (severity, anchor) in expected.items():
        rule = rules[name]
        assert rule["labels"] == {"severity": severity}
        assert rule["for"]
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}
        assert rule["annotations"]["runbook_url"].endswith("docs/RUNBOOK.md" + anchor)
        for text in (rule["annotations"]["summary"], rule["annotations"]["description"]):
            assert "{{ $labels.table }}" in text and "{{ $labels.namespace }}" in text


# -- the alerts, evaluated by Prometheus' promtool ------------------------------------------------


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool not found: install Debian's `prometheus` package (scripts/bootstrap.sh --e2e does)",
            pytrace=False,
        )
    return found


def expand(text: str, labels: Mapping[str, str], value: str) -> str:
    """The annotation Prometheus renders for an alert (only the template forms the chart uses)."""
    text = text.replace("{{ $value | humanizeDuration }}", value)
    text = text.replace("{{ $value }}", value)
    for key, label in labels.items():
        text = text.replace(f"{{{{ $labels.{key} }}}}", label)
    assert "{{" not in text, text
    return text


def series(metric: str, table: str, values: str, pod: str = "iceberg-offload-0") -> dict[str, str]:
    return {
        "series": f'{metric}{{namespace="trading",table="{table}",pod="{pod}",job="iceberg-offload"}}',
        "values": values,
    }


def test_alerts_fire_and_stay_quiet_under_promtool(helm: Path, tmp_path: Path) -> None:
    tool = promtool()
    rules = alert_rules(helm, tmp_path)
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "iceberg-offload", "rules": list(rules.values())}]}))
    checked = subprocess.run([tool, "check", "rules", str(rules_file)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    def alert(name: str, table: str, value: str) -> dict[str, Any]:
        labels = {"namespace": "trading", "table": table}
        rule = rules[name]
        return {
            "exp_labels": {**labels, **rule["labels"]},
            "exp_annotations": {k: expand(v, labels, value) for k, v in rule["annotations"].items()},
        }

    tests = [
        {
            # Failures: 4 (> 3) from minute 4 fires after `for: 5m`; exactly 3 never fires.
            "interval": "1m",
            "input_series": [
                series("iceberg_offload_consecutive_failures", "bronze-trades-binance", "0 1 2 3 4x20"),
                series("iceberg_offload_consecutive_failures", "silver-trades", "0 1 2 3x20"),
            ],
            "alert_rule_test": [
                {"eval_time": "8m", "alertname": "IcebergOffloadFailing", "exp_alerts": []},  # pending
                {
                    "eval_time": "10m",
                    "alertname": "IcebergOffloadFailing",
                    "exp_alerts": [alert("IcebergOffloadFailing", "bronze-trades-binance", "4")],
                },
            ],
        },
        {
            # Lag grows 60 s a minute; a 1m candle table is allowed 60 s more: over 1800 s from
            # minute 32, fires after `for: 5m`.  A 1h candle table with the same growing lag stays
            # within its hour.  Another table whose lag stays at 60 s never fires, even though a
            # paused (standby) replica still reports a growing lag for it: the freshest value counts.
            "interval": "1m",
            "input_series": [
                series("iceberg_offload_lag_seconds", "gold-ohlcv-1m", "0+60x45"),
                series("iceberg_offload_candle_interval_seconds", "gold-ohlcv-1m", "60x45"),
                series("iceberg_offload_lag_seconds", "gold-ohlcv-1h", "0+60x45"),
                series("iceberg_offload_candle_interval_seconds", "gold-ohlcv-1h", "3600x45"),
                series("iceberg_offload_lag_seconds", "gold-ohlcv-5m", "60x45"),
                series("iceberg_offload_candle_interval_seconds", "gold-ohlcv-5m", "300x45"),
                series("iceberg_offload_lag_seconds", "gold-ohlcv-5m", "0+60x45", pod="iceberg-offload-1"),
                series("iceberg_offload_candle_interval_seconds", "gold-ohlcv-5m", "300x45", pod="iceberg-offload-1"),
            ],
            "alert_rule_test": [
                {"eval_time": "31m", "alertname": "IcebergOffloadLagging", "exp_alerts": []},  # exactly 1800
                {"eval_time": "35m", "alertname": "IcebergOffloadLagging", "exp_alerts": []},  # pending
                {
                    "eval_time": "40m",
                    "alertname": "IcebergOffloadLagging",
                    "exp_alerts": [alert("IcebergOffloadLagging", "gold-ohlcv-1m", "39m 0s")],
                },
            ],
        },
        {
            # Rows: one table loses 50 rows at minute 4 (fires after `for: 1m`); one only grows;
            # one moves to another operator pod (failover) without losing rows: no alert.
            "interval": "1m",
            "input_series": [
                series("iceberg_offload_iceberg_rows", "bronze-trades-kraken", "100 200 300 300 250x10"),
                series("iceberg_offload_iceberg_rows", "bronze-trades-binance", "100+100x14"),
                series("iceberg_offload_iceberg_rows", "silver-trades", "100 200 300 _x11"),
                series(
                    "iceberg_offload_iceberg_rows", "silver-trades", "_ _ _ 300 400+100x10", pod="iceberg-offload-1"
                ),
            ],
            "alert_rule_test": [
                {"eval_time": "3m", "alertname": "IcebergOffloadRowsDecreasing", "exp_alerts": []},
                {"eval_time": "4m", "alertname": "IcebergOffloadRowsDecreasing", "exp_alerts": []},  # pending
                {
                    "eval_time": "6m",
                    "alertname": "IcebergOffloadRowsDecreasing",
                    "exp_alerts": [alert("IcebergOffloadRowsDecreasing", "bronze-trades-kraken", "250")],
                },
            ],
        },
        {
            # Differing buckets: a table in mode report keeps 2 from minute 1 (fires after `for: 30m`);
            # one repaired by its next run (2 for 15 minutes, then 0) never fires; an equal one neither.
            "interval": "1m",
            "input_series": [
                series("iceberg_offload_audit_buckets_differing", "bronze-trades-kraken", "0 2x40"),
                series("iceberg_offload_audit_buckets_differing", "bronze-trades-binance", "2x15 0x25"),
                series("iceberg_offload_audit_buckets_differing", "silver-trades", "0x40"),
            ],
            "alert_rule_test": [
                {"eval_time": "30m", "alertname": "IcebergOffloadOutOfSync", "exp_alerts": []},  # pending
                {
                    "eval_time": "31m",
                    "alertname": "IcebergOffloadOutOfSync",
                    "exp_alerts": [alert("IcebergOffloadOutOfSync", "bronze-trades-kraken", "2")],
                },
            ],
        },
    ]
    test_file = tmp_path / "alerts.test.yaml"
    test_file.write_text(
        yaml.safe_dump({"rule_files": [rules_file.name], "evaluation_interval": "1m", "tests": tests}, sort_keys=False)
    )
    proc = subprocess.run(
        [tool, "test", "rules", test_file.name], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_alerts_catch_a_wrong_threshold_under_promtool(helm: Path, tmp_path: Path) -> None:
    """The promtool test above is not vacuous: a rule file whose threshold is off by one fails it."""
    tool = promtool()
    rules = alert_rules(helm, tmp_path)
    rules["IcebergOffloadFailing"]["expr"] = rules["IcebergOffloadFailing"]["expr"].replace("> 3", ">= 3")
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "iceberg-offload", "rules": list(rules.values())}]}))
    test = {
        "rule_files": [rules_file.name],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [series("iceberg_offload_consecutive_failures", "silver-trades", "3x20")],
                "alert_rule_test": [{"eval_time": "10m", "alertname": "IcebergOffloadFailing", "exp_alerts": []}],
            }
        ],
    }
    (tmp_path / "wrong.test.yaml").write_text(yaml.safe_dump(test))
    proc = subprocess.run(
        [tool, "test", "rules", "wrong.test.yaml"], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert proc.returncode != 0, proc.stdout
