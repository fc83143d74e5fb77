//! The ids of events recently recorded, bounded: the oldest are forgotten first. A sender
//! retries within minutes, so a window of the last [`super::REMEMBERED`] events is enough, and
//! memory stays fixed however many notifications arrive.

use std::collections::{HashSet, VecDeque};

pub struct Recent {
    ids: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl Recent {
    pub fn new(capacity: usize) -> Self {
        Self {
            ids: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Takes `id` as being recorded now; false when it already was.
    pub fn claim(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        self.ids.insert(id.to_string());
        self.order.push_back(id.to_string());
        true
    }

    /// Gives a claim back: what it named was not recorded after all.
    pub fn release(&mut self, id: &str) {
        if self.ids.remove(id) {
            self.order.retain(|known| known != id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_claimed_once_released_and_forgotten_oldest_first() {
        let mut recent = Recent::new(2);
        assert!(recent.claim("a"));
        assert!(!recent.claim("a"));
        recent.release("a");
        assert!(recent.claim("a"));
        assert!(recent.claim("b"));
        assert!(recent.claim("c"));
        // "a" was the oldest: forgotten to keep two.
        assert!(recent.claim("a"));
        assert!(!recent.claim("c"));
    }
}
