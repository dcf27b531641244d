//! Registry fixtures: Debian's docker-registry (the CNCF distribution registry) on 127.0.0.1
//! with a temp config, open, behind htpasswd, or behind token auth with a token service of the
//! test's own; and images made for it with the real Docker engine (`docker load` of an image
//! written here, so its config, `created` included, is exactly what the test says), pushed with
//! the real CLI under a private DOCKER_CONFIG.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::harness::*;

pub enum Auth {
    Open,
    /// htpasswd basic auth with this user and password.
    Basic(&'static str, &'static str),
    /// Bearer tokens from tests/integration/token_server.py; anonymous pulls allowed, pushes
    /// need this user and password.
    Token(&'static str, &'static str),
}

pub struct Registry {
    pub host: String,
    dir: TempDir,
    child: Child,
    token_server: Option<Child>,
}

impl Registry {
    pub fn start(auth: Auth) -> Registry {
        require_docker();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut token_server = None;
        let auth_config = match auth {
            Auth::Open => String::new(),
            Auth::Basic(user, password) => {
                let htpasswd = dir.path().join("htpasswd");
                run_ok(
                    "htpasswd",
                    &["-Bbc", htpasswd.to_str().unwrap(), user, password],
                );
                format!(
                    "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                    htpasswd.display()
                )
            }
            Auth::Token(user, password) => {
                let (child, realm, cert) = start_token_server(dir.path(), user, password);
                token_server = Some(child);
                format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: n10n-test\n    issuer: n10n-test\n    rootcertbundle: {}\n",
                    cert.display()
                )
            }
        };
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n{auth_config}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .args(["serve", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .expect("docker-registry (Debian package; .ci/run installs it)");
        wait_for("the registry to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Registry {
            host: format!("127.0.0.1:{port}"),
            dir,
            child,
            token_server,
        }
    }

    /// A Docker config dir of this registry's own, for the docker CLI and for n10n-dev.
    pub fn docker_config(&self) -> PathBuf {
        let dir = self.dir.path().join("docker-config");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        let out = Command::new("docker")
            .args(args)
            .env("DOCKER_CONFIG", self.docker_config())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker {args:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        out
    }

    pub fn login(&self, user: &str, password: &str) {
        let mut child = Command::new("docker")
            .args(["login", "-u", user, "--password-stdin", &self.host])
            .env("DOCKER_CONFIG", self.docker_config())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(password.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "docker login: {}", stderr(&out));
    }

    /// Load `image` into the engine as `reference` and push it; its manifest digest.
    pub fn push(&self, reference: &str, image: &TestImage) -> String {
        image.load(reference);
        let out = self.docker(&["push", reference]);
        digest_in(&stdout(&out)).unwrap_or_else(|| panic!("no digest in {}", stdout(&out)))
    }

    /// Push an index of `images` (each pushed already) as `reference`; its digest.
    pub fn push_index(&self, reference: &str, images: &[&str]) -> String {
        let mut args = vec!["manifest", "create", "--insecure", "--amend", reference];
        args.extend(images);
        self.docker(&args);
        let out = self.docker(&["manifest", "push", "--insecure", "--purge", reference]);
        digest_in(&stdout(&out)).unwrap_or_else(|| panic!("no digest in {}", stdout(&out)))
    }

    /// This registry behind tests/integration/ecr_like_proxy.py, which, as ECR does, refuses
    /// repositories not in `known`; the proxy's `host:port`, and the process to kill.
    pub fn behind_ecr_like_proxy(&self, known: &[&str]) -> (String, KillOnDrop) {
        let port = free_port();
        let upstream = self.host.rsplit_once(':').unwrap().1;
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/integration/ecr_like_proxy.py"
        );
        let child = Command::new("python3")
            .arg(script)
            .args([&port.to_string(), upstream])
            .args(known)
            .spawn()
            .unwrap();
        wait_for("the proxy to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        (format!("127.0.0.1:{port}"), KillOnDrop(child))
    }

    /// The files the registry keeps, for tests that watch a push arrive.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // The engine keeps what the test loaded and pushed under this registry's name.
        let listed = Command::new("docker")
            .args(["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"])
            .output();
        let ours: Vec<String> = listed
            .map(|out| stdout(&out))
            .unwrap_or_default()
            .lines()
            .filter(|name| name.starts_with(&format!("{}/", self.host)))
            .map(str::to_string)
            .collect();
        if !ours.is_empty() {
            let _ = Command::new("docker")
                .args(["image", "rm", "-f"])
                .args(&ours)
                .output();
        }
        for child in std::iter::once(&mut self.child).chain(self.token_server.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn digest_in(text: &str) -> Option<String> {
    let at = text.find("sha256:")?;
    let digest = text.get(at..at + 71)?;
    Some(digest.to_string())
}

/// A token service for the registry's `auth: token`: a self-signed certificate the registry
/// trusts, and tests/integration/token_server.py signing RS256 tokens with its key.
fn start_token_server(dir: &Path, user: &str, password: &str) -> (Child, String, PathBuf) {
    let (key, cert) = (dir.join("token.key"), dir.join("token.crt"));
    run_ok(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=n10n-test",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
    );
    let port = free_port();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/integration/token_server.py"
    );
    let child = Command::new("python3")
        .args([
            script,
            &port.to_string(),
            key.to_str().unwrap(),
            cert.to_str().unwrap(),
            user,
            password,
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("token.log")).unwrap())
        .spawn()
        .unwrap();
    wait_for(
        "the token service to listen",
        Duration::from_secs(20),
        || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
    );
    (child, format!("http://127.0.0.1:{port}/token"), cert)
}

/// An image written by hand in `docker save` form: one layer with `file`, and a config with
/// this architecture, `created` time and labels.
pub struct TestImage {
    pub file: Vec<u8>,
    pub architecture: &'static str,
    pub created: String,
    pub labels: Vec<(String, String)>,
}

impl TestImage {
    pub fn new(file: &str, created: &str) -> TestImage {
        TestImage {
            file: file.as_bytes().to_vec(),
            architecture: "amd64",
            created: created.to_string(),
            labels: Vec::new(),
        }
    }

    /// An image whose layer is `bytes` of noise (gzip cannot shrink it).
    pub fn noise(bytes: usize, created: &str) -> TestImage {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15 ^ std::process::id() as u64;
        let file = (0..bytes)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        TestImage {
            file,
            ..TestImage::new("", created)
        }
    }

    pub fn arch(mut self, architecture: &'static str) -> TestImage {
        self.architecture = architecture;
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> TestImage {
        self.labels.push((key.to_string(), value.to_string()));
        self
    }

    pub fn load(&self, reference: &str) {
        let layer = tar_of(&[("content", &self.file)]);
        let diff_id = sha256(&layer);
        let labels: serde_json::Map<String, serde_json::Value> = self
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        let config = serde_json::json!({
            "architecture": self.architecture,
            "os": "linux",
            "created": self.created,
            "config": {"Labels": labels, "Cmd": ["/content"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        })
        .to_string();
        let config_name = format!("{}.json", &sha256(config.as_bytes())[7..]);
        let manifest = serde_json::json!([
            {"Config": config_name, "RepoTags": [reference], "Layers": ["layer.tar"]}
        ])
        .to_string();
        let archive = tar_of(&[
            ("layer.tar", &layer),
            (&config_name, config.as_bytes()),
            ("manifest.json", manifest.as_bytes()),
        ]);
        let mut child = Command::new("docker")
            .arg("load")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&archive).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "docker load: {}", stderr(&out));
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, contents) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o755);
        header.set_mtime(0);
        builder.append_data(&mut header, name, *contents).unwrap();
    }
    builder.into_inner().unwrap()
}

/// An RFC 3339 time `days` before now.
pub fn days_ago(days: u64) -> String {
    let out = run_ok(
        "date",
        &[
            "-u",
            "-d",
            &format!("{days} days ago"),
            "+%Y-%m-%dT%H:%M:%SZ",
        ],
    );
    stdout(&out).trim().to_string()
}
