"""The deploy job template of awx/controller.yml under ansible-runner (the engine AWX uses) on this scenario's app
tier: a release the deploy survey cannot take fails before any change. Runs after the other app tests."""

import awxcheck
import labcheck


def current_release(name="app1"):
    return labcheck.host(name).check_output("readlink -f /opt/app/current").rstrip("/").split("/")[-1]


def test_deploy_survey_value_it_cannot_take_fails_before_any_change(tmp_path):
    before = current_release()
    result, changed = awxcheck.run_template(tmp_path, "selfhosted deploy", {"app_release": "1.0.0; rm -rf /"})
    out = result.stdout.read()
    assert result.status == "failed" and "app_release" in out, out[-4000:]
    assert not any(changed.values()), changed
    assert current_release() == before
