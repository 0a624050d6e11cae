"""demo-app migrate | version"""

import socket
import sys

from demo_app import _build, db


def migrate():
    with db.connect() as conn:
        conn.execute(db.SCHEMA)
        conn.execute(
            "INSERT INTO migrations (release, applied_by) VALUES (%s, %s) ON CONFLICT (release) DO NOTHING",
            (_build.VERSION, socket.gethostname()),
        )
    print(f"migrated for release {_build.VERSION}")


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if args == ["migrate"]:
        migrate()
    elif args == ["version"]:
        print(_build.VERSION)
    else:
        print("usage: demo-app migrate | version", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
