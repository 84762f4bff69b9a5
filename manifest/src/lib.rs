//! The lwsys OTA manifest format, as pure code with no actor, runtime or
//! network in it, so the device's OTA service (`lwsys-actors`) and the
//! issuer's `lwsysctl ota publish` / `ota verify` (`lwsys-ctl`) share one
//! implementation.
//!
//! - [`jwk`]: the issuer's P-521 keys as JWKs (parse, print, generate).
//! - [`jws`]: the signed [`Manifest`], a compact ES512 JWS, and the checks a
//!   device applies to it ([`verify_manifest`], [`verify_with_keys`],
//!   [`ManifestPolicy`]): signature, variant, order, expiry, floor.
//! - [`keys`]: issuer keys by `kid` ([`IssuerKey`]).
//! - [`keyring`]: the device's durable trust: announced and retired keys
//!   and the signed anti-rollback floor ([`Keyring`]).
//! - [`chunks`]: the chunk index and chunk file of issue 17 (format,
//!   builder, checks, the device's [`chunks::LocalIndex`]).
//! - [`publish`](mod@publish): measure, gzip and sign an image into a
//!   directory ready to serve, with its chunk index unless told not to.
//! - [`release`]: a release's files checked against its manifest (the
//!   chunk index a device trusts, `lwsysctl ota verify`).
//!
//! Errors are [`OtaError`], shared with the protocol.
#![forbid(unsafe_code)]

pub mod chunks;
pub mod jwk;
pub mod jws;
pub mod keyring;
pub mod keys;
pub mod publish;
pub mod release;

pub use chunks::{ChunkEntry, ChunkIndex, LocalIndex, DEFAULT_CHUNK_SIZE};
pub use jwk::{keygen, parse_private_jwk, parse_public_jwk};
pub use jws::{
    check_manifest, check_path, verify_manifest, verify_with_keys, ChunkRef, Manifest,
    ManifestPolicy, Urgency, Verified,
};
pub use keyring::{Keyring, KeyringFile, Learned};
pub use keys::IssuerKey;
pub use lwsys_messages::ota::OtaError;
/// The issuer's public key type (P-521 ECDSA), as [`parse_public_jwk`] returns it.
pub use p521::ecdsa::VerifyingKey;
pub use publish::{publish, publish_with, PublishOptions};
pub use release::{check_index, verify_chunk_file, verify_image_gz};

#[cfg(test)]
mod release_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod trust_tests;
