//! The gateway NIC: a NIC backend that needs no root. It joins the virtual
//! network to ports on this machine's loopback: it is a small host on the
//! virtual network (a TCP/IP stack of its own, smoltcp, in the host) that
//! accepts connections on 127.0.0.1 ports and carries each to an address on
//! the virtual network, as `ssh -L` or a container runtime's port
//! publishing does. `make run` uses it so that a browser or curl on this
//! machine reaches the httpd image without a TAP device.

use crate::ring::{Frame, Notify, Offload, Ring, Wake};
use crate::wire::segment_tcp;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SInstant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One published port: connections to `listen` go to `to` on the virtual network.
#[derive(Clone, Debug)]
pub struct Forward {
    pub listen: SocketAddr,
    pub to_ip: u32,
    pub to_port: u16,
}

#[derive(Default, Debug)]
pub struct GatewayStats {
    pub accepted: AtomicU64,
    pub failed: AtomicU64,
    pub to_net_bytes: AtomicU64,
    pub from_net_bytes: AtomicU64,
}

/// The rings of port 0 seen from the gateway's side.
struct RingDevice {
    /// Frames the switch sends out of port 0 (to the gateway).
    rx: Arc<Ring>,
    /// Frames the gateway puts on port 0 (to the switch).
    tx: Arc<Ring>,
    pending: VecDeque<Vec<u8>>,
    mtu: usize,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a Ring);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut data = vec![0u8; len];
        let r = f(&mut data);
        // smoltcp filled in every checksum.
        self.0.push_batch([Frame { data, offload: Offload { csum_valid: true, ..Offload::default() } }]);
        r
    }
}

impl RingDevice {
    fn fill(&mut self) {
        if !self.pending.is_empty() {
            return;
        }
        let mut batch = Vec::new();
        self.rx.pop_batch(256, &mut batch);
        for f in batch {
            // Large segments from the stacks are cut to the MTU here, as a
            // NIC without coalescing would see them.
            for piece in segment_tcp(&f, self.mtu) {
                self.pending.push_back(piece.data);
            }
        }
    }
}

impl Device for RingDevice {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _t: SInstant) -> Option<(Rx, Tx<'_>)> {
        self.fill();
        let data = self.pending.pop_front()?;
        Some((Rx(data), Tx(&self.tx)))
    }

    fn transmit(&mut self, _t: SInstant) -> Option<Tx<'_>> {
        Some(Tx(&self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu + 14;
        caps.max_burst_size = Some(64);
        // Frames from libretto's stacks carry partial checksums that never
        // left this machine: trust them; compute our own.
        let mut c = ChecksumCapabilities::ignored();
        c.ipv4 = Checksum::Tx;
        c.tcp = Checksum::Tx;
        c.udp = Checksum::Tx;
        c.icmpv4 = Checksum::Tx;
        caps.checksum = c;
        caps
    }
}

struct Conn {
    host: TcpStream,
    handle: SocketHandle,
    to_host: Vec<u8>,
    host_eof: bool,
    done: bool,
}

pub struct Gateway {
    notify: Arc<Notify>,
    pub stats: Arc<GatewayStats>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Gateway {
    /// Start the gateway on the two rings of port 0, at `ip/prefix` with
    /// `mac`; `rx_consumer` is the notify `from_switch` wakes.
    pub fn start(mac: u64, ip: u32, prefix: u8, mtu: u32, forwards: Vec<Forward>, from_switch: Arc<Ring>, to_switch: Arc<Ring>, notify: Arc<Notify>) -> Result<Gateway, String> {
        let mut listeners = Vec::new();
        for f in &forwards {
            let l = TcpListener::bind(f.listen).map_err(|e| format!("gateway: cannot listen on {}: {e}", f.listen))?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            listeners.push((l, f.clone()));
        }
        let stats = Arc::new(GatewayStats::default());
        let (n, st) = (notify.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("gateway".into())
            .spawn(move || run(mac, ip, prefix, mtu, listeners, from_switch, to_switch, n, st))
            .map_err(|e| e.to_string())?;
        Ok(Gateway { notify, stats, thread: Some(thread) })
    }

    pub fn stop(&mut self) {
        self.notify.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

fn v4(ip: u32) -> IpAddress {
    let b = ip.to_be_bytes();
    IpAddress::v4(b[0], b[1], b[2], b[3])
}

#[allow(clippy::too_many_arguments)]
fn run(mac: u64, ip: u32, prefix: u8, mtu: u32, listeners: Vec<(TcpListener, Forward)>, from_switch: Arc<Ring>, to_switch: Arc<Ring>, notify: Arc<Notify>, stats: Arc<GatewayStats>) {
    let mut dev = RingDevice { rx: from_switch.clone(), tx: to_switch, pending: VecDeque::new(), mtu: mtu as usize };
    let m = mac.to_be_bytes();
    let epoch = Instant::now();
    let now = || SInstant::from_micros(epoch.elapsed().as_micros() as i64);
    let mut iface = Interface::new(Config::new(HardwareAddress::Ethernet(EthernetAddress([m[2], m[3], m[4], m[5], m[6], m[7]]))), &mut dev, now());
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(v4(ip), prefix));
    });
    let mut sockets = SocketSet::new(vec![]);
    let mut conns: Vec<Conn> = Vec::new();
    let mut next_port: u16 = 49152;
    let mut buf = vec![0u8; 65536];
    loop {
        // New connections from this machine.
        for (l, f) in &listeners {
            while let Ok((host, _)) = l.accept() {
                let _ = host.set_nonblocking(true);
                let _ = host.set_nodelay(true);
                let mut s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 256 << 10]), tcp::SocketBuffer::new(vec![0; 256 << 10]));
                s.set_nagle_enabled(false);
                next_port = if next_port >= 65000 { 49152 } else { next_port + 1 };
                if s.connect(iface.context(), (v4(f.to_ip), f.to_port), next_port).is_err() {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let handle = sockets.add(s);
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                conns.push(Conn { host, handle, to_host: Vec::new(), host_eof: false, done: false });
            }
        }
        iface.poll(now(), &mut dev, &mut sockets);
        // Carry bytes both ways.
        for c in conns.iter_mut() {
            let s = sockets.get_mut::<tcp::Socket>(c.handle);
            // This machine -> the virtual network.
            if !c.host_eof && s.can_send() {
                let room = s.send_capacity() - s.send_queue();
                let want = room.min(buf.len());
                if want > 0 {
                    match c.host.read(&mut buf[..want]) {
                        Ok(0) => {
                            c.host_eof = true;
                            s.close();
                        }
                        Ok(n) => {
                            let _ = s.send_slice(&buf[..n]);
                            stats.to_net_bytes.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(_) => {
                            s.abort();
                            c.done = true;
                        }
                    }
                }
            }
            // The virtual network -> this machine.
            if c.to_host.is_empty() && s.can_recv() {
                if let Ok(n) = s.recv_slice(&mut buf) {
                    c.to_host.extend_from_slice(&buf[..n]);
                    stats.from_net_bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            while !c.to_host.is_empty() {
                match c.host.write(&c.to_host) {
                    Ok(n) => {
                        c.to_host.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        s.abort();
                        c.done = true;
                        break;
                    }
                }
            }
            // The peer on the network closed its side, and all is delivered.
            if c.to_host.is_empty() && !s.may_recv() && s.state() != tcp::State::SynSent && s.state() != tcp::State::SynReceived {
                let _ = c.host.shutdown(std::net::Shutdown::Write);
                if c.host_eof || !s.is_open() {
                    c.done = true;
                }
            }
            if !s.is_open() && c.to_host.is_empty() {
                c.done = true;
            }
        }
        conns.retain(|c| {
            if c.done {
                sockets.remove(c.handle);
            }
            !c.done
        });
        iface.poll(now(), &mut dev, &mut sockets);
        // Sleep until frames arrive or a timer is due, at most a millisecond
        // (host sockets are polled, not waited on).
        let delay = iface.poll_delay(now(), &sockets).map(|d| Duration::from_micros(d.total_micros())).unwrap_or(Duration::from_millis(1));
        let deadline = Instant::now() + delay.min(Duration::from_millis(1));
        if notify.wait_until(Some(deadline), || !from_switch.is_empty()) == Wake::Stop {
            return;
        }
    }
}
