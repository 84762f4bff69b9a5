//! `SystemdNotifier`: tells systemd (`Type=notify`) how the system is doing
//! through sd_notify: `STATUS=` with the state and what holds the walk,
//! `READY=1` when OPERATIONAL is first reached, `EXTEND_TIMEOUT_USEC=` while
//! the boot walk is held by a notifier that is still working, `WATCHDOG=1`
//! at half of `WATCHDOG_USEC`, and `STOPPING=1` when shutdown begins.
//! Started only when `NOTIFY_SOCKET` is set.

use std::time::Duration;

use actix::prelude::*;
use lwsys_messages::protocol::SystemEvent;
use lwsys_messages::state::SystemState;
use sd_notify::NotifyState;
use slog::{debug, warn, Logger};

use crate::handle::SystemHandle;

/// How often the boot walk is looked at while it is not yet OPERATIONAL.
const BOOT_POLL: Duration = Duration::from_secs(1);

/// How much more start-up time is asked for each time a held walk is seen:
/// more than [`BOOT_POLL`], so the extensions overlap.
const EXTEND_BY: Duration = Duration::from_secs(5);

/// Speaks sd_notify for the daemon. See the module docs.
pub struct SystemdNotifier {
    sys: SystemHandle,
    log: Logger,
    ready: bool,
    stopping: bool,
    boot_timer: Option<SpawnHandle>,
}

impl SystemdNotifier {
    /// Start the notifier if systemd asked for notifications.
    pub fn start_if_wanted(sys: &SystemHandle, log: &Logger) -> Option<Addr<Self>> {
        std::env::var_os("NOTIFY_SOCKET")?;
        let log = log.new(slog::o!("service" => "systemd"));
        Some(
            Self { sys: sys.clone(), log, ready: false, stopping: false, boot_timer: None }.start(),
        )
    }

    fn notify(&self, states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(false, states) {
            warn!(self.log, "sd_notify failed"; "error" => %e);
        }
    }

    /// Look at the walk; while a notifier holds it, say so and ask for
    /// more start-up time.
    fn check_boot(&mut self, ctx: &mut Context<Self>) {
        let sys = self.sys.clone();
        ctx.spawn(async move { sys.explain().await }.into_actor(self).map(|res, act, ctx| {
            let Ok(e) = res else { return };
            if act.ready || act.stopping {
                return;
            }
            // The boot may have finished before our subscription landed.
            if e.state >= SystemState::Operational && e.state != SystemState::ContextDestroying {
                act.become_ready(e.state, ctx);
                return;
            }
            match e.pending {
                Some(p) => {
                    let status =
                        format!("{}: {} held by {}: {}", e.state, p.target, p.by, p.reason);
                    let usec = u32::try_from(EXTEND_BY.as_micros()).unwrap_or(u32::MAX);
                    act.notify(&[
                        NotifyState::Status(&status),
                        NotifyState::ExtendTimeoutUsec(usec),
                    ]);
                }
                None => act.notify(&[NotifyState::Status(&format!("{}", e.state))]),
            }
        }));
    }
}

impl Actor for SystemdNotifier {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let me = ctx.address().recipient();
        let sys = self.sys.clone();
        ctx.spawn(async move { sys.subscribe(me).await }.into_actor(self).map(|_, act, ctx| {
            act.check_boot(ctx);
        }));
        self.boot_timer = Some(ctx.run_interval(BOOT_POLL, |act, ctx| act.check_boot(ctx)));
        if let Some(usec) = watchdog_usec(|k| std::env::var(k).ok(), std::process::id()) {
            let every = Duration::from_micros(usec / 2);
            debug!(self.log, "watchdog enabled"; "interval_ms" => every.as_millis());
            ctx.run_interval(every, |act, _| act.notify(&[NotifyState::Watchdog]));
        }
        let sys = self.sys.clone();
        ctx.spawn(async move { sys.shutdown_begun().await }.into_actor(self).map(|_, act, _| {
            act.stopping = true;
            act.notify(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
        }));
    }
}

impl Handler<SystemEvent> for SystemdNotifier {
    type Result = ();

    fn handle(&mut self, msg: SystemEvent, ctx: &mut Self::Context) {
        let SystemEvent::State { to, .. } = msg else { return };
        if self.stopping {
            return;
        }
        if to == SystemState::Operational && !self.ready {
            self.become_ready(to, ctx);
        } else {
            self.notify(&[NotifyState::Status(&to.to_string())]);
        }
    }
}

impl SystemdNotifier {
    fn become_ready(&mut self, state: SystemState, ctx: &mut Context<Self>) {
        self.ready = true;
        // The boot is over: no more polling, so an idle daemon stays idle.
        if let Some(t) = self.boot_timer.take() {
            ctx.cancel_future(t);
        }
        self.notify(&[NotifyState::Ready, NotifyState::Status(&state.to_string())]);
    }
}

/// The watchdog period systemd asks for: `WATCHDOG_USEC`, when
/// `WATCHDOG_PID` is unset or names this process (sd_watchdog_enabled's
/// rule; the crate's helper insists on the pid being set).
fn watchdog_usec(env: impl Fn(&str) -> Option<String>, pid: u32) -> Option<u64> {
    let usec = env("WATCHDOG_USEC")?.parse::<u64>().ok().filter(|u| *u > 0)?;
    match env("WATCHDOG_PID") {
        Some(p) if p.parse::<u32>().ok() != Some(pid) => None,
        _ => Some(usec),
    }
}

#[cfg(test)]
mod tests {
    use super::watchdog_usec;

    #[test]
    fn the_watchdog_is_ours_unless_another_pid_is_named() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert_eq!(watchdog_usec(env(&[("WATCHDOG_USEC", "200000")]), 7), Some(200_000));
        assert_eq!(
            watchdog_usec(env(&[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "7")]), 7),
            Some(200_000)
        );
        assert_eq!(
            watchdog_usec(env(&[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "8")]), 7),
            None
        );
        assert_eq!(watchdog_usec(env(&[("WATCHDOG_USEC", "0")]), 7), None);
        assert_eq!(watchdog_usec(env(&[("WATCHDOG_USEC", "soon")]), 7), None);
        assert_eq!(watchdog_usec(env(&[]), 7), None);
    }
}
