//! `--version` names the commit the binary was built from: $N10N_COMMIT when set (a release
//! built from a tarball), else git's HEAD, else "unknown commit".

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=N10N_COMMIT");
    watch_head();
    let commit = std::env::var("N10N_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown commit".into());
    println!("cargo:rustc-env=N10N_COMMIT={commit}");
}

/// Build again when HEAD moves: the HEAD file (a checkout), the branch it names (a commit), and
/// packed-refs. Worktrees keep HEAD apart from the refs, so both directories come from git.
fn watch_head() {
    let (Some(git_dir), Some(common)) = (
        git(&["rev-parse", "--git-dir"]),
        git(&["rev-parse", "--git-common-dir"]),
    ) else {
        return;
    };
    let head = Path::new(&git_dir).join("HEAD");
    println!("cargo:rerun-if-changed={}", head.display());
    if let Some(branch) = std::fs::read_to_string(&head)
        .ok()
        .and_then(|text| text.strip_prefix("ref: ").map(|r| r.trim().to_string()))
    {
        println!(
            "cargo:rerun-if-changed={}",
            Path::new(&common).join(branch).display()
        );
    }
    let packed = Path::new(&common).join("packed-refs");
    if packed.exists() {
        println!("cargo:rerun-if-changed={}", packed.display());
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let said = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !said.is_empty()).then_some(said)
}
