"""A container's environment, resolved the way the kubelet resolves it.

No pods run on the test API server, so the stand-in resolves a SparkApplication's
``driver``/``executor`` ``env`` and ``envFrom`` itself, with the kubelet's rules:

* ``envFrom`` sources first, in order (a later source overrides an earlier one; ``prefix`` is
  prepended; keys that are not valid variable names are skipped), then ``env`` entries in order,
  each overriding what came before;
* ``value`` may refer to variables defined before it as ``$(NAME)`` (``$$`` escapes a ``$``);
  references to undefined variables are left as they are;
* ``valueFrom.secretKeyRef`` / ``configMapKeyRef`` read one key (a missing object or key fails the
  container, ``CreateContainerConfigError``, unless ``optional: true``); ``fieldRef`` supports
  ``metadata.name`` and ``metadata.namespace``.

Pure logic: the Secrets and ConfigMaps come through a :class:`ObjectReader`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

_VALID_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_REFERENCE = re.compile(r"\$\$|\$\(([^)]*)\)")


class EnvResolutionError(RuntimeError):
    """The container could not be started: its environment refers to something missing."""


class ObjectReader(Protocol):
    """Reads ConfigMap and Secret data of one namespace; None when the object does not exist."""

    def config_map(self, namespace: str, name: str) -> Mapping[str, str] | None: ...

    def secret(self, namespace: str, name: str) -> Mapping[str, str] | None:
        """The Secret's data, already base64-decoded."""
        ...


def expand(value: str, defined: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined references replaced, ``$$`` becomes ``$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return defined[name] if name in defined else match.group(0)

    return _REFERENCE.sub(replace, value)


def _key_ref(kind: str, ref: Mapping[str, Any], data: Mapping[str, str] | None, namespace: str) -> str | None:
    name, key, optional = str(ref.get("name") or ""), str(ref.get("key") or ""), bool(ref.get("optional"))
    if data is None:
        if optional:
            return None
        raise EnvResolutionError(f'{kind.lower()} "{name}" not found')
    if key not in data:
        if optional:
            return None
        raise EnvResolutionError(f"couldn't find key {key} in {kind} {namespace}/{name}")
    return data[key]


def resolve_env(
    container: Mapping[str, Any],
    *,
    namespace: str,
    pod_name: str,
    reader: ObjectReader,
) -> dict[str, str]:
    """The environment variables of a container spec (``env`` and ``envFrom``)."""
    result: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix") or "")
        if "configMapRef" in source:
            kind, ref = "ConfigMap", source["configMapRef"]
            data = reader.config_map(namespace, str(ref.get("name") or ""))
        elif "secretRef" in source:
            kind, ref = "Secret", source["secretRef"]
            data = reader.secret(namespace, str(ref.get("name") or ""))
        else:
            continue
        if data is None:
            if ref.get("optional"):
                continue
            raise EnvResolutionError(f'{kind.lower()} "{ref.get("name")}" not found')
        for key, item in data.items():
            if _VALID_NAME.match(prefix + key):
                result[prefix + key] = item
    entries: Sequence[Mapping[str, Any]] = container.get("env") or []
    for entry in entries:
        name = str(entry["name"])
        if "valueFrom" not in entry:
            result[name] = expand(str(entry.get("value") or ""), result)
            continue
        source = entry["valueFrom"]
        value: str | None
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            value = _key_ref("Secret", ref, reader.secret(namespace, str(ref.get("name") or "")), namespace)
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            value = _key_ref("ConfigMap", ref, reader.config_map(namespace, str(ref.get("name") or "")), namespace)
        elif "fieldRef" in source:
            path = str(source["fieldRef"].get("fieldPath") or "")
            fields = {"metadata.name": pod_name, "metadata.namespace": namespace}
            if path not in fields:
                raise EnvResolutionError(f"env {name}: fieldRef {path!r} is not supported by the stand-in")
            value = fields[path]
        else:
            raise EnvResolutionError(f"env {name}: unsupported valueFrom {sorted(source)}")
        if value is not None:
            result[name] = value
    return result
