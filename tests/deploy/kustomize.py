"""Renders the Kustomize folders of deploy/kubernetes/ in Python, without kubectl.

Only the features the base and overlays use: `resources` (files and folders), `namespace`,
`configMapGenerator` (files; create or replace, with kustomize's name hash appended and
every reference to the ConfigMap renamed), `images`, and JSON 6902 `patches` by kind and
name. Anything else in a kustomization is refused, so the manifests cannot start to rely on
a feature this renderer would silently skip. The output equals `kubectl kustomize` (compared
in tests/deploy/test_kubernetes.py where kubectl exists)."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SUPPORTED_KEYS = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "configMapGenerator",
    "images",
    "patches",
}
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole"}
Obj = dict[str, Any]


class KustomizeError(Exception):
    pass


def config_map_hash(data: dict[str, str]) -> str:
    """kustomize's name suffix (api/hasher): sha256 of Go's JSON (sorted keys, HTML
    escaped) of kind, data and an empty name (its lookup of "metadata/name" finds nothing),
    the first ten hex digits with 0 1 3 a e spelled g h k m t."""
    text = json.dumps(
        {"data": data, "kind": "ConfigMap", "name": ""},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    for char, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
        text = text.replace(char, escaped)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


@dataclass
class Generated:
    """A generated ConfigMap before its name gets the hash."""

    name: str
    data: dict[str, str]


@dataclass
class Rendering:
    objects: list[Obj] = field(default_factory=list)
    config_maps: dict[str, Generated] = field(default_factory=dict)
    namespace: str | None = None


def _split_image(image: str) -> tuple[str, str]:
    """("name", ":tag" or "@digest" or "")."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, "@" + digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon:]
    return image, ""


def _pod_spec(obj: Obj) -> Obj | None:
    spec = obj.get("spec", {})
    if obj["kind"] == "Pod":
        return spec
    if obj["kind"] == "CronJob":
        return spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
    template = spec.get("template")
    return template.get("spec") if isinstance(template, dict) else None


def _containers(obj: Obj) -> list[Obj]:
    pod = _pod_spec(obj)
    if pod is None:
        return []
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _set_images(objects: list[Obj], images: list[Obj]) -> None:
    for obj in objects:
        for container in _containers(obj):
            name, suffix = _split_image(container["image"])
            for entry in images:
                if entry["name"] != name:
                    continue
                if "digest" in entry:
                    suffix = "@" + entry["digest"]
                elif "newTag" in entry:
                    suffix = ":" + str(entry["newTag"])
                container["image"] = entry.get("newName", name) + suffix


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise KustomizeError(f"JSON patch path: expected /..., found {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _json_patch(obj: Obj, operations: list[Obj]) -> None:
    for operation in operations:
        *parents, last = _pointer(operation["path"])
        node: Any = obj
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        op = operation["op"]
        if isinstance(node, list):
            if op == "add" and last == "-":
                node.append(operation["value"])
                continue
            index = int(last)
            if not 0 <= index < len(node) + (op == "add"):
                raise KustomizeError(f"JSON patch {operation['path']}: no such index")
            if op == "add":
                node.insert(index, operation["value"])
            elif op == "replace":
                node[index] = operation["value"]
            elif op == "remove":
                del node[index]
            else:
                raise KustomizeError(f"JSON patch op: expected add/replace/remove, found {op}")
        else:
            if op in ("replace", "remove") and last not in node:
                raise KustomizeError(f"JSON patch {operation['path']}: no such member")
            if op in ("add", "replace"):
                node[last] = operation["value"]
            elif op == "remove":
                del node[last]
            else:
                raise KustomizeError(f"JSON patch op: expected add/replace/remove, found {op}")


def _apply_patches(objects: list[Obj], patches: list[Obj]) -> None:
    for patch in patches:
        target = patch["target"]
        if set(target) - {"kind", "name"} or "path" in patch:
            raise KustomizeError(f"patches: only inline patches by kind and name, found {patch}")
        matched = [
            o
            for o in objects
            if o["kind"] == target.get("kind", o["kind"])
            and o["metadata"]["name"] == target.get("name", o["metadata"]["name"])
        ]
        if not matched:
            raise KustomizeError(f"patch target {target}: expected a resource, found none")
        for obj in matched:
            _json_patch(obj, yaml.safe_load(patch["patch"]))


def _generate(folder: Path, rendering: Rendering, generators: list[Obj]) -> None:
    for generator in generators:
        if set(generator) - {"name", "files", "behavior"}:
            raise KustomizeError(f"configMapGenerator: unsupported keys in {generator}")
        data = {}
        for item in generator["files"]:
            key, _, file_name = item.rpartition("=")
            path = folder / file_name
            data[key or path.name] = path.read_text(encoding="utf-8")
        name = generator["name"]
        behavior = generator.get("behavior", "create")
        existing = rendering.config_maps.get(name)
        if behavior == "create" and existing is not None:
            raise KustomizeError(f"configMapGenerator {name}: exists, expected behavior")
        if behavior == "replace" and existing is None:
            raise KustomizeError(f"configMapGenerator {name}: nothing to replace")
        if behavior == "merge" and existing is not None:
            data = {**existing.data, **data}
        rendering.config_maps[name] = Generated(name, data)


def _build(folder: Path) -> Rendering:
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(kustomization) - SUPPORTED_KEYS
    if unknown:
        raise KustomizeError(f"{folder}: expected only {sorted(SUPPORTED_KEYS)}, found {unknown}")
    rendering = Rendering()
    for resource in kustomization.get("resources", []):
        path = folder / resource
        if path.is_dir():
            inner = _build(path)
            rendering.objects += inner.objects
            rendering.config_maps.update(inner.config_maps)
            rendering.namespace = inner.namespace or rendering.namespace
        else:
            docs = yaml.safe_load_all(path.read_text(encoding="utf-8"))
            rendering.objects += [d for d in docs if d]
    _generate(folder, rendering, kustomization.get("configMapGenerator", []))
    _set_images(rendering.objects, kustomization.get("images", []))
    _apply_patches(rendering.objects, kustomization.get("patches", []))
    namespace = kustomization.get("namespace")
    if namespace:
        for obj in rendering.objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = namespace
        rendering.namespace = namespace
    return rendering


def _rename_config_maps(obj: Obj, names: dict[str, str]) -> None:
    pod = _pod_spec(obj)
    if pod is None:
        return
    for volume in pod.get("volumes", []):
        if "configMap" in volume:
            volume["configMap"]["name"] = names.get(
                volume["configMap"]["name"], volume["configMap"]["name"]
            )
    for container in _containers(obj):
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("configMapKeyRef")
            if ref:
                ref["name"] = names.get(ref["name"], ref["name"])
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef")
            if ref:
                ref["name"] = names.get(ref["name"], ref["name"])


def render(folder: Path) -> list[Obj]:
    """The objects `kubectl kustomize folder` prints (in file order, not kubectl's)."""
    rendering = _build(folder)
    objects = copy.deepcopy(rendering.objects)
    namespace = rendering.namespace
    names: dict[str, str] = {}
    for generated in rendering.config_maps.values():
        hashed = f"{generated.name}-{config_map_hash(generated.data)}"
        names[generated.name] = hashed
        metadata: Obj = {"name": hashed}
        if namespace:
            metadata["namespace"] = namespace
        config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata}
        objects.insert(0, {**config_map, "data": generated.data})
    for obj in objects:
        _rename_config_maps(obj, names)
    return objects
