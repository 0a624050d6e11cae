# Copyright: selfhosted.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.stack.plugins.plugin_utils._rollout import (
    RolloutError,
    back_batches,
    batches,
    canary_weights,
    traffic_steps_problems,
    zero_downtime_problems,
)


def rollout_batches(hosts, spec, variable="rollout_batches"):
    try:
        return batches(hosts, spec, variable)
    except RolloutError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def rollout_back_batches(forward, switched):
    return back_batches(forward, switched)


def rollout_downtime_problems(forward, upstreams, already_out=None):
    return zero_downtime_problems(forward, upstreams, already_out or [])


def rollout_canary_weights(canary, others, percent, instances=None):
    try:
        return canary_weights(canary, others, percent, instances)
    except RolloutError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def rollout_traffic_steps_problems(steps, variable="rollout_traffic_steps"):
    return traffic_steps_problems(steps, variable)


class FilterModule:
    def filters(self):
        return {
            "rollout_batches": rollout_batches,
            "rollout_back_batches": rollout_back_batches,
            "rollout_downtime_problems": rollout_downtime_problems,
            "rollout_canary_weights": rollout_canary_weights,
            "rollout_traffic_steps_problems": rollout_traffic_steps_problems,
        }
