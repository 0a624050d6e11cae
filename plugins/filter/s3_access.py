# Copyright: selfhosted.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.stack.plugins.plugin_utils._s3_access import identities_problems, seaweedfs_config


def seaweedfs_s3_config(identities):
    try:
        return seaweedfs_config(identities)
    except ValueError as exc:
        raise AnsibleFilterError(f"selfhosted.stack.seaweedfs_s3_config: {exc}") from exc


def s3_identity_problems(identities):
    return identities_problems(identities)


class FilterModule:
    def filters(self):
        return {"seaweedfs_s3_config": seaweedfs_s3_config, "s3_identity_problems": s3_identity_problems}
