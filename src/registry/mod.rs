//! The OCI distribution side: image references, credentials resolved on this machine, and a
//! registry client. `check-base` reads with it; `push` verifies what it pushed.

mod client;
pub mod credentials;
pub mod ecr;
mod reference;

pub use client::{Client, Manifest};
pub use credentials::Credentials;
pub use reference::{Reference, is_sha256_digest, is_valid_tag};

/// A client for the registry of `reference`, with the credentials this machine has for it.
pub fn client_for(reference: &Reference) -> crate::error::Result<Client> {
    let credentials = credentials::resolve(&reference.registry)?;
    Client::new(reference.api_host(), credentials)
}
