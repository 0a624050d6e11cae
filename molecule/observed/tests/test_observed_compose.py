"""python-observed, its compose half: the whole stack as one Compose project on po-dock1 (Docker inside the lab's
systemd container) from the same site.yml, roles and variables as the vm hosts; health-gated rollouts of the app
containers under load (deploys limited to po-dock1: the vm half keeps its release)."""

import json

import labcheck

testinfra_hosts = ["po-dock1"]
HOST = "po-dock1"
PROJECT = "/opt/selfhosted"
COMPOSE = f"docker compose --project-directory {PROJECT}"
CURL = "curl -sk -H 'Host: localhost'"
SECRETS = [
    "lab-po-dock-pg-super-C5r2Ty",
    "lab-po-pg-exporter-S9t3Fq",
    "lab-po-redis-admin-A6v1Lr",
    "lab-po-redis-exporter-K7p4Gy",
    "lab-po-pg-app-U4k8Wd",
    "lab-po-redis-app-E2m7Nc",
    "lab-po-grafana-admin-H3w9Vb",
]
SERVICES = {
    "postgres": 1, "redis": 1, "app": 2, "worker": 1, "beat": 1, "nginx": 1,
    "prometheus": 1, "alertmanager": 1, "postgres-exporter": 1, "redis-exporter": 1,
}  # fmt: skip
LIMIT = ("--limit", HOST)
wait_for = labcheck.wait_for


def sh(cmd):
    return labcheck.host(HOST).check_output(cmd)


def containers():
    """[{Service, Name, State, Health, ID, Publishers...}] of the project, running or not."""
    out = sh(f"{COMPOSE} ps --all --format json")
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    return lines[0] if len(lines) == 1 and isinstance(lines[0], list) else lines


def through_nginx(path, method="GET", data=None):
    body = f"-H 'Content-Type: application/json' -d '{json.dumps(data)}'" if data is not None else ""
    out = sh(f"{CURL} -X {method} {body} -w '\\n%{{http_code}}' https://127.0.0.1{path}")
    text, _sep, code = out.rpartition("\n")
    return int(code), text


def sql(query):
    return sh(f'{COMPOSE} exec -T --user postgres postgres psql -d app -XAtc "{query}"')


def prom(query):
    url = "http://127.0.0.1:9090/api/v1/query?query=" + query.replace(" ", "%20").replace('"', "%22")
    out = sh(f"{COMPOSE} exec -T prometheus wget -q -O - '{url}'")
    return json.loads(out)["data"]["result"]


def app_release_of(name):
    return sh(f"docker inspect -f '{{{{index .Config.Labels \"io.selfhosted.release\"}}}}' {name}").strip()


# --- the stack -------------------------------------------------------------------------------------------------


def test_every_service_runs_healthy_in_one_project():
    found = containers()
    by_service = {}
    for c in found:
        by_service.setdefault(c["Service"], []).append(c)
    assert {s: len(cs) for s, cs in by_service.items()} == SERVICES, found
    for c in found:
        assert c["State"] == "running" and c["Health"] == "healthy", c
    # Everything the roles rendered is in the one compose.yaml an operator inspects by hand.
    assert "name: selfhosted" in sh(f"cat {PROJECT}/compose.yaml")


def test_only_nginx_publishes_ports_and_the_backend_network_is_internal():
    for c in containers():
        published = [p for p in c.get("Publishers") or [] if p.get("PublishedPort")]
        if c["Service"] == "nginx":
            assert {p["PublishedPort"] for p in published} == {80, 443}, c
        else:
            assert published == [], c
    assert sh("docker network inspect -f '{{.Internal}}' selfhosted_backend").strip() == "true"


def test_configuration_comes_from_the_roles_templates():
    # The vm templates, rendered for compose: nginx.conf includes the upstream the rollout keeps; redis.conf has
    # hashed ACL passwords only; PostgreSQL runs with the role's settings and pg_hba.
    nginx_conf = sh(f"cat {PROJECT}/nginx/nginx.conf")
    assert "include /etc/nginx/upstreams/app.conf;" in nginx_conf and "server_tokens off;" in nginx_conf
    assert "user app on #" in sh(f"cat {PROJECT}/redis/redis.conf")
    assert sh(f"{COMPOSE} exec -T --user postgres postgres psql -XAtc 'SHOW shared_preload_libraries'").strip() == (
        "pg_stat_statements"
    )
    assert sh(f"{COMPOSE} exec -T --user postgres postgres psql -XAtc 'SHOW hba_file'").strip() == (
        "/etc/postgresql/selfhosted/pg_hba.conf"
    )


def test_services_run_as_unprivileged_users_where_the_image_allows():
    assert sh(f"{COMPOSE} exec -T app id -u").strip() == "10001"
    assert sh(f"{COMPOSE} exec -T worker id -u").strip() == "10001"
    assert sh(f"{COMPOSE} exec -T prometheus id -un").strip() == "nobody"
    ps = sh(f"{COMPOSE} top postgres redis")
    assert "postgres" in ps and "redis" in ps


def test_resource_limits_restart_policy_and_log_rotation():
    for name in ("selfhosted-postgres-1", "selfhosted-nginx-1"):
        host_config = json.loads(sh(f"docker inspect -f '{{{{json .HostConfig}}}}' {name}"))
        assert host_config["Memory"] > 0 and host_config["NanoCpus"] > 0, name
        assert host_config["RestartPolicy"]["Name"] == "unless-stopped", name
        assert host_config["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "3", "max-size": "10m"}}


def test_secrets_stay_out_of_compose_yaml_and_the_project_is_closed():
    text = sh(f"cat {PROJECT}/compose.yaml {PROJECT}/services.d/*.yml")
    assert not [s for s in SECRETS if s in text]
    assert sh(f"stat -c %a {PROJECT}").strip() == "700"
    assert sh(f"stat -c %a {PROJECT}/app/app.env").strip() == "600"


def test_the_app_answers_through_nginx_from_every_replica():
    code, text = through_nginx("/api/v1/readiness")
    assert code == 200 and json.loads(text)["checks"] == {"postgresql": "ok", "redis": "ok"}, text
    for _i in range(20):
        assert through_nginx("/version")[0] == 200
    # Each replica counted some of those requests (nginx balances over both).
    for c in containers():
        if c["Service"] == "app":
            metrics = sh(
                f'docker exec {c["Name"]} python3 -c "import urllib.request; '
                f"print(urllib.request.urlopen('http://127.0.0.1:8000/metrics').read().decode())\""
            )
            counted = [
                line
                for line in metrics.splitlines()
                if line.startswith('http_requests_total{method="GET",status="200"}')
            ]
            assert counted and float(counted[0].split()[-1]) > 0, c["Name"]


def test_a_task_reaches_the_worker():
    code, text = through_nginx("/api/items", "POST", {"payload": "compose"})
    assert code == 201, text
    item = json.loads(text)["id"]
    worker_hostname = sh(f"{COMPOSE} exec -T worker hostname").strip()

    def processed():
        return json.loads(through_nginx(f"/api/items/{item}")[1])["processed"]

    assert wait_for(processed, 60)
    assert json.loads(through_nginx(f"/api/items/{item}")[1])["processed_by"] == worker_hostname


def test_exactly_one_scheduler_sends_heartbeats():
    before = int(sql("SELECT count(*) FROM heartbeats"))
    assert wait_for(lambda: int(sql("SELECT count(*) FROM heartbeats")) >= before + 2, 30)
    assert (
        sql("SELECT count(DISTINCT scheduler_host) FROM heartbeats WHERE beat_at > now() - interval '1 minute'") == "1"
    )


def test_prometheus_scrapes_the_app_replicas_and_the_exporters():
    def all_up():
        up = {(r["metric"]["job"], r["metric"]["instance"]): r["value"][1] for r in prom("up")}
        jobs = [job for job, _instance in up]
        return jobs.count("app") == 2 and {"postgres", "redis", "prometheus"} <= set(jobs) and set(up.values()) == {"1"}

    assert wait_for(all_up, 60), prom("up")
    assert prom('pg_up{job="postgres"}')[0]["value"][1] == "1"
    assert prom('redis_up{job="redis"}')[0]["value"][1] == "1"
    rules = json.loads(sh(f"{COMPOSE} exec -T prometheus wget -q -O - http://127.0.0.1:9090/api/v1/rules"))
    names = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
    assert {"InstanceDown", "HighErrorRate", "HighLatencyP95"} <= names
    assert prom("alertmanager_build_info") or wait_for(lambda: bool(prom('up{job="prometheus"}')), 5)


def test_grafana_provisioning_is_rendered_for_the_project():
    datasource = sh(f"cat {PROJECT}/grafana/provisioning/datasources/selfhosted.yaml")
    assert "url: http://prometheus:9090" in datasource
    assert "stack-overview.json" in sh(f"ls {PROJECT}/grafana/dashboards").split()


# --- rollouts under load ---------------------------------------------------------------------------------------


def app_containers():
    return sorted(c["Name"] for c in containers() if c["Service"] == "app")


def test_good_deploy_under_load_fails_no_request():
    before = app_containers()
    worker_before = [c["ID"] for c in containers() if c["Service"] == "worker"]
    with labcheck.Load(HOST, "po-good", host_header="localhost") as load:
        rc, out = labcheck.playbook("deploy.yml", *LIMIT, "-e", "app_release=1.1.0")
    assert rc == 0, out
    labcheck.assert_no_request_failed(load)
    assert set(load.result["versions"]) == {"1.0.0", "1.1.0"}, load.result  # traffic moved over during the run
    after = app_containers()
    assert len(after) == 2 and not set(after) & set(before), (before, after)  # every container replaced
    assert {app_release_of(n) for n in after} == {"1.1.0"}
    assert {json.loads(through_nginx("/version")[1])["version"] for _i in range(6)} == {"1.1.0"}
    # The worker and the scheduler follow the release; compose.yaml says what runs now.
    worker = [c for c in containers() if c["Service"] == "worker"]
    assert [c["ID"] for c in worker] != worker_before and app_release_of(worker[0]["Name"]) == "1.1.0"
    assert "image: selfhosted/app:1.1.0" in sh(f"cat {PROJECT}/compose.yaml")
    assert sql("SELECT count(*) FROM migrations WHERE release = '1.1.0'") == "1"
    upstream = sh(f"cat {PROJECT}/nginx/upstreams/app.conf")
    assert all(f"server {n}:8000" in upstream for n in after), upstream
    assert labcheck.host(HOST).file("/opt/app/current").linked_to.endswith("/1.1.0")
    # A plain `docker compose up` afterwards finds nothing to do (the new containers are what compose.yaml says).
    assert "Recreate" not in sh(f"{COMPOSE} up -d --dry-run 2>&1")


def test_bad_release_is_rejected_and_the_old_containers_keep_serving_under_load():
    before = {c["Name"]: c["ID"] for c in containers()}
    with labcheck.Load(HOST, "po-bad", host_header="localhost") as load:
        rc, out = labcheck.playbook("deploy.yml", *LIMIT, "-e", "app_release=1.1.1")
    assert rc != 0, out
    assert "Rollout of app to 1.1.1-" in out and "failed its gate" in out and "answered 503" in out, out
    assert "serving now: " in out and "release 1.1.1 is marked failed" in out, out
    labcheck.assert_no_request_failed(load)
    assert set(load.result["versions"]) == {"1.1.0"}, load.result  # no request reached the bad release
    assert {c["Name"]: c["ID"] for c in containers()} == before  # the new containers are gone, the old ones kept
    assert "image: selfhosted/app:1.1.0" in sh(f"cat {PROJECT}/compose.yaml")
    history = json.loads(labcheck.host(HOST).file("/opt/app/releases.json").content_string)
    assert ("1.1.1", "failed") in [(e["release"], e["result"]) for e in history], history


def test_rollback_returns_to_the_previous_good_release_under_load():
    with labcheck.Load(HOST, "po-rollback", host_header="localhost") as load:
        rc, out = labcheck.playbook("rollback.yml", *LIMIT)
    assert rc == 0, out
    labcheck.assert_no_request_failed(load)
    assert set(load.result["versions"]) == {"1.1.0", "1.0.0"}, load.result
    assert {app_release_of(n) for n in app_containers()} == {"1.0.0"}
    assert "image: selfhosted/app:1.0.0" in sh(f"cat {PROJECT}/compose.yaml")
    history = json.loads(labcheck.host(HOST).file("/opt/app/releases.json").content_string)
    assert ("1.1.0", "rolled_back") in [(e["release"], e["result"]) for e in history], history
    assert labcheck.host(HOST).file("/opt/app/current").linked_to.endswith("/1.0.0")
