# Copyright: selfhosted.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure planning of a rolling replacement of the app containers of a Compose project (for the compose_rollout
module of compose mode): the order in which new containers start and old ones stop under max surge / max
unavailable, the same rules as a Kubernetes Deployment's rolling update.

A step is ("start", n): start n new containers and gate each on its health before anything else happens, or
("stop", n): take n old containers out of nginx, drain them and stop them. Old containers only stop once enough
new ones have passed their gate, so at every moment at least replicas - max_unavailable containers serve, and never
more than replicas + max_surge run.
"""

from __future__ import annotations


class PlanError(ValueError):
    """Bad input; the message names the option and what is allowed."""


def validate(replicas, max_surge, max_unavailable, old=None):
    """Check the rollout settings. old: how many old containers run now (default replicas)."""
    for name, value in (("replicas", replicas), ("max_surge", max_surge), ("max_unavailable", max_unavailable)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise PlanError(f"{name} must be a whole number, 0 or more, got {value!r}")
    if replicas < 1:
        raise PlanError("replicas must be at least 1")
    if max_surge == 0 and max_unavailable == 0:
        raise PlanError(
            "max_surge and max_unavailable are both 0: no container could ever be replaced; set max_surge to 1 "
            "(one extra container during the rollout) or max_unavailable to 1 (one fewer)"
        )
    if max_unavailable >= replicas:
        raise PlanError(
            f"max_unavailable ({max_unavailable}) must be less than replicas ({replicas}): at least one container "
            "must keep serving"
        )
    if old is not None and (isinstance(old, bool) or not isinstance(old, int) or old < 0):
        raise PlanError(f"the number of running old containers must be 0 or more, got {old!r}")


def plan_steps(replicas, max_surge, max_unavailable, old=None):
    """The steps that replace `old` old containers (default replicas) with `replicas` new ones."""
    old = replicas if old is None else old
    validate(replicas, max_surge, max_unavailable, old)
    steps = []
    new = 0
    floor = replicas - max_unavailable  # containers that must serve at every moment
    ceiling = replicas + max_surge  # containers that may run at once
    while new < replicas or old > 0:
        start = min(ceiling - (old + new), replicas - new)
        if start > 0:
            steps.append(("start", start))
            new += start
        # Stop as many old containers as the serving floor allows now that the new ones passed their gates;
        # extra old ones (more than replicas ran) go too.
        stop = min(old, old + new - floor) if new < replicas else old
        if stop > 0:
            steps.append(("stop", stop))
            old -= stop
        if start <= 0 and stop <= 0:  # cannot happen with validated input; guards against an endless loop
            raise PlanError(
                f"no progress possible with replicas={replicas}, max_surge={max_surge}, "
                f"max_unavailable={max_unavailable}"
            )
    return steps


def simulate(replicas, steps, old=None):
    """(lowest number serving, highest number running) over the steps: what the plan guarantees."""
    old = replicas if old is None else old
    new = 0
    low = high = old
    for action, count in steps:
        if action == "start":
            high = max(high, old + new + count)
            new += count
        else:
            old -= count
            low = min(low, old + new)
    return low, high


# --- the module's decisions -----------------------------------------------------------------------------------

REVISION_LABEL = "io.selfhosted.revision"
NUMBER_LABEL = "com.docker.compose.container-number"


def container_number(labels):
    """Compose's container number of a container (0 when missing or not a number)."""
    try:
        return int((labels or {}).get(NUMBER_LABEL, "0"))
    except ValueError:
        return 0


def classify(containers, revision):
    """Split containers ({name, labels, running}) into (old, new) by the revision label, each in container-number
    order. Stopped old containers are old too (a rollout that stopped them is resumed, not repeated)."""
    old, new = [], []
    for c in sorted(containers, key=lambda c: (container_number(c.get("labels")), c["name"])):
        (new if (c.get("labels") or {}).get(REVISION_LABEL) == revision else old).append(c)
    return old, new


def upstream_text(names, port, max_fails=3, fail_timeout="10s"):
    """The nginx upstream include listing the serving containers (by name: Docker's DNS resolves them)."""
    if not names:
        raise PlanError("an upstream needs at least one container")
    lines = ["# Managed by selfhosted.stack.compose_rollout: the app containers in rotation."]
    lines += [f"server {n}:{port} max_fails={max_fails} fail_timeout={fail_timeout};" for n in sorted(names)]
    return "\n".join(lines) + "\n"


def health_check(state, http_ok, http_detail):
    """Combine Docker's view of a container (its State) with an HTTP readiness answer: (ok, connected, detail).
    A container that exited or that Docker calls unhealthy fails; one still `starting` has not answered yet."""
    status = (state or {}).get("Status", "unknown")
    health = ((state or {}).get("Health") or {}).get("Status")
    if status != "running":
        return False, True, f"container is {status} (exit code {(state or {}).get('ExitCode')})"
    if health == "unhealthy":
        return False, True, "Docker health check: unhealthy"
    if not http_ok:
        return False, "no answer" not in http_detail, http_detail
    if health == "starting":
        return False, False, "ready answered, Docker health check still starting"
    return True, True, "ready" + (f", Docker health: {health}" if health else "")


def account_existing(steps, existing_new):
    """The plan's steps with their starts reduced by the new-revision containers already running (a rollout
    resumed after an interruption starts only what is missing)."""
    out = []
    for action, count in steps:
        if action == "start" and existing_new:
            used = min(existing_new, count)
            existing_new -= used
            count -= used
        if count:
            out.append([action, count])
    return out
