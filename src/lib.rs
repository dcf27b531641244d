//! n10n-dev: a Linux build machine for a Mac developer in one command.
//!
//! Layers, top to bottom: `cli` → `commands` → `machine` (shared workflows) → `backend`, `sync`,
//! `provision`, `image` → `ssh`. Configuration (`config`) and host facts (`host`) are plain data
//! passed down.

pub mod accept;
pub mod backend;
pub mod base;
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
pub mod lambda;
pub mod local;
pub mod machine;
pub mod own_ports;
pub mod progress;
pub mod provision;
pub mod push;
pub mod registry;
pub mod ssh;
pub mod state;
pub mod stdout;
pub mod sync;

pub use cli::main;
