#!/bin/sh
# JDK 17 (from the distribution) and sbt (from sbt's Debian repository), on Debian or Ubuntu,
# run as root. Idempotent.
set -eu
export DEBIAN_FRONTEND=noninteractive

installed() { dpkg-query -W -f '${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

if ! installed openjdk-17-jdk-headless; then
  echo "installing: openjdk-17-jdk-headless"
  apt-get update -q
  apt-get install -y -q --no-install-recommends openjdk-17-jdk-headless ca-certificates
fi

if ! installed sbt; then
  echo "installing: sbt"
  apt-get install -y -q --no-install-recommends curl gnupg ca-certificates
  install -m 0755 -d /etc/apt/keyrings
  # The sbt project's signing key, as its installation guide publishes it.
  curl -fsSL "https://keyserver.ubuntu.com/pks/lookup?op=get&search=0x2EE0EA64E40A89B84B2DF73499E82A75642AC823" \
    | gpg --dearmor --yes -o /etc/apt/keyrings/sbt.gpg
  echo "deb [signed-by=/etc/apt/keyrings/sbt.gpg] https://repo.scala-sbt.org/scalasbt/debian all main" \
    > /etc/apt/sources.list.d/sbt.list
  apt-get update -q
  apt-get install -y -q --no-install-recommends sbt
fi
java -version 2>&1 | head -n 1
