//! One file per subcommand; orchestration only.

pub mod build_image;
pub mod check_base;
pub mod destroy;
pub mod docker_context;
pub mod doctor;
pub mod env;
pub mod invoke;
pub mod ports;
pub mod provision;
pub mod push;
pub mod run;
pub mod shell;
pub mod ssh_config;
pub mod status;
pub mod stop;
pub mod sync;
pub mod up;

pub use crate::machine::Context;
