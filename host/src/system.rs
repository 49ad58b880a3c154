//! `libretto run MANIFEST`: boot a system. The NIC (a TAP device) becomes
//! port 0 of the switch; the network server component runs on its own
//! thread and is restarted (with back-off) if it traps; each app image runs
//! on its own thread behind a virtual interface, bound to the shared IP's
//! portmap with the ports the manifest grants, or to an IP of its own. A
//! control socket answers `libretto ctl`. SIGINT or SIGTERM stops it all.

use crate::apprun::{prepare, spawn_counted, Outcome};
use crate::bindings::exports::libretto::net::server::Exit;
use crate::engine;
use crate::link::LinkSlot;
use crate::gateway::Gateway;
use crate::manifest::{ip_string, Manifest, NicBackend};
use crate::portmap::{PortPolicy, Portmap};
use crate::ring::{Notify, Ring};
use crate::state::{Ctx, HostCounters, PortmapGrant};
use crate::supervise::{self, ServerControl, ServerState, Supervised};
use crate::switch::{Mode, NicInfo, Port, Switch};
use crate::tap::{Tap, TapStats};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How an app or the server is doing, for `ctl`.
#[derive(Clone, Debug)]
pub enum Status {
    Starting,
    Running,
    Exited(String),
    Crashed(String),
}

impl Status {
    pub fn text(&self) -> String {
        match self {
            Status::Starting => "starting".into(),
            Status::Running => "running".into(),
            Status::Exited(s) => format!("exited: {s}"),
            Status::Crashed(s) => format!("crashed: {s}"),
        }
    }
}

pub struct AppState {
    pub name: String,
    pub port: Arc<Port>,
    pub ip: Option<u32>,
    pub slot: LinkSlot,
    pub counters: Arc<HostCounters>,
    pub status: Mutex<Status>,
    /// The portmap this app binds in (the shared one, or its own).
    pub portmap: Arc<Portmap>,
    /// The app's own NIC for direct mode, if it has one.
    pub direct: Option<DirectNic>,
    pub mode: Mutex<Mode>,
    pub switches: AtomicU64,
}

/// An app's own NIC: a TAP device whose frames go into the app's receive
/// ring while `active`, and the ring of frames to it.
pub struct DirectNic {
    pub tap: Tap,
    pub tx: Arc<Ring>,
    pub active: Arc<AtomicBool>,
}

/// A gratuitous ARP for `ip` from `mac`: peers and bridges learn where the
/// app now is.
pub fn gratuitous_arp(mac: u64, ip: u32) -> crate::ring::Frame {
    let m = mac.to_be_bytes();
    let mac6 = [m[2], m[3], m[4], m[5], m[6], m[7]];
    let mut d = vec![0u8; 60];
    d[0..6].copy_from_slice(&[0xff; 6]);
    d[6..12].copy_from_slice(&mac6);
    d[12..14].copy_from_slice(&[0x08, 0x06]);
    d[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    d[22..28].copy_from_slice(&mac6);
    d[28..32].copy_from_slice(&ip.to_be_bytes());
    d[38..42].copy_from_slice(&ip.to_be_bytes());
    crate::ring::Frame { data: d, offload: crate::ring::Offload { csum_valid: true, ..Default::default() } }
}

/// The block service of a running system.
pub struct BlockSystem {
    pub service: Arc<crate::block::service::BlockService>,
    /// The block server, if there is one (apps may all be direct).
    pub server: Option<(Arc<ServerState>, Arc<dyn Supervised>)>,
    /// Each app's queue, by app name.
    pub apps: Vec<(String, Arc<crate::block::service::AppBlock>)>,
}

/// One thing that happened, for `ctl events`.
pub struct Event {
    pub at_s: f64,
    pub what: String,
}

pub struct System {
    pub manifest: Manifest,
    pub switch: Arc<Switch>,
    pub apps: Vec<Arc<AppState>>,
    pub server: Arc<ServerState>,
    pub net_server: Arc<dyn Supervised>,
    /// The block service and its server, if the manifest has a device.
    pub block: Option<BlockSystem>,
    pub tap: Arc<TapStats>,
    pub started: Instant,
    pub events: Arc<Mutex<std::collections::VecDeque<Event>>>,
}

/// Keep the last 1,024 events.
pub fn record(events: &Mutex<std::collections::VecDeque<Event>>, started: Instant, what: String) {
    log(&what);
    let mut e = events.lock().unwrap();
    if e.len() >= 1024 {
        e.pop_front();
    }
    e.push_back(Event { at_s: started.elapsed().as_secs_f64(), what });
}

fn log(line: &str) {
    eprintln!("libretto: {line}");
}

/// The network server, as the supervisor sees it.
pub struct NetServer {
    pub switch: Arc<Switch>,
}

impl Supervised for NetServer {
    fn what(&self) -> &'static str {
        "network server"
    }
    fn control(&self) -> &ServerControl {
        &self.switch.control
    }
    fn wake(&self) {
        self.switch.server_notify().notify();
    }
    fn ctx(&self) -> Ctx {
        let mut ctx = Ctx::new("network-server");
        ctx.switch = Some(self.switch.clone());
        ctx
    }
    fn recover(&self, ctx: &mut Ctx) -> String {
        let held: Vec<_> = {
            let h = &mut ctx.server_held;
            h.ids().into_iter().filter_map(|id| h.take(id)).collect()
        };
        format!("{} held frames requeued", self.switch.requeue(held))
    }
    fn check_swap(&self, component: &wasmtime::component::Component, path: &std::path::Path) -> Result<(), String> {
        if !engine::exports_instance(component, "libretto:net/control@0.1.0") {
            return Err(format!("{}: not a network server (no libretto:net/control export)", path.display()));
        }
        // It must link against the network server's imports alone.
        for (name, _) in component.component_type().imports(engine::engine()) {
            if name.starts_with("libretto:net/link") || name.starts_with("libretto:net/sockets") || name.starts_with("libretto:block/") {
                return Err(format!("{}: not a network server (it imports {name}, not a network server's interface)", path.display()));
            }
        }
        if !supervise::imports(component, "libretto:net/rings") {
            return Err(format!("{}: not a network server (it does not import libretto:net/rings)", path.display()));
        }
        Ok(())
    }
}

/// Automatic switching: sample each switchable app's packet rate and move
/// it by the manifest's policy. Every switch is logged as an event.
fn apply_policy(sys: Arc<System>, p: crate::manifest::Policy) {
    let interval = Duration::from_millis(p.interval_ms);
    let mut last: Vec<u64> = sys.apps.iter().map(|a| a.counters.rx_frames.load(Ordering::Relaxed) + a.counters.tx_frames.load(Ordering::Relaxed)).collect();
    let mut since: Vec<Instant> = sys.apps.iter().map(|_| Instant::now()).collect();
    while !sys.server.stop.load(Ordering::SeqCst) {
        std::thread::sleep(interval);
        let direct_now = sys.apps.iter().filter(|a| *a.mode.lock().unwrap() == Mode::Direct).count() as u32;
        let mut direct_count = direct_now;
        for (i, a) in sys.apps.iter().enumerate() {
            let total = a.counters.rx_frames.load(Ordering::Relaxed) + a.counters.tx_frames.load(Ordering::Relaxed);
            let pps = (total - last[i]) as f64 / interval.as_secs_f64();
            last[i] = total;
            if a.direct.is_none() || since[i].elapsed() < Duration::from_millis(p.min_dwell_ms) {
                continue;
            }
            let mode = *a.mode.lock().unwrap();
            let to = if mode == Mode::Server && pps > p.direct_above_pps as f64 && direct_count < p.max_direct {
                Some(Mode::Direct)
            } else if mode == Mode::Direct && pps < p.server_below_pps as f64 {
                Some(Mode::Server)
            } else {
                None
            };
            if let Some(to) = to {
                record(&sys.events, sys.started, format!("policy: app `{}` at {pps:.0} packets/s", a.name));
                if sys.switch_app(&a.name, to).is_ok() {
                    since[i] = Instant::now();
                    if to == Mode::Direct {
                        direct_count += 1;
                    } else {
                        direct_count -= 1;
                    }
                }
            }
        }
    }
}

impl System {
    /// The dynamic switch: move an app between server mode (its virtual
    /// interface behind the network server) and direct mode (its own NIC),
    /// keeping its IP and MAC. Its receive ring stays the same, so frames
    /// already queued on the old path are delivered; its transmit ring
    /// changes, and what the old one holds still drains on the old path. A
    /// gratuitous ARP on the new path moves the peers and bridges.
    pub fn switch_app(&self, name: &str, to: Mode) -> Result<String, String> {
        let app = self.apps.iter().find(|a| a.name == name).ok_or_else(|| format!("no app named `{name}`"))?;
        let direct = app.direct.as_ref().ok_or_else(|| format!("app `{name}` has no NIC of its own (give it \"direct\": {{\"tap\": ...}} in the manifest)"))?;
        let ip = app.ip.expect("apps with a direct NIC have their own IP");
        let mut mode = app.mode.lock().unwrap();
        if *mode == to {
            return Ok(format!("app `{name}` is already in {} mode", if to == Mode::Direct { "direct" } else { "server" }));
        }
        let t = Instant::now();
        let info = app.slot.get().info.clone();
        match to {
            Mode::Direct => {
                direct.active.store(true, Ordering::SeqCst);
                app.slot.rebind(crate::link::LinkPort { info, rx: app.port.from_server.clone(), tx: direct.tx.clone() });
                direct.tx.push_batch([gratuitous_arp(app.port.mac, ip)]);
                self.switch.set_mode(app.port.id, Mode::Direct);
            }
            Mode::Server => {
                app.slot.rebind(crate::link::LinkPort { info, rx: app.port.from_server.clone(), tx: app.port.to_server.clone() });
                app.port.to_server.push_batch([gratuitous_arp(app.port.mac, ip)]);
                self.switch.set_mode(app.port.id, Mode::Server);
                // Frames still arriving on the app's own NIC (a bridge not yet
                // moved) are delivered for a second, then the NIC goes quiet.
                let (active, port) = (direct.active.clone(), app.port.clone());
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_secs(1));
                    if port.mode() == Mode::Server {
                        active.store(false, Ordering::SeqCst);
                    }
                });
            }
        }
        *mode = to;
        app.switches.fetch_add(1, Ordering::Relaxed);
        let what = format!("app `{name}` switched to {} mode in {} us", if to == Mode::Direct { "direct" } else { "server" }, t.elapsed().as_micros());
        record(&self.events, self.started, what.clone());
        Ok(what)
    }

    /// Move an app's block queue between the block server and a device
    /// queue of its own. Commands under way finish on the path they took.
    pub fn switch_block(&self, name: &str, to: crate::block::service::Mode) -> Result<String, String> {
        let b = self.block.as_ref().ok_or_else(|| "this system has no block device".to_string())?;
        let (_, q) = b.apps.iter().find(|(n, _)| n == name).ok_or_else(|| format!("app `{name}` has no block namespaces"))?;
        if to == crate::block::service::Mode::Server && b.server.is_none() {
            return Err("this system has no block server (give \"block\": {\"server\": ...})".into());
        }
        let word = if to == crate::block::service::Mode::Direct { "direct" } else { "server" };
        if q.mode() == to {
            return Ok(format!("app `{name}`'s block queue is already in {word} mode"));
        }
        let t = Instant::now();
        b.service.set_mode(q, to)?;
        let what = format!("app `{name}`'s block queue switched to {word} mode in {} us ({} commands in flight)", t.elapsed().as_micros(), q.inflight());
        record(&self.events, self.started, what.clone());
        Ok(what)
    }

    pub fn block_server(&self) -> Result<Arc<dyn Supervised>, String> {
        self.block.as_ref().and_then(|b| b.server.as_ref()).map(|(_, k)| k.clone()).ok_or_else(|| "this system has no block server".to_string())
    }

    /// Kill the running network server (the supervisor restarts it).
    pub fn kill_server(&self) {
        supervise::kill(self.net_server.as_ref(), &self.events, self.started);
    }

    /// Replace the network server with the build at `path`.
    pub fn swap_server(&self, path: &std::path::Path) -> Result<String, String> {
        supervise::swap(self.net_server.as_ref(), &self.server, path)
    }
}

/// Boot the system and run until SIGINT or SIGTERM; returns the exit status.
pub fn run(m: Manifest) -> Result<i32, String> {
    // Load everything first: bad components fail before any device is touched.
    let server_pre = prepare(&m.network_server)?;
    let block_server_pre = match m.block.as_ref().and_then(|b| b.server.clone()) {
        Some(p) => Some((prepare(&p).map_err(|e| format!("block server: {e}"))?, p.display().to_string())),
        None => None,
    };
    let mut app_pres = Vec::new();
    for a in &m.apps {
        app_pres.push(prepare(&a.image).map_err(|e| format!("app `{}`: {e}", a.name))?);
    }

    // Block the stop signals in every thread; the main thread waits for them.
    let signals = block_stop_signals();

    let portmap = Arc::new(Portmap::new());
    let switch = Switch::new(NicInfo { mac: m.nic_mac, mtu: m.mtu, shared_ip: m.shared_ip, prefix_len: m.prefix_len }, portmap.clone(), 4096);
    // The NIC: a TAP device, or the gateway to this machine's ports.
    let mut gateway = None;
    let mut tap = None;
    match &m.nic {
        NicBackend::Tap(name) => {
            let (t, from_device, to_device) = Tap::open_rings(name, switch.server_notify(), 4096)?;
            switch.attach_nic(from_device, to_device);
            tap = Some(t);
        }
        NicBackend::Packet(spec) => {
            // libretto's MACs on this wire: the NIC's and every app's (apps with an IP of their own use theirs).
            let macs: Vec<u64> = std::iter::once(m.nic_mac).chain(m.apps.iter().map(|a| a.mac)).collect();
            let (t, from_device, to_device) = crate::packet::open_rings(spec, m.mtu, &macs, switch.server_notify(), 4096)?;
            switch.attach_nic(from_device, to_device);
            tap = Some(t);
        }
        NicBackend::Gateway { ip, forwards } => {
            let gw_notify = Notify::new();
            let from_gw = Ring::new("gateway->switch", 4096, switch.server_notify());
            let to_gw = Ring::new("switch->gateway", 4096, gw_notify.clone());
            switch.attach_nic(from_gw.clone(), to_gw.clone());
            gateway = Some(Gateway::start(m.nic_mac ^ 0x0000_0000_00ff, *ip, m.prefix_len, m.mtu, forwards.clone(), to_gw, from_gw, gw_notify)?);
        }
    }

    let t0 = Instant::now();
    let events = Arc::new(Mutex::new(std::collections::VecDeque::new()));
    let server = ServerState::new((Arc::new(server_pre), m.network_server.display().to_string()));
    let net_server: Arc<dyn Supervised> = Arc::new(NetServer { switch: switch.clone() });
    let server_thread = {
        let (k, st, ev) = (net_server.clone(), server.clone(), events.clone());
        std::thread::Builder::new().name("network-server".into()).spawn(move || supervise::supervise(k, st, ev, t0)).map_err(|e| e.to_string())?
    };
    let watchdog_thread = {
        let (k, st, ev, wd) = (net_server.clone(), server.clone(), events.clone(), m.watchdog);
        std::thread::Builder::new().name("watchdog".into()).spawn(move || supervise::watchdog(k, st, wd, ev, t0)).map_err(|e| e.to_string())?
    };

    // The block service: the device, and the block server under supervision.
    let mut block_threads = Vec::new();
    let mut block = match (&m.block, block_server_pre) {
        (Some(b), pre) => {
            let device = crate::block::server::open_device(b)?;
            let service = crate::block::service::BlockService::new(device)?;
            let server = match pre {
                Some((pre, path)) => {
                    let state = ServerState::new((Arc::new(pre), path));
                    let kind: Arc<dyn Supervised> = Arc::new(crate::block::server::BlockServer { service: service.clone(), control: Arc::new(ServerControl::default()) });
                    service.has_server.store(true, Ordering::SeqCst);
                    let (k, st, ev) = (kind.clone(), state.clone(), events.clone());
                    block_threads.push(std::thread::Builder::new().name("block-server".into()).spawn(move || supervise::supervise(k, st, ev, t0)).map_err(|e| e.to_string())?);
                    let (k, st, ev, wd) = (kind.clone(), state.clone(), events.clone(), m.watchdog);
                    block_threads.push(std::thread::Builder::new().name("block-watchdog".into()).spawn(move || supervise::watchdog(k, st, wd, ev, t0)).map_err(|e| e.to_string())?);
                    Some((state, kind))
                }
                None => None,
            };
            let i = &service.info;
            log(&format!("block device {}: {} blocks of {} bytes, queue depth {}, {}", b.device.display(), i.blocks, i.block_size, i.queue_depth, if i.volatile_write_cache { "FAULT skip-flush: writes acknowledged before they are durable" } else { "O_DIRECT, io_uring" }));
            Some(BlockSystem { service, server, apps: Vec::new() })
        }
        (None, _) => None,
    };

    let mut apps = Vec::new();
    let mut threads = Vec::new();
    for (i, (a, pre)) in m.apps.iter().zip(app_pres).enumerate() {
        let id = i as u32 + 1;
        let notify = Notify::new();
        let block_grant = match (&a.block, &mut block) {
            (Some(spec), Some(bs)) => {
                let nss = crate::block::server::namespaces(&a.name, spec, &bs.service)?;
                let q = bs.service.attach(id, &a.name, nss, spec.queue_depth, crate::block::server::mode_of(spec), notify.clone());
                bs.apps.push((a.name.clone(), q.clone()));
                Some(crate::block::wit::BlockGrant { service: bs.service.clone(), app: q })
            }
            _ => None,
        };
        let (port, slot) = switch.attach_app(id, &a.name, a.mac, a.ip.map(|x| x.0), notify);
        let direct = match &a.direct_tap {
            Some(name) => {
                let active = Arc::new(AtomicBool::new(a.direct));
                let opened = if a.direct_packet { crate::packet::open_into(name, m.mtu, a.mac, port.from_server.clone(), active.clone(), 4096) } else { Tap::open_into(name, port.from_server.clone(), active.clone(), 4096) };
                let (tap, tx) = opened.map_err(|e| format!("app `{}`: {e}", a.name))?;
                if a.direct {
                    let info = slot.get().info.clone();
                    slot.rebind(crate::link::LinkPort { info, rx: port.from_server.clone(), tx: tx.clone() });
                    switch.set_mode(id, Mode::Direct);
                }
                Some(DirectNic { tap, tx, active })
            }
            None => None,
        };
        let (ip, prefix) = a.ip.unwrap_or((m.shared_ip, m.prefix_len));
        let mut args = vec![("ip".to_string(), format!("{}/{prefix}", ip_string(ip)))];
        if let Some(g) = m.gateway {
            args.push(("gateway".into(), ip_string(g)));
        }
        args.extend(a.args.iter().cloned());
        let grant = if a.ip.is_some() {
            PortmapGrant { map: Arc::new(Portmap::new()), app: id, policy: PortPolicy::any() }
        } else {
            PortmapGrant { map: portmap.clone(), app: id, policy: PortPolicy { tcp: a.tcp.clone(), udp: a.udp.clone() } }
        };
        let state = Arc::new(AppState {
            name: a.name.clone(),
            port,
            ip: a.ip.map(|x| x.0),
            slot: slot.clone(),
            counters: Arc::new(HostCounters::default()),
            status: Mutex::new(Status::Running),
            portmap: grant.map.clone(),
            direct,
            mode: Mutex::new(if a.direct { Mode::Direct } else { Mode::Server }),
            switches: AtomicU64::new(0),
        });
        let h = spawn_counted(&a.name, pre, slot, args, Some(grant), state.counters.clone(), block_grant)?;
        apps.push(state.clone());
        threads.push((state, h));
    }
    log(&format!(
        "{}: NIC {} ({}), shared IP {}/{}, {} app(s); control socket {}",
        m.name,
        m.nic.describe(),
        crate::ctl::mac_string(m.nic_mac),
        ip_string(m.shared_ip),
        m.prefix_len,
        apps.len(),
        m.control.display()
    ));
    let tap_stats = tap.as_ref().map(|t| t.stats.clone()).unwrap_or_default();
    let system = Arc::new(System { manifest: m.clone(), switch: switch.clone(), apps, server: server.clone(), net_server: net_server.clone(), block, tap: tap_stats, started: t0, events: events.clone() });
    let ctl = crate::ctl::serve(system.clone())?;
    if let Some(p) = m.policy.clone() {
        let sys = system.clone();
        std::thread::Builder::new().name("policy".into()).spawn(move || apply_policy(sys, p)).map_err(|e| e.to_string())?;
    }

    // Watch the apps: record how each ended (its ports were freed when its Store went).
    let watcher = {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let t = std::thread::Builder::new()
            .name("app-watch".into())
            .spawn(move || {
                let mut threads = threads;
                while !stop2.load(Ordering::SeqCst) {
                    let mut i = 0;
                    while i < threads.len() {
                        if threads[i].1.is_finished() {
                            let (state, h) = threads.remove(i);
                            let o: Outcome = h.join().unwrap_or_else(|_| Outcome { exit: Err("the thread panicked".into()), stats: vec![], version: String::new() });
                            let status = match &o.exit {
                                Ok(Exit::Stopped) => Status::Exited("stopped".into()),
                                Ok(Exit::Failed(w)) => Status::Exited(format!("failed: {w}")),
                                Err(w) => Status::Crashed(w.lines().next().unwrap_or("").to_string()),
                            };
                            log(&format!("app `{}` {}; its ports are free", state.name, status.text()));
                            // Belt and braces: the Store's drop freed them already.
                            state.portmap.release_app(state.port.id);
                            *state.status.lock().unwrap() = status;
                        } else {
                            i += 1;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                threads
            })
            .map_err(|e| e.to_string())?;
        (stop, t)
    };

    let sig = wait_for_signal(&signals);
    log(&format!("{sig}: stopping"));
    server.stop.store(true, Ordering::SeqCst);
    switch.server_notify().stop();
    for a in &system.apps {
        a.slot.notify.stop();
    }
    if let Some(b) = &system.block {
        if let Some((st, kind)) = &b.server {
            st.stop.store(true, Ordering::SeqCst);
            kind.control().stop.store(true, Ordering::SeqCst);
            b.service.server_notify().stop();
        }
    }
    let _ = server_thread.join();
    let _ = watchdog_thread.join();
    for t in block_threads {
        let _ = t.join();
    }
    watcher.0.store(true, Ordering::SeqCst);
    if let Ok(rest) = watcher.1.join() {
        for (_, h) in rest {
            let _ = h.join();
        }
    }
    ctl.stop();
    drop(tap);
    drop(gateway);
    Ok(0)
}

fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: plain signal-mask manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> &'static str {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` holds the signals blocked above.
    unsafe { libc::sigwait(set, &mut sig) };
    if sig == libc::SIGINT { "SIGINT" } else { "SIGTERM" }
}

pub fn main(args: &[String]) -> i32 {
    let [path] = args else {
        eprintln!("libretto run: usage: libretto run MANIFEST (or no argument for the frame demo)");
        return 2;
    };
    let m = match crate::manifest::load(std::path::Path::new(path)) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("libretto run: {e}");
            return 2;
        }
    };
    match run(m) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("libretto run: {e}");
            2
        }
    }
}

/// The status, counters and version a stopped app or server left.
pub fn outcome_text(o: &Outcome) -> String {
    o.describe()
}
