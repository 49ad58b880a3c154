//! The in-memory wire: links joined inside the host, with seeded loss,
//! duplication, reordering and delay, for tests that need a bad network
//! they can replay.
//!
//! One thread moves frames from every port's transmit ring to the receive
//! rings of the other ports (a hub). On a clean wire frames pass as they
//! are: TCP segments larger than the MTU stay whole (segmentation offload
//! on one side, coalesced receive on the other, as across a veth pair).
//! When loss, duplication or reordering is on, segments are first cut to
//! the MTU in software, as a NIC would, so that impairments hit single
//! wire frames. Every random choice comes from one seeded generator, so a
//! run is replayed by its seed.

use crate::link::{LinkInfo, LinkPort, LinkSlot};
use crate::ring::{Frame, Gso, Notify, Offload, Ring, Wake};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Default)]
pub struct Impairments {
    pub seed: u64,
    /// Probability that a frame is lost.
    pub loss: f64,
    /// Probability that a frame is delivered twice.
    pub duplicate: f64,
    /// Probability that a frame is held back by `reorder_delay`.
    pub reorder: f64,
    /// One-way delay for every frame.
    pub delay: Duration,
    pub reorder_delay: Duration,
}

impl Impairments {
    fn any(&self) -> bool {
        self.loss > 0.0 || self.duplicate > 0.0 || self.reorder > 0.0
    }
}

#[derive(Default, Debug)]
pub struct WireStats {
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    pub lost: AtomicU64,
    pub duplicated: AtomicU64,
    pub reordered: AtomicU64,
    pub segmented: AtomicU64,
    pub full: AtomicU64,
}

/// xorshift64*: small, fast, and replayable from its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(crate::buffers::splitmix64(seed) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

struct Pending {
    at: Instant,
    seq: u64,
    to: usize,
    frame: Frame,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        self.at == o.at && self.seq == o.seq
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    // BinaryHeap is a max-heap: the earliest frame must compare greatest.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.at.cmp(&self.at).then(o.seq.cmp(&self.seq))
    }
}

/// A hub of links. `attach` makes a link for a component; `start` runs the
/// wire's thread until `stop`.
pub struct Wire {
    ports: Vec<(Arc<Ring>, Arc<Ring>)>,
    notify: Arc<Notify>,
    pub stats: Arc<WireStats>,
    imp: Impairments,
    mtu: usize,
}

impl Wire {
    pub fn new(imp: Impairments) -> Wire {
        Wire { ports: Vec::new(), notify: Notify::new(), stats: Arc::new(WireStats::default()), imp, mtu: 1500 }
    }

    /// A new port on the wire, as a link for a component.
    pub fn attach(&mut self, info: LinkInfo, ring_frames: usize) -> LinkSlot {
        let n = Notify::new();
        let to_wire = Ring::new(format!("port{}-tx", self.ports.len()), ring_frames, self.notify.clone());
        let from_wire = Ring::new(format!("port{}-rx", self.ports.len()), ring_frames, n.clone());
        self.ports.push((to_wire.clone(), from_wire.clone()));
        LinkSlot::new(LinkPort { info, rx: from_wire, tx: to_wire }, n)
    }

    /// Run the wire on its own thread; `stop()` on the returned handle ends it.
    pub fn start(self) -> WireHandle {
        let notify = self.notify.clone();
        let stats = self.stats.clone();
        let thread = std::thread::Builder::new().name("wire".into()).spawn(move || self.run()).expect("spawn the wire thread");
        WireHandle { notify, stats, thread: Some(thread) }
    }

    fn run(self) {
        let mut rng = Rng::new(self.imp.seed);
        let mut heap: BinaryHeap<Pending> = BinaryHeap::new();
        let mut seq = 0u64;
        let mut batch = Vec::new();
        let segment = self.imp.any();
        loop {
            // Take what every port sent.
            for (from, (tx, _)) in self.ports.iter().enumerate() {
                batch.clear();
                tx.pop_batch(4096, &mut batch);
                for f in batch.drain(..) {
                    let pieces = if segment && f.offload.gso == Gso::TcpV4 {
                        self.stats.segmented.fetch_add(1, Ordering::Relaxed);
                        segment_tcp(&f, self.mtu)
                    } else {
                        vec![f]
                    };
                    for piece in pieces {
                        if rng.chance(self.imp.loss) {
                            self.stats.lost.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        let copies = if rng.chance(self.imp.duplicate) {
                            self.stats.duplicated.fetch_add(1, Ordering::Relaxed);
                            2
                        } else {
                            1
                        };
                        for _ in 0..copies {
                            let mut at = Instant::now() + self.imp.delay;
                            if rng.chance(self.imp.reorder) {
                                self.stats.reordered.fetch_add(1, Ordering::Relaxed);
                                at += self.imp.reorder_delay;
                            }
                            for to in 0..self.ports.len() {
                                if to != from {
                                    seq += 1;
                                    heap.push(Pending { at, seq, to, frame: piece.clone() });
                                }
                            }
                        }
                    }
                }
            }
            // Deliver what is due, in batches per port.
            let now = Instant::now();
            let mut out: Vec<Vec<Frame>> = vec![Vec::new(); self.ports.len()];
            while heap.peek().is_some_and(|p| p.at <= now) {
                let p = heap.pop().unwrap();
                self.stats.frames.fetch_add(1, Ordering::Relaxed);
                self.stats.bytes.fetch_add(p.frame.data.len() as u64, Ordering::Relaxed);
                out[p.to].push(p.frame);
            }
            for (to, frames) in out.into_iter().enumerate() {
                if !frames.is_empty() {
                    let n = frames.len();
                    let pushed = self.ports[to].1.push_batch(frames);
                    self.stats.full.fetch_add((n - pushed) as u64, Ordering::Relaxed);
                }
            }
            let deadline = heap.peek().map(|p| p.at);
            let ports = &self.ports;
            if self.notify.wait_until(deadline, || ports.iter().any(|(tx, _)| !tx.is_empty())) == Wake::Stop {
                return;
            }
        }
    }
}

pub struct WireHandle {
    notify: Arc<Notify>,
    pub stats: Arc<WireStats>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WireHandle {
    pub fn stop(&mut self) {
        self.notify.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WireHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sum16(b: &[u8], mut sum: u64) -> u64 {
    let mut chunks = b.chunks_exact(2);
    for c in &mut chunks {
        sum += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        sum += (*last as u64) << 8;
    }
    sum
}

pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Cut a TCP/IPv4 frame marked for segmentation into frames of at most
/// `mtu` bytes of IP packet, as a NIC's TSO does: copy the headers, fix
/// the IP length, id and checksum and the TCP sequence number and flags,
/// and leave the L4 checksum partial (the pseudo-header sum for the new
/// length) with NEEDS_CSUM set, as the original asked.
pub fn segment_tcp(f: &Frame, mtu: usize) -> Vec<Frame> {
    let d = &f.data;
    let ip = 14;
    if d.len() < ip + 20 || d[12] != 0x08 || d[13] != 0x00 {
        return vec![f.clone()];
    }
    let ihl = ((d[ip] & 0x0f) as usize) * 4;
    let tcp = ip + ihl;
    if d.len() < tcp + 20 {
        return vec![f.clone()];
    }
    let thl = ((d[tcp + 12] >> 4) as usize) * 4;
    let hdr = tcp + thl;
    let mss = if f.offload.gso_size > 0 { f.offload.gso_size as usize } else { mtu - ihl - thl };
    if d.len() <= hdr || d.len() - hdr <= mss {
        let mut g = f.clone();
        g.offload.gso = Gso::None;
        g.offload.gso_size = 0;
        return vec![g];
    }
    let payload = &d[hdr..];
    let seq0 = u32::from_be_bytes(d[tcp + 4..tcp + 8].try_into().unwrap());
    let flags = d[tcp + 13];
    let id0 = u16::from_be_bytes([d[ip + 4], d[ip + 5]]);
    let src = &d[ip + 12..ip + 16];
    let dst = &d[ip + 16..ip + 20];
    let mut out = Vec::new();
    let count = payload.len().div_ceil(mss);
    for (i, chunk) in payload.chunks(mss).enumerate() {
        let mut s = Vec::with_capacity(hdr + chunk.len());
        s.extend_from_slice(&d[..hdr]);
        s.extend_from_slice(chunk);
        let total = (ihl + thl + chunk.len()) as u16;
        s[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
        s[ip + 4..ip + 6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
        s[ip + 10] = 0;
        s[ip + 11] = 0;
        let ic = !fold(sum16(&s[ip..ip + ihl], 0));
        s[ip + 10..ip + 12].copy_from_slice(&ic.to_be_bytes());
        let seq = seq0.wrapping_add((i * mss) as u32);
        s[tcp + 4..tcp + 8].copy_from_slice(&seq.to_be_bytes());
        let last = i + 1 == count;
        // FIN and PSH on the last segment only, CWR on the first only.
        let mut fl = if last { flags } else { flags & !(0x01 | 0x08) };
        if i > 0 {
            fl &= !0x80;
        }
        s[tcp + 13] = fl;
        let l4 = (thl + chunk.len()) as u64;
        let pseudo = sum16(src, 0) + sum16(dst, 0) + 6 + l4;
        s[tcp + 16..tcp + 18].copy_from_slice(&fold(pseudo).to_be_bytes());
        out.push(Frame { data: s, offload: Offload { gso: Gso::None, gso_size: 0, ..f.offload } });
    }
    out
}

/// Finish a partial L4 checksum (NEEDS_CSUM) in place, as a NIC does.
pub fn complete_checksum(f: &mut Frame) -> bool {
    let o = f.offload;
    let start = o.csum_start as usize;
    let field = start + o.csum_offset as usize;
    if !o.needs_csum || field + 2 > f.data.len() {
        return !o.needs_csum;
    }
    let sum = !fold(sum16(&f.data[start..], 0));
    f.data[field..field + 2].copy_from_slice(&sum.to_be_bytes());
    f.offload.needs_csum = false;
    true
}

/// Verify the L4 checksum of an IPv4 TCP, UDP or ICMP frame; true if good
/// (or not a protocol with a checksum we check).
pub fn verify_checksum(d: &[u8]) -> bool {
    let ip = 14;
    if d.len() < ip + 20 || d[12] != 0x08 || d[13] != 0x00 {
        return true;
    }
    let ihl = ((d[ip] & 0x0f) as usize) * 4;
    let total = u16::from_be_bytes([d[ip + 2], d[ip + 3]]) as usize;
    if total < ihl || ip + total > d.len() {
        return false;
    }
    let l4 = &d[ip + ihl..ip + total];
    let proto = d[ip + 9];
    match proto {
        1 => fold(sum16(l4, 0)) == 0xffff,
        6 | 17 => {
            if proto == 17 && l4.len() >= 8 && l4[6] == 0 && l4[7] == 0 {
                return true; // UDP without a checksum
            }
            let pseudo = sum16(&d[ip + 12..ip + 20], 0) + proto as u64 + l4.len() as u64;
            fold(sum16(l4, pseudo)) == 0xffff
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_frame(payload: usize, flags: u8) -> Frame {
        let mut d = vec![0u8; 14 + 20 + 32 + payload];
        d[12] = 0x08;
        d[14] = 0x45;
        let total = (20 + 32 + payload) as u16;
        d[16..18].copy_from_slice(&total.to_be_bytes());
        d[18..20].copy_from_slice(&7u16.to_be_bytes());
        d[14 + 9] = 6;
        d[26..30].copy_from_slice(&[10, 0, 0, 1]);
        d[30..34].copy_from_slice(&[10, 0, 0, 2]);
        let t = 34;
        d[t + 4..t + 8].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        d[t + 12] = 8 << 4;
        d[t + 13] = flags;
        for (i, b) in d[t + 32..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let pseudo = sum16(&d[26..34], 0) + 6 + (32 + payload) as u64;
        let p = fold(pseudo).to_be_bytes();
        d[t + 16] = p[0];
        d[t + 17] = p[1];
        Frame {
            data: d,
            offload: Offload { needs_csum: true, csum_valid: false, gso: Gso::TcpV4, hdr_len: 66, gso_size: 1448, csum_start: 34, csum_offset: 16 },
        }
    }

    #[test]
    fn segmentation_cuts_at_the_mss_and_fixes_every_header() {
        let f = tcp_frame(1448 * 3 + 100, 0x18 | 0x01); // PSH ACK FIN
        let segs = segment_tcp(&f, 1500);
        assert_eq!(segs.len(), 4);
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let mut s = s.clone();
            assert_eq!(s.offload.gso, Gso::None);
            assert!(complete_checksum(&mut s));
            assert!(verify_checksum(&s.data), "segment {i} checksum");
            let ip_ok = fold(sum16(&s.data[14..34], 0)) == 0xffff;
            assert!(ip_ok, "segment {i} IP checksum");
            let seq = u32::from_be_bytes(s.data[38..42].try_into().unwrap());
            assert_eq!(seq, 0xffff_fff0u32.wrapping_add((i * 1448) as u32), "sequence wraps correctly");
            let flags = s.data[34 + 13];
            if i < 3 {
                assert_eq!(flags, 0x10, "no PSH or FIN before the last");
            } else {
                assert_eq!(flags, 0x19);
            }
            assert_eq!(u16::from_be_bytes([s.data[18], s.data[19]]), 7 + i as u16, "IP id");
            joined.extend_from_slice(&s.data[66..]);
        }
        assert_eq!(joined, f.data[66..].to_vec());
    }

    #[test]
    fn checksum_verification_catches_a_flipped_bit() {
        let mut f = tcp_frame(100, 0x10);
        f.offload.gso = Gso::None;
        assert!(complete_checksum(&mut f));
        assert!(verify_checksum(&f.data));
        f.data[80] ^= 1;
        assert!(!verify_checksum(&f.data));
    }

    #[test]
    fn the_same_seed_makes_the_same_choices() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        let xs: Vec<bool> = (0..1000).map(|_| a.chance(0.05)).collect();
        let ys: Vec<bool> = (0..1000).map(|_| b.chance(0.05)).collect();
        assert_eq!(xs, ys);
        let lost = xs.iter().filter(|x| **x).count();
        assert!((20..=90).contains(&lost), "5% of 1000, got {lost}");
    }
}
