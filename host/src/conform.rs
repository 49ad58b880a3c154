//! Two network servers held to one behaviour, and what each costs.
//!
//! `libretto conform A.wasm B.wasm [--frames N] [--seed S]` runs two builds
//! of the network server's world (the TypeScript server and the Rust one,
//! say) side by side, each on a switch of its own with the same ports and
//! the same portmap, and feeds both the same seeded frame mix through the
//! host's rings: valid and malformed frames, every drop reason a server
//! decides, ARP, ping, broadcasts, ports bound and unbound, from the NIC
//! and from apps on the shared IP and on IPs of their own. Frames go in as
//! steps (1 to 256 frames pushed at once on one port, which the server
//! takes as one batch); after each step the frames every port received
//! (forwarded frames by a tag, built frames byte for byte), the drops by
//! reason and the frames consumed must be the same, and at the end so must
//! the servers' `control.stats` (names, order, values). The first
//! difference stops the run: both systems are replayed from the start to
//! that step, its frames are fed one at a time, and the first frame whose
//! outcome differs is printed in hex with both outcomes. Exit 0: the same;
//! 1: a difference; 2: a usage or load error.
//!
//! `libretto netbench [--components DIR] [--out DIR] [--quick] [--server NAME]` measures
//! the network servers on the same rings with the Rust load generator
//! (`components/loadgen-rs`) on the NIC's side: per-frame cost (the server
//! thread's CPU time per frame) and frames per second with one burst in
//! flight, and the highest offered rate without a drop, at bursts of 1,
//! 16, 64 and 256 frames of 64 and 1500 bytes, for the TypeScript server
//! on both engines and the Rust server.

use crate::apprun::prepare;
use crate::bindings::exports::libretto::net::control::GuestIndices as ControlIndices;
use crate::bindings::exports::libretto::net::server::{Exit, GuestIndices as ServerIndices};
use crate::engine;
use crate::portmap::{PortPolicy, Portmap, Proto};
use crate::ring::{Frame, Notify, Offload, Ring};
use crate::state::Ctx;
use crate::supervise::Supervised;
use crate::switch::{DROP_REASONS, Mode, NicInfo, Switch};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use wasmtime::component::InstancePre;

// ---- the test system -------------------------------------------------------

const NIC_MAC: u64 = 0x0200_0000_6301;
const OWN3_MAC: u64 = 0x0200_0000_6303;
const OWN4_MAC: u64 = 0x0200_0000_6304;
const PEER_MAC: u64 = 0x0200_0000_63fe;
const SHARED: u32 = 0x0a3f_0002; // 10.63.0.2
const OWN3: u32 = 0x0a3f_0003;
const OWN4: u32 = 0x0a3f_0004;
const PEER: u32 = 0x0a3f_0001;
const PORTS: usize = 5;
/// The NIC's outgoing ring is small, so big steps of replies also exercise
/// `ring-full`.
const NIC_OUT_FRAMES: usize = 200;

/// Ports each app on the shared IP holds: (app, proto, port). App 9 holds
/// ports but has no port on the switch (an app that just went away).
const BOUND: &[(u32, Proto, u16)] = &[
    (1, Proto::Tcp, 80),
    (1, Proto::Tcp, 443),
    (1, Proto::Tcp, 49152),
    (1, Proto::Tcp, 49153),
    (1, Proto::Udp, 53),
    (1, Proto::Udp, 5000),
    (2, Proto::Tcp, 6379),
    (2, Proto::Tcp, 8080),
    (2, Proto::Udp, 5353),
    (9, Proto::Tcp, 9999),
    (9, Proto::Udp, 9999),
];
/// Ports nobody holds.
const UNBOUND: &[u16] = &[1, 22, 25, 81, 3306, 40000, 65535];

fn mac6(m: u64) -> [u8; 6] {
    let b = m.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// What a server thread leaves when it stops.
pub struct ServerOutcome {
    pub stats: Vec<(String, u64)>,
    pub version: String,
}

/// A network server component running on its own thread against `sw`, as
/// the system runs it (`system::NetServer`'s Store data).
pub struct ServerThread {
    pub sw: Arc<Switch>,
    handle: Option<std::thread::JoinHandle<Result<ServerOutcome, String>>>,
    /// The thread's CPU clock, for per-frame cost.
    cpu_clock: libc::clockid_t,
}

impl ServerThread {
    pub fn start(pre: InstancePre<Ctx>, sw: Arc<Switch>, name: &str) -> Result<ServerThread, String> {
        let (tx, rx) = std::sync::mpsc::channel();
        let sw2 = sw.clone();
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut clock: libc::clockid_t = 0;
                // SAFETY: asks for the calling thread's own CPU-time clock.
                unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
                let _ = tx.send(clock);
                let mut ctx = Ctx::new("network-server");
                ctx.switch = Some(sw2);
                let mut store = engine::new_store(ctx);
                let instance = engine::instantiate(&pre, &mut store).map_err(|e| format!("cannot instantiate: {e:#}"))?;
                let server = ServerIndices::new(&pre).and_then(|s| s.load(&mut store, &instance)).map_err(|e| format!("{e:#}"))?;
                match server.call_run(&mut store) {
                    Ok(Exit::Stopped) => {}
                    Ok(Exit::Failed(why)) => return Err(format!("the server failed: {why}")),
                    Err(e) => return Err(format!("the server trapped: {e:#}")),
                }
                let c = ControlIndices::new(&pre).and_then(|c| c.load(&mut store, &instance)).map_err(|e| format!("{e:#}"))?;
                let version = c.call_describe(&mut store).map_err(|e| format!("{e:#}"))?.version;
                let stats = c.call_stats(&mut store).map_err(|e| format!("{e:#}"))?.into_iter().map(|c| (c.name, c.value)).collect();
                Ok(ServerOutcome { stats, version })
            })
            .map_err(|e| e.to_string())?;
        let cpu_clock = rx.recv_timeout(Duration::from_secs(10)).map_err(|_| "the server thread did not start".to_string())?;
        Ok(ServerThread { sw, handle: Some(handle), cpu_clock })
    }

    /// CPU time the server's thread has used.
    pub fn cpu(&self) -> Duration {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a clock id from pthread_getcpuclockid of a live thread.
        unsafe { libc::clock_gettime(self.cpu_clock, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    pub fn finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Ask the server to stop; its stats.
    pub fn stop(mut self) -> Result<ServerOutcome, String> {
        self.sw.server_notify().stop();
        self.handle.take().unwrap().join().map_err(|_| "the server thread panicked".to_string())?
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.sw.server_notify().stop();
            let _ = h.join();
        }
    }
}

/// One implementation on a switch of its own, with the conformance ports.
struct Rig {
    server: ServerThread,
    /// Rings toward the server (index = port id) and from it.
    inputs: Vec<Arc<Ring>>,
    outputs: Vec<Arc<Ring>>,
}

/// Counters of the host's switch that a step may move.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
struct HostCount {
    drops: [u64; 9],
    consumed: u64,
    flooded: u64,
    built: u64,
    invalid: u64,
    leaked: u64,
}

fn host_count(sw: &Switch) -> HostCount {
    let mut drops = [0u64; 9];
    for (i, d) in sw.drops.iter().enumerate() {
        drops[i] = d.load(Ordering::Relaxed);
    }
    HostCount {
        drops,
        consumed: sw.consumed.load(Ordering::Relaxed),
        flooded: sw.flooded.load(Ordering::Relaxed),
        built: sw.built.load(Ordering::Relaxed),
        invalid: sw.invalid.load(Ordering::Relaxed),
        leaked: sw.leaked.load(Ordering::Relaxed),
    }
}

fn delta(a: &HostCount, b: &HostCount) -> HostCount {
    let mut drops = [0u64; 9];
    for i in 0..9 {
        drops[i] = b.drops[i] - a.drops[i];
    }
    HostCount { drops, consumed: b.consumed - a.consumed, flooded: b.flooded - a.flooded, built: b.built - a.built, invalid: b.invalid - a.invalid, leaked: b.leaked - a.leaked }
}

impl std::fmt::Display for HostCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let drops: Vec<String> = self.drops.iter().enumerate().filter(|(_, n)| **n > 0).map(|(i, n)| format!("{}={n}", DROP_REASONS[i])).collect();
        write!(f, "drops {{{}}} consumed {} flooded {} built {} invalid {} leaked {}", drops.join(" "), self.consumed, self.flooded, self.built, self.invalid, self.leaked)
    }
}

/// What one step came to on one implementation.
#[derive(Default)]
struct StepOutcome {
    /// Frames each port received, in order.
    delivered: Vec<Vec<Frame>>,
    counts: HostCount,
}

/// A forwarded frame's tag (its number in the run, plus one); 0 for a
/// frame the server built.
fn tag_of(f: &Frame) -> u32 {
    ((f.offload.csum_start as u32) << 16) | f.offload.csum_offset as u32
}

fn tagged(data: Vec<u8>, n: u32) -> Frame {
    let t = n + 1;
    Frame { data, offload: Offload { csum_start: (t >> 16) as u16, csum_offset: t as u16, ..Offload::default() } }
}

impl Rig {
    fn new(path: &Path, name: &str) -> Result<Rig, String> {
        let pre = prepare(path)?;
        let portmap = Arc::new(Portmap::new());
        for &(app, proto, port) in BOUND {
            portmap.bind(app, &PortPolicy::any(), proto, port).map_err(|e| format!("{e:?}"))?;
        }
        let sw = Switch::new(NicInfo { mac: NIC_MAC, mtu: 1500, shared_ip: SHARED, prefix_len: 24 }, portmap, 4096);
        let nic_in = Ring::new("conform-nic-in", 4096, sw.server_notify());
        let nic_out = Ring::new("conform-nic-out", NIC_OUT_FRAMES, Notify::new());
        sw.attach_nic(nic_in.clone(), nic_out.clone());
        let mut inputs = vec![nic_in];
        let mut outputs = vec![nic_out];
        for (id, app, mac, ip) in [(1, "web", NIC_MAC, None), (2, "kv", NIC_MAC, None), (3, "own", OWN3_MAC, Some(OWN3)), (4, "own-direct", OWN4_MAC, Some(OWN4))] {
            let (port, _slot) = sw.attach_app(id, app, mac, ip, Notify::new());
            inputs.push(port.to_server.clone());
            outputs.push(port.from_server.clone());
        }
        // An app in direct mode: the server still sees its port; floods skip it.
        sw.set_mode(4, Mode::Direct);
        let server = ServerThread::start(pre, sw, name)?;
        Ok(Rig { server, inputs, outputs })
    }

    fn push(&self, port: usize, frames: &[Frame]) {
        let n = self.inputs[port].push_batch(frames.iter().cloned());
        assert_eq!(n, frames.len(), "the conformance input ring overflowed");
    }

    /// Wait until the server took the step and is waiting again; collect
    /// what came out.
    fn collect(&self, port: usize, before: &HostCount) -> Result<StepOutcome, String> {
        let t0 = Instant::now();
        let mut spins = 0u32;
        loop {
            // The ring first, then the flag: the server clears `in_wait`
            // before it takes the frames and sets it only when it waits
            // again, after its forward and send.
            if self.inputs[port].is_empty() && self.server.sw.control.in_wait.load(Ordering::SeqCst) {
                break;
            }
            if self.server.finished() {
                return Err("the server stopped in the middle of the run".into());
            }
            if t0.elapsed() > Duration::from_secs(60) {
                return Err("the server did not take a step in 60 s".into());
            }
            spins += 1;
            if spins < 64 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
        let mut delivered = Vec::with_capacity(PORTS);
        for r in &self.outputs {
            let mut v = Vec::new();
            r.pop_batch(usize::MAX, &mut v);
            delivered.push(v);
        }
        let after = host_count(&self.server.sw);
        Ok(StepOutcome { delivered, counts: delta(before, &after) })
    }
}

// ---- the seeded frame mix --------------------------------------------------

/// SplitMix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

fn eth(dst: u64, src: u64, ty: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(128);
    f.extend_from_slice(&mac6(dst));
    f.extend_from_slice(&mac6(src));
    f.extend_from_slice(&ty.to_be_bytes());
    f
}

fn csum16(b: &[u8], mut sum: u32) -> u16 {
    for c in b.chunks(2) {
        sum += ((c[0] as u32) << 8) | *c.get(1).unwrap_or(&0) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 header (with `opt_words` words of options) and `l4` after it.
fn ipv4(f: &mut Vec<u8>, src: u32, dst: u32, proto: u8, frag: u16, opt_words: usize, l4: &[u8]) {
    let at = f.len();
    let ihl = 5 + opt_words;
    f.push(0x40 | ihl as u8);
    f.push(0);
    f.extend_from_slice(&((ihl * 4 + l4.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0x12, 0x34]);
    f.extend_from_slice(&frag.to_be_bytes());
    f.push(64);
    f.push(proto);
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&src.to_be_bytes());
    f.extend_from_slice(&dst.to_be_bytes());
    for _ in 0..opt_words {
        f.extend_from_slice(&[1, 1, 1, 1]); // NOPs
    }
    let c = csum16(&f[at..at + ihl * 4], 0);
    f[at + 10..at + 12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(l4);
}

fn tcp(rng: &mut Rng, sport: u16, dport: u16, flags: u8, payload: usize) -> Vec<u8> {
    let words = if rng.chance(20) { rng.range(5, 15) as usize } else { 5 };
    let mut t = Vec::with_capacity(words * 4 + payload);
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&(rng.next() as u32).to_be_bytes());
    t.extend_from_slice(&(rng.next() as u32).to_be_bytes());
    t.push((words as u8) << 4);
    t.push(flags);
    t.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    t.resize(words * 4, 1);
    fill(rng, &mut t, payload);
    t
}

fn udp(rng: &mut Rng, sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload);
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    fill(rng, &mut u, payload);
    u
}

/// Append `n` bytes: random where a server could see them (the head), zero after.
fn fill(rng: &mut Rng, v: &mut Vec<u8>, n: usize) {
    let random = n.min(96);
    for _ in 0..random {
        v.push(rng.next() as u8);
    }
    v.resize(v.len() + n - random, 0);
}

fn payload_len(rng: &mut Rng) -> usize {
    match rng.below(10) {
        0..=3 => 0,
        4..=6 => rng.range(1, 64) as usize,
        7..=8 => rng.range(65, 512) as usize,
        _ => rng.range(513, 1400) as usize,
    }
}

fn tcp_flags(rng: &mut Rng) -> u8 {
    let any = rng.next() as u8;
    rng.pick(&[0x02, 0x10, 0x18, 0x11, 0x12, 0x04, 0x14, 0x01, 0x03, 0x00, 0x19, any])
}

fn l4_port(rng: &mut Rng, proto: Proto) -> u16 {
    if rng.chance(55) {
        let held: Vec<u16> = BOUND.iter().filter(|b| b.1 == proto).map(|b| b.2).collect();
        rng.pick(&held)
    } else if rng.chance(80) {
        rng.pick(UNBOUND)
    } else {
        rng.next() as u16
    }
}

fn arp(rng: &mut Rng, dst: u64, src: u64, op: u16, sha: u64, spa: u32, tpa: u32) -> Vec<u8> {
    let mut f = eth(dst, src, 0x0806);
    let (htype, ptype, hlen, plen) = if rng.chance(5) { (rng.pick(&[1u16, 6]), rng.pick(&[0x0800u16, 0x86dd]), rng.pick(&[6u8, 8]), rng.pick(&[4u8, 16])) } else { (1, 0x0800, 6, 4) };
    f.extend_from_slice(&htype.to_be_bytes());
    f.extend_from_slice(&ptype.to_be_bytes());
    f.push(hlen);
    f.push(plen);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&mac6(sha));
    f.extend_from_slice(&spa.to_be_bytes());
    f.extend_from_slice(&mac6(if op == 1 { 0 } else { NIC_MAC }));
    f.extend_from_slice(&tpa.to_be_bytes());
    if rng.chance(70) {
        f.resize(60, 0); // Ethernet padding
    }
    f
}

/// An ICMP message: type, code, 4 bytes of rest, then `body`.
fn icmp(ty: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    let c = csum16(&m, 0);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// An ICMP error's quote: an IP header (from the shared IP) and 8 bytes of TCP or UDP.
fn quote(rng: &mut Rng) -> Vec<u8> {
    let proto = rng.pick(&[6u8, 17, 17, 6, 1, 47]);
    let p = if proto == 6 { Proto::Tcp } else { Proto::Udp };
    let sport = l4_port(rng, p);
    let mut q = Vec::new();
    let opt = if rng.chance(15) { rng.range(1, 10) as usize } else { 0 };
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&(rng.next() as u16).to_be_bytes());
    l4.extend_from_slice(&(rng.next() as u32).to_be_bytes());
    ipv4(&mut q, SHARED, rng.next() as u32, proto, 0, opt, &l4);
    if rng.chance(10) {
        q.truncate(rng.below(q.len() as u64) as usize);
    }
    q
}

/// A frame from the peer (Linux, the world) to us, over the NIC.
fn from_nic(rng: &mut Rng) -> Vec<u8> {
    let dst_ip = match rng.below(20) {
        0..=11 => SHARED,
        12..=13 => OWN3,
        14 => OWN4,
        15 => 0xffff_ffff,
        16 => 0x0a3f_00ff,
        17 => 0x0a3f_0000 | rng.range(5, 254) as u32,
        18 => 0xe000_0001,
        _ => rng.next() as u32,
    };
    let dst_mac = match rng.below(20) {
        0..=13 => match dst_ip {
            OWN3 => OWN3_MAC,
            OWN4 => OWN4_MAC,
            0xffff_ffff | 0x0a3f_00ff => 0xffff_ffff_ffff,
            _ => NIC_MAC,
        },
        14 => 0xffff_ffff_ffff,
        15 => 0x0100_5e00_0001,
        16 => OWN3_MAC,
        17 => NIC_MAC,
        18 => PEER_MAC,
        _ => rng.next() & 0xffff_ffff_ffff,
    };
    let src_ip = if rng.chance(95) { PEER } else { rng.next() as u32 };
    let kind = rng.below(100);
    let mut f;
    match kind {
        0..=34 => {
            f = eth(dst_mac, PEER_MAC, 0x0800);
            let flags = tcp_flags(rng);
            let (sport, dport, n) = (rng.range(1024, 65535) as u16, l4_port(rng, Proto::Tcp), payload_len(rng));
            let t = tcp(rng, sport, dport, flags, n);
            let frag = if rng.chance(5) { rng.pick(&[0x2000u16, 0x0001, 0x4000, 0x20b9]) } else { 0x4000 };
            ipv4(&mut f, src_ip, dst_ip, 6, frag, if rng.chance(10) { rng.range(1, 10) as usize } else { 0 }, &t);
        }
        35..=49 => {
            f = eth(dst_mac, PEER_MAC, 0x0800);
            let (sport, dport, n) = (rng.range(1024, 65535) as u16, l4_port(rng, Proto::Udp), payload_len(rng));
            let u = udp(rng, sport, dport, n);
            let frag = if rng.chance(5) { rng.pick(&[0x2000u16, 0x0010]) } else { 0 };
            ipv4(&mut f, src_ip, dst_ip, 17, frag, if rng.chance(10) { rng.range(1, 10) as usize } else { 0 }, &u);
        }
        50..=59 => {
            // Ping, of every size around the 128-byte head.
            f = eth(dst_mac, PEER_MAC, 0x0800);
            let n = match rng.below(4) {
                0 => rng.range(0, 8) as usize,
                1 => rng.range(9, 70) as usize,
                2 => rng.range(71, 100) as usize,
                _ => rng.range(101, 1400) as usize,
            };
            let mut body = Vec::new();
            fill(rng, &mut body, n);
            let mut m = icmp(8, 0, [0, 1, 0, rng.next() as u8], &body);
            if rng.chance(10) {
                m.truncate(rng.below(9) as usize);
            }
            ipv4(&mut f, src_ip, dst_ip, 1, if rng.chance(3) { 0x2000 } else { 0 }, if rng.chance(10) { rng.range(1, 10) as usize } else { 0 }, &m);
        }
        60..=67 => {
            // ICMP errors about what an app sent, and other ICMP.
            f = eth(dst_mac, PEER_MAC, 0x0800);
            let ty = rng.pick(&[3u8, 3, 11, 0, 5, 13, 42]);
            let q = quote(rng);
            let m = icmp(ty, rng.below(16) as u8, [0; 4], &q);
            ipv4(&mut f, src_ip, dst_ip, 1, 0, 0, &m);
        }
        68..=71 => {
            // Another IP protocol.
            f = eth(dst_mac, PEER_MAC, 0x0800);
            let mut body = Vec::new();
            let n = rng.below(80) as usize;
            fill(rng, &mut body, n);
            ipv4(&mut f, src_ip, dst_ip, rng.pick(&[2u8, 47, 50, 89, 132, 0, 255]), 0, 0, &body);
        }
        72..=83 => {
            let tpa = match rng.below(6) {
                0..=2 => SHARED,
                3 => OWN3,
                4 => OWN4,
                _ => 0x0a3f_0000 | rng.range(5, 254) as u32,
            };
            let op = if rng.chance(70) { 1 } else { rng.pick(&[2u16, 3, 0]) };
            let d = if op == 1 { 0xffff_ffff_ffff } else { dst_mac };
            f = arp(rng, d, PEER_MAC, op, PEER_MAC, PEER, tpa);
        }
        84..=88 => {
            // Not IPv4 or ARP: IPv6, a VLAN tag, LLDP, anything.
            let any = rng.next() as u16;
            f = eth(dst_mac, PEER_MAC, rng.pick(&[0x86ddu16, 0x8100, 0x88cc, 0x0842, any]));
            let mut body = Vec::new();
            let n = rng.range(0, 100) as usize;
            fill(rng, &mut body, n);
            f.extend_from_slice(&body);
        }
        _ => {
            // Headers that cannot be: short, bad version, bad IHL, bad total length.
            f = eth(dst_mac, PEER_MAC, rng.pick(&[0x0800u16, 0x0806]));
            let (dport, n) = (l4_port(rng, Proto::Tcp), rng.below(40) as usize);
            let t = tcp(rng, 40000, dport, 0x02, n);
            ipv4(&mut f, src_ip, dst_ip, 6, 0, 0, &t);
            match rng.below(5) {
                0 => f.truncate(rng.below(f.len() as u64) as usize),
                1 => f[14] = (rng.below(16) as u8) << 4 | (f[14] & 0xf),
                2 => f[14] = 0x40 | rng.below(16) as u8,
                3 => {
                    let v = rng.next() as u16;
                    f[16..18].copy_from_slice(&v.to_be_bytes());
                }
                _ => {
                    let i = rng.below(f.len().min(60) as u64) as usize;
                    f[i] = rng.next() as u8;
                }
            }
        }
    }
    if rng.chance(3) {
        // A random byte of the head changed: whatever the rules make of it.
        let n = f.len().min(80);
        if n > 0 {
            let i = rng.below(n as u64) as usize;
            f[i] = rng.next() as u8;
        }
    }
    f
}

/// A frame an app sends: `port` 1 and 2 are on the shared IP, 3 and 4 have IPs of their own.
fn from_app(rng: &mut Rng, port: usize) -> Vec<u8> {
    let (own_ip, own_mac) = match port {
        1 | 2 => (SHARED, NIC_MAC),
        3 => (OWN3, OWN3_MAC),
        _ => (OWN4, OWN4_MAC),
    };
    let any = rng.next() as u32;
    let src_ip = if rng.chance(92) { own_ip } else { rng.pick(&[SHARED, OWN3, PEER, any]) };
    let src_mac = if rng.chance(95) { own_mac } else { rng.pick(&[NIC_MAC, OWN3_MAC, PEER_MAC]) };
    let dst_ip = match rng.below(12) {
        0..=5 => PEER,
        6 => SHARED,
        7 => OWN3,
        8 => OWN4,
        9 => 0xffff_ffff,
        10 => 0x0a3f_00ff,
        _ => rng.next() as u32,
    };
    let dst_mac = match dst_ip {
        0xffff_ffff | 0x0a3f_00ff => 0xffff_ffff_ffff,
        OWN3 => OWN3_MAC,
        OWN4 => OWN4_MAC,
        SHARED => NIC_MAC,
        _ => PEER_MAC,
    };
    let mut f;
    match rng.below(100) {
        0..=44 => {
            f = eth(dst_mac, src_mac, 0x0800);
            // From a port this app holds, another app's, or none.
            let sport = if rng.chance(60) {
                let mine: Vec<u16> = BOUND.iter().filter(|b| b.0 == port as u32 && b.1 == Proto::Tcp).map(|b| b.2).collect();
                if mine.is_empty() { 80 } else { rng.pick(&mine) }
            } else {
                l4_port(rng, Proto::Tcp)
            };
            let dport = if dst_ip == SHARED { l4_port(rng, Proto::Tcp) } else { rng.range(1, 65535) as u16 };
            let flags = tcp_flags(rng);
            let n = payload_len(rng);
            let t = tcp(rng, sport, dport, flags, n);
            let frag = if rng.chance(4) { 0x2000 } else { 0x4000 };
            ipv4(&mut f, src_ip, dst_ip, 6, frag, 0, &t);
        }
        45..=62 => {
            f = eth(dst_mac, src_mac, 0x0800);
            let sport = if rng.chance(60) {
                let mine: Vec<u16> = BOUND.iter().filter(|b| b.0 == port as u32 && b.1 == Proto::Udp).map(|b| b.2).collect();
                if mine.is_empty() { 53 } else { rng.pick(&mine) }
            } else {
                l4_port(rng, Proto::Udp)
            };
            let dport = if dst_ip == SHARED { l4_port(rng, Proto::Udp) } else { rng.range(1, 65535) as u16 };
            let n = payload_len(rng);
            let u = udp(rng, sport, dport, n);
            ipv4(&mut f, src_ip, dst_ip, 17, 0, 0, &u);
        }
        63..=72 => {
            f = eth(dst_mac, src_mac, 0x0800);
            let mut body = Vec::new();
            let n = rng.range(0, 120) as usize;
            fill(rng, &mut body, n);
            let m = icmp(rng.pick(&[8u8, 0, 3]), 0, [0, 7, 0, 1], &body);
            ipv4(&mut f, src_ip, dst_ip, 1, 0, 0, &m);
        }
        73..=86 => {
            let tpa = rng.pick(&[SHARED, OWN3, OWN4, PEER, 0x0a3f_0009]);
            let op = if rng.chance(70) { 1 } else { 2 };
            let sha = if rng.chance(93) { own_mac } else { PEER_MAC };
            let spa = if rng.chance(93) { own_ip } else { PEER };
            f = arp(rng, if op == 1 { 0xffff_ffff_ffff } else { PEER_MAC }, src_mac, op, sha, spa, tpa);
        }
        87..=91 => {
            let any = rng.next() as u16;
            f = eth(dst_mac, src_mac, rng.pick(&[0x86ddu16, 0x88cc, any]));
            let mut body = Vec::new();
            let n = rng.range(0, 60) as usize;
            fill(rng, &mut body, n);
            f.extend_from_slice(&body);
        }
        _ => {
            f = eth(dst_mac, src_mac, 0x0800);
            let t = tcp(rng, 80, 40000, 0x10, 0);
            ipv4(&mut f, src_ip, dst_ip, rng.pick(&[6u8, 17]), 0, 0, &t);
            match rng.below(3) {
                0 => f.truncate(rng.below(f.len() as u64) as usize),
                1 => f.truncate(34 + rng.below(4) as usize),
                _ => f[14] = rng.next() as u8,
            }
        }
    }
    f
}

/// One step: the port it arrives on and its frames (numbered from `first`).
struct Step {
    port: usize,
    first: u32,
    frames: Vec<Frame>,
}

/// The run's steps, generated from the seed as they are needed.
struct Mix {
    rng: Rng,
    next_frame: u32,
}

impl Mix {
    fn new(seed: u64) -> Mix {
        Mix { rng: Rng(seed ^ 0x6c69_6272_6574_746f), next_frame: 0 }
    }

    fn step(&mut self) -> Step {
        let rng = &mut self.rng;
        let port = match rng.below(100) {
            0..=59 => 0,
            60..=69 => 1,
            70..=77 => 2,
            78..=91 => 3,
            _ => 4,
        };
        let k = match rng.below(10) {
            0..=2 => rng.range(1, 8),
            3..=6 => rng.range(9, 64),
            _ => rng.range(65, 256),
        } as usize;
        let first = self.next_frame;
        let mut frames = Vec::with_capacity(k);
        for i in 0..k {
            let data = if port == 0 { from_nic(rng) } else { from_app(rng, port) };
            frames.push(tagged(data, first + i as u32));
        }
        self.next_frame += k as u32;
        Step { port, first, frames }
    }
}

// ---- comparing ---------------------------------------------------------------

fn hex(b: &[u8]) -> String {
    let mut s = String::new();
    for (i, line) in b.chunks(32).enumerate() {
        s.push_str(&format!("      {:04x}  {}\n", i * 32, line.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")));
    }
    s
}

const PORT_NAMES: [&str; PORTS] = ["nic", "web (shared IP)", "kv (shared IP)", "own (10.63.0.3)", "own-direct (10.63.0.4, direct mode)"];

/// What became of each frame of a step, as the host saw it.
fn fate(o: &StepOutcome, tag: u32) -> String {
    let to: Vec<&str> = o.delivered.iter().enumerate().filter(|(_, fs)| fs.iter().any(|f| tag_of(f) == tag)).map(|(p, _)| PORT_NAMES[p]).collect();
    if to.is_empty() { "not forwarded".into() } else { format!("forwarded to {}", to.join(", ")) }
}

/// One line per port of what a step delivered: forwarded frames by number, built frames in hex.
fn describe(o: &StepOutcome) -> String {
    let mut s = format!("    host counters: {}\n", o.counts);
    for (p, fs) in o.delivered.iter().enumerate() {
        if fs.is_empty() {
            continue;
        }
        let fwd: Vec<String> = fs.iter().filter(|f| tag_of(f) != 0).map(|f| format!("#{}", tag_of(f) - 1)).collect();
        let built: Vec<&Frame> = fs.iter().filter(|f| tag_of(f) == 0).collect();
        s.push_str(&format!(
            "    port {p} {}: {} forwarded {}, {} built\n",
            PORT_NAMES[p],
            fwd.len(),
            if fwd.len() <= 12 { fwd.join(" ") } else { format!("{} ...", fwd[..12].join(" ")) },
            built.len()
        ));
        for b in built.iter().take(4) {
            s.push_str(&format!("      built frame, {} bytes:\n{}", b.data.len(), hex(&b.data)));
        }
    }
    s
}

fn same(a: &StepOutcome, b: &StepOutcome) -> bool {
    a.counts == b.counts
        && a.delivered.len() == b.delivered.len()
        && a.delivered.iter().zip(&b.delivered).all(|(x, y)| x.len() == y.len() && x.iter().zip(y).all(|(f, g)| f.offload == g.offload && f.data == g.data))
}

struct Pair {
    a: Rig,
    b: Rig,
}

impl Pair {
    fn new(a: &Path, b: &Path) -> Result<Pair, String> {
        Ok(Pair { a: Rig::new(a, "conform-a")?, b: Rig::new(b, "conform-b")? })
    }

    fn step(&self, port: usize, frames: &[Frame]) -> Result<(StepOutcome, StepOutcome), String> {
        let (ba, bb) = (host_count(&self.a.server.sw), host_count(&self.b.server.sw));
        self.a.push(port, frames);
        self.b.push(port, frames);
        let oa = self.a.collect(port, &ba).map_err(|e| format!("A: {e}"))?;
        let ob = self.b.collect(port, &bb).map_err(|e| format!("B: {e}"))?;
        Ok((oa, ob))
    }
}

/// Replay the run up to step `bad` on fresh systems, then feed that step's
/// frames one at a time; print the first frame whose outcome differs.
fn pinpoint(a: &Path, b: &Path, seed: u64, bad: usize) -> Result<(), String> {
    eprintln!("conform: replaying steps 0..{bad} on fresh systems to find the frame ...");
    let pair = Pair::new(a, b)?;
    let mut mix = Mix::new(seed);
    for _ in 0..bad {
        let s = mix.step();
        pair.step(s.port, &s.frames)?;
    }
    let s = mix.step();
    for (i, f) in s.frames.iter().enumerate() {
        let (oa, ob) = pair.step(s.port, std::slice::from_ref(f))?;
        if !same(&oa, &ob) {
            let n = s.first + i as u32;
            println!("FIRST FRAME THAT DIFFERS: #{n} (step {bad}, frame {i} of {}), from port {} {}, {} bytes:", s.frames.len(), s.port, PORT_NAMES[s.port], f.data.len());
            print!("{}", hex(&f.data));
            println!("  A {}: {}\n{}", a.display(), fate(&oa, n + 1), describe(&oa));
            println!("  B {}: {}\n{}", b.display(), fate(&ob, n + 1), describe(&ob));
            return Ok(());
        }
    }
    println!("the step's frames one at a time give the same outcomes: the difference needs them in one batch (see the step above)");
    Ok(())
}

pub struct Report {
    pub frames: u64,
    pub steps: u64,
    pub a_secs: f64,
    pub b_secs: f64,
}

/// Run the mix through both; Ok(None) if they agree, Ok(Some(step)) at the first difference.
fn run_pair(a: &Path, b: &Path, seed: u64, frames: u64) -> Result<Result<Report, usize>, String> {
    let pair = Pair::new(a, b)?;
    let mut mix = Mix::new(seed);
    let (mut steps, mut fed) = (0usize, 0u64);
    let t0 = Instant::now();
    let mut last = Instant::now();
    while fed < frames {
        let s = mix.step();
        let (oa, ob) = pair.step(s.port, &s.frames)?;
        if !same(&oa, &ob) {
            println!("DIFFERENCE at step {steps}: {} frames (#{}..#{}) from port {} {}", s.frames.len(), s.first, s.first as usize + s.frames.len() - 1, s.port, PORT_NAMES[s.port]);
            // The first frame whose forwarding differs, if one does.
            for (i, f) in s.frames.iter().enumerate() {
                let tag = s.first + i as u32 + 1;
                if fate(&oa, tag) != fate(&ob, tag) {
                    println!("first frame forwarded differently: #{} ({} bytes):\n{}  A: {}\n  B: {}", tag - 1, f.data.len(), hex(&f.data), fate(&oa, tag), fate(&ob, tag));
                    break;
                }
            }
            println!("  A {}:\n{}", a.display(), describe(&oa));
            println!("  B {}:\n{}", b.display(), describe(&ob));
            return Ok(Err(steps));
        }
        fed += s.frames.len() as u64;
        steps += 1;
        if last.elapsed() > Duration::from_secs(10) {
            last = Instant::now();
            eprintln!("conform: {fed} frames in {steps} steps, {:.0} s ...", t0.elapsed().as_secs_f64());
        }
    }
    let cpu_a = pair.a.server.cpu().as_secs_f64();
    let cpu_b = pair.b.server.cpu().as_secs_f64();
    let Pair { a: ra, b: rb } = pair;
    let sa = ra.server.stop()?;
    let sb = rb.server.stop()?;
    if sa.stats != sb.stats {
        println!("DIFFERENCE in the servers' counters (control.stats) after {fed} frames:");
        let n = sa.stats.len().max(sb.stats.len());
        for i in 0..n {
            let x = sa.stats.get(i).map(|(k, v)| format!("{k}={v}")).unwrap_or_default();
            let y = sb.stats.get(i).map(|(k, v)| format!("{k}={v}")).unwrap_or_default();
            println!("  {}{i:>3}  A {x:<32} B {y}", if x == y { " " } else { "*" });
        }
        return Ok(Err(usize::MAX));
    }
    println!("counters (both): {}", sa.stats.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "));
    println!("A {} ({}): server CPU {:.2} s; B {} ({}): server CPU {:.2} s", a.display(), sa.version, cpu_a, b.display(), sb.version, cpu_b);
    Ok(Ok(Report { frames: fed, steps: steps as u64, a_secs: cpu_a, b_secs: cpu_b }))
}

fn swap_check(path: &Path) -> Result<(), String> {
    let component = engine::load(path).map_err(|e| e.to_string())?;
    let sw = Switch::new(NicInfo { mac: NIC_MAC, mtu: 1500, shared_ip: SHARED, prefix_len: 24 }, Arc::new(Portmap::new()), 16);
    crate::system::NetServer { switch: sw }.check_swap(&component, path)
}

pub fn main(args: &[String]) -> i32 {
    let mut files = Vec::new();
    let mut seed = 1u64;
    let mut frames = 1_000_000u64;
    let mut i = 0;
    while i < args.len() {
        match (args[i].as_str(), args.get(i + 1)) {
            ("--seed", Some(v)) => {
                seed = match v.parse() {
                    Ok(x) => x,
                    Err(_) => return usage(&format!("--seed {v}: not a number")),
                };
                i += 2;
            }
            ("--frames", Some(v)) => {
                frames = match v.parse() {
                    Ok(x) => x,
                    Err(_) => return usage(&format!("--frames {v}: not a number")),
                };
                i += 2;
            }
            (f, _) if !f.starts_with("--") => {
                files.push(PathBuf::from(f));
                i += 1;
            }
            (other, _) => return usage(&format!("unknown or incomplete argument `{other}`")),
        }
    }
    let [a, b] = files.as_slice() else {
        return usage("give two network server components");
    };
    for f in [a, b] {
        if let Err(e) = swap_check(f) {
            eprintln!("libretto conform: {e}");
            return 2;
        }
    }
    println!("conform: {} vs {}: {frames} frames, seed {seed}", a.display(), b.display());
    let t0 = Instant::now();
    match run_pair(a, b, seed, frames) {
        Ok(Ok(r)) => {
            println!(
                "conform: the same: {} frames in {} steps, forwarding decisions, replies and counters ({:.1} s; server CPU per frame: A {:.2} us, B {:.2} us)",
                r.frames,
                r.steps,
                t0.elapsed().as_secs_f64(),
                r.a_secs / r.frames as f64 * 1e6,
                r.b_secs / r.frames as f64 * 1e6
            );
            0
        }
        Ok(Err(step)) => {
            if step != usize::MAX {
                if let Err(e) = pinpoint(a, b, seed, step) {
                    eprintln!("libretto conform: replay: {e}");
                }
            }
            println!("conform: DIFFERENT (seed {seed})");
            1
        }
        Err(e) => {
            eprintln!("libretto conform: {e}");
            2
        }
    }
}

fn usage(why: &str) -> i32 {
    eprintln!("libretto conform: {why}\nusage: libretto conform A.wasm B.wasm [--frames N] [--seed S]");
    2
}

// ---- netbench ----------------------------------------------------------------

/// A server on a switch with one app port that holds TCP port 80 on the
/// shared IP, and the load generator's link: it sends into the NIC's ring
/// toward the server and receives from the app's ring.
struct BenchRig {
    server: ServerThread,
    nic_in: Arc<Ring>,
    app_out: Arc<Ring>,
    link: crate::link::LinkSlot,
}

impl BenchRig {
    fn new(server: &Path) -> Result<BenchRig, String> {
        let pre = prepare(server)?;
        let portmap = Arc::new(Portmap::new());
        portmap.bind(1, &PortPolicy::any(), Proto::Tcp, 80).map_err(|e| format!("{e:?}"))?;
        let sw = Switch::new(NicInfo { mac: NIC_MAC, mtu: 1500, shared_ip: SHARED, prefix_len: 24 }, portmap, 4096);
        let nic_in = Ring::new("bench-nic-in", 4096, sw.server_notify());
        let nic_out = Ring::new("bench-nic-out", 4096, Notify::new());
        sw.attach_nic(nic_in.clone(), nic_out);
        let (port, _slot) = sw.attach_app(1, "sink", NIC_MAC, None, Notify::new());
        let link = crate::link::LinkSlot::new(crate::link::LinkPort { info: crate::link::LinkInfo::virtual_link(PEER_MAC), rx: port.from_server.clone(), tx: nic_in.clone() }, Notify::new());
        let server = ServerThread::start(pre, sw, "network-server")?;
        Ok(BenchRig { server, nic_in, app_out: port.from_server.clone(), link })
    }

    /// Wait for the server to go idle; drop what is left in the app's ring.
    fn quiesce(&self) -> Result<(), String> {
        let t0 = Instant::now();
        while !(self.nic_in.is_empty() && self.server.sw.control.in_wait.load(Ordering::SeqCst)) {
            if t0.elapsed() > Duration::from_secs(30) || self.server.finished() {
                return Err("the server did not go idle".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut v = Vec::new();
        self.app_out.pop_batch(usize::MAX, &mut v);
        Ok(())
    }

    /// One run of the load generator; its counters, and the server's CPU time.
    fn trial(&self, loadgen: &InstancePre<Ctx>, args: &[(&str, String)]) -> Result<(Vec<(String, u64)>, Duration), String> {
        self.quiesce()?;
        let mut kv: Vec<(String, String)> = vec![
            ("dst-mac".into(), crate::ctl::mac_string(NIC_MAC)),
            ("src-mac".into(), crate::ctl::mac_string(PEER_MAC)),
            ("dst-ip".into(), "10.63.0.2".into()),
            ("src-ip".into(), "10.63.0.1".into()),
            ("dport".into(), "80".into()),
        ];
        kv.extend(args.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let cpu0 = self.server.cpu();
        let h = crate::apprun::spawn("loadgen", loadgen.clone(), self.link.clone(), kv, None)?;
        let o = h.join().map_err(|_| "the load generator panicked".to_string())?;
        let cpu = self.server.cpu().saturating_sub(cpu0);
        if !o.ok() {
            return Err(format!("the load generator {}", o.describe()));
        }
        Ok((o.stats, cpu))
    }
}

fn stat(stats: &[(String, u64)], name: &str) -> u64 {
    stats.iter().find(|(k, _)| k == name).map(|(_, v)| *v).unwrap_or(0)
}

/// One cell of the table.
struct Cell {
    server: String,
    size: usize,
    burst: u64,
    /// Server CPU per frame, one burst in flight.
    cost_us: f64,
    /// Frames per second, one burst in flight.
    closed_rate: f64,
    /// Mean time from send to back, one burst in flight.
    latency_us: f64,
    /// The highest offered rate with no frame lost.
    max_rate: f64,
    /// The generator could not offer more (the server kept up with all it sent).
    gen_bound: bool,
}

fn measure(rig: &BenchRig, loadgen: &InstancePre<Ctx>, server: &str, size: usize, burst: u64, quick: bool) -> Result<Cell, String> {
    let sizes = size.to_string();
    let secs = if quick { 0.05 } else { 0.4 };
    // One burst in flight: the server gets batches of exactly `burst` frames.
    let closed = |frames: u64| -> Result<(f64, f64, f64, u64), String> {
        let (st, cpu) = rig.trial(loadgen, &[("frames", frames.to_string()), ("burst", burst.to_string()), ("window", burst.to_string()), ("sizes", sizes.clone())])?;
        let got = stat(&st, "received");
        if got != frames {
            return Err(format!("{server}: closed loop got back {got} of {frames} frames"));
        }
        let rate = got as f64 / (stat(&st, "elapsed-ns").max(1) as f64 / 1e9);
        Ok((cpu.as_secs_f64() / got as f64 * 1e6, rate, stat(&st, "latency.mean-ns") as f64 / 1e3, got))
    };
    let (_, probe_rate, _, _) = closed((burst * 20).max(400))?;
    let n = ((probe_rate * secs) as u64).clamp(burst * 20, 4_000_000) / burst * burst;
    let (cost_us, closed_rate, latency_us, _) = closed(n.max(burst))?;
    // Open loop: bursts at a set rate; the highest rate with nothing lost.
    let offered = |rate: f64| -> Result<(bool, bool), String> {
        let frames = ((rate * secs) as u64).max(burst * 8).max(2000) / burst * burst;
        let (st, _) = rig.trial(loadgen, &[("frames", frames.to_string()), ("burst", burst.to_string()), ("rate", (rate as u64).to_string()), ("sizes", sizes.clone())])?;
        let lost = stat(&st, "sent") - stat(&st, "received");
        // The generator offered less than asked (it fell behind its
        // schedule): it, not the server, set the pace.
        let span = stat(&st, "send-span-ns").max(1) as f64 / 1e9;
        let behind = frames > burst && ((frames - burst) as f64 / span) < 0.9 * rate;
        Ok((lost == 0 && !behind, behind))
    };
    let (mut lo, mut hi) = (0.0f64, f64::INFINITY);
    let mut gen_bound = false;
    let mut r = closed_rate.max(1000.0);
    for _ in 0..12 {
        let (ok, behind) = offered(r)?;
        if ok {
            lo = r;
            r *= 2.0;
        } else {
            gen_bound = behind;
            hi = r;
            break;
        }
        if r > 50e6 {
            break;
        }
    }
    if lo == 0.0 {
        r = hi / 2.0;
        gen_bound = false;
        while r >= 500.0 {
            if offered(r)?.0 {
                lo = r;
                break;
            }
            hi = r;
            r /= 2.0;
        }
    }
    if hi.is_finite() && lo > 0.0 {
        for _ in 0..(if quick { 1 } else { 4 }) {
            let mid = (lo + hi) / 2.0;
            let (ok, behind) = offered(mid)?;
            if ok {
                lo = mid;
            } else {
                hi = mid;
                gen_bound = behind;
            }
        }
    }
    Ok(Cell { server: server.to_string(), size, burst, cost_us, closed_rate, latency_us, max_rate: lo, gen_bound })
}

pub fn bench_main(args: &[String]) -> i32 {
    let mut dir = PathBuf::from("build/components");
    let mut out_dir = PathBuf::from("bench/results");
    let mut quick = false;
    let mut only: Option<String> = None;
    let mut i = 0;
    while i < args.len() {
        match (args[i].as_str(), args.get(i + 1)) {
            ("--components", Some(d)) => {
                dir = PathBuf::from(d);
                i += 2;
            }
            ("--out", Some(d)) => {
                out_dir = PathBuf::from(d);
                i += 2;
            }
            ("--quick", _) => {
                quick = true;
                i += 1;
            }
            ("--server", Some(f)) => {
                only = Some(f.clone());
                i += 2;
            }
            (other, _) => {
                eprintln!("libretto netbench: unknown or incomplete argument `{other}`");
                return 2;
            }
        }
    }
    let servers: Vec<(&str, PathBuf)> = vec![
        ("typescript/quickjs", dir.join("network-server.quickjs.wasm")),
        ("typescript/starlingmonkey", dir.join("network-server.starlingmonkey.wasm")),
        ("rust", dir.join("network-server-rs.wasm")),
    ];
    let servers: Vec<(&str, PathBuf)> = servers.into_iter().filter(|(n, _)| only.as_deref().is_none_or(|o| n.contains(o))).collect();
    let loadgen = match prepare(&dir.join("loadgen-rs.wasm")) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("libretto netbench: {e}");
            return 2;
        }
    };
    let (sizes, bursts): (&[usize], &[u64]) = if quick { (&[64], &[1, 64]) } else { (&[64, 1500], &[1, 16, 64, 256]) };
    let mut cells = Vec::new();
    for &size in sizes {
        for (name, path) in &servers {
            let rig = match BenchRig::new(path) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("libretto netbench: {e}");
                    return 2;
                }
            };
            for &burst in bursts {
                eprintln!("netbench: {name}, {size}-byte frames, bursts of {burst} ...");
                match measure(&rig, &loadgen, name, size, burst, quick) {
                    Ok(c) => cells.push(c),
                    Err(e) => {
                        eprintln!("libretto netbench: {e}");
                        return 2;
                    }
                }
            }
            drop(rig);
        }
    }
    println!("network server under the Rust load generator (same host rings; NIC ring -> server -> app ring)");
    println!("cost = server thread CPU per frame with one burst in flight; max = highest offered rate with no frame lost");
    println!("{:<27} {:>5} {:>5} {:>12} {:>14} {:>12} {:>16}", "server", "bytes", "burst", "cost us/fr", "closed fr/s", "latency us", "max fr/s");
    for c in &cells {
        println!(
            "{:<27} {:>5} {:>5} {:>12.3} {:>14.0} {:>12.1} {:>16}",
            c.server,
            c.size,
            c.burst,
            c.cost_us,
            c.closed_rate,
            c.latency_us,
            format!("{}{:.0}", if c.gen_bound && c.max_rate > 0.0 { ">=" } else { "" }, c.max_rate)
        );
    }
    // The TypeScript server's cost against the Rust server's, batch 64.
    for &size in sizes {
        let rust = cells.iter().find(|c| c.server == "rust" && c.size == size && c.burst == 64);
        for ts in ["typescript/quickjs", "typescript/starlingmonkey"] {
            if let (Some(r), Some(t)) = (rust, cells.iter().find(|c| c.server == ts && c.size == size && c.burst == 64)) {
                println!("{ts} / rust, cost per frame at burst 64, {size} B: {:.1}x", t.cost_us / r.cost_us);
            }
        }
    }
    let json: Vec<serde_json::Value> = cells
        .iter()
        .map(|c| {
            serde_json::json!({ "server": c.server, "frame_bytes": c.size, "burst": c.burst,
                "cost_us_per_frame": (c.cost_us * 1000.0).round() / 1000.0, "closed_loop_frames_per_s": c.closed_rate.round(),
                "latency_us": (c.latency_us * 10.0).round() / 10.0, "max_rate_no_drop": c.max_rate.round(), "generator_bound": c.gen_bound })
        })
        .collect();
    if std::fs::create_dir_all(&out_dir).is_ok() {
        let path = out_dir.join(if quick { "netserver-quick.json" } else { "netserver.json" });
        if std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap() + "\n").is_ok() {
            println!("wrote {}", path.display());
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(seed: u64, steps: usize) -> Vec<(usize, u32, Vec<u8>)> {
        let mut m = Mix::new(seed);
        (0..steps)
            .flat_map(|_| {
                let s = m.step();
                s.frames.into_iter().map(move |f| (s.port, tag_of(&f), f.data))
            })
            .collect()
    }

    #[test]
    fn a_seed_gives_the_same_mix_and_another_seed_another() {
        assert_eq!(digest(3, 50), digest(3, 50));
        assert_ne!(digest(3, 50), digest(4, 50));
    }

    #[test]
    fn the_mix_comes_from_every_port_in_steps_of_1_to_256_and_numbers_its_frames() {
        let mut m = Mix::new(1);
        let mut ports = [0usize; PORTS];
        let mut next = 0u32;
        for _ in 0..2000 {
            let s = m.step();
            assert!((1..=256).contains(&s.frames.len()));
            assert_eq!(s.first, next);
            for (i, f) in s.frames.iter().enumerate() {
                assert_eq!(tag_of(f), s.first + i as u32 + 1);
                assert!(f.data.len() <= 1514);
            }
            next += s.frames.len() as u32;
            ports[s.port] += 1;
        }
        assert!(ports.iter().all(|&n| n > 50), "{ports:?}");
    }
}
