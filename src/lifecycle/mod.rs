//! What happens to segments when processes end: the table of segments this process owns,
//! stale-segment listing and removal ([`gc`](gc::gc)), segment inspection
//! ([`info`](info::info)), signal cleanup ([`SignalCleanup`](signals::SignalCleanup)) and
//! the crash watchdog ([`CrashCleanup`](watchdog::CrashCleanup)).

pub(crate) mod gc;
pub(crate) mod info;
pub(crate) mod signals;
pub(crate) mod watchdog;
