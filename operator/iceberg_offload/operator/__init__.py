"""The Kubernetes operator: kopf handlers (thin), OffloadTable spec parsing, the typed status,
the pure decision of what to do next, run manifests, the reconciler, Kubernetes I/O, metrics.

Never imports pyspark: the operator reads Iceberg through pyiceberg only."""
