//! The clock op (`set_clock`) and its default Linux implementation, with the
//! "soft clock": an offset from the host clock that lwsys keeps and uses
//! for its own timestamps when it may not step the host clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, LazyLock};

use lwsys_messages::clock::ClockError;
use nix::errno::Errno;
use nix::sys::time::TimeSpec;
use nix::time::{clock_settime, ClockId};

/// The host clock in Unix microseconds (0 before 1970), read directly so
/// that `time::unix_us` may itself be built on [`SoftClock::global`].
pub fn host_unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Where a `set_clock` put the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOutcome {
    /// The host clock (CLOCK_REALTIME) was stepped.
    System,
    /// The host clock was left alone; the soft clock holds the offset.
    Soft,
}

/// The platform's clock op. The lead moves this into
/// `platform::SystemOps::set_clock`; it can be replaced through the
/// `Builder`.
pub trait ClockOps: Send + Sync {
    /// Sets the time to `unix_us`, on the host clock if possible, else on
    /// the soft clock. The caller has checked the range.
    fn set_clock(&self, unix_us: u64) -> Result<SetOutcome, ClockError>;

    /// The time lwsys uses now, in Unix microseconds: the host clock plus
    /// any soft offset.
    fn now_us(&self) -> u64;

    /// Whether the host says its clock is synchronised (by an NTP daemon).
    fn host_synchronised(&self) -> bool;
}

/// An offset (microseconds, may be negative) added to the host clock. Cheap
/// to clone; clones share the offset.
#[derive(Debug, Clone, Default)]
pub struct SoftClock(Arc<AtomicI64>);

static GLOBAL: LazyLock<SoftClock> = LazyLock::new(SoftClock::default);

impl SoftClock {
    /// The process-wide soft clock the daemon's ops use, so that
    /// `time::unix_us` can add the same offset to every timestamp (tests
    /// use their own instances instead, so they cannot disturb each other).
    pub fn global() -> &'static SoftClock {
        &GLOBAL
    }

    /// The offset from the host clock, in microseconds.
    pub fn offset_us(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Sets the offset from the host clock.
    pub fn set_offset_us(&self, offset: i64) {
        self.0.store(offset, Ordering::Relaxed);
    }

    /// The host clock plus the offset, in Unix microseconds (0 if that is
    /// before 1970).
    pub fn now_us(&self) -> u64 {
        let host = i128::from(host_unix_us());
        u64::try_from(host + i128::from(self.offset_us())).unwrap_or(0)
    }
}

/// The default Linux clock op. It steps CLOCK_REALTIME only when
/// `set_system_clock` is on (off in tests: they run as root and must never
/// move the machine's clock) and the kernel permits it (CAP_SYS_TIME);
/// otherwise it keeps the soft clock.
#[derive(Debug, Clone)]
pub struct LinuxClockOps {
    set_system_clock: bool,
    soft: SoftClock,
    sync_marker: std::path::PathBuf,
}

/// The file systemd-timesyncd creates once the host clock is synchronised.
pub const TIMESYNC_MARKER: &str = "/run/systemd/timesync/synchronized";

impl LinuxClockOps {
    /// Ops that step the host clock if `set_system_clock` (config
    /// `time.set_system_clock`) and fall back to `soft`.
    pub fn new(set_system_clock: bool, soft: SoftClock) -> Self {
        Self { set_system_clock, soft, sync_marker: TIMESYNC_MARKER.into() }
    }

    /// Reads host synchronisation from this marker file instead of
    /// [`TIMESYNC_MARKER`] (for tests).
    pub fn with_sync_marker(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.sync_marker = path.into();
        self
    }

    /// The soft clock these ops keep.
    pub fn soft(&self) -> &SoftClock {
        &self.soft
    }
}

impl ClockOps for LinuxClockOps {
    fn set_clock(&self, target_us: u64) -> Result<SetOutcome, ClockError> {
        if self.set_system_clock {
            let secs = i64::try_from(target_us / 1_000_000)
                .map_err(|_| ClockError::Io(format!("time {target_us} us out of range")))?;
            // Below 10^6 so always fits.
            let micros = i64::try_from(target_us % 1_000_000).unwrap_or(0);
            let ts = TimeSpec::new(secs, micros * 1_000);
            match clock_settime(ClockId::CLOCK_REALTIME, ts) {
                Ok(()) => {
                    self.soft.set_offset_us(0);
                    return Ok(SetOutcome::System);
                }
                // No CAP_SYS_TIME: the soft clock is the documented fallback.
                Err(Errno::EPERM) => {}
                Err(e) => return Err(ClockError::Io(format!("clock_settime: {e}"))),
            }
        }
        let host = i128::from(host_unix_us());
        let offset = i128::from(target_us) - host;
        self.soft.set_offset_us(i64::try_from(offset).unwrap_or(0));
        Ok(SetOutcome::Soft)
    }

    fn now_us(&self) -> u64 {
        self.soft.now_us()
    }

    fn host_synchronised(&self) -> bool {
        // nix has no safe adjtimex wrapper and unsafe code is forbidden, so
        // this reads timesyncd's marker; other NTP daemons count as unsynced
        // unless `trust_unsynced` is set.
        self.sync_marker.exists()
    }
}

/// The current wall-clock time in Unix microseconds, soft clock offset
/// included (0 if that is before 1970, which a device with no RTC can
/// report at boot).
pub fn unix_us() -> u64 {
    SoftClock::global().now_us()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_path_moves_only_lwsys_time() {
        let ops = LinuxClockOps::new(false, SoftClock::default());
        let target = unix_us() + 3_600_000_000;
        assert_eq!(ops.set_clock(target).unwrap(), SetOutcome::Soft);
        let off = ops.soft().offset_us();
        assert!((off - 3_600_000_000).abs() < 1_000_000, "{off}");
        assert!(ops.now_us().abs_diff(target) < 1_000_000);
        // The host clock is untouched: the offset is still there.
        assert!(ops.now_us() > unix_us() + 3_000_000_000);
        let back = unix_us() - 86_400_000_000;
        ops.set_clock(back).unwrap();
        assert!(ops.soft().offset_us() < -86_000_000_000);
    }

    #[test]
    fn host_sync_follows_the_marker_file() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("synchronized");
        let ops = LinuxClockOps::new(false, SoftClock::default()).with_sync_marker(&marker);
        assert!(!ops.host_synchronised());
        std::fs::write(&marker, b"").unwrap();
        assert!(ops.host_synchronised());
    }
}
