//! Tests of the platform ops: absent ops are errors, the default Linux
//! reboot command and clock ops, and the reboot status.

use std::sync::atomic::{AtomicUsize, Ordering};

use lwsys_messages::ota::{OtaError, OtaPhase};

use super::*;
use crate::ota::Manifest;

struct CountingOps(AtomicUsize);

impl SystemOps for CountingOps {
    fn reboot(&self) -> Result<(), OpError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn set_clock(&self, _unix_us: u64) -> Result<SetOutcome, OpError> {
        Err(OpError::NotProvided("set_clock"))
    }

    fn wake_latency_us(&self) -> u64 {
        250
    }
}

struct NoOta;

impl OtaOps for NoOta {
    fn start(&mut self, _m: &Manifest) -> Result<(), OtaError> {
        Ok(())
    }
    fn write(&mut self, _chunk: &[u8]) -> Result<(), OtaError> {
        Ok(())
    }
    fn abort(&mut self) -> Result<(), OtaError> {
        Ok(())
    }
    fn finalize(&mut self, _m: &Manifest) -> Result<(), OtaError> {
        Ok(())
    }
    fn report_current(&mut self, _bad: bool) -> Result<(), OtaError> {
        Ok(())
    }
    fn progress(&mut self, _phase: OtaPhase, _percent: u8) {}
    fn last_fw_unixtime(&self) -> u64 {
        1_700_000_000
    }
}

#[actix_rt::test]
async fn absent_ops_are_clear_errors_not_panics() {
    let ops = Ops::none();
    assert_eq!(ops.present(), vec!["attach"]);
    assert_eq!(ops.reboot_now(), Err(OpError::NotProvided("reboot")));
    assert_eq!(ops.set_clock(1_700_000_000_000_000), Err(OpError::NotProvided("set_clock")));
    assert_eq!(ops.with_ota_ops(|o| o.last_fw_unixtime()), Err(OpError::NotProvided("ota")));
    let e = ops.jit_trust_query(&[1, 2, 3]).await.unwrap_err();
    assert_eq!(e, OpError::NotProvided("jit_trust_query"));
    assert_eq!(e.code(), ErrorCode::NotFound);
    assert!(e.to_string().contains("jit_trust_query"), "{e}");
    assert_eq!(ops.wake_latency_us(), 0);
    assert!(!ops.provides("bogus"));
}

#[test]
fn custom_ops_are_the_ones_called_and_listed_as_configured() {
    let custom = Arc::new(CountingOps(AtomicUsize::new(0)));
    let ops = Ops::new(custom.clone()).with_ota(Box::new(NoOta));
    assert_eq!(ops.present(), vec!["reboot", "set_clock", "attach", "ota"]);
    ops.reboot_now().unwrap();
    assert_eq!(custom.0.load(Ordering::SeqCst), 1);
    assert_eq!(ops.wake_latency_us(), 250);
    assert_eq!(ops.with_ota_ops(|o| o.last_fw_unixtime()), Ok(1_700_000_000));
}

#[test]
fn reboot_setting_is_exec_or_a_command_line_without_shell() {
    assert_eq!(RebootAction::parse("exec").unwrap(), RebootAction::Exec);
    assert_eq!(
        RebootAction::parse("  systemctl   reboot ").unwrap(),
        RebootAction::Command(vec!["systemctl".into(), "reboot".into()])
    );
    // "exec" with arguments is a command named exec, not the built-in.
    assert!(matches!(RebootAction::parse("exec foo").unwrap(), RebootAction::Command(_)));
    assert!(RebootAction::parse("   ").is_err());
}

fn command_ops(argv: &[&str]) -> LinuxSystemOps {
    let argv = argv.iter().map(|s| s.to_string()).collect();
    LinuxSystemOps::new(
        RebootAction::Command(argv),
        Arc::new(LinuxClockOps::new(false, SoftClock::default())),
        0,
    )
}

#[test]
fn reboot_command_succeeds_on_exit_zero_and_reports_failure() {
    command_ops(&["/bin/true"]).reboot().unwrap();
    let e = command_ops(&["/bin/false"]).reboot().unwrap_err();
    assert!(matches!(&e, OpError::Failed { op: "reboot", message } if message.contains("exit")));
    assert_eq!(e.code(), ErrorCode::Io);
    let e = command_ops(&["/nonexistent/lwsys-reboot"]).reboot().unwrap_err();
    assert!(e.to_string().contains("cannot run"), "{e}");
}

#[test]
fn a_hung_reboot_command_is_killed_and_reported() {
    let ops = command_ops(&["sleep", "30"]).command_timeout(Duration::from_millis(100));
    let t = Instant::now();
    let e = ops.reboot().unwrap_err();
    assert!(e.to_string().contains("did not finish"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn default_set_clock_delegates_to_the_linux_clock_ops() {
    let soft = SoftClock::default();
    let ops = LinuxSystemOps::new(
        RebootAction::Exec,
        Arc::new(LinuxClockOps::new(false, soft.clone())),
        0,
    );
    let target = crate::time::unix_us() + 3_600_000_000;
    assert_eq!(ops.set_clock(target), Ok(SetOutcome::Soft));
    assert!((soft.offset_us() - 3_600_000_000).abs() < 1_000_000);
}

#[test]
fn deadline_timers_are_armed_early_by_the_wake_latency() {
    assert_eq!(arm_early(Duration::from_secs(10), 250_000), Duration::from_millis(9750));
    assert_eq!(arm_early(Duration::from_millis(1), 5_000), Duration::ZERO);
    assert_eq!(arm_early(Duration::from_secs(1), 0), Duration::from_secs(1));
}

#[actix_rt::test]
async fn reboot_status_settles_when_the_op_returns() {
    let ops = Ops::none();
    assert_eq!(ops.reboot_status(), RebootStatus::Idle);
    ops.set_reboot_status(RebootStatus::Pending);
    let o = ops.clone();
    let waiter = actix_rt::spawn(async move { o.reboot_settled().await });
    ops.set_reboot_status(RebootStatus::Done);
    assert_eq!(waiter.await.unwrap(), RebootStatus::Done);
}
