"""The Kubernetes manifests (k8s/) agree with the code, the pins and each other.

Each overlay is rendered once with `kubectl kustomize` (throw-away credentials) and checked
against the KubeRay CRD schemas with the same code as `make k8s-validate` (k8s/validate.py).
The Kubernetes OpenAPI validation and the checkov scan run in `make k8s-validate` only: they
need the tool venv and take longer.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = REPO_ROOT / "k8s"
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def _load_validator():
    spec = importlib.util.spec_from_file_location("k8s_validate", K8S_DIR / "validate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


validate = _load_validator()


def _pinned(package: str) -> str:
    """The exact version pyproject.toml pins for ``package`` (e.g. ray[tune,train]==2.60.0)."""
    for dep in PYPROJECT["project"]["dependencies"]:
        match = re.match(rf"^{package}(\[[^\]]*\])?==([^;,\s]+)$", dep)
        if match:
            return match.group(2)
    raise AssertionError(f"pyproject.toml pins no exact {package} version")


RAY_VERSION = _pinned("ray")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """{overlay: objects} for every overlay."""
    if validate.kubectl() is None:
        pytest.skip("kubectl not found on PATH: the overlays cannot be rendered")
    return {o: validate.parse_objects(validate.render(o)) for o in validate.overlays()}


@pytest.fixture(scope="session")
def crd_schemas() -> dict:
    directory = validate.crd_dir()
    if not directory.is_dir():
        pytest.skip(f"KubeRay CRD folder {directory} not found (set MONOLITH_K8S_CRDS)")
    return validate.load_crd_schemas(directory)


def _all(rendered: dict, kind: str) -> list[tuple[str, dict]]:
    return [(o, obj) for o, objs in rendered.items() for obj in objs if obj["kind"] == kind]


def _one(objs: list[dict], kind: str, name: str) -> dict:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _ray_cluster_specs(objs: list[dict]) -> list[tuple[str, dict]]:
    """(label, cluster spec): the RayCluster's and each RayJob's own cluster."""
    specs = []
    for obj in objs:
        if obj["kind"] == "RayCluster":
            specs.append((f"RayCluster/{obj['metadata']['name']}", obj["spec"]))
        elif obj["kind"] == "RayJob":
            specs.append((f"RayJob/{obj['metadata']['name']}", obj["spec"]["rayClusterSpec"]))
    return specs


def _ray_groups(spec: dict) -> list[tuple[str, dict]]:
    return [("head", spec["headGroupSpec"])] + [
        (g["groupName"], g) for g in spec.get("workerGroupSpecs", [])
    ]


def _pod_templates(obj: dict) -> list[tuple[str, dict]]:
    """Every pod template an object carries, labelled."""
    kind = obj["kind"]
    if kind in ("StatefulSet", "Deployment", "Job"):
        return [(kind, obj["spec"]["template"])]
    out = []
    if kind == "RayCluster":
        out += [(f"{kind} {g}", grp["template"]) for g, grp in _ray_groups(obj["spec"])]
    if kind == "RayJob":
        cluster = obj["spec"]["rayClusterSpec"]
        out += [(f"{kind} cluster {g}", grp["template"]) for g, grp in _ray_groups(cluster)]
        out.append((f"{kind} submitter", obj["spec"]["submitterPodTemplate"]))
    return out


def _dockerfile() -> str:
    return (K8S_DIR / "Dockerfile").read_text()


# --------------------------------------------------------------------------- versions


def test_dockerfile_base_is_the_pinned_ray_for_the_project_python():
    python = re.search(r">=\s*3\.(\d+)", PYPROJECT["project"]["requires-python"]).group(1)
    froms = re.findall(r"^FROM\s+(\S+)", _dockerfile(), flags=re.M)
    assert froms == [f"rayproject/ray:{RAY_VERSION}-py3{python}-gpu"], froms


def test_dockerfile_installs_tensorflow_gpu_with_the_pyproject_bounds():
    (bounds,) = [
        d.removeprefix("tensorflow")
        for d in PYPROJECT["project"]["dependencies"]
        if re.match(r"^tensorflow[<>=!~]", d)
    ]
    spec = re.search(r'^ARG TENSORFLOW_SPEC="([^"]+)"', _dockerfile(), flags=re.M).group(1)
    assert spec == f"tensorflow[and-cuda]{bounds}"


def test_dockerfile_runs_as_a_non_root_user():
    users = re.findall(r"^USER\s+(\S+)", _dockerfile(), flags=re.M)
    assert users, "the Dockerfile sets no USER"
    assert users[-1].split(":")[0] not in ("root", "0"), users[-1]


def test_manifests_name_the_pinned_ray(rendered):
    for overlay, objs in rendered.items():
        for label, spec in _ray_cluster_specs(objs):
            assert spec["rayVersion"] == RAY_VERSION, (overlay, label, spec["rayVersion"])
        images = {
            c["image"]
            for obj in objs
            for _, template in _pod_templates(obj)
            for c in template["spec"]["containers"]
        }
        ray_images = [i for i in images if "monolith-tune" in i or "rayproject/ray" in i]
        assert ray_images, overlay
        for image in ray_images:
            tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
            if "rayproject/ray" in image:
                assert tag.startswith(RAY_VERSION), (overlay, image)
            else:
                assert tag.endswith(f"-ray{RAY_VERSION}"), (overlay, image)


# --------------------------------------------------------------------------- entrypoints


def _entrypoints(rendered) -> list[tuple[str, str, str]]:
    return [
        (o, job["metadata"]["name"], job["spec"]["entrypoint"])
        for o, job in _all(rendered, "RayJob")
    ]


def _entrypoint_problem(entrypoint: str) -> str | None:
    """Why ``python -m MODULE ARGS`` would not start, or None."""
    argv = shlex.split(entrypoint)
    if argv[:2] != ["python", "-m"] or len(argv) < 3:
        return f"not of the form `python -m MODULE ...`: {entrypoint}"
    module, args = argv[2], argv[3:]
    if importlib.util.find_spec(module) is None:
        return f"no module {module}"
    if "--config" not in args or not (REPO_ROOT / args[args.index("--config") + 1]).is_file():
        return f"--config names no file of the repository: {args}"
    build_parser = getattr(importlib.import_module(module), "build_parser", None)
    if build_parser is None:
        return f"{module} has no build_parser()"
    try:
        build_parser().parse_args(args)
    except SystemExit as exc:
        return f"{module}'s parser rejects {args} (exit {exc.code})"
    return None


def test_rayjob_entrypoints_name_a_module_and_config_the_parser_accepts(rendered):
    jobs = _entrypoints(rendered)
    assert {name for _, name, _ in jobs} == {"monolith-tune", "monolith-final"}
    problems = [
        f"{overlay} RayJob/{name}: {problem}"
        for overlay, name, entrypoint in jobs
        if (problem := _entrypoint_problem(entrypoint))
    ]
    assert not problems, "\n".join(problems)


def test_the_entrypoint_check_catches_a_bad_argument():
    config = "--config configs/seed_best.yaml"
    assert _entrypoint_problem(f"python -m ray_jobs.nope {config}")
    assert _entrypoint_problem(f"python -m monolith.config {config}")
    if importlib.util.find_spec("ray_jobs.tune") is not None:
        assert "rejects" in _entrypoint_problem(f"python -m ray_jobs.tune {config} --bogus")
        assert _entrypoint_problem(f"python -m ray_jobs.tune {config}") is None


def test_rayjob_working_dir_is_the_image_workdir(rendered):
    workdir = re.findall(r"^WORKDIR\s+(\S+)", _dockerfile(), flags=re.M)[-1]
    for overlay, job in _all(rendered, "RayJob"):
        runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
        assert runtime_env["working_dir"] == workdir, (overlay, job["metadata"]["name"])


def test_s3_uris_use_the_bucket_the_bucket_job_creates(rendered):
    for overlay, objs in rendered.items():
        (mc,) = _one(objs, "Job", "minio-bucket")["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in mc["env"]}
        script = _one(objs, "ConfigMap", "minio-bucket-script")["data"]
        policy = json.loads(script["monolith-rw.json"])
        resources = {r for s in policy["Statement"] for r in s["Resource"]}
        assert resources == {f"arn:aws:s3:::{env['BUCKET']}", f"arn:aws:s3:::{env['BUCKET']}/*"}
        for _, name, entrypoint in _entrypoints({overlay: objs}):
            buckets = set(re.findall(r"s3://([^/\s]+)", entrypoint))
            assert buckets == {env["BUCKET"]}, (overlay, name, buckets)


# --------------------------------------------------------------------------- wiring


def test_ray_pods_get_storage_endpoint_and_credentials(rendered):
    for overlay, objs in rendered.items():
        minio = _one(objs, "Service", "minio")
        namespace = minio["metadata"]["namespace"]
        port = next(p["port"] for p in minio["spec"]["ports"] if p["name"] == "s3")
        storage = _one(objs, "ConfigMap", "monolith-storage")["data"]
        assert storage["AWS_ENDPOINT_URL"] == f"http://minio.{namespace}.svc:{port}", overlay
        assert storage["AWS_DEFAULT_REGION"]
        secrets = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Secret"}
        for label, spec in _ray_cluster_specs(objs):
            for group, grp in _ray_groups(spec):
                (container,) = grp["template"]["spec"]["containers"]
                where = (overlay, label, group)
                refs = [e["configMapRef"]["name"] for e in container.get("envFrom", [])]
                assert refs == ["monolith-storage"], where
                env = {e["name"]: e for e in container["env"]}
                for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                    ref = env[key]["valueFrom"]["secretKeyRef"]
                    assert ref["key"] == key, where
                    assert ref["name"] in secrets, (*where, ref["name"])
                    assert key in secrets[ref["name"]]["data"], (*where, key)


def test_rayjob_clusters_are_the_raycluster_spec(rendered):
    for overlay, objs in rendered.items():
        cluster = _one(objs, "RayCluster", "monolith")
        for _, job in _all({overlay: objs}, "RayJob"):
            assert job["spec"]["rayClusterSpec"] == cluster["spec"], (overlay, job["metadata"])


def test_ray_cluster_shape(rendered):
    for overlay, objs in rendered.items():
        spec = _one(objs, "RayCluster", "monolith")["spec"]
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", overlay
        assert spec["enableInTreeAutoscaling"] is True, overlay
        assert spec["authOptions"] == {"mode": "token"}, overlay
        (workers,) = spec["workerGroupSpecs"]
        assert 0 <= workers["minReplicas"] <= workers["replicas"] <= workers["maxReplicas"]
        gpus = workers["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert ("nvidia.com/gpu" in gpus) == (overlay != "dev"), (overlay, gpus)


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?", quantity)
    return int(match.group(1)) * units.get(match.group(2) or "", 1)


def test_ray_pods_size_dev_shm_for_the_object_store(rendered):
    for overlay, objs in rendered.items():
        for label, spec in _ray_cluster_specs(objs):
            for group, grp in _ray_groups(spec):
                pod = grp["template"]["spec"]
                where = (overlay, label, group)
                (shm,) = [v for v in pod["volumes"] if v["name"] == "dshm"]
                assert shm["emptyDir"]["medium"] == "Memory", where
                size = _bytes(shm["emptyDir"]["sizeLimit"])
                store = int(grp["rayStartParams"]["object-store-memory"])
                limit = _bytes(pod["containers"][0]["resources"]["limits"]["memory"])
                assert store <= size < limit, (*where, store, size, limit)
                mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
                assert mounts.get("/dev/shm") == "dshm", where


def test_every_container_requests_its_limits_and_runs_as_non_root(rendered):
    for overlay, objs in rendered.items():
        for obj in objs:
            for label, template in _pod_templates(obj):
                pod = template["spec"]
                where = (overlay, obj["metadata"]["name"], label)
                assert pod["securityContext"]["runAsNonRoot"] is True, where
                assert pod["securityContext"]["runAsUser"] != 0, where
                for c in pod["containers"]:
                    resources, security = c["resources"], c["securityContext"]
                    assert resources["requests"] == resources["limits"], (*where, c["name"])
                    assert security["allowPrivilegeEscalation"] is False, where
                    assert security["capabilities"]["drop"] == ["ALL"], where


def test_rayjobs_have_deadline_backoff_and_ttl(rendered):
    for overlay, job in _all(rendered, "RayJob"):
        spec, where = job["spec"], (overlay, job["metadata"]["name"])
        assert spec["activeDeadlineSeconds"] > 0, where
        assert spec["backoffLimit"] >= 1, where
        assert spec["ttlSecondsAfterFinished"] > 0, where
        assert spec["shutdownAfterJobFinishes"] is True, where
        assert "clusterSelector" not in spec, where
        # The final job waits for the tuning experiment it reads.
        assert spec.get("suspend", False) is (job["metadata"]["name"] == "monolith-final")


def test_kubeflow_overlay_opts_out_of_istio_under_a_dedicated_account(rendered):
    if "kubeflow" not in rendered:
        pytest.fail("no kubeflow overlay")
    objs = rendered["kubeflow"]
    assert not [o for o in objs if o["kind"] == "Namespace"], "the profile owns the namespace"
    namespaces = {o["metadata"]["namespace"] for o in objs}
    assert len(namespaces) == 1 and namespaces.pop().startswith("kubeflow-user-")
    accounts = {o["metadata"]["name"] for o in objs if o["kind"] == "ServiceAccount"}
    for obj in objs:
        for label, template in _pod_templates(obj):
            where = (obj["metadata"]["name"], label)
            annotations = template["metadata"].get("annotations", {})
            assert annotations.get("sidecar.istio.io/inject") == "false", where
            account = template["spec"].get("serviceAccountName")
            assert account in accounts, where
            if obj["kind"].startswith("Ray"):
                assert account == "monolith-ray", where


def test_nothing_needs_cluster_admin(rendered):
    for overlay, objs in rendered.items():
        kinds = {o["kind"] for o in objs}
        assert not kinds & {"ClusterRole", "ClusterRoleBinding"}, overlay
        assert all(o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace")


# --------------------------------------------------------------------------- CRD schemas


def test_every_overlay_validates_against_the_kuberay_crds(rendered, crd_schemas):
    for overlay, objs in rendered.items():
        ray_objects = [o for o in objs if validate.is_kuberay(o)]
        assert {o["kind"] for o in ray_objects} == {"RayCluster", "RayJob"}, overlay
        for obj in ray_objects:
            report = validate.check_crd_object(obj, crd_schemas, overlay)
            assert not report.problems, report.line()


def _broken(rendered, kind: str, change) -> dict:
    obj = copy.deepcopy(next(o for _, o in _all(rendered, kind)))
    change(obj)
    return obj


@pytest.mark.parametrize(
    ("kind", "change", "expected"),
    [
        (
            "RayCluster",
            lambda o: o["spec"].update(rayVersion=123),
            "spec.rayVersion: 123 is not of type 'string'",
        ),
        (
            "RayCluster",
            lambda o: o["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
            "rayStartParams.num-cpus: 0 is not of type 'string'",
        ),
        (
            "RayCluster",
            lambda o: o["spec"]["workerGroupSpecs"][0].update(maxReplica=3),
            "'maxReplica' was unexpected",
        ),
        (
            "RayJob",
            lambda o: o["spec"].update(backoffLimit="2"),
            "spec.backoffLimit: '2' is not of type 'integer'",
        ),
        (
            "RayJob",
            lambda o: o["spec"].update(suspend=True, shutdownAfterJobFinishes=False),
            "spec.suspend needs spec.shutdownAfterJobFinishes: true",
        ),
        (
            "RayCluster",
            lambda o: o["spec"].update(rayVersion="2.51.0"),
            "authOptions.mode token needs Ray >= 2.52.0",
        ),
    ],
    ids=["rayVersion-int", "num-cpus-int", "unknown-field", "backoff-str", "suspend", "old-ray"],
)
def test_the_validator_catches_a_broken_manifest(rendered, crd_schemas, kind, change, expected):
    report = validate.check_crd_object(_broken(rendered, kind, change), crd_schemas, "test")
    assert any(expected in p for p in report.problems), report.line()


# --------------------------------------------------------------------------- credentials


def _repo_files() -> list[Path]:
    """What a commit would hold: tracked files plus untracked, not-ignored ones."""
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    # Virtual environments are never committed, even before .gitignore names them.
    paths = [p for p in listed.split("\0") if p and not p.startswith(".venv")]
    return [REPO_ROOT / p for p in paths if (REPO_ROOT / p).is_file()]


# Values that are obviously not credentials: placeholders, or a shell expansion ($VAR, $(cmd)).
PLACEHOLDER = re.compile(
    r"^(|change-?me|testing|test|dummy|example|placeholder|x+|\.\.\.|<[^>]*>|\$.*)$"
)
SECRET_KEYS = ("MINIO_ROOT_" + "PASSWORD", "AWS_SECRET_" + "ACCESS_KEY", "RAY_AUTH_" + "TOKEN")
ENV_ASSIGNMENT = re.compile(
    r"^\s*(?:export\s+)?(" + "|".join(SECRET_KEYS) + r")\s*=\s*['\"]?([^'\"\s#]*)", re.M
)
CREDENTIAL_PATTERNS = {
    # Real key ids are base32 ([A-Z2-7]); AWS's documented sample ends in EXAMPLE.
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)(?![A-Z2-7]{9}EXAMPLE)[A-Z2-7]{16}\b"),
    "private key": re.compile("-----BEGIN (?:RSA |EC |OPENSSH |DSA )?" + "PRIVATE KEY-----"),
}


def _credential_findings(text: str) -> list[str]:
    found = [what for what, pattern in CREDENTIAL_PATTERNS.items() if pattern.search(text)]
    for key, value in ENV_ASSIGNMENT.findall(text):
        if not PLACEHOLDER.match(value):
            found.append(f"{key} has a value that is not a placeholder")
    return found


def test_the_credential_scan_finds_credentials():
    assert _credential_findings("MINIO_ROOT_" + "PASSWORD=s3cr3t-Value\n")
    assert _credential_findings("export AWS_SECRET_" + "ACCESS_KEY='wJalrXUtnFEMIK7MDENG'\n")
    assert _credential_findings("id: AKIA" + "QWERTYUIOPASDFGH")
    assert _credential_findings("-----BEGIN RSA " + "PRIVATE KEY-----")
    assert not _credential_findings("MINIO_ROOT_" + "PASSWORD=change-me\n")
    assert not _credential_findings("export RAY_AUTH_" + "TOKEN=$(kubectl get secret x)\n")


def test_no_credentials_in_committed_files():
    found = []
    for path in _repo_files():
        rel = path.relative_to(REPO_ROOT)
        if path.name.endswith(".env"):
            found.append(f"{rel}: an env file (only *.env.example may be committed)")
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        found += [f"{rel}: {what}" for what in _credential_findings(text)]
    assert not found, "\n".join(found)


def test_committed_manifests_hold_no_secret_values():
    found = []
    for path in _repo_files():
        rel = path.relative_to(REPO_ROOT)
        if rel.parts[0] != "k8s" or path.suffix not in (".yaml", ".yml"):
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict):
                continue
            if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
                found.append(f"{rel}: Secret with literal data")
            for generator in doc.get("secretGenerator") or []:
                if generator.get("literals"):
                    found.append(f"{rel}: secretGenerator {generator['name']} has literals")
    assert not found, "\n".join(found)


def test_secret_env_files_are_git_ignored_and_have_examples():
    kustomization = yaml.safe_load((K8S_DIR / "base" / "kustomization.yaml").read_text())
    env_files = [K8S_DIR / "base" / f for g in kustomization["secretGenerator"] for f in g["envs"]]
    assert env_files
    for env_file in env_files:
        example = env_file.with_name(env_file.name + ".example")
        assert example.is_file(), f"{example} missing"
        for line in example.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                assert PLACEHOLDER.match(line.split("=", 1)[1].strip()), (example, line)
        if shutil.which("git") and (REPO_ROOT / ".git").exists():
            ignored = subprocess.run(
                ["git", "check-ignore", "-q", str(env_file)], cwd=REPO_ROOT
            ).returncode
            assert ignored == 0, f"{env_file} is not git-ignored"


def test_throwaway_env_files_have_every_key_and_fresh_values(tmp_path):
    example = K8S_DIR / "base" / "minio-root.env.example"
    (tmp_path / example.name).write_text(example.read_text())
    validate.write_env_files(tmp_path, overwrite=True)
    first = (tmp_path / "minio-root.env").read_text()
    validate.write_env_files(tmp_path, overwrite=True)
    second = (tmp_path / "minio-root.env").read_text()
    keys = [line.split("=")[0] for line in first.splitlines()]
    assert keys == validate.env_keys(example) == ["MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"]
    assert first != second
    assert all(len(line.split("=")[1]) >= 8 for line in first.splitlines())
