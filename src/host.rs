//! Facts about the machine n10n-dev runs on: plain data, detected once and passed down.

use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    MacOs,
    Linux,
    Other,
}

/// How to install `tool` on this kind of machine: Homebrew on a Mac, the distribution or the
/// project's own page elsewhere.
pub fn install_hint(os: Os, tool: &str) -> &'static str {
    match (os, tool) {
        (Os::MacOs, "limactl") => "brew install lima",
        (Os::MacOs, "vagrant") => "brew install --cask vagrant",
        (Os::MacOs, "VBoxManage") => "brew install --cask virtualbox (Intel Macs)",
        (Os::MacOs, "docker") => "brew install docker (the client; the engine runs in the VM)",
        (_, "docker") => "apt-get install docker.io",
        (_, "limactl") => "see https://lima-vm.io/docs/installation/",
        (_, "vagrant") => "see https://developer.hashicorp.com/vagrant/install",
        (_, "VBoxManage") => "see https://www.virtualbox.org/wiki/Downloads",
        _ => "see the tool's installation guide",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuArch {
    X86_64,
    Aarch64,
    Other,
}

/// Which of the tools n10n-dev can drive are on PATH.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tools {
    pub limactl: Option<PathBuf>,
    pub vagrant: Option<PathBuf>,
    pub vboxmanage: Option<PathBuf>,
    pub docker: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    pub os: Os,
    pub arch: CpuArch,
    /// e.g. "14.5" on macOS, "Debian GNU/Linux 12 (bookworm)" on Linux.
    pub os_version: Option<String>,
    pub tools: Tools,
}

impl HostFacts {
    pub fn detect() -> HostFacts {
        let os = match std::env::consts::OS {
            "macos" => Os::MacOs,
            "linux" => Os::Linux,
            _ => Os::Other,
        };
        HostFacts {
            os,
            arch: match std::env::consts::ARCH {
                "x86_64" => CpuArch::X86_64,
                "aarch64" => CpuArch::Aarch64,
                _ => CpuArch::Other,
            },
            os_version: os_version(os),
            tools: Tools {
                limactl: which::which("limactl").ok(),
                vagrant: which::which("vagrant").ok(),
                vboxmanage: which::which("VBoxManage").ok(),
                docker: which::which("docker").ok(),
            },
        }
    }
}

fn os_version(os: Os) -> Option<String> {
    match os {
        Os::MacOs => std::process::Command::new("sw_vers")
            .arg("-productVersion")
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string()),
        Os::Linux => std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|text| pretty_name(&text)),
        Os::Other => None,
    }
}

/// `PRETTY_NAME` from an os-release file.
fn pretty_name(os_release: &str) -> Option<String> {
    os_release
        .lines()
        .find_map(|line| line.strip_prefix("PRETTY_NAME="))
        .map(|value| value.trim_matches('"').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pretty_name() {
        let text = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(
            pretty_name(text).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(pretty_name("ID=alpine\n"), None);
    }

    #[test]
    fn detect_reports_this_machine() {
        let facts = HostFacts::detect();
        assert_eq!(facts.os == Os::Linux, cfg!(target_os = "linux"));
        assert_eq!(facts.arch == CpuArch::X86_64, cfg!(target_arch = "x86_64"));
    }
}
