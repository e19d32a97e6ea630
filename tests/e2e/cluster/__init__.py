"""Test-support code for the end-to-end tests: a real kube-apiserver + etcd on loopback.

See :mod:`.apiserver`; ``build-kube-apiserver.sh`` builds (once per machine) the binary.
"""

from pathlib import Path

from .apiserver import (
    APISERVER_VERSION,
    BUILD_SCRIPT,
    ApiResponse,
    Cluster,
    ControlPlane,
    ControlPlaneError,
    ExistingCluster,
    default_apiserver_binary,
    default_etcd_binary,
    default_kubectl_binary,
    service_account_user,
)

#: The hand-written subset of the Spark Operator's SparkApplication CRD.
SPARK_CRD_FILE = Path(__file__).resolve().parent.parent / "crds" / "sparkapplication.yaml"
SPARK_CRD_NAME = "sparkapplications.sparkoperator.k8s.io"
#: Label carried by that subset (tells it from the real Spark Operator's CRD on kind).
CRD_SUBSET_LABEL = "iceberg-offload.e2e/crd-subset"

__all__ = [
    "APISERVER_VERSION",
    "BUILD_SCRIPT",
    "CRD_SUBSET_LABEL",
    "SPARK_CRD_FILE",
    "SPARK_CRD_NAME",
    "ApiResponse",
    "Cluster",
    "ControlPlane",
    "ControlPlaneError",
    "ExistingCluster",
    "default_apiserver_binary",
    "default_etcd_binary",
    "default_kubectl_binary",
    "service_account_user",
]
