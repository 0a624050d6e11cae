# Copyright: selfhosted.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure planning of backup retention (grandfather-father-son) for the backup_rotate module.

A backup set is a list of backups, each with an id, a time (timezone-aware) and whether it is complete (its
manifest is there and its checksums match). The plan says, for every backup, keep or delete and the rule that
decided it:

- keep_last N: the N newest complete backups;
- keep_hourly / keep_daily / keep_weekly / keep_monthly / keep_yearly N: the newest complete backup of each of
  the N newest periods that have one (periods without a backup do not count); periods are computed in the given
  timezone; weeks start on Monday (ISO weeks);
- keep_within D: every complete backup newer than now - D;
- the newest complete backup is always kept;
- an incomplete backup never counts as kept; it is deleted once older than the grace period, kept before that;
- when there is no complete backup, or the newest one is older than max_age, nothing is deleted unless forced
  (the backups are broken: do not make it worse).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import stat
from dataclasses import dataclass, field

PERIODS = ("hourly", "daily", "weekly", "monthly", "yearly")
# How far in the future a backup's time may be (clocks of the host taking it and the one rotating differ a little).
CLOCK_TOLERANCE = 300
POLICY_KEYS = ("keep_last", "keep_within", *(f"keep_{p}" for p in PERIODS))
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdwy])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


class RotateError(ValueError):
    """Bad input or a refused plan; the message names the option and what is allowed."""


@dataclass(frozen=True)
class Backup:
    id: str
    time: datetime.datetime
    complete: bool = True
    problem: str = ""  # why it is incomplete
    verified: bool = True  # False: complete judged from the listing alone (see read_s3_set), manifest not read yet


@dataclass
class Plan:
    keep: list = field(default_factory=list)  # ids, newest first
    delete: list = field(default_factory=list)  # ids, newest first
    reasons: dict = field(default_factory=dict)  # id -> "keep: ..." / "delete: ..."
    refused: str = ""  # why nothing is deleted although the policy would

    @property
    def changed(self):
        return bool(self.delete)


def parse_duration(value, option):
    """'36h', '7d', '2w', an int of seconds, or None -> seconds (or None)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise RotateError(f"{option} must be a duration such as 36h, 7d or 2w, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise RotateError(f"{option} must not be negative, got {value}")
        return value
    m = _DURATION.match(str(value))
    if not m:
        raise RotateError(f"{option} must be a duration such as 36h, 7d or 2w (units s, m, h, d, w, y), got {value!r}")
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def validate_policy(policy):
    """Normalized policy: counts as ints (0 when unset), keep_within as seconds or None. Refuses an empty one."""
    unknown = set(policy) - set(POLICY_KEYS)
    if unknown:
        raise RotateError(f"unknown retention options {sorted(unknown)}; allowed: {', '.join(POLICY_KEYS)}")
    out = {}
    for key in POLICY_KEYS:
        if key == "keep_within":
            out[key] = parse_duration(policy.get(key), key)
            continue
        value = policy.get(key)
        if value is None:
            value = 0
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise RotateError(f"{key} must be a whole number of backups, 0 or more, got {value!r}")
        out[key] = value
    if not any(out[k] for k in POLICY_KEYS if k != "keep_within") and not out["keep_within"]:
        raise RotateError(
            "the retention policy keeps nothing: set at least one of keep_last, keep_hourly, keep_daily, "
            "keep_weekly, keep_monthly, keep_yearly or keep_within (an empty policy would delete every backup)"
        )
    return out


def period_key(moment, period, tz):
    """The period a backup falls in, in timezone tz: hourly (Y, M, D, H), daily, weekly (ISO year, week; weeks
    start on Monday), monthly, yearly."""
    local = moment.astimezone(tz)
    if period == "hourly":
        return (local.year, local.month, local.day, local.hour)
    if period == "daily":
        return (local.year, local.month, local.day)
    if period == "weekly":
        iso = local.isocalendar()
        return (iso[0], iso[1])
    if period == "monthly":
        return (local.year, local.month)
    if period == "yearly":
        return (local.year,)
    raise RotateError(f"unknown period {period!r}")


def _label(key, period):
    if period == "weekly":
        return f"{key[0]}-W{key[1]:02d}"
    return "-".join(f"{part:02d}" if i else str(part) for i, part in enumerate(key)) + (
        ":00" if period == "hourly" else ""
    )


def future_backups(backups, now, tolerance_seconds=CLOCK_TOLERANCE):
    """The ids of backups dated after now + tolerance (clock skew, a wrong timezone, a crafted id), sorted."""
    horizon = now + datetime.timedelta(seconds=tolerance_seconds)
    return sorted(b.id for b in backups if b.time > horizon)


def plan(
    backups,
    policy,
    now,
    tz,
    grace_seconds=86400,
    max_age_seconds=None,
    force=False,
    clock_tolerance_seconds=CLOCK_TOLERANCE,
):
    """Decide keep/delete for every backup of one set. backups: Backup objects (any order, unique ids).

    A backup dated in the future (beyond clock_tolerance_seconds) would win every "newest" choice and push real
    backups out of the policy: the plan is refused (RotateError naming the ids), whatever force says."""
    policy = validate_policy(policy)
    if now.tzinfo is None:
        raise RotateError("now must carry a timezone")
    ids = [b.id for b in backups]
    if len(set(ids)) != len(ids):
        raise RotateError("backup ids must be unique within a set")
    future = future_backups(backups, now, clock_tolerance_seconds)
    if future:
        shown = ", ".join(future[:10]) + (f" and {len(future) - 10} more" if len(future) > 10 else "")
        raise RotateError(
            f"{len(future)} backups are dated after now ({now.isoformat(timespec='seconds')}) plus the clock "
            f"tolerance of {clock_tolerance_seconds} s: {shown}. They would count as the newest and push real "
            f"backups out of the policy; check the host's clock and timezone, and move or delete those by hand"
        )
    ordered = sorted(backups, key=lambda b: (b.time, b.id), reverse=True)  # newest first
    complete = [b for b in ordered if b.complete]
    why_keep = {}

    def keep(backup, reason):
        why_keep.setdefault(backup.id, []).append(reason)

    if complete:
        keep(complete[0], "newest complete backup")
    for i, b in enumerate(complete[: policy["keep_last"]]):
        keep(b, f"last {i + 1} of {policy['keep_last']}")
    for period in PERIODS:
        wanted = policy[f"keep_{period}"]
        seen = []
        for b in complete:
            if len(seen) >= wanted:
                break
            key = period_key(b.time, period, tz)
            if key not in seen:
                seen.append(key)
                keep(b, f"{period} {_label(key, period)}")
    if policy["keep_within"]:
        horizon = now - datetime.timedelta(seconds=policy["keep_within"])
        for b in complete:
            if b.time >= horizon:
                keep(b, f"within {policy['keep_within']} s")

    result = Plan()
    for b in ordered:
        if b.id in why_keep:
            result.keep.append(b.id)
            result.reasons[b.id] = "keep: " + ", ".join(why_keep[b.id])
        elif not b.complete:
            age = (now - b.time).total_seconds()
            if age < grace_seconds:
                result.keep.append(b.id)
                result.reasons[b.id] = f"keep: incomplete ({b.problem or 'no manifest'}), within the grace period"
            else:
                result.delete.append(b.id)
                result.reasons[b.id] = f"delete: incomplete ({b.problem or 'no manifest'}), older than the grace period"
        else:
            result.delete.append(b.id)
            result.reasons[b.id] = "delete: no retention rule keeps it"

    newest_age = (now - complete[0].time).total_seconds() if complete else None
    broken = newest_age is None or (max_age_seconds is not None and newest_age > max_age_seconds)
    if broken and result.delete and not force:
        result.refused = (
            "no complete backup in the set"
            if newest_age is None
            else f"the newest complete backup ({complete[0].id}) is {int(newest_age)} s old, more than "
            f"max_age ({max_age_seconds} s)"
        ) + ": backups look broken, nothing is deleted (force=true to rotate anyway)"
        for bid in result.delete:
            result.reasons[bid] = result.reasons[bid].replace("delete:", "keep (refused to delete):", 1)
        result.keep = [b.id for b in ordered]
        result.delete = []
    return result


# --- reading a backup set ----------------------------------------------------------------------------------------
# Layout (the backup role writes it): one directory (local) or key prefix (S3) per backup, named by its id, holding
# the backup's files and manifest.json, written last: {"id", "set", "time" (ISO 8601 with offset), "files":
# [{"name", "size", "sha256"}], "tools": {...}}. A backup without a readable manifest, or whose files do not match
# it, is incomplete.
MANIFEST = "manifest.json"
# ASCII digits only, and no trailing newline ($ would allow one).
BACKUP_ID = re.compile(r"\A[0-9]{8}T[0-9]{6}Z\Z")


def parse_time(text, where):
    try:
        moment = datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError as exc:
        raise RotateError(f"{where}: time {text!r} is not ISO 8601") from exc
    if moment.tzinfo is None:
        raise RotateError(f"{where}: time {text!r} has no timezone offset")
    return moment


def check_manifest(backup_id, manifest, sizes):
    """(complete, problem) for a backup: manifest (parsed dict or None) against the sizes of the files found."""
    if manifest is None:
        return False, "no manifest"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list) or "time" not in manifest:
        return False, "manifest unreadable"
    if manifest.get("id", backup_id) != backup_id:
        return False, f"manifest names backup {manifest.get('id')!r}"
    for entry in manifest["files"]:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not name:
            return False, "manifest lists a file without a name"
        if name not in sizes:
            return False, f"{name} is missing"
        if entry.get("size") is not None and sizes[name] != entry["size"]:
            return False, f"{name} has {sizes[name]} bytes, the manifest says {entry['size']}"
    return True, ""


def batched(items, size=1000):
    """Lists of at most `size` items (S3 DeleteObjects takes up to 1000 keys a request)."""
    items = list(items)
    return [items[i : i + size] for i in range(0, len(items), size)]


# --- I/O shared by the backup_rotate module and the backup agent (roles/backup) ---------------------------------------
def _mtime(path):
    return datetime.datetime.fromtimestamp(os.stat(path).st_mtime, tz=datetime.timezone.utc)


# A set directory the backup agent made holds this file; backup_rotate deletes nothing in a directory without it.
SET_MARKER = ".selfhosted-backup-set"
# Never a set directory, whatever they hold.
SYSTEM_DIRS = frozenset((
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media", "/mnt", "/opt",
    "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/usr/bin", "/usr/lib", "/usr/local",  # noqa: S108
    "/usr/sbin", "/usr/share", "/var", "/var/backups", "/var/cache", "/var/lib", "/var/log", "/var/mail",
    "/var/spool", "/var/tmp", "/var/www",  # noqa: S108 (paths refused, not temporary files)
))  # fmt: skip


def base_dir_problem(path):
    """Why `path` cannot hold backup sets (the backup role's backup_local_dir), or '' when it can: it must be an
    absolute, normalised path of its own, not / or a system directory. The same list backup_rotate refuses."""
    if not isinstance(path, str) or not path.startswith("/") or any(c in path for c in "\n\r\0"):
        return "an absolute path on one line"
    if os.path.normpath(path) != path:
        return "a normalised path (no '..', '//' or trailing '/')"
    if path in SYSTEM_DIRS:
        return "a directory of its own, not / or a system directory (" + ", ".join(sorted(SYSTEM_DIRS)) + ")"
    return ""


def check_set_dir(path, require_marker=True):
    """Refuse a path that is not a dedicated backup set directory: a system directory (checked after resolving
    symlinks), anything but a directory, or (require_marker) one without the marker the backup agent writes."""
    real = os.path.realpath(path)
    if real in SYSTEM_DIRS or path.rstrip("/") in SYSTEM_DIRS or path in ("", "/"):
        raise RotateError(f"path {path} is a system directory, never a backup set: refused")
    if not os.path.isdir(path):
        raise RotateError(f"path {path} is not a directory")
    if require_marker and not os.path.isfile(os.path.join(path, SET_MARKER)):
        raise RotateError(
            f"path {path} has no {SET_MARKER} file, so it is not a set directory the backup agent made: refused "
            f"(the agent writes it in every set directory; create it by hand only in a directory that holds "
            f"nothing but backups)"
        )


def read_local(path, require_marker=True):
    """(backups, ignored) of a local set directory: one subdirectory per backup, named by its id (20261125T021500Z,
    as the agent writes them). Anything else is ignored, never deleted: names that are not backup ids, symbolic
    links (never followed), files; ignored maps each name to why. Names starting with '.' are the agent's work in
    progress and its marker, left out silently."""
    check_set_dir(path, require_marker)
    backups, ignored = [], {}
    for name in sorted(os.listdir(path)):
        if name.startswith("."):
            continue
        full = os.path.join(path, name)
        if id_time(name) is None:
            ignored[name] = "not a backup id (YYYYMMDDTHHMMSSZ, a real UTC time)"
            continue
        if os.path.islink(full):
            ignored[name] = "a symbolic link: never followed or deleted"
            continue
        if not os.path.isdir(full):
            ignored[name] = "not a directory"
            continue
        # Only regular files count (lstat: a symbolic link inside a backup is not one of its files).
        sizes = {}
        for f in os.listdir(full):
            st = os.lstat(os.path.join(full, f))
            if stat.S_ISREG(st.st_mode):
                sizes[f] = st.st_size
        manifest = None
        if MANIFEST in sizes:
            try:
                with open(os.path.join(full, MANIFEST)) as fh:
                    manifest = json.load(fh)
            except ValueError:
                manifest = "unreadable"
        complete, problem = check_manifest(name, manifest, sizes)
        moment = parse_time(manifest["time"], f"{full}/{MANIFEST}") if complete else _mtime(full)
        backups.append(Backup(name, moment, complete, problem))
    return backups, ignored


class DeleteError(Exception):
    """Deleting failed part-way; the message says what was refused."""


def list_s3(client, bucket, prefix):
    """Every object under prefix, following the pagination of ListObjectsV2."""
    token = None
    while True:
        kwargs = {"Bucket": bucket, "Prefix": prefix}
        if token:
            kwargs["ContinuationToken"] = token
        page = client.list_objects_v2(**kwargs)
        yield from page.get("Contents", [])
        if not page.get("IsTruncated"):
            return
        token = page["NextContinuationToken"]


def id_time(backup_id):
    """The time of an id the backup role writes (the backup's UTC time, 20261125T021500Z), or None (also for an
    impossible date such as 20261399T000000Z)."""
    if not BACKUP_ID.match(backup_id):
        return None
    try:
        return datetime.datetime.strptime(backup_id, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


def read_s3_backup(client, bucket, prefix, backup_id, objects):
    """One backup, its manifest read and checked against the listed objects."""
    sizes = {name: obj["Size"] for name, obj in objects.items()}
    manifest = None
    if MANIFEST in objects:
        body = client.get_object(Bucket=bucket, Key=f"{prefix}{backup_id}/{MANIFEST}")["Body"]
        try:
            manifest = json.loads(body.read())
        except ValueError:
            manifest = "unreadable"
    complete, problem = check_manifest(backup_id, manifest, sizes)
    if complete:
        moment = parse_time(manifest["time"], f"s3://{bucket}/{prefix}{backup_id}/{MANIFEST}")
    else:
        moment = max(obj["LastModified"] for obj in objects.values())
    return Backup(backup_id, moment, complete, problem)


def read_s3_set(client, bucket, prefix, lazy=False):
    """(backups, groups, ignored) of the set under prefix ('a/b/'); groups maps each backup id to {file name:
    object}; ignored maps every other name under the prefix (not a backup id, or an object directly under it) to
    why: those are never planned or deleted.

    lazy: a backup whose id is its time and whose manifest is listed counts as complete from the listing alone
    (verified=False); plan_verified() reads the manifests of those it would keep. One GET per kept backup instead of
    one per backup: the listing is the cost of a rotation, not the size of the set."""
    groups, ignored = {}, {}
    for obj in list_s3(client, bucket, prefix):
        if not obj["Key"].startswith(prefix):
            continue  # an answer outside the prefix asked for is never planned, let alone deleted
        rest = obj["Key"][len(prefix) :]
        if "/" not in rest:
            ignored[rest] = "an object directly under the prefix, not in a backup"
            continue
        backup_id, name = rest.split("/", 1)
        if id_time(backup_id) is None:
            ignored[backup_id] = "not a backup id (YYYYMMDDTHHMMSSZ, a real UTC time)"
            continue
        groups.setdefault(backup_id, {})[name] = obj
    backups = []
    for backup_id, objects in sorted(groups.items()):
        moment = id_time(backup_id) if lazy and MANIFEST in objects else None
        if moment is not None:
            backups.append(Backup(backup_id, moment, True, "", verified=False))
        else:
            backups.append(read_s3_backup(client, bucket, prefix, backup_id, objects))
    return backups, groups, ignored


def plan_verified(backups, verify, policy, now, tz, **options):
    """plan(), reading (verify(id) -> Backup) every unverified backup the plan would keep, and planning again
    until every kept backup is verified. A backup found incomplete then never counts as kept."""
    by_id = {b.id: b for b in backups}
    while True:
        decided = plan(list(by_id.values()), policy, now, tz, **options)
        pending = [i for i in decided.keep if not by_id[i].verified]
        if not pending:
            return decided
        for backup_id in pending:
            by_id[backup_id] = verify(backup_id)


def delete_s3_keys(client, bucket, keys):
    """Delete keys in batches of 1000, the manifests first: an interrupted delete leaves an incomplete backup, never
    a "complete" one with missing files."""
    keys = sorted(keys, key=lambda k: not k.endswith("/" + MANIFEST))
    for chunk in batched(keys, 1000):
        answer = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})
        errors = answer.get("Errors") or []
        if errors:
            raise DeleteError(f"S3 refused to delete {len(errors)} objects, first: {errors[0]}")


def list_s3_versions(client, bucket, prefix):
    """Every version and delete marker under prefix (ListObjectVersions, paginated), each with "Marker": bool.
    Keys outside prefix in an answer are dropped; a page that does not move the markers on is an error."""
    kwargs = {"Bucket": bucket, "Prefix": prefix}
    while True:
        page = client.list_object_versions(**kwargs)
        for marker, kind in ((False, "Versions"), (True, "DeleteMarkers")):
            for entry in page.get(kind, []):
                if entry.get("Key", "").startswith(prefix):
                    yield {**entry, "Marker": marker}
        if not page.get("IsTruncated"):
            return
        markers = {
            k: page[n] for k, n in (("KeyMarker", "NextKeyMarker"), ("VersionIdMarker", "NextVersionIdMarker"))
            if page.get(n)
        }  # fmt: skip
        if not markers or all(kwargs.get(k) == v for k, v in markers.items()):
            raise DeleteError(f"S3 listed the versions under {prefix} as truncated without a next marker")
        kwargs = {"Bucket": bucket, "Prefix": prefix, **markers}


def expired_versions(entries, prefix, now, keep_seconds):
    """The versions to remove for good, as [{Key, VersionId}]: in a versioned bucket a rotated (deleted) backup
    stays as older versions behind a delete marker, the way back for keep_seconds after the marker was made; after
    that the versions behind it go, and the marker once nothing is left behind it.

    Only what a delete hid: a version replaced by another upload (an overwrite, which the agent never does: a
    stolen writer key might) is kept for good, so an overwrite can never become a loss. Never the current version,
    nor any key outside prefix or not inside a backup id's sub-prefix (not ours). A marker dated in the future (a
    clock ahead) expires nothing."""
    by_key = {}
    for entry in entries:
        key = entry["Key"]
        rest = key[len(prefix) :] if key.startswith(prefix) else ""
        if "/" not in rest or id_time(rest.split("/", 1)[0]) is None:
            continue
        by_key.setdefault(key, []).append(entry)
    out = []
    for key, items in sorted(by_key.items()):
        items.sort(key=lambda e: (bool(e.get("IsLatest")), e["LastModified"]), reverse=True)
        latest = items[0]
        if not (latest.get("Marker") and latest.get("IsLatest")):
            continue  # the backup file is there: nothing of it is removed
        if (now - latest["LastModified"]).total_seconds() <= keep_seconds:
            continue  # deleted recently: the way back is open
        behind = []
        for entry in items[1:]:
            if entry.get("Marker"):
                behind.append(entry)  # an older marker: nothing of value
                continue
            behind.append(entry)
            break  # the version the delete hid; anything older was replaced by an upload, kept for good
        older = items[1 + len(behind) :]
        out += [{"Key": key, "VersionId": e["VersionId"]} for e in behind]
        if not older:
            out.append({"Key": key, "VersionId": latest["VersionId"]})
    return out


def delete_s3_versions(client, bucket, versions):
    """Remove versions for good, in batches of 1000; a refusal (an Object Lock retention, a missing permission)
    stops with the first refused one."""
    for chunk in batched(versions, 1000):
        answer = client.delete_objects(Bucket=bucket, Delete={"Objects": list(chunk), "Quiet": True})
        errors = answer.get("Errors") or []
        if errors:
            raise DeleteError(f"S3 refused to remove {len(errors)} older versions, first: {errors[0]}")


class S3BackupSet:
    """The backups of one set under an S3 prefix: read (planned from the listing), verify one, delete some."""

    def __init__(self, client, bucket, prefix):
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/") + "/"
        self.groups, self.ignored = {}, {}

    def read(self):
        backups, self.groups, self.ignored = read_s3_set(self.client, self.bucket, self.prefix, lazy=True)
        return backups

    def verify(self, backup_id):
        return read_s3_backup(self.client, self.bucket, self.prefix, backup_id, self.groups[backup_id])

    def delete(self, ids):
        delete_s3_keys(self.client, self.bucket, [obj["Key"] for bid in ids for obj in self.groups[bid].values()])

    def expired_versions(self, now, keep_seconds):
        """Older versions of this set's backups past their way-back window (expired_versions())."""
        return expired_versions(list_s3_versions(self.client, self.bucket, self.prefix), self.prefix, now, keep_seconds)

    def purge(self, versions):
        delete_s3_versions(self.client, self.bucket, versions)


class LocalBackupSet:
    """The backups of one set in a local directory (read whole: every backup is verified when read)."""

    def __init__(self, path, require_marker=True):
        self.path, self.require_marker = path, require_marker
        self.ignored = {}

    def read(self):
        backups, self.ignored = read_local(self.path, self.require_marker)
        return backups

    def verify(self, backup_id):
        return next(b for b in self.read() if b.id == backup_id)

    def delete(self, ids):
        for backup_id in ids:
            full = os.path.join(self.path, backup_id)
            # Checked again right before: only a real directory named by a backup id, never through a symlink.
            if not BACKUP_ID.match(backup_id) or os.path.islink(full) or not os.path.isdir(full):
                raise DeleteError(f"{full} is not a backup directory: not deleted")
            shutil.rmtree(full)
