//! `build-image` against the real Docker engine (started by .ci/run): the native backend, and
//! the ssh backend on the loopback sshd whose host runs the same engine. Images are FROM scratch
//! with Debian's static busybox, so nothing is pulled.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::harness::*;

fn unique(name: &str) -> String {
    format!("n10n-test-{}-{name}", std::process::id())
}

/// A Dockerfile project: FROM scratch, busybox, a base label.
fn dockerfile_project(dir: &Path, broken: bool) {
    std::fs::copy("/bin/busybox", dir.join("busybox"))
        .expect("busybox-static (.ci/run installs it)");
    let copy = if broken { "COPY missing-file /x\n" } else { "" };
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            // A label of its own first: no layer is shared with another test's image, which
            // could be removed with that image while this build uses it from the cache.
            "FROM scratch\nLABEL n10n.test.project=\"{}\"\nCOPY busybox /busybox\n{copy}\
             LABEL sdkBaseVersion=public.ecr.aws/lambda/java@sha256:0123\n\
             CMD [\"/busybox\", \"echo\", \"hello\"]\n",
            dir.display()
        ),
    )
    .unwrap();
}

fn native(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("N10N_DEV_HOME", dir.join(".state"))
        .env_remove("N10N_DEV_BACKEND")
        .env_remove("BUILD_NUMBER")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn remove_image(reference: &str) {
    let _ = Command::new("docker")
        .args(["image", "rm", "-f", reference])
        .output();
}

#[test]
fn native_dockerfile_build_is_described_and_tags_follow_precedence() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("native");
    std::fs::write(
        dir.path().join("n10n-dev.toml"),
        format!("[vm]\nbackend = \"native\"\n[image]\nname = \"{name}\"\n"),
    )
    .unwrap();
    dockerfile_project(dir.path(), false);
    let out = native(dir.path(), &["build-image"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = stdout(&out);
    assert!(
        summary.contains(&format!("image:    {name}:dev\n")),
        "{summary}"
    );
    assert!(summary.contains("platform: linux/amd64\n"), "{summary}");
    assert!(
        summary.contains("base:     public.ecr.aws/lambda/java@sha256:0123 (sdkBaseVersion)\n"),
        "{summary}"
    );
    assert!(summary.contains("size:     1.9 MiB\n"), "{summary}");

    let out = native(dir.path(), &["build-image"], &[("BUILD_NUMBER", "77")]);
    assert!(
        stdout(&out).contains(&format!("image:    {name}:77\n")),
        "{}",
        stdout(&out)
    );
    let out = native(
        dir.path(),
        &["build-image", "--tag", "manual"],
        &[("BUILD_NUMBER", "77")],
    );
    assert!(
        stdout(&out).contains(&format!("image:    {name}:manual\n")),
        "{}",
        stdout(&out)
    );
    for tag in ["dev", "77", "manual"] {
        remove_image(&format!("{name}:{tag}"));
    }
}

#[test]
fn ssh_backend_builds_in_the_replica_and_saves_a_loadable_image() {
    require_docker();
    let sshd = Sshd::start();
    let name = unique("ssh");
    let project = Project::with_config(&sshd, &format!("[image]\nname = \"{name}\"\n"));
    dockerfile_project(project.root(), false);
    let saved = project.home.path().join("image.tar");
    let out = project.run(&["build-image", "--save", saved.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("image:    {name}:dev\n")),
        "{}",
        stdout(&out)
    );
    assert!(
        project.replica().join("Dockerfile").is_file(),
        "the build ran on a synced replica"
    );
    remove_image(&format!("{name}:dev"));
    let load = Command::new("docker")
        .args(["load", "-i", saved.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(load.status.success(), "{}", stderr(&load));
    assert!(
        stdout(&load).contains(&format!("{name}:dev")),
        "{}",
        stdout(&load)
    );
    let leftovers: Vec<_> = std::fs::read_dir(project.home.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial") || n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    remove_image(&format!("{name}:dev"));
}

#[test]
fn a_failing_build_exits_1_and_writes_nothing() {
    require_docker();
    let sshd = Sshd::start();
    let project = Project::with_config(
        &sshd,
        &format!("[image]\nname = \"{}\"\n", unique("broken")),
    );
    dockerfile_project(project.root(), true);
    let saved = project.home.path().join("image.tar");
    let out = project.run(&["build-image", "--save", saved.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("missing-file"),
        "the build's own output: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("the build failed"),
        "{}",
        stderr(&out)
    );
    // The command that ran, not the script that chose it.
    assert!(
        stderr(&out).contains(": docker buildx build --platform linux/amd64 -t ")
            && !stderr(&out).contains("if docker buildx version"),
        "{}",
        stderr(&out)
    );
    assert!(std::fs::read_dir(project.home.path()).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .contains("image.tar")
    }));
}

#[test]
fn a_build_command_project_is_found_by_the_image_it_made() {
    require_docker();
    let sshd = Sshd::start();
    let made = unique("sbt-like");
    // Stands in for `sbt docker:publishLocal`: it names the image itself.
    // [image] name tells its image apart from others built on the same engine meanwhile.
    let project = Project::with_config(
        &sshd,
        &format!("[image]\nbuild = \"./build.sh\"\nname = \"{made}\"\n"),
    );
    dockerfile_project(project.root(), false);
    std::fs::write(
        project.root().join("Dockerfile"),
        format!("FROM scratch\nCOPY busybox /busybox\nLABEL made-by={made}\n"),
    )
    .unwrap();
    project.write(
        "build.sh",
        &format!("#!/bin/sh\nset -e\necho building on stdout\ndocker build -t {made}:DEV .\n"),
    );
    run_ok(
        "chmod",
        &["+x", project.root().join("build.sh").to_str().unwrap()],
    );
    let out = project.run(&["build-image"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Standard output is the summary alone, for scripts; the build's own output is on stderr.
    assert!(
        stdout(&out).starts_with(&format!("image:    {made}:DEV\n")),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("building on stdout"),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains(&format!("image:    {made}:DEV\n")),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("base:     none (no sdkBaseVersion label)\n"),
        "{}",
        stdout(&out)
    );
    remove_image(&format!("{made}:DEV"));
}

#[test]
fn a_cached_rebuild_is_not_mistaken_for_another_build_on_the_same_engine() {
    require_docker();
    let sshd = Sshd::start();
    let made = unique("cached");
    let other = unique("other-build");
    let project = Project::with_config(
        &sshd,
        &format!("[image]\nbuild = \"./build.sh\"\nname = \"{made}\"\n"),
    );
    dockerfile_project(project.root(), false);
    project.write(
        "other/Dockerfile",
        "FROM scratch\nLABEL made-by=another-terminal\n",
    );
    // The project's build names its image from N10N_IMAGE, so the second run is fully cached
    // and makes no new image. Then, as a second terminal's `docker build` on the same engine
    // would, an unrelated image appears that is new each time.
    project.write(
        "build.sh",
        &format!(
            "#!/bin/sh\nset -e\ndocker build -q -t \"$N10N_IMAGE\" .\n\
             docker build -q --label run=\"$(date +%s%N)\" -t {other}:1 other\n"
        ),
    );
    run_ok(
        "chmod",
        &["+x", project.root().join("build.sh").to_str().unwrap()],
    );
    let project_image = format!("{made}:dev");
    for round in ["first", "fully cached"] {
        let out = project.run(&["build-image"]);
        assert!(out.status.success(), "{round} build: {}", stderr(&out));
        let id = run_ok(
            "docker",
            &["image", "inspect", "-f", "{{.Id}}", &project_image],
        );
        assert!(
            stdout(&out).starts_with(&format!(
                "image:    {project_image}\nid:       {}",
                stdout(&id).trim()
            )),
            "{round} build took another image:\n{}",
            stdout(&out)
        );
        assert!(!stdout(&out).contains(&other), "{}", stdout(&out));
    }
    remove_image(&project_image);
    remove_image(&format!("{other}:1"));
}

#[test]
fn nothing_to_build_is_a_usage_error() {
    let dir = project_dir("[vm]\nbackend = \"native\"\n");
    let out = native(dir.path(), &["build-image"], &[]);
    assert_exit_saying(&out, 2, "neither a Dockerfile");
}

#[test]
fn ctrl_c_stops_a_build_running_through_the_agent() {
    require_docker();
    let sshd = Sshd::start();
    let project = Project::with_config(&sshd, "[image]\nbuild = \"sleep 307\"\n");
    // The first build-image syncs and leaves the agent; the second runs its build through it.
    let mut first = project
        .cmd(&["build-image"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        "the first build to start",
        std::time::Duration::from_secs(30),
        || (!processes_matching("^sleep 307$").is_empty()).then_some(()),
    );
    run_ok("kill", &["-INT", &first.id().to_string()]);
    assert_eq!(first.wait().unwrap().code(), Some(1));
    let second = project
        .cmd(&["-v", "build-image"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        "the second build to start",
        std::time::Duration::from_secs(30),
        || (!processes_matching("^sleep 307$").is_empty()).then_some(()),
    );
    run_ok("kill", &["-INT", &second.id().to_string()]);
    let out = second.wait_with_output().unwrap();
    assert_exit_saying(&out, 1, "running through the agent");
    assert!(
        stderr(&out).contains("the build failed (exit 130)"),
        "{}",
        stderr(&out)
    );
    wait_for(
        "the remote sleep to be gone",
        std::time::Duration::from_secs(10),
        || processes_matching("^sleep 307$").is_empty().then_some(()),
    );
}
