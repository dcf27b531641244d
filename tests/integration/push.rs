//! `push` through the loopback sshd to the real dockerd, into Debian's docker-registry on
//! 127.0.0.1: credentials from a Docker config, from a credential helper on PATH, and from the
//! real AWS CLI against moto's ECR API; and the promise that no credential lands on disk.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;
use crate::registry::*;

/// A project on the ssh backend with `[push] repository = "<host>/team/worker"` and an image
/// `n10n-test-<pid>-<name>:dev` in the engine.
struct PushProject {
    project: Project,
    image: String,
    repository: String,
    docker_config: PathBuf,
    _sshd: Sshd,
}

impl PushProject {
    fn new(registry: &Registry, name: &str, image: TestImage, extra: &str) -> PushProject {
        let sshd = Sshd::start();
        let repository = format!("{}/team/worker", registry.host);
        let project = Project::with_config(
            &sshd,
            &format!("[push]\nrepository = \"{repository}\"\n{extra}"),
        );
        let reference = format!("n10n-test-{}-{name}:dev", std::process::id());
        // A label of its own gives each test's image its own id: the tests run side by side,
        // and one's `image rm -f` of a shared id raced another's `docker load` of it.
        image.label("n10n.test", &reference).load(&reference);
        PushProject {
            project,
            image: reference,
            repository,
            docker_config: registry.docker_config(),
            _sshd: sshd,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.project.cmd(&["push", &self.image]);
        cmd.args(args)
            .env("DOCKER_CONFIG", &self.docker_config)
            .env_remove("BUILD_NUMBER");
        cmd
    }

    fn push(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
}

impl Drop for PushProject {
    /// The image goes with every tag `push` gave it (`<registry>/<repository>:<tag>`): by id.
    fn drop(&mut self) {
        let id = Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}", &self.image])
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .unwrap_or_default();
        let target = if id.is_empty() { &self.image } else { &id };
        let _ = Command::new("docker")
            .args(["image", "rm", "-f", target])
            .output();
    }
}

/// The digest the registry holds for `repository:tag` (as a client asking for a v2 manifest).
fn registry_digest(
    registry: &Registry,
    repository: &str,
    tag: &str,
    user: &str,
    password: &str,
) -> Option<String> {
    let path = repository.split_once('/').unwrap().1;
    let out = Command::new("curl")
        .args(["-fsS", "-I", "-u", &format!("{user}:{password}")])
        .args([
            "-H",
            "Accept: application/vnd.docker.distribution.manifest.v2+json",
        ])
        .arg(format!(
            "http://{}/v2/{path}/manifests/{tag}",
            registry.host
        ))
        .output()
        .unwrap();
    stdout(&out).lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("docker-content-digest: ")
            .map(|d| d.trim().to_string())
    })
}

#[test]
fn two_tags_go_up_with_the_docker_config_s_credentials() {
    let registry = Registry::start(Auth::Basic("n10n", "s3cret:+/pass"));
    registry.login("n10n", "s3cret:+/pass");
    let p = PushProject::new(
        &registry,
        "two-tags",
        TestImage::new("app", &days_ago(0)),
        "",
    );

    let out = p.push(&["--tag", "7", "--tag", "7-extra"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out).trim().to_string();
    let digest = printed
        .strip_prefix(&format!("{}@", p.repository))
        .unwrap_or_else(|| panic!("not REPO@digest: {printed}"));
    for tag in ["7", "7-extra"] {
        assert_eq!(
            registry_digest(&registry, &p.repository, tag, "n10n", "s3cret:+/pass").as_deref(),
            Some(digest),
            "{tag}"
        );
        assert!(
            stderr(&out).contains(&format!("push: {}:{tag}: ", p.repository)),
            "{}",
            stderr(&out)
        );
    }

    // $BUILD_NUMBER is the tag when none is given; --json tells the facts.
    let out = p
        .cmd(&["--json"])
        .env("BUILD_NUMBER", "99")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let facts: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(facts["tags"], serde_json::json!(["99"]));
    assert_eq!(facts["digest"], digest);
    assert_eq!(
        facts["media_type"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert!(facts["size"].as_u64().unwrap() > 0, "{facts}");

    let out = p.push(&["--to", "worker"]);
    assert_exit_saying(&out, 2, "names no registry host");
}

#[test]
fn wrong_password_missing_repository_and_registry_down_say_what_next() {
    let registry = Registry::start(Auth::Basic("n10n", "right"));
    // What an expired login leaves behind: an auths entry the registry no longer accepts.
    std::fs::write(
        registry.docker_config().join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"bjEwbjp3cm9uZw=="}}}}}}"#,
            registry.host
        ),
    )
    .unwrap();
    let p = PushProject::new(&registry, "errors", TestImage::new("app", &days_ago(0)), "");
    let out = p.push(&["--tag", "1"]);
    assert_exit_saying(&out, 1, "check the credentials for");

    let open = Registry::start(Auth::Open);
    let (proxy, _proxy) = open.behind_ecr_like_proxy(&["team/known"]);
    let out = p.push(&["--to", &format!("{proxy}/team/missing"), "--tag", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("create the repository"),
        "{}",
        stderr(&out)
    );
    let out = p.push(&["--to", &format!("{proxy}/team/known"), "--tag", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let host = open.host.clone();
    drop(open);
    let out = p.push(&["--to", &format!("{host}/team/known"), "--tag", "1"]);
    assert_exit_saying(&out, 1, &format!("cannot reach {host}"));
}

#[test]
fn a_push_cut_off_midway_can_be_run_again() {
    let registry = Registry::start(Auth::Open);
    let p = PushProject::new(
        &registry,
        "cut",
        TestImage::noise(64 << 20, &days_ago(0)),
        "",
    );
    let mut child = p
        .cmd(&["--tag", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let uploads = registry
        .data_dir()
        .join("docker/registry/v2/repositories/team/worker/_uploads");
    wait_for("the layer upload to start", Duration::from_secs(60), || {
        std::fs::read_dir(&uploads).ok()?.next().map(drop)
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the push finished before it could be cut off"
    );
    assert_eq!(registry_digest(&registry, &p.repository, "1", "", ""), None);

    let out = p.push(&["--tag", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let digest = stdout(&out).trim().rsplit_once('@').unwrap().1.to_string();
    assert_eq!(
        registry_digest(&registry, &p.repository, "1", "", "").as_deref(),
        Some(digest.as_str())
    );
}

/// A credential helper on PATH that hands out the secret from its environment.
fn credential_helper(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-n10ntest");
    std::fs::write(
        &helper,
        "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread -r server\n\
         printf '{\"ServerURL\":\"%s\",\"Username\":\"n10n\",\"Secret\":\"%s\"}' \"$server\" \"$N10N_TEST_SECRET\"\n",
    )
    .unwrap();
    run_ok("chmod", &["755", helper.to_str().unwrap()]);
    bin
}

#[test]
fn a_credential_helper_s_secret_is_never_written_on_the_build_machine() {
    let secret = format!(
        "n10n-{}-{:x}",
        std::process::id(),
        std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos()
    );
    let registry = Registry::start(Auth::Basic(
        "n10n",
        Box::leak(secret.clone().into_boxed_str()),
    ));
    std::fs::write(
        registry.docker_config().join("config.json"),
        format!(r#"{{"credHelpers":{{"{}":"n10ntest"}}}}"#, registry.host),
    )
    .unwrap();
    let bin = credential_helper(registry.docker_config().parent().unwrap());
    let p = PushProject::new(&registry, "nodisk", TestImage::new("app", &days_ago(0)), "");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = p
        .cmd(&["--tag", "1"])
        .env("PATH", &path)
        .env("N10N_TEST_SECRET", &secret)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(registry_digest(&registry, &p.repository, "1", "n10n", &secret).is_some());

    // The build machine (this host, behind the loopback sshd) holds it nowhere: not in the
    // user's home, /tmp, /run or the engine's data (toolchain caches left out: nothing of
    // Docker's goes there, and they are gigabytes).
    use base64::Engine as _;
    let forms = [
        secret.clone(),
        base64::engine::general_purpose::STANDARD.encode(&secret),
        base64::engine::general_purpose::STANDARD.encode(format!("n10n:{secret}")),
        base64::engine::general_purpose::URL_SAFE.encode(format!("\"password\":\"{secret}\"")),
    ];
    let home = std::env::var("HOME").unwrap();
    let mut grep = Command::new("grep");
    grep.args([
        "-rlsF",
        "--exclude-dir=.rustup",
        "--exclude-dir=.cargo",
        "--exclude-dir=.cache",
        "--exclude-dir=.pyenv",
        "--exclude-dir=target",
    ]);
    for form in &forms {
        grep.args(["-e", form]);
    }
    let found = grep
        .args([&home, "/tmp", "/run", "/var/lib/docker"])
        .output()
        .unwrap();
    assert_eq!(stdout(&found), "", "the secret is on disk");
}

#[test]
fn ecr_tokens_come_from_the_aws_cli() {
    let moto_port = free_port();
    let moto = KillOnDrop(
        Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &moto_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server (PyPI moto[server]; .ci/run installs it)"),
    );
    wait_for("moto to listen", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", moto_port)).ok()
    });
    // moto's GetAuthorizationToken answers AWS:<account>-auth-token.
    let registry = Registry::start(Auth::Basic("AWS", "123456789012-auth-token"));
    let p = PushProject::new(
        &registry,
        "ecr",
        TestImage::new("app", &days_ago(0)),
        "auth = \"ecr\"\nregion = \"eu-west-1\"\n",
    );
    let aws_home = tempfile::tempdir().unwrap();
    let with_aws = |cmd: &mut Command| {
        cmd.env(
            "AWS_ENDPOINT_URL_ECR",
            format!("http://127.0.0.1:{moto_port}"),
        )
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_CONFIG_FILE", aws_home.path().join("config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            aws_home.path().join("credentials"),
        );
    };
    // The registry is on 127.0.0.1, not named like ECR: the token goes there only when the
    // user says so on the command line.
    let mut cmd = p.cmd(&["--tag", "42"]);
    with_aws(&mut cmd);
    let out = cmd.output().unwrap();
    assert_exit_saying(&out, 2, "is not an ECR registry's name");
    assert!(
        stderr(&out).contains("--send-ecr-token"),
        "{}",
        stderr(&out)
    );
    let mut cmd = p.cmd(&["--tag", "42", "--send-ecr-token"]);
    with_aws(&mut cmd);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        registry_digest(
            &registry,
            &p.repository,
            "42",
            "AWS",
            "123456789012-auth-token"
        )
        .is_some()
    );

    // Or the user's own config names the host once for all.
    let user_config = p.project.user_config();
    let mut text = std::fs::read_to_string(&user_config).unwrap();
    text.push_str(&format!("[push]\necr_hosts = [\"{}\"]\n", registry.host));
    std::fs::write(&user_config, text).unwrap();
    let mut cmd = p.cmd(&["--tag", "44"]);
    with_aws(&mut cmd);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // No AWS credentials at all: the CLI's own complaint, and the next step.
    let mut cmd = p.cmd(&["--tag", "43", "--send-ecr-token"]);
    with_aws(&mut cmd);
    let out = cmd
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("aws sso login"), "{}", stderr(&out));
    drop(moto);
}

/// A host that starts like an ECR registry's name and goes on (`….amazonaws.com.evil.example`)
/// is not ECR: no token is asked of the AWS CLI for it, with `[push] auth` left to recognise ECR
/// or set to "ecr". Harmless if the defect came back: the AWS CLI is a stand-in, and the image
/// does not exist, so the push ends before anything would be sent anywhere.
#[test]
fn a_look_alike_of_an_ecr_host_gets_no_token() {
    let sshd = Sshd::start();
    let look_alike = "123456789012.dkr.ecr.eu-west-1.amazonaws.com.evil.example/team/app";
    let stand_in = tempfile::tempdir().unwrap();
    let asked = stand_in.path().join("asked");
    std::fs::write(
        stand_in.path().join("aws"),
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\necho stand-in-token\n",
            asked.display()
        ),
    )
    .unwrap();
    run_ok(
        "chmod",
        &["+x", stand_in.path().join("aws").to_str().unwrap()],
    );
    let path = format!(
        "{}:{}",
        stand_in.path().display(),
        std::env::var("PATH").unwrap()
    );
    let missing = format!("n10n-test-{}-never-built:1", std::process::id());
    for (auth, code) in [("", 1), ("auth = \"ecr\"\n", 2)] {
        let project = Project::with_config(&sshd, &format!("[push]\n{auth}"));
        let out = project
            .cmd(&["push", &missing, "--to", look_alike])
            .env("PATH", &path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{auth:?}: {}", stderr(&out));
        assert!(
            !asked.exists(),
            "{auth:?}: the AWS CLI was asked for a token for {look_alike}: {}",
            std::fs::read_to_string(&asked).unwrap_or_default()
        );
    }
}
