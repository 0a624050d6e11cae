"""Fixtures the unit tests share."""

import pytest
from jinja2.nativetypes import NativeEnvironment


@pytest.fixture
def render_services():
    """The _common role's firewall services with their Jinja (the app entry's ports) rendered for a host's
    variables, as Ansible renders them on that host: render_services(services, app_port=3000)."""
    env = NativeEnvironment()

    def render(services, **hostvars):
        return [
            {k: env.from_string(v).render(**hostvars) if isinstance(v, str) and "{{" in v else v for k, v in s.items()}
            for s in services
        ]

    return render
