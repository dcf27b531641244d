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
pub mod watch;

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
use crate::size::human_bytes;
use crate::ssh::{Agent, Job, Session};
use crate::state::{Lock, StateDir};
use manifest::Baseline;
use plan::{Plan, RemoteView};
use remote::ProbeResult;
use rules::Rules;

pub struct Options {
    pub dry_run: bool,
    /// Make a directory that holds files n10n-dev did not put there the replica.
    pub adopt: bool,
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
                "sync (dry run): would send {} ({}), delete {}",
                plural(self.files, "file", "files"),
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
            "sync: sent {} ({}), deleted {} in {secs:.2} s",
            plural(self.files, "file", "files"),
            human_bytes(self.bytes),
            self.deleted
        )
    }
}

/// A sync under way. It starts on the local side (lock, record, scan in a blocking thread) before
/// the SSH connection is up, so the scan overlaps the handshake.
pub struct Pending {
    started: Instant,
    dest: String,
    root: PathBuf,
    exclude: Vec<String>,
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
    crate::config::check_dest(&dest).map_err(Error::Usage)?;
    let record = record_path(state, project)?;
    let lock = Lock::acquire(&record.with_extension("lock"))?;
    let baseline = Baseline::load(&record);
    let root = project.root.clone();
    let exclude = project.config.sync.exclude.clone();
    let scanned_at_ns = now_ns();
    let scan = {
        let (root, exclude) = (root.clone(), exclude.clone());
        tokio::task::spawn_blocking(move || scan(&root, &exclude, started))
    };
    Ok(Pending {
        started,
        dest,
        root,
        exclude,
        record,
        _lock: lock,
        baseline,
        scanned_at_ns,
        scan,
    })
}

fn scan(root: &Path, exclude: &[String], started: Instant) -> Result<(Rules, tree::Tree)> {
    let mut rules = Rules::new(root, exclude)?;
    let tree = tree::scan(&mut rules)?;
    tracing::debug!(
        "scanned {} entries in {:.0?}",
        tree.len(),
        started.elapsed()
    );
    Ok((rules, tree))
}

/// How often a sync scans again when files change under it before it gives up.
const SCANS: usize = 3;

impl Pending {
    /// Compare with the remote, send what changed, and record the result.
    pub async fn finish(self, session: &Session, options: &Options) -> Result<Summary> {
        let Pending {
            started,
            dest,
            root,
            exclude,
            record,
            _lock,
            baseline,
            mut scanned_at_ns,
            scan: scanning,
        } = self;
        let dest = dest.as_str();
        let expected_id = baseline.as_ref().map_or("none", |b| b.replica_id.as_str());
        let recorded_agent = baseline
            .as_ref()
            .and_then(|b| Agent::parse(&b.agent_socket));
        let probe_command = remote::probe_command(dest, expected_id, options.dry_run);
        let probe = session.capture(recorded_agent.as_ref(), &probe_command);
        let probe = async {
            let probed = probe.await;
            tracing::debug!("replica probe answered after {:.0?}", started.elapsed());
            probed
        };
        // A first sync (nothing recorded) sends everything: its apply step starts beside the
        // probe, so that a second session start-up is not waited for (about 0.1 s).
        let early_id =
            (baseline.is_none() && !options.dry_run && !options.adopt).then(new_replica_id);
        let early_apply = async {
            let id = early_id.as_deref()?;
            let command = remote::apply_command(dest, id, false);
            Some(EarlyApply(session.start_job(None, &command).await.ok()))
        };
        let (scanned, probed, mut early_apply) = tokio::join!(scanning, probe, early_apply);
        let (mut rules, mut local) =
            scanned.map_err(|e| Error::Other(format!("scan failed: {e}")))??;
        let probed = probed?.success("the replica probe").map_err(perl_hint)?;

        let listed;
        let (probe_result, probed_agent) = remote::parse_probe(&probed)?;
        let agent = probed_agent.or(recorded_agent);
        session.use_agent(agent.clone());
        let adopting = matches!(probe_result, ProbeResult::Foreign(..));
        let (view, new_id) = match (probe_result, &baseline) {
            (ProbeResult::Unsafe(resolved), _) => return Err(refused_dest(dest, &resolved)),
            (ProbeResult::Foreign(count, _), _) if !options.adopt => {
                return Err(Error::Usage(format!(
                    "{dest} on the machine already holds {} that n10n-dev did not put there, \
                     and a sync would delete what is not part of the project; nothing was changed\n\
                     choose another [sync] dest, empty the directory, or run `n10n-dev sync --adopt` \
                     to make it the replica (it lists what it deletes; `--adopt --dry-run` only lists)",
                    plural(count, "entry", "entries")
                )));
            }
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
            (ProbeResult::Listed(tree) | ProbeResult::Foreign(_, tree), _) => {
                listed = tree;
                let id = early_id.clone().unwrap_or_else(new_replica_id);
                (RemoteView::Listed(&listed), Some(id))
            }
        };
        for attempt in 1..=SCANS {
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
            if options.dry_run || adopting {
                print_plan(&plan, options.dry_run)?;
            }
            let replica_id = new_id
                .clone()
                .or_else(|| (!plan.is_empty()).then(|| expected_id.to_string()));
            if let (false, Some(replica_id)) = (options.dry_run, replica_id) {
                let upload = Upload {
                    tree: local,
                    plan,
                    rules,
                    scanned_at_ns,
                };
                let to = Target {
                    dest,
                    agent: agent.as_ref(),
                    new_id: new_id.as_deref().unwrap_or(""),
                    adopt: adopting,
                };
                let job = early_apply.as_mut().and_then(|early| early.0.take());
                match transfer(session, to, upload, options, job).await? {
                    Transferred::Applied {
                        mut tree,
                        digests,
                        agent,
                    } => {
                        session.use_agent(agent.clone());
                        record_digests(&mut tree, digests, &view, scanned_at_ns, &root);
                        Baseline {
                            replica_id,
                            agent_socket: agent.map(|a| a.record()).unwrap_or_default(),
                            scanned_at_ns,
                            tree,
                        }
                        .save(&record)?;
                    }
                    Transferred::Changed if attempt < SCANS => {
                        tracing::info!("a file changed while the sync sent it: scanning again");
                        scanned_at_ns = now_ns();
                        let (root, exclude) = (root.clone(), exclude.clone());
                        (rules, local) =
                            tokio::task::spawn_blocking(move || scan(&root, &exclude, started))
                                .await
                                .map_err(|e| Error::Other(format!("scan failed: {e}")))??;
                        continue;
                    }
                    Transferred::Changed => {
                        return Err(Error::Other(format!(
                            "the project kept changing while it was being sent ({SCANS} scans); \
                             nothing partial was put in place, run the sync again"
                        )));
                    }
                }
            } else if let (
                false,
                RemoteView::Recorded {
                    scanned_at_ns: then,
                    ..
                },
                Some(b),
            ) = (options.dry_run, &view, &baseline)
                && local.values().any(|entry| entry.is_racy(*then))
            {
                // Files that were new when the record was made are read and hashed by every
                // sync until it is made again (10,000 of them cost 20 ms): now that they are
                // proven unchanged, the record is made again with this scan's time.
                record_digests(&mut local, HashMap::new(), &view, scanned_at_ns, &root);
                Baseline {
                    replica_id: b.replica_id.clone(),
                    agent_socket: agent.as_ref().map(Agent::record).unwrap_or_default(),
                    scanned_at_ns,
                    tree: local,
                }
                .save(&record)?;
            }
            summary.elapsed = started.elapsed();
            tracing::debug!("sync done");
            return Ok(summary);
        }
        unreachable!("the last attempt returns")
    }
}

fn plural(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
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

/// A dest that the machine resolves to a directory no replica may take: a configuration error,
/// whether the probe or the apply step found it.
fn refused_dest(dest: &str, resolved: &str) -> Error {
    Error::Usage(format!(
        "[sync] dest = \"{dest}\" leads to {resolved} on the machine: its home, a parent of its \
         home, a system directory or a directory its commands are found in (on PATH, or above \
         one), where a sync would delete what is not part of the project or plant what runs; \
         nothing was changed\nchoose a directory of its own, like \"~/n10n/<project>\""
    ))
}

/// Where a transfer goes: the replica, the agent that may apply it, the id a new replica gets,
/// and whether a directory n10n-dev did not fill may be taken over.
struct Target<'a> {
    dest: &'a str,
    agent: Option<&'a Agent>,
    new_id: &'a str,
    adopt: bool,
}

enum Transferred {
    /// The remote confirmed: the snapshot to record, the digests of racy files sent, and the
    /// agent that now serves the replica.
    Applied {
        tree: tree::Tree,
        digests: HashMap<Vec<u8>, u64>,
        agent: Option<Agent>,
    },
    /// A file changed between the scan and the send; nothing was applied.
    Changed,
}

/// Stream the archive into the apply script and wait for its confirmation.
/// An apply step started before it was known that it will be needed: unless taken, it is
/// ended with an empty stream, which makes it change nothing (the operations list, the
/// archive's last member, never arrives).
struct EarlyApply(Option<Job>);

impl Drop for EarlyApply {
    fn drop(&mut self) {
        if let Some(job) = self.0.take() {
            tokio::spawn(async move {
                let _ = job.writer.eof().await;
                let _ = job.output.await;
            });
        }
    }
}

/// Send the upload's archive to an apply step (`job` when one was started already) and wait
/// for its answer.
async fn transfer(
    session: &Session,
    to: Target<'_>,
    upload: Upload,
    options: &Options,
    job: Option<Job>,
) -> Result<Transferred> {
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
    let mut job = match job {
        Some(job) => job,
        None => {
            session
                .start_job(
                    to.agent,
                    &remote::apply_command(to.dest, to.new_id, to.adopt),
                )
                .await?
        }
    };
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
        // Owned bytes leave in packets of the server's size; `data` would send 8 KiB packets,
        // which cost sshd dearly (see `ssh::exec::forward_stdin`).
        let sent = tokio::select! {
            sent = job.writer.data_bytes(chunk) => sent.is_ok(),
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
            // End the stream where it stopped: the operations list, the archive's last member,
            // is missing, so the apply script fails and applies nothing. (A channel closed
            // without EOF instead was never answered by sshd's close.)
            let _ = job.writer.eof().await;
            job.output.await.ok().flatten()
        }
    };
    bar.finish();
    if produced.as_ref().is_err_and(archive::changed_during_sync) {
        return Ok(Transferred::Changed);
    }
    let Some(output) = output else {
        return Err(Error::ConnectionLost {
            endpoint: session.endpoint().to_string(),
            reason: "the sync was cut off; nothing partial was put in place, run it again".into(),
        });
    };
    let digests = produced.map_err(|e| Error::io("cannot read the project for sync", e))?;
    if let Some(resolved) = remote::parse_refused(&output.stdout) {
        return Err(refused_dest(to.dest, &resolved));
    }
    match remote::parse_applied(&output.stdout) {
        Some(agent) if output.status == 0 => Ok(Transferred::Applied {
            tree,
            digests,
            agent,
        }),
        _ => Err(perl_hint(Error::Remote(format!(
            "applying the sync failed on the remote (exit {}): {}",
            output.status,
            crate::terminal_text::lines(&output.stderr).trim()
        )))),
    }
}

/// The plan, a line an entry, on stdout: everything for a dry run, only the deletes when a sync
/// adopts a directory (said before anything is deleted).
fn print_plan(plan: &Plan, with_sends: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    // Names come from the machine too (what a sync deletes): shown escaped, one a line.
    let write = |out: &mut std::io::StdoutLock, verb: &str, path: &[u8]| {
        writeln!(out, "{verb}{}", crate::terminal_text::one_line(path))
    };
    let result = (|| {
        for path in &plan.deletes {
            write(&mut out, "delete ", path)?;
        }
        for path in plan.archive.iter().filter(|_| with_sends) {
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
/// The agent the last sync of `project` found on the machine, if it recorded one.
pub fn recorded_agent(project: &Project, state: &StateDir) -> Option<Agent> {
    let agent = Baseline::recorded_agent(&record_path(state, project).ok()?)?;
    Agent::parse(&agent)
}

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
    fn replica_ids_differ() {
        assert_ne!(new_replica_id(), new_replica_id());
        assert_eq!(new_replica_id().len(), 32);
    }
}
