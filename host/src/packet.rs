//! A real Linux network device as the NIC, through an AF_PACKET socket:
//! the guest image's way to drive a passed-through NIC (the guest kernel's
//! virtio-net or e1000 driver owns the hardware; libretto owns every frame).
//!
//! The socket is bound to one interface with `PACKET_VNET_HDR`, so each read
//! and write is one frame behind the same virtio-net header a TAP device
//! uses: large receive segments the driver or GRO coalesced arrive whole
//! with their checksum state, and 64 KiB TCP segments go out for the device
//! (or the kernel, if the device cannot) to cut. The TAP backend's reader
//! and writer threads (`tap.rs`) move the frames. On top of that:
//!
//! - `PACKET_IGNORE_OUTGOING`: what libretto sends is not read back;
//! - `PACKET_QDISC_BYPASS`: frames go straight to the driver's queue;
//! - promiscuous membership: apps with MACs of their own receive too;
//! - a socket filter (classic BPF) that lets in only frames to libretto's
//!   own MACs on the device and to group (broadcast, multicast) addresses:
//!   in promiscuous mode the kernel would otherwise hand over every frame on
//!   the wire (another host's unicast, or Linux's own on a shared NIC), and
//!   the network server would read and drop each in JavaScript;
//! - the interface is brought up, its MTU set to the manifest's, and the
//!   kernel's own IPv6 on it switched off, so Linux stays silent on the wire
//!   (it has no address there, so it answers nothing).
//!
//! A device is named by interface name (`eth0`), PCI address
//! (`0000:00:04.0`, as Xen's `pci = [...]` and QEMU's `addr=` give it) or MAC
//! (`52:54:00:12:34:56`); the manifest says which, code never guesses.

use crate::ring::{Notify, Ring};
use crate::tap::Tap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

const ETH_P_ALL: u16 = 0x0003;
const SOL_PACKET: libc::c_int = 263;
const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_MR_PROMISC: libc::c_ushort = 1;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

#[repr(C)]
struct PacketMreq {
    ifindex: libc::c_int,
    kind: libc::c_ushort,
    alen: libc::c_ushort,
    address: [u8; 8],
}

#[repr(C)]
struct IfReqFlags {
    name: [libc::c_char; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

#[repr(C)]
struct IfReqMtu {
    name: [libc::c_char; 16],
    mtu: libc::c_int,
    _pad: [u8; 20],
}

fn ifname(name: &str) -> [libc::c_char; 16] {
    let mut n = [0 as libc::c_char; 16];
    for (i, b) in name.bytes().take(15).enumerate() {
        n[i] = b as libc::c_char;
    }
    n
}

/// One network device as /sys shows it.
#[derive(Debug, Clone)]
pub struct NetDevice {
    pub name: String,
    pub mac: String,
    /// The PCI function it sits on (`0000:00:04.0`), if any.
    pub pci: Option<String>,
}

/// The PCI address in a device's sysfs path (`/sys/devices/pci0000:00/0000:00:03.0/virtio0`
/// gives `0000:00:03.0`): the last path component that looks like one.
pub fn pci_of(sys_device: &Path) -> Option<String> {
    let real = std::fs::canonicalize(sys_device).ok()?;
    real.components().filter_map(|c| c.as_os_str().to_str()).filter(|c| is_pci_address(c)).last().map(str::to_string)
}

/// `DDDD:BB:DD.F` (hexadecimal), as Linux, QEMU and Xen write it.
pub fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && s.char_indices().all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

/// Accept `BB:DD.F` for `0000:BB:DD.F`.
pub fn normalize_pci(s: &str) -> String {
    let s = s.to_ascii_lowercase();
    if s.len() == 7 { format!("0000:{s}") } else { s }
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Every network device but loopback.
pub fn devices() -> Vec<NetDevice> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else { return out };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name == "lo" {
            continue;
        }
        let base = e.path();
        let mac = std::fs::read_to_string(base.join("address")).unwrap_or_default().trim().to_string();
        out.push(NetDevice { name, mac, pci: pci_of(&base.join("device")) });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Find the device a manifest names by interface name, PCI address or MAC.
pub fn resolve(spec: &str) -> Result<NetDevice, String> {
    let all = devices();
    let found = if is_pci_address(&normalize_pci(spec)) {
        let want = normalize_pci(spec);
        all.iter().find(|d| d.pci.as_deref() == Some(want.as_str()))
    } else if is_mac(spec) {
        all.iter().find(|d| d.mac.eq_ignore_ascii_case(spec))
    } else {
        all.iter().find(|d| d.name == spec)
    };
    found.cloned().ok_or_else(|| {
        let have = if all.is_empty() {
            "there is none".to_string()
        } else {
            all.iter().map(|d| format!("{} {}{}", d.name, d.mac, d.pci.as_ref().map(|p| format!(" at {p}")).unwrap_or_default())).collect::<Vec<_>>().join(", ")
        };
        format!("no network device `{spec}` (by name, PCI address or MAC; have: {have})")
    })
}

fn sockopt(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int, value: libc::c_int) -> std::io::Result<()> {
    // SAFETY: an int option by pointer and size.
    let r = unsafe { libc::setsockopt(fd.as_raw_fd(), level, opt, (&value as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as libc::socklen_t) };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

/// Bring the interface up and set its MTU (the device's own limit may
/// refuse a larger one: then say so).
fn configure(fd: &OwnedFd, dev: &str, mtu: u32) -> Result<(), String> {
    let mut m = IfReqMtu { name: ifname(dev), mtu: 0, _pad: [0; 20] };
    // SAFETY: SIOCGIFMTU / SIOCSIFMTU take a struct ifreq with an int.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFMTU, &mut m) } == 0 && m.mtu != mtu as libc::c_int {
        m.mtu = mtu as libc::c_int;
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFMTU, &mut m) } < 0 {
            return Err(format!("cannot set the MTU to {mtu}: {}", std::io::Error::last_os_error()));
        }
    }
    let mut f = IfReqFlags { name: ifname(dev), flags: 0, _pad: [0; 22] };
    // SAFETY: SIOCGIFFLAGS / SIOCSIFFLAGS take a struct ifreq with a short.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut f) } < 0 {
        return Err(format!("cannot read its flags: {}", std::io::Error::last_os_error()));
    }
    if f.flags & libc::IFF_UP as libc::c_short == 0 {
        f.flags |= libc::IFF_UP as libc::c_short;
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &mut f) } < 0 {
            return Err(format!("cannot bring it up: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// The most MACs the filter holds (its jumps are 8-bit); past that, no filter.
const FILTER_MAX_MACS: usize = 60;

/// A classic BPF program that accepts a frame whose destination is a group
/// address (the I/G bit of the first byte) or one of `macs`, and drops the
/// rest; None when there are too many MACs for one program.
fn mac_filter(macs: &[u64]) -> Option<Vec<libc::sock_filter>> {
    use libc::{BPF_ABS, BPF_H, BPF_JEQ, BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_RET, BPF_W};
    let n = macs.len();
    if n > FILTER_MAX_MACS {
        return None;
    }
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jump = |code: u32, k: u32, jt: usize, jf: usize| libc::sock_filter { code: code as u16, jt: jt as u8, jf: jf as u8, k };
    // Instruction indices: 0 and 1 test the group bit, four per MAC from 2,
    // then reject at 4n + 2 and accept at 4n + 3. Jumps count from the next.
    let accept = 4 * n + 3;
    let mut p = vec![stmt(BPF_LD | BPF_W | BPF_ABS, 0), jump(BPF_JMP | BPF_JSET | BPF_K, 0x0100_0000, accept - 2, 0)];
    for (i, &mac) in macs.iter().enumerate() {
        let last = 2 + 4 * i + 3;
        p.push(stmt(BPF_LD | BPF_W | BPF_ABS, 0));
        p.push(jump(BPF_JMP | BPF_JEQ | BPF_K, (mac >> 16) as u32, 0, 2));
        p.push(stmt(BPF_LD | BPF_H | BPF_ABS, 4));
        p.push(jump(BPF_JMP | BPF_JEQ | BPF_K, (mac & 0xffff) as u32, accept - (last + 1), 0));
    }
    p.push(stmt(BPF_RET | BPF_K, 0));
    p.push(stmt(BPF_RET | BPF_K, u32::MAX));
    Some(p)
}

/// Open an AF_PACKET socket on the device `spec` names, configured as
/// above, taking frames to `macs` and to group addresses only.
fn open_socket(spec: &str, mtu: u32, macs: &[u64]) -> Result<(NetDevice, OwnedFd), String> {
    let dev = resolve(spec)?;
    let what = |e: String| format!("network device {} ({spec}): {e}", dev.name);
    // The kernel keeps its hands off: no IPv6 autoconfiguration on our wire.
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", dev.name), "1");
    // SAFETY: plain socket(2).
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, (ETH_P_ALL.to_be()) as libc::c_int) };
    if raw < 0 {
        let e = std::io::Error::last_os_error();
        let hint = if e.raw_os_error() == Some(libc::EPERM) { " (needs root or CAP_NET_RAW)" } else { "" };
        return Err(what(format!("cannot open an AF_PACKET socket: {e}{hint}")));
    }
    // SAFETY: raw was just opened and is owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // The filter goes on before the socket is bound, so no other frame gets in.
    match mac_filter(macs) {
        Some(prog) => {
            let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() as *mut libc::sock_filter };
            // SAFETY: SO_ATTACH_FILTER copies the program out of `prog`, which outlives the call.
            if unsafe { libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, (&fprog as *const libc::sock_fprog).cast(), std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t) } < 0 {
                return Err(what(format!("cannot attach the MAC filter: {}", std::io::Error::last_os_error())));
            }
        }
        None => eprintln!("libretto: {}: {} MACs are more than the filter holds ({FILTER_MAX_MACS}); every frame on the wire is read", dev.name, macs.len()),
    }
    sockopt(&fd, SOL_PACKET, PACKET_VNET_HDR, 1).map_err(|e| what(format!("PACKET_VNET_HDR: {e}")))?;
    sockopt(&fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, 1).map_err(|e| what(format!("PACKET_IGNORE_OUTGOING: {e}")))?;
    // Bypassing the qdisc is an optimisation; older kernels lack it.
    let _ = sockopt(&fd, SOL_PACKET, PACKET_QDISC_BYPASS, 1);
    let _ = sockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 8 << 20).or_else(|_| sockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 8 << 20));
    let _ = sockopt(&fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 8 << 20).or_else(|_| sockopt(&fd, libc::SOL_SOCKET, libc::SO_SNDBUF, 8 << 20));
    configure(&fd, &dev.name, mtu).map_err(what)?;
    let cname = std::ffi::CString::new(dev.name.clone()).map_err(|_| what("bad name".into()))?;
    // SAFETY: a NUL-terminated interface name.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) } as libc::c_int;
    if ifindex == 0 {
        return Err(what(format!("no interface index: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ETH_P_ALL.to_be();
    sll.sll_ifindex = ifindex;
    // SAFETY: bind with a sockaddr_ll of the right size.
    if unsafe { libc::bind(fd.as_raw_fd(), (&sll as *const libc::sockaddr_ll).cast(), std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t) } < 0 {
        return Err(what(format!("cannot bind: {}", std::io::Error::last_os_error())));
    }
    let mreq = PacketMreq { ifindex, kind: PACKET_MR_PROMISC, alen: 0, address: [0; 8] };
    // SAFETY: PACKET_ADD_MEMBERSHIP takes a struct packet_mreq.
    if unsafe { libc::setsockopt(fd.as_raw_fd(), SOL_PACKET, PACKET_ADD_MEMBERSHIP, (&mreq as *const PacketMreq).cast(), std::mem::size_of::<PacketMreq>() as libc::socklen_t) } < 0 {
        return Err(what(format!("cannot make it promiscuous: {}", std::io::Error::last_os_error())));
    }
    Ok((dev, fd))
}

/// Open the device `spec` names as the system's NIC, taking the frames to
/// `macs` (the NIC's and the apps') and to group addresses; returns the ring
/// of frames from it (waking `rx_consumer`) and the ring of frames to it.
pub fn open_rings(spec: &str, mtu: u32, macs: &[u64], rx_consumer: Arc<Notify>, ring_frames: usize) -> Result<(Tap, Arc<Ring>, Arc<Ring>), String> {
    let (dev, fd) = open_socket(spec, mtu, macs)?;
    let rx = Ring::new(format!("{}-rx", dev.name), ring_frames, rx_consumer);
    let (t, tx) = Tap::start(&dev.name, fd, rx.clone(), Arc::new(AtomicBool::new(true)), ring_frames)?;
    Ok((t, rx, tx))
}

/// Open the device `spec` names as an app's own NIC for direct mode (the
/// app's MAC `mac` and group addresses): what it receives goes into `rx`
/// while `active` is set.
pub fn open_into(spec: &str, mtu: u32, mac: u64, rx: Arc<Ring>, active: Arc<AtomicBool>, ring_frames: usize) -> Result<(Tap, Arc<Ring>), String> {
    let (dev, fd) = open_socket(spec, mtu, &[mac])?;
    Tap::start(&dev.name, fd, rx, active, ring_frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run a classic BPF program of the loads, jumps and returns `mac_filter` uses.
    fn run(prog: &[libc::sock_filter], frame: &[u8]) -> u32 {
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code as u32 {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => a = u32::from_be_bytes(frame[i.k as usize..i.k as usize + 4].try_into().unwrap()),
                c if c == libc::BPF_LD | libc::BPF_H | libc::BPF_ABS => a = u16::from_be_bytes(frame[i.k as usize..i.k as usize + 2].try_into().unwrap()) as u32,
                c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => pc += if a == i.k { i.jt } else { i.jf } as usize,
                c if c == libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K => pc += if a & i.k != 0 { i.jt } else { i.jf } as usize,
                c if c == libc::BPF_RET | libc::BPF_K => return i.k,
                c => panic!("unexpected BPF code {c:#x}"),
            }
        }
    }

    fn frame_to(mac: u64) -> Vec<u8> {
        let mut f = mac.to_be_bytes()[2..].to_vec();
        f.extend_from_slice(&[0x52, 0x54, 0, 0, 0, 1, 0x08, 0x00]);
        f
    }

    #[test]
    fn the_mac_filter_takes_its_macs_and_group_addresses_only() {
        let macs = [0x0200_0000_2002u64, 0x0200_0000_2003, 0xfe00_dead_beef];
        let prog = mac_filter(&macs).unwrap();
        for &m in &macs {
            assert_eq!(run(&prog, &frame_to(m)), u32::MAX, "{m:012x}");
        }
        for m in [0xffff_ffff_ffffu64, 0x0100_5e00_0001, 0x3333_0000_0001] {
            assert_eq!(run(&prog, &frame_to(m)), u32::MAX, "group {m:012x}");
        }
        // Another host's unicast, and near misses in either half of a MAC.
        for m in [0x5254_0000_2010u64, 0x0200_0000_2004, 0x0200_0001_2002, 0x0000_0000_2002, 0xfe00_dead_beee] {
            assert_eq!(run(&prog, &frame_to(m)), 0, "{m:012x}");
        }
        let one = mac_filter(&[0x0200_0000_2003]).unwrap();
        assert_eq!(run(&one, &frame_to(0x0200_0000_2003)), u32::MAX);
        assert_eq!(run(&one, &frame_to(0x0200_0000_2002)), 0);
        let max: Vec<u64> = (0..FILTER_MAX_MACS as u64).map(|i| 0x0200_0000_0000 + i).collect();
        let big = mac_filter(&max).unwrap();
        assert_eq!(run(&big, &frame_to(0x0200_0000_0000)), u32::MAX);
        assert_eq!(run(&big, &frame_to(0x0200_0000_0000 + FILTER_MAX_MACS as u64 - 1)), u32::MAX);
        assert_eq!(run(&big, &frame_to(0x0200_0000_0000 + FILTER_MAX_MACS as u64)), 0);
        assert!(mac_filter(&(0..FILTER_MAX_MACS as u64 + 1).collect::<Vec<_>>()).is_none());
    }

    #[test]
    fn pci_addresses_are_recognised_and_normalised() {
        assert!(is_pci_address("0000:00:04.0"));
        assert!(is_pci_address("0000:af:1f.7"));
        assert!(!is_pci_address("00:04.0"));
        assert!(!is_pci_address("eth0"));
        assert!(!is_pci_address("0000:00:04:0"));
        assert_eq!(normalize_pci("00:04.0"), "0000:00:04.0");
        assert_eq!(normalize_pci("0000:00:0A.0"), "0000:00:0a.0");
        assert!(is_mac("52:54:00:12:34:56"));
        assert!(!is_mac("52:54:00:12:34"));
    }

    #[test]
    fn a_missing_device_is_named_with_what_there_is() {
        let e = resolve("0000:00:1f.7").unwrap_err();
        assert!(e.starts_with("no network device `0000:00:1f.7`"), "{e}");
        assert!(!e.contains('\n'));
    }
}
