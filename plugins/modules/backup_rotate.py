#!/usr/bin/python
# Copyright: selfhosted.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: backup_rotate
version_added: 0.1.0
short_description: Grandfather-father-son retention over the backups of one set, on local disk or S3
description:
  - Applies a retention policy (O(keep_last), O(keep_hourly), O(keep_daily), O(keep_weekly), O(keep_monthly),
    O(keep_yearly), O(keep_within)) to the backups of one set, in a local directory (O(path)) or under an S3
    prefix (O(s3)). Each backup is a directory or key prefix named by its id, with a C(manifest.json) written last.
  - The newest backup of each period is kept; periods are computed in O(timezone); weeks start on Monday; periods
    without a backup do not count.
  - The newest complete backup is never deleted. Incomplete backups (no manifest, files missing or of the wrong
    size) never count as kept and are deleted only once older than O(grace).
  - When the set has no complete backup, or the newest is older than O(max_age), nothing is deleted unless
    O(force=true); the backups are broken, and rotation must not make it worse.
  - An empty policy is refused. S3 deletes go in batches of up to 1000 keys.
  - Only entries named by a backup id as the backup role writes them (their UTC time, V(20261125T021500Z)) are
    backups. Anything else in the directory or under the prefix (C(lost+found), a copy named C(...bak), a
    symbolic link, a file) is left alone and returned in RV(ignored).
  - On S3, a backup whose id is its UTC time (as the backup role writes them, V(20261125T021500Z)) and whose
    manifest is listed is planned from the listing; the manifests of the backups the plan keeps are then read and
    checked, and the plan is made again if one turns out incomplete. A rotation costs the listing plus one GET
    per kept backup, not one per backup.
author:
  - selfhosted.stack maintainers (@selfhosted-stack)
options:
  path:
    description:
      - Local directory of the set (one subdirectory per backup). Exactly one of O(path) and O(s3).
      - It must be a set directory the backup agent made (it holds C(.selfhosted-backup-set)); V(/) and system
        directories (C(/etc), C(/var), C(/home), ... also reached through a symbolic link) are refused.
    type: path
  s3:
    description: The set on S3-compatible storage. Exactly one of O(path) and O(s3).
    type: dict
    suboptions:
      bucket:
        description: Bucket name.
        type: str
        required: true
      prefix:
        description: Key prefix of the set (one sub-prefix per backup), without a trailing slash.
        type: str
        required: true
      endpoint_url:
        description: Endpoint of an S3-compatible service (SeaweedFS, MinIO, Ceph); omit for AWS.
        type: str
      region:
        description: Region name.
        type: str
        default: us-east-1
      access_key:
        description: Access key id.
        type: str
        required: true
      secret_key:
        description: Secret access key (vault).
        type: str
        required: true
      validate_certs:
        description: Verify the endpoint's TLS certificate.
        type: bool
        default: true
  keep_last:
    description: Keep the N newest complete backups.
    type: int
  keep_hourly:
    description: Keep the newest complete backup of each of the N newest hours that have one.
    type: int
  keep_daily:
    description: Keep the newest complete backup of each of the N newest days that have one.
    type: int
  keep_weekly:
    description: Keep the newest complete backup of each of the N newest weeks (Monday to Sunday) that have one.
    type: int
  keep_monthly:
    description: Keep the newest complete backup of each of the N newest months that have one.
    type: int
  keep_yearly:
    description: Keep the newest complete backup of each of the N newest years that have one.
    type: int
  keep_within:
    description: Keep every complete backup newer than this duration (V(36h), V(7d), V(2w)).
    type: str
  timezone:
    description: IANA timezone in which hours, days, weeks, months and years are counted.
    type: str
    required: true
  grace:
    description: Age (a duration) after which an incomplete backup is deleted.
    type: str
    default: 24h
  max_age:
    description: Refuse to delete anything when the newest complete backup is older than this duration.
    type: str
    default: 3d
  force:
    description: Rotate even when the backups look broken (see O(max_age)). The newest complete backup is still kept.
    type: bool
    default: false
  purge_noncurrent_after:
    description:
      - With O(s3) on a versioned bucket, a deleted or overwritten backup stays as an older version (the way back
        from a wrong rotation or a bad upload). Older versions of this set's backups are removed for good once
        were deleted for this long (a duration, V(7d)), and so are the delete markers then left with nothing
        behind them. A version replaced by another upload (an overwrite) is never removed, nor a current version,
        nor anything outside a backup id's sub-prefix; nothing is purged while the backups look broken (see
        O(max_age)).
      - Omitted, older versions are left alone (a bucket lifecycle rule may expire them instead). Needs the
        C(s3:ListBucketVersions) and C(s3:DeleteObjectVersion) permissions.
    type: str
  clock_tolerance:
    description:
      - How far after now a backup's time may be. A backup dated later (clock skew, a wrong timezone, a crafted
        id) would count as the newest and push real backups out of the policy, so the run fails naming those
        backups and deletes nothing, whatever O(force) says.
    type: str
    default: 5m
attributes:
  check_mode:
    description: Can run in check mode and return the changed status prediction without modifying the target.
    support: full
    details: Lists every backup with keep or delete and the rule that decided it; deletes nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode).
    support: full
    details: The backups before and after.
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: full
requirements:
  - boto3 (for O(s3))
"""

EXAMPLES = r"""
- name: Rotate the local PostgreSQL dumps
  selfhosted.stack.backup_rotate:
    path: /var/backups/selfhosted/postgresql
    keep_last: 3
    keep_daily: 7
    keep_weekly: 4
    keep_monthly: 12
    timezone: Europe/Berlin

- name: Rotate the same set on S3 (SeaweedFS)
  selfhosted.stack.backup_rotate:
    s3:
      bucket: backups
      prefix: db1/postgresql
      endpoint_url: http://storage1:8333
      access_key: backup-rotator # a key that may delete (never the backed-up host's own)
      secret_key: "{{ vault_backup_s3_rotation_secret_key }}"
    keep_daily: 14
    keep_monthly: 6
    timezone: UTC
"""

RETURN = r"""
kept:
  description: Ids of the backups kept, newest first.
  returned: always
  type: list
  elements: str
deleted:
  description: Ids of the backups deleted (or that would be in check mode), newest first.
  returned: always
  type: list
  elements: str
reasons:
  description: For every backup, keep or delete and the rule that decided it.
  returned: always
  type: dict
  sample: {"20261121T020000Z": "keep: newest complete backup, daily 2026-11-21"}
refused:
  description: Why nothing was deleted although the policy would have (broken backups), else empty.
  returned: always
  type: str
purged:
  description: How many older versions and delete markers were removed for good (or would be, in check mode).
  returned: when O(purge_noncurrent_after) is given
  type: int
ignored:
  description: Names in the set that are not backups, each with why; never planned or deleted.
  returned: always
  type: dict
  sample: {"lost+found": "not a backup id (YYYYMMDDTHHMMSSZ)",
           "20260101T000000Z": "a symbolic link: never followed or deleted"}
"""

import datetime

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.selfhosted.stack.plugins.module_utils._backup_rotate import (
    CLOCK_TOLERANCE,
    DeleteError,
    LocalBackupSet,
    RotateError,
    S3BackupSet,
    parse_duration,
    plan_verified,
)

try:
    from zoneinfo import ZoneInfo
except ImportError:  # Python < 3.9
    ZoneInfo = None

try:
    import boto3

    HAS_BOTO3 = True
except ImportError:
    HAS_BOTO3 = False


def run(module, store, now):
    p = module.params
    try:
        tz = ZoneInfo(p["timezone"])
    except Exception as exc:  # zoneinfo raises several types for a bad key
        raise RotateError(f"timezone must be an IANA name such as Europe/Berlin or UTC, got {p['timezone']!r}") from exc
    policy = {k: p[k] for k in ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")}
    policy["keep_within"] = p["keep_within"]
    grace = parse_duration(p["grace"], "grace")
    max_age = parse_duration(p["max_age"], "max_age")
    tolerance = parse_duration(p["clock_tolerance"], "clock_tolerance")
    purge_after = parse_duration(p["purge_noncurrent_after"], "purge_noncurrent_after")
    if purge_after is not None and not hasattr(store, "purge"):
        raise RotateError("purge_noncurrent_after applies to S3 only (older versions); leave it out with path")
    decided = plan_verified(
        store.read(),
        store.verify,
        policy,
        now,
        tz,
        grace_seconds=grace,
        max_age_seconds=max_age,
        force=p["force"],
        clock_tolerance_seconds=CLOCK_TOLERANCE if tolerance is None else tolerance,
    )
    result = dict(
        changed=decided.changed,
        kept=decided.keep,
        deleted=decided.delete,
        reasons=decided.reasons,
        refused=decided.refused,
        ignored=store.ignored,
        diff=dict(
            before="".join(f"{b}\n" for b in decided.keep + decided.delete),
            after="".join(f"{b}\n" for b in decided.keep),
        ),
    )
    if decided.refused:
        module.warn(decided.refused)
    if store.ignored:
        module.warn(f"not backups, left alone: {', '.join(sorted(store.ignored))}")
    if decided.delete and not module.check_mode:
        store.delete(decided.delete)
    if purge_after is not None and decided.refused:
        result["purged"] = 0  # the backups look broken: the older versions may be the way back
    elif purge_after is not None:
        # After the delete, so the markers it made start their own way-back window (they are newer than it).
        expired = store.expired_versions(now, purge_after)
        result["purged"] = len(expired)
        result["changed"] = result["changed"] or bool(expired)
        if expired and not module.check_mode:
            store.purge(expired)
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path"),
            s3=dict(
                type="dict",
                options=dict(
                    bucket=dict(type="str", required=True),
                    prefix=dict(type="str", required=True),
                    endpoint_url=dict(type="str"),
                    region=dict(type="str", default="us-east-1"),
                    access_key=dict(type="str", required=True, no_log=True),
                    secret_key=dict(type="str", required=True, no_log=True),
                    validate_certs=dict(type="bool", default=True),
                ),
            ),
            keep_last=dict(type="int"),
            keep_hourly=dict(type="int"),
            keep_daily=dict(type="int"),
            keep_weekly=dict(type="int"),
            keep_monthly=dict(type="int"),
            keep_yearly=dict(type="int"),
            keep_within=dict(type="str"),
            timezone=dict(type="str", required=True),
            grace=dict(type="str", default="24h"),
            max_age=dict(type="str", default="3d"),
            force=dict(type="bool", default=False),
            clock_tolerance=dict(type="str", default="5m"),
            purge_noncurrent_after=dict(type="str"),
        ),
        mutually_exclusive=[("path", "s3")],
        required_one_of=[("path", "s3")],
        supports_check_mode=True,
    )
    p = module.params
    if ZoneInfo is None:
        module.fail_json(msg="backup_rotate needs Python 3.9 or later (zoneinfo) on the target")
    try:
        if p["s3"]:
            if not HAS_BOTO3:
                module.fail_json(msg=missing_required_lib("boto3"))
            s3 = p["s3"]
            client = boto3.client(
                "s3",
                endpoint_url=s3["endpoint_url"],
                region_name=s3["region"],
                aws_access_key_id=s3["access_key"],
                aws_secret_access_key=s3["secret_key"],
                verify=s3["validate_certs"],
            )
            store = S3BackupSet(client, s3["bucket"], s3["prefix"])
        else:
            store = LocalBackupSet(p["path"])
        module.exit_json(**run(module, store, datetime.datetime.now(datetime.timezone.utc)))
    except RotateError as exc:
        module.fail_json(msg=f"backup_rotate: {exc}. Nothing was deleted.")
    except DeleteError as exc:
        module.fail_json(
            msg=f"backup_rotate: {exc}; run it again to finish (a half-deleted backup has no manifest "
            f"left, so it counts as incomplete, never as kept)"
        )
    except OSError as exc:
        # str(exc): shutil and others raise OSErrors without strerror or filename ("None on None" before).
        module.fail_json(msg=f"backup_rotate: {exc}")


if __name__ == "__main__":
    main()
