//! Host-owned frame rings and the wake-ups that replace virtual interrupts.
//!
//! A [`Ring`] is a bounded queue of [`Frame`]s between one producer and one
//! consumer (a component, a NIC backend or the in-memory wire). Frames move
//! in batches: one lock per batch, not per frame. When a ring is full the
//! frames that do not fit are dropped and counted, never blocked on: a
//! stalled consumer must not stall its producer.
//!
//! A [`Notify`] belongs to a consumer; every ring it reads from signals it
//! when frames arrive, and the consumer's blocking `wait` sleeps on it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// Offload metadata of a frame, as virtio-net's header carries it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offload {
    pub needs_csum: bool,
    pub csum_valid: bool,
    pub gso: Gso,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

/// Segmentation asked for (transmit) or done (receive).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Gso {
    #[default]
    None,
    TcpV4,
    UdpL4,
}

/// One Ethernet frame in host memory.
#[derive(Clone, Debug, Default)]
pub struct Frame {
    pub data: Vec<u8>,
    pub offload: Offload,
}

/// What a consumer sleeps on: set by producers, cleared by the consumer.
#[derive(Default)]
pub struct Notify {
    pending: Mutex<bool>,
    cv: Condvar,
    stop: AtomicBool,
}

/// Why [`Notify::wait_until`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    Ready,
    Timeout,
    Stop,
}

impl Notify {
    pub fn new() -> Arc<Notify> {
        Arc::new(Notify::default())
    }

    /// Wake the consumer (frames arrived, or something it watches changed).
    pub fn notify(&self) {
        let mut p = self.pending.lock().unwrap();
        if !*p {
            *p = true;
            self.cv.notify_one();
        }
    }

    /// Ask the consumer to stop: its current and every later wait returns
    /// [`Wake::Stop`].
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _p = self.pending.lock().unwrap();
        self.cv.notify_all();
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleep until notified, stopped or `deadline` (None: no deadline).
    /// `ready` is checked under the lock first, so a notification that came
    /// before the wait is never lost.
    pub fn wait_until(&self, deadline: Option<Instant>, ready: impl Fn() -> bool) -> Wake {
        let mut p = self.pending.lock().unwrap();
        loop {
            if self.stopping() {
                return Wake::Stop;
            }
            if *p || ready() {
                *p = false;
                return Wake::Ready;
            }
            match deadline {
                None => p = self.cv.wait(p).unwrap(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return if ready() { Wake::Ready } else { Wake::Timeout };
                    }
                    p = self.cv.wait_timeout(p, d - now).unwrap().0;
                }
            }
        }
    }
}

/// Counters of one ring, readable while it runs.
#[derive(Default, Debug)]
pub struct RingStats {
    pub frames_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub dropped_full: AtomicU64,
}

/// A bounded frame queue with batch push and pop.
pub struct Ring {
    name: String,
    capacity: usize,
    queue: Mutex<VecDeque<Frame>>,
    consumer: Mutex<Arc<Notify>>,
    pub stats: RingStats,
}

impl Ring {
    /// A ring holding at most `capacity` frames, waking `consumer`.
    pub fn new(name: impl Into<String>, capacity: usize, consumer: Arc<Notify>) -> Arc<Ring> {
        assert!(capacity > 0, "a ring needs room for one frame");
        Arc::new(Ring {
            name: name.into(),
            capacity,
            queue: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            consumer: Mutex::new(consumer),
            stats: RingStats::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Point the ring's wake-ups at another consumer (a relink or a restart).
    pub fn set_consumer(&self, consumer: Arc<Notify>) {
        *self.consumer.lock().unwrap() = consumer.clone();
        if !self.is_empty() {
            consumer.notify();
        }
    }

    /// Append frames in order; those that do not fit are dropped. Returns
    /// how many were queued.
    pub fn push_batch(&self, frames: impl IntoIterator<Item = Frame>) -> usize {
        let mut pushed = 0usize;
        let mut bytes = 0u64;
        let mut dropped = 0u64;
        {
            let mut q = self.queue.lock().unwrap();
            for f in frames {
                if q.len() < self.capacity {
                    bytes += f.data.len() as u64;
                    q.push_back(f);
                    pushed += 1;
                } else {
                    dropped += 1;
                }
            }
        }
        self.stats.frames_in.fetch_add(pushed as u64, Ordering::Relaxed);
        self.stats.bytes_in.fetch_add(bytes, Ordering::Relaxed);
        if dropped > 0 {
            self.stats.dropped_full.fetch_add(dropped, Ordering::Relaxed);
        }
        if pushed > 0 {
            self.consumer.lock().unwrap().notify();
        }
        pushed
    }

    /// Take up to `max` frames from the front, appending them to `out`.
    pub fn pop_batch(&self, max: usize, out: &mut Vec<Frame>) -> usize {
        let mut q = self.queue.lock().unwrap();
        let n = max.min(q.len());
        out.extend(q.drain(..n));
        drop(q);
        self.stats.frames_out.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Put frames back at the front, in order (a consumer that took more
    /// than it could handle, or a drain that hands frames over).
    pub fn unpop_front(&self, frames: Vec<Frame>) {
        let n = frames.len() as u64;
        let mut q = self.queue.lock().unwrap();
        for f in frames.into_iter().rev() {
            q.push_front(f);
        }
        drop(q);
        self.stats.frames_out.fetch_sub(n, Ordering::Relaxed);
    }

    pub fn len(&self) -> usize {
        self.queue.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn frame(n: u8) -> Frame {
        Frame { data: vec![n; 60], offload: Offload::default() }
    }

    #[test]
    fn push_pop_keeps_order_and_counts() {
        let ring = Ring::new("t", 4, Notify::new());
        assert_eq!(ring.push_batch((0..3).map(frame)), 3);
        let mut out = Vec::new();
        assert_eq!(ring.pop_batch(2, &mut out), 2);
        assert_eq!(out[0].data[0], 0);
        assert_eq!(out[1].data[0], 1);
        assert_eq!(ring.stats.frames_in.load(Ordering::Relaxed), 3);
        assert_eq!(ring.stats.bytes_in.load(Ordering::Relaxed), 180);
    }

    #[test]
    fn full_ring_drops_and_counts_the_rest() {
        let ring = Ring::new("t", 2, Notify::new());
        assert_eq!(ring.push_batch((0..5).map(frame)), 2);
        assert_eq!(ring.stats.dropped_full.load(Ordering::Relaxed), 3);
        let mut out = Vec::new();
        ring.pop_batch(10, &mut out);
        assert_eq!(out.iter().map(|f| f.data[0]).collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn unpop_restores_order() {
        let ring = Ring::new("t", 8, Notify::new());
        ring.push_batch((0..4).map(frame));
        let mut out = Vec::new();
        ring.pop_batch(3, &mut out);
        ring.unpop_front(out.split_off(1));
        let mut again = Vec::new();
        ring.pop_batch(8, &mut again);
        assert_eq!(again.iter().map(|f| f.data[0]).collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    #[test]
    fn notify_wakes_a_waiting_consumer_and_is_not_lost() {
        let n = Notify::new();
        let ring = Ring::new("t", 8, n.clone());
        // A push before the wait must still wake it.
        ring.push_batch([frame(1)]);
        assert_eq!(n.wait_until(Some(Instant::now() + Duration::from_secs(5)), || false), Wake::Ready);
        // A push from another thread wakes a sleeping wait.
        let r2 = ring.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            r2.push_batch([frame(2)]);
        });
        let t0 = Instant::now();
        assert_eq!(n.wait_until(Some(Instant::now() + Duration::from_secs(5)), || false), Wake::Ready);
        assert!(t0.elapsed() < Duration::from_secs(4));
        t.join().unwrap();
    }

    #[test]
    fn wait_times_out_and_stop_wins() {
        let n = Notify::new();
        let t0 = Instant::now();
        assert_eq!(n.wait_until(Some(t0 + Duration::from_millis(10)), || false), Wake::Timeout);
        assert!(t0.elapsed() >= Duration::from_millis(10));
        n.stop();
        assert_eq!(n.wait_until(None, || true), Wake::Stop);
    }
}
