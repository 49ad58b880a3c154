//! The block service: every app's block queue, routed through the block
//! server (server mode) or straight to a device queue of the app's own
//! (direct mode), with every command tracked by the host until it
//! completes.
//!
//! A command's life, by its host tag:
//!
//! ```text
//!  app submit ──server mode──▶ inbox ──recv──▶ at server ──forward──▶ on device ──▶ completed
//!       │                                        └──complete (refused)──────────────▶ completed
//!       └──────direct mode (checked here)─────────────────────────────▶ on device ──▶ completed
//! ```
//!
//! The host posts every completion to its app itself, so the block server
//! never holds an app's data or its completions. If the server dies, the
//! commands it had taken but not forwarded go back to the front of the
//! inbox for the next instance; those on the device complete on their own.
//! None is lost and none runs twice. Switching an app's mode changes where
//! its next commands go; those already under way finish where they are.

use super::backend::{DevQueue, Device, DeviceInfo, Op, Status as DevStatus};
use crate::buffers::Buffer;
use crate::ring::Notify;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// The commands of the NVM command set the service offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    Read,
    Write,
    Flush,
    Deallocate,
    WriteZeroes,
}

/// Completion statuses, as `libretto:block/types.status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Success,
    InvalidOpcode,
    InvalidField,
    LbaOutOfRange,
    WriteToReadOnly,
    InvalidNamespace,
    InternalError,
    Aborted,
}

impl From<DevStatus> for Status {
    fn from(s: DevStatus) -> Status {
        match s {
            DevStatus::Success => Status::Success,
            DevStatus::InvalidField => Status::InvalidField,
            DevStatus::LbaOutOfRange => Status::LbaOutOfRange,
            DevStatus::InternalError => Status::InternalError,
        }
    }
}

/// A namespace as the manifest gives it to an app.
#[derive(Clone, Debug)]
pub struct Namespace {
    pub nsid: u32,
    /// 512 or 4096, a multiple of the device's block size.
    pub block_size: u32,
    /// Size in the namespace's blocks.
    pub blocks: u64,
    pub read_only: bool,
    /// Where it starts on the device, in device blocks.
    pub first_lba: u64,
    /// The most namespace blocks one command may move.
    pub max_transfer_blocks: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Server,
    Direct,
}

/// A command as an app submitted it.
pub struct AppCommand {
    pub cid: u32,
    pub opcode: Opcode,
    pub nsid: u32,
    pub slba: u64,
    pub nlb: u32,
    pub fua: bool,
    pub buffer: Option<(Buffer, u32)>,
}

/// Per-app counters the host keeps (the server keeps its own).
#[derive(Default)]
pub struct AppBlockStats {
    pub submitted: AtomicU64,
    pub completed: AtomicU64,
    pub errors: AtomicU64,
    pub queue_full: AtomicU64,
    pub direct: AtomicU64,
    pub via_server: AtomicU64,
    /// Time from the app's submit to the completion being posted, summed
    /// over completed commands, and the longest, in microseconds.
    pub latency_us_total: AtomicU64,
    pub latency_us_max: AtomicU64,
}

impl AppBlockStats {
    fn latency(&self, since: std::time::Instant) {
        let us = since.elapsed().as_micros() as u64;
        self.latency_us_total.fetch_add(us, Ordering::Relaxed);
        self.latency_us_max.fetch_max(us, Ordering::Relaxed);
    }
}

/// One app's block queue pair.
pub struct AppBlock {
    pub id: u32,
    pub name: String,
    pub namespaces: Vec<Namespace>,
    /// The most commands the app may have in flight.
    pub depth: u32,
    mode: Mutex<Mode>,
    inflight: AtomicU32,
    completions: Mutex<VecDeque<(u32, Status)>>,
    /// The app's thread sleeps on this (shared with its link).
    notify: RwLock<Arc<Notify>>,
    /// The app's own device queue, opened when it first goes direct.
    direct_queue: Mutex<Option<Arc<DevQueue>>>,
    pub stats: AppBlockStats,
}

impl AppBlock {
    pub fn mode(&self) -> Mode {
        *self.mode.lock().unwrap()
    }

    pub fn pending(&self) -> u32 {
        self.completions.lock().unwrap().len() as u32
    }

    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::SeqCst)
    }

    pub fn reap(&self, max: u32) -> Vec<(u32, Status)> {
        let mut q = self.completions.lock().unwrap();
        let n = (max as usize).min(q.len());
        q.drain(..n).collect()
    }

    pub fn notify(&self) -> Arc<Notify> {
        self.notify.read().unwrap().clone()
    }

    pub fn set_notify(&self, n: Arc<Notify>) {
        *self.notify.write().unwrap() = n;
    }

    fn post(&self, batch: &[(u32, Status)]) {
        if batch.is_empty() {
            return;
        }
        let errors = batch.iter().filter(|(_, s)| *s != Status::Success).count() as u64;
        self.completions.lock().unwrap().extend(batch.iter().copied());
        self.inflight.fetch_sub(batch.len() as u32, Ordering::SeqCst);
        self.stats.completed.fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.stats.errors.fetch_add(errors, Ordering::Relaxed);
        self.notify().notify();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Where {
    Inbox,
    AtServer,
    OnDevice,
}

struct Cmd {
    app: Arc<AppBlock>,
    cmd: AppCommand,
    at: Where,
    via_server: bool,
    /// Device blocks, once translated.
    dev_range: (u64, u32),
    submitted: std::time::Instant,
}

/// A request as the block server sees it.
pub struct ServerRequest {
    pub app: u32,
    pub tag: u64,
    pub opcode: Opcode,
    pub nsid: u32,
    pub slba: u64,
    pub nlb: u32,
    pub fua: bool,
    pub buffer_len: u32,
}

/// Host-wide counters of the block service.
#[derive(Default)]
pub struct ServiceStats {
    pub requeued: AtomicU64,
    pub bad_forward: AtomicU64,
    pub unknown_tag: AtomicU64,
}

/// The block service of one device.
pub struct BlockService {
    pub device: Arc<Device>,
    pub info: DeviceInfo,
    server_queue: Arc<DevQueue>,
    apps: RwLock<HashMap<u32, Arc<AppBlock>>>,
    generation: AtomicU64,
    cmds: Mutex<HashMap<u64, Cmd>>,
    inbox: Mutex<VecDeque<u64>>,
    server_done: Mutex<VecDeque<(u64, Status)>>,
    server_notify: RwLock<Arc<Notify>>,
    next_tag: AtomicU64,
    /// Whether a block server exists to route server-mode commands.
    pub has_server: AtomicBool,
    pub stats: ServiceStats,
    /// The block server's counters, as it last reported them.
    pub server_report: Mutex<Vec<(String, u64)>>,
    /// The service itself, for the completion callbacks of queues opened later.
    weak: std::sync::Weak<BlockService>,
}

/// Below 2^53, so QuickJS carries every tag exactly.
const TAG_LIMIT: u64 = 1 << 53;

impl BlockService {
    pub fn new(device: Arc<Device>) -> Result<Arc<BlockService>, String> {
        let info = device.info();
        // The server's device queue exists before the service; its
        // completions find the service through this cell.
        let cell: Arc<std::sync::OnceLock<std::sync::Weak<BlockService>>> = Arc::new(std::sync::OnceLock::new());
        let c2 = cell.clone();
        let server_queue = device.queue(
            "block-server",
            Arc::new(move |batch: &[(u64, DevStatus)]| {
                if let Some(s) = c2.get().and_then(|w| w.upgrade()) {
                    s.device_completed(batch);
                }
            }),
        )?;
        let svc = Arc::new_cyclic(|weak: &std::sync::Weak<BlockService>| BlockService {
            device: device.clone(),
            info,
            server_queue,
            apps: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(1),
            cmds: Mutex::new(HashMap::new()),
            inbox: Mutex::new(VecDeque::new()),
            server_done: Mutex::new(VecDeque::new()),
            server_notify: RwLock::new(Notify::new()),
            next_tag: AtomicU64::new(1),
            has_server: AtomicBool::new(false),
            stats: ServiceStats::default(),
            server_report: Mutex::new(Vec::new()),
            weak: weak.clone(),
        });
        let _ = cell.set(Arc::downgrade(&svc));
        Ok(svc)
    }

    /// Give an app its namespaces. Returns its queue.
    pub fn attach(&self, id: u32, name: &str, namespaces: Vec<Namespace>, depth: u32, mode: Mode, notify: Arc<Notify>) -> Arc<AppBlock> {
        let app = Arc::new(AppBlock {
            id,
            name: name.to_string(),
            namespaces,
            depth: depth.max(1),
            mode: Mutex::new(mode),
            inflight: AtomicU32::new(0),
            completions: Mutex::new(VecDeque::new()),
            notify: RwLock::new(notify),
            direct_queue: Mutex::new(None),
            stats: AppBlockStats::default(),
        });
        self.apps.write().unwrap().insert(id, app.clone());
        self.generation.fetch_add(1, Ordering::SeqCst);
        app
    }

    pub fn apps(&self) -> Vec<Arc<AppBlock>> {
        let mut v: Vec<_> = self.apps.read().unwrap().values().cloned().collect();
        v.sort_by_key(|a| a.id);
        v
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub fn server_notify(&self) -> Arc<Notify> {
        self.server_notify.read().unwrap().clone()
    }

    fn tag(&self) -> u64 {
        let t = self.next_tag.fetch_add(1, Ordering::Relaxed);
        if t >= TAG_LIMIT {
            // 2^53 commands: not in this lifetime of the system.
            self.next_tag.store(1, Ordering::Relaxed);
        }
        t
    }

    /// The queue-full check and routing of an app's batch, all or none.
    pub fn submit(&self, app: &Arc<AppBlock>, cmds: Vec<AppCommand>) -> Result<(), ()> {
        if cmds.is_empty() {
            return Ok(());
        }
        let n = cmds.len() as u32;
        let mut cur = app.inflight.load(Ordering::SeqCst);
        loop {
            if cur.saturating_add(n) > app.depth {
                app.stats.queue_full.fetch_add(1, Ordering::Relaxed);
                return Err(());
            }
            match app.inflight.compare_exchange(cur, cur + n, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        app.stats.submitted.fetch_add(n as u64, Ordering::Relaxed);
        let now = std::time::Instant::now();
        let via_server = app.mode() == Mode::Server && self.has_server.load(Ordering::SeqCst);
        if via_server {
            app.stats.via_server.fetch_add(n as u64, Ordering::Relaxed);
            let mut tags = Vec::with_capacity(cmds.len());
            {
                let mut map = self.cmds.lock().unwrap();
                for c in cmds {
                    let t = self.tag();
                    map.insert(t, Cmd { app: app.clone(), cmd: c, at: Where::Inbox, via_server: true, dev_range: (0, 0), submitted: now });
                    tags.push(t);
                }
            }
            self.inbox.lock().unwrap().extend(tags);
            self.server_notify().notify();
            return Ok(());
        }
        app.stats.direct.fetch_add(n as u64, Ordering::Relaxed);
        let queue = match self.direct_queue(app) {
            Ok(q) => q,
            Err(_) => {
                let fails: Vec<_> = cmds.iter().map(|c| (c.cid, Status::InternalError)).collect();
                app.post(&fails);
                return Ok(());
            }
        };
        let mut refused = Vec::new();
        let mut ops = Vec::with_capacity(cmds.len());
        {
            let mut map = self.cmds.lock().unwrap();
            for c in cmds {
                match check(&c, &app.namespaces, self.info.block_size) {
                    Err(s) => refused.push((c.cid, s)),
                    Ok(range) => {
                        let t = self.tag();
                        let op = device_op(&c, range);
                        map.insert(t, Cmd { app: app.clone(), cmd: c, at: Where::OnDevice, via_server: false, dev_range: range, submitted: now });
                        ops.push((t, op));
                    }
                }
            }
        }
        app.post(&refused);
        if !ops.is_empty() {
            queue.submit(ops);
        }
        Ok(())
    }

    fn direct_queue(&self, app: &Arc<AppBlock>) -> Result<Arc<DevQueue>, String> {
        let mut q = app.direct_queue.lock().unwrap();
        if let Some(q) = &*q {
            return Ok(q.clone());
        }
        // The service holds the app; the queue's callback holds the service weakly.
        let me = self.weak.clone();
        let made = self.device.queue(
            &format!("app-{}", app.name),
            Arc::new(move |batch: &[(u64, DevStatus)]| {
                if let Some(s) = me.upgrade() {
                    s.device_completed(batch);
                }
            }),
        )?;
        *q = Some(made.clone());
        Ok(made)
    }


    /// Switch an app's block path. In-flight commands finish where they are.
    pub fn set_mode(&self, app: &Arc<AppBlock>, to: Mode) -> Result<(), String> {
        if to == Mode::Direct {
            self.direct_queue(app)?;
        }
        *app.mode.lock().unwrap() = to;
        Ok(())
    }

    /// Completions from any device queue: post each to its app, and tell
    /// the server about the ones it forwarded.
    fn device_completed(&self, batch: &[(u64, DevStatus)]) {
        let mut per_app: HashMap<u32, (Arc<AppBlock>, Vec<(u32, Status)>)> = HashMap::new();
        let mut to_server = Vec::new();
        {
            let mut map = self.cmds.lock().unwrap();
            for &(tag, st) in batch {
                let Some(c) = map.remove(&tag) else {
                    self.stats.unknown_tag.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let s: Status = st.into();
                if c.via_server {
                    to_server.push((tag, s));
                }
                c.app.stats.latency(c.submitted);
                per_app.entry(c.app.id).or_insert_with(|| (c.app.clone(), Vec::new())).1.push((c.cmd.cid, s));
            }
        }
        for (_, (app, list)) in per_app {
            app.post(&list);
        }
        if !to_server.is_empty() {
            self.server_done.lock().unwrap().extend(to_server);
            self.server_notify().notify();
        }
    }

    // ---- the block server's side -------------------------------------

    pub fn server_ready(&self) -> bool {
        !self.inbox.lock().unwrap().is_empty() || !self.server_done.lock().unwrap().is_empty()
    }

    pub fn recv(&self, max: u32) -> Vec<ServerRequest> {
        let tags: Vec<u64> = {
            let mut inbox = self.inbox.lock().unwrap();
            let n = (max as usize).min(inbox.len());
            inbox.drain(..n).collect()
        };
        let mut out = Vec::with_capacity(tags.len());
        let mut map = self.cmds.lock().unwrap();
        for t in tags {
            let Some(c) = map.get_mut(&t) else { continue };
            c.at = Where::AtServer;
            let buffer_len = match &c.cmd.buffer {
                Some((b, off)) => b.len().saturating_sub(*off),
                None => 0,
            };
            out.push(ServerRequest { app: c.app.id, tag: t, opcode: c.cmd.opcode, nsid: c.cmd.nsid, slba: c.cmd.slba, nlb: c.cmd.nlb, fua: c.cmd.fua, buffer_len });
        }
        out
    }

    /// The server's checked, translated commands go to the device. The
    /// host checks the translation stays inside the app's namespace (a
    /// buggy server cannot write over a neighbour) and that the buffer
    /// holds the data.
    pub fn forward(&self, cmds: Vec<(u64, u64, u32)>) {
        let mut ops = Vec::with_capacity(cmds.len());
        let mut bad: HashMap<u32, (Arc<AppBlock>, Vec<(u32, Status)>)> = HashMap::new();
        {
            let mut map = self.cmds.lock().unwrap();
            for (tag, slba, nlb) in cmds {
                let Some(c) = map.get_mut(&tag) else {
                    self.stats.unknown_tag.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                if c.at != Where::AtServer {
                    self.stats.bad_forward.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if !forward_ok(&c.cmd, &c.app.namespaces, self.info.block_size, slba, nlb) {
                    self.stats.bad_forward.fetch_add(1, Ordering::Relaxed);
                    let c = map.remove(&tag).expect("present");
                    bad.entry(c.app.id).or_insert_with(|| (c.app.clone(), Vec::new())).1.push((c.cmd.cid, Status::InternalError));
                    continue;
                }
                c.at = Where::OnDevice;
                c.dev_range = (slba, nlb);
                ops.push((tag, device_op(&c.cmd, (slba, nlb))));
            }
        }
        for (_, (app, list)) in bad {
            app.post(&list);
        }
        if !ops.is_empty() {
            self.server_queue.submit(ops);
        }
    }

    /// The server refused these: complete them at once.
    pub fn complete(&self, results: Vec<(u64, Status)>) {
        let mut per_app: HashMap<u32, (Arc<AppBlock>, Vec<(u32, Status)>)> = HashMap::new();
        {
            let mut map = self.cmds.lock().unwrap();
            for (tag, s) in results {
                match map.get(&tag) {
                    Some(c) if c.at == Where::AtServer => {
                        let c = map.remove(&tag).expect("present");
                        c.app.stats.latency(c.submitted);
                        per_app.entry(c.app.id).or_insert_with(|| (c.app.clone(), Vec::new())).1.push((c.cmd.cid, s));
                    }
                    _ => {
                        self.stats.bad_forward.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        for (_, (app, list)) in per_app {
            app.post(&list);
        }
    }

    pub fn server_reap(&self, max: u32) -> Vec<(u64, Status)> {
        let mut q = self.server_done.lock().unwrap();
        let n = (max as usize).min(q.len());
        q.drain(..n).collect()
    }

    /// A server instance ended: what it had taken and not forwarded goes
    /// back to the front of the inbox, in order, for the next one.
    pub fn requeue_at_server(&self) -> usize {
        let mut back: Vec<u64> = {
            let mut map = self.cmds.lock().unwrap();
            map.iter_mut()
                .filter(|(_, c)| c.at == Where::AtServer)
                .map(|(t, c)| {
                    c.at = Where::Inbox;
                    *t
                })
                .collect()
        };
        back.sort_unstable();
        let n = back.len();
        if n > 0 {
            let mut inbox = self.inbox.lock().unwrap();
            for t in back.into_iter().rev() {
                inbox.push_front(t);
            }
            self.stats.requeued.fetch_add(n as u64, Ordering::Relaxed);
        }
        self.server_done.lock().unwrap().clear();
        n
    }

    /// Commands by where they are: (inbox, at the server, on a device).
    pub fn census(&self) -> (usize, usize, usize) {
        let map = self.cmds.lock().unwrap();
        let mut c = (0, 0, 0);
        for cmd in map.values() {
            match cmd.at {
                Where::Inbox => c.0 += 1,
                Where::AtServer => c.1 += 1,
                Where::OnDevice => c.2 += 1,
            }
        }
        c
    }
}

/// The namespace an app's command names.
fn namespace<'a>(nss: &'a [Namespace], nsid: u32) -> Option<&'a Namespace> {
    nss.iter().find(|n| n.nsid == nsid)
}

/// Check a command against the app's namespace, as the device does in
/// direct mode (the block server does the same in server mode), and
/// translate it to device blocks.
pub fn check(c: &AppCommand, nss: &[Namespace], dev_block: u32) -> Result<(u64, u32), Status> {
    let Some(ns) = namespace(nss, c.nsid) else { return Err(Status::InvalidNamespace) };
    if c.opcode == Opcode::Flush {
        return Ok((0, 0));
    }
    if c.opcode != Opcode::Read && ns.read_only {
        return Err(Status::WriteToReadOnly);
    }
    if c.nlb == 0 || c.nlb > ns.max_transfer_blocks {
        return Err(Status::InvalidField);
    }
    if c.slba.checked_add(c.nlb as u64).is_none_or(|end| end > ns.blocks) {
        return Err(Status::LbaOutOfRange);
    }
    let bytes = c.nlb as u64 * ns.block_size as u64;
    if matches!(c.opcode, Opcode::Read | Opcode::Write) {
        match &c.buffer {
            Some((b, off)) if (*off as u64) + bytes <= b.len() as u64 => {}
            _ => return Err(Status::InvalidField),
        }
    }
    let k = (ns.block_size / dev_block) as u64;
    Ok((ns.first_lba + c.slba * k, (c.nlb as u64 * k) as u32))
}

/// Whether a server's translation of `c` stays in the app's namespace and
/// moves exactly the command's bytes.
fn forward_ok(c: &AppCommand, nss: &[Namespace], dev_block: u32, slba: u64, nlb: u32) -> bool {
    match check(c, nss, dev_block) {
        Ok(_) if c.opcode == Opcode::Flush => true,
        Ok((s, n)) => s == slba && n == nlb,
        Err(_) => false,
    }
}

fn device_op(c: &AppCommand, (lba, nlb): (u64, u32)) -> Op {
    match c.opcode {
        Opcode::Read => {
            let (buf, off) = c.buffer.clone().expect("checked");
            Op::Read { lba, nlb, buf, off }
        }
        Opcode::Write => {
            let (buf, off) = c.buffer.clone().expect("checked");
            Op::Write { lba, nlb, buf, off, fua: c.fua }
        }
        Opcode::Flush => Op::Flush,
        Opcode::Deallocate => Op::Deallocate { lba, nlb },
        Opcode::WriteZeroes => Op::WriteZeroes { lba, nlb, fua: c.fua },
    }
}
