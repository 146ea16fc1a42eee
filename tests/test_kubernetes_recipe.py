"""The Kubernetes recipe (deploy/kubernetes/, README "Scaling out") parsed and checked against
the project's settings and Mage 0.9.80's own names. No cluster runs here: nothing is applied."""

from __future__ import annotations

import ast
from pathlib import Path

import mage_ai
import yaml

from influx_magic.settings import SETTINGS
from tests.support import REPO_ROOT

RECIPE = REPO_ROOT / "deploy" / "kubernetes"
MAGE_SOURCE = Path(mage_ai.__file__).parent
# Variables the recipe sets that are not ours: Mage's, the S3 client's.
FOREIGN = {
    "MAGE_PUBLIC_HOST",
    "REQUIRE_USER_AUTHENTICATION",
    "MAGE_CONTAINER_NAME",
    "KUBE_NAMESPACE",
    "AWS_DEFAULT_REGION",
}


def documents() -> dict[str, dict]:
    docs = list(yaml.safe_load_all((RECIPE / "influx-magic.yaml").read_text()))
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def dataclass_fields(path: Path, name: str) -> set[str]:
    """The annotated fields of a dataclass in Mage's source (read, not imported: the
    executor's module needs the `kubernetes` client, which only the cluster image installs)."""
    tree = ast.parse(path.read_text())
    found = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name)
    return {n.target.id for n in found.body if isinstance(n, ast.AnnAssign)}


def test_the_manifests_wire_the_server_to_run_jobs_with_the_settings() -> None:
    docs = documents()
    assert set(docs) >= {
        "Namespace/influx-magic",
        "ServiceAccount/mage",
        "Role/mage-runs-jobs",
        "RoleBinding/mage-runs-jobs",
        "ConfigMap/influx-magic-settings",
        "Deployment/mage",
        "Service/mage",
    }
    rules = docs["Role/mage-runs-jobs"]["rules"]
    jobs = next(r for r in rules if "jobs" in r["resources"])
    assert jobs["apiGroups"] == ["batch"] and {"create", "get", "delete"} <= set(jobs["verbs"])
    spec = docs["Deployment/mage"]["spec"]
    assert spec["replicas"] == 1  # one scheduler
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "mage"
    (container,) = pod["containers"]
    assert container["command"][:3] == ["python", "-m", "influx_magic.mage_server"]
    assert {"configMapRef": {"name": "influx-magic-settings"}} in container["envFrom"]

    settings = docs["ConfigMap/influx-magic-settings"]["data"]
    names = set(settings) | {e["name"] for e in container["env"]}
    assert names - FOREIGN <= set(SETTINGS.defaults), names - FOREIGN - set(SETTINGS.defaults)
    assert settings["FLEETWATCH_STATE_DIR"].startswith("s3://")
    assert int(settings["FLEETWATCH_SHARDS"]) > 1
    assert (
        settings["INFLUX_HOST"].startswith("https://") and settings["INFLUX_HOST"].count(":") == 2
    )


def test_the_project_settings_are_mage_s_own_names() -> None:
    overrides = yaml.safe_load((RECIPE / "mage-project.yaml").read_text())
    project, pipeline = overrides["project"], overrides["pipeline"]
    executor = project["k8s_executor_config"]
    fields = dataclass_fields(MAGE_SOURCE / "services" / "k8s" / "config.py", "K8sExecutorConfig")
    assert set(executor) <= fields, set(executor) - fields
    assert executor["namespace"] == "influx-magic"
    assert project["remote_variables_dir"].startswith("s3://")
    repo_config = (MAGE_SOURCE / "data_preparation" / "repo_manager.py").read_text()
    for key in ("remote_variables_dir", "k8s_executor_config"):
        assert f"repo_config.get('{key}')" in repo_config

    from mage_ai.data_preparation.models.constants import ExecutorType

    assert pipeline["executor_type"] == ExecutorType.K8S.value
    ours = yaml.safe_load(
        (REPO_ROOT / "influx-magic/pipelines/machine_anomaly_detection/metadata.yaml").read_text()
    )
    assert ours["run_pipeline_in_one_process"] is pipeline["run_pipeline_in_one_process"] is True


def test_the_readme_shows_the_recipe() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Scaling out", 1)[1].split("\n## ", 1)[0]
    for name in ("deploy/kubernetes/influx-magic.yaml", "deploy/kubernetes/mage-project.yaml"):
        assert name in section
    assert "make bench BENCH=scale" in section and "FLEETWATCH_SHARDS" in section
