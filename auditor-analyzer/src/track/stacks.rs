//! The stacks a run's events name, by id, bounded: a call keeps the stack
//! it was made from (shared, never copied), so evicting an old id here only
//! forgets it for calls that come later, which name new ids anyway.

use std::{collections::VecDeque, sync::Arc};

use crate::{fast_hash::FastMap, stack::Stack};

/// Stacks kept for calls still to come.
const KEPT: usize = 4096;

#[derive(Debug, Default)]
pub struct Stacks {
    by_id: FastMap<u32, Arc<Stack>>,
    order: VecDeque<u32>,
}

impl Stacks {
    pub fn insert(&mut self, id: u32, stack: Stack) {
        if self.by_id.insert(id, Arc::new(stack)).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > KEPT {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }

    pub fn get(&self, id: Option<u32>) -> Option<Arc<Stack>> {
        self.by_id.get(&id?).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_newest_kept() {
        let mut s = Stacks::default();
        for id in 1..=(KEPT as u32 + 10) {
            s.insert(id, Stack::default());
        }
        assert!(s.get(Some(1)).is_none());
        assert!(s.get(Some(KEPT as u32 + 10)).is_some());
        assert!(s.get(None).is_none());
        assert_eq!(s.by_id.len(), KEPT);
    }
}
