//! The loop's clock: `CLOCK_MONOTONIC` in float seconds, the same clock and epoch as
//! Python's `time.monotonic()`, so `loop.time()` can be compared with it.

/// Seconds on the monotonic clock.
pub fn monotonic() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux,
    // so the call cannot fail and its return value carries no information.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// The resolution of [`monotonic`] in seconds (asyncio's `_clock_resolution`).
pub fn resolution() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: as in `monotonic`.
    unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_never_goes_back() {
        let a = monotonic();
        let b = monotonic();
        assert!(b >= a);
        assert!(a > 0.0);
    }

    #[test]
    fn resolution_is_fine_grained() {
        let r = resolution();
        assert!(r > 0.0 && r <= 1e-3, "resolution {r}");
    }
}
