//! A TAP device as a link: real Ethernet with the Linux kernel on the other
//! side, opened with a virtio-net header so the kernel segments and
//! checksums what libretto sends (and hands libretto coalesced segments
//! and partial checksums), as it would for a virtio NIC.
//!
//! Two threads: a reader that moves frames from the device to the app's
//! receive ring, and a writer that moves the app's transmit ring to the
//! device. Frames the kernel hands over without a verified checksum are
//! checked here, in the host, and dropped if bad.

use crate::codec::{vnet_decode, vnet_encode, VNET_LEN};
use crate::link::{LinkInfo, LinkPort, LinkSlot};
use crate::ring::{Frame, Notify, Ring, Wake};
use crate::wire::verify_checksum;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;

#[repr(C)]
struct IfReq {
    name: [libc::c_char; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

#[derive(Default, Debug)]
pub struct TapStats {
    pub rx_frames: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub rx_bad_checksum: AtomicU64,
    pub rx_bad_header: AtomicU64,
    pub rx_ring_full: AtomicU64,
    /// Frames read while the device was not the app's link (server mode).
    pub rx_inactive: AtomicU64,
    pub tx_frames: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub tx_errors: AtomicU64,
}

pub struct Tap {
    pub name: String,
    pub stats: Arc<TapStats>,
    stop: Arc<AtomicBool>,
    tx_notify: Arc<Notify>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn ioctl_err(what: &str, name: &str) -> String {
    let e = std::io::Error::last_os_error();
    let hint = if e.raw_os_error() == Some(libc::EPERM) {
        " (needs root or CAP_NET_ADMIN, or a TAP device made for this user with `ip tuntap add NAME mode tap user USER`)"
    } else {
        ""
    };
    format!("TAP {name}: {what}: {e}{hint}")
}

fn open_tap(name: &str) -> Result<OwnedFd, String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("TAP name `{name}`: 1 to 15 characters"));
    }
    let path = c"/dev/net/tun";
    // SAFETY: a plain open(2) of a NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!("TAP {name}: cannot open /dev/net/tun: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just opened and is owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfReq { name: [0; 16], flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, _pad: [0; 22] };
    for (i, b) in name.bytes().enumerate() {
        req.name[i] = b as libc::c_char;
    }
    // SAFETY: TUNSETIFF takes a struct ifreq, which IfReq lays out.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        return Err(ioctl_err("cannot attach", name));
    }
    let hdr: libc::c_int = VNET_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ takes a pointer to an int.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETVNETHDRSZ, &hdr) } < 0 {
        return Err(ioctl_err("cannot set the virtio-net header size", name));
    }
    // SAFETY: TUNSETOFFLOAD takes an unsigned int by value.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, (TUN_F_CSUM | TUN_F_TSO4) as libc::c_ulong) } < 0 {
        return Err(ioctl_err("cannot enable offloads", name));
    }
    Ok(fd)
}

impl Tap {
    /// Attach to (or create) TAP device `name` and make a link for an app.
    pub fn open(name: &str, info: LinkInfo, ring_frames: usize) -> Result<(Tap, LinkSlot), String> {
        let app_notify = Notify::new();
        let (tap, rx, tx) = Tap::open_rings(name, app_notify.clone(), ring_frames)?;
        let slot = LinkSlot::new(LinkPort { info, rx, tx }, app_notify);
        Ok((tap, slot))
    }

    /// Attach to (or create) TAP device `name`; returns the ring of frames
    /// from the device (waking `rx_consumer`) and the ring of frames to it.
    pub fn open_rings(name: &str, rx_consumer: Arc<Notify>, ring_frames: usize) -> Result<(Tap, Arc<Ring>, Arc<Ring>), String> {
        let rx = Ring::new(format!("{name}-rx"), ring_frames, rx_consumer);
        let (tap, tx) = Tap::open_into(name, rx.clone(), Arc::new(AtomicBool::new(true)), ring_frames)?;
        Ok((tap, rx, tx))
    }

    /// Attach to TAP device `name`, delivering what it receives into `rx`
    /// while `active` is set (an app's own NIC for direct mode: its receive
    /// ring is the app's, shared with the switch). Returns the ring of
    /// frames to the device.
    pub fn open_into(name: &str, rx: Arc<Ring>, active: Arc<AtomicBool>, ring_frames: usize) -> Result<(Tap, Arc<Ring>), String> {
        Tap::start(name, open_tap(name)?, rx, active, ring_frames)
    }

    /// Run the reader and writer threads over `fd`, any file whose reads
    /// and writes are one frame each behind a virtio-net header: a TAP
    /// device, or an AF_PACKET socket with PACKET_VNET_HDR (packet.rs).
    pub fn start(name: &str, fd: OwnedFd, rx: Arc<Ring>, active: Arc<AtomicBool>, ring_frames: usize) -> Result<(Tap, Arc<Ring>), String> {
        let fd = Arc::new(fd);
        let stats = Arc::new(TapStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let tx_notify = Notify::new();
        let tx = Ring::new(format!("{name}-tx"), ring_frames, tx_notify.clone());
        let tx_out = tx.clone();
        let mut threads = Vec::new();
        {
            let (fd, stats, stop) = (fd.clone(), stats.clone(), stop.clone());
            threads.push(std::thread::Builder::new().name(format!("{name}-reader")).spawn(move || reader(&fd, &rx, &active, &stats, &stop)).map_err(|e| e.to_string())?);
        }
        {
            let (fd, stats, stop, n) = (fd.clone(), stats.clone(), stop.clone(), tx_notify.clone());
            threads.push(std::thread::Builder::new().name(format!("{name}-writer")).spawn(move || writer(&fd, &tx, &n, &stats, &stop)).map_err(|e| e.to_string())?);
        }
        Ok((Tap { name: name.to_string(), stats, stop, tx_notify, threads }, tx_out))
    }

    pub fn close(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.tx_notify.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.close();
    }
}

fn reader(fd: &OwnedFd, rx: &Ring, active: &AtomicBool, stats: &TapStats, stop: &AtomicBool) {
    let mut buf = vec![0u8; VNET_LEN + 65550];
    let mut batch = Vec::with_capacity(64);
    while !stop.load(Ordering::SeqCst) {
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, 200) };
        if r <= 0 {
            continue;
        }
        // Read what is ready (up to a batch) before waking the app.
        loop {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let n = n as usize;
            if n < VNET_LEN + 14 {
                stats.rx_bad_header.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let Some(mut offload) = vnet_decode(&buf[..VNET_LEN]) else {
                stats.rx_bad_header.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let data = buf[VNET_LEN..n].to_vec();
            if !offload.needs_csum && !offload.csum_valid {
                // The kernel did not vouch for the checksum: check it here.
                if !verify_checksum(&data) {
                    stats.rx_bad_checksum.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                offload.csum_valid = true;
            }
            stats.rx_frames.fetch_add(1, Ordering::Relaxed);
            stats.rx_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            batch.push(Frame { data, offload });
            if batch.len() >= 64 {
                break;
            }
            let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd; zero timeout.
            if unsafe { libc::poll(&mut pfd, 1, 0) } <= 0 {
                break;
            }
        }
        if !active.load(Ordering::SeqCst) {
            stats.rx_inactive.fetch_add(batch.len() as u64, Ordering::Relaxed);
            batch.clear();
            continue;
        }
        let n = batch.len();
        let pushed = rx.push_batch(batch.drain(..));
        stats.rx_ring_full.fetch_add((n - pushed) as u64, Ordering::Relaxed);
    }
}

fn writer(fd: &OwnedFd, tx: &Ring, notify: &Notify, stats: &TapStats, stop: &AtomicBool) {
    let mut batch = Vec::with_capacity(256);
    loop {
        if notify.wait_until(None, || !tx.is_empty()) == Wake::Stop || stop.load(Ordering::SeqCst) {
            return;
        }
        batch.clear();
        tx.pop_batch(256, &mut batch);
        for f in &batch {
            let hdr = vnet_encode(&f.offload);
            let iov = [
                libc::iovec { iov_base: hdr.as_ptr() as *mut _, iov_len: hdr.len() },
                libc::iovec { iov_base: f.data.as_ptr() as *mut _, iov_len: f.data.len() },
            ];
            // SAFETY: two valid iovecs over live buffers.
            let n = unsafe { libc::writev(fd.as_raw_fd(), iov.as_ptr(), 2) };
            if n < 0 {
                stats.tx_errors.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.tx_frames.fetch_add(1, Ordering::Relaxed);
                stats.tx_bytes.fetch_add(f.data.len() as u64, Ordering::Relaxed);
            }
        }
    }
}
