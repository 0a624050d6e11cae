# Copyright: selfhosted.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.stack.plugins.plugin_utils._monitoring import (
    MonitoringError,
    check_jobs,
    scrape_configs,
)


def scrape_configs_filter(jobs, groups, hostvars, scrape_interval="15s"):
    try:
        return scrape_configs(jobs, groups, hostvars, scrape_interval)
    except MonitoringError as exc:
        raise AnsibleFilterError(f"selfhosted.stack.scrape_configs: {exc}") from exc


def scrape_job_problems(jobs, variable="prometheus_scrape_jobs"):
    return check_jobs(jobs, variable)


class FilterModule:
    def filters(self):
        return {"scrape_configs": scrape_configs_filter, "scrape_job_problems": scrape_job_problems}
