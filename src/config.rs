//! `n10n-dev.toml`: discovery of the project root, parsing with every key of the contract, defaults,
//! and validation. Errors name the file, line and column, what was expected, and how to fix it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, de};
use toml::Spanned;

use crate::error::{Error, IoContext, Result};
use crate::user_config::{self, UserConfig};

pub const FILE_NAME: &str = "n10n-dev.toml";

/// The project being worked on: where it is, what it is called, and its configuration.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
    pub name: String,
    pub config: Config,
    /// The configuration files that were read: the project's, the user's.
    pub files_read: Vec<PathBuf>,
}

impl Project {
    /// Find the project root from `start` upwards and load its configuration.
    ///
    /// The root is the nearest directory holding `n10n-dev.toml`, looking no higher than the git
    /// work-tree root or the home directory, whichever comes first; without one, the git
    /// work-tree root; else `start` itself. A file that another user owns or could have written
    /// (in a directory anyone may write to, as /tmp) is passed over with a warning: it would
    /// choose where commands run.
    pub fn discover(start: &Path) -> Result<Project> {
        let start = start
            .canonicalize()
            .context(|| format!("cannot open directory {}", start.display()))?;
        let searched = search_range(&start);
        let found = searched.iter().find(|dir| {
            let file = dir.join(FILE_NAME);
            match file.is_file().then(|| not_trusted(&file)).flatten() {
                Some(why) => {
                    eprintln!("warning: {} is not read: {why}", file.display());
                    false
                }
                None => file.is_file(),
            }
        });
        let (root, file) = match found {
            Some(dir) => (dir.clone(), Some(dir.join(FILE_NAME))),
            None => (
                find_upwards(&start, |dir| dir.join(".git").exists()).unwrap_or(start),
                None,
            ),
        };
        let name = project_name(&root);
        let user = user_config::load()?;
        let config = match &file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .context(|| format!("cannot read {}", path.display()))?;
                RawConfig::parse(&text, path)?.resolve(&name, Some((path, &text)), &user)?
            }
            None => RawConfig::default().resolve(&name, None, &user)?,
        };
        let files_read = file
            .into_iter()
            .chain(user.path.filter(|_| user.read))
            .collect();
        Ok(Project {
            root,
            name,
            config,
            files_read,
        })
    }
}

/// The directories a project file is looked for in: `start` and its parents up to the git
/// work-tree root or the home directory, whichever comes first (all of them when neither is
/// above `start`).
fn search_range(start: &Path) -> Vec<PathBuf> {
    let home = std::env::var_os("HOME").and_then(|h| Path::new(&h).canonicalize().ok());
    let mut dirs = Vec::new();
    for dir in start.ancestors() {
        dirs.push(dir.to_path_buf());
        if dir.join(".git").exists() || home.as_deref() == Some(dir) {
            break;
        }
    }
    dirs
}

/// Why a project file is not to be trusted, if it is not: like git's `safe.directory`, a file
/// of another user's, or one that others could have put there or changed.
fn not_trusted(file: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(file).ok()?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let dir = file.parent().and_then(|d| std::fs::metadata(d).ok());
    if meta.uid() != me {
        Some(format!(
            "it belongs to another user (uid {}); a project's own file is yours",
            meta.uid()
        ))
    } else if meta.mode() & 0o002 != 0 {
        Some("anyone may change it (mode o+w)".into())
    } else if dir.is_some_and(|d| d.mode() & 0o002 != 0) {
        Some(
            "its directory is one anyone may write to, as /tmp: anyone could have put it there"
                .into(),
        )
    } else {
        None
    }
}

fn find_upwards(start: &Path, found: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| found(dir))
        .map(Path::to_path_buf)
}

/// The directory name, reduced to characters that are safe in VM names and remote paths.
fn project_name(root: &Path) -> String {
    let raw = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    name = name.trim_matches('-').to_string();
    name.truncate(40);
    if name.is_empty() {
        "project".into()
    } else {
        name
    }
}

/// The validated configuration, with every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub vm: VmConfig,
    pub ssh: SshConfig,
    pub sync: SyncConfig,
    pub image: ImageConfig,
    pub lambda: LambdaConfig,
    pub base: BaseConfig,
    pub push: PushConfig,
    pub forward: ForwardConfig,
    pub run: RunConfig,
    pub vagrant: VagrantConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VmConfig {
    pub backend: BackendKind,
    pub name: String,
    pub cpus: u32,
    pub memory: ByteSize,
    pub disk: ByteSize,
    pub arch: Arch,
    pub toolchains: Vec<Toolchain>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SshConfig {
    pub host: Option<String>,
    pub port: u16,
    pub user: String,
    pub identity: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyncConfig {
    pub dest: String,
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImageConfig {
    pub build: Option<String>,
    pub name: String,
    /// `[image] name` was set (else `name` is the project directory's).
    pub name_given: bool,
    pub tag: String,
    pub platform: Platform,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LambdaConfig {
    pub handler: String,
    pub memory_mb: u32,
    pub timeout_s: u32,
    /// The size of the function's `/tmp`, as Lambda's `EphemeralStorage`.
    pub ephemeral_storage_mb: u32,
    pub env: BTreeMap<String, String>,
    /// Several functions of one image, by name: their handlers (`invoke --serve`).
    pub functions: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BaseConfig {
    pub image: String,
    pub label: String,
    pub max_age_days: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    #[default]
    Auto,
    Lima,
    Vagrant,
    Native,
    Ssh,
}

impl BackendKind {
    pub const NAMES: &'static str = "auto, lima, vagrant, native, ssh";

    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Lima => "lima",
            BackendKind::Vagrant => "vagrant",
            BackendKind::Native => "native",
            BackendKind::Ssh => "ssh",
        }
    }
}

impl FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        BackendKind::deserialize(de::value::StrDeserializer::<de::value::Error>::new(s)).map_err(
            |_| {
                format!(
                    "unknown backend `{s}`: expected one of {}",
                    BackendKind::NAMES
                )
            },
        )
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VagrantConfig {
    /// `vagrant up --provider`: virtualbox, vmware_desktop, parallels, libvirt, or another.
    pub provider: String,
}

impl VagrantConfig {
    /// The Vagrant plugin a provider needs, for the providers the Vagrantfile knows; `None`
    /// for VirtualBox, which Vagrant carries itself.
    pub fn plugin(&self) -> Option<&'static str> {
        match self.provider.as_str() {
            "vmware_desktop" => Some("vagrant-vmware-desktop"),
            "parallels" => Some("vagrant-parallels"),
            "libvirt" => Some("vagrant-libvirt"),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// Start every command in the user's login shell, instead of with the login environment
    /// the machine's agent captured once and caches until a profile file changes.
    pub login_shell: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ForwardConfig {
    /// Static forwards, Vagrant style: `"8080:80"`, `"127.0.0.1:9000:8080"`.
    pub ports: Vec<StaticForward>,
    /// Follow the VM's listening TCP ports.
    pub auto: bool,
    /// Bind forwarded ports on every host interface rather than loopback only.
    pub public: bool,
}

/// `[HOST_IP:]HOST_PORT:GUEST_PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticForward {
    pub host_ip: Option<std::net::IpAddr>,
    pub host_port: u16,
    pub guest_port: u16,
}

impl<'de> Deserialize<'de> for StaticForward {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bad = || {
            de::Error::custom(format!(
                "`{text}` is not a forward: write \"HOST_PORT:GUEST_PORT\" or \"HOST_IP:HOST_PORT:GUEST_PORT\""
            ))
        };
        let (host, guest) = text.rsplit_once(':').ok_or_else(bad)?;
        let (host_ip, host_port) = match host.rsplit_once(':') {
            Some((ip, port)) => (
                Some(ip.trim_matches(['[', ']']).parse().map_err(|_| bad())?),
                port,
            ),
            None => (None, host),
        };
        let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad);
        Ok(StaticForward {
            host_ip,
            host_port: port(host_port)?,
            guest_port: port(guest)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PushConfig {
    /// Where `push` sends the image, `host/repository` (empty: `--to` is needed).
    pub repository: String,
    pub auth: PushAuth,
    /// The ECR region when the host name does not say it (a VPC endpoint, say).
    pub region: String,
    /// Hosts outside the ECR pattern that may get an ECR token (the user's own config only).
    pub ecr_hosts: Vec<String>,
}

/// How `push` finds credentials for the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PushAuth {
    /// The Docker config; for an ECR host without credentials there, `aws ecr get-login-password`.
    #[default]
    Auto,
    /// The Docker config only.
    Docker,
    /// `aws ecr get-login-password`, whatever the host name.
    Ecr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    #[default]
    Host,
    X86_64,
    Aarch64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Toolchain {
    Jvm,
    Rust,
}

/// A size in bytes written as `"8GiB"`, `"512MiB"`, `"60G"`, or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let expected = || {
            format!(
                "invalid size \"{s}\": expected a number and a unit, like \"8GiB\" or \"512MiB\""
            )
        };
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let number: f64 = number.parse().map_err(|_| expected())?;
        let multiplier: u64 = match unit.trim() {
            "" | "B" => 1,
            "K" | "KB" | "KiB" => 1 << 10,
            "M" | "MB" | "MiB" => 1 << 20,
            "G" | "GB" | "GiB" => 1 << 30,
            "T" | "TB" | "TiB" => 1 << 40,
            _ => return Err(expected()),
        };
        let bytes = number * multiplier as f64;
        if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
            return Err(expected());
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const GIB: u64 = 1 << 30;
        const MIB: u64 = 1 << 20;
        match self.0 {
            n if n % GIB == 0 => write!(f, "{}GiB", n / GIB),
            n if n % MIB == 0 => write!(f, "{}MiB", n / MIB),
            n => write!(f, "{n}B"),
        }
    }
}

/// An image platform such as `linux/amd64` or `linux/arm64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform(pub String);

impl<'de> Deserialize<'de> for Platform {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "linux/amd64" | "linux/arm64" => Ok(Platform(text)),
            _ => Err(de::Error::custom(format!(
                "unsupported platform \"{text}\": Lambda runs \"linux/amd64\" or \"linux/arm64\""
            ))),
        }
    }
}

/// An integer within an inclusive range, checked while parsing so the error points at the value.
fn in_range<'de, D: Deserializer<'de>>(
    d: D,
    min: u32,
    max: u32,
    what: &str,
) -> Result<u32, D::Error> {
    let value = i64::deserialize(d)?;
    if value < min as i64 || value > max as i64 {
        return Err(de::Error::custom(format!(
            "{what} must be between {min} and {max}, not {value}"
        )));
    }
    Ok(value as u32)
}

fn cpus<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    in_range(d, 1, 256, "cpus").map(Some)
}
fn port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    in_range(d, 1, 65535, "port").map(|p| Some(p as u16))
}
fn lambda_memory<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    in_range(d, 128, 10240, "memory_mb").map(Some)
}
fn lambda_ephemeral_storage<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    in_range(d, 512, 10240, "ephemeral_storage_mb").map(Some)
}
fn lambda_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    in_range(d, 1, 900, "timeout_s").map(Some)
}
fn max_age<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    in_range(d, 0, 36500, "max_age_days").map(Some)
}

/// `[lambda] env`: names as a shell and Docker take them, each value one line (the container
/// gets them as an env file), and none of the names that steer what runs rather than the
/// function (a project file may have been written by anyone).
fn lambda_env<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    let env = BTreeMap::<String, String>::deserialize(d)?;
    for (key, value) in &env {
        let valid = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let problem = if !valid {
            "is not a variable name (letters, digits and _, not starting with a digit)"
        } else if key == "PATH" || key.starts_with("LD_") || key.starts_with("DOCKER_") {
            "is refused from a project's file: PATH, LD_* and DOCKER_* choose what runs; if you \
             mean it, give it yourself with `invoke -e`"
        } else if !is_one_line(value) {
            "has a value of more than one line, which a container's environment file cannot hold"
        } else {
            continue;
        };
        return Err(de::Error::custom(format!("[lambda] env {key:?} {problem}")));
    }
    Ok(Some(env))
}

/// A value a container's environment file can hold: no newline, no NUL.
pub fn is_one_line(value: &str) -> bool {
    !value.contains(['\n', '\r', '\0'])
}

/// A Vagrant provider's name, as `vagrant up --provider` takes it.
fn vagrant_provider<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let name = String::deserialize(d)?;
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    match valid {
        true => Ok(Some(name)),
        false => Err(de::Error::custom(format!(
            "{name:?} is not a Vagrant provider's name (virtualbox, vmware_desktop, parallels, \
             libvirt, …)"
        ))),
    }
}

/// A VM name: Lima's instance-name rule, kept short because macOS socket paths are ≤ 104 bytes.
fn vm_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let name = String::deserialize(d)?;
    validate_vm_name(&name).map_err(de::Error::custom)?;
    Ok(Some(name))
}

fn validate_vm_name(name: &str) -> Result<(), String> {
    let valid_chars = name
        .split(['.', '_', '-'])
        .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric()));
    if name.is_empty() || name.len() > 40 || !valid_chars {
        return Err(format!(
            "invalid VM name \"{name}\": use at most 40 letters and digits, joined by single '.', '_' or '-'"
        ));
    }
    Ok(())
}

/// A non-empty string without control characters: these values reach command lines and the
/// `ssh-config` block, where a newline would start a line of the project author's choosing.
fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        return Err(de::Error::custom("must not be empty"));
    }
    if text.chars().any(char::is_control) {
        return Err(de::Error::custom(
            "must not contain control characters (a newline, a tab, …)",
        ));
    }
    Ok(Some(text))
}

/// A host or user name: one word, as ssh and its config file read it, and not an option.
fn ssh_word<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = non_empty(d)?.expect("non_empty gives a value");
    if text.chars().any(char::is_whitespace) || text.starts_with('-') || text.contains('"') {
        return Err(de::Error::custom(format!(
            "{text:?} is not a host or user name: no spaces, quotes or leading '-'"
        )));
    }
    Ok(Some(text))
}

/// A key file's path: `ssh-config` prints it in double quotes, which cannot themselves be quoted.
fn identity_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = non_empty(d)?.expect("non_empty gives a value");
    if text.contains('"') {
        return Err(de::Error::custom("a key file's path must not contain '\"'"));
    }
    Ok(Some(text))
}

/// A dest as the machine resolves it: from the home directory (`~/…`, or a path that does not
/// start at the root) or from the root, and its parts without `.` and empty ones.
fn dest_parts(dest: &str) -> std::result::Result<(bool, Vec<&str>), String> {
    let (home_relative, rest) = match dest.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => (true, rest),
        _ => (!dest.starts_with('/'), dest),
    };
    let mut parts = Vec::new();
    for part in rest.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(format!(
                    "[sync] dest = \"{dest}\" climbs with \"..\"; name the directory itself, like \"~/n10n/<project>\""
                ));
            }
            part => parts.push(part),
        }
    }
    Ok((home_relative, parts))
}

/// The directory replicas go in by default; others only where the user's own config names them.
pub const DEFAULT_SYNC_ROOT: &str = "~/n10n";

/// A dest lies in a directory of its own: strictly under `~/n10n` or a root the user named in
/// their own config, and never in a dot-directory of the home. A project's file may have been
/// written by anyone, and a sync writes the project's files there: in `~/.local/bin`,
/// `~/.config/systemd/user` or `~/.ssh` they would run, or be trusted, at the next login.
pub fn check_dest_placement(dest: &str, user_roots: &[String]) -> std::result::Result<(), String> {
    let (home_relative, parts) = dest_parts(dest)?;
    if let (true, Some(first)) = (home_relative, parts.first().filter(|p| p.starts_with('.'))) {
        return Err(format!(
            "[sync] dest = \"{dest}\" is in a dot-directory of the home (~/{first}): those hold \
             what logins, shells and services run or trust (~/.local/bin, ~/.config/systemd, \
             ~/.ssh), and no replica goes there"
        ));
    }
    let under = |root: &str| {
        dest_parts(root).is_ok_and(|(root_home, root_parts)| {
            root_home == home_relative
                && parts.len() > root_parts.len()
                && parts.starts_with(&root_parts)
        })
    };
    let roots: Vec<&str> = std::iter::once(DEFAULT_SYNC_ROOT)
        .chain(user_roots.iter().map(String::as_str))
        .collect();
    if roots.iter().any(|root| under(root)) {
        return Ok(());
    }
    Err(format!(
        "[sync] dest = \"{dest}\" is not inside a directory that replicas may take ({}): a sync \
         writes the project there and deletes what is not part of it, so a dest elsewhere could \
         plant files where the machine runs them (a directory on PATH, an autostart or unit \
         directory) or delete others'",
        roots
            .iter()
            .map(|r| format!("\"{r}/…\""))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Refuse replica locations whose deletes could hit a home or system directory, however the
/// path is spelled (`~/.`, `/root/./`, `//etc`). The machine checks again where the path
/// really leads (symlinks, its own home) before it writes anything.
pub fn check_dest(dest: &str) -> std::result::Result<(), String> {
    let (home_relative, parts) = dest_parts(dest)?;
    let system = |first: &str| {
        matches!(
            first,
            "bin"
                | "boot"
                | "dev"
                | "etc"
                | "home"
                | "lib"
                | "lib64"
                | "media"
                | "mnt"
                | "opt"
                | "proc"
                | "root"
                | "run"
                | "sbin"
                | "srv"
                | "sys"
                | "tmp"
                | "usr"
                | "var"
                | "Users"
        )
    };
    let unsafe_place = match (home_relative, parts.as_slice()) {
        (true, []) => Some("the home directory"),
        (false, []) => Some("the root directory"),
        (false, ["home" | "Users", _]) | (false, ["root"]) => Some("a home directory"),
        (false, [first]) if system(first) => Some("a system directory"),
        (false, ["usr" | "etc" | "proc" | "sys" | "dev" | "boot", ..]) => {
            Some("a system directory")
        }
        _ => None,
    };
    match unsafe_place {
        Some(what) => Err(format!(
            "[sync] dest = \"{dest}\" is {what}: a sync deletes whatever in it is not part of the project; \
             choose a directory of its own, like \"~/n10n/<project>\""
        )),
        None => Ok(()),
    }
}

fn sync_dest<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let dest = non_empty(d)?.expect("non_empty gives a value");
    check_dest(&dest).map_err(de::Error::custom)?;
    Ok(Some(dest))
}

/// The file as written: every key optional, nothing unknown accepted.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    vm: RawVm,
    #[serde(default)]
    ssh: RawSsh,
    #[serde(default)]
    sync: RawSync,
    #[serde(default)]
    image: RawImage,
    #[serde(default)]
    lambda: RawLambda,
    #[serde(default)]
    base: RawBase,
    #[serde(default)]
    push: RawPush,
    #[serde(default)]
    forward: RawForward,
    #[serde(default)]
    run: RawRun,
    #[serde(default)]
    vagrant: RawVagrant,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    backend: Option<Spanned<BackendKind>>,
    #[serde(default, deserialize_with = "vm_name")]
    name: Option<String>,
    #[serde(default, deserialize_with = "cpus")]
    cpus: Option<u32>,
    memory: Option<ByteSize>,
    disk: Option<ByteSize>,
    arch: Option<Arch>,
    toolchains: Option<Vec<Toolchain>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSsh {
    #[serde(default, deserialize_with = "ssh_word")]
    host: Option<String>,
    #[serde(default, deserialize_with = "port")]
    port: Option<u16>,
    #[serde(default, deserialize_with = "ssh_word")]
    user: Option<String>,
    #[serde(default, deserialize_with = "identity_path")]
    identity: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    #[serde(default, deserialize_with = "sync_dest")]
    dest: Option<String>,
    exclude: Option<Vec<String>>,
    /// The user's to set (`user_config`): refused here.
    roots: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    #[serde(default, deserialize_with = "non_empty")]
    build: Option<String>,
    #[serde(default, deserialize_with = "non_empty")]
    name: Option<String>,
    #[serde(default, deserialize_with = "non_empty")]
    tag: Option<String>,
    platform: Option<Platform>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLambda {
    handler: Option<String>,
    #[serde(default, deserialize_with = "lambda_memory")]
    memory_mb: Option<u32>,
    #[serde(default, deserialize_with = "lambda_timeout")]
    timeout_s: Option<u32>,
    #[serde(default, deserialize_with = "lambda_ephemeral_storage")]
    ephemeral_storage_mb: Option<u32>,
    #[serde(default, deserialize_with = "lambda_env")]
    env: Option<BTreeMap<String, String>>,
    functions: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBase {
    image: Option<String>,
    #[serde(default, deserialize_with = "non_empty")]
    label: Option<String>,
    #[serde(default, deserialize_with = "max_age")]
    max_age_days: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForward {
    ports: Option<Vec<StaticForward>>,
    auto: Option<bool>,
    /// The user's to set (`user_config`): refused here.
    public: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRun {
    login_shell: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVagrant {
    #[serde(default, deserialize_with = "vagrant_provider")]
    provider: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPush {
    repository: Option<String>,
    auth: Option<PushAuth>,
    region: Option<String>,
    /// The user's to set (`user_config`): refused here.
    ecr_hosts: Option<Spanned<toml::Value>>,
}

impl RawConfig {
    fn parse(text: &str, path: &Path) -> Result<RawConfig> {
        toml::from_str(text).map_err(|err| {
            let message = plain_types(err.message());
            Error::Config(render_at(
                path,
                text,
                err.span(),
                &message,
                &help_for(&message),
            ))
        })
    }

    /// Fill in defaults, the user's own settings from `user`, and check what spans keys;
    /// `source` is the file and its text, for errors.
    fn resolve(
        self,
        project: &str,
        source: Option<(&Path, &str)>,
        user: &UserConfig,
    ) -> Result<Config> {
        let user_only = [
            ("[sync] roots", self.sync.roots.as_ref().map(Spanned::span)),
            (
                "[forward] public",
                self.forward.public.as_ref().map(Spanned::span),
            ),
            (
                "[push] ecr_hosts",
                self.push.ecr_hosts.as_ref().map(Spanned::span),
            ),
        ];
        if let (Some((key, span)), Some((path, text))) = (
            user_only.into_iter().find_map(|(k, s)| Some((k, s?))),
            source,
        ) {
            let message = format!("{key} cannot be set in a project's {FILE_NAME}");
            let help = user_config::where_to_set(key);
            return Err(Error::Config(render_at(
                path,
                text,
                Some(span),
                &message,
                &help,
            )));
        }
        let dest = self
            .sync
            .dest
            .unwrap_or_else(|| format!("{DEFAULT_SYNC_ROOT}/{project}"));
        if let Err(why) = check_dest_placement(&dest, &user.sync_roots) {
            let help = format!(
                "choose \"{DEFAULT_SYNC_ROOT}/<project>\"; or, if you mean it, add the directory \
                 it is in to [sync] roots in {}",
                user_config::file_named()
            );
            return Err(Error::Config(match source {
                Some((path, text)) => render_at(path, text, None, &why, &help),
                None => format!("{why}\nhelp: {help}"),
            }));
        }
        let backend_span = self.vm.backend.as_ref().map(|b| b.span());
        let backend = self.vm.backend.map(Spanned::into_inner).unwrap_or_default();
        let ssh_host = self.ssh.host;
        if backend == BackendKind::Ssh && ssh_host.is_none() {
            let message = "backend = \"ssh\" needs the address of the build host";
            let help = "add `[ssh]` with `host = \"build.example.com\"` (and `user`, `port`, `identity` as needed)";
            return Err(Error::Config(match source {
                Some((path, text)) => render_at(path, text, backend_span, message, help),
                None => format!("{message}\nhelp: {help}"),
            }));
        }
        let mut toolchains = self.vm.toolchains.unwrap_or_default();
        toolchains.sort();
        toolchains.dedup();
        Ok(Config {
            vm: VmConfig {
                backend,
                name: self.vm.name.unwrap_or_else(|| format!("n10n-{project}")),
                cpus: self.vm.cpus.unwrap_or(4),
                memory: self.vm.memory.unwrap_or(ByteSize(8 << 30)),
                disk: self.vm.disk.unwrap_or(ByteSize(60 << 30)),
                arch: self.vm.arch.unwrap_or_default(),
                toolchains,
            },
            ssh: SshConfig {
                host: ssh_host,
                port: self.ssh.port.unwrap_or(22),
                user: self.ssh.user.unwrap_or_else(local_user),
                identity: expand_home(self.ssh.identity.as_deref().unwrap_or("~/.ssh/id_ed25519")),
            },
            sync: SyncConfig {
                dest,
                exclude: self.sync.exclude.unwrap_or_else(|| vec!["target/".into()]),
            },
            image: ImageConfig {
                build: self.image.build,
                name_given: self.image.name.is_some(),
                name: self.image.name.unwrap_or_else(|| project.to_string()),
                tag: self.image.tag.unwrap_or_else(|| "dev".into()),
                platform: self
                    .image
                    .platform
                    .unwrap_or(Platform("linux/amd64".into())),
            },
            lambda: LambdaConfig {
                handler: self.lambda.handler.unwrap_or_default(),
                memory_mb: self.lambda.memory_mb.unwrap_or(1024),
                timeout_s: self.lambda.timeout_s.unwrap_or(60),
                ephemeral_storage_mb: self.lambda.ephemeral_storage_mb.unwrap_or(512),
                env: self.lambda.env.unwrap_or_default(),
                functions: self.lambda.functions.unwrap_or_default(),
            },
            base: BaseConfig {
                image: self.base.image.unwrap_or_default(),
                label: self.base.label.unwrap_or_else(|| "sdkBaseVersion".into()),
                max_age_days: self.base.max_age_days.unwrap_or(30),
            },
            forward: ForwardConfig {
                ports: self.forward.ports.unwrap_or_default(),
                auto: self.forward.auto.unwrap_or(true),
                public: user.forward_public,
            },
            push: PushConfig {
                repository: self.push.repository.unwrap_or_default(),
                auth: self.push.auth.unwrap_or_default(),
                region: self.push.region.unwrap_or_default(),
                ecr_hosts: user.ecr_hosts.clone(),
            },
            run: RunConfig {
                login_shell: self.run.login_shell.unwrap_or(false),
            },
            vagrant: VagrantConfig {
                provider: self.vagrant.provider.unwrap_or_else(|| "virtualbox".into()),
            },
        })
    }
}

fn local_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "root".into())
}

/// Expand a leading `~/` to the local home directory.
pub fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// serde's names for the types a value should have, in the words of the README.
pub(crate) fn plain_types(message: &str) -> String {
    [
        ("expected i64", "expected an integer"),
        ("expected u64", "expected an integer"),
        ("expected u32", "expected an integer"),
        ("expected u16", "expected an integer"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected a table"),
        ("expected a boolean", "expected true or false"),
    ]
    .iter()
    .fold(message.to_string(), |text, (serde, plain)| {
        text.replace(serde, plain)
    })
}

/// A next step for the common mistakes, keyed on toml's own message.
pub(crate) fn help_for(message: &str) -> String {
    if message.contains("unknown field") {
        "remove or rename the key; the keys are listed in the README under \"Configuration\"".into()
    } else if message.contains("unknown variant") {
        "use one of the values listed above".into()
    } else if message.contains("invalid type") {
        "write the value in the type shown above (strings in double quotes, numbers bare)".into()
    } else if message.contains("invalid size") {
        "sizes are a number followed by KiB, MiB, GiB or TiB".into()
    } else {
        "fix the value at the marked place".into()
    }
}

/// `path:line:column: message`, the offending line with a caret under the span, and a hint.
pub(crate) fn render_at(
    path: &Path,
    text: &str,
    span: Option<std::ops::Range<usize>>,
    message: &str,
    help: &str,
) -> String {
    let message = message.trim_end();
    let Some(span) = span else {
        return format!("{}: {message}\nhelp: {help}", path.display());
    };
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line_no = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let source_line = &text[line_start..line_end];
    let width = text[start..span.end.clamp(start, line_end)]
        .chars()
        .count()
        .max(1);
    let gutter = " ".repeat(line_no.to_string().len());
    format!(
        "{}:{line_no}:{column}: {message}\n{gutter} |\n{line_no} | {source_line}\n{gutter} | {}{}\nhelp: {help}",
        path.display(),
        " ".repeat(column - 1),
        "^".repeat(width),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        let path = Path::new("n10n-dev.toml");
        RawConfig::parse(text, path)?.resolve("demo", Some((path, text)), &UserConfig::default())
    }

    #[test]
    fn dangerous_destinations_are_refused_however_spelled() {
        for dest in [
            "~",
            "~/",
            "~/.",
            "~/./",
            "~//",
            "/",
            "/.",
            "//",
            "",
            "/home",
            "/home/x/",
            "/root/.",
            "/etc",
            "/usr",
            "/usr/local",
            "/var",
            "/opt",
            "/srv",
            "/tmp/",
            "/Users/me",
            "~/../x",
            ".",
            "./",
        ] {
            assert!(check_dest(dest).is_err(), "{dest}");
        }
        for dest in [
            "~/n10n/demo",
            "~/./n10n/demo",
            "/srv/builds/app",
            "/home/x/n10n/app",
            "/tmp/x/replica",
            "code/app",
        ] {
            assert!(check_dest(dest).is_ok(), "{dest}");
        }
    }

    #[test]
    fn a_dest_lies_in_a_directory_replicas_may_take() {
        let roots = ["/srv/builds".to_string(), "~/code".to_string()];
        for dest in [
            "~/n10n/demo",
            "~/./n10n/demo",
            "n10n/demo",
            "/srv/builds/app",
            "~/code/app",
        ] {
            assert_eq!(check_dest_placement(dest, &roots), Ok(()), "{dest}");
        }
        for (dest, said) in [
            ("~/.local/bin", "a dot-directory of the home (~/.local)"),
            (
                "~/.config/systemd/user",
                "a dot-directory of the home (~/.config)",
            ),
            ("~/.ssh", "a dot-directory of the home (~/.ssh)"),
            ("~/bin", "not inside a directory that replicas may take"),
            ("~/n10n", "not inside"),
            ("/srv/builds", "not inside"),
            ("/srv/other/app", "not inside"),
            ("/home/x/n10n/app", "not inside"),
        ] {
            let why = check_dest_placement(dest, &roots).unwrap_err();
            assert!(why.contains(said), "{dest}: {why}");
        }
        // The user's roots are the user's: a project file's dest elsewhere names the way.
        let e = parse("[sync]\ndest = \"~/.local/bin\"\n").unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e}");
        assert!(e.to_string().contains("[sync] roots in"), "{e}");
        let e = parse("[sync]\nroots = [\"~\"]\n").unwrap_err();
        assert!(
            e.to_string().contains("[sync] roots is yours to decide"),
            "{e}"
        );
    }

    #[test]
    fn forwards_are_read_as_vagrant_writes_them() {
        let config = parse("[forward]\nports = [\"8080:80\", \"127.0.0.1:9000:8080\"]\n").unwrap();
        let ports = &config.forward.ports;
        assert_eq!(
            (ports[0].host_ip, ports[0].host_port, ports[0].guest_port),
            (None, 8080, 80)
        );
        assert_eq!(ports[1].host_ip, Some("127.0.0.1".parse().unwrap()));
        assert!(!config.forward.public && config.forward.auto);
        let e = parse("[forward]\nports = [\"80\"]\n").unwrap_err();
        assert!(e.to_string().contains("HOST_PORT:GUEST_PORT"), "{e}");
    }

    #[test]
    fn trust_is_the_user_s_own_config_s_never_a_project_s() {
        for (text, key) in [
            ("[forward]\npublic = true\n", "[forward] public"),
            (
                "[push]\necr_hosts = [\"evil.example\"]\n",
                "[push] ecr_hosts",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(matches!(e, Error::Config(_)), "{e}");
            let e = e.to_string();
            assert!(e.starts_with("n10n-dev.toml:2:"), "{e}");
            assert!(e.contains(&format!("{key} is yours to decide")), "{e}");
            assert!(e.contains("config.toml"), "{e}");
        }
        let user = UserConfig {
            forward_public: true,
            ecr_hosts: vec!["ecr.internal".into()],
            ..UserConfig::default()
        };
        let path = Path::new("n10n-dev.toml");
        let config = RawConfig::parse("", path)
            .unwrap()
            .resolve("demo", Some((path, "")), &user)
            .unwrap();
        assert!(config.forward.public);
        assert_eq!(config.push.ecr_hosts, ["ecr.internal"]);
    }

    #[test]
    fn lambda_env_takes_no_names_that_steer_what_runs() {
        for (key, said) in [
            ("PATH", "PATH, LD_* and DOCKER_* choose what runs"),
            ("LD_PRELOAD", "PATH, LD_* and DOCKER_* choose what runs"),
            ("DOCKER_HOST", "PATH, LD_* and DOCKER_* choose what runs"),
            ("1BAD", "is not a variable name"),
        ] {
            let e = parse(&format!("[lambda.env]\n{key} = \"x\"\n")).unwrap_err();
            assert!(e.to_string().contains(said), "{key}: {e}");
            assert!(matches!(e, Error::Config(_)), "{key}: {e}");
        }
        let e = parse("[lambda.env]\nA = \"two\\nlines\"\n").unwrap_err();
        assert!(e.to_string().contains("more than one line"), "{e}");
        let config = parse("[lambda.env]\nLOG_LEVEL = \"debug\"\n").unwrap();
        assert_eq!(config.lambda.env["LOG_LEVEL"], "debug");
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.vm.backend, BackendKind::Auto);
        assert_eq!(config.vm.name, "n10n-demo");
        assert_eq!(config.vm.memory, ByteSize(8 << 30));
        assert_eq!(config.vm.disk.to_string(), "60GiB");
        assert_eq!(config.sync.dest, "~/n10n/demo");
        assert_eq!(config.sync.exclude, vec!["target/".to_string()]);
        assert_eq!(config.image.platform, Platform("linux/amd64".into()));
        assert_eq!(config.lambda.memory_mb, 1024);
        assert_eq!(config.base.label, "sdkBaseVersion");
    }

    #[test]
    fn full_file_is_read() {
        let config = parse(
            r#"
            [vm]
            backend = "ssh"
            name = "builder"
            cpus = 2
            memory = "512MiB"
            disk = "1.5GiB"
            arch = "aarch64"
            toolchains = ["rust", "jvm", "rust"]
            [ssh]
            host = "10.0.0.5"
            port = 2222
            user = "dev"
            identity = "/keys/id"
            [sync]
            dest = "~/n10n/build"
            exclude = ["node_modules/"]
            [image]
            build = "make image"
            name = "worker"
            tag = "42"
            platform = "linux/arm64"
            [lambda]
            handler = "com.example::handle"
            memory_mb = 2048
            timeout_s = 30
            env = { STAGE = "dev" }
            [base]
            image = "public.ecr.aws/lambda/java:latest"
            label = "base"
            max_age_days = 7
            "#,
        )
        .unwrap();
        assert_eq!(config.vm.backend, BackendKind::Ssh);
        assert_eq!(config.vm.memory, ByteSize(512 << 20));
        assert_eq!(config.vm.disk, ByteSize(3 << 29));
        assert_eq!(config.vm.toolchains, vec![Toolchain::Jvm, Toolchain::Rust]);
        assert_eq!(config.ssh.port, 2222);
        assert_eq!(config.ssh.identity, PathBuf::from("/keys/id"));
        assert_eq!(config.lambda.env["STAGE"], "dev");
        assert_eq!(config.base.max_age_days, 7);
    }

    /// (file, text the error must contain, 1-based line:column it must point at)
    const MALFORMED: &[(&str, &str, &str)] = &[
        (
            "[vm]\nmemory = \"8 gigs\"\n",
            "invalid size \"8 gigs\"",
            ":2:10:",
        ),
        ("[vm]\ndisk = \"lots\"\n", "invalid size", ":2:8:"),
        ("[vm]\nmemory = 8\n", "invalid type", ":2:10:"),
        (
            "[vm]\ncpus = \"four\"\n",
            "invalid type: string \"four\", expected an integer",
            ":2:8:",
        ),
        (
            "[vm]\ncpus = 0\n",
            "cpus must be between 1 and 256",
            ":2:8:",
        ),
        (
            "[vm]\nbackend = \"docker\"\n",
            "unknown variant `docker`",
            ":2:11:",
        ),
        (
            "[vm]\nbackend = \"ssh\"\n",
            "needs the address of the build host",
            ":2:11:",
        ),
        ("[vm]\narch = \"arm\"\n", "unknown variant `arm`", ":2:8:"),
        (
            "[vm]\ntoolchains = [\"python\"]\n",
            "unknown variant `python`",
            ":2:15:",
        ),
        (
            "[vm]\ntoolchains = \"rust\"\n",
            "invalid type: string \"rust\", expected a list",
            ":2:14:",
        ),
        ("[vm]\nname = \"my vm\"\n", "invalid VM name", ":2:8:"),
        ("[vm]\ncpu = 4\n", "unknown field `cpu`", ":2:1:"),
        ("[machine]\ncpus = 4\n", "unknown field `machine`", ":1:2:"),
        (
            "[ssh]\nport = 70000\n",
            "port must be between 1 and 65535",
            ":2:8:",
        ),
        ("[ssh]\nhost = \"\"\n", "must not be empty", ":2:8:"),
        ("[sync]\nexclude = \"target/\"\n", "invalid type", ":2:11:"),
        (
            "[image]\nplatform = \"windows/amd64\"\n",
            "unsupported platform",
            ":2:12:",
        ),
        (
            "[lambda]\nmemory_mb = 64\n",
            "memory_mb must be between 128 and 10240",
            ":2:13:",
        ),
        (
            "[lambda]\ntimeout_s = 901\n",
            "timeout_s must be between 1 and 900",
            ":2:13:",
        ),
        (
            "[lambda]\nephemeral_storage_mb = 256\n",
            "ephemeral_storage_mb must be between 512 and 10240",
            ":2:24:",
        ),
        ("[lambda]\nenv = { A = 1 }\n", "invalid type", ":2:13:"),
        (
            "[base]\nmax_age_days = -1\n",
            "max_age_days must be between 0 and 36500",
            ":2:16:",
        ),
        ("[vm\nbackend = \"ssh\"\n", "", ":1:4:"),
        ("[vm]\nbackend = ssh\n", "", ":2:11:"),
        ("[vm]\ncpus = 4\ncpus = 5\n", "duplicate key", ":3:1:"),
        ("vm = 3\n", "invalid type", ":1:6:"),
    ];

    #[test]
    fn malformed_files_are_rejected_with_a_location() {
        for (text, expected, location) in MALFORMED {
            let err = parse(text).expect_err(text);
            let shown = err.to_string();
            assert!(err.is_usage(), "{text}: not a config error: {shown}");
            assert!(shown.contains(expected), "{text}: {shown}");
            assert!(
                shown.contains(location),
                "{text}: wanted {location} in:\n{shown}"
            );
            assert!(shown.contains("help: "), "{text}: no help in {shown}");
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!("8GiB".parse::<ByteSize>(), Ok(ByteSize(8 << 30)));
        assert_eq!("512M".parse::<ByteSize>(), Ok(ByteSize(512 << 20)));
        assert_eq!("1024".parse::<ByteSize>(), Ok(ByteSize(1024)));
        assert!("8 gigs".parse::<ByteSize>().is_err());
        assert!("GiB".parse::<ByteSize>().is_err());
        assert!("0GiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn project_names_are_sanitised() {
        assert_eq!(project_name(Path::new("/src/Mobile N10N")), "mobile-n10n");
        assert_eq!(project_name(Path::new("/")), "project");
    }

    #[test]
    fn backend_names_parse() {
        assert_eq!("lima".parse::<BackendKind>(), Ok(BackendKind::Lima));
        assert!(
            "docker"
                .parse::<BackendKind>()
                .unwrap_err()
                .contains("auto, lima")
        );
    }
}
