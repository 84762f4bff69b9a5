//! `ClockService`: owns whether lwsys knows the time. It is a built-in
//! notifier that defers the walk into TIME_VALID until the time is valid
//! (host clock trusted, an SNTP sync, or `clock.set`), then resumes it; it
//! runs the SNTP client with backoff and periodic re-sync and pushes
//! `clock` events to its subscribers.
//!
//! Timers: every timer this service arms is armed `wake_latency` earlier
//! than the delay it stands for, so that a device that sleeps and takes
//! that long to wake is up in time for the attempt.

pub mod backoff;
pub mod sntp;
pub mod softclock;
#[cfg(test)]
mod tests;

use crate::lifecycle::DeathNotice;
use lwsys_messages::lifecycle::{Crash, Stop, WatchDeath};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::future::LocalBoxFuture;
use lwsys_messages::clock::{
    ClockError, ClockEvent, ClockReading, ClockSource, GetClock, SetClock, SubscribeClock,
};
use lwsys_messages::state::{Changed, Consent, Resume, SystemState, Verdict};
use slog::{debug, info, warn, Logger};

pub use backoff::Backoff;
pub use softclock::{ClockOps, LinuxClockOps, SetOutcome, SoftClock};

/// The NTP server asked when the NTP_SERVER blob is empty.
pub const DEFAULT_NTP_SERVER: &str = "pool.ntp.org";

/// How the service comes to trust the time (config `time.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeSource {
    /// The host clock, when the host says it is synchronised or when
    /// `trust_unsynced` is set.
    #[default]
    System,
    /// SNTP against the server the NTP_SERVER blob names.
    Sntp,
}

/// The clock service's configuration (the `[time]` table).
#[derive(Debug, Clone)]
pub struct ClockConfig {
    /// How time becomes valid, besides `clock.set`. Default `System`.
    pub source: TimeSource,
    /// With `System`: trust the host clock even if the host does not say it
    /// is synchronised. Default true, so a bare `lwsysd` reaches
    /// OPERATIONAL.
    pub trust_unsynced: bool,
    /// With `System` and not trusting: how often to look again. Default
    /// 10 s.
    pub system_poll: Duration,
    /// The server used when the NTP_SERVER blob is empty. Default
    /// [`DEFAULT_NTP_SERVER`].
    pub default_server: String,
    /// How long after a successful sync to sync again. Default 1 h.
    pub resync: Duration,
    /// The first retry delay after a failure. Default 1 s.
    pub backoff_min: Duration,
    /// The longest retry delay. Default 5 min.
    pub backoff_max: Duration,
    /// How long one exchange (DNS included) may take. Default 5 s.
    pub query_timeout: Duration,
    /// How long the device takes to wake; every timer is armed that much
    /// earlier. Default 0 (the ops' `wake_latency_us`).
    pub wake_latency: Duration,
    /// The notifier name sent in `Resume`. Default `"clock"`.
    pub name: String,
}

impl Default for ClockConfig {
    fn default() -> Self {
        Self {
            source: TimeSource::System,
            trust_unsynced: true,
            system_poll: Duration::from_secs(10),
            default_server: DEFAULT_NTP_SERVER.to_owned(),
            resync: Duration::from_secs(3600),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            query_timeout: Duration::from_secs(5),
            wake_latency: Duration::ZERO,
            name: "clock".to_owned(),
        }
    }
}

/// Reads the NTP server name (host or host:port) before every attempt, so a
/// changed NTP_SERVER blob takes effect at the next one. An empty name
/// means [`ClockConfig::default_server`].
pub type ServerName = Box<dyn Fn() -> LocalBoxFuture<'static, String>>;

/// A [`ServerName`] from a plain closure.
pub fn server_from_fn(f: impl Fn() -> String + 'static) -> ServerName {
    Box::new(move || {
        let name = f();
        Box::pin(async move { name })
    })
}

/// Owns whether the time is valid. See the module docs.
pub struct ClockService {
    cfg: ClockConfig,
    ops: Arc<dyn ClockOps>,
    server: ServerName,
    resume: Recipient<Resume>,
    subscribers: Vec<Recipient<ClockEvent>>,
    valid: bool,
    source: ClockSource,
    last_sample: Option<(i64, u64)>,
    last_sync_us: Option<u64>,
    last_error: Option<String>,
    deferred: bool,
    in_flight: bool,
    backoff: Backoff,
    timer: Option<SpawnHandle>,
    log: Logger,
    death: DeathNotice,
}

impl ClockService {
    /// A service using `ops` to set the time, `server` to read the NTP
    /// server name, and sending `Resume { name: cfg.name }` to `resume`
    /// when it has deferred TIME_VALID and the time becomes valid.
    pub fn new(
        log: &Logger,
        cfg: ClockConfig,
        ops: Arc<dyn ClockOps>,
        server: ServerName,
        resume: Recipient<Resume>,
    ) -> Self {
        Self {
            backoff: Backoff::new(cfg.backoff_min, cfg.backoff_max),
            cfg,
            ops,
            server,
            resume,
            subscribers: Vec::new(),
            valid: false,
            source: ClockSource::None,
            last_sample: None,
            last_sync_us: None,
            last_error: None,
            deferred: false,
            in_flight: false,
            timer: None,
            log: log.new(slog::o!("service" => "clock")),
            death: DeathNotice::new(lwsys_messages::supervisor::ServiceKind::Clock),
        }
    }

    fn reading(&self) -> ClockReading {
        ClockReading {
            unix_us: self.ops.now_us(),
            valid: self.valid,
            source: self.source,
            last_offset_us: self.last_sample.map(|s| s.0),
            last_delay_us: self.last_sample.map(|s| s.1),
            last_sync_us: self.last_sync_us,
        }
    }

    /// Arms the next SNTP attempt `delay` from now (less the wake latency),
    /// replacing any armed one. Returns the delay armed.
    fn arm(&mut self, delay: Duration, ctx: &mut Context<Self>) -> Duration {
        if let Some(t) = self.timer.take() {
            ctx.cancel_future(t);
        }
        let armed = delay.saturating_sub(self.cfg.wake_latency);
        self.timer = Some(ctx.run_later(armed, |act, ctx| {
            act.timer = None;
            act.attempt(ctx);
        }));
        armed
    }

    fn attempt(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight {
            return;
        }
        self.in_flight = true;
        let name = (self.server)();
        let default = self.cfg.default_server.clone();
        let timeout = self.cfg.query_timeout;
        let ops = self.ops.clone();
        let exchange = async move {
            let mut name = name.await.trim().to_owned();
            if name.is_empty() {
                name = default;
            }
            let result = tokio::time::timeout(timeout, async {
                let addr = sntp::resolve(&name).await?;
                sntp::query(addr, timeout, || ops.now_us()).await
            })
            .await
            .unwrap_or_else(|_| {
                Err(sntp::SntpError::Timeout(u64::try_from(timeout.as_millis()).unwrap_or(0)))
            });
            (name, result)
        };
        ctx.spawn(exchange.into_actor(self).map(|(server, result), act, ctx| {
            act.in_flight = false;
            act.finish_attempt(server, result, ctx);
        }));
    }

    fn finish_attempt(
        &mut self,
        server: String,
        result: Result<sntp::Sample, sntp::SntpError>,
        ctx: &mut Context<Self>,
    ) {
        // DENY and RSTR mean "stop asking me" (RFC 4330 section 8): wait the
        // longest delay rather than walk the schedule up again.
        let refused = matches!(&result,
            Err(sntp::SntpError::KissOfDeath(code)) if code == "DENY" || code == "RSTR");
        let applied = result.map_err(|e| e.to_string()).and_then(|s| {
            let target = i128::from(self.ops.now_us()) + i128::from(s.offset_us);
            let target = u64::try_from(target).map_err(|_| "offset out of range".to_owned())?;
            ClockError::check_range(target).map_err(|e| format!("server time rejected: {e}"))?;
            let how = self.ops.set_clock(target).map_err(|e| e.to_string())?;
            Ok((s, how))
        });
        match applied {
            Ok((s, how)) => {
                self.last_sample = Some((s.offset_us, s.delay_us));
                self.last_sync_us = Some(self.ops.now_us());
                self.last_error = None;
                self.source = match how {
                    SetOutcome::System => ClockSource::Sntp,
                    SetOutcome::Soft => ClockSource::Soft,
                };
                info!(self.log, "sntp synced"; "server" => crate::LogSafe(&server), "offset_us" => s.offset_us,
                    "delay_us" => s.delay_us, "stratum" => s.stratum, "source" => %self.source);
                self.backoff.reset();
                self.arm(self.cfg.resync, ctx);
                self.emit(ClockEvent::Synced {
                    offset_us: s.offset_us,
                    delay_us: s.delay_us,
                    server,
                });
                self.became_valid();
            }
            Err(reason) => {
                let delay = if refused { self.cfg.backoff_max } else { self.backoff.next_delay() };
                let armed = self.arm(delay, ctx);
                let retry_in_ms = u64::try_from(armed.as_millis()).unwrap_or(u64::MAX);
                warn!(self.log, "sntp failed"; "server" => crate::LogSafe(&server), "reason" => crate::LogSafe(&reason),
                    "retry_in_ms" => retry_in_ms);
                self.last_error = Some(reason.clone());
                self.emit(ClockEvent::Failed { reason, server, retry_in_ms });
            }
        }
    }

    fn emit(&mut self, event: ClockEvent) {
        self.subscribers.retain(|s| s.connected());
        for s in &self.subscribers {
            s.do_send(event.clone());
        }
    }

    fn became_valid(&mut self) {
        if !self.valid {
            self.valid = true;
            info!(self.log, "time valid"; "source" => %self.source);
        }
        if std::mem::take(&mut self.deferred) {
            self.resume.do_send(Resume { name: self.cfg.name.clone() });
        }
    }

    fn check_system(&mut self, ctx: &mut Context<Self>) {
        if self.cfg.trust_unsynced || self.ops.host_synchronised() {
            self.source = ClockSource::System;
            self.became_valid();
            return;
        }
        debug!(self.log, "host clock not synchronised yet");
        let poll = self.cfg.system_poll.saturating_sub(self.cfg.wake_latency);
        self.timer = Some(ctx.run_later(poll, |act, ctx| {
            act.timer = None;
            if !act.valid {
                act.check_system(ctx);
            }
        }));
    }
}

impl Actor for ClockService {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        match self.cfg.source {
            TimeSource::System => self.check_system(ctx),
            TimeSource::Sntp => self.attempt(ctx),
        }
    }
}

impl Handler<GetClock> for ClockService {
    type Result = MessageResult<GetClock>;

    fn handle(&mut self, _msg: GetClock, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.reading())
    }
}

impl Handler<SetClock> for ClockService {
    type Result = Result<ClockReading, ClockError>;

    fn handle(&mut self, msg: SetClock, _ctx: &mut Self::Context) -> Self::Result {
        ClockError::check_range(msg.unix_us)?;
        let how = self.ops.set_clock(msg.unix_us)?;
        self.source = match how {
            SetOutcome::System => ClockSource::Set,
            SetOutcome::Soft => ClockSource::Soft,
        };
        self.last_sync_us = Some(self.ops.now_us());
        info!(self.log, "clock set"; "unix_us" => msg.unix_us, "source" => %self.source);
        self.became_valid();
        Ok(self.reading())
    }
}

impl Handler<SubscribeClock> for ClockService {
    type Result = ();

    fn handle(&mut self, msg: SubscribeClock, _ctx: &mut Self::Context) {
        self.subscribers.push(msg.0);
    }
}

impl Handler<Consent> for ClockService {
    type Result = MessageResult<Consent>;

    fn handle(&mut self, msg: Consent, _ctx: &mut Self::Context) -> Self::Result {
        // Shutdown must never wait for the time.
        let crosses = msg.current < SystemState::TimeValid
            && msg.target >= SystemState::TimeValid
            && msg.target != SystemState::ContextDestroying;
        if !crosses || self.valid {
            return MessageResult(Verdict::Allow);
        }
        self.deferred = true;
        let why = match (&self.cfg.source, &self.last_error) {
            (TimeSource::Sntp, Some(e)) => format!("time not valid yet: sntp {e}"),
            (TimeSource::Sntp, None) => "time not valid yet: waiting for sntp".to_owned(),
            (TimeSource::System, _) => "time not valid yet: host clock unsynchronised".to_owned(),
        };
        MessageResult(Verdict::defer(why))
    }
}

impl Handler<lwsys_messages::state::Aborted> for ClockService {
    type Result = ();

    /// The clock prepares nothing for a transition, so there is nothing to
    /// undo.
    fn handle(&mut self, _msg: lwsys_messages::state::Aborted, _ctx: &mut Self::Context) {}
}

impl Handler<Changed> for ClockService {
    type Result = ();

    fn handle(&mut self, msg: Changed, _ctx: &mut Self::Context) {
        debug!(self.log, "state changed"; "from" => %msg.from, "to" => %msg.to);
    }
}

impl Handler<WatchDeath> for ClockService {
    type Result = ();

    fn handle(&mut self, msg: WatchDeath, _ctx: &mut Self::Context) {
        self.death.watch(msg.0);
    }
}

impl Handler<Stop> for ClockService {
    type Result = ();

    /// Its system is torn down: stop without asking for a restart.
    fn handle(&mut self, _msg: Stop, ctx: &mut Self::Context) {
        self.death.forget();
        ctx.stop();
    }
}

impl Handler<Crash> for ClockService {
    type Result = ();

    /// The fault hook: fail as a bug in a handler would.
    fn handle(&mut self, _msg: Crash, _ctx: &mut Self::Context) {
        panic!("fault injected into the ClockService (debug.crash)");
    }
}
