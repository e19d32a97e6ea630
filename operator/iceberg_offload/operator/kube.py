"""Kubernetes I/O for the operator: SparkApplications, ConfigMaps, Secrets, logs."""

from __future__ import annotations

import base64
import logging
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from iceberg_offload.operator.decide import LABEL_TABLE, table_label
from iceberg_offload.operator.manifests import SPARK_GROUP, SPARK_PLURAL, SPARK_VERSION
from iceberg_offload.operator.spec import GROUP, PLURAL, VERSION, SecretRef

log = logging.getLogger("iceberg_offload.operator.kube")


class KubeError(RuntimeError):
    """An API call that failed for a reason worth reporting."""


def api_client() -> client.ApiClient:
    """In a pod: its ServiceAccount; elsewhere: KUBECONFIG / ~/.kube/config."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def list_runs(self, namespace: str, table: str) -> list[dict[str, Any]]:
        result: Any = self.custom.list_namespaced_custom_object(
            SPARK_GROUP, SPARK_VERSION, namespace, SPARK_PLURAL, label_selector=f"{LABEL_TABLE}={table_label(table)}"
        )
        return list(result.get("items", []))

    def get_table(self, namespace: str, name: str) -> dict[str, Any] | None:
        """An OffloadTable (a backfill's), or None if there is none of that name."""
        try:
            result: Any = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeError(f"cannot read OffloadTable {namespace}/{name}: {exc.reason}") from exc
        return dict(result)

    def create_run(self, manifest: dict[str, Any]) -> bool:
        """Create a SparkApplication; False if one of that name already exists."""
        namespace = manifest["metadata"]["namespace"]
        try:
            self.custom.create_namespaced_custom_object(SPARK_GROUP, SPARK_VERSION, namespace, SPARK_PLURAL, manifest)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise KubeError(f"cannot create SparkApplication {manifest['metadata']['name']}: {exc.reason}") from exc
        return True

    def delete_run(self, namespace: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(
                SPARK_GROUP, SPARK_VERSION, namespace, SPARK_PLURAL, name, propagation_policy="Background"
            )
        except ApiException as exc:
            if exc.status != 404:
                raise KubeError(f"cannot delete SparkApplication {name}: {exc.reason}") from exc

    def config_map(self, namespace: str, name: str) -> dict[str, str]:
        try:
            data = self.core.read_namespaced_config_map(name, namespace).data
        except ApiException as exc:
            raise KubeError(f"ConfigMap {namespace}/{name} cannot be read: {exc.reason}") from exc
        return dict(data or {})

    def secret_value(self, namespace: str, ref: SecretRef) -> str:
        try:
            data = self.core.read_namespaced_secret(ref.name, namespace).data or {}
        except ApiException as exc:
            raise KubeError(f"Secret {namespace}/{ref.name} cannot be read: {exc.reason}") from exc
        if ref.key not in data:
            raise KubeError(f"Secret {namespace}/{ref.name} has no key {ref.key!r}")
        return base64.b64decode(data[ref.key]).decode()

    def log_tail(self, namespace: str, pod: str, lines: int = 200) -> str | None:
        """The end of a pod's log, or None if it cannot be read (pod gone, no permission)."""
        try:
            return str(self.core.read_namespaced_pod_log(pod, namespace, tail_lines=lines))
        except ApiException as exc:
            log.debug("no log for pod %s/%s: %s", namespace, pod, exc.reason)
            return None
