//! Wall-clock readings used for timestamps across the services. They follow
//! the soft clock: when `set_clock` could not step the host clock, lwsys
//! keeps an offset and every timestamp it makes includes it.

use crate::clock::SoftClock;

/// The current wall-clock time in Unix microseconds, soft clock offset
/// included (0 if that is before 1970, which a device with no RTC can
/// report at boot).
pub fn unix_us() -> u64 {
    SoftClock::global().now_us()
}
