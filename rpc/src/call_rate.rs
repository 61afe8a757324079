//! Calls per IP address: a token bucket per remote address, shared by all its connections,
//! refilled at `calls_per_ip_per_second` and holding at most `calls_per_ip_burst` calls. A
//! call (or each call of a batch) takes one token; without one it is answered at once with
//! code 1203 `busy` (`what: "call_rate"`) and does nothing.
//!
//! The bucket is governor's keyed GCRA limiter (one timestamp per address in a sharded map)
//! rather than code of ours: the arithmetic of refills, bursts and clock edges is what such a
//! crate is for. Addresses whose bucket is full again are forgotten every
//! [`FORGET_EVERY`], so the map holds only addresses active in the last second or so.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// How often addresses with a full bucket are dropped from the map.
pub(crate) const FORGET_EVERY: Duration = Duration::from_secs(30);

/// The per-address call limiter of one server.
#[derive(Debug)]
pub(crate) struct CallRate {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    per_second: u32,
}

impl CallRate {
    /// `per_second` tokens a second per address, at most `burst` at once (both at least 1;
    /// a 0 is taken as 1).
    pub(crate) fn new(per_second: u32, burst: u32) -> CallRate {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        CallRate {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            per_second: rate.get(),
        }
    }

    /// Takes `calls` tokens from `ip`'s bucket, all or none; `Err` with the rate when they are
    /// not there (or never could be: more than the burst at once).
    pub(crate) fn take(&self, ip: IpAddr, calls: usize) -> Result<(), u32> {
        let Some(calls) = u32::try_from(calls).ok().and_then(NonZeroU32::new) else {
            return if calls == 0 {
                Ok(())
            } else {
                Err(self.per_second)
            };
        };
        match self.limiter.check_key_n(&ip, calls) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(self.per_second),
        }
    }

    /// Forgets the addresses whose bucket is full again (no state worth keeping).
    pub(crate) fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Addresses currently remembered.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::CallRate;

    #[test]
    fn each_address_has_its_own_bucket_and_batches_take_all_or_nothing() {
        // One token a second, five at once: well within a second, the sixth call is refused.
        let rate = CallRate::new(1, 5);
        let a = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let b = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
        assert_eq!(rate.take(a, 3), Ok(()));
        // Three more than remain: none is taken.
        assert_eq!(rate.take(a, 3), Err(1));
        assert_eq!(rate.take(a, 2), Ok(()));
        assert_eq!(rate.take(a, 1), Err(1));
        // More than the burst can never pass.
        assert_eq!(rate.take(b, 6), Err(1));
        assert_eq!(rate.take(b, 5), Ok(()));
        assert_eq!(rate.take(b, 0), Ok(()));
        assert_eq!(rate.remembered(), 2);
    }
}
