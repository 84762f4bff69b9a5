//! `Latest`: the newest payload of each retained fleet topic, and which of
//! them the broker has not been sent yet. Writers (the fleet service)
//! replace a slot and wake the link; the link takes what is dirty. One slot
//! per topic bounds it: a burst of state changes while the broker is slow
//! or gone leaves only the newest value, and nothing ever waits on it but
//! the link.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use lwsys_messages::fleet::Topic;
use tokio::sync::Notify;

#[derive(Default)]
struct Slots {
    /// The newest payload per topic.
    value: BTreeMap<Topic, Vec<u8>>,
    /// Topics whose payload the broker has not been sent since it last
    /// changed (or since the link reconnected).
    dirty: BTreeMap<Topic, ()>,
}

/// See the module docs.
#[derive(Default)]
pub struct Latest {
    slots: Mutex<Slots>,
    changed: Notify,
}

impl Latest {
    /// Store `payload` as the newest value of `topic` and wake the link,
    /// unless it equals what is stored (so an event that changes nothing
    /// the fleet sees costs no message).
    pub fn put(&self, topic: Topic, payload: Vec<u8>) {
        let mut s = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if s.value.get(&topic) == Some(&payload) {
            return;
        }
        s.value.insert(topic, payload);
        s.dirty.insert(topic, ());
        drop(s);
        self.changed.notify_one();
    }

    /// Mark every stored topic to be sent again (after a reconnect).
    pub fn mark_all(&self) {
        let mut s = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let topics: Vec<Topic> = s.value.keys().copied().collect();
        for t in topics {
            s.dirty.insert(t, ());
        }
    }

    /// The dirty topics and their payloads, in topic order, marking them
    /// clean; a payload the link could not hand over goes back with
    /// [`Latest::unsent`].
    pub fn take_dirty(&self) -> Vec<(Topic, Vec<u8>)> {
        let mut s = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let dirty = std::mem::take(&mut s.dirty);
        dirty.into_keys().filter_map(|t| s.value.get(&t).map(|v| (t, v.clone()))).collect()
    }

    /// `topic` was not sent after all: mark it dirty again (unless a newer
    /// value did so already).
    pub fn unsent(&self, topic: Topic) {
        let mut s = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        s.dirty.insert(topic, ());
    }

    /// The stored payload of `topic`.
    pub fn get(&self, topic: Topic) -> Option<Vec<u8>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner).value.get(&topic).cloned()
    }

    /// Wait until something is put.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_value_wins_and_the_buffer_holds_one_slot_per_topic() {
        let l = Latest::default();
        for i in 0..10_000u32 {
            l.put(Topic::State, i.to_string().into_bytes());
        }
        l.put(Topic::Info, b"i".to_vec());
        let d = l.take_dirty();
        assert_eq!(d, vec![(Topic::State, b"9999".to_vec()), (Topic::Info, b"i".to_vec())]);
        assert!(l.take_dirty().is_empty(), "taken once");
    }

    #[test]
    fn an_unchanged_value_is_not_sent_again_but_a_reconnect_resends_all() {
        let l = Latest::default();
        l.put(Topic::State, b"a".to_vec());
        let _ = l.take_dirty();
        l.put(Topic::State, b"a".to_vec());
        assert!(l.take_dirty().is_empty());
        l.mark_all();
        assert_eq!(l.take_dirty().len(), 1);
        l.unsent(Topic::State);
        assert_eq!(l.take_dirty(), vec![(Topic::State, b"a".to_vec())]);
    }
}
