#!/bin/sh
# Docker Engine for builds, on Debian or Ubuntu, run as root. Idempotent: once everything is in
# place a run changes nothing and takes well under a second.
#
# - docker.io from the distribution, with AppArmor's parser: Debian kernels enable AppArmor, and
#   without apparmor_parser dockerd cannot start containers (only FROM-scratch builds work).
# - The docker CLI: part of docker.io up to Debian 12, its own package docker-cli from Debian 13.
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
lists_updated=""
update_lists_once() { [ -n "$lists_updated" ] || { apt-get update -q; lists_updated=1; }; }
install_packages() {
  echo "installing: $*"
  update_lists_once
  apt-get install -y -q --no-install-recommends "$@"
}

missing=""
for package in docker.io apparmor; do
  installed "$package" || missing="$missing $package"
done
# shellcheck disable=SC2086 # a list of package names
[ -z "$missing" ] || install_packages $missing
# Debian 13 moved the CLI into docker-cli, which docker.io only recommends (and recommends are
# not installed here): without it there is an engine but no docker command.
if ! command -v docker >/dev/null; then
  update_lists_once
  if available docker-cli; then
    install_packages docker-cli
  fi
  command -v docker >/dev/null || {
    echo "docker.io is installed but there is no docker command, and no docker-cli package here" >&2
    exit 1
  }
fi
if ! installed docker-buildx && available docker-buildx; then
  install_packages docker-buildx
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
  until said=$(docker info 2>&1 >/dev/null); do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "the Docker engine did not answer within 120 s: docker.service is" \
        "$(systemctl is-active docker 2>&1); the last 'docker info' said:" >&2
      printf '%s\n' "$said" | tail -n 5 >&2
      exit 1
    fi
    sleep 1
  done
fi

if [ "$(uname -m)" = aarch64 ] && ! grep -qs '^enabled' /proc/sys/fs/binfmt_misc/rosetta \
   && ! grep -qs '^enabled' /proc/sys/fs/binfmt_misc/qemu-x86_64; then
  echo "note: no x86_64 binfmt handler: RUN steps of linux/amd64 images will fail;" \
       "enable Rosetta in Lima or: apt-get install qemu-user-static"
fi
