"""S3 and local-history helper the backup tests copy into a lab host and run there (boto3 from Debian).

  s3tool.py IDENTITY list PREFIX                 -> JSON [{key, size}]
  s3tool.py IDENTITY get KEY                     -> JSON {sha256, size, metadata, text (manifests only)}
  s3tool.py IDENTITY clear PREFIX                -> deletes every object under PREFIX
  s3tool.py IDENTITY download KEY PATH          -> "ok"
  s3tool.py IDENTITY put KEY TEXT                -> "ok" or the S3 error code
  s3tool.py IDENTITY history PREFIX END HOURS    -> hourly backups (manifest only) ending at END, newest first
  s3tool.py - local-history DIR END HOURS        -> the same as directories (manifest + one data file)
  s3tool.py IDENTITY delete KEY                  -> "ok" or the S3 error code (DeleteObject)
  s3tool.py IDENTITY delete-many KEY             -> "ok" or the first error code DeleteObjects returns per key
  s3tool.py IDENTITY versions PREFIX             -> JSON [{key, version, latest, marker}]
  s3tool.py IDENTITY get-version KEY VERSION     -> the object's text
IDENTITY: rw (the harness), db and cache (the hosts' writers), rotator, ro (the auditor), bad (a wrong secret).
"""

import concurrent.futures
import datetime
import hashlib
import json
import os
import sys

ENDPOINT = "http://bk-storage:8333"
KEYS = {
    "rw": ("lab-test-harness", "lab-harness-secret-7Rm4Tq"),  # the tests' own key: synthetic histories, clean-up
    "db": ("lab-bk-db-writer", "lab-bk-db-secret-4Hn7Qx2"),  # bk-db's writer: lab/bk-db/ only, no delete
    "cache": ("lab-bk-cache-writer", "lab-bk-cache-secret-8Pz3Lm"),  # bk-cache's writer
    "rotator": ("lab-backup-rotator", "lab-rotator-secret-5Xc2Vb9"),
    "ro": ("lab-backup-ro", "lab-auditor-secret-3Wv8Jk"),
    "bad": ("lab-bk-db-writer", "not-the-secret-000000"),
}
BUCKET = "backups"


def client(identity):
    import boto3
    from botocore.config import Config

    access, secret = KEYS[identity]
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 2}, max_pool_connections=32),
    )


def hours(end, count):
    end = datetime.datetime.fromisoformat(end)
    return [end - datetime.timedelta(hours=i) for i in range(count)]


def manifest(moment, files):
    bid = moment.strftime("%Y%m%dT%H%M%SZ")
    return bid, {"id": bid, "set": "synthetic", "time": moment.isoformat(), "files": files, "tools": {}}


def main():
    identity, cmd, *args = sys.argv[1:]
    if cmd == "local-history":
        directory, end, count = args[0], args[1], int(args[2])
        for moment in hours(end, count):
            data = moment.isoformat().encode()
            bid, man = manifest(
                moment, [{"name": "data", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}]
            )
            os.makedirs(os.path.join(directory, bid))
            with open(os.path.join(directory, bid, "data"), "wb") as fh:
                fh.write(data)
            with open(os.path.join(directory, bid, "manifest.json"), "w") as fh:
                json.dump(man, fh)
        print(count)
        return
    s3 = client(identity)
    if cmd == "list":
        out, token = [], None
        while True:
            kwargs = {"Bucket": BUCKET, "Prefix": args[0]}
            if token:
                kwargs["ContinuationToken"] = token
            page = s3.list_objects_v2(**kwargs)
            out += [{"key": o["Key"], "size": o["Size"]} for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                break
            token = page["NextContinuationToken"]
        print(json.dumps(out))
    elif cmd == "get":
        obj = s3.get_object(Bucket=BUCKET, Key=args[0])
        body = obj["Body"].read()
        out = {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body), "metadata": obj.get("Metadata", {})}
        if args[0].endswith(".json"):
            out["text"] = body.decode()
        print(json.dumps(out))
    elif cmd == "clear":
        keys = [
            o["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=args[0])
            for o in page.get("Contents", [])
        ]
        for i in range(0, len(keys), 1000):
            s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]]})
        print(len(keys))
    elif cmd == "download":
        os.makedirs(os.path.dirname(args[1]), exist_ok=True)
        s3.download_file(BUCKET, args[0], args[1])
        print("ok")
    elif cmd == "put":
        try:
            s3.put_object(Bucket=BUCKET, Key=args[0], Body=args[1].encode())
            print("ok")
        except s3.exceptions.ClientError as exc:
            print(exc.response["Error"]["Code"])
    elif cmd in ("delete", "delete-many"):
        try:
            if cmd == "delete":
                s3.delete_object(Bucket=BUCKET, Key=args[0])
                print("ok")
            else:
                errors = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": args[0]}]}).get("Errors")
                print(errors[0]["Code"] if errors else "ok")
        except s3.exceptions.ClientError as exc:
            print(exc.response["Error"]["Code"])
    elif cmd == "versions":
        page = s3.list_object_versions(Bucket=BUCKET, Prefix=args[0])
        out = [
            {"key": v["Key"], "version": v["VersionId"], "latest": v["IsLatest"], "marker": marker}
            for marker, field in ((False, "Versions"), (True, "DeleteMarkers"))
            for v in page.get(field, [])
        ]
        print(json.dumps(out))
    elif cmd == "get-version":
        print(s3.get_object(Bucket=BUCKET, Key=args[0], VersionId=args[1])["Body"].read().decode())
    elif cmd == "history":
        prefix, end, count = args[0].strip("/"), args[1], int(args[2])

        def put(moment):
            bid, man = manifest(moment, [])
            s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{bid}/manifest.json", Body=json.dumps(man).encode())

        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            list(pool.map(put, hours(end, count)))
        print(count)


if __name__ == "__main__":
    main()
