# Copyright: selfhosted.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""S3 identities for SeaweedFS (the object_storage role): who may do what, under which prefix.

An identity has either legacy `actions` (Read, Write, List, Tagging, Admin, optionally per bucket) or `grants`:
[{bucket, prefix, access}] compiled into IAM policies SeaweedFS enforces per request. The access levels are what
backups need:

- writer: upload (single and multipart) and read back its own prefix; list only with a prefix under its own. It
  cannot delete anything, nor list or read another prefix; on a versioned bucket an overwrite keeps the old
  version, which a writer cannot remove. The key each backed-up host holds.
- reader: read and list (current and older versions) under the prefix. Auditors, restores from another host.
- rotator: a reader that may also delete objects and versions: the key rotation runs with, which backed-up hosts
  never hold.
"""

import json
import re

ACTIONS = ("Read", "Write", "List", "Tagging", "Admin")
ACCESS = ("writer", "reader", "rotator")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
# A prefix of path segments ending in '/': "lab/db1/". No wildcards, no '..', no empty segments.
PREFIX = re.compile(r"^([A-Za-z0-9_.=-]+/)*$")

_OBJECT_ACTIONS = {
    "writer": ["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
    "reader": ["s3:GetObject", "s3:GetObjectVersion"],
    "rotator": ["s3:GetObject", "s3:GetObjectVersion", "s3:DeleteObject", "s3:DeleteObjectVersion"],
}
_BUCKET_ACTIONS = {
    "writer": ["s3:ListBucket"],
    "reader": ["s3:ListBucket", "s3:ListBucketVersions"],
    "rotator": ["s3:ListBucket", "s3:ListBucketVersions"],
}


def grant_problems(grant):
    """Why one grant is invalid (a list of sentences; empty when it is fine)."""
    if not isinstance(grant, dict):
        return [f"a grant must be a dict of bucket, prefix and access, got {grant!r}"]
    problems = []
    unknown = sorted(set(grant) - {"bucket", "prefix", "access"})
    if unknown:
        problems.append(f"unknown grant keys {unknown} (allowed: bucket, prefix, access)")
    bucket, prefix, access = grant.get("bucket"), grant.get("prefix", ""), grant.get("access")
    if not isinstance(bucket, str) or not BUCKET.fullmatch(bucket):
        problems.append(f"bucket must be an S3 bucket name, got {bucket!r}")
    if access not in ACCESS:
        problems.append(f"access must be one of {', '.join(ACCESS)}, got {access!r}")
    if not isinstance(prefix, str) or not PREFIX.fullmatch(prefix) or {".", ".."} & set(prefix.split("/")):
        problems.append(
            "prefix must be empty (the whole bucket) or path segments each ending in '/' (such as lab/db1/), "
            f"without wildcards or '..', got {prefix!r}"
        )
    elif access == "writer" and not prefix:
        problems.append(
            "a writer grant needs a prefix of its own (such as lab/db1/): a writer of the whole bucket "
            "could overwrite every host's backups"
        )
    return problems


def identity_problems(identity):
    """Why one identity is invalid, naming it but never its keys."""
    if not isinstance(identity, dict):
        return ["each identity must be a dict"]
    name = str(identity.get("name", "?"))
    problems = []
    if not NAME.fullmatch(name):
        problems.append("name must be letters, digits, '_', '.' or '-'")
    if len(str(identity.get("access_key") or "")) < 8:
        problems.append("access_key must have at least 8 characters")
    if len(str(identity.get("secret_key") or "")) < 16:
        problems.append("secret_key must have at least 16 characters (from vault)")
    actions, grants = identity.get("actions") or [], identity.get("grants") or []
    if bool(actions) == bool(grants):
        problems.append("give either actions or grants (exactly one of them)")
    if not isinstance(actions, list) or any(a not in ACTIONS for a in actions):
        problems.append(f"actions must be a list of {', '.join(ACTIONS)}, got {actions!r}")
    if identity.get("buckets") and grants:
        problems.append("buckets limits actions; a grant names its own bucket")
    if not isinstance(grants, list):
        problems.append("grants must be a list")
    else:
        for grant in grants:
            problems.extend(grant_problems(grant))
    return [f"object_storage_identities entry '{name}': {p}" for p in problems]


def identities_problems(identities):
    """Every problem of the list: each identity's, and repeated names or access keys."""
    if not isinstance(identities, list):
        return ["object_storage_identities must be a list"]
    problems = [p for identity in identities for p in identity_problems(identity)]
    writers = sorted(
        (g["bucket"], g.get("prefix", ""), i.get("name"))
        for i in identities if isinstance(i, dict) and isinstance(i.get("grants"), list)
        for g in i["grants"] if isinstance(g, dict) and g.get("access") == "writer" and isinstance(g.get("prefix"), str)
    )  # fmt: skip
    for bucket, prefix, name in writers:
        for other_bucket, other_prefix, other in writers:
            if other != name and other_bucket == bucket and other_prefix.startswith(prefix):
                problems.append(
                    f"object_storage_identities entries '{name}' and '{other}': writer prefixes {prefix!r} and "
                    f"{other_prefix!r} overlap in {bucket}; each writer needs a prefix no other writer's is inside"
                )
    for field, article in (("name", "a"), ("access_key", "an")):
        values = [i.get(field) for i in identities if isinstance(i, dict)]
        if len(set(map(str, values))) != len(values):
            problems.append(f"object_storage_identities must not repeat {article} {field}")
    return problems


def policy_document(grants):
    """The IAM policy allowing exactly the grants."""
    statements = []
    for grant in grants:
        bucket, prefix, access = grant["bucket"], grant.get("prefix", ""), grant["access"]
        statements.append(
            {
                "Effect": "Allow",
                "Action": _OBJECT_ACTIONS[access],
                "Resource": [f"arn:aws:s3:::{bucket}/{prefix}*"],
            }
        )
        listing = {"Effect": "Allow", "Action": _BUCKET_ACTIONS[access], "Resource": [f"arn:aws:s3:::{bucket}"]}
        if prefix:
            # Listing only below its own prefix ("lab/db1/" and deeper); a listing of the bucket is refused.
            listing["Condition"] = {"StringLike": {"s3:prefix": [f"{prefix}*"]}}
        statements.append(listing)
    return {"Version": "2012-10-17", "Statement": statements}


def seaweedfs_config(identities):
    """SeaweedFS's s3.json (identities and their policies) for a list that identities_problems() accepts."""
    problems = identities_problems(identities)
    if problems:
        raise ValueError("; ".join(problems))
    out, policies = [], []
    for identity in identities:
        entry = {
            "name": identity["name"],
            "credentials": [{"accessKey": identity["access_key"], "secretKey": identity["secret_key"]}],
        }
        if identity.get("grants"):
            policy = f"selfhosted-{identity['name']}"
            policies.append({"name": policy, "content": json.dumps(policy_document(identity["grants"]))})
            entry["policyNames"] = [policy]
        else:
            buckets = identity.get("buckets") or []
            entry["actions"] = [f"{a}:{b}" for a in identity["actions"] for b in buckets] or list(identity["actions"])
        out.append(entry)
    config = {"identities": out}
    if policies:
        config["policies"] = policies
    return config
