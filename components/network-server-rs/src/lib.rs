//! The network server component in Rust: the world
//! `libretto:net/network-server`, the same as the TypeScript server in
//! `components/network-server`, so either can run a system and `ctl swap`
//! moves between them under load.
//!
//! Its loop drains every port's ring in one batch (`rings.recv(256)`),
//! decides each frame (`forward.rs`), and moves frames with one `forward`
//! call and built replies with one `send` call per batch, in the same
//! order as the TypeScript server. Everything that must survive a restart
//! (rings, the portmap, the host's counters) lives in the host.

mod forward;

wit_bindgen::generate!({
    path: "../../wit",
    world: "libretto:net/network-server",
    generate_all,
});

use exports::libretto::net::control::{Counter, Guest as Control, Identity};
use exports::libretto::net::server::{Exit, Guest as Server};
use forward::{Decisions, Forwarder, InFrame, LookupKey, PortView, ServerConfig};
use libretto::io::host;
use libretto::net::types::{Protocol, WakeReason};
use libretto::net::{nic, portmap_lookup as lookup, rings};
use std::cell::RefCell;

const RX_DESC: usize = 24;
const MAX_BATCH: u32 = 256;

struct State {
    forwarder: Option<Forwarder>,
    batches: u64,
}

thread_local! {
    static STATE: RefCell<State> = const { RefCell::new(State { forwarder: None, batches: 0 }) };
}

fn ip_of(t: (u8, u8, u8, u8)) -> u32 {
    u32::from_be_bytes([t.0, t.1, t.2, t.3])
}

fn load_ports(f: &mut Forwarder) {
    f.set_ports(rings::ports().into_iter().map(|p| PortView { port: p.port, mac: p.mac, ip: p.ip.map(ip_of) }).collect());
}

/// Parse a `rings.recv` batch into frames (heads borrow the batch).
fn parse<'a>(batch: &'a [u8], out: &mut Vec<InFrame<'a>>) {
    out.clear();
    let mut at = 0;
    while at + RX_DESC <= batch.len() {
        let le = |o: usize| u32::from_le_bytes([batch[at + o], batch[at + o + 1], batch[at + o + 2], batch[at + o + 3]]);
        let head_len = u16::from_le_bytes([batch[at + 22], batch[at + 23]]) as usize;
        let end = at + RX_DESC + head_len;
        if end > batch.len() {
            break;
        }
        out.push(InFrame { port: le(0), id: le(4), len: le(8), head: &batch[at + RX_DESC..end] });
        at = end;
    }
}

fn answer(keys: &[LookupKey]) -> Vec<Option<u32>> {
    let keys: Vec<lookup::Key> = keys.iter().map(|k| lookup::Key { proto: if k.tcp { Protocol::Tcp } else { Protocol::Udp }, port: k.port }).collect();
    lookup::lookup(&keys)
}

struct Component;

impl Server for Component {
    fn run() -> Exit {
        let info = nic::info();
        let mut f = Forwarder::new(ServerConfig { nic_mac: info.mac, shared_ip: ip_of(info.shared_ip), prefix_len: info.prefix_len });
        let mut generation = rings::ports_generation();
        load_ports(&mut f);
        let s = info.shared_ip;
        host::log(&format!("network-server (rust): shared IP {}.{}.{}.{}/{}, {} ports", s.0, s.1, s.2, s.3, info.prefix_len, rings::ports().len()));
        STATE.with(|st| st.borrow_mut().forwarder = Some(f));
        let mut d = Decisions::default();
        loop {
            let batch = rings::recv(MAX_BATCH);
            if batch.is_empty() {
                let w = rings::wait(rings::now() + 1_000_000_000);
                if w == WakeReason::Stop {
                    return Exit::Stopped;
                }
                let g = rings::ports_generation();
                if g != generation {
                    generation = g;
                    STATE.with(|st| load_ports(st.borrow_mut().forwarder.as_mut().unwrap()));
                }
                continue;
            }
            let mut frames = Vec::with_capacity(MAX_BATCH as usize);
            parse(&batch, &mut frames);
            d.reset();
            STATE.with(|st| st.borrow_mut().forwarder.as_mut().unwrap().decide(&frames, answer, &mut d));
            if d.built_count > 0 {
                rings::send(&d.built);
            }
            if d.route_count > 0 {
                rings::forward(&d.routes);
            }
            STATE.with(|st| st.borrow_mut().batches += 1);
        }
    }
}

impl Control for Component {
    fn describe() -> Identity {
        Identity { name: "network-server".into(), version: format!("0.1.0+rust{}", if cfg!(feature = "mutant") { "-mutant" } else { "" }) }
    }

    fn stats() -> Vec<Counter> {
        STATE.with(|st| {
            let st = st.borrow();
            let mut out = vec![Counter { name: "batches".into(), value: st.batches }];
            if let Some(f) = &st.forwarder {
                out.extend(f.counters.list().map(|(name, value)| Counter { name: name.into(), value }));
            }
            out
        })
    }
}

export!(Component);
