//! The multiserver switch: the host side of the network server's world.
//!
//! Port 0 is the physical NIC, ports 1 and up are the apps' virtual
//! interfaces. Every port has two host-owned rings: frames from the port
//! toward the network server, and frames from the server to the port. The
//! server drains all ports with `rings.recv`, decides, and moves each frame
//! with `rings.forward` without copying. Rings, ports, the portmap and the
//! drop counters live here, in the host, so they outlive the server
//! component: a crashed or replaced server finds them as it left them.

use crate::bindings::libretto::net::{nic as wit_nic, portmap_lookup as wit_lookup, rings as wit_rings, types as wit_types};
use crate::codec::{vnet_decode, vnet_encode, VNET_LEN};
use crate::link::{HeldFrames, LinkInfo};
use crate::portmap::{Portmap, Proto};
use crate::ring::{Frame, Notify, Ring};
use crate::state::{deadline_instant, now_ns, wake_to_wit, Ctx};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use wasmtime::Result;

pub const NIC_PORT: u32 = 0;
pub const FLOOD: u32 = 0xffff_ffff;
pub const CONSUMED: u32 = 0xffff_fffe;
pub const DROP_BASE: u32 = 0xffff_0000;
/// `drop-reason` in declaration order.
pub const DROP_REASONS: [&str; 9] = ["malformed", "bad-checksum", "not-ours", "no-listener", "ring-full", "filtered", "no-buffer", "fragment", "unsupported"];
const RX_DESC: usize = 24;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Server,
    Direct,
}

/// Counters of one port, as `ctl` shows them.
#[derive(Default, Debug)]
pub struct PortStats {
    /// Frames and bytes the port handed toward the server.
    pub in_frames: AtomicU64,
    pub in_bytes: AtomicU64,
    /// Frames and bytes delivered to the port.
    pub out_frames: AtomicU64,
    pub out_bytes: AtomicU64,
    /// Frames for the port dropped because its ring was full.
    pub out_full: AtomicU64,
    /// Frames from the port the server dropped, by reason.
    pub drops: [AtomicU64; 9],
}

pub struct Port {
    pub id: u32,
    pub name: String,
    pub mac: u64,
    /// A dedicated IP, if the app has one.
    pub ip: Option<u32>,
    /// Direct (true) or through the server (false); the dynamic switch flips it.
    direct: AtomicBool,
    pub to_server: Arc<Ring>,
    pub from_server: Arc<Ring>,
    pub stats: PortStats,
}

/// The NIC as the server sees it.
#[derive(Clone, Debug)]
pub struct NicInfo {
    pub mac: u64,
    pub mtu: u32,
    pub shared_ip: u32,
    pub prefix_len: u8,
}

pub struct Switch {
    ports: RwLock<Vec<Arc<Port>>>,
    generation: AtomicU64,
    /// The server's wake-up: every port's ring toward the server signals it.
    pub notify: RwLock<Arc<Notify>>,
    pub nic: NicInfo,
    pub portmap: Arc<Portmap>,
    /// Drops the server decided, by reason.
    pub drops: [AtomicU64; 9],
    /// Frames the server held across a wait (released and counted).
    pub leaked: AtomicU64,
    /// Routes naming unknown frames or ports, and descriptors cut short.
    pub invalid: AtomicU64,
    /// Frames the server built itself (ARP replies, resets, ICMP).
    pub built: AtomicU64,
    /// Frames the server answered itself and let go.
    pub consumed: AtomicU64,
    pub flooded: AtomicU64,
    rr: AtomicUsize,
    ring_frames: usize,
    pub control: ServerControl,
}

impl Port {
    pub fn mode(&self) -> Mode {
        if self.direct.load(Ordering::SeqCst) { Mode::Direct } else { Mode::Server }
    }
}

pub use crate::supervise::{Fault, ServerControl};

impl Switch {
    pub fn new(nic: NicInfo, portmap: Arc<Portmap>, ring_frames: usize) -> Arc<Switch> {
        Arc::new(Switch {
            ports: RwLock::new(Vec::new()),
            generation: AtomicU64::new(1),
            notify: RwLock::new(Notify::new()),
            nic,
            portmap,
            drops: Default::default(),
            leaked: AtomicU64::new(0),
            invalid: AtomicU64::new(0),
            built: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            flooded: AtomicU64::new(0),
            rr: AtomicUsize::new(0),
            ring_frames,
            control: ServerControl::default(),
        })
    }

    pub fn server_notify(&self) -> Arc<Notify> {
        self.notify.read().unwrap().clone()
    }

    /// Attach the NIC as port 0, given its two rings (frames from the
    /// device, frames to the device).
    pub fn attach_nic(&self, from_device: Arc<Ring>, to_device: Arc<Ring>) {
        from_device.set_consumer(self.server_notify());
        let port = Port {
            id: NIC_PORT,
            name: "nic".into(),
            mac: self.nic.mac,
            ip: None,
            direct: AtomicBool::new(false),
            to_server: from_device,
            from_server: to_device,
            stats: PortStats::default(),
        };
        self.add(port);
    }

    /// Make a virtual interface for an app: the port, and the link the app's
    /// stack drives (its MAC is the NIC's when it shares the NIC's IP).
    pub fn attach_app(&self, id: u32, name: &str, mac: u64, ip: Option<u32>, app_notify: Arc<Notify>) -> (Arc<Port>, crate::link::LinkSlot) {
        let to_server = Ring::new(format!("{name}->server"), self.ring_frames, self.server_notify());
        let from_server = Ring::new(format!("server->{name}"), self.ring_frames, app_notify.clone());
        let port = Port { id, name: name.to_string(), mac, ip, direct: AtomicBool::new(false), to_server: to_server.clone(), from_server: from_server.clone(), stats: PortStats::default() };
        let port = self.add(port);
        let mut info = LinkInfo::virtual_link(mac);
        info.mtu = self.nic.mtu;
        let slot = crate::link::LinkSlot::new(crate::link::LinkPort { info, rx: from_server, tx: to_server }, app_notify);
        (port, slot)
    }

    fn add(&self, port: Port) -> Arc<Port> {
        let port = Arc::new(port);
        let mut ports = self.ports.write().unwrap();
        ports.retain(|p| p.id != port.id);
        ports.push(port.clone());
        ports.sort_by_key(|p| p.id);
        self.generation.fetch_add(1, Ordering::SeqCst);
        drop(ports);
        self.server_notify().notify();
        port
    }

    /// Move a port between server and direct mode (the dynamic switch).
    pub fn set_mode(&self, id: u32, mode: Mode) {
        if let Some(p) = self.port(id) {
            p.direct.store(mode == Mode::Direct, Ordering::SeqCst);
            self.generation.fetch_add(1, Ordering::SeqCst);
            self.server_notify().notify();
        }
    }

    /// Put frames the server held back at the front of their ports' rings,
    /// in order (the server crashed or stopped with them): none is lost.
    pub fn requeue(&self, held: Vec<(Frame, u32)>) -> usize {
        let n = held.len();
        let ports = self.ports();
        for p in &ports {
            let mine: Vec<Frame> = held.iter().filter(|(_, o)| *o == p.id).map(|(f, _)| f.clone()).collect();
            if !mine.is_empty() {
                p.to_server.unpop_front(mine);
            }
        }
        if n > 0 {
            self.server_notify().notify();
        }
        n
    }

    pub fn remove(&self, id: u32) {
        self.ports.write().unwrap().retain(|p| p.id != id);
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.server_notify().notify();
    }

    pub fn ports(&self) -> Vec<Arc<Port>> {
        self.ports.read().unwrap().clone()
    }

    pub fn port(&self, id: u32) -> Option<Arc<Port>> {
        self.ports.read().unwrap().iter().find(|p| p.id == id).cloned()
    }

    fn deliver(&self, port: &Port, frames: Vec<Frame>) -> (u32, u32) {
        if frames.is_empty() {
            return (0, 0);
        }
        let n = frames.len() as u32;
        let bytes: u64 = frames.iter().map(|f| f.data.len() as u64).sum();
        let pushed = port.from_server.push_batch(frames) as u32;
        port.stats.out_frames.fetch_add(pushed as u64, Ordering::Relaxed);
        port.stats.out_bytes.fetch_add(bytes, Ordering::Relaxed);
        port.stats.out_full.fetch_add((n - pushed) as u64, Ordering::Relaxed);
        (pushed, n - pushed)
    }
}

/// The network server's held frames and their ports.
pub type ServerHeld = HeldFrames<(Frame, u32)>;

fn ip_tuple(ip: u32) -> (u8, u8, u8, u8) {
    let b = ip.to_be_bytes();
    (b[0], b[1], b[2], b[3])
}

impl Ctx {
    fn switch(&self) -> Result<&Arc<Switch>> {
        self.switch.as_ref().ok_or_else(|| wasmtime::format_err!("component `{}` is not the network server", self.name))
    }

    /// Every call from the server: count it as progress, and trap if the
    /// server is being killed or a crash was injected.
    fn beat(&self) -> Result<()> {
        self.switch()?.control.beat("network server")
    }

    /// Frames the server still holds go back to the pool, counted.
    fn release_leaked(&mut self) {
        let ids = self.server_held.ids();
        if !ids.is_empty() {
            for id in &ids {
                self.server_held.take(*id);
            }
            if let Some(sw) = &self.switch {
                sw.leaked.fetch_add(ids.len() as u64, Ordering::Relaxed);
            }
        }
    }
}

impl wit_nic::Host for Ctx {
    fn info(&mut self) -> Result<wit_nic::NicInfo> {
        let n = self.switch()?.nic.clone();
        Ok(wit_nic::NicInfo {
            mac: n.mac,
            mtu: n.mtu,
            offloads: wit_types::OffloadCaps { tx_csum: true, tso: true, rx_csum: true, lro: true },
            shared_ip: ip_tuple(n.shared_ip),
            prefix_len: n.prefix_len,
            up: true,
        })
    }
}

impl wit_rings::Host for Ctx {
    fn ports(&mut self) -> Result<Vec<wit_rings::PortInfo>> {
        Ok(self
            .switch()?
            .ports()
            .iter()
            .map(|p| wit_rings::PortInfo {
                port: p.id,
                name: p.name.clone(),
                mac: p.mac,
                ip: p.ip.map(ip_tuple),
                mode: match p.mode() {
                    Mode::Server => wit_rings::Mode::Server,
                    Mode::Direct => wit_rings::Mode::Direct,
                },
            })
            .collect())
    }

    fn ports_generation(&mut self) -> Result<u64> {
        Ok(self.switch()?.generation.load(Ordering::SeqCst))
    }

    fn recv(&mut self, max: u32) -> Result<Vec<u8>> {
        self.beat()?;
        let sw = self.switch()?.clone();
        sw.control.fault("network server")?;
        let ports = sw.ports();
        let mut budget = (max as usize).min(256).min(self.server_held.room());
        let mut out = Vec::new();
        if ports.is_empty() || budget == 0 {
            return Ok(out);
        }
        // Round-robin over ports, a fair share each, until the budget is spent.
        let start = sw.rr.fetch_add(1, Ordering::Relaxed) % ports.len();
        let mut batch = Vec::new();
        let mut idle_rounds = 0;
        while budget > 0 && idle_rounds < 1 {
            let share = (budget / ports.len()).max(1);
            let mut took_any = false;
            for k in 0..ports.len() {
                if budget == 0 {
                    break;
                }
                let p = &ports[(start + k) % ports.len()];
                batch.clear();
                let n = p.to_server.pop_batch(share.min(budget), &mut batch);
                if n == 0 {
                    continue;
                }
                took_any = true;
                budget -= n;
                for f in batch.drain(..) {
                    p.stats.in_frames.fetch_add(1, Ordering::Relaxed);
                    p.stats.in_bytes.fetch_add(f.data.len() as u64, Ordering::Relaxed);
                    let h = f.data.len().min(128);
                    let mut desc = [0u8; RX_DESC];
                    desc[0..4].copy_from_slice(&p.id.to_le_bytes());
                    desc[8..12].copy_from_slice(&(f.data.len() as u32).to_le_bytes());
                    desc[12..12 + VNET_LEN].copy_from_slice(&vnet_encode(&f.offload));
                    desc[22..24].copy_from_slice(&(h as u16).to_le_bytes());
                    let head_start = out.len() + RX_DESC;
                    out.extend_from_slice(&desc);
                    out.extend_from_slice(&f.data[..h]);
                    let id = self.server_held.insert((f, p.id));
                    out[head_start - RX_DESC + 4..head_start - RX_DESC + 8].copy_from_slice(&id.to_le_bytes());
                }
            }
            if !took_any {
                idle_rounds += 1;
            }
        }
        Ok(out)
    }

    fn forward(&mut self, routes: Vec<u8>) -> Result<wit_rings::MoveReport> {
        self.beat()?;
        let sw = self.switch()?.clone();
        let ports = sw.ports();
        let mut per_port: Vec<Vec<Frame>> = vec![Vec::new(); ports.len()];
        let index_of = |id: u32| ports.iter().position(|p| p.id == id);
        let mut invalid = 0u32;
        if routes.len() % 8 != 0 {
            invalid += 1;
        }
        for r in routes.chunks_exact(8) {
            let id = u32::from_le_bytes(r[0..4].try_into().unwrap());
            let dest = u32::from_le_bytes(r[4..8].try_into().unwrap());
            let Some((frame, origin)) = self.server_held.take(id) else {
                invalid += 1;
                continue;
            };
            if dest == FLOOD {
                sw.flooded.fetch_add(1, Ordering::Relaxed);
                for (i, p) in ports.iter().enumerate() {
                    if p.id != origin && p.mode() == Mode::Server {
                        per_port[i].push(frame.clone());
                    }
                }
            } else if dest == CONSUMED {
                sw.consumed.fetch_add(1, Ordering::Relaxed);
            } else if dest >= DROP_BASE {
                let reason = (dest - DROP_BASE) as usize;
                match sw.drops.get(reason) {
                    Some(c) => {
                        c.fetch_add(1, Ordering::Relaxed);
                        if let Some(p) = ports.iter().find(|p| p.id == origin) {
                            p.stats.drops[reason].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => invalid += 1,
                }
            } else if let Some(i) = index_of(dest) {
                per_port[i].push(frame);
            } else {
                invalid += 1;
            }
        }
        let (mut moved, mut full) = (0, 0);
        for (i, frames) in per_port.into_iter().enumerate() {
            let (m, f) = sw.deliver(&ports[i], frames);
            moved += m;
            full += f;
        }
        sw.invalid.fetch_add(invalid as u64, Ordering::Relaxed);
        sw.drops[4].fetch_add(full as u64, Ordering::Relaxed);
        Ok(wit_rings::MoveReport { moved, dropped_full: full, invalid })
    }

    fn send(&mut self, frames: Vec<u8>) -> Result<wit_rings::MoveReport> {
        self.beat()?;
        let sw = self.switch()?.clone();
        let ports = sw.ports();
        let mut per_port: Vec<Vec<Frame>> = vec![Vec::new(); ports.len()];
        let mut invalid = 0u32;
        let mut at = 0usize;
        while at < frames.len() {
            if at + 16 > frames.len() {
                invalid += 1;
                break;
            }
            let port = u32::from_le_bytes(frames[at..at + 4].try_into().unwrap());
            let len = u16::from_le_bytes([frames[at + 4], frames[at + 5]]) as usize;
            let offload = vnet_decode(&frames[at + 6..at + 16]);
            if at + 16 + len > frames.len() {
                invalid += 1;
                break;
            }
            let data = frames[at + 16..at + 16 + len].to_vec();
            at += 16 + len;
            match (offload, ports.iter().position(|p| p.id == port)) {
                (Some(offload), Some(i)) if len >= 14 => per_port[i].push(Frame { data, offload }),
                _ => invalid += 1,
            }
        }
        let (mut moved, mut full) = (0, 0);
        for (i, f) in per_port.into_iter().enumerate() {
            let (m, x) = sw.deliver(&ports[i], f);
            moved += m;
            full += x;
        }
        sw.built.fetch_add(moved as u64, Ordering::Relaxed);
        sw.invalid.fetch_add(invalid as u64, Ordering::Relaxed);
        sw.drops[4].fetch_add(full as u64, Ordering::Relaxed);
        Ok(wit_rings::MoveReport { moved, dropped_full: full, invalid })
    }

    fn wait(&mut self, deadline_ns: u64) -> Result<wit_types::WakeReason> {
        self.beat()?;
        self.release_leaked();
        let sw = self.switch()?.clone();
        let c = &sw.control;
        if c.stop.load(Ordering::SeqCst) {
            return Ok(wit_types::WakeReason::Stop);
        }
        let notify = sw.server_notify();
        let deadline = deadline_instant(deadline_ns);
        c.in_wait.store(true, Ordering::SeqCst);
        let w = notify.wait_until(deadline, || c.stop.load(Ordering::SeqCst) || c.kill.load(Ordering::SeqCst) || sw.ports().iter().any(|p| !p.to_server.is_empty()));
        c.in_wait.store(false, Ordering::SeqCst);
        self.beat()?;
        if c.stop.load(Ordering::SeqCst) {
            return Ok(wit_types::WakeReason::Stop);
        }
        Ok(wake_to_wit(w))
    }

    fn now(&mut self) -> Result<u64> {
        Ok(now_ns())
    }
}

impl wit_lookup::Host for Ctx {
    fn lookup(&mut self, keys: Vec<wit_lookup::Key>) -> Result<Vec<Option<u32>>> {
        let sw = self.switch()?;
        Ok(keys
            .iter()
            .map(|k| {
                let proto = match k.proto {
                    wit_types::Protocol::Tcp => Proto::Tcp,
                    wit_types::Protocol::Udp => Proto::Udp,
                };
                sw.portmap.lookup(proto, k.port)
            })
            .collect())
    }
}
