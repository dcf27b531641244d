//! `check-base` against Debian's docker-registry on 127.0.0.1 (open, htpasswd and token auth),
//! with base images (single-platform and multi-platform indexes) and derived images pushed by
//! the real Docker engine, and local images read through the native and ssh backends.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::harness::*;
use crate::registry::*;

/// `21.YYYY.MM.DD.HH` for a base created at `created` (RFC 3339), as AWS tags its bases.
fn dated(created: &str, suffix: &str) -> String {
    let digits: Vec<&str> = created[..13].split(['-', 'T']).collect();
    format!("21.{}{suffix}", digits.join("."))
}

fn check_base(dir: &Path, docker_config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("check-base")
        .args(args)
        .current_dir(dir)
        .env("N10N_DEV_HOME", dir.join(".state"))
        .env("DOCKER_CONFIG", docker_config)
        .env_remove("N10N_DEV_BACKEND")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Push a two-platform base released at `created` as `java:21`, its dated tag and the dated
/// arch tags; the index digest and the amd64 image's digest.
fn release_base(registry: &Registry, java: &str, created: &str, content: &str) -> (String, String) {
    let amd64 = format!("{java}:{}", dated(created, "-x86_64"));
    let arm64 = format!("{java}:{}", dated(created, "-arm64"));
    let amd64_digest = registry.push(
        &amd64,
        &TestImage::new(&format!("{content} amd64"), created),
    );
    registry.push(
        &arm64,
        &TestImage::new(&format!("{content} arm64"), created).arch("arm64"),
    );
    let index = registry.push_index(&format!("{java}:{}", dated(created, "")), &[&amd64, &arm64]);
    assert_eq!(
        registry.push_index(&format!("{java}:21"), &[&amd64, &arm64]),
        index
    );
    (index, amd64_digest)
}

/// A base two days old at `repository:latest`, and `worker:1` built on it, labelled.
fn base_and_worker(registry: &Registry, repository: &str) -> String {
    let base = format!("{}/{repository}", registry.host);
    let digest = registry.push(
        &format!("{base}:latest"),
        &TestImage::new("b", &days_ago(2)),
    );
    let worker = format!("{}/worker:1", registry.host);
    registry.push(
        &worker,
        &TestImage::new("app", &days_ago(0)).label("sdkBaseVersion", &format!("{base}@{digest}")),
    );
    worker
}

#[test]
fn a_newer_published_base_is_stale_and_update_moves_the_pins() {
    let registry = Registry::start(Auth::Open);
    let java = format!("{}/lambda/java", registry.host);
    let old = days_ago(3);
    let (old_index, old_amd64) = release_base(&registry, &java, &old, "v1");
    let worker = format!("{}/worker:1", registry.host);
    let image =
        TestImage::new("app", &days_ago(0)).label("sdkBaseVersion", &format!("{java}@{old_index}"));
    registry.push(&worker, &image);
    let project = tempfile::tempdir().unwrap();
    std::fs::write(
        project.path().join("n10n-dev.toml"),
        format!("[base]\nimage = \"{java}:21\"\n"),
    )
    .unwrap();
    let config = registry.docker_config();

    let out = check_base(project.path(), &config, &[&worker]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let report = stdout(&out);
    assert!(report.contains("verdict:  current"), "{report}");
    assert!(
        report.contains(&format!("tag {}", dated(&old, ""))),
        "{report}"
    );
    assert!(report.contains("3 days ago"), "{report}");

    // A label may hold the digest of the platform's image rather than the index.
    let by_platform = format!("{}/worker:2", registry.host);
    let image = TestImage::new("app2", &days_ago(0))
        .label("sdkBaseVersion", &format!("{java}@{old_amd64}"));
    registry.push(&by_platform, &image);
    let out = check_base(project.path(), &config, &[&by_platform]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));

    let new = days_ago(1);
    let (new_index, _) = release_base(&registry, &java, &new, "v2");
    let out = check_base(project.path(), &config, &[&worker]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains(&format!("stale: {java}:21 points to a newer base")),
        "{}",
        stdout(&out)
    );

    let out = check_base(project.path(), &config, &[&worker, "--json"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let facts: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(facts["stale"], true);
    assert_eq!(facts["newer_published"], true);
    assert_eq!(facts["too_old"], false);
    assert_eq!(facts["base"]["digest"], old_index.as_str());
    assert_eq!(facts["base"]["dated_tag"], dated(&old, "").as_str());
    assert_eq!(facts["base"]["age_days"], 3);
    assert_eq!(facts["current"]["digest"], new_index.as_str());
    assert_eq!(facts["current"]["dated_tag"], dated(&new, "").as_str());
    assert_eq!(facts["current"]["created"], new.as_str());

    // --update: the pins move, and nothing else in the files does.
    let dockerfile =
        format!("# the Lambda base\nFROM {java}:21@{old_index} AS base\nCOPY app /app\n");
    let sbt = format!("lazy val latestVersionOfLambdaSDK = \"{java}@{old_index}\" // pinned\n");
    std::fs::write(project.path().join("Dockerfile"), &dockerfile).unwrap();
    std::fs::write(project.path().join("build.sbt"), &sbt).unwrap();
    let out = check_base(project.path(), &config, &["--update"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let read = |name: &str| std::fs::read_to_string(project.path().join(name)).unwrap();
    assert_eq!(
        read("Dockerfile"),
        dockerfile.replace(&old_index, &new_index)
    );
    assert_eq!(read("build.sbt"), sbt.replace(&old_index, &new_index));
    let diff = stdout(&out);
    assert!(
        diff.contains("--- a/Dockerfile\n+++ b/Dockerfile\n@@ -2 +2 @@\n"),
        "{diff}"
    );
    assert!(
        diff.contains(&format!("+FROM {java}:21@{new_index} AS base")),
        "{diff}"
    );
    let out = check_base(project.path(), &config, &["--update"]);
    assert_exit_saying(&out, 1, "already at the newest digest");
}

#[test]
fn too_old_no_label_unknown_image_and_registry_down() {
    let registry = Registry::start(Auth::Open);
    let base = format!("{}/base", registry.host);
    let digest = registry.push(
        &format!("{base}:latest"),
        &TestImage::new("old", "2020-01-01T00:00:00Z"),
    );
    let worker = format!("{}/worker:old", registry.host);
    registry.push(
        &worker,
        &TestImage::new("app", &days_ago(0)).label("sdkBaseVersion", &format!("{base}@{digest}")),
    );
    let unlabelled = format!("{}/worker:plain", registry.host);
    registry.push(&unlabelled, &TestImage::new("plain", &days_ago(0)));
    let dir = tempfile::tempdir().unwrap();
    let config = registry.docker_config();

    let out = check_base(dir.path(), &config, &[&worker]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("stale: the base is the newest, but older than 30 days"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("created 2020-01-01"),
        "{}",
        stdout(&out)
    );
    let out = check_base(dir.path(), &config, &[&worker, "--max-age", "100000"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));

    let out = check_base(dir.path(), &config, &[&unlabelled]);
    assert_exit_saying(&out, 3, "has no label sdkBaseVersion");
    let out = check_base(
        dir.path(),
        &config,
        &[&format!("{}/absent:1", registry.host)],
    );
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    let out = check_base(dir.path(), &config, &[&worker, "--max-age", "soon"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));

    drop(registry);
    let out = check_base(dir.path(), &config, &[&worker]);
    assert_exit_saying(&out, 3, "cannot reach the registry");
}

#[test]
fn basic_auth_credentials_come_from_the_docker_config() {
    let registry = Registry::start(Auth::Basic("n10n", "s3cret:+/pass"));
    registry.login("n10n", "s3cret:+/pass");
    let worker = base_and_worker(&registry, "base");
    let dir = tempfile::tempdir().unwrap();

    let out = check_base(dir.path(), &registry.docker_config(), &[&worker]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));

    let none = tempfile::tempdir().unwrap();
    let out = check_base(dir.path(), none.path(), &[&worker]);
    assert_exit_saying(&out, 3, &format!("run `docker login {}`", registry.host));

    let wrong = tempfile::tempdir().unwrap();
    std::fs::write(
        wrong.path().join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"bjEwbjp3cm9uZw=="}}}}}}"#,
            registry.host
        ),
    )
    .unwrap();
    let out = check_base(dir.path(), wrong.path(), &[&worker]);
    assert_exit_saying(&out, 3, "refused the credentials of `n10n`");
}

#[test]
fn the_bearer_challenge_is_answered_with_an_anonymous_token() {
    let registry = Registry::start(Auth::Token("pusher", "p"));
    registry.login("pusher", "p");
    let worker = base_and_worker(&registry, "lambda/java");
    let anonymous = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = check_base(dir.path(), anonymous.path(), &[&worker]);
    assert_eq!(
        code(&out),
        0,
        "{}{}\n{}",
        stdout(&out),
        stderr(&out),
        registry.log()
    );
    assert!(
        stdout(&out).contains("verdict:  current"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_local_image_is_read_from_the_build_machine() {
    let registry = Registry::start(Auth::Open);
    let base = format!("{}/base", registry.host);
    let digest = registry.push(
        &format!("{base}:latest"),
        &TestImage::new("b", &days_ago(2)),
    );
    // Native: what build-image built last is the default.
    let dir = tempfile::tempdir().unwrap();
    let name = format!("n10n-test-{}-checkbase", std::process::id());
    std::fs::write(
        dir.path().join("n10n-dev.toml"),
        format!("[vm]\nbackend = \"native\"\n[image]\nname = \"{name}\"\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM scratch\nCOPY n10n-dev.toml /x\nLABEL sdkBaseVersion={base}@{digest}\n"),
    )
    .unwrap();
    let built = Command::new(BIN)
        .arg("build-image")
        .current_dir(dir.path())
        .env("N10N_DEV_HOME", dir.path().join(".state"))
        .env_remove("BUILD_NUMBER")
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", stderr(&built));
    let out = check_base(dir.path(), &registry.docker_config(), &[]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains(&format!("image:    {name}:dev (label sdkBaseVersion)")),
        "{}",
        stdout(&out)
    );

    // ssh: the engine of the machine behind the loopback sshd.
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let out = project
        .cmd(&["check-base", &format!("{name}:dev")])
        .env("DOCKER_CONFIG", registry.docker_config())
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let out = project
        .cmd(&["check-base", "n10n-absent:1"])
        .output()
        .unwrap();
    assert_exit_saying(&out, 3, "there is no image n10n-absent:1");
    let _ = Command::new("docker")
        .args(["image", "rm", "-f", &format!("{name}:dev")])
        .output();
}
