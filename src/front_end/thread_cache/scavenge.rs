//! Scavenging: every [`SCAVENGE_INTERVAL`] slow-path events, lists that look idle give back
//! half their objects and limit, and the cache is brought back within its budget.

use super::budget::thread_budget;
use super::ThreadCache;

/// Slow-path events between two scavenges of a thread's cache.
pub const SCAVENGE_INTERVAL: u32 = 1024;

impl ThreadCache {
    /// Every [`SCAVENGE_INTERVAL`] events: halve the lists that saw no slow-path event since
    /// the last scavenge, and refresh the budget from the number of live threads.
    pub(super) fn maybe_scavenge(&mut self) {
        if self.events < SCAVENGE_INTERVAL {
            return;
        }
        self.scavenge();
    }

    #[cold]
    fn scavenge(&mut self) {
        #[cfg(debug_assertions)]
        self.check_invariants();
        self.events = 0;
        self.budget = thread_budget();
        for class in self.active_classes() {
            let i = class.index();
            let len = self.len(class) as u32;
            // Idle: no refill or overflow, and (as far as one can tell without counting on
            // the fast path) no pops or pushes either, since the last scavenge.
            if self.limits[i].events == 0 && len == self.limits[i].scavenged_len {
                self.set_max_len_and_trim(class, self.limits[i].max_len.min(len) / 2);
                self.publish(class);
            }
            self.limits[i].events = 0;
            self.limits[i].scavenged_len = self.len(class) as u32;
        }
        self.fit_budget();
    }

    /// Halves lists, in class order, until the limits fit the budget again (after the budget
    /// fell: more threads share the cap).
    pub(super) fn fit_budget(&mut self) {
        if self.capacity > self.budget {
            for class in self.active_classes() {
                if self.capacity <= self.budget {
                    break;
                }
                self.set_max_len_and_trim(class, self.limits[class.index()].max_len / 2);
                self.publish(class);
            }
        }
    }
}
