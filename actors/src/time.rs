//! Wall-clock readings used for timestamps across the services.

use std::time::{SystemTime, UNIX_EPOCH};

/// The current wall-clock time in Unix microseconds (0 if the clock is set
/// before 1970, which a device with no RTC can report at boot).
pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
