//! Configuration: the `lwsysd` command line (clap) and the TOML config file
//! (serde), every key with a documented default; flags override the file.
//! `docs/config.md` lists every key. The command line is in `cli`, the
//! file's sections in `sections`, range checks in `validate`, reading and
//! its located errors in `error` (positions from the parser's spans,
//! `locate`), and the mapping to each component's settings in `settings`.

mod cli;
mod error;
mod locate;
mod sections;
mod settings;
mod validate;

pub use cli::{socket_path, state_dir, Cli};
pub use error::ConfigError;
/// The socket rules the client shares, kept reachable here for callers of
/// `lwsys::config`.
pub use lwsys_messages::socket::{client_socket, PACKAGED_SOCKET, SOCKET_NAME};
pub use sections::{
    BlobsSection, Config, ConfirmMode, FleetCommands, FleetSection, LogSection, OtaSection,
    SupervisorSection, SystemSection, TimeSection, TimeSourceName, TrustSection,
};
pub use validate::RangeError;

/// `[control]`: the control server's own settings type.
pub use crate::control::settings::ControlSettings as ControlSection;
/// `[log] format`: logging's own type.
pub use crate::logging::LogFormat;
