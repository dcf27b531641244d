#!/bin/sh
# Docker Engine for builds, on Debian or Ubuntu, run as root. Idempotent: once everything is in
# place a run changes nothing and takes well under a second.
#
# - docker.io from the distribution, with AppArmor's parser: Debian kernels enable AppArmor, and
#   without apparmor_parser dockerd cannot start containers (only FROM-scratch builds work).
# - buildx where the distribution packages it (Debian 13, Ubuntu 24.04: docker-buildx). Debian 12
#   has no package; builds there use the daemon's built-in BuildKit (DOCKER_BUILDKIT=1 docker
#   build), which builds one platform at a time, as a Lambda image needs.
# - The build user (N10N_USER, else Lima's LIMA_CIDATA_USER, else SUDO_USER) joins the docker group.
# - amd64 images on an arm64 VM need a binfmt handler: Lima's Rosetta (vmOpts.vz.rosetta.binfmt)
#   registers one; elsewhere install qemu-user-static. A note says which is missing.
set -eu
export DEBIAN_FRONTEND=noninteractive
user=${N10N_USER:-${LIMA_CIDATA_USER:-${SUDO_USER:-}}}

installed() { dpkg-query -W -f '${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
available() { apt-cache show "$1" >/dev/null 2>&1; }

missing=""
for package in docker.io apparmor; do
  installed "$package" || missing="$missing $package"
done
if [ -n "$missing" ]; then
  echo "installing:$missing"
  apt-get update -q
  # shellcheck disable=SC2086 # a list of package names
  apt-get install -y -q --no-install-recommends $missing
fi
if ! installed docker-buildx && available docker-buildx; then
  echo "installing: docker-buildx"
  apt-get install -y -q --no-install-recommends docker-buildx
fi
installed docker-buildx || echo "note: no buildx package here; builds use DOCKER_BUILDKIT=1 docker build"

if [ -n "$user" ] && id "$user" >/dev/null 2>&1 && ! id -nG "$user" | tr ' ' '\n' | grep -qx docker; then
  echo "adding $user to the docker group"
  usermod -aG docker "$user"
fi

# Start the engine where systemd runs it; in a container the caller starts dockerd itself.
if [ -d /run/systemd/system ]; then
  systemctl enable docker >/dev/null 2>&1 || true
  systemctl is-active --quiet docker || systemctl restart docker
  deadline=$(( $(date +%s) + 120 ))
  until docker info >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "docker did not become ready within 120 s" >&2; exit 1; }
    sleep 1
  done
fi

if [ "$(uname -m)" = aarch64 ] && ! grep -qs '^enabled' /proc/sys/fs/binfmt_misc/rosetta \
   && ! grep -qs '^enabled' /proc/sys/fs/binfmt_misc/qemu-x86_64; then
  echo "note: no x86_64 binfmt handler: RUN steps of linux/amd64 images will fail;" \
       "enable Rosetta in Lima or: apt-get install qemu-user-static"
fi
