//! Budgets that keep helpers and punch targets from being used as amplifiers: token buckets for request
//! rates and the relay's byte and circuit limits. Pure state, fed the current time.

use std::time::{Duration, Instant};

/// A token bucket: `burst` tokens, refilled one per `every`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    burst: f64,
    per_second: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `per_second`.
    pub fn new(burst: u32, per_second: f64, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_second,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.updated = now;
    }

    /// Takes `n` tokens if there are that many.
    pub fn try_take(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens, going into debt if needed, and says how long to wait until the debt is paid
    /// (zero when there was enough). Used to pace relayed bytes rather than drop them.
    pub fn take_paced(&mut self, n: f64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= n;
        if self.tokens >= 0.0 || self.per_second <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_second)
        }
    }
}

/// What a node gives others as a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLimits {
    /// Circuits open at once, in total (0: relaying is off).
    pub max_circuits: usize,
    /// Circuits open at once that one node asked for.
    pub max_circuits_per_node: usize,
    /// Bytes one circuit may carry, both directions together; the circuit closes beyond.
    pub bytes_per_circuit: u64,
    /// Bytes per second one circuit may carry on average (bursts of one second allowed); faster
    /// traffic is slowed down.
    pub rate_per_circuit: u64,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            max_circuits: 32,
            max_circuits_per_node: 4,
            bytes_per_circuit: 256 << 20,
            rate_per_circuit: 4 << 20,
        }
    }
}

/// One circuit's account: bytes used against the budget and the pace.
#[derive(Debug)]
pub struct CircuitBudget {
    left: u64,
    pace: TokenBucket,
}

/// A circuit went over its byte budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("relay budget of {0} bytes used up")]
pub struct BudgetExhausted(pub u64);

impl CircuitBudget {
    /// A fresh account under `limits`.
    pub fn new(limits: &RelayLimits, now: Instant) -> Self {
        let rate = limits.rate_per_circuit.max(1);
        Self {
            left: limits.bytes_per_circuit,
            pace: TokenBucket::new(rate.min(u64::from(u32::MAX)) as u32, rate as f64, now),
        }
    }

    /// Charges `bytes`; says how long to wait before forwarding them, or that the budget is gone.
    pub fn charge(&mut self, bytes: usize, now: Instant) -> Result<Duration, BudgetExhausted> {
        let bytes = bytes as u64;
        if bytes > self.left {
            return Err(BudgetExhausted(self.left));
        }
        self.left -= bytes;
        Ok(self.pace.take_paced(bytes as f64, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(3, 2.0, t0);
        assert!((0..3).all(|_| bucket.try_take(1.0, t0)));
        assert!(!bucket.try_take(1.0, t0));
        assert!(!bucket.try_take(1.0, t0 + Duration::from_millis(400)));
        assert!(bucket.try_take(1.0, t0 + Duration::from_millis(600)));
        // Never more than the burst, however long it rested.
        let later = t0 + Duration::from_secs(3600);
        assert!((0..3).all(|_| bucket.try_take(1.0, later)));
        assert!(!bucket.try_take(1.0, later));
    }

    #[test]
    fn a_circuit_is_paced_then_cut_off_at_its_budget() {
        let t0 = Instant::now();
        let limits = RelayLimits {
            bytes_per_circuit: 3000,
            rate_per_circuit: 1000,
            ..RelayLimits::default()
        };
        let mut budget = CircuitBudget::new(&limits, t0);
        assert_eq!(budget.charge(1000, t0), Ok(Duration::ZERO));
        let wait = budget.charge(1000, t0).unwrap();
        assert!(wait >= Duration::from_millis(999), "{wait:?}");
        assert_eq!(budget.charge(1001, t0), Err(BudgetExhausted(1000)));
        assert!(budget.charge(1000, t0 + Duration::from_secs(5)).is_ok());
        assert_eq!(budget.charge(1, t0), Err(BudgetExhausted(0)));
    }
}
