//! One-way replica of the project root on the remote's own disk.
//!
//! A sync scans the local tree while one probe asks the remote whether the replica is still the
//! one we recorded (one round trip, so a no-op costs about one SSH exchange). If it is, the plan
//! is the difference from our record; if not, the probe's listing is compared instead. Changes
//! travel as one tar stream into a staging directory, and only when it has fully arrived are
//! entries renamed into place (per-file atomic). The local record is replaced only after the
//! remote confirms.

mod archive;
mod manifest;
mod plan;
mod remote;
mod rules;
mod tree;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use crate::config::Project;
use crate::digest;
use crate::error::{Error, Result};
use crate::progress::TransferBar;
use crate::ssh::Session;
use crate::state::{Lock, StateDir};
use manifest::Baseline;
use plan::{Plan, RemoteView};
use remote::ProbeResult;
use rules::Rules;

pub struct Options {
    pub dry_run: bool,
    /// Show a progress bar for transfers longer than about a second (stderr TTY only).
    pub progress: bool,
}

/// What a sync did (or, with `--dry-run`, would do).
#[derive(Debug, Default)]
pub struct Summary {
    pub files: usize,
    pub bytes: u64,
    pub deleted: usize,
    pub checked: usize,
    pub elapsed: Duration,
    pub dry_run: bool,
}

impl Summary {
    pub fn changed(&self) -> bool {
        self.files > 0 || self.deleted > 0
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        if self.dry_run {
            return write!(
                f,
                "sync (dry run): would send {} files ({}), delete {}",
                self.files,
                human_bytes(self.bytes),
                self.deleted
            );
        }
        if !self.changed() {
            return write!(
                f,
                "sync: up to date ({} entries checked in {secs:.2} s)",
                self.checked
            );
        }
        write!(
            f,
            "sync: sent {} files ({}), deleted {} in {secs:.2} s",
            self.files,
            human_bytes(self.bytes),
            self.deleted
        )
    }
}

pub fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// Refuse replica locations whose deletes could hit a home or system directory.
fn check_dest(dest: &str) -> Result<()> {
    let trimmed = dest.trim_end_matches('/');
    if matches!(trimmed, "" | "~" | "/" | "." | "/root" | "/home" | "/tmp")
        || trimmed.contains("..")
    {
        return Err(Error::Usage(format!(
            "[sync] dest = \"{dest}\" is not a place for a replica (files there can be deleted); \
             choose a directory of its own, like \"~/n10n/<project>\""
        )));
    }
    Ok(())
}

/// A sync under way. It starts on the local side (lock, record, scan in a blocking thread) before
/// the SSH connection is up, so the scan overlaps the handshake.
pub struct Pending {
    started: Instant,
    dest: String,
    root: PathBuf,
    record: PathBuf,
    _lock: Lock,
    baseline: Option<Baseline>,
    scanned_at_ns: i64,
    scan: tokio::task::JoinHandle<Result<(Rules, tree::Tree)>>,
}

/// When the replica was last confirmed, and how many entries it held then.
pub fn last_sync(project: &Project, state: &StateDir) -> Result<Option<(SystemTime, usize)>> {
    let record = record_path(state, project)?;
    let Some(baseline) = Baseline::load(&record) else {
        return Ok(None);
    };
    let when = std::fs::metadata(&record)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    Ok(Some((when, baseline.tree.len())))
}

/// Start a sync of `project` (call from within the async runtime).
pub fn begin(project: &Project, state: &StateDir) -> Result<Pending> {
    let started = Instant::now();
    let dest = project.config.sync.dest.clone();
    check_dest(&dest)?;
    let record = record_path(state, project)?;
    let lock = Lock::acquire(&record.with_extension("lock"))?;
    let baseline = Baseline::load(&record);
    let root = project.root.clone();
    let exclude = project.config.sync.exclude.clone();
    let scanned_at_ns = now_ns();
    let scan = {
        let root = root.clone();
        tokio::task::spawn_blocking(move || {
            let mut rules = Rules::new(&root, &exclude)?;
            let tree = tree::scan(&mut rules)?;
            tracing::debug!(
                "scanned {} entries in {:.0?}",
                tree.len(),
                started.elapsed()
            );
            Ok((rules, tree))
        })
    };
    Ok(Pending {
        started,
        dest,
        root,
        record,
        _lock: lock,
        baseline,
        scanned_at_ns,
        scan,
    })
}

impl Pending {
    /// Compare with the remote, send what changed, and record the result.
    pub async fn finish(self, session: &Session, options: &Options) -> Result<Summary> {
        let Pending {
            started,
            dest,
            root,
            record,
            _lock,
            baseline,
            scanned_at_ns,
            scan,
        } = self;
        let dest = dest.as_str();
        let expected_id = baseline.as_ref().map_or("none", |b| b.replica_id.as_str());
        let recorded_agent = baseline
            .as_ref()
            .map(|b| b.agent_socket.clone())
            .filter(|socket| !socket.is_empty());
        let probe_command = remote::probe_command(dest, expected_id);
        let probe = session.capture(recorded_agent.as_deref(), &probe_command);
        let probe = async {
            let probed = probe.await;
            tracing::debug!("replica probe answered after {:.0?}", started.elapsed());
            probed
        };
        let (scanned, probed) = tokio::join!(scan, probe);
        let (rules, local) = scanned.map_err(|e| Error::Other(format!("scan failed: {e}")))??;
        let probed = probed?.success("the replica probe").map_err(perl_hint)?;

        let listed;
        let (probe_result, probed_agent) = remote::parse_probe(&probed)?;
        let agent = probed_agent.or(recorded_agent);
        session.use_agent(agent.clone());
        let (view, new_id) = match (probe_result, &baseline) {
            (ProbeResult::Same, Some(b)) => (
                RemoteView::Recorded {
                    tree: &b.tree,
                    scanned_at_ns: b.scanned_at_ns,
                },
                None,
            ),
            (ProbeResult::Same, None) => {
                return Err(Error::Remote(
                    "the replica probe matched an id that was never recorded".into(),
                ));
            }
            (ProbeResult::Listed(tree), _) => {
                listed = tree;
                (RemoteView::Listed(&listed), Some(new_replica_id()))
            }
        };
        let plan = plan::plan(&local, &view, &rules, &|path| {
            digest::of_file(&rules.absolute(path))
        });
        let mut summary = Summary {
            files: plan.files,
            bytes: plan.bytes,
            deleted: plan.deletes.len(),
            checked: local.len(),
            dry_run: options.dry_run,
            ..Summary::default()
        };
        if options.dry_run {
            print_plan(&plan)?;
        } else if let Some(replica_id) = new_id
            .clone()
            .or_else(|| (!plan.is_empty()).then(|| expected_id.to_string()))
        {
            let (mut local, sent_digests, agent_socket) = transfer(
                session,
                agent.as_deref(),
                dest,
                new_id.as_deref().unwrap_or(""),
                Upload {
                    tree: local,
                    plan,
                    rules,
                    scanned_at_ns,
                },
                options,
            )
            .await?;
            session.use_agent(Some(agent_socket.clone()));
            record_digests(&mut local, sent_digests, &view, scanned_at_ns, &root);
            Baseline {
                replica_id,
                agent_socket,
                scanned_at_ns,
                tree: local,
            }
            .save(&record)?;
        }
        summary.elapsed = started.elapsed();
        tracing::debug!("sync done");
        Ok(summary)
    }
}

/// Give every racy file in the new record the digest of what the remote now holds: what was
/// just sent, what the old record knew for an untouched file, or (after a listing, which
/// matched on size and mtime) the local content.
fn record_digests(
    local: &mut tree::Tree,
    mut sent: HashMap<Vec<u8>, u64>,
    old: &RemoteView<'_>,
    scanned_at_ns: i64,
    root: &Path,
) {
    for (path, entry) in local.iter_mut() {
        if !entry.is_racy(scanned_at_ns) {
            continue;
        }
        entry.digest = sent.remove(path).or_else(|| match old {
            RemoteView::Recorded { tree, .. } => tree
                .get(path)
                .filter(|o| o.stamp == entry.stamp)
                .and_then(|o| o.digest),
            RemoteView::Listed(_) => digest::of_file(&root.join(OsStr::from_bytes(path))),
        });
    }
}

fn perl_hint(error: Error) -> Error {
    match error {
        Error::Remote(msg) if msg.contains("perl") && msg.contains("not found") => {
            Error::Remote(format!(
                "{msg}\nsync needs perl on the build machine (Debian/Ubuntu: apt-get install perl-base)"
            ))
        }
        other => other,
    }
}

/// What one transfer sends: the local snapshot, the plan over it, and the rules' root.
struct Upload {
    tree: tree::Tree,
    plan: Plan,
    rules: Rules,
    scanned_at_ns: i64,
}

/// Stream the archive into the apply script and wait for its confirmation. Gives the snapshot
/// back for recording.
async fn transfer(
    session: &Session,
    agent: Option<&str>,
    dest: &str,
    new_id: &str,
    upload: Upload,
    options: &Options,
) -> Result<(tree::Tree, HashMap<Vec<u8>, u64>, String)> {
    let scanned_at_ns = upload.scanned_at_ns;
    let (sender, mut chunks) = mpsc::channel::<Vec<u8>>(8);
    let bar = TransferBar::new(upload.plan.bytes, upload.plan.files, options.progress);
    let producer = tokio::task::spawn_blocking(move || {
        let ops = remote::encode_ops(&upload.plan.deletes, &upload.plan.moves);
        let written = archive::write(
            sender,
            &upload.tree,
            &upload.plan.archive,
            &upload.rules,
            &ops,
            scanned_at_ns,
        );
        (written, upload.tree)
    });
    let mut job = session
        .start_job(agent, &remote::apply_command(dest, new_id))
        .await?;
    // If the connection dies, a write can wait forever for window space: the job's output
    // ending (the channel closed) is what stops the pump.
    let mut finished = None;
    let mut send_failed = false;
    loop {
        let chunk = tokio::select! {
            chunk = chunks.recv() => chunk,
            done = &mut job.output => { finished = Some(done); None }
        };
        let Some(chunk) = chunk else { break };
        bar.advance(chunk.len() as u64);
        let sent = tokio::select! {
            sent = job.writer.data(&chunk[..]) => sent.is_ok(),
            done = &mut job.output => { finished = Some(done); false }
        };
        if !sent {
            send_failed = true;
            break;
        }
    }
    drop(chunks);
    let (produced, tree) = producer
        .await
        .map_err(|e| Error::Other(format!("archive writer failed: {e}")))?;
    let output = match finished {
        Some(done) => done.ok().flatten(),
        None if produced.is_ok() && !send_failed => job.finish().await.ok(),
        None => {
            // Close without EOF: tar sees a truncated archive (the operations list, its last
            // member, is missing) and nothing is applied.
            let _ = job.writer.close().await;
            job.output.await.ok().flatten()
        }
    };
    bar.finish();
    let Some(output) = output else {
        return Err(Error::ConnectionLost {
            endpoint: session.endpoint().to_string(),
            reason: "the sync was cut off; nothing partial was put in place, run it again".into(),
        });
    };
    let digests = produced.map_err(|e| Error::io("cannot read the project for sync", e))?;
    match remote::parse_applied(&output.stdout) {
        Some(root) if output.status == 0 => Ok((tree, digests, root)),
        _ => Err(perl_hint(Error::Remote(format!(
            "applying the sync failed on the remote (exit {}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))),
    }
}

fn print_plan(plan: &Plan) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let write = |out: &mut std::io::StdoutLock, verb: &str, path: &[u8]| {
        out.write_all(verb.as_bytes())?;
        out.write_all(path)?;
        out.write_all(b"\n")
    };
    let result = (|| {
        for path in &plan.deletes {
            write(&mut out, "delete ", path)?;
        }
        for path in &plan.archive {
            write(&mut out, "send ", path)?;
        }
        out.flush()
    })();
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::io("cannot write to standard output", e))
        }
        _ => Ok(()),
    }
}

/// Where the record of this project's replica lives: one per (project root, dest) on each VM.
fn record_path(state: &StateDir, project: &Project) -> Result<PathBuf> {
    let mut key = digest::Fnv::default();
    key.update(project.root.as_os_str().as_bytes());
    key.update(b"\0");
    key.update(project.config.sync.dest.as_bytes());
    Ok(state
        .vm_dir(&project.config.vm.name)?
        .join(format!("sync-{:016x}.manifest", key.finish())))
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// A fresh id for a replica whose contents we (re)establish.
fn new_replica_id() -> String {
    let random = || {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_i64(now_ns());
        hasher.write_u32(std::process::id());
        hasher.finish()
    };
    format!("{:016x}{:016x}", random(), random())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_destinations_are_refused() {
        for dest in ["~", "~/", "/", "", "/home", "~/../x"] {
            assert!(check_dest(dest).unwrap_err().is_usage(), "{dest}");
        }
        assert!(check_dest("~/n10n/demo").is_ok());
    }

    #[test]
    fn replica_ids_differ() {
        assert_ne!(new_replica_id(), new_replica_id());
        assert_eq!(new_replica_id().len(), 32);
    }
}
