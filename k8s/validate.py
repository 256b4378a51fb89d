"""Render the kustomize overlays under k8s/ and validate every object they produce.

    k8s/ ──copy──▶ temp dir, with throw-away *.env made from each *.env.example
      │            (rendering never needs, nor sees, real credentials)
      └─ kubectl kustomize overlays/<name> ──▶ runs/k8s/<name>.yaml
           ├─ RayCluster, RayJob ─▶ the KubeRay v1.7.0 CRD openAPIV3Schema (jsonschema; strict:
           │                        unknown fields fail, as with `kubectl apply`), plus the
           │                        spec rules the KubeRay operator enforces at reconcile time
           ├─ every other object ─▶ the Kubernetes OpenAPI schemas (kubernetes-validate, strict)
           └─ the rendered files ─▶ checkov --framework kubernetes (skips: k8s/.checkov.yaml)

    python k8s/validate.py render   [--out runs/k8s]
    python k8s/validate.py check    [--out runs/k8s] [--kubernetes-version 1.31] [--no-checkov]
    python k8s/validate.py init-env     # write the real git-ignored env files (random values)

The CRDs are read from $MONOLITH_K8S_CRDS, else ../shared/k8s-crds beside the repository; when
that folder is absent the CRD part is skipped with a message naming the path. `render` and
`init-env` need only the standard library and kubectl; the CRD checks need pyyaml and jsonschema
(tests/integration/test_k8s.py imports them from the main venv); `check` also needs kubernetes-validate and
checkov, installed in the tool venv .venv-k8s by `make k8s-validate`.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
K8S_DIR = REPO_ROOT / "k8s"
DEFAULT_CRD_DIR = REPO_ROOT.parent / "shared" / "k8s-crds"
CRD_FILES = ("ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml")
KUBERAY_VERSION = "v1.7.0"
KUBERNETES_VERSION = "1.31"
CHECKOV_CONFIG = K8S_DIR / ".checkov.yaml"
# Ray token authentication needs this Ray (KubeRay refuses authOptions.mode=token below it).
MIN_RAY_FOR_TOKEN_AUTH = (2, 52, 0)
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class RenderError(Exception):
    """An overlay could not be rendered (kubectl missing or kustomize failing)."""


@dataclass
class Report:
    """What one object's validation found; ``problems`` empty means it passed."""

    overlay: str
    kind: str
    name: str
    against: str
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        status = "ok  " if not self.problems else "FAIL"
        head = f"{status} {self.overlay:<9} {self.kind}/{self.name}  [{self.against}]"
        return "\n".join([head, *(f"       {p}" for p in self.problems)])


# --------------------------------------------------------------------------- rendering


def overlays(k8s_dir: Path = K8S_DIR) -> list[str]:
    """The overlay names: the folders under k8s/overlays holding a kustomization.yaml."""
    root = k8s_dir / "overlays"
    return sorted(p.parent.name for p in root.glob("*/kustomization.yaml"))


def crd_dir() -> Path:
    """Where the KubeRay CRDs are: $MONOLITH_K8S_CRDS, else ../shared/k8s-crds."""
    return Path(os.environ.get("MONOLITH_K8S_CRDS") or DEFAULT_CRD_DIR)


def kubectl() -> str | None:
    return shutil.which("kubectl")


def env_keys(example: Path) -> list[str]:
    """The variable names an ``*.env.example`` declares (comments and blanks ignored)."""
    keys = []
    for raw in example.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keys.append(line.split("=", 1)[0].strip())
    return keys


def random_env(example: Path) -> str:
    """An env file with the example's keys and fresh random values (hex: no quoting needed;
    20 characters for ids and users, 40 for secrets, above MinIO's minimum lengths)."""
    lines = []
    for key in env_keys(example):
        short = key.endswith(("_USER", "_ID"))
        lines.append(f"{key}={secrets.token_hex(10 if short else 20)}")
    return "\n".join(lines) + "\n"


def write_env_files(root: Path, *, overwrite: bool) -> list[tuple[Path, bool]]:
    """Write ``X.env`` beside every ``X.env.example`` under ``root`` with random values.

    Returns (path, written) pairs; with ``overwrite=False`` an existing file is kept.
    """
    done = []
    for example in sorted(root.rglob("*.env.example")):
        target = example.with_name(example.name.removesuffix(".example"))
        if target.exists() and not overwrite:
            done.append((target, False))
            continue
        target.write_text(random_env(example))
        target.chmod(0o600)
        done.append((target, True))
    return done


def render(overlay: str, k8s_dir: Path = K8S_DIR) -> str:
    """``kubectl kustomize`` of one overlay, from a temporary copy of ``k8s_dir`` in which
    every ``*.env`` is a throw-away one (so it works on a fresh clone, where none exist)."""
    binary = kubectl()
    if binary is None:
        raise RenderError("kubectl not found on PATH (kubectl >= 1.27 carries kustomize v5)")
    if overlay not in overlays(k8s_dir):
        raise RenderError(
            f"overlay {overlay!r} not found; overlays: {', '.join(overlays(k8s_dir))}"
        )
    with tempfile.TemporaryDirectory(prefix="monolith-k8s-") as tmp:
        copy_dir = Path(tmp) / "k8s"
        shutil.copytree(k8s_dir, copy_dir, ignore=shutil.ignore_patterns("*.env", "__pycache__"))
        write_env_files(copy_dir, overwrite=True)
        done = subprocess.run(
            [binary, "kustomize", str(copy_dir / "overlays" / overlay)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    if done.returncode != 0:
        raise RenderError(f"overlay {overlay}: kubectl kustomize failed:\n{done.stderr.strip()}")
    return done.stdout


def render_all(out: Path, k8s_dir: Path = K8S_DIR) -> dict[str, Path]:
    """Render every overlay into ``out/<overlay>.yaml``."""
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in overlays(k8s_dir):
        path = out / f"{name}.yaml"
        path.write_text(render(name, k8s_dir))
        files[name] = path
    return files


def parse_objects(text: str) -> list[dict[str, Any]]:
    import yaml

    return [doc for doc in yaml.safe_load_all(text) if doc]


def ident(obj: dict[str, Any]) -> tuple[str, str]:
    return str(obj.get("kind", "?")), str((obj.get("metadata") or {}).get("name", "?"))


# --------------------------------------------------------------------------- CRD schemas


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of a structural schema in which unknown fields are errors.

    The API server drops (or, with kubectl's default strict field validation, rejects) fields
    a CRD schema does not declare; JSON Schema allows them unless told otherwise.
    """
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def load_crd_schemas(directory: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """{(apiVersion, kind): strict openAPIV3Schema} for every served version of the CRDs."""
    import yaml

    schemas = {}
    for name in CRD_FILES:
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(f"KubeRay CRD {path} not found")
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = version["schema"]["openAPIV3Schema"]
                schemas[(f"{group}/{version['name']}", kind)] = strict_schema(schema)
    return schemas


def _cel_rules(validator: Any, rules: list[dict[str, Any]], instance: Any, schema: Any) -> Iterator:
    """x-kubernetes-validations: CEL cannot be evaluated here. Transition rules (oldSelf)
    do not apply on creation; any other rule on a field we set is reported, not passed."""
    from jsonschema import ValidationError

    for rule in rules:
        if "oldSelf" not in rule.get("rule", ""):
            yield ValidationError(
                f"CEL rule not evaluated offline: {rule.get('rule')!r} ({rule.get('message')})"
            )


def crd_validator(schema: dict[str, Any]) -> Any:
    """A jsonschema validator for an OpenAPI v3 structural schema (Draft 4 semantics, as
    OpenAPI 3.0; Kubernetes `x-kubernetes-*` keywords other than validations are ignored)."""
    from jsonschema import validators

    cls = validators.extend(validators.Draft4Validator, {"x-kubernetes-validations": _cel_rules})
    return cls(schema)


def _where(path: Any) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "<root>"


def schema_problems(obj: dict[str, Any], schemas: dict[tuple[str, str], dict]) -> list[str]:
    """Problems of one RayCluster/RayJob against its CRD schema: where, what, which schema rule."""
    key = (str(obj.get("apiVersion")), str(obj.get("kind")))
    if key not in schemas:
        return [f"no CRD schema for apiVersion {key[0]} kind {key[1]}"]
    problems = []
    errors = crd_validator(schemas[key]).iter_errors(obj)
    for error in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path]):
        message = error.message if len(error.message) < 300 else error.message[:297] + "..."
        rule = "/".join(str(p) for p in error.absolute_schema_path)
        problems.append(f"{_where(error.absolute_path)}: {message} (schema: {rule})")
    return problems


# --------------------------------------------------------------------------- KubeRay rules


def _version(text: str) -> tuple[int, ...] | None:
    match = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", str(text))
    return tuple(int(g or 0) for g in match.groups()) if match else None


def cluster_spec_problems(spec: dict[str, Any], where: str) -> list[str]:
    """The RayCluster spec rules KubeRay's operator enforces (ValidateRayClusterSpec in
    ray-operator/controllers/ray/utils/validation.go) that a schema cannot express."""
    problems = []
    head = spec.get("headGroupSpec") or {}
    groups = [("head", head)] + [
        (f"workerGroupSpecs[{i}]", g) for i, g in enumerate(spec.get("workerGroupSpecs") or [])
    ]
    for name, group in groups:
        containers = ((group.get("template") or {}).get("spec") or {}).get("containers") or []
        if not containers:
            problems.append(f"{where}.{name}: the pod template needs at least one container")
        params = group.get("rayStartParams") or {}
        in_params = any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources"))
        if in_params and group.get("resources"):
            problems.append(
                f"{where}.{name}: resources set both in rayStartParams and in resources"
            )
        if "labels" in params:
            problems.append(f"{where}.{name}: rayStartParams['labels'] is not supported")
    for i, group in enumerate(spec.get("workerGroupSpecs") or []):
        low, high = group.get("minReplicas", 0), group.get("maxReplicas", 2**31 - 1)
        replicas = group.get("replicas", low)
        if not low <= replicas <= high:
            problems.append(
                f"{where}.workerGroupSpecs[{i}]: replicas {replicas} outside "
                f"[minReplicas {low}, maxReplicas {high}]"
            )
        if spec.get("enableInTreeAutoscaling") and group.get("suspend"):
            problems.append(f"{where}.workerGroupSpecs[{i}]: cannot be suspended with autoscaling")
    if (spec.get("authOptions") or {}).get("mode") == "token":
        version = _version(spec.get("rayVersion", ""))
        if version is None or version < MIN_RAY_FOR_TOKEN_AUTH:
            problems.append(
                f"{where}.rayVersion {spec.get('rayVersion')!r}: authOptions.mode token needs "
                "Ray >= 2.52.0"
            )
    return problems


def rayjob_problems(spec: dict[str, Any]) -> list[str]:
    """The RayJob rules of KubeRay's ValidateRayJobSpec that a schema cannot express."""
    import yaml

    problems = []
    shutdown = spec.get("shutdownAfterJobFinishes", False)
    selector = spec.get("clusterSelector") or {}
    mode = spec.get("submissionMode", "K8sJobMode")
    if spec.get("suspend") and not shutdown:
        problems.append("spec.suspend needs spec.shutdownAfterJobFinishes: true")
    if spec.get("ttlSecondsAfterFinished", 0) < 0:
        problems.append("spec.ttlSecondsAfterFinished must not be negative")
    if not shutdown and spec.get("ttlSecondsAfterFinished", 0) > 0:
        problems.append("spec.ttlSecondsAfterFinished needs spec.shutdownAfterJobFinishes: true")
    if selector and spec.get("suspend"):
        problems.append("spec.suspend is not supported with spec.clusterSelector")
    if not selector and not spec.get("rayClusterSpec"):
        problems.append("one of spec.rayClusterSpec or spec.clusterSelector must be set")
    if selector and not selector.get("ray.io/cluster"):
        problems.append("spec.clusterSelector needs the key ray.io/cluster")
    if selector and mode == "SidecarMode":
        problems.append("spec.clusterSelector is not supported in SidecarMode")
    if mode == "InteractiveMode" and spec.get("backoffLimit", 0) > 0:
        problems.append("spec.backoffLimit is incompatible with InteractiveMode")
    if mode == "SidecarMode" and spec.get("submitterPodTemplate"):
        problems.append("spec.submitterPodTemplate is not supported in SidecarMode")
    if "activeDeadlineSeconds" in spec and spec["activeDeadlineSeconds"] <= 0:
        problems.append("spec.activeDeadlineSeconds must be positive")
    if spec.get("backoffLimit", 0) < 0:
        problems.append("spec.backoffLimit must not be negative")
    try:
        runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML") or "{}")
        if not isinstance(runtime_env, dict):
            problems.append("spec.runtimeEnvYAML must be a YAML mapping")
    except yaml.YAMLError as exc:
        problems.append(f"spec.runtimeEnvYAML is not valid YAML: {exc}")
    if spec.get("rayClusterSpec"):
        problems += cluster_spec_problems(spec["rayClusterSpec"], "spec.rayClusterSpec")
    return problems


def operator_problems(obj: dict[str, Any]) -> list[str]:
    kind, name = ident(obj)
    problems = []
    if not DNS_1035_LABEL.match(name) or len(name) > 63:
        problems.append(f"metadata.name {name!r} must be a DNS-1035 label (KubeRay names from it)")
    spec = obj.get("spec") or {}
    if kind == "RayCluster":
        problems += cluster_spec_problems(spec, "spec")
    elif kind == "RayJob":
        problems += rayjob_problems(spec)
    return problems


def check_crd_object(
    obj: dict[str, Any], schemas: dict[tuple[str, str], dict], overlay: str = "-"
) -> Report:
    """A RayCluster or RayJob against the KubeRay CRD schema and the operator's rules."""
    kind, name = ident(obj)
    report = Report(overlay, kind, name, f"KubeRay {KUBERAY_VERSION} CRD schema + operator rules")
    # The operator only ever sees objects the API server accepted: its rules come second.
    report.problems = schema_problems(obj, schemas) or operator_problems(obj)
    return report


def is_kuberay(obj: dict[str, Any]) -> bool:
    return str(obj.get("apiVersion", "")).startswith("ray.io/")


# --------------------------------------------------------------------------- core + checkov


def check_core_object(obj: dict[str, Any], version: str, overlay: str = "-") -> Report:
    """A built-in object against the Kubernetes OpenAPI schema of ``version`` (strict)."""
    import kubernetes_validate

    kind, name = ident(obj)
    report = Report(overlay, kind, name, f"Kubernetes {version} OpenAPI schema, strict")
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        rule = "/".join(str(p) for p in error.schema_path)
        report.problems.append(f"{_where(error.path)}: {error.message} (schema: {rule})")
    except kubernetes_validate.SchemaNotFoundError as error:
        report.problems.append(error.message)
    return report


@dataclass
class CheckovResult:
    passed: int
    failed: int
    skipped: int
    failures: list[str]


def checkov_skips(config: Path = CHECKOV_CONFIG) -> list[str]:
    """The check ids k8s/.checkov.yaml switches off (each with its reason there)."""
    import yaml

    return list(yaml.safe_load(config.read_text()).get("skip-check") or [])


def run_checkov(files: list[Path], config: Path = CHECKOV_CONFIG) -> CheckovResult:
    """checkov's Kubernetes checks on the rendered files (its binary beside this Python)."""
    binary = Path(sys.executable).with_name("checkov")
    command = [str(binary) if binary.exists() else "checkov", "--config-file", str(config)]
    for path in files:
        command += ["-f", str(path)]
    done = subprocess.run(
        [*command, "--output", "json"], capture_output=True, text=True, timeout=600
    )
    try:
        data = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise RuntimeError(f"checkov gave no JSON (exit {done.returncode}): {done.stderr}") from exc
    reports = data if isinstance(data, list) else [data]
    result = CheckovResult(0, 0, 0, [])
    for report in reports:
        summary = report.get("summary", {})
        result.passed += summary.get("passed", 0)
        result.failed += summary.get("failed", 0)
        result.skipped += summary.get("skipped", 0)
        for check in report.get("results", {}).get("failed_checks", []):
            result.failures.append(
                f"{check['check_id']} {check['check_name']}: {check['resource']} "
                f"({Path(check['file_path']).name})"
            )
    return result


# --------------------------------------------------------------------------- commands


def check(out: Path, version: str, with_checkov: bool) -> int:
    if kubectl() is None:
        print("SKIP k8s validation: kubectl not found on PATH (install kubectl >= 1.27)")
        return 0
    try:
        files = render_all(out)
    except RenderError as exc:
        print(f"FAIL {exc}")
        return 1
    print(f"rendered {', '.join(str(p) for p in files.values())}")

    directory = crd_dir()
    schemas = None
    if directory.is_dir():
        schemas = load_crd_schemas(directory)
    else:
        print(
            f"SKIP KubeRay CRD validation: {directory} not found "
            "(set MONOLITH_K8S_CRDS to the folder holding ray.io_rayclusters.yaml)"
        )

    reports = []
    for overlay, path in files.items():
        for obj in parse_objects(path.read_text()):
            if not is_kuberay(obj):
                report = check_core_object(obj, version, overlay)
            elif schemas is not None:
                report = check_crd_object(obj, schemas, overlay)
            else:
                continue
            reports.append(report)
            print(report.line())
    failed = [r for r in reports if r.problems]
    crd_count = sum(1 for r in reports if r.against.startswith("KubeRay"))
    print(
        f"{len(reports)} objects checked in {len(files)} overlays: {crd_count} against the KubeRay "
        f"{KUBERAY_VERSION} CRDs, {len(reports) - crd_count} against Kubernetes {version}; "
        f"{len(failed)} failed"
    )

    checkov_failed = 0
    if with_checkov:
        result = run_checkov(list(files.values()))
        for line in result.failures:
            print(f"FAIL checkov {line}")
        print(
            f"checkov (kubernetes): {result.passed} passed, {result.failed} failed, "
            f"{result.skipped} skipped; not run: {', '.join(checkov_skips()) or 'none'} "
            f"(reasons in k8s/{CHECKOV_CONFIG.name})"
        )
        checkov_failed = result.failed
    return 1 if failed or checkov_failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python k8s/validate.py", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_render = sub.add_parser("render", help="render every overlay into OUT/<overlay>.yaml")
    p_check = sub.add_parser("check", help="render, then validate every object")
    for p in (p_render, p_check):
        p.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "k8s")
    p_check.add_argument("--kubernetes-version", default=KUBERNETES_VERSION)
    p_check.add_argument("--no-checkov", action="store_true", help="skip the checkov scan")
    sub.add_parser("init-env", help="write the git-ignored env files (random values), if absent")
    args = parser.parse_args(argv)

    if args.command == "render":
        try:
            for name, path in render_all(args.out).items():
                print(f"{name}: {path}")
        except RenderError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "init-env":
        for path, written in write_env_files(K8S_DIR, overwrite=False):
            what = "written (random values)" if written else "kept (exists)"
            print(f"{path.relative_to(REPO_ROOT)}: {what}")
        return 0
    return check(args.out, args.kubernetes_version, not args.no_checkov)


if __name__ == "__main__":
    sys.exit(main())
