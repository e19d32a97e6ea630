# syntax=docker/dockerfile:1.7
# Two images from one file:
#   docker build --target operator -t ghcr.io/k2/iceberg-offload:0.1.0 .
#   docker build --target spark    -t ghcr.io/k2/iceberg-offload-spark:0.1.0 .
# Python dependencies come from uv.lock (pinned); both images run as a non-root user.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG SPARK_K8S_IMAGE=apache/spark:3.5.7-scala2.12-java17-ubuntu
ARG UV_VERSION=0.9.30

# --- dependencies, resolved from the lock file ---------------------------------------------
FROM ${PYTHON_IMAGE} AS deps
ARG UV_VERSION
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY operator/ operator/
RUN uv export --frozen --no-dev --no-emit-project --extra operator -o /tmp/operator.txt \
 && uv export --frozen --no-dev --no-emit-project --extra spark -o /tmp/spark.txt \
 && python -m venv /opt/operator-venv && /opt/operator-venv/bin/pip install --no-cache-dir -r /tmp/operator.txt \
 && /opt/operator-venv/bin/pip install --no-cache-dir --no-deps . \
 && python -m venv /opt/spark-venv && /opt/spark-venv/bin/pip install --no-cache-dir -r /tmp/spark.txt \
 && /opt/spark-venv/bin/pip install --no-cache-dir --no-deps .

# --- the operator ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS operator
COPY --from=deps /opt/operator-venv /opt/operator-venv
COPY ddl/ /opt/iceberg-offload/ddl/
ENV PATH=/opt/operator-venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ICEBERG_OFFLOAD_DDL_DIR=/opt/iceberg-offload/ddl
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["kopf", "run", "-m", "iceberg_offload.operator.handlers"]
CMD ["--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"]

# --- the Spark job --------------------------------------------------------------------------
# Spark 3.5 from the pinned pyspark wheel (its jars and spark-submit), with the Kubernetes
# entrypoint of the official Spark image, which the Spark Operator's driver and executor pods run.
FROM ${SPARK_K8S_IMAGE} AS spark-k8s

FROM ${PYTHON_IMAGE} AS spark
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini procps libpostgresql-jdbc-java \
 && rm -rf /var/lib/apt/lists/*
COPY --from=deps /opt/spark-venv /opt/spark-venv
COPY --from=spark-k8s /opt/entrypoint.sh /opt/decom.sh /opt/
RUN SPARK_HOME="$(/opt/spark-venv/bin/python -c 'import pyspark, os; print(os.path.dirname(pyspark.__file__))')" \
 && ln -s "$SPARK_HOME" /opt/spark \
 && cp "$(/opt/spark-venv/bin/python -c 'import importlib.resources as r; print(r.files("snowpark_connect_deps_iceberg") / "jars" / "iceberg-spark-runtime-3.5_2.12-1.10.2.jar")')" /opt/spark/jars/ \
 && cp /usr/share/java/postgresql.jar /opt/spark/jars/ \
 && mkdir -p /opt/spark/work-dir && chown 185:185 /opt/spark/work-dir
COPY spark_jobs/ /opt/iceberg-offload/spark_jobs/
COPY ddl/ /opt/iceberg-offload/ddl/
ENV SPARK_HOME=/opt/spark \
    JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    PATH=/opt/spark-venv/bin:/opt/spark/bin:$PATH \
    PYSPARK_PYTHON=/opt/spark-venv/bin/python \
    PYSPARK_DRIVER_PYTHON=/opt/spark-venv/bin/python \
    ICEBERG_OFFLOAD_DDL_DIR=/opt/iceberg-offload/ddl
WORKDIR /opt/spark/work-dir
USER 185
ENTRYPOINT ["/opt/entrypoint.sh"]
