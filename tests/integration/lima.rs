//! The lima backend through `up`, `status`, `run`, `stop`, `destroy`, with a limactl stand-in
//! that keeps to the documented contract (tests/integration/bin/limactl) and the real loopback
//! sshd as the VM's SSH endpoint.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::harness::*;

struct Lima {
    sshd: Sshd,
    project: Project,
    lima_home: tempfile::TempDir,
    provision_dir: tempfile::TempDir,
}

impl Lima {
    fn new() -> Lima {
        let sshd = Sshd::start();
        let project = Project::new(&sshd);
        std::fs::write(
            project.root().join("n10n-dev.toml"),
            format!(
                "[vm]\nbackend = \"lima\"\nname = \"test-vm\"\ncpus = 2\nmemory = \"4GiB\"\n\n[sync]\ndest = \"{}\"\n",
                project.replica().display()
            ),
        )
        .unwrap();
        project.write("src/app.txt", "hello from the mac\n");
        let provision_dir = tempfile::tempdir().unwrap();
        let log = provision_dir.path().join("ran.log");
        std::fs::write(
            provision_dir.path().join("docker.sh"),
            format!(
                "#!/bin/sh\nset -eu\necho \"docker.sh for $N10N_USER\"\necho docker >> '{}'\n",
                log.display()
            ),
        )
        .unwrap();
        Lima {
            sshd,
            project,
            lima_home: tempfile::tempdir().unwrap(),
            provision_dir,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.project.cmd(args);
        let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/bin");
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        cmd.env("PATH", path)
            .env("FAKE_LIMA_HOME", self.lima_home.path())
            .env("FAKE_LIMA_PORT", self.sshd.port.to_string())
            .env("FAKE_LIMA_USER", &self.sshd.user)
            .env("FAKE_LIMA_IDENTITY", &self.sshd.identity)
            .env("N10N_DEV_PROVISION_DIR", self.provision_dir.path());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        out
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.lima_home.path().join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn provision_runs(&self) -> usize {
        std::fs::read_to_string(self.provision_dir.path().join("ran.log"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    fn instance_dir(&self) -> PathBuf {
        self.lima_home.path().join("test-vm")
    }
}

#[test]
fn up_creates_provisions_pins_and_syncs_then_is_a_no_op() {
    let lima = Lima::new();
    let out = lima.ok(&["up"]);
    assert!(
        stderr(&out).contains("up: test-vm is ready at"),
        "{}",
        stderr(&out)
    );
    let calls = lima.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("--tty=false start --name=test-vm --set")),
        "{calls:?}"
    );
    let flags = std::fs::read_to_string(lima.lima_home.path().join("start-flags.log")).unwrap();
    assert_eq!(
        flags.trim(),
        r#"--set .cpus = 2 | .memory = "4GiB" | .disk = "60GiB""#
    );
    assert_eq!(lima.provision_runs(), 1);
    assert_eq!(
        std::fs::read_to_string(lima.project.replica().join("src/app.txt")).unwrap(),
        "hello from the mac\n"
    );
    assert!(
        lima.project
            .home
            .path()
            .join("vms/test-vm/known_hosts")
            .is_file()
    );

    // Already up: no limactl call, no provisioning, nothing to sync.
    let before = lima.calls().len();
    lima.ok(&["up"]);
    assert_eq!(
        lima.calls().len(),
        before,
        "a second `up` called limactl: {:?}",
        lima.calls()
    );
    assert_eq!(lima.provision_runs(), 1);

    let out = lima.ok(&["run", "--", "cat", "src/app.txt"]);
    assert_eq!(stdout(&out), "hello from the mac\n");

    let status: serde_json::Value =
        serde_json::from_slice(&lima.ok(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["backend"], "lima");
    assert_eq!(status["state"], "running");
    assert!(
        status["host_key"]
            .as_str()
            .unwrap()
            .starts_with("ssh-ed25519 SHA256:")
    );
    let stamp = status["provision_stamp"].as_str().unwrap();
    assert!(stamp.ends_with(" docker"), "{status}");
    assert!(
        status["last_sync_entries"].as_u64().unwrap() >= 3,
        "{status}"
    );
}

/// The stand-in's VM is this host: on a Debian older than 13 (CI's Debian 12), `up` says once
/// that the VM is older than new ones and how to re-create it.
#[test]
fn up_says_once_that_an_older_debian_vm_could_be_made_anew() {
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let older = os.lines().any(|l| l == "ID=debian")
        && os
            .lines()
            .find_map(|l| l.strip_prefix("VERSION_ID="))
            .and_then(|v| v.trim_matches('"').parse::<u32>().ok())
            .is_some_and(|release| release < 13);
    let lima = Lima::new();
    let first = stderr(&lima.ok(&["up"]));
    let said = first.contains("older than the Debian 13 that new VMs get")
        && first.contains("`n10n-dev destroy` then `n10n-dev up`");
    assert_eq!(said, older, "{first}");
    let second = stderr(&lima.ok(&["up"]));
    assert!(!second.contains("older than"), "said twice: {second}");
    assert_eq!(lima.provision_runs(), 1, "the note changes nothing");
}

#[test]
fn stop_then_up_resumes_and_a_stopped_vm_is_reported() {
    let lima = Lima::new();
    lima.ok(&["up"]);
    lima.ok(&["stop"]);
    assert_eq!(
        std::fs::read_to_string(lima.instance_dir().join("status"))
            .unwrap()
            .trim(),
        "Stopped"
    );
    // Stopping twice is fine: limactl's own `stop` would fail, so it is not called.
    lima.ok(&["stop"]);
    // A stopped VM does not answer SSH, and Lima gives a restarted one a new port and new
    // host keys (a new cloud-init instance-id at each start: the keys are made anew).
    let Lima {
        sshd,
        project,
        lima_home,
        provision_dir,
    } = lima;
    let dir = sshd.kill();
    std::fs::remove_file(dir.path().join("host_key")).unwrap();
    let lima = Lima {
        sshd: Sshd::start_in(dir, free_port(), "ed25519"),
        project,
        lima_home,
        provision_dir,
    };
    lima.ok(&["up"]);
    assert!(
        lima.calls()
            .iter()
            .any(|c| c == "--tty=false start test-vm"),
        "{:?}",
        lima.calls()
    );
    assert_eq!(lima.provision_runs(), 1, "the stamp survives a restart");
}

#[test]
fn destroy_needs_force_without_a_terminal() {
    let lima = Lima::new();
    lima.ok(&["up"]);
    let out = lima.run(&["destroy"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert!(lima.instance_dir().exists());
    lima.ok(&["destroy", "--force"]);
    assert!(!lima.instance_dir().exists());
    assert!(!lima.project.home.path().join("vms/test-vm").exists());
}

#[test]
fn concurrent_ups_create_one_vm() {
    let lima = Lima::new();
    let children: Vec<_> = (0..2).map(|_| lima.cmd(&["up"]).spawn().unwrap()).collect();
    for child in children {
        assert!(child.wait_with_output().unwrap().status.success());
    }
    let creates = lima
        .calls()
        .iter()
        .filter(|c| c.contains("--name=test-vm"))
        .count();
    assert_eq!(creates, 1, "{:?}", lima.calls());
}

#[test]
fn old_lima_is_refused_with_the_upgrade_command() {
    let lima = Lima::new();
    let out = lima
        .cmd(&["up"])
        .env("FAKE_LIMA_VERSION", "1.2.1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("Lima 2.0 or newer") && stderr(&out).contains("brew upgrade lima"),
        "{}",
        stderr(&out)
    );
}
