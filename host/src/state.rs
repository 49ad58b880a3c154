//! The state of one component instance (its Store's data) and the host's
//! side of the interfaces it imports.

use crate::bindings::libretto::io::buffers as wit_buffers;
use crate::bindings::libretto::net::{link as wit_link, portmap as wit_portmap, types as wit_types};
use crate::bindings::libretto::system::bench_host;
use crate::buffers::{BufError, Buffer, ByteQueue};
use crate::link::{tx_frame_valid, HeldFrames, LinkSlot};
use crate::portmap::{AppId, BindError, PortPolicy, Portmap, Proto};
use crate::codec;
use crate::ring::{Frame, Wake};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{Result, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The host's monotonic clock origin; `now` counts from here.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Where every component's clock starts (`now`, in ns). Zero unless
/// `LIBRETTO_CLOCK_OFFSET_NS` says otherwise: tests start it past 2^53 (a
/// host up 104 days) to run whole systems with times that a JavaScript
/// number no longer holds to the nanosecond.
pub fn clock_offset() -> Result<u64, String> {
    static OFFSET: OnceLock<Result<u64, String>> = OnceLock::new();
    OFFSET
        .get_or_init(|| match std::env::var("LIBRETTO_CLOCK_OFFSET_NS") {
            Err(_) => Ok(0),
            Ok(v) => match v.trim().parse::<u64>() {
                Ok(n) if n <= u64::MAX / 2 => Ok(n),
                _ => Err(format!("LIBRETTO_CLOCK_OFFSET_NS={v}: not a number of nanoseconds from 0 to 2^63")),
            },
        })
        .clone()
}

pub fn now_ns() -> u64 {
    clock_offset().unwrap_or(0) + epoch().elapsed().as_nanos() as u64
}

/// A component's place in the portmap.
#[derive(Clone)]
pub struct PortmapGrant {
    pub map: Arc<Portmap>,
    pub app: AppId,
    pub policy: PortPolicy,
}

/// Counters the host keeps per component.
#[derive(Default)]
pub struct HostCounters {
    pub release_unknown: AtomicU64,
    pub tx_invalid: AtomicU64,
    pub tx_full: AtomicU64,
    pub tx_frames: AtomicU64,
    pub rx_frames: AtomicU64,
}

/// What a component instance may reach, set by whoever starts it.
pub struct Ctx {
    pub name: String,
    pub table: ResourceTable,
    pub wasi: WasiCtx,
    pub limits: StoreLimits,
    pub link: Option<LinkSlot>,
    pub held: HeldFrames,
    pub portmap: Option<PortmapGrant>,
    pub counters: Arc<HostCounters>,
    /// Arguments for `libretto:io/host.args`.
    pub args: Vec<(String, String)>,
    /// Where `log` lines go (stderr by default).
    pub log: Arc<dyn Fn(&str, &str) + Send + Sync>,
    /// The switch, for the network server.
    pub switch: Option<Arc<crate::switch::Switch>>,
    /// Frames the network server holds, with the port each came from.
    pub server_held: crate::switch::ServerHeld,
    /// The app's block queue, if the manifest gives it namespaces.
    pub block: Option<crate::block::wit::BlockGrant>,
    /// The block service, for the block server.
    pub block_server: Option<crate::block::wit::BlockServerGrant>,
}

impl Ctx {
    pub fn new(name: impl Into<String>) -> Ctx {
        Ctx {
            name: name.into(),
            table: ResourceTable::new(),
            wasi: WasiCtx::builder().inherit_stderr().build(),
            limits: wasmtime::StoreLimitsBuilder::new().memory_size(1 << 30).instances(64).build(),
            link: None,
            held: HeldFrames::new(8192),
            portmap: None,
            counters: Arc::new(HostCounters::default()),
            args: Vec::new(),
            log: Arc::new(|name: &str, line: &str| eprintln!("[{name}] {line}")),
            switch: None,
            server_held: crate::link::HeldFrames::new(4096),
            block: None,
            block_server: None,
        }
    }

    fn link(&self) -> Result<&LinkSlot> {
        self.link
            .as_ref()
            .ok_or_else(|| wasmtime::format_err!("component `{}` has no link bound", self.name))
    }
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

fn buf_err(e: BufError) -> wit_buffers::BufferError {
    match e {
        BufError::OutOfRange => wit_buffers::BufferError::OutOfRange,
        BufError::NoMemory => wit_buffers::BufferError::NoMemory,
    }
}

// ---- libretto:io/buffers -------------------------------------------------

impl wit_buffers::Host for Ctx {}

impl wit_buffers::HostBuffer for Ctx {
    fn create(&mut self, len: u32) -> Result<Result<Resource<Buffer>, wit_buffers::BufferError>> {
        Ok(match Buffer::new(len) {
            Ok(b) => Ok(self.table.push(b)?),
            Err(e) => Err(buf_err(e)),
        })
    }
    fn len(&mut self, b: Resource<Buffer>) -> Result<u32> {
        Ok(self.table.get(&b)?.len())
    }
    fn read(&mut self, b: Resource<Buffer>, offset: u32, len: u32) -> Result<Result<Vec<u8>, wit_buffers::BufferError>> {
        Ok(self.table.get(&b)?.read(offset, len).map_err(buf_err))
    }
    fn write(&mut self, b: Resource<Buffer>, offset: u32, data: Vec<u8>) -> Result<Result<(), wit_buffers::BufferError>> {
        Ok(self.table.get(&b)?.write(offset, &data).map_err(buf_err))
    }
    fn drop(&mut self, b: Resource<Buffer>) -> Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl wit_buffers::HostByteQueue for Ctx {
    fn new(&mut self, capacity: u32) -> Result<Resource<ByteQueue>> {
        match ByteQueue::new(capacity) {
            Ok(q) => Ok(self.table.push(q)?),
            // A constructor cannot return an error in WIT; asking for more
            // than the documented limit is a bug in the component.
            Err(_) => wasmtime::bail!("byte-queue capacity {capacity} is above the 64 MiB limit"),
        }
    }
    fn capacity(&mut self, q: Resource<ByteQueue>) -> Result<u32> {
        Ok(self.table.get(&q)?.capacity())
    }
    fn head(&mut self, q: Resource<ByteQueue>) -> Result<u64> {
        Ok(self.table.get(&q)?.head())
    }
    fn tail(&mut self, q: Resource<ByteQueue>) -> Result<u64> {
        Ok(self.table.get(&q)?.tail())
    }
    fn append(&mut self, q: Resource<ByteQueue>, data: Vec<u8>) -> Result<u32> {
        Ok(self.table.get(&q)?.append(&data))
    }
    fn splice(&mut self, q: Resource<ByteQueue>, src: Resource<ByteQueue>, len: u32) -> Result<u32> {
        let dst = self.table.get(&q)?;
        let src = self.table.get(&src)?;
        Ok(dst.splice_from(src, len))
    }
    fn read(&mut self, q: Resource<ByteQueue>, max: u32) -> Result<Vec<u8>> {
        Ok(self.table.get(&q)?.read(max))
    }
    fn peek(&mut self, q: Resource<ByteQueue>, at: u64, len: u32) -> Result<Result<Vec<u8>, wit_buffers::BufferError>> {
        let mut out = Vec::new();
        Ok(self.table.get(&q)?.copy_range(at, len, &mut out).map(|_| out).map_err(buf_err))
    }
    fn write_at(&mut self, q: Resource<ByteQueue>, at: u64, data: Vec<u8>) -> Result<Result<(), wit_buffers::BufferError>> {
        Ok(self.table.get(&q)?.write_at(at, &data).map_err(buf_err))
    }
    fn advance_tail(&mut self, q: Resource<ByteQueue>, to: u64) -> Result<Result<(), wit_buffers::BufferError>> {
        Ok(self.table.get(&q)?.advance_tail(to).map_err(buf_err))
    }
    fn release(&mut self, q: Resource<ByteQueue>, to: u64) -> Result<Result<(), wit_buffers::BufferError>> {
        Ok(self.table.get(&q)?.release(to).map_err(buf_err))
    }
    fn read_into(&mut self, q: Resource<ByteQueue>, dst: Resource<Buffer>, offset: u32, max: u32) -> Result<Result<u32, wit_buffers::BufferError>> {
        let dst = self.table.get(&dst)?.clone();
        Ok(self.table.get(&q)?.read_into(&dst, offset, max).map_err(buf_err))
    }
    fn append_buffer(&mut self, q: Resource<ByteQueue>, src: Resource<Buffer>, offset: u32, len: u32) -> Result<Result<u32, wit_buffers::BufferError>> {
        let b = self.table.get(&src)?.clone();
        Ok(self.table.get(&q)?.append_from_buffer(&b, offset, len).map_err(buf_err))
    }
    fn fill(&mut self, q: Resource<ByteQueue>, seed: u64, len: u32) -> Result<u32> {
        Ok(self.table.get(&q)?.fill(seed, len))
    }
    fn track_digest(&mut self, q: Resource<ByteQueue>) -> Result<()> {
        self.table.get(&q)?.track_digest();
        Ok(())
    }
    fn digest(&mut self, q: Resource<ByteQueue>) -> Result<(Vec<u8>, u64)> {
        Ok(self.table.get(&q)?.digest())
    }
    fn drop(&mut self, q: Resource<ByteQueue>) -> Result<()> {
        self.table.delete(q)?;
        Ok(())
    }
}

// ---- libretto:net/types and link -----------------------------------------

impl wit_types::Host for Ctx {}

/// Turn a deadline in host nanoseconds into an Instant; None if it is so
/// far away that it means "no deadline".
pub fn deadline_instant(deadline_ns: u64) -> Option<Instant> {
    const FAR_NS: u64 = 365 * 24 * 3600 * 1_000_000_000;
    let now = now_ns();
    if deadline_ns <= now {
        return Some(Instant::now());
    }
    let wait = deadline_ns - now;
    if wait > FAR_NS {
        return None;
    }
    Some(Instant::now() + Duration::from_nanos(wait))
}

pub fn wake_to_wit(w: Wake) -> wit_types::WakeReason {
    match w {
        Wake::Ready => wit_types::WakeReason::Ready,
        Wake::Timeout => wit_types::WakeReason::Timeout,
        Wake::Stop => wit_types::WakeReason::Stop,
    }
}

impl wit_link::Host for Ctx {
    fn info(&mut self) -> Result<wit_link::LinkInfo> {
        let port = self.link()?.get();
        let i = &port.info;
        Ok(wit_link::LinkInfo {
            mac: i.mac,
            mtu: i.mtu,
            max_frame: i.max_frame,
            offloads: wit_types::OffloadCaps { tx_csum: i.caps.tx_csum, tso: i.caps.tso, rx_csum: i.caps.rx_csum, lro: i.caps.lro },
            head_bytes: i.head_bytes,
            max_batch: i.max_batch,
        })
    }

    fn recv(&mut self, max: u32) -> Result<Vec<u8>> {
        let port = self.link()?.get();
        let n = (max as usize).min(port.info.max_batch as usize).min(self.held.room());
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut frames = Vec::with_capacity(n);
        port.rx.pop_batch(n, &mut frames);
        let head_bytes = port.info.head_bytes as usize;
        let mut out = Vec::with_capacity(frames.len() * (codec::RX_DESC_LEN + head_bytes));
        let count = frames.len() as u64;
        for f in frames {
            // The id is known only once the frame is held; write the
            // descriptor from a borrow of the held copy.
            let id = self.held.insert(f);
            codec::put_rx(&mut out, id, self.held.get(id).expect("just inserted"), head_bytes);
        }
        self.counters.rx_frames.fetch_add(count, Ordering::Relaxed);
        Ok(out)
    }

    fn place(&mut self, blob: Vec<u8>, queues: Vec<Resource<ByteQueue>>) -> Result<Result<(), wit_link::PlaceError>> {
        let fail = |index: usize, reason| Ok(Err(wit_link::PlaceError { index: index as u32, reason }));
        let Some(list) = codec::placements(&blob) else {
            return fail(0, wit_link::PlaceFailure::Malformed);
        };
        for (i, p) in list.iter().enumerate() {
            let Some(frame) = self.held.get(p.frame) else {
                return fail(i, wit_link::PlaceFailure::UnknownFrame);
            };
            let end = p.offset as u64 + p.len as u64;
            if end > frame.data.len() as u64 {
                return fail(i, wit_link::PlaceFailure::OutOfRange);
            }
            let Some(q) = queues.get(p.queue as usize) else {
                return fail(i, wit_link::PlaceFailure::QueueFull);
            };
            let q = self.table.get(q)?;
            if q.write_at(p.at, &frame.data[p.offset as usize..end as usize]).is_err() {
                return fail(i, wit_link::PlaceFailure::QueueFull);
            }
        }
        Ok(Ok(()))
    }

    fn release(&mut self, frames: Vec<u32>) -> Result<()> {
        let mut unknown = 0;
        for id in frames {
            if self.held.take(id).is_none() {
                unknown += 1;
            }
        }
        if unknown > 0 {
            self.counters.release_unknown.fetch_add(unknown, Ordering::Relaxed);
        }
        Ok(())
    }

    fn send(&mut self, blob: Vec<u8>, queues: Vec<Resource<ByteQueue>>) -> Result<wit_link::SendReport> {
        let port = self.link()?.get();
        let mut out = Vec::new();
        let mut invalid = 0u32;
        'frames: for desc in codec::tx_iter(&blob) {
            let Ok(d) = desc else {
                invalid += 1;
                break;
            };
            let Some(offload) = d.offload else {
                invalid += 1;
                continue;
            };
            let total = d.head.len() as u64 + d.chunks.iter().map(|c| c.len as u64).sum::<u64>();
            if total > port.info.max_frame as u64 {
                invalid += 1;
                continue;
            }
            let mut data = Vec::with_capacity(total as usize);
            data.extend_from_slice(d.head);
            for c in &d.chunks {
                let ok = match c.src {
                    codec::ChunkSource::Queue(i) => match queues.get(i as usize) {
                        Some(q) => self.table.get(q)?.copy_range(c.offset, c.len, &mut data).is_ok(),
                        None => false,
                    },
                    codec::ChunkSource::Frame(id) => match self.held.get(id) {
                        Some(src) if c.offset.checked_add(c.len as u64).is_some_and(|e| e <= src.data.len() as u64) => {
                            data.extend_from_slice(&src.data[c.offset as usize..c.offset as usize + c.len as usize]);
                            true
                        }
                        _ => false,
                    },
                };
                if !ok {
                    invalid += 1;
                    continue 'frames;
                }
            }
            if !tx_frame_valid(data.len(), &offload, &port.info) {
                invalid += 1;
                continue;
            }
            out.push(Frame { data, offload });
        }
        let attempted = out.len() as u32;
        let sent = port.tx.push_batch(out) as u32;
        let full = attempted - sent;
        self.counters.tx_frames.fetch_add(sent as u64, Ordering::Relaxed);
        self.counters.tx_invalid.fetch_add(invalid as u64, Ordering::Relaxed);
        self.counters.tx_full.fetch_add(full as u64, Ordering::Relaxed);
        Ok(wit_link::SendReport { sent, dropped_full: full, dropped_invalid: invalid })
    }

    fn wait(&mut self, deadline_ns: u64) -> Result<wit_types::WakeReason> {
        let slot = self.link()?.clone();
        let deadline = deadline_instant(deadline_ns);
        // Block completions wake the app too: its stack waits here for both.
        let block = self.block.as_ref().map(|g| g.app.clone());
        let w = slot.notify.wait_until(deadline, || !slot.get().rx.is_empty() || block.as_ref().is_some_and(|b| b.pending() > 0));
        Ok(wake_to_wit(w))
    }

    fn now(&mut self) -> Result<u64> {
        Ok(now_ns())
    }
}

// ---- libretto:net/portmap ------------------------------------------------

fn proto(p: wit_types::Protocol) -> Proto {
    match p {
        wit_types::Protocol::Tcp => Proto::Tcp,
        wit_types::Protocol::Udp => Proto::Udp,
    }
}

fn bind_err(e: BindError) -> wit_portmap::BindError {
    match e {
        BindError::InUse => wit_portmap::BindError::InUse,
        BindError::Forbidden => wit_portmap::BindError::Forbidden,
        BindError::Exhausted => wit_portmap::BindError::Exhausted,
        BindError::Invalid => wit_portmap::BindError::Invalid,
    }
}

impl Ctx {
    fn grant(&self) -> Result<&PortmapGrant> {
        self.portmap
            .as_ref()
            .ok_or_else(|| wasmtime::format_err!("component `{}` has no portmap grant", self.name))
    }
}

impl wit_portmap::Host for Ctx {
    fn bind(&mut self, p: wit_types::Protocol, port: u16) -> Result<Result<(), wit_portmap::BindError>> {
        let g = self.grant()?;
        Ok(g.map.bind(g.app, &g.policy, proto(p), port).map_err(bind_err))
    }
    fn bind_ephemeral(&mut self, p: wit_types::Protocol) -> Result<Result<u16, wit_portmap::BindError>> {
        let g = self.grant()?;
        Ok(g.map.bind_ephemeral(g.app, &g.policy, proto(p)).map_err(bind_err))
    }
    fn unbind(&mut self, p: wit_types::Protocol, port: u16) -> Result<bool> {
        let g = self.grant()?;
        Ok(g.map.unbind(g.app, proto(p), port))
    }
}

// ---- libretto:io/host ------------------------------------------------------

impl crate::bindings::libretto::io::host::Host for Ctx {
    fn args(&mut self) -> Result<Vec<(String, String)>> {
        Ok(self.args.clone())
    }
    fn log(&mut self, line: String) -> Result<()> {
        let mut end = line.len().min(4096);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        (self.log)(&self.name, &line[..end]);
        Ok(())
    }
    fn stopping(&mut self) -> Result<bool> {
        let link = self.link.as_ref().map(|l| l.notify.stopping()).unwrap_or(false);
        let server = self.switch.as_ref().map(|s| s.server_notify().stopping()).unwrap_or(false);
        let block = self.block_server.as_ref().map(|b| b.control.stop.load(std::sync::atomic::Ordering::SeqCst)).unwrap_or(false);
        Ok(link || server || block)
    }
    fn random(&mut self, len: u32) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len.min(4096) as usize];
        use std::io::Read;
        std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf))?;
        Ok(buf)
    }
}

// ---- libretto:system/bench-host ------------------------------------------

impl bench_host::Host for Ctx {
    fn noop(&mut self) -> Result<()> {
        Ok(())
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // A component that ends (or traps) gives its ports back.
        if let Some(g) = &self.portmap {
            g.map.release_app(g.app);
        }
    }
}

// ---- libretto:system/probe-host (boundary tests only) ---------------------

use crate::bindings::libretto::system::{probe_host, probe_types};

impl probe_types::Host for Ctx {}

fn parse_dec<T: std::str::FromStr>(s: &str) -> Result<T> {
    s.parse::<T>().map_err(|_| wasmtime::format_err!("probe-host: `{s}` is not a decimal of the right width"))
}

impl probe_host::Host for Ctx {
    fn show_u32(&mut self, x: u32) -> Result<String> {
        Ok(x.to_string())
    }
    fn show_u64(&mut self, x: u64) -> Result<String> {
        Ok(x.to_string())
    }
    fn show_wide(&mut self, w: probe_types::Wide) -> Result<String> {
        let (a, b, c, d) = w.ip;
        Ok(format!("{} {} {a}.{b}.{c}.{d} {}", w.a32, w.b64, w.mac))
    }
    fn show_u32s(&mut self, v: Vec<u32>) -> Result<String> {
        Ok(v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" "))
    }
    fn give_u32(&mut self, d: String) -> Result<u32> {
        parse_dec(&d)
    }
    fn give_u64(&mut self, d: String) -> Result<u64> {
        parse_dec(&d)
    }
    fn give_wide(&mut self, a32: String, b64: String, ip: String, mac: String) -> Result<probe_types::Wide> {
        let ip: u32 = parse_dec(&ip)?;
        let [a, b, c, d] = ip.to_be_bytes();
        Ok(probe_types::Wide { a32: parse_dec(&a32)?, b64: parse_dec(&b64)?, ip: (a, b, c, d), mac: parse_dec(&mac)? })
    }
    fn give_u32s(&mut self, d: Vec<String>) -> Result<Vec<u32>> {
        d.iter().map(|s| parse_dec(s)).collect()
    }
}
