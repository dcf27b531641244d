#!/usr/bin/env python3
"""How soon a port of the machine answers on this host, and how soon it is freed here.

  port-timing.py docker SOCKET IMAGE RUNS   docker run -d -p P:80 (this host's CLI through the
                                          forwarder's socket), IMAGE serving /ctx with busybox
                                          httpd; timed from `docker run` returning to an HTTP
                                          answer on 127.0.0.1:P, then from `docker rm -f`
                                          returning to 127.0.0.1:P refusing connections.
  port-timing.py listen N10N PROJECT RUNS   a plain listener started with `run` (a perl server
                                          that prints when it listens); timed from that line to
                                          an answer here, then from Ctrl-C's `run` ending.
  port-timing.py listen-here N10N PROJECT RUNS
                                          the same when the machine is this host (the loopback
                                          sshd): the server listens on ::1 only, leaving
                                          127.0.0.1:P to the forwarder, and only the answer is
                                          timed (the forwarder's own socket is one of the
                                          machine's listeners then, so it stays).
  port-timing.py ssh DEST "SSH OPTIONS" RUNS
                                          the anchor for listen-here: the same server started
                                          by OpenSSH's `ssh -L 127.0.0.1:P:[::1]:P DEST`, the
                                          forward a user would set up by hand before starting
                                          it (nothing to free: ssh holds the port).

Prints one line a run and the worst of each; exits 1 if a port did not answer within 10 s or
was not freed within 5 s. Used by .ci/e2e-vm and bench/port-readiness.
"""
import shlex
import signal
import socket
import subprocess
import sys
import time

POLL = 0.005
# A server in the machine (perl-base has IO::Socket::IP) that says when it listens; an IPv6
# address is its only one.
SERVER = """
use IO::Socket::IP;
my $s = IO::Socket::IP->new(LocalHost => $ARGV[1], LocalPort => $ARGV[0], Listen => 5,
                            ReuseAddr => 1, V6Only => 1) or die "cannot listen: $@";
$| = 1;
print "listening\\n";
while (my $c = $s->accept) { <$c>; print $c "HTTP/1.0 200 OK\\r\\n\\r\\nhi\\n"; close $c; }
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(port, path):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
            return s.recv(12).startswith(b"HTTP/1.")
    except OSError:
        return False


def refuses(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def until(check, deadline):
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > deadline:
            return None
        time.sleep(POLL)
    return time.monotonic() - start


def run(argv):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def listener(mode, where, what, port):
    """The server, started by n10n-dev's `run` or by OpenSSH with its forward."""
    address = "127.0.0.1" if mode == "listen" else "::1"
    if mode != "ssh":
        return subprocess.Popen([where, "-C", what, "run", "--no-sync", "--", "perl", "-e", SERVER,
                                 str(port), address], stdout=subprocess.PIPE, text=True)
    remote = " ".join(shlex.quote(a) for a in ["perl", "-e", SERVER, str(port), address])
    # -tt: the server ends with the session (SIGHUP), not at its next write.
    argv = ["ssh", "-tt", *what.split(), "-o", "ExitOnForwardFailure=yes",
            "-L", f"127.0.0.1:{port}:[{address}]:{port}", where, remote]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)


def main():
    mode, where, what, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    answered, freed = [], []
    for i in range(runs):
        port = free_port()
        if mode == "docker":
            docker = ["docker", "-H", f"unix://{where}"]
            name = f"port-timing-{port}"
            run(docker + ["run", "-d", "--rm", "--name", name, "-p", f"{port}:80", what,
                          "httpd", "-f", "-p", "80", "-h", "/ctx"])
            up = until(lambda: answers(port, "/Dockerfile"), 10)
            run(docker + ["rm", "-f", name])
        else:
            server = listener(mode, where, what, port)
            try:
                if server.stdout.readline().strip() != "listening":
                    return 1
                up = until(lambda: answers(port, "/"), 10)
            finally:
                server.send_signal(signal.SIGINT)
                server.wait(timeout=30)
        down = until(lambda: refuses(port), 5) if mode in ("docker", "listen") else 0.0
        show = lambda t: "never" if t is None else f"{t:.3f} s"
        print(f"{mode} {i + 1}: port {port} answered after {show(up)}, freed after {show(down)}",
              flush=True)
        if up is None or down is None:
            return 1
        answered.append(up)
        freed.append(down)
    print(f"{mode}: worst of {runs}: answered after {max(answered):.3f} s, "
          f"freed after {max(freed):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
