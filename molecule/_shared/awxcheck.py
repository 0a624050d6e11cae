"""Running awx/controller.yml's job templates the way AWX does: ansible-runner, the survey's default answers."""

import os

import ansible_runner
import labcheck
from ansible.parsing.utils.yaml import from_yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
with open(os.path.join(ROOT, "awx", "controller.yml")) as fh:
    CONTROLLER = from_yaml(fh.read())
TEMPLATES = {t["name"]: t for t in CONTROLLER["selfhosted_awx_job_templates"]}
SCHEDULED = {s["unified_job_template"]: s.get("extra_data", {}) for s in CONTROLLER["selfhosted_awx_schedules"]}
ENV_KEYS = (
    "PATH",
    "HOME",
    "LAB_CACHE",
    "ANSIBLE_COLLECTIONS_PATH",
    "ANSIBLE_ROLES_PATH",
    "ANSIBLE_PIPELINING",
    "MOLECULE_PROJECT_DIRECTORY",
)


def survey_defaults(template):
    """The extra variables AWX sends when every survey question keeps its default (empty answers are not sent)."""
    out = {}
    for q in template.get("survey_spec", {}).get("spec", []) if template.get("survey_enabled") else []:
        if q.get("default") in (None, ""):
            continue
        out[q["variable"]] = q["default"].split("\n") if q["type"] == "multiselect" else q["default"]
    return out


def run_template(private_dir, name, extravars=None):
    """Run the template's playbook against the scenario's inventory; (runner result, {host: changed count})."""
    template = TEMPLATES[name]
    os.makedirs(private_dir, exist_ok=True)
    if extravars is None:
        extravars = {**survey_defaults(template), **SCHEDULED.get(name, {})}
    result = ansible_runner.run(
        private_data_dir=str(private_dir),
        playbook=os.path.join(ROOT, template["playbook"]),
        inventory=labcheck.INVENTORY,
        extravars=extravars,
        envvars={k: os.environ[k] for k in ENV_KEYS if k in os.environ},
        quiet=True,
    )
    return result, dict((result.stats or {}).get("changed", {}))
