"""The deploy-side job templates of awx/controller.yml under ansible-runner (the engine AWX uses) on this
scenario's app tier, as the workflow "deploy and verify" chains them: deploy with the survey's default release,
the smoke check, then rollback; and a release outside what the deploy survey allows fails before any change.
Runs after the other app tests (file order), whatever release they left active."""

import awxcheck
import labcheck

WORKFLOW = awxcheck.CONTROLLER["selfhosted_awx_workflows"][0]


def current_release(name="app1"):
    return labcheck.host(name).check_output("readlink -f /opt/app/current").rstrip("/").split("/")[-1]


def test_workflow_chain_runs_under_ansible_runner(tmp_path):
    """1.1.0 first (a survey answer), so the chain's deploy of the default release is a real rollout and rollback
    has a release to go back to, whatever state the earlier tests left."""
    nodes = {n["identifier"]: n for n in WORKFLOW["workflow_nodes"]}
    assert nodes["deploy"]["related"]["success_nodes"] == [{"identifier": "smoke"}]
    assert nodes["smoke"]["related"]["failure_nodes"] == [{"identifier": "rollback"}]
    default = awxcheck.survey_defaults(WORKFLOW)["app_release"]
    assert default == "1.0.0"

    first = awxcheck.run_template(tmp_path / "first", "selfhosted deploy", {"app_release": "1.1.0"})[0]
    assert first.status == "successful", first.stdout.read()[-4000:]
    assert current_release() == "1.1.0"
    deploy = awxcheck.run_template(tmp_path / "deploy", "selfhosted deploy", awxcheck.survey_defaults(WORKFLOW))[0]
    assert deploy.status == "successful", deploy.stdout.read()[-4000:]
    assert current_release() == default
    smoke, changed = awxcheck.run_template(tmp_path / "smoke", "selfhosted smoke check")
    assert smoke.status == "successful", smoke.stdout.read()[-4000:]
    assert not any(changed.values()), changed
    rollback = awxcheck.run_template(tmp_path / "rollback", "selfhosted rollback")[0]
    assert rollback.status == "successful", rollback.stdout.read()[-4000:]
    assert current_release() == "1.1.0"


def test_deploy_survey_value_it_cannot_take_fails_before_any_change(tmp_path):
    before = current_release()
    result, changed = awxcheck.run_template(tmp_path, "selfhosted deploy", {"app_release": "1.0.0; rm -rf /"})
    out = result.stdout.read()
    assert result.status == "failed" and "app_release" in out, out[-4000:]
    assert not any(changed.values()), changed
    assert current_release() == before
