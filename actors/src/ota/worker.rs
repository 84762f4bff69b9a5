//! The OTA worker thread: the only user of the platform ops. It runs one
//! job at a time (check, install, report) and reports back to
//! `OtaService` by message, so the event loop never blocks on the network
//! or the disk.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use actix::{Addr, Message};
use crossbeam_channel::Receiver;
use lwsys_messages::ota::{OtaError, OtaStatus, RollbackRecord};
use tokio::sync::oneshot;

use super::issuers::Issuers;
use super::{
    chunked, DownloadCache, Fetcher, Manifest, ManifestPolicy, OtaHandoff, OtaOps, OtaService,
};

/// A job for the worker.
pub(crate) enum Job {
    /// Fetch and verify the manifest; answered with [`Checked`].
    Check,
    /// Download and install `m`; answered with [`Installed`].
    Install(Box<Manifest>),
    /// `report_current(bad)`; answered on `reply` (if any) with the slots.
    Report { bad: bool, reply: Option<oneshot::Sender<Result<OtaStatus, OtaError>>> },
    /// Roll the trial back for `reason`; answered with the slots.
    RollBack { reason: RollbackRecord, reply: oneshot::Sender<Result<OtaStatus, OtaError>> },
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
    /// The trusted issuer keys, the signed floor, the clock's validity.
    pub(crate) keys: Issuers,
    pub(crate) policy: ManifestPolicy,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) addr: Addr<OtaService>,
    /// Where the download is saved for a resume (`None`: not saved).
    pub(crate) cache: Option<DownloadCache>,
    /// Told the slots after each job, for a replacement service.
    pub(crate) handoff: OtaHandoff,
}

impl Worker {
    /// Runs jobs until the service drops its end of the queue (it stopped
    /// or died), then gives the ops back for a replacement.
    pub(crate) fn run(mut self, jobs: Receiver<Job>) -> Box<dyn OtaOps> {
        self.addr.do_send(self.keys.trust());
        for job in jobs.iter() {
            if self.cancel.load(std::sync::atomic::Ordering::Relaxed) {
                // The service is gone: what it queued is nobody's now, and
                // its replacement waits for these ops.
                break;
            }
            match job {
                Job::Check => {
                    let (r, trust) = self.keys.check(
                        self.ops.as_ref(),
                        &self.fetcher,
                        &self.policy,
                        &self.cancel,
                    );
                    // Trust first: whoever sees the outcome sees the keys.
                    if let Some(t) = trust {
                        self.addr.do_send(t);
                    }
                    self.addr.do_send(Checked(r));
                }
                Job::Install(m) => {
                    let addr = self.addr.clone();
                    let r = chunked::install_auto(
                        self.ops.as_mut(),
                        &self.fetcher,
                        &m,
                        &self.cancel,
                        &mut |e| addr.do_send(e),
                        self.cache.as_ref(),
                    );
                    // Slots first: whoever sees the outcome sees them too.
                    self.slots();
                    self.addr.do_send(Installed(r.map(|()| *m)));
                }
                Job::RollBack { reason, reply } => {
                    let r = self.ops.roll_back(reason).map(|()| self.ops.status());
                    self.slots();
                    let _ = reply.send(r);
                }
                Job::Report { bad, reply } => {
                    let r = self.ops.report_current(bad).map(|()| self.ops.status());
                    self.slots();
                    if let Some(tx) = reply {
                        let _ = tx.send(r);
                    }
                }
            }
        }
        self.ops
    }

    fn slots(&self) {
        let s = self.ops.status();
        self.handoff.set_slots(&s);
        self.addr.do_send(Slots(s));
    }
}
