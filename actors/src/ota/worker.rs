//! The OTA worker thread: the only user of the platform ops. It runs one
//! job at a time (check, install, report) and reports back to
//! `OtaService` by message, so the event loop never blocks on the network
//! or the disk.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use actix::{Addr, Message};
use crossbeam_channel::Receiver;
use lwsys_messages::ota::{OtaError, OtaStatus};
use p521::ecdsa::VerifyingKey;
use tokio::sync::oneshot;

use super::{pipeline, Fetcher, Manifest, ManifestPolicy, OtaOps, OtaService};

/// A job for the worker.
pub(crate) enum Job {
    /// Fetch and verify the manifest; answered with [`Checked`].
    Check,
    /// Download and install `m`; answered with [`Installed`].
    Install(Manifest),
    /// `report_current(bad)`; answered on `reply` (if any) with the slots.
    Report { bad: bool, reply: Option<oneshot::Sender<Result<OtaStatus, OtaError>>> },
}

/// The manifest check's outcome.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Checked(pub(crate) Result<Manifest, OtaError>);

/// The install's outcome (the manifest installed).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Installed(pub(crate) Result<Manifest, OtaError>);

/// The slots after a job, for `ota.status` while the worker is busy.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Slots(pub(crate) OtaStatus);

/// What the worker needs besides its jobs.
pub(crate) struct Worker {
    pub(crate) ops: Box<dyn OtaOps>,
    pub(crate) fetcher: Fetcher,
    pub(crate) key: VerifyingKey,
    pub(crate) policy: ManifestPolicy,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) addr: Addr<OtaService>,
}

impl Worker {
    /// Runs jobs until the service drops its end of the queue.
    pub(crate) fn run(mut self, jobs: Receiver<Job>) {
        for job in jobs.iter() {
            match job {
                Job::Check => {
                    let r =
                        pipeline::check(self.ops.as_ref(), &self.fetcher, &self.key, &self.policy);
                    self.addr.do_send(Checked(r));
                }
                Job::Install(m) => {
                    let addr = self.addr.clone();
                    let r = pipeline::install(
                        self.ops.as_mut(),
                        &self.fetcher,
                        &m,
                        &self.cancel,
                        &mut |e| addr.do_send(e),
                    );
                    // Slots first: whoever sees the outcome sees them too.
                    self.addr.do_send(Slots(self.ops.status()));
                    self.addr.do_send(Installed(r.map(|()| m)));
                }
                Job::Report { bad, reply } => {
                    let r = self.ops.report_current(bad).map(|()| self.ops.status());
                    self.addr.do_send(Slots(self.ops.status()));
                    if let Some(tx) = reply {
                        let _ = tx.send(r);
                    }
                }
            }
        }
    }
}
