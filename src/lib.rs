//! n10n-dev: a Linux build machine for a Mac developer in one command.
//!
//! Layers, top to bottom: `cli` → `commands` (one file per command, its arguments with it) →
//! `machine` (shared workflows: connect, bring up, the built image a command works on) →
//! capabilities (`backend`, `sync`, `provision`, `image`, `lambda`, `registry`, `engine`,
//! `push`, `forwarder`, `base`), which take the machine as one `build_machine::Machine` value
//! (the replica behind an SSH session, or the project on this machine) → `ssh`. Helpers that several of
//! them share have modules named for what they are (`digest`, `time`, `size`, `quick_ack`,
//! `stdout`, `accept`, `own_ports`, `local`, `progress`); configuration (`config`), state
//! (`state`), host facts (`host`) and errors (`error`) are plain data passed down.

pub mod accept;
pub mod backend;
pub mod base;
pub mod build_machine;
pub mod cli;
pub mod commands;
pub mod config;
pub mod digest;
pub mod docker_context;
pub mod engine;
pub mod error;
pub mod forwarder;
pub mod host;
pub mod image;
pub mod image_build;
pub mod lambda;
pub mod local;
pub mod machine;
pub mod own_ports;
pub mod progress;
pub mod provision;
pub mod push;
pub mod quick_ack;
pub mod registry;
pub mod signals;
pub mod size;
pub mod ssh;
pub mod state;
pub mod stdout;
pub mod sync;
pub mod terminal_text;
pub mod time;
pub mod user_config;

pub use cli::main;
