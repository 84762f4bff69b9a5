//! Wall-clock readings used for timestamps across the services. They follow
//! the soft clock: when `set_clock` could not step the host clock, lwsys
//! keeps an offset and every timestamp it makes includes it.

pub use crate::clock::softclock::unix_us;
