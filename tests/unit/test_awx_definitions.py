"""awx/controller.yml against the argument specs of the awx.awx modules that apply it (read offline with
ansible-doc), and against this repository: playbooks exist, surveys are well formed, schedules and workflow nodes
name templates that exist, and awx/apply.yml passes every parameter each item uses."""

import functools
import json
import os
import re
import subprocess

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.parsing.utils.yaml import from_yaml

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
with open(os.path.join(ROOT, "awx", "controller.yml")) as fh:
    CONTROLLER = from_yaml(fh.read())  # Ansible's loader: the credential injector is !unsafe
with open(os.path.join(ROOT, "awx", "apply.yml")) as fh:
    APPLY = from_yaml(fh.read())

LISTS = {
    "selfhosted_awx_credential_types": "awx.awx.credential_type",
    "selfhosted_awx_projects": "awx.awx.project",
    "selfhosted_awx_job_templates": "awx.awx.job_template",
    "selfhosted_awx_workflows": "awx.awx.workflow_job_template",
    "selfhosted_awx_schedules": "awx.awx.schedule",
}
SURVEY_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}
DOC_KEYS = ("type", "elements", "choices", "required", "aliases", "default")


def to_spec(options):
    """ansible-doc options -> an argument_spec for ArgumentSpecValidator."""
    spec = {}
    for name, opt in options.items():
        entry = {k: opt[k] for k in DOC_KEYS if k in opt}
        if entry.get("type") == "raw" or "type" not in entry:
            entry["type"] = "raw"
        if "suboptions" in opt:
            entry["options"] = to_spec(opt["suboptions"])
        spec[name] = entry
    return spec


@functools.cache
def module_spec(module):
    out = subprocess.run(["ansible-doc", "-j", module], capture_output=True, text=True, check=True).stdout
    return to_spec(json.loads(out)[module]["doc"]["options"])


def items():
    for key, module in LISTS.items():
        for item in CONTROLLER[key]:
            yield pytest.param(key, module, item, id=f"{module}:{item['name']}")


@pytest.mark.parametrize(("key", "module", "item"), list(items()))
def test_item_matches_the_module_argument_spec(key, module, item):
    result = ArgumentSpecValidator(module_spec(module)).validate(item)
    assert not result.error_messages, f"{key} {item['name']}: {result.error_messages}"


@pytest.mark.parametrize(("key", "module", "item"), list(items()))
def test_apply_passes_every_parameter_used(key, module, item):
    task = next(t for t in APPLY[0]["tasks"] if module in t)
    passed = set(task[module])
    assert set(item) <= passed, f"awx/apply.yml drops {sorted(set(item) - passed)} of {item['name']}"


def test_apply_tasks_use_only_module_parameters():
    for task in APPLY[0]["tasks"]:
        module = next(k for k in task if k.startswith("awx.awx."))
        unknown = set(task[module]) - set(module_spec(module))
        assert not unknown, f"{module} in awx/apply.yml: unknown parameters {sorted(unknown)}"


def test_playbooks_exist():
    for template in CONTROLLER["selfhosted_awx_job_templates"]:
        assert os.path.isfile(os.path.join(ROOT, template["playbook"])), template["playbook"]


def surveys():
    for key in ("selfhosted_awx_job_templates", "selfhosted_awx_workflows"):
        for item in CONTROLLER[key]:
            if item.get("survey_enabled"):
                yield pytest.param(item, id=item["name"])


@pytest.mark.parametrize("item", list(surveys()))
def test_surveys_are_well_formed(item):
    survey = item["survey_spec"]
    assert survey["name"] and isinstance(survey["spec"], list) and survey["spec"]
    variables = [q["variable"] for q in survey["spec"]]
    assert len(variables) == len(set(variables))
    for q in survey["spec"]:
        assert q["type"] in SURVEY_TYPES, q
        assert re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", q["variable"]), q
        assert q["question_name"] and isinstance(q["required"], bool)
        if q["type"] in ("multiplechoice", "multiselect"):
            assert q["choices"], q
            defaults = [d for d in str(q.get("default", "")).split("\n") if d]
            assert set(defaults) <= set(q["choices"]), q
        if q["type"] == "text" and q.get("default"):
            assert q.get("min", 0) <= len(q["default"]) <= q.get("max", 1024), q


def test_references_resolve():
    templates = {t["name"] for t in CONTROLLER["selfhosted_awx_job_templates"]}
    workflows = {w["name"] for w in CONTROLLER["selfhosted_awx_workflows"]}
    for schedule in CONTROLLER["selfhosted_awx_schedules"]:
        assert schedule["unified_job_template"] in templates | workflows, schedule["name"]
        assert re.match(r"^DTSTART:\d{8}T\d{6}Z RRULE:FREQ=", schedule["rrule"]), schedule["rrule"]
    for workflow in CONTROLLER["selfhosted_awx_workflows"]:
        ids = {n["identifier"] for n in workflow["workflow_nodes"]}
        for node in workflow["workflow_nodes"]:
            assert node["unified_job_template"]["name"] in templates, node
            for kind in ("success_nodes", "failure_nodes", "always_nodes"):
                for target in node.get("related", {}).get(kind, []):
                    assert target["identifier"] in ids, (workflow["name"], target)
    projects = {p["name"] for p in CONTROLLER["selfhosted_awx_projects"]}
    assert all(t["project"] in projects for t in CONTROLLER["selfhosted_awx_job_templates"])


def test_a_typo_is_caught():
    """The check itself fails on a misspelt parameter and a value outside a choice list."""
    bad = dict(CONTROLLER["selfhosted_awx_job_templates"][0], playbok="x.yml")
    assert ArgumentSpecValidator(module_spec("awx.awx.job_template")).validate(bad).error_messages
    bad = dict(CONTROLLER["selfhosted_awx_job_templates"][0], job_type="walk")
    assert ArgumentSpecValidator(module_spec("awx.awx.job_template")).validate(bad).error_messages
