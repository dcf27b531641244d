#!/bin/sh
# A JDK from the distribution, and sbt from Maven Central: the pinned sbt launcher jar, fetched
# by the distribution's Apache Ivy (which resolves from Maven Central) and checked against the
# SHA-256 below, started by a small runner in /usr/local/bin. No third-party apt repository and
# no signing key. Debian or Ubuntu, run as root. Idempotent. The version is in this script, so
# changing it changes the provision stamp and `up` runs it again.
set -eu
export DEBIAN_FRONTEND=noninteractive

SBT_VERSION=1.12.9
SBT_LAUNCH_SHA256=0533afd7c075f76001b56297b1d229b563b4ebf025c537fbc8973307385912ea
LAUNCHER=/usr/local/lib/sbt/sbt-launch-$SBT_VERSION.jar
RUNNER=/usr/local/bin/sbt

installed() { dpkg-query -W -f '${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
available() { apt-cache show "$1" >/dev/null 2>&1; }

# The JDK of the Lambda base (java21) where the distribution has it (Debian 13, Ubuntu 22.04 and
# later); Debian 12 has 17 only, whose class files run on 21 as well. docker.sh, which runs
# first, has read the package lists on a new machine.
jdk=openjdk-21-jdk-headless
installed "$jdk" || available "$jdk" || jdk=openjdk-17-jdk-headless

need=""
for package in "$jdk" ivy ca-certificates; do
  installed "$package" || need="$need $package"
done
if [ -n "$need" ]; then
  echo "installing:$need"
  # Minimal images (Ubuntu's minimal cloud images, Docker's) leave /usr/share/man out; the JDK's
  # postinst registers its man pages with update-alternatives and fails without the directory.
  mkdir -p /usr/share/man/man1
  apt-get update -q
  # shellcheck disable=SC2086 # a list of package names
  if ! apt-get install -y -q --no-install-recommends $need; then
    # ca-certificates-java, configured in the same transaction as the JRE its postinst runs,
    # sometimes fails (seen on a Debian 12 VM under TCG), and may leave a truncated keystore
    # behind, which every later attempt fails to read (EOFException). The keystore is made from
    # /etc/ssl/certs: without it, the package's postinst makes it anew.
    echo "configuring again what failed to configure (dpkg --configure -a)"
    rm -f /etc/ssl/certs/java/cacerts
    dpkg --configure -a
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $need
  fi
fi

# Machines provisioned by earlier releases carry sbt's apt repository and a key that was fetched
# without a fingerprint check: both go.
if [ -e /etc/apt/sources.list.d/sbt.list ] || [ -e /etc/apt/keyrings/sbt.gpg ]; then
  echo "removing: sbt's apt repository and its key (sbt now comes from Maven Central)"
  rm -f /etc/apt/sources.list.d/sbt.list /etc/apt/keyrings/sbt.gpg
fi

launcher_ok() { echo "$SBT_LAUNCH_SHA256  $1" | sha256sum -c --status 2>/dev/null; }
if ! launcher_ok "$LAUNCHER"; then
  echo "installing: sbt $SBT_VERSION (its launcher from Maven Central)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  if ! java -jar /usr/share/java/ivy.jar -cache "$work/cache" \
      -dependency org.scala-sbt sbt-launch "$SBT_VERSION" -confs default \
      -retrieve "$work/[artifact]-[revision].[ext]" > "$work/log" 2>&1; then
    tail -n 20 "$work/log" >&2
    # A crash of the JVM itself is not a network problem: say so, with the frame it names
    # (seen only under QEMU's TCG emulation, in JIT-compiled code).
    if grep -q "A fatal error has been detected by the Java Runtime Environment" "$work/log"; then
      echo "the JVM crashed while fetching sbt's launcher:" \
        "$(grep -A1 '^# Problematic frame:' "$work/log" | tail -n 1)" >&2
    fi
    echo "could not fetch org.scala-sbt:sbt-launch:$SBT_VERSION from Maven Central" >&2
    exit 1
  fi
  if ! launcher_ok "$work/sbt-launch-$SBT_VERSION.jar"; then
    echo "org.scala-sbt:sbt-launch:$SBT_VERSION from Maven Central does not have the SHA-256" \
      "$SBT_LAUNCH_SHA256 this script expects: refusing it" >&2
    exit 1
  fi
  install -d -m 0755 /usr/local/lib/sbt
  install -m 0644 "$work/sbt-launch-$SBT_VERSION.jar" "$LAUNCHER"
  find /usr/local/lib/sbt -name 'sbt-launch-*.jar' ! -path "$LAUNCHER" -delete
fi

# The runner: sbt's own options that matter in a build machine, the rest to the launcher.
runner=$(cat <<RUNNER
#!/bin/sh
# sbt $SBT_VERSION, as n10n-dev's provision/jvm.sh installed it: the launcher on the JDK.
# -J<option> goes to the JVM, as does every line of the project's .jvmopts; SBT_OPTS and
# JAVA_OPTS too (default: -Xms512m -Xss4m).
set -eu
case "\${1:-}" in
  --script-version) echo "$SBT_VERSION"; exit 0 ;;
esac
jvm_options=""
[ -r .jvmopts ] && jvm_options=\$(grep -v '^#' .jvmopts | tr '\n' ' ')
for argument in "\$@"; do
  shift
  case "\$argument" in
    -J*) jvm_options="\$jvm_options \${argument#-J}" ;;
    *) set -- "\$@" "\$argument" ;;
  esac
done
# shellcheck disable=SC2086 # option lists, split on purpose
exec java \${JAVA_OPTS:-} \${SBT_OPTS:--Xms512m -Xss4m} \$jvm_options -jar $LAUNCHER "\$@"
RUNNER
)
if [ "$(cat "$RUNNER" 2>/dev/null)" != "$runner" ]; then
  printf '%s\n' "$runner" > "$RUNNER.new"
  chmod 0755 "$RUNNER.new"
  mv "$RUNNER.new" "$RUNNER"
fi
java -version 2>&1 | head -n 1
echo "sbt runner $("$RUNNER" --script-version)"
