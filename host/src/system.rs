//! `libretto run MANIFEST`: boot a system. The NIC (a TAP device) becomes
//! port 0 of the switch; the network server component runs on its own
//! thread and is restarted (with back-off) if it traps; each app image runs
//! on its own thread behind a virtual interface, bound to the shared IP's
//! portmap with the ports the manifest grants, or to an IP of its own. A
//! control socket answers `libretto ctl`. SIGINT or SIGTERM stops it all.

use crate::apprun::{prepare, spawn_counted, Outcome};
use crate::bindings::exports::libretto::net::server::{Exit, GuestIndices as ServerIndices};
use crate::engine;
use crate::link::LinkSlot;
use crate::gateway::Gateway;
use crate::manifest::{ip_string, Manifest, NicBackend};
use crate::portmap::{PortPolicy, Portmap};
use crate::ring::{Notify, Ring};
use crate::state::{Ctx, HostCounters, PortmapGrant};
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

pub struct ServerState {
    pub status: Mutex<Status>,
    pub restarts: AtomicU64,
    /// The system is shutting down.
    pub stop: AtomicBool,
    pub last_stats: Mutex<Vec<(String, u64)>>,
    /// The build that runs (and is restarted), and the file it came from.
    pub current: Mutex<(Arc<wasmtime::component::InstancePre<Ctx>>, String)>,
    /// A swap asked for and not yet done: the new build and its file.
    pub pending: Mutex<Option<(Arc<wasmtime::component::InstancePre<Ctx>>, String)>>,
    /// How the last swap ended, for `ctl swap` to report.
    pub swap_result: Mutex<Option<Result<String, String>>>,
    /// When the running instance started (for the watchdog and `ctl`).
    pub started_at: Mutex<Instant>,
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

/// Run the network server until the system stops: restart it with
/// back-off when it traps, fails or is killed; replace it when a swap is
/// asked for, and roll back to the old build if the new one fails within
/// its first seconds. Frames a dead instance held go back to their rings.
fn supervise_server(switch: Arc<Switch>, state: Arc<ServerState>, events: Arc<Mutex<std::collections::VecDeque<Event>>>, t0: Instant) {
    let mut backoff = Duration::from_millis(50);
    // The build to fall back to if a swapped-in one fails early.
    let mut fallback: Option<(Arc<wasmtime::component::InstancePre<Ctx>>, String)> = None;
    loop {
        if state.stop.load(Ordering::SeqCst) {
            return;
        }
        let (pre, path) = state.current.lock().unwrap().clone();
        let mut ctx = Ctx::new("network-server");
        ctx.switch = Some(switch.clone());
        let mut store = engine::new_store(ctx);
        // Epoch checks: a killed instance traps even in a loop of its own.
        let sw = switch.clone();
        store.epoch_deadline_callback(move |_| {
            if sw.control.kill.load(Ordering::SeqCst) {
                wasmtime::bail!("the network server was killed by the host");
            }
            Ok(wasmtime::UpdateDeadline::Continue(1))
        });
        engine::set_deadline(&mut store, 0);
        store.set_epoch_deadline(1);
        switch.control.kill.store(false, Ordering::SeqCst);
        switch.control.stop.store(false, Ordering::SeqCst);
        *state.started_at.lock().unwrap() = Instant::now();
        let started = Instant::now();
        *state.status.lock().unwrap() = Status::Running;
        let result = pre
            .instantiate(&mut store)
            .and_then(|i| ServerIndices::new(&pre)?.load(&mut store, &i))
            .and_then(|s| s.call_run(&mut store));
        // Nothing the instance held is lost.
        let held: Vec<_> = {
            let h = &mut store.data_mut().server_held;
            h.ids().into_iter().filter_map(|id| h.take(id)).collect()
        };
        let requeued = switch.requeue(held);
        drop(store);
        let ran = started.elapsed();
        let swap = state.pending.lock().unwrap().take();
        match (&result, swap) {
            (Ok(Exit::Stopped), Some(next)) => {
                // A swap: the old instance stopped cleanly; start the new build.
                record(&events, t0, format!("network server: swapping {path} for {} ({requeued} held frames requeued)", next.1));
                fallback = Some((pre.clone(), path.clone()));
                *state.current.lock().unwrap() = next;
                backoff = Duration::from_millis(50);
                continue;
            }
            (Ok(Exit::Stopped), None) => {
                *state.status.lock().unwrap() = Status::Exited("stopped".into());
                return;
            }
            _ => {}
        }
        let why = match result {
            Ok(Exit::Failed(why)) => format!("failed: {why}"),
            Err(e) => format!("trapped: {}", e.root_cause().to_string().lines().last().unwrap_or("")),
            Ok(Exit::Stopped) => unreachable!(),
        };
        *state.status.lock().unwrap() = Status::Crashed(why.clone());
        if state.stop.load(Ordering::SeqCst) {
            return;
        }
        // A build swapped in that dies within 3 s is rolled back.
        if let Some(old) = fallback.take() {
            if ran < Duration::from_secs(3) {
                record(&events, t0, format!("network server: the new build {path} {why} after {} ms; rolling back to {}", ran.as_millis(), old.1));
                *state.swap_result.lock().unwrap() = Some(Err(format!("{path} {why}; rolled back to {}", old.1)));
                *state.current.lock().unwrap() = old;
                state.restarts.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        }
        if ran > Duration::from_secs(10) {
            backoff = Duration::from_millis(50);
        }
        record(&events, t0, format!("network server {why}; {requeued} held frames requeued; restarting in {} ms", backoff.as_millis()));
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(2));
        state.restarts.fetch_add(1, Ordering::Relaxed);
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

/// The watchdog: a server that is not waiting and has made no call into
/// the host for `hang` is hung; kill it (the supervisor restarts it).
fn watchdog(switch: Arc<Switch>, state: Arc<ServerState>, hang: Duration, events: Arc<Mutex<std::collections::VecDeque<Event>>>, t0: Instant) {
    let mut last = switch.control.heartbeat.load(Ordering::Relaxed);
    let mut since = Instant::now();
    while !state.stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
        let now = switch.control.heartbeat.load(Ordering::Relaxed);
        let running = matches!(*state.status.lock().unwrap(), Status::Running);
        if now != last || switch.control.in_wait.load(Ordering::SeqCst) || !running {
            last = now;
            since = Instant::now();
            continue;
        }
        if since.elapsed() >= hang && !switch.control.kill.load(Ordering::SeqCst) {
            record(&events, t0, format!("watchdog: the network server made no progress for {} ms; killing it", since.elapsed().as_millis()));
            switch.control.kill.store(true, Ordering::SeqCst);
            switch.server_notify().notify();
            since = Instant::now();
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

    /// Kill the running network server (the supervisor restarts it).
    pub fn kill_server(&self) {
        record(&self.events, self.started, "network server: killed by `ctl kill`".into());
        self.switch.control.kill.store(true, Ordering::SeqCst);
        self.switch.server_notify().notify();
    }

    /// Replace the network server with the build at `path`. A file that is
    /// not a network server is refused at once; one that fails in its first
    /// seconds is rolled back. Returns what happened.
    pub fn swap_server(&self, path: &std::path::Path) -> Result<String, String> {
        let pre = prepare(path)?;
        let component = pre.component();
        if !engine::exports_instance(component, "libretto:net/control@0.1.0") {
            return Err(format!("{}: not a network server (no libretto:net/control export)", path.display()));
        }
        // It must link against the network server's imports alone.
        for (name, _) in component.component_type().imports(engine::engine()) {
            if name.starts_with("libretto:net/link") || name.starts_with("libretto:net/sockets") {
                return Err(format!("{}: not a network server (it imports {name}, an app's interface)", path.display()));
            }
        }
        if !component.component_type().imports(engine::engine()).any(|(n, _)| n.starts_with("libretto:net/rings")) {
            return Err(format!("{}: not a network server (it does not import libretto:net/rings)", path.display()));
        }
        *self.server.swap_result.lock().unwrap() = None;
        *self.server.pending.lock().unwrap() = Some((Arc::new(pre), path.display().to_string()));
        self.switch.control.stop.store(true, Ordering::SeqCst);
        self.switch.server_notify().notify();
        // Wait for the new build to run 3 s, or to be rolled back.
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
            if let Some(r) = self.server.swap_result.lock().unwrap().take() {
                return r;
            }
            let swapped = self.server.pending.lock().unwrap().is_none() && self.server.current.lock().unwrap().1 == path.display().to_string();
            let age = self.server.started_at.lock().unwrap().elapsed();
            if swapped && matches!(*self.server.status.lock().unwrap(), Status::Running) && age >= Duration::from_secs(3) {
                return Ok(format!("network server swapped to {}; running {} ms", path.display(), age.as_millis()));
            }
        }
        Err("the swap did not finish in 10 s".into())
    }
}

/// Boot the system and run until SIGINT or SIGTERM; returns the exit status.
pub fn run(m: Manifest) -> Result<i32, String> {
    // Load everything first: bad components fail before any device is touched.
    let server_pre = prepare(&m.network_server)?;
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
            let (t, from_device, to_device) = crate::packet::open_rings(spec, m.mtu, switch.server_notify(), 4096)?;
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
    let server = Arc::new(ServerState {
        status: Mutex::new(Status::Starting),
        restarts: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        last_stats: Mutex::new(Vec::new()),
        current: Mutex::new((Arc::new(server_pre), m.network_server.display().to_string())),
        pending: Mutex::new(None),
        swap_result: Mutex::new(None),
        started_at: Mutex::new(Instant::now()),
    });
    let server_thread = {
        let (sw, st, ev) = (switch.clone(), server.clone(), events.clone());
        std::thread::Builder::new().name("network-server".into()).spawn(move || supervise_server(sw, st, ev, t0)).map_err(|e| e.to_string())?
    };
    let watchdog_thread = {
        let (sw, st, ev) = (switch.clone(), server.clone(), events.clone());
        std::thread::Builder::new().name("watchdog".into()).spawn(move || watchdog(sw, st, Duration::from_millis(500), ev, t0)).map_err(|e| e.to_string())?
    };

    let mut apps = Vec::new();
    let mut threads = Vec::new();
    for (i, (a, pre)) in m.apps.iter().zip(app_pres).enumerate() {
        let id = i as u32 + 1;
        let notify = Notify::new();
        let (port, slot) = switch.attach_app(id, &a.name, a.mac, a.ip.map(|x| x.0), notify);
        let direct = match &a.direct_tap {
            Some(name) => {
                let active = Arc::new(AtomicBool::new(a.direct));
                let opened = if a.direct_packet { crate::packet::open_into(name, m.mtu, port.from_server.clone(), active.clone(), 4096) } else { Tap::open_into(name, port.from_server.clone(), active.clone(), 4096) };
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
        let h = spawn_counted(&a.name, pre, slot, args, Some(grant), state.counters.clone())?;
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
    let system = Arc::new(System { manifest: m.clone(), switch: switch.clone(), apps, server: server.clone(), tap: tap_stats, started: t0, events: events.clone() });
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
    let _ = server_thread.join();
    let _ = watchdog_thread.join();
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
