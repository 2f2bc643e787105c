//! When to announce topics, look them up, and publish our address record: a sans-IO timer table.
//!
//! The driver asks [`Schedule::poll`] for due tasks, runs them on the DHT and reports how each went;
//! the schedule never touches the network or the clock itself.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The 20-byte key a topic is announced under (the first bytes of its discovery key).
pub type InfoHash = [u8; 20];

/// Timing of DHT work.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// Re-announce period (DHT nodes forget announcements after about 30 minutes).
    pub announce_every: Duration,
    /// First retry after a failed announce or publish; doubles up to the regular period.
    pub retry_min: Duration,
    /// Lookup period right after joining or after finding someone new.
    pub lookup_min: Duration,
    /// Longest lookup period, reached by doubling while lookups find no one new.
    pub lookup_max: Duration,
    /// Re-publish period of our address record (stored items expire after about 2 hours).
    pub publish_every: Duration,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            announce_every: Duration::from_secs(15 * 60),
            retry_min: Duration::from_secs(5),
            lookup_min: Duration::from_secs(2),
            lookup_max: Duration::from_secs(5 * 60),
            publish_every: Duration::from_secs(30 * 60),
        }
    }
}

/// Work the driver should start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// `announce_peer` for this topic key.
    Announce(InfoHash),
    /// `get_peers` for this topic key.
    Lookup(InfoHash),
    /// Put our address record.
    Publish,
}

#[derive(Debug)]
struct Timer {
    next: Option<Instant>,
    running: bool,
    /// Current retry or lookup interval.
    interval: Duration,
}

impl Timer {
    fn due_now(now: Instant, interval: Duration) -> Self {
        Self {
            next: Some(now),
            running: false,
            interval,
        }
    }

    fn take_if_due(&mut self, now: Instant) -> bool {
        if !self.running && self.next.is_some_and(|at| at <= now) {
            self.running = true;
            self.next = None;
            true
        } else {
            false
        }
    }

    fn done(&mut self, next: Instant) {
        self.running = false;
        self.next = Some(next);
    }
}

#[derive(Debug)]
struct TopicTimers {
    announce: Timer,
    lookup: Timer,
}

/// The timer table. See the module docs.
#[derive(Debug)]
pub struct Schedule {
    config: ScheduleConfig,
    topics: HashMap<InfoHash, TopicTimers>,
    publish: Option<Timer>,
    /// Nothing runs before the routing table is filled: announces would fail, and a lookup from a
    /// fresh node ends early at the wrong nodes (and `mainline` then announces to those).
    bootstrapped: bool,
}

impl Schedule {
    /// An empty schedule.
    pub fn new(config: ScheduleConfig) -> Self {
        Self {
            config,
            topics: HashMap::new(),
            publish: None,
            bootstrapped: false,
        }
    }

    /// Starts announcing and looking up `hash`, both at once.
    pub fn join(&mut self, hash: InfoHash, now: Instant) {
        self.topics.entry(hash).or_insert_with(|| TopicTimers {
            announce: Timer::due_now(now, self.config.retry_min),
            lookup: Timer::due_now(now, self.config.lookup_min),
        });
    }

    /// Stops everything for `hash`; results still in flight are ignored.
    pub fn leave(&mut self, hash: &InfoHash) {
        self.topics.remove(hash);
    }

    /// Looks `hash` up again now (someone asked, e.g. a status request), unless one is running.
    pub fn lookup_soon(&mut self, hash: &InfoHash, now: Instant) {
        if let Some(t) = self.topics.get_mut(hash)
            && !t.lookup.running
        {
            t.lookup.next = Some(now);
        }
    }

    /// Our addresses changed (or are first known): publish the record now.
    pub fn addrs_changed(&mut self, now: Instant) {
        match &mut self.publish {
            Some(timer) if timer.running => {
                // Publish again as soon as the current one ends.
                timer.interval = Duration::ZERO;
            }
            Some(timer) => timer.next = Some(now),
            None => self.publish = Some(Timer::due_now(now, self.config.retry_min)),
        }
    }

    /// Whether the DHT has a routing table. Until it has, nothing runs.
    pub fn set_bootstrapped(&mut self, bootstrapped: bool) {
        self.bootstrapped = bootstrapped;
    }

    /// Tasks due at `now`; each is marked running until its result is reported.
    pub fn poll(&mut self, now: Instant) -> Vec<Task> {
        let mut tasks = Vec::new();
        if !self.bootstrapped {
            return tasks;
        }
        for (hash, t) in &mut self.topics {
            // One query per topic at a time: `mainline` merges an announce and a lookup of the same
            // key into one query, and the lookup then finds nothing. The lookup goes first.
            if t.announce.running {
                continue;
            }
            if t.lookup.take_if_due(now) {
                tasks.push(Task::Lookup(*hash));
            } else if !t.lookup.running && t.announce.take_if_due(now) {
                tasks.push(Task::Announce(*hash));
            }
        }
        if let Some(timer) = &mut self.publish
            && timer.take_if_due(now)
        {
            tasks.push(Task::Publish);
        }
        tasks
    }

    /// When the next task falls due, if any is scheduled.
    pub fn next_at(&self) -> Option<Instant> {
        if !self.bootstrapped {
            return None;
        }
        self.topics
            .values()
            .filter(|t| !t.announce.running && !t.lookup.running)
            .flat_map(|t| [t.announce.next, t.lookup.next])
            .chain(self.publish.as_ref().map(|t| t.next))
            .flatten()
            .min()
    }

    /// An announce of `hash` ended.
    pub fn announced(&mut self, hash: &InfoHash, ok: bool, now: Instant) {
        let (every, min) = (self.config.announce_every, self.config.retry_min);
        if let Some(t) = self.topics.get_mut(hash) {
            t.announce.interval = retry_interval(ok, t.announce.interval, min, every);
            let wait = if ok { every } else { t.announce.interval };
            t.announce.done(now + wait);
            if ok && !t.lookup.running {
                // Whoever joined along with us has announced by now too: look again at once
                // rather than at the backed-off time.
                t.lookup.next = Some(now);
            }
        }
    }

    /// A lookup of `hash` ended, having found `new_peers` addresses not seen before.
    pub fn looked_up(&mut self, hash: &InfoHash, new_peers: usize, now: Instant) {
        let (min, max) = (self.config.lookup_min, self.config.lookup_max);
        if let Some(t) = self.topics.get_mut(hash) {
            let wait = if new_peers > 0 {
                min
            } else {
                (t.lookup.interval * 2).clamp(min, max)
            };
            t.lookup.interval = wait;
            t.lookup.done(now + wait);
        }
    }

    /// A publish of our record ended.
    pub fn published(&mut self, ok: bool, now: Instant) {
        let (every, min) = (self.config.publish_every, self.config.retry_min);
        if let Some(timer) = &mut self.publish {
            let again_now = timer.interval.is_zero();
            timer.interval = retry_interval(ok, timer.interval, min, every);
            let wait = if again_now {
                Duration::ZERO
            } else if ok {
                every
            } else {
                timer.interval
            };
            timer.done(now + wait);
        }
    }
}

/// Next retry interval: reset on success, doubled (from `min`, up to `max`) on failure.
fn retry_interval(ok: bool, current: Duration, min: Duration, max: Duration) -> Duration {
    if ok {
        min
    } else {
        (current * 2).clamp(min, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: InfoHash = [7; 20];

    fn schedule() -> (Schedule, Instant) {
        bootstrapped(ScheduleConfig::default())
    }

    fn bootstrapped(config: ScheduleConfig) -> (Schedule, Instant) {
        let mut s = Schedule::new(config);
        s.set_bootstrapped(true);
        (s, Instant::now())
    }

    #[test]
    fn nothing_runs_before_the_routing_table_is_filled() {
        let mut s = Schedule::new(ScheduleConfig::default());
        let now = Instant::now();
        s.join(H, now);
        s.addrs_changed(now);
        assert!(s.poll(now).is_empty());
        assert_eq!(s.next_at(), None, "nothing may run yet");
        s.set_bootstrapped(true);
        assert_eq!(s.next_at(), Some(now));
        let mut tasks = s.poll(now);
        tasks.sort_by_key(|t| format!("{t:?}"));
        assert_eq!(tasks, vec![Task::Lookup(H), Task::Publish]);
        s.looked_up(&H, 0, now);
        assert_eq!(s.poll(now), vec![Task::Announce(H)]);
    }

    #[test]
    fn joining_looks_up_first_then_announces_and_never_both_at_once() {
        let (mut s, now) = schedule();
        s.join(H, now);
        assert_eq!(s.poll(now), vec![Task::Lookup(H)]);
        assert_eq!(s.next_at(), None, "the announce waits for the lookup");
        assert!(s.poll(now + Duration::from_secs(3600)).is_empty());
        let t = now + Duration::from_secs(2);
        s.looked_up(&H, 0, t);
        assert_eq!(s.poll(t), vec![Task::Announce(H)]);
        assert_eq!(s.next_at(), None, "the next lookup waits for the announce");
        assert!(s.poll(t + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn an_announce_that_lands_brings_the_next_lookup_forward() {
        let (mut s, now) = schedule();
        s.join(H, now);
        s.poll(now);
        s.looked_up(&H, 0, now);
        assert_eq!(s.poll(now), vec![Task::Announce(H)]);
        let later = now + Duration::from_millis(500);
        s.announced(&H, true, later);
        assert_eq!(s.next_at(), Some(later));
        assert_eq!(s.poll(later), vec![Task::Lookup(H)]);
        // A failed announce does not.
        let (mut s, now) = schedule();
        s.join(H, now);
        s.poll(now);
        s.looked_up(&H, 0, now);
        s.poll(now);
        s.announced(&H, false, later);
        assert!(s.next_at().unwrap() > later);
    }

    #[test]
    fn lookups_back_off_while_nothing_new_turns_up_and_reset_when_something_does() {
        let (mut s, mut now) = bootstrapped(ScheduleConfig {
            announce_every: Duration::from_secs(24 * 3600),
            ..ScheduleConfig::default()
        });
        s.join(H, now);
        s.poll(now);
        s.looked_up(&H, 0, now);
        assert_eq!(s.poll(now), vec![Task::Announce(H)]);
        s.announced(&H, true, now);
        assert_eq!(s.poll(now), vec![Task::Lookup(H)]);
        let mut waits = Vec::new();
        for _ in 0..9 {
            s.looked_up(&H, 0, now);
            let next = s.next_at().unwrap();
            waits.push((next - now).as_secs());
            now = next;
            assert_eq!(s.poll(now), vec![Task::Lookup(H)]);
        }
        assert_eq!(waits, vec![8, 16, 32, 64, 128, 256, 300, 300, 300]);
        s.looked_up(&H, 3, now);
        assert_eq!(s.next_at().unwrap() - now, Duration::from_secs(2));
    }

    #[test]
    fn failed_announces_retry_sooner_than_the_period() {
        let (mut s, now) = schedule();
        s.join(H, now);
        s.poll(now);
        s.looked_up(&H, 0, now);
        assert_eq!(s.poll(now), vec![Task::Announce(H)]);
        s.announced(&H, false, now);
        // The lookup is due in 4 s, the announce retry in 10 s (5 s doubled).
        let at = |secs| now + Duration::from_secs(secs);
        assert_eq!(s.poll(at(4)), vec![Task::Lookup(H)]);
        s.looked_up(&H, 0, at(4));
        assert_eq!(s.poll(at(10)), vec![Task::Announce(H)]);
        s.announced(&H, true, at(10));
        assert_eq!(s.poll(at(10)), vec![Task::Lookup(H)], "brought forward");
        s.looked_up(&H, 0, at(10));
        let later = at(10 + 15 * 60);
        assert!(
            s.poll(later - Duration::from_secs(1))
                .iter()
                .all(|t| *t != Task::Announce(H))
        );
        s.looked_up(&H, 0, later - Duration::from_secs(1));
        assert!(s.poll(later).contains(&Task::Announce(H)));
    }

    #[test]
    fn an_address_change_during_a_publish_publishes_again_right_after() {
        let (mut s, now) = schedule();
        s.addrs_changed(now);
        assert_eq!(s.poll(now), vec![Task::Publish]);
        s.addrs_changed(now);
        assert!(s.poll(now).is_empty());
        s.published(true, now);
        assert_eq!(s.poll(now), vec![Task::Publish]);
        s.published(true, now);
        assert_eq!(s.next_at(), Some(now + Duration::from_secs(30 * 60)));
    }

    #[test]
    fn leaving_drops_the_topic_and_its_late_results() {
        let (mut s, now) = schedule();
        s.join(H, now);
        s.poll(now);
        s.leave(&H);
        s.looked_up(&H, 5, now);
        s.announced(&H, true, now);
        assert_eq!(s.next_at(), None);
        assert!(s.poll(now + Duration::from_secs(3600)).is_empty());
    }
}
