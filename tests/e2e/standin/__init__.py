"""Test support for the operator's end-to-end tests on the local kube-apiserver.

* :mod:`.sparkop` - the Spark Operator stand-in process (``python -m standin``): it follows the
  SparkApplications the operator creates, writes their status like the Spark Operator, and
  executes them with the real offload job on a warm SparkSession; it also owns the local data
  stack (embedded ClickHouse over HTTP, SQLite Iceberg catalog).
* :mod:`.kubelet` - a container's environment resolved as the kubelet resolves it.
* :mod:`.harness` - the test side: starting/stopping the stand-in and the operator
  (``kopf run`` as in production), the runbook manifests rewritten for the local stack,
  trades, waiting and reading the API.
"""
