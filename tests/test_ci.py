"""ci/: the GitHub Actions workflow is one a real CI accepts, and the scripts it calls run here."""
from __future__ import annotations

import importlib.resources
import json
import os
import re
import subprocess
import sys

import jsonschema
import yaml

from conformance.reporting import document as matrix
from tests.conftest import REPO

WORKFLOW = REPO / "ci" / "conformance.yml"


def _workflow() -> dict:
    doc = yaml.safe_load(WORKFLOW.read_text())
    if True in doc:  # YAML 1.1 reads the key `on` as a boolean; GitHub (YAML 1.2) does not
        doc["on"] = doc.pop(True)
    return doc


def _steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def test_the_workflow_follows_githubs_workflow_schema():
    vendored = importlib.resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "github-workflows.json"
    schema = json.loads(vendored.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(_workflow()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_one_job_per_runtime_and_one_rootless_upload_summarise_and_pages_publish():
    wf = _workflow()
    assert set(wf["on"]) >= {"push", "pull_request"}
    jobs = wf["jobs"]
    assert set(jobs) == {"matrix", "rootless", "publish", "pages"}

    run = jobs["matrix"]
    assert run["strategy"]["matrix"]["runtime"] == ["ref", "runc", "crun", "runsc"]
    assert run["strategy"]["fail-fast"] is False
    assert "--privileged" in run["container"]["options"] and run["container"]["image"].startswith("debian:")
    commands = " ".join(s.get("run", "") for s in _steps(run))
    assert "bash ci/matrix.sh" in commands and "--junitxml" in commands and "bash ci/summary.sh" in commands
    uploads = [s for s in _steps(run) if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert uploads and uploads[0]["if"] == "always()" and "matrix.runtime" in uploads[0]["with"]["name"]

    rootless = jobs["rootless"]  # the rootless lane: its columns join the published matrix
    assert set(rootless["env"]["RUNTIMES"].split(",")) == {"runc:rootless", "crun:rootless"}
    assert "--privileged" in rootless["container"]["options"]
    assert "bash ci/matrix.sh" in " ".join(s.get("run", "") for s in _steps(rootless))
    assert [s["with"]["name"] for s in _steps(rootless) if s.get("uses", "").startswith("actions/upload-artifact@")] \
        == ["matrix-rootless"]

    publish = jobs["publish"]
    assert publish["needs"] == ["matrix", "rootless"] and publish["if"] == "always()"
    uses = [s.get("uses", "") for s in _steps(publish)]
    assert any(u.startswith("actions/download-artifact@") for u in uses)
    assert any(u.startswith("actions/upload-pages-artifact@") for u in uses)
    assert "bash ci/publish.sh reports site" in " ".join(s.get("run", "") for s in _steps(publish))

    pages = jobs["pages"]
    assert pages["permissions"] == {"pages": "write", "id-token": "write"}
    assert pages["environment"]["name"] == "github-pages"
    assert [s["uses"].split("@")[0] for s in _steps(pages)] == ["actions/deploy-pages"]


def test_every_script_the_workflow_calls_exists_and_parses():
    text = WORKFLOW.read_text()
    scripts = set(re.findall(r"bash (ci/[\w.-]+\.sh)", text))
    assert scripts >= {"ci/matrix.sh", "ci/summary.sh", "ci/publish.sh"}
    for script in scripts:
        path = REPO / script
        assert path.is_file(), script
        done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, f"{script}: {done.stderr}"


def _matrix(runtime: str, verdict: str, **extra) -> dict:
    result = {"scenario": "pid-ns-init-is-pid1", "runtime": runtime, "host": "local", "verdict": verdict,
              "tags": ["pid"], "duration_s": 0.05, "evidence": f"{runtime} says {verdict}"}
    return matrix.build_document([result], {"kernel": "6.1", "cgroup": "v2"},
                                 {runtime: {"path": f"/usr/bin/{runtime}", "version": "1"}}, **extra)


def test_publish_merges_the_jobs_matrices_and_summary_writes_them(tmp_path):
    reports = tmp_path / "reports"
    for runtime, verdict in (("runc", "pass"), ("runsc", "fail")):
        (reports / f"matrix-{runtime}").mkdir(parents=True)
        (reports / f"matrix-{runtime}" / "matrix.json").write_text(json.dumps(_matrix(runtime, verdict)))
    site = tmp_path / "site"
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", "ci/publish.sh", str(reports), str(site)], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    merged = json.loads((site / "matrix.json").read_text())
    assert list(merged["runtimes"]) == ["runc", "runsc"] and len(merged["results"]) == 2
    assert (site / "index.html").read_text() == (site / "matrix.html").read_text()
    assert "pid-ns-init-is-pid1 ≠" in (site / "matrix.md").read_text()

    (site / "baseline-diff.txt").write_text("REGRESSIONS (1): …\n")
    summary = tmp_path / "summary.md"
    done = subprocess.run(["bash", "ci/summary.sh", str(site)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "GITHUB_STEP_SUMMARY": str(summary)})
    assert done.returncode == 0, done.stderr
    text = summary.read_text()
    assert text.startswith("## Regression gate") and "REGRESSIONS (1)" in text
    assert "# Container runtime conformance matrix" in text and "runsc says fail" in text

    done = subprocess.run(["bash", "ci/publish.sh", str(tmp_path / "empty"), str(site)], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 2 and "no matrix.json" in done.stderr
