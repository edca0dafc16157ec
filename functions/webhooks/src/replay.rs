//! A bounded, time-windowed memory of event ids, for dropping duplicate deliveries.

use crate::WebhookError;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The event ids received in the last `window_secs`, at most `capacity` of them.
///
/// Sans-IO like the rest of the crate: the caller passes `now` and keeps the guard wherever its
/// state lives (a durable actor serializes it with serde, next to the rest of its state). An id
/// counts as seen from its first sighting until `window_secs` later; a redelivery inside the
/// window does not extend it. When full, the oldest id is forgotten first, so size the capacity
/// for the busiest window you expect. Lookups scan the ids, which is fine for the thousands an
/// actor keeps; it is not meant for millions.
///
/// Windows worth using: for signed timestamps (Standard Webhooks, Stripe, liveshop), twice the
/// tolerance covers every timestamp the verifier would still accept; for Shopify, whose
/// signature has no timestamp, cover its retry period (hours).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayGuard {
    window_secs: u64,
    capacity: usize,
    /// In order of first sighting.
    seen: VecDeque<Seen>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    id: String,
    at: u64,
}

impl ReplayGuard {
    /// A guard remembering ids for `window_secs`, at most `capacity` (at least 1) at a time.
    pub fn new(window_secs: u64, capacity: usize) -> Self {
        ReplayGuard { window_secs, capacity: capacity.max(1), seen: VecDeque::new() }
    }

    /// Whether `event_id` was already seen within the window; if not, remembers it from `now`.
    /// Call it only for requests whose signature verified.
    pub fn seen(&mut self, event_id: &str, now: u64) -> bool {
        let window = self.window_secs;
        let live = |s: &Seen| now < s.at.saturating_add(window);
        while self.seen.front().is_some_and(|s| !live(s)) {
            self.seen.pop_front();
        }
        if self.seen.iter().any(|s| s.id == event_id && live(s)) {
            return true;
        }
        self.seen.push_back(Seen { id: event_id.to_owned(), at: now });
        if self.seen.len() > self.capacity {
            self.seen.pop_front();
        }
        false
    }

    /// [`ReplayGuard::seen`] as a result: `Err(ReplayedEvent)` for a duplicate.
    pub fn check(&mut self, event_id: &str, now: u64) -> Result<(), WebhookError> {
        if self.seen(event_id, now) { Err(WebhookError::ReplayedEvent) } else { Ok(()) }
    }

    /// Forgets `event_id`: the request that carried it was not carried out (its handler failed),
    /// so the sender's retry with the same id must be taken.
    pub fn forget(&mut self, event_id: &str) {
        self.seen.retain(|s| s.id != event_id);
    }

    /// How many ids are remembered (expired ones are dropped on the next call to `seen`).
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forgotten_id_is_taken_again() {
        let mut guard = ReplayGuard::new(600, 100);
        assert!(!guard.seen("evt_1", 1_000));
        assert!(!guard.seen("evt_2", 1_000));
        guard.forget("evt_1");
        assert!(!guard.seen("evt_1", 1_001));
        assert!(guard.seen("evt_1", 1_002) && guard.seen("evt_2", 1_002));
    }

    #[test]
    fn a_redelivery_inside_the_window_is_a_duplicate() {
        let mut guard = ReplayGuard::new(600, 100);
        assert!(!guard.seen("evt_1", 1_000));
        assert!(guard.seen("evt_1", 1_001));
        assert!(guard.seen("evt_1", 1_599));
        assert_eq!(guard.check("evt_1", 1_599), Err(WebhookError::ReplayedEvent));
        assert_eq!(guard.check("evt_2", 1_599), Ok(()));
    }

    #[test]
    fn an_id_is_forgotten_exactly_when_its_window_ends() {
        let mut guard = ReplayGuard::new(600, 100);
        assert!(!guard.seen("evt_1", 1_000));
        // Seeing it again does not extend the window.
        assert!(guard.seen("evt_1", 1_500));
        assert!(!guard.seen("evt_1", 1_600));
        assert!(guard.seen("evt_1", 1_601));
    }

    #[test]
    fn expired_ids_are_dropped_so_the_guard_does_not_grow() {
        let mut guard = ReplayGuard::new(60, 1_000);
        for i in 0..100u64 {
            guard.seen(&format!("evt_{i}"), i * 10);
        }
        assert_eq!(guard.len(), 6);
        assert!(!guard.is_empty());
    }

    #[test]
    fn when_full_the_oldest_id_is_forgotten_first() {
        let mut guard = ReplayGuard::new(3_600, 2);
        assert!(!guard.seen("a", 1));
        assert!(!guard.seen("b", 2));
        assert!(!guard.seen("c", 3));
        assert_eq!(guard.len(), 2);
        assert!(guard.seen("c", 4));
        assert!(guard.seen("b", 4));
        assert!(!guard.seen("a", 4), "evicted to make room");
        assert_eq!(ReplayGuard::new(10, 0).capacity, 1);
    }

    #[test]
    fn a_clock_that_steps_back_still_sees_recent_ids() {
        let mut guard = ReplayGuard::new(600, 100);
        assert!(!guard.seen("evt_1", 2_000));
        assert!(guard.seen("evt_1", 1_900));
    }

    #[test]
    fn the_guard_survives_being_stored_and_restored() {
        let mut guard = ReplayGuard::new(600, 100);
        guard.seen("evt_1", 1_000);
        let stored = serde_json::to_string(&guard).unwrap();
        let mut restored: ReplayGuard = serde_json::from_str(&stored).unwrap();
        assert_eq!(restored, guard);
        assert!(restored.seen("evt_1", 1_100));
        assert!(!restored.seen("evt_2", 1_100));
    }
}
