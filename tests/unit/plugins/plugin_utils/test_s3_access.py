"""S3 identities for SeaweedFS: per-host writer keys that cannot delete, readers, rotators (issue 23, finding 5)."""

import json

import pytest
from ansible_collections.selfhosted.stack.plugins.plugin_utils._s3_access import (
    identities_problems,
    policy_document,
    seaweedfs_config,
)

WRITER = {
    "name": "backup-db1",
    "access_key": "lab-db1-writer",
    "secret_key": "s" * 16,
    "grants": [{"bucket": "backups", "prefix": "lab/db1/", "access": "writer"}],
}
LEGACY = {"name": "auditor", "access_key": "lab-reader", "secret_key": "r" * 16, "actions": ["Read", "List"]}


def statements(grants):
    return policy_document(grants)["Statement"]


def test_a_writer_may_upload_and_read_its_prefix_and_never_delete():
    objects, listing = statements(WRITER["grants"])
    assert objects["Resource"] == ["arn:aws:s3:::backups/lab/db1/*"]
    assert "s3:PutObject" in objects["Action"] and "s3:GetObject" in objects["Action"]
    assert not [a for a in objects["Action"] + listing["Action"] if "Delete" in a or "Version" in a]
    assert listing["Resource"] == ["arn:aws:s3:::backups"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["lab/db1/*"]}}


def test_a_rotator_deletes_objects_and_versions_and_a_reader_only_reads():
    rot_objects, rot_listing = statements([{"bucket": "backups", "prefix": "", "access": "rotator"}])
    assert {"s3:DeleteObject", "s3:DeleteObjectVersion"} <= set(rot_objects["Action"])
    assert rot_objects["Resource"] == ["arn:aws:s3:::backups/*"] and "Condition" not in rot_listing
    assert "s3:ListBucketVersions" in rot_listing["Action"]
    read_objects = statements([{"bucket": "backups", "prefix": "lab/", "access": "reader"}])[0]
    assert not [a for a in read_objects["Action"] if "Delete" in a or "Put" in a]


def test_the_config_has_a_policy_per_granted_identity_and_legacy_actions_per_bucket():
    config = seaweedfs_config([WRITER, {**LEGACY, "buckets": ["backups", "uploads"]}])
    writer, auditor = config["identities"]
    assert writer["policyNames"] == ["selfhosted-backup-db1"] and "actions" not in writer
    assert writer["credentials"] == [{"accessKey": "lab-db1-writer", "secretKey": "s" * 16}]
    (policy,) = config["policies"]
    assert policy["name"] == "selfhosted-backup-db1"
    assert json.loads(policy["content"]) == policy_document(WRITER["grants"])
    assert auditor["actions"] == ["Read:backups", "Read:uploads", "List:backups", "List:uploads"]
    assert seaweedfs_config([LEGACY]) == {
        "identities": [
            {
                "name": "auditor",
                "credentials": [{"accessKey": "lab-reader", "secretKey": "r" * 16}],
                "actions": ["Read", "List"],
            }
        ]
    }


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"grants": [{"bucket": "backups", "prefix": "lab/*", "access": "writer"}]}, "prefix must be"),
        ({"grants": [{"bucket": "backups", "prefix": "lab", "access": "writer"}]}, "prefix must be"),
        ({"grants": [{"bucket": "backups", "prefix": "lab/../x/", "access": "writer"}]}, "prefix must be"),
        ({"grants": [{"bucket": "backups", "prefix": "/", "access": "writer"}]}, "prefix must be"),
        ({"grants": [{"bucket": "backups", "prefix": "a/\n/", "access": "writer"}]}, "prefix must be"),
        ({"grants": [{"bucket": "backups", "prefix": "lab/db1/\n", "access": "writer"}]}, "prefix must be"),
        ({"grants": [{"bucket": "backups\n", "access": "reader"}]}, "bucket must be"),
        ({"grants": [{"bucket": "backups", "prefix": "", "access": "writer"}]}, "a writer grant needs a prefix"),
        ({"grants": [{"bucket": "Backups", "access": "writer"}]}, "bucket must be"),
        ({"grants": [{"bucket": "backups", "access": "admin"}]}, "access must be one of writer, reader, rotator"),
        ({"grants": [{"bucket": "backups", "access": "writer", "delete": True}]}, "unknown grant keys ['delete']"),
        ({"grants": ["backups"]}, "a grant must be a dict"),
        ({"actions": ["Read"]}, "either actions or grants"),
        ({"grants": []}, "either actions or grants"),
        ({"secret_key": "short"}, "secret_key must have at least 16"),
        ({"access_key": ""}, "access_key must have at least 8"),
        ({"name": "bad name"}, "name must be"),
    ],
)
def test_bad_identities_are_named_without_their_keys(change, problem):
    problems = identities_problems([{**WRITER, **change}])
    assert problems and any(problem in p for p in problems), problems
    assert not any(WRITER["secret_key"] in p for p in problems)
    with pytest.raises(ValueError, match="object_storage_identities entry"):
        seaweedfs_config([{**WRITER, **change}])


def test_repeated_names_or_keys_are_refused():
    assert identities_problems([WRITER, {**LEGACY, "access_key": WRITER["access_key"]}]) == [
        "object_storage_identities must not repeat an access_key"
    ]
    assert identities_problems([WRITER, {**WRITER, "access_key": "other-key-1"}]) == [
        "object_storage_identities must not repeat a name"
    ]
    assert identities_problems("x") == ["object_storage_identities must be a list"]
    assert identities_problems([]) == []


def test_writer_prefixes_must_not_overlap():
    other = {**WRITER, "name": "backup-lab", "access_key": "lab-all-writer"}
    other["grants"] = [{"bucket": "backups", "prefix": "lab/", "access": "writer"}]
    problems = identities_problems([WRITER, other])
    assert problems == [
        "object_storage_identities entries 'backup-lab' and 'backup-db1': writer prefixes 'lab/' and 'lab/db1/' "
        "overlap in backups; each writer needs a prefix no other writer's is inside"
    ]
    sibling = {**other, "grants": [{"bucket": "backups", "prefix": "lab/db10/", "access": "writer"}]}
    assert identities_problems([WRITER, sibling]) == []  # lab/db1/ is not inside lab/db10/
    reader = {**other, "grants": [{"bucket": "backups", "prefix": "lab/", "access": "reader"}]}
    assert identities_problems([WRITER, reader]) == []
