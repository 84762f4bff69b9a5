//! The error of a [`SystemHandle`](super::SystemHandle) call, its protocol
//! code, and the one place a failed send (`MailboxError`) becomes one.

use actix::MailboxError;
use lwsys_actors::platform::OpError;
use lwsys_messages::state::WaitTimedOut;
use lwsys_messages::supervisor::{NotifierError, WalkError};
use lwsys_messages::ErrorCode;

/// An error from a [`SystemHandle`](super::SystemHandle) call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A walk was denied, dropped by shutdown, or failed inside.
    #[error(transparent)]
    Walk(#[from] WalkError),
    /// The notifier registry refused the call.
    #[error(transparent)]
    Notifier(#[from] NotifierError),
    /// A wait ran out of time.
    #[error(transparent)]
    WaitTimedOut(#[from] WaitTimedOut),
    /// The service that owns the answer has stopped.
    #[error("service unavailable: {0}")]
    Gone(String),
    /// A platform op is not provided or failed.
    #[error(transparent)]
    Op(#[from] OpError),
}

impl Error {
    /// The protocol error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Walk(e) => e.code(),
            Self::Notifier(e) => e.code(),
            Self::WaitTimedOut(_) => ErrorCode::Timeout,
            Self::Gone(_) => ErrorCode::Internal,
            Self::Op(e) => e.code(),
        }
    }
}

/// The one mapping of a failed send: the actor that owns the answer has
/// stopped (or, for a send with a timeout, did not answer in time).
impl From<MailboxError> for Error {
    fn from(e: MailboxError) -> Self {
        Self::Gone(e.to_string())
    }
}
