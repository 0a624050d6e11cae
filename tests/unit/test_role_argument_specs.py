"""Every role's meta/argument_specs.yml mirrors its defaults/main.yml, key for key and value for value."""

from pathlib import Path

import pytest
import yaml

ROLES = sorted(p for p in Path("roles").iterdir() if (p / "defaults" / "main.yml").exists())


def load(path):
    with open(path) as fh:
        return yaml.safe_load(fh) or {}


def test_there_are_roles():
    assert ROLES


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_argument_specs_mirror_defaults(role):
    defaults = load(role / "defaults" / "main.yml")
    specs = load(role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert sorted(set(defaults) - set(specs)) == [], "defaults missing from argument_specs"
    assert sorted(k for k in set(specs) - set(defaults) if not specs[k].get("required")) == [], (
        "optional argument_specs entries without a default"
    )
    for name, value in defaults.items():
        assert "default" in specs[name], f"{name}: no default in argument_specs"
        assert specs[name]["default"] == value, f"{name}: default differs between defaults/main.yml and argument_specs"
        assert specs[name].get("description"), f"{name}: no description"


# Inventory-level variables every role reads; one role documents each (deploy_mode: the compose role).
SHARED = {"compose": {"deploy_mode"}}


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_public_variables_carry_the_role_prefix(role):
    prefix = role.name.lstrip("_") + "_"
    shared = SHARED.get(role.name, set())
    assert [k for k in load(role / "defaults" / "main.yml") if not k.startswith(prefix) and k not in shared] == []
