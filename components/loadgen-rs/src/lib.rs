//! A load generator for the network server, in Rust (wit-bindgen): it
//! sends TCP/IPv4 frames on its link at a set rate, in bursts, with a mix
//! of sizes, and counts the frames that come back, so `libretto netbench`
//! can measure a server with no Linux client and no TAP device in the way.
//! The host binds its link's transmit side to the NIC's ring toward the
//! server and its receive side to an app's ring from the server, so what
//! comes back is what the server forwarded.
//!
//! Arguments (`key=value`):
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `frames` | frames to send | 100000 |
//! | `rate` | frames per second, 0 for as fast as `window` allows | 0 |
//! | `burst` | frames per `send` (one crossing, one ring push) | 64 |
//! | `window` | most frames sent and not yet back, 0 for no limit | 0 |
//! | `sizes` | frame lengths in bytes, cycled, with weights: `64:3,1500:1` | 64 |
//! | `dst-mac`, `src-mac` | Ethernet addresses | 02:00:00:00:00:01, 02:00:00:00:00:fe |
//! | `dst-ip`, `src-ip` | IPv4 addresses | 10.0.0.2, 10.0.0.1 |
//! | `dport`, `sport` | TCP ports | 80, 40000 |
//! | `drain-ms` | how long to wait for the last frames to come back | 200 |
//!
//! Each frame carries its send time (ns) in its first payload bytes when
//! it is long enough (62 bytes or more), for the latency figures.
//! `control.stats` reports: `sent`, `tx.dropped-full`, `tx.invalid`,
//! `received`, `received.bytes`, `lost`, `elapsed-ns` (first send to last
//! frame back), `late.max-ns` (how far behind the schedule a burst went
//! out), `latency.mean-ns`, `latency.max-ns`, `sends`, `send-span-ns`
//! (first send to last send).

wit_bindgen::generate!({
    path: "../../wit",
    world: "libretto:system/stack-app",
    generate_all,
});

use exports::libretto::net::control::{Counter, Guest as Control, Identity};
use exports::libretto::net::server::{Exit, Guest as Server};
use libretto::io::host;
use libretto::net::link;
use libretto::net::types::WakeReason;
use std::cell::RefCell;

const RX_DESC: usize = 20;
const TX_DESC: usize = 14;
/// Where a frame's send time goes: the first byte after the TCP header.
const STAMP_AT: usize = 54;

struct Config {
    frames: u64,
    rate: u64,
    burst: u64,
    window: u64,
    sizes: Vec<usize>,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    dst_ip: [u8; 4],
    src_ip: [u8; 4],
    dport: u16,
    sport: u16,
    drain_ns: u64,
}

#[derive(Default, Clone)]
struct Stats {
    sent: u64,
    dropped_full: u64,
    invalid: u64,
    received: u64,
    received_bytes: u64,
    elapsed_ns: u64,
    late_max_ns: u64,
    latency_sum_ns: u64,
    latency_n: u64,
    latency_max_ns: u64,
    sends: u64,
    send_span_ns: u64,
}

thread_local! {
    static STATS: RefCell<Stats> = RefCell::new(Stats::default());
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s.split(':').map(|p| u8::from_str_radix(p, 16)).collect::<Result<_, _>>().ok()?;
    v.try_into().ok()
}

fn parse_ip(s: &str) -> Option<[u8; 4]> {
    let v: Vec<u8> = s.split('.').map(|p| p.parse()).collect::<Result<_, _>>().ok()?;
    v.try_into().ok()
}

/// `64:3,1500:1` -> 64, 64, 64, 1500.
fn parse_sizes(s: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for item in s.split(',') {
        let (size, weight) = match item.split_once(':') {
            Some((a, b)) => (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?),
            None => (item.parse::<usize>().ok()?, 1),
        };
        if !(60..=9014).contains(&size) || weight == 0 || weight > 1000 {
            return None;
        }
        out.extend(std::iter::repeat_n(size, weight));
    }
    (!out.is_empty()).then_some(out)
}

fn config() -> Result<Config, String> {
    let mut c = Config {
        frames: 100_000,
        rate: 0,
        burst: 64,
        window: 0,
        sizes: vec![64],
        dst_mac: [2, 0, 0, 0, 0, 1],
        src_mac: [2, 0, 0, 0, 0, 0xfe],
        dst_ip: [10, 0, 0, 2],
        src_ip: [10, 0, 0, 1],
        dport: 80,
        sport: 40000,
        drain_ns: 200_000_000,
    };
    for (k, v) in host::args() {
        let bad = || format!("{k}={v}: not a valid value");
        let num = || v.parse::<u64>().map_err(|_| bad());
        match k.as_str() {
            "frames" => c.frames = num()?,
            "rate" => c.rate = num()?,
            "burst" => c.burst = num()?.clamp(1, 256),
            "window" => c.window = num()?,
            "sizes" => c.sizes = parse_sizes(&v).ok_or_else(bad)?,
            "dst-mac" => c.dst_mac = parse_mac(&v).ok_or_else(bad)?,
            "src-mac" => c.src_mac = parse_mac(&v).ok_or_else(bad)?,
            "dst-ip" => c.dst_ip = parse_ip(&v).ok_or_else(bad)?,
            "src-ip" => c.src_ip = parse_ip(&v).ok_or_else(bad)?,
            "dport" => c.dport = num()? as u16,
            "sport" => c.sport = num()? as u16,
            "drain-ms" => c.drain_ns = num()? * 1_000_000,
            "ip" | "gateway" => {} // given to every app by the host
            _ => return Err(format!("unknown argument `{k}`")),
        }
    }
    if c.window > 0 && c.window < c.burst {
        c.window = c.burst;
    }
    Ok(c)
}

/// A TCP/IPv4 frame of `len` bytes (an ACK with a payload of zeros).
fn template(c: &Config, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&c.dst_mac);
    f[6..12].copy_from_slice(&c.src_mac);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
    f[20] = 0x40;
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&c.src_ip);
    f[30..34].copy_from_slice(&c.dst_ip);
    let mut sum = 0u32;
    for i in (14..34).step_by(2) {
        sum += u16::from_be_bytes([f[i], f[i + 1]]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    f[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f[34..36].copy_from_slice(&c.sport.to_be_bytes());
    f[36..38].copy_from_slice(&c.dport.to_be_bytes());
    f[46] = 5 << 4;
    f[47] = 0x10;
    f[48..50].copy_from_slice(&[0xff, 0xff]);
    f
}

fn run_load(c: &Config) -> Result<Exit, String> {
    let templates: Vec<Vec<u8>> = c.sizes.iter().map(|&s| template(c, s)).collect();
    let mut blob: Vec<u8> = Vec::with_capacity(c.burst as usize * (TX_DESC + 1514));
    let mut s = Stats::default();
    let mut next_size = 0usize;
    let t0 = link::now();
    let mut first_send = 0u64;
    let mut last_back = 0u64;
    let mut last_send = t0;
    let mut ids: Vec<u32> = Vec::with_capacity(256);
    let per_frame_ns = if c.rate > 0 { 1e9 / c.rate as f64 } else { 0.0 };
    loop {
        let now = link::now();
        let mut acted = false;
        // Send every burst that is due and fits the window.
        while s.sent < c.frames {
            let b = c.burst.min(c.frames - s.sent);
            let in_flight = s.sent - s.received - s.dropped_full - s.invalid;
            if c.window > 0 && in_flight + b > c.window {
                break;
            }
            if c.rate > 0 {
                let due = t0 + (s.sent as f64 * per_frame_ns) as u64;
                if due > now {
                    break;
                }
                s.late_max_ns = s.late_max_ns.max(now - due);
            }
            blob.clear();
            let stamp = link::now();
            for _ in 0..b {
                let t = &templates[next_size];
                next_size = (next_size + 1) % templates.len();
                blob.extend_from_slice(&(t.len() as u16).to_le_bytes());
                blob.extend_from_slice(&[0u8; 2 + 10]);
                let at = blob.len();
                blob.extend_from_slice(t);
                if t.len() >= STAMP_AT + 8 {
                    blob[at + STAMP_AT..at + STAMP_AT + 8].copy_from_slice(&stamp.to_le_bytes());
                }
            }
            let r = link::send(&blob, &[]);
            if first_send == 0 {
                first_send = stamp;
            }
            last_send = stamp;
            s.sends += 1;
            s.sent += b;
            s.dropped_full += r.dropped_full as u64;
            s.invalid += r.dropped_invalid as u64;
            acted = true;
            if c.rate == 0 && c.window == 0 {
                break; // receive between bursts
            }
        }
        // Take back everything that waits.
        loop {
            let batch = link::recv(256);
            if batch.is_empty() {
                break;
            }
            let now = link::now();
            ids.clear();
            let mut at = 0;
            while at + RX_DESC <= batch.len() {
                let id = u32::from_le_bytes(batch[at..at + 4].try_into().unwrap());
                let len = u32::from_le_bytes(batch[at + 4..at + 8].try_into().unwrap());
                let h = u16::from_le_bytes([batch[at + 18], batch[at + 19]]) as usize;
                let head = &batch[at + RX_DESC..(at + RX_DESC + h).min(batch.len())];
                if head.len() >= STAMP_AT + 8 {
                    let sent_at = u64::from_le_bytes(head[STAMP_AT..STAMP_AT + 8].try_into().unwrap());
                    if sent_at >= t0 && sent_at <= now {
                        let l = now - sent_at;
                        s.latency_sum_ns += l;
                        s.latency_n += 1;
                        s.latency_max_ns = s.latency_max_ns.max(l);
                    }
                }
                ids.push(id);
                s.received += 1;
                s.received_bytes += len as u64;
                at += RX_DESC + h;
            }
            link::release(&ids);
            last_back = now;
            acted = true;
        }
        let now = link::now();
        let accounted = s.received + s.dropped_full + s.invalid;
        if s.sent >= c.frames && (accounted >= s.sent || now > last_send + c.drain_ns) {
            break;
        }
        if !acted {
            // Nothing to do now: sleep until the next burst is due, a frame
            // comes back, or the drain time is over (spin if that is soon).
            let next = if s.sent < c.frames && c.rate > 0 {
                t0 + (s.sent as f64 * per_frame_ns) as u64
            } else if s.sent < c.frames && c.window == 0 {
                now
            } else {
                (last_send + c.drain_ns).min(now + 1_000_000)
            };
            if next > now + 20_000 {
                if link::wait(next - 10_000) == WakeReason::Stop {
                    break;
                }
            }
        }
        STATS.with(|st| *st.borrow_mut() = s.clone());
    }
    s.elapsed_ns = last_back.saturating_sub(first_send);
    s.send_span_ns = last_send.saturating_sub(first_send);
    STATS.with(|st| *st.borrow_mut() = s.clone());
    host::log(&format!(
        "loadgen: sent {} in {} sends, back {}, lost {}, {:.0} frames/s, latency mean {:.1} us max {:.1} us",
        s.sent,
        s.sends,
        s.received,
        s.sent - s.received,
        s.received as f64 / (s.elapsed_ns.max(1) as f64 / 1e9),
        s.latency_sum_ns as f64 / s.latency_n.max(1) as f64 / 1e3,
        s.latency_max_ns as f64 / 1e3
    ));
    Ok(Exit::Stopped)
}

struct Component;

impl Server for Component {
    fn run() -> Exit {
        match config().and_then(|c| run_load(&c)) {
            Ok(e) => e,
            Err(e) => Exit::Failed(format!("loadgen: {e}")),
        }
    }
}

impl Control for Component {
    fn describe() -> Identity {
        Identity { name: "loadgen-rs".into(), version: "0.1.0+rust".into() }
    }

    fn stats() -> Vec<Counter> {
        STATS.with(|st| {
            let s = st.borrow();
            [
                ("sent", s.sent),
                ("tx.dropped-full", s.dropped_full),
                ("tx.invalid", s.invalid),
                ("received", s.received),
                ("received.bytes", s.received_bytes),
                ("lost", s.sent.saturating_sub(s.received)),
                ("elapsed-ns", s.elapsed_ns),
                ("late.max-ns", s.late_max_ns),
                ("latency.mean-ns", s.latency_sum_ns / s.latency_n.max(1)),
                ("latency.max-ns", s.latency_max_ns),
                ("sends", s.sends),
                ("send-span-ns", s.send_span_ns),
            ]
            .into_iter()
            .map(|(n, v)| Counter { name: n.into(), value: v })
            .collect()
        })
    }
}

export!(Component);
