"""One --check --diff run with a new Redis password and a new TLS key: the Redis and the edge tests each read it."""

import labcheck

REDIS_PASSWORD = "lab-new-password-Zr8"
TLS_KEY = "NEW-SECRET-KEY-TEXT"


def check_diff():
    return labcheck.check_mode_run(
        "converge.yml", "-e", f"redis_default_password={REDIS_PASSWORD}", "-e", f"nginx_tls_private_key={TLS_KEY}"
    )
