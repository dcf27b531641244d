//! The vagrant backend through `up`, `run`, `stop`, `destroy`, with a vagrant stand-in that keeps
//! to the documented contract (tests/integration/bin/vagrant) and the real loopback sshd.

use std::path::Path;
use std::process::Output;

use crate::harness::*;

struct Vagrant {
    sshd: Sshd,
    project: Project,
    log: tempfile::NamedTempFile,
    provision_dir: tempfile::TempDir,
}

impl Vagrant {
    fn new() -> Vagrant {
        let sshd = Sshd::start();
        let project = Project::new(&sshd);
        std::fs::write(
            project.root().join("n10n-dev.toml"),
            format!(
                "[vm]\nbackend = \"vagrant\"\nname = \"test-vm\"\nmemory = \"2GiB\"\n\n[sync]\ndest = \"{}\"\n",
                project.replica().display()
            ),
        )
        .unwrap();
        project.write("main.rs", "fn main() {}\n");
        let provision_dir = tempfile::tempdir().unwrap();
        std::fs::write(
            provision_dir.path().join("docker.sh"),
            "#!/bin/sh\necho docker ok\n",
        )
        .unwrap();
        std::fs::write(
            provision_dir.path().join("rust.sh"),
            "#!/bin/sh\necho rust ok\n",
        )
        .unwrap();
        Vagrant {
            sshd,
            project,
            log: tempfile::NamedTempFile::new().unwrap(),
            provision_dir,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, &[])
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/bin");
        self.project
            .cmd(args)
            .envs(env.iter().copied())
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .env("FAKE_VAGRANT_LOG", self.log.path())
            .env("FAKE_VAGRANT_PORT", self.sshd.port.to_string())
            .env("FAKE_VAGRANT_USER", &self.sshd.user)
            .env("FAKE_VAGRANT_IDENTITY", &self.sshd.identity)
            .env("N10N_DEV_PROVISION_DIR", self.provision_dir.path())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        out
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.log.path())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

#[test]
fn up_run_stop_destroy_through_vagrant() {
    let vagrant = Vagrant::new();
    vagrant.ok(&["up"]);
    let calls = vagrant.calls();
    assert!(
        calls
            .iter()
            .any(|c| c == "up --provider=virtualbox --machine-readable cpus=4 memory=2048"),
        "{calls:?}"
    );
    let vagrantfile = vagrant
        .project
        .home
        .path()
        .join("vms/test-vm/vagrant/Vagrantfile");
    assert!(
        std::fs::read_to_string(vagrantfile)
            .unwrap()
            .contains("synced_folder")
    );

    // Up again: the cached endpoint answers, so vagrant (2 s of Ruby a call) is not run.
    let before = vagrant.calls().len();
    vagrant.ok(&["up"]);
    assert_eq!(vagrant.calls().len(), before, "{:?}", vagrant.calls());

    // Cargo.toml appears: the rust toolchain is detected and provisioned.
    vagrant
        .project
        .write("Cargo.toml", "[package]\nname = \"x\"\n");
    let out = vagrant.ok(&["provision"]);
    assert!(stderr(&out).contains("docker,rust"), "{}", stderr(&out));

    let out = vagrant.ok(&["run", "--", "cat", "main.rs"]);
    assert_eq!(stdout(&out), "fn main() {}\n");

    vagrant.ok(&["stop"]);
    assert!(vagrant.calls().iter().any(|c| c.starts_with("halt")));
    let out = vagrant.run(&["destroy"]);
    assert_eq!(out.status.code(), Some(2));
    vagrant.ok(&["destroy", "--force"]);
    assert!(vagrant.calls().iter().any(|c| c.starts_with("destroy -f")));
    assert!(!vagrant.project.home.path().join("vms/test-vm").exists());
}

#[test]
fn a_failed_vagrant_up_shows_vagrants_own_message() {
    let vagrant = Vagrant::new();
    std::fs::write(vagrant.provision_dir.path().join("unused"), "").unwrap();
    let out = vagrant.run_with(&["up"], &[("FAKE_VAGRANT_FAIL_UP", "1")]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("Vagrant::Errors::VBoxManageError: There was an error while executing `VBoxManage`, a CLI"), "{err}");
    assert!(err.contains("next: `VAGRANT_CWD="), "{err}");
}

/// Issue 34 item 3: `[vagrant] provider` goes to `vagrant up --provider`, the Vagrantfile gets
/// it, and `doctor` names the plugin the provider needs when it is missing.
#[test]
fn the_configured_provider_is_used_and_its_plugin_named() {
    let vagrant = Vagrant::new();
    let config = vagrant.project.root().join("n10n-dev.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[vagrant]\nprovider = \"libvirt\"\n"),
    )
    .unwrap();

    let out = vagrant.run(&["doctor"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("provider:  libvirt (plugin vagrant-libvirt not installed)"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out)
            .contains("needs the plugin vagrant-libvirt: vagrant plugin install vagrant-libvirt"),
        "{}",
        stdout(&out)
    );
    let out = vagrant.run_with(&["doctor"], &[("FAKE_VAGRANT_PLUGINS", "vagrant-libvirt")]);
    assert!(
        stdout(&out).contains("provider:  libvirt (plugin vagrant-libvirt installed)"),
        "{}",
        stdout(&out)
    );

    vagrant.ok(&["up"]);
    let calls = vagrant.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("up --provider=libvirt --machine-readable")),
        "{calls:?}"
    );
}
