"""AWX's path on this scenario's hosts: the job templates of awx/controller.yml whose hosts exist here (site,
backup now, restore drill, rotate backups) run under ansible-runner, the engine AWX uses, with their surveys'
default answers; a survey value outside its allowed set fails before any host changes. And the collection as
users get it: the built tarball, installed into a clean virtualenv, documents every module and role and runs a
playbook by FQCN against a lab host."""

import os
import subprocess
import sys
import tarfile

import awxcheck
import labcheck
import pytest
from ansible.parsing.utils.yaml import from_yaml

ROOT = awxcheck.ROOT
HERE = ["selfhosted site (converge)", "selfhosted backup now", "selfhosted restore drill", "selfhosted rotate backups"]


@pytest.mark.parametrize("name", HERE)
def test_job_template_runs_under_ansible_runner(tmp_path, name):
    result, changed = awxcheck.run_template(tmp_path, name)
    assert result.status == "successful", result.stdout.read()[-4000:]
    if name == "selfhosted site (converge)":
        assert not any(changed.values()), changed  # converged hosts stay unchanged


@pytest.mark.parametrize(
    ("name", "extravars", "variable"),
    [
        ("selfhosted backup now", {"backup_now_sets": ["mysql"]}, "backup_now_sets"),
        ("selfhosted rotate backups", {"rotate_backups_where": "everywhere"}, "rotate_backups_where"),
    ],
)
def test_survey_value_outside_its_set_fails_before_any_change(tmp_path, name, extravars, variable):
    result, changed = awxcheck.run_template(tmp_path, name, extravars)
    out = result.stdout.read()
    assert result.status == "failed" and variable in out, out[-4000:]
    assert not any(changed.values()), changed


# --- the collection as users install it ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Build the tarball, install it into a clean virtualenv (ansible from PyPI), return (venv, collections dir)."""
    tmp = tmp_path_factory.mktemp("dist")
    subprocess.run(["ansible-galaxy", "collection", "build", "--output-path", str(tmp), ROOT], check=True)
    tarball = next(tmp.glob("selfhosted-stack-*.tar.gz"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "-q",
            "--disable-pip-version-check",
            "ansible==12.3.0",
            "boto3",
            "docker",
        ],
        check=True,
    )
    collections = tmp / "collections"
    subprocess.run(
        [
            str(venv / "bin" / "ansible-galaxy"),
            "collection",
            "install",
            "--offline",
            "-p",
            str(collections),
            str(tarball),
        ],
        env=clean_env(venv, collections),  # not the scenario's collections path, where the source tree is
        check=True,
    )
    assert (collections / "ansible_collections" / "selfhosted" / "stack" / "MANIFEST.json").is_file()
    return tarball, venv, collections


def clean_env(venv, collections):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv}/bin:/usr/local/bin:/usr/bin:/bin"
    env["ANSIBLE_COLLECTIONS_PATH"] = str(collections)
    env["ANSIBLE_NOCOLOR"] = "1"
    return env


def test_tarball_holds_no_tests_lab_or_caches(installed):
    tarball = installed[0]
    with tarfile.open(tarball) as tar:
        tops = {m.name.split("/")[0] for m in tar.getmembers()}
        names = [m.name for m in tar.getmembers()]
    assert not tops & {"tests", "molecule", "lab", "bench", ".venv", ".collections", ".cache", ".git", "Makefile"}
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert {"playbooks", "roles", "plugins", "meta", "awx"} <= tops


def test_ansible_doc_for_every_module_and_role(installed):
    venv, collections = installed[1], installed[2]
    env = clean_env(venv, collections)
    listing = subprocess.run(
        [f"{venv}/bin/ansible-doc", "-l", "selfhosted.stack", "-j"], env=env, capture_output=True, text=True, check=True
    ).stdout
    modules = sorted(from_yaml(listing))
    assert {"selfhosted.stack.release", "selfhosted.stack.health_gate", "selfhosted.stack.backup_rotate"} <= set(
        modules
    )
    for module in modules:
        doc = subprocess.run([f"{venv}/bin/ansible-doc", module], env=env, capture_output=True, text=True, check=False)
        assert doc.returncode == 0 and "EXAMPLES" in doc.stdout and "RETURN VALUES" in doc.stdout, (module, doc.stderr)
    roles = sorted(r for r in os.listdir(os.path.join(ROOT, "roles")) if not r.startswith("_"))
    for role in roles:
        doc = subprocess.run(
            [f"{venv}/bin/ansible-doc", "-t", "role", f"selfhosted.stack.{role}"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert doc.returncode == 0 and "ENTRY POINT: *main*" in doc.stdout, (role, doc.stderr)


def test_playbook_runs_by_fqcn_from_the_installed_tarball(installed):
    venv, collections = installed[1], installed[2]
    env = clean_env(venv, collections)
    proc = subprocess.run(
        [f"{venv}/bin/ansible-playbook", "-i", labcheck.INVENTORY, "selfhosted.stack.backup", "-l", "bk-cache"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "backup" in proc.stdout and "complete on S3" in proc.stdout
