//! Integration tests: the real binary against a real OpenSSH sshd on 127.0.0.1.

mod harness;

mod lima;
mod native;

mod artifacts;
mod config;
mod run;
mod shell;
mod ssh_config;
mod sync;
mod sync_props;
mod vagrant;
