//! Integration tests: the real binary against a real OpenSSH sshd on 127.0.0.1 (and, for
//! images, the real Docker engine).

mod harness;

mod artifacts;
mod check_base;
mod config;
mod forwarder;
mod image;
mod invoke;
mod lambda;
mod lima;
mod native;
mod newcomer;
mod push;
mod registry;
mod run;
mod safety;
mod shell;
mod ssh_config;
mod sync;
mod sync_props;
mod vagrant;
