//! The network server's forwarding rules, as pure logic over a batch of
//! frames: no imports, no clock. A rule-for-rule port of
//! `components/network-server/src/forward.ts`; the conformance suite
//! (`libretto conform`) feeds both the same frames through the same host
//! rings and requires the same routes, the same built frames (byte for
//! byte) and the same counters in the same order. Where the TypeScript
//! relies on a JavaScript behaviour (a shift count taken modulo 32, a
//! typed array ignoring a write past its end, arithmetic on doubles that
//! never wraps), the Rust says so and does the same.
//!
//! A frame from the NIC goes to an app with a dedicated IP by destination
//! IP, or, for the shared IP, by protocol and destination port through the
//! portmap. The server answers ARP for the shared IP and ping on it, sends
//! a TCP reset or an ICMP port unreachable for closed ports on it, floods
//! broadcasts, and drops the rest with a reason. A frame from an app goes
//! out the NIC, or back in to another app when it is addressed to one
//! (hairpin), after checking that the app sends from its own address (and,
//! on the shared IP, from a port it holds).

pub const NIC_PORT: u32 = 0;
pub const FLOOD: u32 = 0xffff_ffff;
pub const CONSUMED: u32 = 0xffff_fffe;
pub const DROP_BASE: u32 = 0xffff_0000;

const ETH_ARP: u16 = 0x0806;
const ETH_IPV4: u16 = 0x0800;
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// `drop-reason`, in WIT declaration order (the route's low 16 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    Malformed = 0,
    #[allow(dead_code)]
    BadChecksum = 1,
    NotOurs = 2,
    NoListener = 3,
    #[allow(dead_code)]
    RingFull = 4,
    Filtered = 5,
    #[allow(dead_code)]
    NoBuffer = 6,
    Fragment = 7,
    Unsupported = 8,
}

/// Every counter the server keeps. `control.stats` lists them in the order
/// each was first counted, as the TypeScript server's `Map` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    RxFrames,
    ToNic,
    ToApp,
    Flood,
    ArpReplied,
    TcpRstSent,
    IcmpUnreachableSent,
    IcmpEchoReplied,
    /// `drop.<reason>`: 8 + the reason's number.
    Drop(Drop),
}

const N_COUNTERS: usize = 8 + 9;

impl Counter {
    fn index(self) -> usize {
        match self {
            Counter::RxFrames => 0,
            Counter::ToNic => 1,
            Counter::ToApp => 2,
            Counter::Flood => 3,
            Counter::ArpReplied => 4,
            Counter::TcpRstSent => 5,
            Counter::IcmpUnreachableSent => 6,
            Counter::IcmpEchoReplied => 7,
            Counter::Drop(r) => 8 + r as usize,
        }
    }
}

const COUNTER_NAMES: [&str; N_COUNTERS] = [
    "rx.frames",
    "to.nic",
    "to.app",
    "flood",
    "arp.replied",
    "tcp.rst-sent",
    "icmp.unreachable-sent",
    "icmp.echo-replied",
    "drop.malformed",
    "drop.bad-checksum",
    "drop.not-ours",
    "drop.no-listener",
    "drop.ring-full",
    "drop.filtered",
    "drop.no-buffer",
    "drop.fragment",
    "drop.unsupported",
];

/// Counters in first-counted order.
#[derive(Default)]
pub struct Counters {
    values: [u64; N_COUNTERS],
    order: Vec<u8>,
}

impl Counters {
    #[inline]
    pub fn count(&mut self, c: Counter) {
        let i = c.index();
        if self.values[i] == 0 {
            self.order.push(i as u8);
        }
        self.values[i] += 1;
    }

    /// (name, value) in the order each was first counted.
    pub fn list(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.order.iter().map(|&i| (COUNTER_NAMES[i as usize], self.values[i as usize]))
    }
}

/// One port as the server knows it.
#[derive(Clone, Debug)]
pub struct PortView {
    pub port: u32,
    pub mac: u64,
    /// A dedicated IP, or None for an app on the shared IP (and the NIC).
    pub ip: Option<u32>,
}

#[derive(Clone, Copy, Debug)]
pub struct ServerConfig {
    pub nic_mac: u64,
    pub shared_ip: u32,
    pub prefix_len: u8,
}

/// One received frame, as the rings hand it over.
#[derive(Clone, Copy)]
pub struct InFrame<'a> {
    pub port: u32,
    pub id: u32,
    pub len: u32,
    pub head: &'a [u8],
}

/// A portmap key: (is TCP, port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LookupKey {
    pub tcp: bool,
    pub port: u16,
}

/// What the decisions of one batch came to, in the formats of
/// `libretto:net/rings` (`forward` routes and `send` frames).
#[derive(Default)]
pub struct Decisions {
    pub routes: Vec<u8>,
    pub route_count: u32,
    pub built: Vec<u8>,
    pub built_count: u32,
}

impl Decisions {
    pub fn reset(&mut self) {
        self.routes.clear();
        self.route_count = 0;
        self.built.clear();
        self.built_count = 0;
    }

    #[inline]
    fn route(&mut self, id: u32, dest: u32) {
        self.routes.extend_from_slice(&id.to_le_bytes());
        self.routes.extend_from_slice(&dest.to_le_bytes());
        self.route_count += 1;
    }

    /// Append a built frame of `len` zero bytes for `port` (no offloads: the
    /// server fills in checksums) and return it to be written.
    fn build(&mut self, port: u32, len: usize) -> &mut [u8] {
        self.built.extend_from_slice(&port.to_le_bytes());
        // As the TypeScript: `len & 0xff`, then `len >>> 8` into a byte.
        self.built.push(len as u8);
        self.built.push((len >> 8) as u8);
        self.built.extend_from_slice(&[0u8; 10]);
        let at = self.built.len();
        self.built.resize(at + len, 0);
        self.built_count += 1;
        &mut self.built[at..]
    }
}

#[inline]
fn u16_at(b: &[u8], at: usize) -> u16 {
    ((b[at] as u16) << 8) | b[at + 1] as u16
}

#[inline]
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
fn mac_at(b: &[u8], at: usize) -> u64 {
    ((b[at] as u64) << 40) | ((b[at + 1] as u64) << 32) | u32_at(b, at + 2) as u64
}

/// Writes into a built frame ignore bytes past its end, as a JavaScript
/// typed array does (a ping reply shorter than an ICMP header).
#[inline]
fn put(b: &mut [u8], at: usize, v: u8) {
    if let Some(x) = b.get_mut(at) {
        *x = v;
    }
}

fn put_u16(b: &mut [u8], at: usize, v: u32) {
    put(b, at, (v >> 8) as u8);
    put(b, at + 1, v as u8);
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    for (i, x) in v.to_be_bytes().into_iter().enumerate() {
        put(b, at + i, x);
    }
}

fn put_mac(b: &mut [u8], at: usize, m: u64) {
    for i in 0..6 {
        put(b, at + i, (m >> (40 - 8 * i)) as u8);
    }
}

/// The Internet checksum of b[start..end] on top of `sum` (never wraps:
/// the TypeScript sums in doubles).
fn csum(b: &[u8], start: usize, end: usize, mut sum: u64) -> u32 {
    let mut i = start;
    while i + 1 < end {
        sum += ((b[i] as u64) << 8) | b[i + 1] as u64;
        i += 2;
    }
    if i < end {
        sum += (b[i] as u64) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    (!sum & 0xffff) as u32
}

/// A pending portmap lookup and what to do with its answer.
#[derive(Clone, Copy)]
struct Pending {
    frame: usize,
    key: LookupKey,
    /// In: deliver to the holder. Out: check the app holds its source port.
    inbound: bool,
    l4_at: usize,
    proto: u8,
}

pub struct Forwarder {
    pub cfg: ServerConfig,
    ports: Vec<PortView>,
    /// Apps with an IP of their own (index into `ports`).
    dedicated: Vec<usize>,
    /// Apps on the shared IP, in port order.
    shared_ports: Vec<u32>,
    pub counters: Counters,
    pending: Vec<Pending>,
    keys: Vec<LookupKey>,
    ip_ident: u32,
}

impl Forwarder {
    pub fn new(cfg: ServerConfig) -> Forwarder {
        Forwarder { cfg, ports: Vec::new(), dedicated: Vec::new(), shared_ports: Vec::new(), counters: Counters::default(), pending: Vec::new(), keys: Vec::new(), ip_ident: 1 }
    }

    pub fn set_ports(&mut self, ports: Vec<PortView>) {
        self.dedicated.clear();
        self.shared_ports.clear();
        for (i, p) in ports.iter().enumerate() {
            if p.port == NIC_PORT {
                continue;
            }
            if p.ip.is_some() {
                self.dedicated.push(i);
            } else {
                self.shared_ports.push(p.port);
            }
        }
        self.ports = ports;
    }

    // As the TypeScript's Maps: a later entry with the same key wins.
    fn by_port(&self, port: u32) -> Option<&PortView> {
        self.ports.iter().rev().find(|p| p.port == port)
    }

    fn by_ip(&self, ip: u32) -> Option<&PortView> {
        self.dedicated.iter().rev().map(|&i| &self.ports[i]).find(|p| p.ip == Some(ip))
    }

    fn has_mac(&self, mac: u64) -> bool {
        self.dedicated.iter().any(|&i| self.ports[i].mac == mac)
    }

    fn drop(&mut self, d: &mut Decisions, f: &InFrame, reason: Drop) {
        self.counters.count(Counter::Drop(reason));
        d.route(f.id, DROP_BASE + reason as u32);
    }

    fn to(&mut self, d: &mut Decisions, f: &InFrame, port: u32) {
        self.counters.count(if port == NIC_PORT { Counter::ToNic } else { Counter::ToApp });
        d.route(f.id, port);
    }

    fn is_broadcast_ip(&self, ip: u32) -> bool {
        if ip == 0xffff_ffff {
            return true;
        }
        let p = self.cfg.prefix_len as u32;
        let host = if p >= 32 { 0 } else { 0xffff_ffffu32 >> p };
        // JavaScript takes a shift count modulo 32: `x >>> 32` is `x`.
        host != 0 && ip & host == host && (ip ^ self.cfg.shared_ip).wrapping_shr(32 - p) == 0
    }

    /// Decide every frame of a batch. `lookup` answers portmap keys with
    /// the port holding each (one call per batch, only if a frame needs it).
    pub fn decide(&mut self, frames: &[InFrame], lookup: impl FnOnce(&[LookupKey]) -> Vec<Option<u32>>, d: &mut Decisions) {
        self.pending.clear();
        for (i, f) in frames.iter().enumerate() {
            self.decide_one(i, f, d);
        }
        if self.pending.is_empty() {
            return;
        }
        self.keys.clear();
        self.keys.extend(self.pending.iter().map(|p| p.key));
        let answers = lookup(&self.keys);
        let pending = std::mem::take(&mut self.pending);
        for (i, p) in pending.iter().enumerate() {
            self.finish(p, &frames[p.frame], answers.get(i).copied().flatten(), d);
        }
        self.pending = pending;
        self.pending.clear();
    }

    fn decide_one(&mut self, i: usize, f: &InFrame, d: &mut Decisions) {
        let h = f.head;
        self.counters.count(Counter::RxFrames);
        if h.len() < 14 || f.len < 14 {
            return self.drop(d, f, Drop::Malformed);
        }
        let ethertype = u16_at(h, 12);
        let from_nic = f.port == NIC_PORT;
        let src = if from_nic { None } else { self.by_port(f.port).cloned() };
        if !from_nic && src.is_none() {
            return self.drop(d, f, Drop::Filtered);
        }
        if from_nic {
            let dst = mac_at(h, 0);
            let group = h[0] & 1 == 1;
            if !group && dst != self.cfg.nic_mac && !self.has_mac(dst) {
                return self.drop(d, f, Drop::NotOurs);
            }
        }
        if ethertype == ETH_ARP {
            return self.arp(f, src.as_ref(), d);
        }
        if ethertype == ETH_IPV4 {
            return self.ipv4(i, f, src.as_ref(), d);
        }
        if from_nic {
            return self.drop(d, f, Drop::Unsupported);
        }
        self.to(d, f, NIC_PORT) // other protocols from an app go out as they are
    }

    // ---- ARP -------------------------------------------------------------

    fn arp(&mut self, f: &InFrame, src: Option<&PortView>, d: &mut Decisions) {
        let h = f.head;
        if h.len() < 42 {
            return self.drop(d, f, Drop::Malformed);
        }
        if u16_at(h, 14) != 1 || u16_at(h, 16) != ETH_IPV4 || h[18] != 6 || h[19] != 4 {
            return self.drop(d, f, Drop::Unsupported);
        }
        let op = u16_at(h, 20);
        let sender_mac = mac_at(h, 22);
        let sender_ip = u32_at(h, 28);
        let target_ip = u32_at(h, 38);
        if let Some(src) = src {
            // From an app: it must speak for its own address.
            let own = src.ip.unwrap_or(self.cfg.shared_ip);
            if sender_ip != own || sender_mac != src.mac {
                return self.drop(d, f, Drop::Filtered);
            }
            if op == 1 && target_ip == self.cfg.shared_ip && src.ip.is_some() {
                return self.arp_reply(src.port, f, d);
            }
            if let Some(local) = self.by_ip(target_ip) {
                if local.port != src.port {
                    let port = local.port;
                    return self.to(d, f, port);
                }
            }
            return self.to(d, f, NIC_PORT);
        }
        if target_ip == self.cfg.shared_ip {
            if op == 1 {
                return self.arp_reply(NIC_PORT, f, d);
            }
            // A reply for the shared IP: every app on it may be resolving.
            return self.to_shared(f, d);
        }
        if let Some(app) = self.by_ip(target_ip) {
            let port = app.port;
            return self.to(d, f, port);
        }
        self.drop(d, f, Drop::NotOurs)
    }

    /// Answer an ARP request for the shared IP with the NIC's MAC.
    fn arp_reply(&mut self, port: u32, f: &InFrame, d: &mut Decisions) {
        let h = f.head;
        let (mac, ip) = (self.cfg.nic_mac, self.cfg.shared_ip);
        let b = d.build(port, 42);
        b[0..6].copy_from_slice(&h[6..12]); // to the requester
        put_mac(b, 6, mac);
        put_u16(b, 12, ETH_ARP as u32);
        b[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
        put_mac(b, 22, mac);
        put_u32(b, 28, ip);
        b[32..42].copy_from_slice(&h[22..32]); // target: the requester's MAC and IP
        d.route(f.id, CONSUMED);
        self.counters.count(Counter::ArpReplied);
    }

    /// Copy a frame to every app on the shared IP.
    fn to_shared(&mut self, f: &InFrame, d: &mut Decisions) {
        if self.shared_ports.is_empty() {
            return self.drop(d, f, Drop::NoListener);
        }
        let first = self.shared_ports[0];
        if self.shared_ports.len() == 1 || (f.head.len() as u64) < f.len as u64 {
            // One app, or a frame we cannot copy whole: it goes to the first.
            return self.to(d, f, first);
        }
        let n = (f.len as usize).min(f.head.len());
        for k in 1..self.shared_ports.len() {
            let port = self.shared_ports[k];
            d.build(port, n).copy_from_slice(&f.head[..n]);
        }
        self.to(d, f, first)
    }

    // ---- IPv4 ------------------------------------------------------------

    fn ipv4(&mut self, i: usize, f: &InFrame, src: Option<&PortView>, d: &mut Decisions) {
        let h = f.head;
        if h.len() < 34 {
            return self.drop(d, f, Drop::Malformed);
        }
        let vihl = h[14];
        let ihl = (vihl & 0xf) as usize * 4;
        if vihl >> 4 != 4 || ihl < 20 || h.len() < 14 + ihl {
            return self.drop(d, f, Drop::Malformed);
        }
        let total = u16_at(h, 16) as usize;
        if total < ihl || (14 + total) as u64 > f.len as u64 {
            return self.drop(d, f, Drop::Malformed);
        }
        let proto = h[23];
        let ip_src = u32_at(h, 26);
        let ip_dst = u32_at(h, 30);
        let frag = u16_at(h, 20);
        let fragmented = frag & 0x2000 != 0 || frag & 0x1fff != 0;
        let l4_at = 14 + ihl;

        if let Some(src) = src {
            let own = src.ip.unwrap_or(self.cfg.shared_ip);
            if ip_src != own {
                return self.drop(d, f, Drop::Filtered);
            }
            // Hairpin: another local app, or the shared IP from a dedicated app.
            if let Some(local) = self.by_ip(ip_dst) {
                if local.port != src.port {
                    let port = local.port;
                    return self.to(d, f, port);
                }
            }
            if ip_dst == self.cfg.shared_ip && src.ip.is_some() {
                return self.to_shared_ip(i, f, proto, l4_at, fragmented, d);
            }
            if self.is_broadcast_ip(ip_dst) {
                self.counters.count(Counter::Flood);
                return d.route(f.id, FLOOD);
            }
            if src.ip.is_none() && (proto == PROTO_TCP || proto == PROTO_UDP) && !fragmented {
                if h.len() < l4_at + 4 {
                    return self.drop(d, f, Drop::Malformed);
                }
                // An app on the shared IP may send only from ports it holds.
                self.pending.push(Pending { frame: i, key: LookupKey { tcp: proto == PROTO_TCP, port: u16_at(h, l4_at) }, inbound: false, l4_at, proto });
                return;
            }
            return self.to(d, f, NIC_PORT);
        }

        // From the NIC.
        if let Some(app) = self.by_ip(ip_dst) {
            let port = app.port;
            return self.to(d, f, port);
        }
        if ip_dst == self.cfg.shared_ip {
            return self.to_shared_ip(i, f, proto, l4_at, fragmented, d);
        }
        if self.is_broadcast_ip(ip_dst) {
            self.counters.count(Counter::Flood);
            return d.route(f.id, FLOOD);
        }
        self.drop(d, f, Drop::NotOurs)
    }

    /// A datagram for the shared IP: by protocol and port.
    fn to_shared_ip(&mut self, i: usize, f: &InFrame, proto: u8, l4_at: usize, fragmented: bool, d: &mut Decisions) {
        let h = f.head;
        if fragmented {
            return self.drop(d, f, Drop::Fragment);
        }
        if proto == PROTO_TCP || proto == PROTO_UDP {
            if h.len() < l4_at + 4 {
                return self.drop(d, f, Drop::Malformed);
            }
            self.pending.push(Pending { frame: i, key: LookupKey { tcp: proto == PROTO_TCP, port: u16_at(h, l4_at + 2) }, inbound: true, l4_at, proto });
            return;
        }
        if proto == PROTO_ICMP {
            if h.len() < l4_at + 8 {
                return self.drop(d, f, Drop::Malformed);
            }
            let ty = h[l4_at];
            if ty == 8 {
                return self.ping_reply(f, l4_at, d);
            }
            if (ty == 3 || ty == 11) && h.len() >= l4_at + 8 + 20 + 4 {
                // An error about a datagram an app sent: to the app holding its source port.
                let inner = l4_at + 8;
                let inner_proto = h[inner + 9];
                let inner_l4 = inner + (h[inner] & 0xf) as usize * 4;
                if (inner_proto == PROTO_TCP || inner_proto == PROTO_UDP) && h.len() >= inner_l4 + 2 {
                    self.pending.push(Pending { frame: i, key: LookupKey { tcp: inner_proto == PROTO_TCP, port: u16_at(h, inner_l4) }, inbound: true, l4_at, proto: PROTO_ICMP });
                    return;
                }
            }
            return self.drop(d, f, Drop::NoListener);
        }
        self.drop(d, f, Drop::Unsupported)
    }

    fn finish(&mut self, p: &Pending, f: &InFrame, holder: Option<u32>, d: &mut Decisions) {
        if !p.inbound {
            if holder == Some(f.port) {
                return self.to(d, f, NIC_PORT);
            }
            return self.drop(d, f, Drop::Filtered);
        }
        if let Some(h) = holder {
            if self.by_port(h).is_some() {
                return self.to(d, f, h);
            }
        }
        // A closed port on the shared IP: answer as a kernel would.
        if p.proto == PROTO_TCP {
            self.tcp_reset(f, p.l4_at, d);
        } else if p.proto == PROTO_UDP {
            self.port_unreachable(f, d);
        }
        self.drop(d, f, Drop::NoListener)
    }

    // ---- Replies built by the server ------------------------------------

    fn ip_header(ident: &mut u32, b: &mut [u8], src: u32, dst: u32, proto: u8, payload_len: usize, df: bool) {
        b[14] = 0x45;
        b[15] = 0;
        put_u16(b, 16, (20 + payload_len) as u32);
        *ident = (*ident + 1) & 0xffff;
        put_u16(b, 18, *ident);
        put_u16(b, 20, if df { 0x4000 } else { 0 });
        b[22] = 64;
        b[23] = proto;
        put_u16(b, 24, 0);
        put_u32(b, 26, src);
        put_u32(b, 30, dst);
        let c = csum(b, 14, 34, 0);
        put_u16(b, 24, c);
    }

    fn eth_reply(nic_mac: u64, b: &mut [u8], h: &[u8], ty: u16) {
        b[0..6].copy_from_slice(&h[6..12]);
        put_mac(b, 6, nic_mac);
        put_u16(b, 12, ty as u32);
    }

    /// RFC 9293 3.10.7.1: <SEQ=SEG.ACK><CTL=RST>, or <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>.
    fn tcp_reset(&mut self, f: &InFrame, l4_at: usize, d: &mut Decisions) {
        let h = f.head;
        if h.len() < l4_at + 20 {
            return;
        }
        let flags = h[l4_at + 13];
        if flags & 0x04 != 0 {
            return; // never answer a reset
        }
        let ip_total = u16_at(h, 16) as i64;
        let ihl = (h[14] & 0xf) as i64 * 4;
        let thl = (h[l4_at + 12] >> 4) as i64 * 4;
        let seg_len = ip_total - ihl - thl + (flags & 0x02 != 0) as i64 + (flags & 0x01 != 0) as i64;
        let (nic_mac, shared) = (self.cfg.nic_mac, self.cfg.shared_ip);
        let b = d.build(f.port, 54); // back where it came from: the NIC, or an app on a hairpin
        Self::eth_reply(nic_mac, b, h, ETH_IPV4);
        Self::ip_header(&mut self.ip_ident, b, shared, u32_at(h, 26), PROTO_TCP, 20, true);
        let t = 34;
        b[t..t + 2].copy_from_slice(&h[l4_at + 2..l4_at + 4]); // source port: their destination
        b[t + 2..t + 4].copy_from_slice(&h[l4_at..l4_at + 2]);
        if flags & 0x10 != 0 {
            b[t + 4..t + 8].copy_from_slice(&h[l4_at + 8..l4_at + 12]); // seq = their ack
            b[t + 13] = 0x04;
        } else {
            // `(SEG.SEQ + SEG.LEN) >>> 0`: modulo 2^32, SEG.LEN may be negative.
            put_u32(b, t + 8, (u32_at(h, l4_at + 4) as i64 + seg_len) as u32);
            b[t + 13] = 0x14;
        }
        b[t + 12] = 5 << 4;
        let pseudo = (shared >> 16) as u64 + (shared & 0xffff) as u64 + u16_at(h, 26) as u64 + u16_at(h, 28) as u64 + PROTO_TCP as u64 + 20;
        let c = csum(b, t, t + 20, pseudo);
        put_u16(b, t + 16, c);
        self.counters.count(Counter::TcpRstSent);
    }

    /// ICMP destination unreachable, port unreachable, quoting the IP header and 8 bytes.
    fn port_unreachable(&mut self, f: &InFrame, d: &mut Decisions) {
        let h = f.head;
        let ihl = (h[14] & 0xf) as usize * 4;
        let quote = (ihl + 8).min(h.len() - 14);
        let (nic_mac, shared) = (self.cfg.nic_mac, self.cfg.shared_ip);
        let len = 14 + 20 + 8 + quote;
        let b = d.build(f.port, len);
        Self::eth_reply(nic_mac, b, h, ETH_IPV4);
        Self::ip_header(&mut self.ip_ident, b, shared, u32_at(h, 26), PROTO_ICMP, 8 + quote, false);
        b[34] = 3;
        b[35] = 3;
        b[42..42 + quote].copy_from_slice(&h[14..14 + quote]);
        let c = csum(b, 34, len, 0);
        put_u16(b, 36, c);
        self.counters.count(Counter::IcmpUnreachableSent);
    }

    /// Ping on the shared IP: the reply is built whole (the request fits the head).
    fn ping_reply(&mut self, f: &InFrame, l4_at: usize, d: &mut Decisions) {
        let h = f.head;
        #[cfg(feature = "mutant")]
        {
            // The deliberately changed rule: pings are not answered.
            let _ = (h, l4_at);
            return self.drop(d, f, Drop::Unsupported);
        }
        #[cfg(not(feature = "mutant"))]
        {
            let total = u16_at(h, 16) as usize;
            let ihl = (h[14] & 0xf) as usize * 4;
            let icmp_len = total - ihl; // total >= ihl was checked
            // Shorter than an echo header (Ethernet padding can hide that): malformed.
            if icmp_len < 8 {
                return self.drop(d, f, Drop::Malformed);
            }
            if h.len() < l4_at + icmp_len || (f.len as usize) < l4_at + icmp_len {
                // Larger than the head: cannot echo what we do not hold.
                return self.drop(d, f, Drop::Unsupported);
            }
            let (nic_mac, shared) = (self.cfg.nic_mac, self.cfg.shared_ip);
            let b = d.build(f.port, 34 + icmp_len);
            Self::eth_reply(nic_mac, b, h, ETH_IPV4);
            Self::ip_header(&mut self.ip_ident, b, shared, u32_at(h, 26), PROTO_ICMP, icmp_len, false);
            b[34..34 + icmp_len].copy_from_slice(&h[l4_at..l4_at + icmp_len]);
            put(b, 34, 0);
            put_u16(b, 36, 0);
            let c = csum(b, 34, 34 + icmp_len, 0);
            put_u16(b, 36, c);
            d.route(f.id, CONSUMED);
            self.counters.count(Counter::IcmpEchoReplied);
        }
    }
}
