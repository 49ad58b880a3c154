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
use crate::switch::{NicInfo, Port, Switch};
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
}

pub struct ServerState {
    pub status: Mutex<Status>,
    pub restarts: AtomicU64,
    pub stop: AtomicBool,
    pub last_stats: Mutex<Vec<(String, u64)>>,
}

pub struct System {
    pub manifest: Manifest,
    pub switch: Arc<Switch>,
    pub apps: Vec<Arc<AppState>>,
    pub server: Arc<ServerState>,
    pub tap: Arc<TapStats>,
    pub started: Instant,
}

fn log(line: &str) {
    eprintln!("libretto: {line}");
}

/// Run the network server, restarting it with back-off when it traps or
/// fails, until asked to stop.
fn supervise_server(pre: wasmtime::component::InstancePre<Ctx>, switch: Arc<Switch>, state: Arc<ServerState>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if state.stop.load(Ordering::SeqCst) {
            return;
        }
        let mut ctx = Ctx::new("network-server");
        ctx.switch = Some(switch.clone());
        let mut store = engine::new_store(ctx);
        let started = Instant::now();
        *state.status.lock().unwrap() = Status::Running;
        let result = pre
            .instantiate(&mut store)
            .and_then(|i| ServerIndices::new(&pre)?.load(&mut store, &i))
            .and_then(|s| s.call_run(&mut store));
        match result {
            Ok(Exit::Stopped) => {
                *state.status.lock().unwrap() = Status::Exited("stopped".into());
                return;
            }
            Ok(Exit::Failed(why)) => {
                log(&format!("network server failed: {why}"));
                *state.status.lock().unwrap() = Status::Crashed(why);
            }
            Err(e) => {
                let why = format!("{e:#}").lines().next().unwrap_or("").to_string();
                log(&format!("network server trapped: {why}"));
                *state.status.lock().unwrap() = Status::Crashed(why);
            }
        }
        if state.stop.load(Ordering::SeqCst) {
            return;
        }
        // A server that ran a while gets a fresh back-off.
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(100);
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(5));
        state.restarts.fetch_add(1, Ordering::Relaxed);
        log("restarting the network server");
    }
}

/// Boot the system and run until SIGINT or SIGTERM; returns the exit status.
pub fn run(m: Manifest) -> Result<i32, String> {
    // Load everything first: bad components fail before any device is touched.
    let server_pre = prepare(&m.network_server)?;
    let mut app_pres = Vec::new();
    for a in &m.apps {
        if a.direct {
            return Err(format!("{}: app `{}`: direct mode comes with the dynamic switch; use \"server\" for now", m.path.display(), a.name));
        }
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
        NicBackend::Gateway { ip, forwards } => {
            let gw_notify = Notify::new();
            let from_gw = Ring::new("gateway->switch", 4096, switch.server_notify());
            let to_gw = Ring::new("switch->gateway", 4096, gw_notify.clone());
            switch.attach_nic(from_gw.clone(), to_gw.clone());
            gateway = Some(Gateway::start(m.nic_mac ^ 0x0000_0000_00ff, *ip, m.prefix_len, m.mtu, forwards.clone(), to_gw, from_gw, gw_notify)?);
        }
    }

    let server = Arc::new(ServerState { status: Mutex::new(Status::Starting), restarts: AtomicU64::new(0), stop: AtomicBool::new(false), last_stats: Mutex::new(Vec::new()) });
    let server_thread = {
        let (sw, st) = (switch.clone(), server.clone());
        std::thread::Builder::new().name("network-server".into()).spawn(move || supervise_server(server_pre, sw, st)).map_err(|e| e.to_string())?
    };

    let mut apps = Vec::new();
    let mut threads = Vec::new();
    for (i, (a, pre)) in m.apps.iter().zip(app_pres).enumerate() {
        let id = i as u32 + 1;
        let notify = Notify::new();
        let (port, slot) = switch.attach_app(id, &a.name, a.mac, a.ip.map(|x| x.0), notify);
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
    let system = Arc::new(System { manifest: m.clone(), switch: switch.clone(), apps, server: server.clone(), tap: tap_stats, started: Instant::now() });
    let ctl = crate::ctl::serve(system.clone())?;

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
