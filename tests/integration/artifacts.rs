//! The files usable by hand: lima.yaml, the Vagrantfile and provision/ scripts are well-formed.

use std::path::Path;
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tool_output(program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (.ci/run installs it)"))
}

#[test]
fn provision_scripts_pass_shellcheck() {
    let scripts: Vec<String> = std::fs::read_dir(repo().join("provision"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .map(|p| p.to_str().unwrap().to_string())
        .collect();
    assert_eq!(scripts.len(), 3, "{scripts:?}");
    shellcheck(&["--shell=sh", "--severity=style"], &scripts);
}

/// The scripts sync runs on the machine, kept as files (`src/sync/scripts/`).
#[test]
fn sync_scripts_pass_perl_c_and_shellcheck() {
    let dir = repo().join("src/sync/scripts");
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path().to_str().unwrap().to_string())
        .collect();
    let (perl, sh): (Vec<String>, Vec<String>) =
        files.into_iter().partition(|f| f.ends_with(".pl"));
    assert_eq!((perl.len(), sh.len()), (3, 3), "{perl:?} {sh:?}");
    for script in &perl {
        let out = tool_output("perl", &["-c", script]);
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    shellcheck(&["--shell=sh", "--severity=style"], &sh);
}

fn shellcheck(options: &[&str], scripts: &[String]) {
    let mut args = options.to_vec();
    args.extend(scripts.iter().map(String::as_str));
    let out = tool_output("shellcheck", &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn ci_and_bench_scripts_pass_shellcheck() {
    let mut scripts = Vec::new();
    for dir in [".ci", "bench", "tests/java-base"] {
        for entry in std::fs::read_dir(repo().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() && path.extension().is_none_or(|e| e == "sh") {
                scripts.push(path.to_str().unwrap().to_string());
            }
        }
    }
    assert!(scripts.len() >= 10, "{scripts:?}");
    shellcheck(&["--severity=warning"], &scripts);
}

#[test]
fn vagrantfile_is_valid_ruby_and_shares_no_folder() {
    let out = tool_output("ruby", &["-c", "Vagrantfile"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Syntax OK");
    let text = std::fs::read_to_string(repo().join("Vagrantfile")).unwrap();
    assert!(text.contains(r#"config.vm.synced_folder ".", "/vagrant", disabled: true"#));
    assert!(text.contains(r#"path: "provision/#{script}.sh""#));
    for provider in ["virtualbox", "vmware_desktop", "parallels", "libvirt"] {
        assert!(
            text.contains(&format!("config.vm.provider \"{provider}\" do")),
            "no block for {provider}"
        );
    }
    assert!(text.contains(r#"ENV.fetch("N10N_PROVIDER", "virtualbox")"#));
}

#[test]
fn lima_yaml_has_what_n10n_dev_relies_on() {
    let text = std::fs::read_to_string(repo().join("lima.yaml")).unwrap();
    let doc = &YamlLoader::load_from_str(&text).unwrap()[0];
    assert_eq!(doc["minimumLimaVersion"].as_str(), Some("2.0.0"));
    let arches: Vec<&str> = doc["images"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|i| i["arch"].as_str().unwrap())
        .collect();
    assert_eq!(arches, ["aarch64", "x86_64"]);
    for image in doc["images"].as_vec().unwrap() {
        let location = image["location"].as_str().unwrap();
        assert!(
            location.starts_with("https://cloud.debian.org/images/cloud/trixie/")
                && location.contains("/debian-13-genericcloud-"),
            "a Debian 13 genericcloud image: {location}"
        );
        let digest = image["digest"].as_str().unwrap_or_default();
        assert!(
            digest.strip_prefix("sha512:").map(str::len) == Some(128),
            "{location} is pinned by its SHA-512: {digest:?}"
        );
    }
    assert_eq!(
        doc["mounts"].as_vec().map(Vec::len),
        Some(0),
        "the project is synced, not mounted"
    );
    assert_eq!(doc["containerd"]["system"].as_bool(), Some(false));
    assert_eq!(doc["containerd"]["user"].as_bool(), Some(false));
    assert_eq!(doc["ssh"]["overVsock"].as_bool(), Some(false));
    assert_eq!(
        doc["vmOpts"]["vz"]["rosetta"]["enabled"].as_bool(),
        Some(true)
    );
    for key in ["cpus", "memory", "disk"] {
        assert!(!matches!(doc[key], Yaml::BadValue), "{key} missing");
    }
    let files: Vec<&str> = doc["provision"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|p| p["file"].as_str())
        .collect();
    assert_eq!(files, ["provision/docker.sh"]);
    assert!(files.iter().all(|f| repo().join(f).is_file()));
    let forward = &doc["portForwards"][0];
    assert_eq!(
        forward["guestSocket"].as_str(),
        Some("/var/run/docker.sock")
    );
    assert_eq!(
        forward["hostSocket"].as_str(),
        Some("{{.Dir}}/sock/docker.sock")
    );
    // n10n-dev's forwarder owns every TCP port; Lima's own would race it for the host port.
    let rest = &doc["portForwards"][1];
    assert_eq!(rest["guestIP"].as_str(), Some("0.0.0.0"));
    // Without it, Lima matches listeners on 0.0.0.0 alone and still forwards 127.0.0.1's.
    assert_eq!(rest["guestIPMustBeZero"].as_bool(), Some(false));
    assert_eq!(rest["proto"].as_str(), Some("any"));
    assert_eq!(rest["ignore"].as_bool(), Some(true));
    assert!(rest["guestPort"].is_badvalue() && rest["guestPortRange"].is_badvalue());
}

/// Issue 29 item 14: what a release and CI run is pinned. Every action by its commit (a tag can
/// be moved to other code), the release's tag checked before it becomes file names and Ruby, no
/// permission a job does not declare, and no installer piped into a shell.
#[test]
fn the_release_and_ci_run_only_pinned_code() {
    let workflows = repo().join(".github/workflows");
    for entry in std::fs::read_dir(&workflows).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text
            .lines()
            .filter(|l| l.trim_start().starts_with("- uses:"))
        {
            let pinned = line
                .split_once('@')
                .map(|(_, rest)| rest.split_whitespace().next().unwrap_or_default())
                .is_some_and(|r| r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit()));
            assert!(pinned, "{}: {line}", path.display());
        }
        let piped = text.contains("| sh ") || text.contains("| sh\n") || text.contains("| bash");
        assert!(!piped, "{}: an installer piped to a shell", path.display());
    }
    let release = std::fs::read_to_string(workflows.join("release.yml")).unwrap();
    assert!(
        release.contains("permissions: {}"),
        "no default permissions"
    );
    let checked = release
        .find(r"^v[0-9]+\.[0-9]+\.[0-9]+$")
        .expect("the tag is checked");
    assert!(
        checked < release.find("sed -e").unwrap(),
        "checked before sed writes the formula"
    );
    assert!(release.contains("actions/attest-build-provenance@"));
    let rust = std::fs::read_to_string(repo().join("provision/rust.sh")).unwrap();
    assert!(
        !rust.contains("| sh ") && rust.contains("sha256sum -c"),
        "rust.sh checks rustup-init"
    );
}
