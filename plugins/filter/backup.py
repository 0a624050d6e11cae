# Copyright: selfhosted.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from ansible_collections.selfhosted.stack.plugins.module_utils._backup_rotate import base_dir_problem


def backup_dir_problem(path):
    return base_dir_problem(path)


class FilterModule:
    def filters(self):
        return {"backup_dir_problem": backup_dir_problem}
