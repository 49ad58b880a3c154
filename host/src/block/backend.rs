//! The block device backend: a regular file or a Linux block device,
//! opened with O_DIRECT and driven through io_uring.
//!
//! A [`Device`] is the opened file and what it reports (block size, size,
//! queue depth, largest transfer). Each [`DevQueue`] is one io_uring of the
//! device's own, served by one thread: the block server's shared queue is
//! one, every direct-mode app gets another, so an app in direct mode never
//! waits behind the server's commands. `submit` only queues the commands
//! and wakes the thread through an eventfd that the ring itself is reading,
//! so the thread sleeps in one place (`io_uring_enter`) for both new
//! commands and completions.
//!
//! Data: O_DIRECT needs aligned memory, and the components' buffers are
//! plain host memory, so each in-flight command has an aligned bounce
//! buffer of its slot (reused, grown on demand); one memcpy inside the host,
//! no crossing. FUA is `RWF_DSYNC` on that one write; FLUSH is
//! `fdatasync` (IORING_OP_FSYNC with DATASYNC); DEALLOCATE punches a hole;
//! WRITE ZEROES is `fallocate(FALLOC_FL_ZERO_RANGE)`, falling back to
//! writing zeroes where the file system cannot. Every failure becomes a
//! status on the command's completion, never a panic.
//!
//! Fault injection for the crash test: `LIBRETTO_BLOCK_FAULT=skip-flush`
//! makes the backend lie the way a bad drive does: it acknowledges writes
//! and flushes at once and performs the writes a while later, so a SIGKILL
//! loses data that was acknowledged as durable.

use crate::buffers::Buffer;
use io_uring::{IoUring, opcode, types};
use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct DeviceConfig {
    pub path: PathBuf,
    pub read_only: bool,
    /// Open with O_DIRECT (the default); off for file systems without it.
    pub direct: bool,
    pub queue_depth: u32,
}

#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub block_size: u32,
    pub blocks: u64,
    pub max_transfer_bytes: u32,
    pub queue_depth: u32,
    pub deallocate: bool,
    pub volatile_write_cache: bool,
}

pub enum Op {
    Read { lba: u64, nlb: u32, buf: Buffer, off: u32 },
    Write { lba: u64, nlb: u32, buf: Buffer, off: u32, fua: bool },
    Flush,
    Deallocate { lba: u64, nlb: u32 },
    WriteZeroes { lba: u64, nlb: u32, fua: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Success,
    InvalidField,
    LbaOutOfRange,
    InternalError,
}

pub type OnComplete = Arc<dyn Fn(&[(u64, Status)]) + Send + Sync>;

/// The largest command the backend takes (NVMe's MDTS of a typical drive).
pub const MAX_TRANSFER: u32 = 1 << 20;
const ALIGN: usize = 4096;
const BLKSSZGET: libc::c_ulong = 0x1268;
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;
const FALLOC_FL_ZERO_RANGE: i32 = 0x10;
/// How long the skip-flush fault holds an acknowledged write.
const FAULT_DELAY: Duration = Duration::from_millis(400);

#[derive(Default)]
struct DevStats {
    reads: AtomicU64,
    writes: AtomicU64,
    flushes: AtomicU64,
    deallocates: AtomicU64,
    write_zeroes: AtomicU64,
    read_bytes: AtomicU64,
    written_bytes: AtomicU64,
    fua_writes: AtomicU64,
    errors: AtomicU64,
    queues: AtomicU64,
}

pub struct Device {
    file: File,
    info: DeviceInfo,
    skip_flush: bool,
    read_only: bool,
    /// Opened with O_DIRECT: in-place I/O needs aligned memory.
    o_direct: bool,
    stats: DevStats,
}

/// One io_uring on the device, served by a thread of its own.
pub struct DevQueue {
    shared: Arc<QueueShared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

struct QueueShared {
    pending: Mutex<VecDeque<(u64, Op)>>,
    wake: OwnedFd,
    closed: AtomicBool,
    in_flight: AtomicUsize,
}

impl Device {
    pub fn open(cfg: DeviceConfig) -> Result<Arc<Device>, String> {
        let name = cfg.path.display().to_string();
        let mut opts = OpenOptions::new();
        opts.read(true).write(!cfg.read_only);
        if cfg.direct {
            opts.custom_flags(libc::O_DIRECT);
        }
        let file = opts.open(&cfg.path).map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) if cfg.direct => format!("{name}: the file system does not support O_DIRECT (set \"direct_io\": false)"),
            _ => format!("{name}: {e}"),
        })?;
        let meta = file.metadata().map_err(|e| format!("{name}: {e}"))?;
        let is_block_device = meta.file_type().is_block_device();
        let (mut block_size, bytes) = if is_block_device {
            let mut lbs: libc::c_int = 0;
            let mut size: u64 = 0;
            // SAFETY: both ioctls write one integer of the given type.
            let ok = unsafe { libc::ioctl(file.as_raw_fd(), BLKSSZGET, &mut lbs) == 0 && libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size) == 0 };
            if !ok {
                return Err(format!("{name}: cannot read the block device's geometry: {}", std::io::Error::last_os_error()));
            }
            (lbs as u32, size)
        } else if meta.file_type().is_file() {
            (512, meta.len())
        } else {
            return Err(format!("{name}: not a regular file or a block device"));
        };
        // O_DIRECT on a file: find the smallest transfer the file system
        // takes (512 on most, 4096 on some).
        if cfg.direct && !is_block_device && bytes >= 4096 {
            let probe = AlignedBuf::new(4096);
            for bs in [512u32, 4096] {
                // SAFETY: probe holds 4096 writable bytes.
                let r = unsafe { libc::pread(file.as_raw_fd(), probe.ptr as *mut libc::c_void, bs as usize, 0) };
                if r >= 0 {
                    block_size = bs;
                    break;
                }
                block_size = 0;
            }
            if block_size == 0 {
                return Err(format!("{name}: O_DIRECT reads fail here (set \"direct_io\": false)"));
            }
        }
        if block_size == 0 || bytes < block_size as u64 {
            return Err(format!("{name}: {bytes} bytes is too small for a device"));
        }
        let skip_flush = std::env::var("LIBRETTO_BLOCK_FAULT").map(|v| v == "skip-flush").unwrap_or(false);
        if skip_flush {
            eprintln!("libretto: block: LIBRETTO_BLOCK_FAULT=skip-flush: {name} acknowledges writes and flushes before they are durable");
        }
        let info = DeviceInfo {
            block_size,
            blocks: bytes / block_size as u64,
            max_transfer_bytes: MAX_TRANSFER,
            queue_depth: cfg.queue_depth.clamp(1, 4096),
            deallocate: true,
            volatile_write_cache: skip_flush,
        };
        Ok(Arc::new(Device { file, info, skip_flush, read_only: cfg.read_only, o_direct: cfg.direct, stats: DevStats::default() }))
    }

    pub fn info(&self) -> DeviceInfo {
        self.info.clone()
    }

    /// A new queue: an io_uring and its thread. `on_complete` runs on that
    /// thread with each batch of completions.
    pub fn queue(self: &Arc<Self>, name: &str, on_complete: OnComplete) -> Result<Arc<DevQueue>, String> {
        let depth = self.info.queue_depth;
        let ring = IoUring::new((depth + 1).next_power_of_two()).map_err(|e| format!("io_uring for {name}: {e}"))?;
        // SAFETY: eventfd returns a new descriptor or -1.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(format!("eventfd for {name}: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: efd is a fresh descriptor we own.
        let wake = unsafe { OwnedFd::from_raw_fd(efd) };
        let shared = Arc::new(QueueShared { pending: Mutex::new(VecDeque::new()), wake, closed: AtomicBool::new(false), in_flight: AtomicUsize::new(0) });
        let dev = self.clone();
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("block-{name}"))
            .spawn(move || Worker::new(dev, sh, ring, on_complete).run())
            .map_err(|e| format!("thread for {name}: {e}"))?;
        self.stats.queues.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(DevQueue { shared, thread: Mutex::new(Some(thread)) }))
    }

    pub fn stats(&self) -> Vec<(String, u64)> {
        let s = &self.stats;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("reads".into(), g(&s.reads)),
            ("writes".into(), g(&s.writes)),
            ("fua_writes".into(), g(&s.fua_writes)),
            ("flushes".into(), g(&s.flushes)),
            ("deallocates".into(), g(&s.deallocates)),
            ("write_zeroes".into(), g(&s.write_zeroes)),
            ("read_bytes".into(), g(&s.read_bytes)),
            ("written_bytes".into(), g(&s.written_bytes)),
            ("errors".into(), g(&s.errors)),
            ("queues".into(), g(&s.queues)),
        ]
    }
}

impl DevQueue {
    /// Queue commands; each completes, in time, through `on_complete`.
    pub fn submit(&self, ops: Vec<(u64, Op)>) {
        if ops.is_empty() {
            return;
        }
        self.shared.in_flight.fetch_add(ops.len(), Ordering::SeqCst);
        self.shared.pending.lock().unwrap().extend(ops);
        self.shared.kick();
    }

    /// Commands queued or on the device.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Finish what is queued and in flight, then stop the thread.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.kick();
        if let Some(t) = self.thread.lock().unwrap().take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for DevQueue {
    fn drop(&mut self) {
        self.close();
    }
}

impl QueueShared {
    fn kick(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a local to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), &one as *const u64 as *const libc::c_void, 8) };
    }
}

/// Page-aligned memory for O_DIRECT.
struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the buffer is plain memory owned by one slot at a time.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let len = len.max(ALIGN).next_multiple_of(ALIGN);
        // SAFETY: non-zero size, valid alignment.
        let ptr = unsafe { alloc_zeroed(Layout::from_size_align(len, ALIGN).unwrap()) };
        assert!(!ptr.is_null(), "out of memory for a block buffer");
        AlignedBuf { ptr, len }
    }
    fn slice(&self, n: usize) -> &[u8] {
        // SAFETY: n <= len, checked by callers through ensure().
        unsafe { std::slice::from_raw_parts(self.ptr, n) }
    }
    fn slice_mut(&mut self, n: usize) -> &mut [u8] {
        // SAFETY: as above, and we hold &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, n) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in new() with this layout.
        unsafe { dealloc(self.ptr, Layout::from_size_align(self.len, ALIGN).unwrap()) };
    }
}

/// What a slot's command does when the ring completes it.
enum Pending {
    Free,
    Read { tag: u64, buf: Buffer, off: u32, len: usize },
    Write { tag: u64, len: usize },
    /// Straight into or out of the component's buffer, which the slot
    /// keeps alive until the kernel is done with it.
    InPlace { tag: u64, len: usize, read: bool, _buf: Buffer },
    /// Writes held by the skip-flush fault: nobody waits for them.
    Deferred { len: usize },
    Other { tag: u64, zeroes: Option<(u64, usize, bool)> },
}

struct Slot {
    what: Pending,
    bounce: Option<AlignedBuf>,
}

const WAKE: u64 = u64::MAX;
const TICK: u64 = u64::MAX - 1;

struct Worker {
    dev: Arc<Device>,
    shared: Arc<QueueShared>,
    ring: IoUring,
    on_complete: OnComplete,
    slots: Vec<Slot>,
    free: Vec<usize>,
    wake_buf: &'static mut u64,
    wake_armed: bool,
    tick_armed: bool,
    tick_ts: Box<types::Timespec>,
    /// Held writes of the skip-flush fault, due at their instant.
    deferred: VecDeque<(Instant, u64, Vec<u8>)>,
    done: Vec<(u64, Status)>,
}

impl Worker {
    fn new(dev: Arc<Device>, shared: Arc<QueueShared>, ring: IoUring, on_complete: OnComplete) -> Worker {
        let depth = dev.info.queue_depth as usize;
        let slots = (0..depth).map(|_| Slot { what: Pending::Free, bounce: None }).collect();
        Worker {
            dev,
            shared,
            ring,
            on_complete,
            slots,
            free: (0..depth).rev().collect(),
            wake_buf: Box::leak(Box::new(0)),
            wake_armed: false,
            tick_armed: false,
            tick_ts: Box::new(types::Timespec::new().nsec(50_000_000)),
            deferred: VecDeque::new(),
            done: Vec::new(),
        }
    }

    fn fd(&self) -> types::Fd {
        types::Fd(self.dev.file.as_raw_fd())
    }

    fn push(&mut self, e: io_uring::squeue::Entry) {
        // SAFETY: every pointer in an entry stays valid until its
        // completion: bounce buffers live in their slot, wake_buf and
        // tick_ts in boxes owned by self.
        unsafe {
            while self.ring.submission().push(&e).is_err() {
                self.ring.submit().expect("io_uring submit");
            }
        }
    }

    fn run(mut self) {
        loop {
            if !self.wake_armed {
                let e = opcode::Read::new(types::Fd(self.shared.wake.as_raw_fd()), &mut *self.wake_buf as *mut u64 as *mut u8, 8).build().user_data(WAKE);
                self.push(e);
                self.wake_armed = true;
            }
            self.start_deferred();
            self.start_pending();
            if !self.deferred.is_empty() && !self.tick_armed {
                let e = opcode::Timeout::new(&*self.tick_ts as *const types::Timespec).build().user_data(TICK);
                self.push(e);
                self.tick_armed = true;
            }
            let busy = self.slots.len() - self.free.len();
            if self.shared.closed.load(Ordering::SeqCst) && busy == 0 && self.deferred.is_empty() && self.shared.pending.lock().unwrap().is_empty() {
                break;
            }
            if let Err(e) = self.ring.submit_and_wait(1) {
                if e.raw_os_error() != Some(libc::EINTR) {
                    eprintln!("libretto: block: io_uring: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            let cqes: Vec<(u64, i32)> = self.ring.completion().map(|c| (c.user_data(), c.result())).collect();
            for (ud, res) in cqes {
                match ud {
                    WAKE => self.wake_armed = false,
                    TICK => self.tick_armed = false,
                    slot => self.finish(slot as usize, res),
                }
            }
            if !self.done.is_empty() {
                let done = std::mem::take(&mut self.done);
                self.shared.in_flight.fetch_sub(done.len(), Ordering::SeqCst);
                (self.on_complete)(&done);
            }
        }
        // The eventfd read may still be armed: its 8-byte target is leaked
        // (see new()) so the kernel never writes into freed memory.
    }

    fn bounce(&mut self, slot: usize, len: usize) -> &mut AlignedBuf {
        let s = &mut self.slots[slot];
        if s.bounce.as_ref().is_none_or(|b| b.len < len) {
            s.bounce = Some(AlignedBuf::new(len));
        }
        s.bounce.as_mut().unwrap()
    }

    /// Move queued commands onto the ring while slots are free.
    fn start_pending(&mut self) {
        while !self.free.is_empty() {
            let Some((tag, op)) = self.shared.pending.lock().unwrap().pop_front() else { break };
            self.start(tag, op);
        }
    }

    /// Whether a command can use the component's buffer at `off` in
    /// place: always without O_DIRECT; with it, when the address is
    /// aligned to the device's block size (buffers start page-aligned).
    fn in_place(&self, off: u32) -> bool {
        !self.dev.o_direct || off as usize % self.dev.info.block_size as usize == 0
    }

    fn fail(&mut self, tag: u64, st: Status) {
        self.dev.stats.errors.fetch_add(1, Ordering::Relaxed);
        self.done.push((tag, st));
    }

    fn range(&self, lba: u64, nlb: u32) -> Option<(u64, usize)> {
        let bs = self.dev.info.block_size as u64;
        let end = lba.checked_add(nlb as u64)?;
        if nlb == 0 || end > self.dev.info.blocks {
            return None;
        }
        Some((lba * bs, nlb as usize * bs as usize))
    }

    fn start(&mut self, tag: u64, op: Op) {
        let st = &self.dev.stats;
        match op {
            Op::Read { lba, nlb, buf, off } => {
                st.reads.fetch_add(1, Ordering::Relaxed);
                let Some((at, len)) = self.range(lba, nlb) else { return self.fail(tag, Status::LbaOutOfRange) };
                if len > MAX_TRANSFER as usize || off as usize + len > buf.len() as usize {
                    return self.fail(tag, Status::InvalidField);
                }
                let slot = self.free.pop().unwrap();
                if self.in_place(off) {
                    let ptr = buf.addr(off as usize);
                    self.slots[slot].what = Pending::InPlace { tag, len, read: true, _buf: buf };
                    let e = opcode::Read::new(self.fd(), ptr, len as u32).offset(at).build().user_data(slot as u64);
                    return self.push(e);
                }
                let ptr = self.bounce(slot, len).ptr;
                self.slots[slot].what = Pending::Read { tag, buf, off, len };
                let e = opcode::Read::new(self.fd(), ptr, len as u32).offset(at).build().user_data(slot as u64);
                self.push(e);
            }
            Op::Write { lba, nlb, buf, off, fua } => {
                st.writes.fetch_add(1, Ordering::Relaxed);
                if self.dev.is_read_only() {
                    return self.fail(tag, Status::InvalidField);
                }
                let Some((at, len)) = self.range(lba, nlb) else { return self.fail(tag, Status::LbaOutOfRange) };
                if len > MAX_TRANSFER as usize {
                    return self.fail(tag, Status::InvalidField);
                }
                if fua {
                    st.fua_writes.fetch_add(1, Ordering::Relaxed);
                }
                if !self.dev.skip_flush && self.in_place(off) && off as usize + len <= buf.len() as usize {
                    let slot = self.free.pop().unwrap();
                    let ptr = buf.addr(off as usize);
                    self.slots[slot].what = Pending::InPlace { tag, len, read: false, _buf: buf };
                    let flags = if fua { libc::RWF_DSYNC } else { 0 };
                    let e = opcode::Write::new(self.fd(), ptr, len as u32).offset(at).rw_flags(flags).build().user_data(slot as u64);
                    return self.push(e);
                }
                let copied = {
                    let src = buf.bytes.lock().unwrap();
                    let o = off as usize;
                    if o + len > src.len() {
                        None
                    } else if self.dev.skip_flush {
                        Some(Some(src[o..o + len].to_vec()))
                    } else {
                        let slot = *self.free.last().unwrap();
                        self.bounce(slot, len).slice_mut(len).copy_from_slice(&src[o..o + len]);
                        Some(None)
                    }
                };
                match copied {
                    None => self.fail(tag, Status::InvalidField),
                    Some(Some(data)) => {
                        // The fault: acknowledged now, written later.
                        self.deferred.push_back((Instant::now() + FAULT_DELAY, at, data));
                        self.done.push((tag, Status::Success));
                    }
                    Some(None) => {
                        let slot = self.free.pop().unwrap();
                        let ptr = self.slots[slot].bounce.as_ref().unwrap().ptr;
                        self.slots[slot].what = Pending::Write { tag, len };
                        let flags = if fua { libc::RWF_DSYNC } else { 0 };
                        let e = opcode::Write::new(self.fd(), ptr, len as u32).offset(at).rw_flags(flags).build().user_data(slot as u64);
                        self.push(e);
                    }
                }
            }
            Op::Flush => {
                st.flushes.fetch_add(1, Ordering::Relaxed);
                if self.dev.skip_flush {
                    self.done.push((tag, Status::Success));
                    return;
                }
                let slot = self.free.pop().unwrap();
                self.slots[slot].what = Pending::Other { tag, zeroes: None };
                let e = opcode::Fsync::new(self.fd()).flags(types::FsyncFlags::DATASYNC).build().user_data(slot as u64);
                self.push(e);
            }
            Op::Deallocate { lba, nlb } | Op::WriteZeroes { lba, nlb, .. } if self.dev.is_read_only() => {
                let _ = (lba, nlb);
                self.fail(tag, Status::InvalidField)
            }
            Op::Deallocate { lba, nlb } => {
                st.deallocates.fetch_add(1, Ordering::Relaxed);
                let Some((at, len)) = self.range(lba, nlb) else { return self.fail(tag, Status::LbaOutOfRange) };
                let slot = self.free.pop().unwrap();
                self.slots[slot].what = Pending::Other { tag, zeroes: None };
                let e = opcode::Fallocate::new(self.fd(), len as u64).offset(at).mode(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE).build().user_data(slot as u64);
                self.push(e);
            }
            Op::WriteZeroes { lba, nlb, fua } => {
                st.write_zeroes.fetch_add(1, Ordering::Relaxed);
                let Some((at, len)) = self.range(lba, nlb) else { return self.fail(tag, Status::LbaOutOfRange) };
                if self.dev.skip_flush {
                    self.deferred.push_back((Instant::now() + FAULT_DELAY, at, vec![0u8; len]));
                    self.done.push((tag, Status::Success));
                    return;
                }
                let slot = self.free.pop().unwrap();
                self.slots[slot].what = Pending::Other { tag, zeroes: Some((at, len, fua)) };
                let e = opcode::Fallocate::new(self.fd(), len as u64).offset(at).mode(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE).build().user_data(slot as u64);
                self.push(e);
            }
        }
    }

    /// The skip-flush fault's held writes whose time has come.
    fn start_deferred(&mut self) {
        let now = Instant::now();
        let closing = self.shared.closed.load(Ordering::SeqCst);
        while !self.free.is_empty() {
            match self.deferred.front() {
                Some((due, _, _)) if *due <= now || closing => {}
                _ => break,
            }
            let (_, at, data) = self.deferred.pop_front().unwrap();
            let slot = self.free.pop().unwrap();
            let len = data.len();
            let b = self.bounce(slot, len);
            b.slice_mut(len).copy_from_slice(&data);
            let ptr = b.ptr;
            self.slots[slot].what = Pending::Deferred { len };
            let e = opcode::Write::new(self.fd(), ptr, len as u32).offset(at).build().user_data(slot as u64);
            self.push(e);
        }
    }

    fn finish(&mut self, slot: usize, res: i32) {
        let what = std::mem::replace(&mut self.slots[slot].what, Pending::Free);
        let st = &self.dev.stats;
        let status = |ok: bool| if ok { Status::Success } else { Status::InternalError };
        match what {
            Pending::Free => return,
            Pending::Read { tag, buf, off, len } => {
                let ok = res == len as i32;
                if ok {
                    let data = self.slots[slot].bounce.as_ref().unwrap().slice(len);
                    let mut dst = buf.bytes.lock().unwrap();
                    dst[off as usize..off as usize + len].copy_from_slice(data);
                    st.read_bytes.fetch_add(len as u64, Ordering::Relaxed);
                } else {
                    st.errors.fetch_add(1, Ordering::Relaxed);
                }
                self.done.push((tag, status(ok)));
            }
            Pending::Write { tag, len } => {
                let ok = res == len as i32;
                if ok {
                    st.written_bytes.fetch_add(len as u64, Ordering::Relaxed);
                } else {
                    st.errors.fetch_add(1, Ordering::Relaxed);
                }
                self.done.push((tag, status(ok)));
            }
            Pending::InPlace { tag, len, read, .. } => {
                let ok = res == len as i32;
                if !ok {
                    st.errors.fetch_add(1, Ordering::Relaxed);
                } else if read {
                    st.read_bytes.fetch_add(len as u64, Ordering::Relaxed);
                } else {
                    st.written_bytes.fetch_add(len as u64, Ordering::Relaxed);
                }
                self.done.push((tag, status(ok)));
            }
            Pending::Deferred { len } => {
                if res == len as i32 {
                    st.written_bytes.fetch_add(len as u64, Ordering::Relaxed);
                }
            }
            Pending::Other { tag, zeroes } => {
                if res == -libc::EOPNOTSUPP || res == -libc::EINVAL {
                    if let Some((at, len, fua)) = zeroes {
                        // No ZERO_RANGE here (a block device without it, an
                        // old file system): write the zeroes.
                        self.free.push(slot);
                        return self.zero_fill(tag, at, len, fua);
                    }
                }
                if res < 0 {
                    st.errors.fetch_add(1, Ordering::Relaxed);
                }
                let ok = res >= 0;
                // WRITE ZEROES with FUA: ZERO_RANGE is not ordered with a
                // flush, so follow it with one before completing.
                if ok && let Some((_, _, true)) = zeroes {
                    self.slots[slot].what = Pending::Other { tag, zeroes: None };
                    let e = opcode::Fsync::new(self.fd()).flags(types::FsyncFlags::DATASYNC).build().user_data(slot as u64);
                    self.push(e);
                    return;
                }
                self.done.push((tag, status(ok)));
            }
        }
        self.free.push(slot);
    }

    fn zero_fill(&mut self, tag: u64, at: u64, len: usize, fua: bool) {
        // Synchronously, in MAX_TRANSFER pieces: a rare path.
        let zero = AlignedBuf::new(len.min(MAX_TRANSFER as usize));
        let mut done = 0usize;
        let fd = self.dev.file.as_raw_fd();
        while done < len {
            let n = (len - done).min(zero.len);
            let flags = if fua { libc::RWF_DSYNC } else { 0 };
            let iov = libc::iovec { iov_base: zero.ptr as *mut libc::c_void, iov_len: n };
            // SAFETY: one iovec over our zeroed buffer.
            let r = unsafe { libc::pwritev2(fd, &iov, 1, (at + done as u64) as i64, flags) };
            if r != n as isize {
                return self.fail(tag, Status::InternalError);
            }
            done += n;
        }
        self.done.push((tag, Status::Success));
    }
}

impl Device {
    fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The raw descriptor, for tests.
    #[allow(dead_code)]
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn temp(name: &str, bytes: u64) -> PathBuf {
        // /var/tmp: a disk file system with O_DIRECT (/tmp may be tmpfs).
        let p = std::env::temp_dir().join(format!("libretto-backend-{name}-{}", std::process::id()));
        let f = File::create(&p).unwrap();
        f.set_len(bytes).unwrap();
        p
    }

    fn open(p: &PathBuf, depth: u32) -> Arc<Device> {
        let direct = Device::open(DeviceConfig { path: p.clone(), read_only: false, direct: true, queue_depth: depth });
        direct.unwrap_or_else(|_| Device::open(DeviceConfig { path: p.clone(), read_only: false, direct: false, queue_depth: depth }).unwrap())
    }

    fn run(q: &DevQueue, rx: &mpsc::Receiver<Vec<(u64, Status)>>, ops: Vec<(u64, Op)>) -> Vec<(u64, Status)> {
        let n = ops.len();
        q.submit(ops);
        let mut got = Vec::new();
        while got.len() < n {
            got.extend(rx.recv_timeout(Duration::from_secs(10)).expect("completions"));
        }
        got.sort_by_key(|c| c.0);
        got
    }

    fn queue(dev: &Arc<Device>) -> (Arc<DevQueue>, mpsc::Receiver<Vec<(u64, Status)>>) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let q = dev.queue("test", Arc::new(move |d: &[(u64, Status)]| tx.lock().unwrap().send(d.to_vec()).unwrap())).unwrap();
        (q, rx)
    }

    #[test]
    fn many_commands_in_flight_read_back_what_was_written() {
        let p = temp("rw", 8 << 20);
        let dev = open(&p, 32);
        let bs = dev.info().block_size;
        let (q, rx) = queue(&dev);
        let buf = Buffer::new(64 * 8192).unwrap();
        {
            let mut b = buf.bytes.lock().unwrap();
            for (i, x) in b.iter_mut().enumerate() {
                *x = (i * 7 + i / 4096) as u8;
            }
        }
        let per = 8192 / bs;
        let writes = (0..64u64).map(|i| (i, Op::Write { lba: i * 3 * per as u64, nlb: per, buf: buf.clone(), off: (i * 8192) as u32, fua: i % 5 == 0 })).collect();
        assert!(run(&q, &rx, writes).iter().all(|c| c.1 == Status::Success));
        assert_eq!(run(&q, &rx, vec![(99, Op::Flush)]), vec![(99, Status::Success)]);
        let back = Buffer::new(64 * 8192).unwrap();
        let reads = (0..64u64).map(|i| (1000 + i, Op::Read { lba: i * 3 * per as u64, nlb: per, buf: back.clone(), off: (i * 8192) as u32 })).collect();
        assert!(run(&q, &rx, reads).iter().all(|c| c.1 == Status::Success));
        assert!(**back.bytes.lock().unwrap() == **buf.bytes.lock().unwrap());
        // What the file holds, read past the backend.
        let disk = std::fs::read(&p).unwrap();
        assert_eq!(&disk[3 * 8192..4 * 8192], &buf.bytes.lock().unwrap()[8192..16384]);
        q.close();
        assert_eq!(q.in_flight(), 0);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn unaligned_buffers_go_through_a_bounce_buffer() {
        let p = temp("bounce", 1 << 20);
        let dev = open(&p, 4);
        let bs = dev.info().block_size;
        let (q, rx) = queue(&dev);
        let buf = Buffer::new(3 * 4096).unwrap();
        buf.write(100, &vec![0x5au8; bs as usize]).unwrap();
        let got = run(&q, &rx, vec![(1, Op::Write { lba: 3, nlb: 1, buf: buf.clone(), off: 100, fua: false })]);
        assert_eq!(got, vec![(1, Status::Success)]);
        let back = Buffer::new(3 * 4096).unwrap();
        let got = run(&q, &rx, vec![(2, Op::Read { lba: 3, nlb: 1, buf: back.clone(), off: 4096 + 7 }), (3, Op::Read { lba: 3, nlb: 1, buf: back.clone(), off: 0 })]);
        assert_eq!(got, vec![(2, Status::Success), (3, Status::Success)]);
        assert_eq!(back.read(4096 + 7, bs).unwrap(), vec![0x5au8; bs as usize]);
        assert_eq!(back.read(0, bs).unwrap(), vec![0x5au8; bs as usize]);
        assert_eq!(std::fs::read(&p).unwrap()[3 * bs as usize], 0x5a);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn errors_are_statuses() {
        let p = temp("err", 4 << 20);
        let dev = open(&p, 4);
        let blocks = dev.info().blocks;
        let (q, rx) = queue(&dev);
        let buf = Buffer::new(4096).unwrap();
        let got = run(
            &q,
            &rx,
            vec![
                (1, Op::Read { lba: blocks, nlb: 1, buf: buf.clone(), off: 0 }),
                (2, Op::Read { lba: u64::MAX - 1, nlb: 4, buf: buf.clone(), off: 0 }),
                (3, Op::Read { lba: 0, nlb: 1, buf: buf.clone(), off: 4000 }),
                (4, Op::Write { lba: 0, nlb: 0, buf: buf.clone(), off: 0, fua: false }),
                (5, Op::Read { lba: 0, nlb: (MAX_TRANSFER / dev.info().block_size) + 1, buf: buf.clone(), off: 0 }),
            ],
        );
        assert_eq!(got[0].1, Status::LbaOutOfRange);
        assert_eq!(got[1].1, Status::LbaOutOfRange);
        assert_eq!(got[2].1, Status::InvalidField);
        assert_eq!(got[3].1, Status::LbaOutOfRange);
        assert_eq!(got[4].1, Status::InvalidField);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn write_zeroes_and_deallocate_read_back_as_zeroes() {
        let p = temp("zero", 1 << 20);
        std::fs::write(&p, vec![0xabu8; 1 << 20]).unwrap();
        let dev = open(&p, 4);
        let bs = dev.info().block_size;
        let (q, rx) = queue(&dev);
        let got = run(&q, &rx, vec![(1, Op::WriteZeroes { lba: 0, nlb: 8192 / bs, fua: true }), (2, Op::Deallocate { lba: 65536 / bs as u64, nlb: 65536 / bs })]);
        assert!(got.iter().all(|c| c.1 == Status::Success), "{got:?}");
        let disk = std::fs::read(&p).unwrap();
        assert!(disk[..8192].iter().all(|&b| b == 0));
        assert_eq!(disk[8192], 0xab);
        assert!(disk[65536..131072].iter().all(|&b| b == 0));
        assert_eq!(disk[131072], 0xab);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn geometry_and_bad_paths() {
        assert!(Device::open(DeviceConfig { path: "/nonexistent/x".into(), read_only: false, direct: false, queue_depth: 4 }).is_err());
        let e = Device::open(DeviceConfig { path: "/dev/null".into(), read_only: true, direct: false, queue_depth: 4 });
        assert!(e.err().unwrap().contains("not a regular file or a block device"));
        let p = temp("geo", (3 << 20) + 100);
        let dev = open(&p, 2000);
        assert_eq!(dev.info().blocks, ((3 << 20) + 100) / dev.info().block_size as u64);
        assert_eq!(dev.info().queue_depth, 2000);
        std::fs::remove_file(&p).unwrap();
    }
}
