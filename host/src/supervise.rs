//! Supervision of the system's servers (the network server and the block
//! server): restart with back-off when one traps, fails or is killed; a
//! watchdog that kills one that stops making progress; hot swap with
//! checks and rollback; faults injected for tests. What a server held goes
//! back to the host when its instance ends (`Supervised::recover`), so a
//! restart loses nothing.

use crate::bindings::exports::libretto::net::server::{Exit, GuestIndices as ServerIndices};
use crate::engine;
use crate::state::Ctx;
use crate::system::{record, Event, Status};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::InstancePre;

/// Faults a test can ask for (`ctl fault SERVER ...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// The server's next call into the host traps.
    Crash,
    /// The server's next receive never returns: it stops making progress,
    /// as a server stuck in a loop would, until the watchdog kills it.
    Hang,
}

/// What the supervisor and the watchdog know of a running server.
#[derive(Default)]
pub struct ServerControl {
    /// Bumped on every call the server makes into the host.
    pub heartbeat: AtomicU64,
    /// The server is blocked in `wait` (idle, not hung).
    pub in_wait: AtomicBool,
    /// Kill the running instance: its next host call, or its next epoch
    /// check, traps.
    pub kill: AtomicBool,
    /// Ask the running instance to stop (a swap): its next `wait` says so.
    pub stop: AtomicBool,
    fault: Mutex<Option<Fault>>,
}

impl ServerControl {
    pub fn inject(&self, f: Fault) {
        *self.fault.lock().unwrap() = Some(f);
    }

    pub fn take_fault(&self) -> Fault {
        self.fault.lock().unwrap().take().unwrap_or(Fault::None)
    }

    /// Every call from the server: count it as progress, and trap if the
    /// server is being killed.
    pub fn beat(&self, who: &str) -> wasmtime::Result<()> {
        self.heartbeat.fetch_add(1, Ordering::Relaxed);
        if self.kill.load(Ordering::SeqCst) {
            wasmtime::bail!("the {who} was killed by the host");
        }
        Ok(())
    }

    /// Act on an injected fault (called where the server takes work in).
    pub fn fault(&self, who: &str) -> wasmtime::Result<()> {
        match self.take_fault() {
            Fault::None => Ok(()),
            Fault::Crash => wasmtime::bail!("crash injected by `ctl fault {}`", who.replace(' ', "-")),
            Fault::Hang => {
                while !self.kill.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                wasmtime::bail!("hung (injected by `ctl fault {} hang`) and killed by the watchdog", who.replace(' ', "-"))
            }
        }
    }
}

/// One kind of server the host supervises.
pub trait Supervised: Send + Sync + 'static {
    /// "network server", "block server": for logs and errors.
    fn what(&self) -> &'static str;
    fn control(&self) -> &ServerControl;
    /// Wake the server (it may be blocked in `wait`).
    fn wake(&self);
    /// A Store's state for a new instance.
    fn ctx(&self) -> Ctx;
    /// The instance ended: take back what it held; says what was done.
    fn recover(&self, ctx: &mut Ctx) -> String;
    /// Whether a component may replace this server: its imports and exports.
    fn check_swap(&self, component: &wasmtime::component::Component, path: &std::path::Path) -> Result<(), String>;
}

pub type Build = (Arc<InstancePre<Ctx>>, String);

/// The supervisor's state of one server, shared with `ctl`.
pub struct ServerState {
    pub status: Mutex<Status>,
    pub restarts: AtomicU64,
    /// The system is shutting down.
    pub stop: AtomicBool,
    pub last_stats: Mutex<Vec<(String, u64)>>,
    /// The build that runs (and is restarted), and the file it came from.
    pub current: Mutex<Build>,
    /// A swap asked for and not yet done: the new build and its file.
    pub pending: Mutex<Option<Build>>,
    /// How the last swap ended, for `ctl swap` to report.
    pub swap_result: Mutex<Option<Result<String, String>>>,
    /// When the running instance started (for the watchdog and `ctl`).
    pub started_at: Mutex<Instant>,
}

impl ServerState {
    pub fn new(build: Build) -> Arc<ServerState> {
        Arc::new(ServerState {
            status: Mutex::new(Status::Starting),
            restarts: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            last_stats: Mutex::new(Vec::new()),
            current: Mutex::new(build),
            pending: Mutex::new(None),
            swap_result: Mutex::new(None),
            started_at: Mutex::new(Instant::now()),
        })
    }
}

type Events = Arc<Mutex<VecDeque<Event>>>;

/// Run a server until the system stops: restart it with back-off when it
/// traps, fails or is killed; replace it when a swap is asked for, and roll
/// back to the old build if the new one fails within its first seconds.
pub fn supervise(kind: Arc<dyn Supervised>, state: Arc<ServerState>, events: Events, t0: Instant) {
    let what = kind.what();
    let mut backoff = Duration::from_millis(50);
    // The build to fall back to if a swapped-in one fails early.
    let mut fallback: Option<Build> = None;
    loop {
        if state.stop.load(Ordering::SeqCst) {
            return;
        }
        let (pre, path) = state.current.lock().unwrap().clone();
        let mut store = engine::new_store(kind.ctx());
        // Epoch checks: a killed instance traps even in a loop of its own.
        let k = kind.clone();
        store.epoch_deadline_callback(move |_| {
            if k.control().kill.load(Ordering::SeqCst) {
                wasmtime::bail!("the {} was killed by the host", k.what());
            }
            Ok(wasmtime::UpdateDeadline::Continue(1))
        });
        engine::set_deadline(&mut store, 0);
        store.set_epoch_deadline(1);
        let c = kind.control();
        c.kill.store(false, Ordering::SeqCst);
        c.stop.store(false, Ordering::SeqCst);
        *state.started_at.lock().unwrap() = Instant::now();
        let started = Instant::now();
        *state.status.lock().unwrap() = Status::Running;
        let result = engine::instantiate(&pre, &mut store).and_then(|i| ServerIndices::new(&pre)?.load(&mut store, &i)).and_then(|s| s.call_run(&mut store));
        // Nothing the instance held is lost.
        let recovered = kind.recover(store.data_mut());
        drop(store);
        let ran = started.elapsed();
        let swap = state.pending.lock().unwrap().take();
        match (&result, swap) {
            (Ok(Exit::Stopped), Some(next)) => {
                // A swap: the old instance stopped cleanly; start the new build.
                record(&events, t0, format!("{what}: swapping {path} for {} ({recovered})", next.1));
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
                record(&events, t0, format!("{what}: the new build {path} {why} after {} ms; rolling back to {}", ran.as_millis(), old.1));
                *state.swap_result.lock().unwrap() = Some(Err(format!("{path} {why}; rolled back to {}", old.1)));
                *state.current.lock().unwrap() = old;
                state.restarts.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        }
        if ran > Duration::from_secs(10) {
            backoff = Duration::from_millis(50);
        }
        record(&events, t0, format!("{what} {why}; {recovered}; restarting in {} ms", backoff.as_millis()));
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(2));
        state.restarts.fetch_add(1, Ordering::Relaxed);
    }
}

/// The watchdog: a server that is not waiting and has made no call into
/// the host for `hang` is hung; kill it (the supervisor restarts it).
pub fn watchdog(kind: Arc<dyn Supervised>, state: Arc<ServerState>, hang: Duration, events: Events, t0: Instant) {
    let c = kind.control();
    let mut last = c.heartbeat.load(Ordering::Relaxed);
    let mut since = Instant::now();
    while !state.stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
        let now = c.heartbeat.load(Ordering::Relaxed);
        let running = matches!(*state.status.lock().unwrap(), Status::Running);
        if now != last || c.in_wait.load(Ordering::SeqCst) || !running {
            last = now;
            since = Instant::now();
            continue;
        }
        if since.elapsed() >= hang && !c.kill.load(Ordering::SeqCst) {
            record(&events, t0, format!("watchdog: the {} made no progress for {} ms; killing it", kind.what(), since.elapsed().as_millis()));
            c.kill.store(true, Ordering::SeqCst);
            kind.wake();
            since = Instant::now();
        }
    }
}

/// Kill the running instance (the supervisor restarts it).
pub fn kill(kind: &dyn Supervised, events: &Events, t0: Instant) {
    record(events, t0, format!("{}: killed by `ctl kill`", kind.what()));
    kind.control().kill.store(true, Ordering::SeqCst);
    kind.wake();
}

/// Replace the server with the build at `path`. A file that is not such a
/// server is refused at once; one that fails in its first seconds is
/// rolled back. Returns what happened.
pub fn swap(kind: &dyn Supervised, state: &ServerState, path: &std::path::Path) -> Result<String, String> {
    let pre = crate::apprun::prepare(path)?;
    kind.check_swap(pre.component(), path)?;
    *state.swap_result.lock().unwrap() = None;
    *state.pending.lock().unwrap() = Some((Arc::new(pre), path.display().to_string()));
    kind.control().stop.store(true, Ordering::SeqCst);
    kind.wake();
    // Wait for the new build to run 3 s, or to be rolled back.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
        if let Some(r) = state.swap_result.lock().unwrap().take() {
            return r;
        }
        let swapped = state.pending.lock().unwrap().is_none() && state.current.lock().unwrap().1 == path.display().to_string();
        let age = state.started_at.lock().unwrap().elapsed();
        if swapped && matches!(*state.status.lock().unwrap(), Status::Running) && age >= Duration::from_secs(3) {
            return Ok(format!("{} swapped to {}; running {} ms", kind.what(), path.display(), age.as_millis()));
        }
    }
    Err("the swap did not finish in 10 s".into())
}

/// Whether `component` imports an interface whose name starts with `prefix`.
pub fn imports(component: &wasmtime::component::Component, prefix: &str) -> bool {
    component.component_type().imports(engine::engine()).any(|(n, _)| n.starts_with(prefix))
}
