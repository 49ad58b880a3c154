//! The system manifest: what `libretto run MANIFEST` boots. A JSON file;
//! the format is documented in docs/MANIFEST.md and its schema is
//! docs/manifest.schema.json. Every error is one line that names the file
//! and the field (`apps[1].ports.tcp[0]`).

use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: Option<String>,
    control: Option<String>,
    nic: RawNic,
    shared_ip: String,
    gateway: Option<String>,
    network_server: String,
    #[serde(default)]
    apps: Vec<RawApp>,
    policy: Option<RawPolicy>,
    block: Option<RawBlock>,
    watchdog_ms: Option<u64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawBlock {
    device: String,
    size: Option<serde_json::Value>,
    server: Option<String>,
    direct_io: Option<bool>,
    queue_depth: Option<u32>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawAppBlock {
    namespaces: Vec<RawNamespace>,
    #[serde(default = "server_mode")]
    mode: String,
    queue_depth: Option<u32>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawNamespace {
    nsid: Option<u32>,
    offset: Option<serde_json::Value>,
    size: serde_json::Value,
    block_size: Option<u32>,
    #[serde(default)]
    read_only: bool,
}

/// The shared block device and the block server (docs/MANIFEST.md).
#[derive(Clone, Debug)]
pub struct Block {
    pub device: PathBuf,
    /// Make the file this size if it does not exist.
    pub create_size: Option<u64>,
    pub server: Option<PathBuf>,
    pub direct_io: bool,
    pub queue_depth: u32,
}

/// A namespace of the shared device, in bytes (checked against the
/// device's block size when it is opened).
#[derive(Clone, Debug)]
pub struct NamespaceSpec {
    pub nsid: u32,
    pub offset: u64,
    pub size: u64,
    pub block_size: u32,
    pub read_only: bool,
}

#[derive(Clone, Debug)]
pub struct AppBlockSpec {
    pub namespaces: Vec<NamespaceSpec>,
    pub direct: bool,
    pub queue_depth: u32,
}

/// A size: a number of bytes, or a string like "4096", "512K", "128M", "2G".
pub fn parse_size(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => {
            let s = s.trim();
            let (num, mul) = match s.char_indices().last()? {
                (i, 'K' | 'k') => (&s[..i], 1u64 << 10),
                (i, 'M' | 'm') => (&s[..i], 1 << 20),
                (i, 'G' | 'g') => (&s[..i], 1 << 30),
                (i, 'T' | 't') => (&s[..i], 1 << 40),
                _ => (s, 1),
            };
            num.parse::<u64>().ok()?.checked_mul(mul)
        }
        _ => None,
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    direct_above_pps: u64,
    server_below_pps: u64,
    max_direct: Option<u32>,
    interval_ms: Option<u64>,
    min_dwell_ms: Option<u64>,
}

/// Automatic switching (docs/MANIFEST.md): an app with a NIC of its own
/// goes direct above a packet rate and back to the server below another,
/// with at most `max_direct` apps direct and at least `min_dwell_ms` in a
/// mode between switches.
#[derive(Clone, Debug)]
pub struct Policy {
    pub direct_above_pps: u64,
    pub server_below_pps: u64,
    pub max_direct: u32,
    pub interval_ms: u64,
    pub min_dwell_ms: u64,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawNic {
    tap: Option<String>,
    /// A real network device through AF_PACKET (packet.rs): by name, PCI address or MAC.
    packet: Option<String>,
    gateway: Option<RawGateway>,
    mac: Option<String>,
    mtu: Option<u32>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    address: Option<String>,
    forwards: Vec<RawForward>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawForward {
    listen: String,
    to: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawApp {
    name: String,
    image: String,
    #[serde(default = "shared")]
    ip: String,
    mac: Option<String>,
    #[serde(default = "server_mode")]
    mode: String,
    direct: Option<RawDirect>,
    #[serde(default)]
    ports: RawPorts,
    #[serde(default)]
    args: BTreeMap<String, serde_json::Value>,
    block: Option<RawAppBlock>,
}

fn shared() -> String {
    "shared".into()
}

fn server_mode() -> String {
    "server".into()
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawDirect {
    tap: Option<String>,
    /// A real network device through AF_PACKET (packet.rs).
    packet: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawPorts {
    #[serde(default)]
    tcp: Vec<serde_json::Value>,
    #[serde(default)]
    udp: Vec<serde_json::Value>,
}

#[derive(Clone, Debug)]
pub struct Manifest {
    pub path: PathBuf,
    pub name: String,
    pub control: PathBuf,
    pub nic: NicBackend,
    pub nic_mac: u64,
    pub mtu: u32,
    pub shared_ip: u32,
    pub prefix_len: u8,
    pub gateway: Option<u32>,
    pub network_server: PathBuf,
    pub apps: Vec<App>,
    pub policy: Option<Policy>,
    pub block: Option<Block>,
    /// How long a server may make no progress before the watchdog kills it.
    pub watchdog: std::time::Duration,
}

/// What the physical NIC is.
#[derive(Clone, Debug)]
pub enum NicBackend {
    /// A TAP device (needs root or a device made for the user).
    Tap(String),
    /// The gateway: a host on the virtual network at `ip` that publishes
    /// addresses of it on this machine's ports (no root needed).
    Gateway { ip: u32, forwards: Vec<crate::gateway::Forward> },
    /// A real network device (a passed-through NIC in the guest image),
    /// named by interface name, PCI address or MAC; driven through an
    /// AF_PACKET socket (packet.rs).
    Packet(String),
}

impl NicBackend {
    pub fn describe(&self) -> String {
        match self {
            NicBackend::Tap(t) => format!("TAP {t}"),
            NicBackend::Packet(d) => format!("device {d} (AF_PACKET)"),
            NicBackend::Gateway { ip, forwards } => format!(
                "gateway {} ({})",
                ip_string(*ip),
                forwards.iter().map(|f| format!("{} -> {}:{}", f.listen, ip_string(f.to_ip), f.to_port)).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

#[derive(Clone, Debug)]
pub struct App {
    pub name: String,
    pub image: PathBuf,
    /// A dedicated address, or None for the shared IP.
    pub ip: Option<(u32, u8)>,
    pub mac: u64,
    /// Start in direct mode.
    pub direct: bool,
    /// The app's own NIC for direct mode (a TAP device on the same segment,
    /// or a real network device if `direct_packet`).
    pub direct_tap: Option<String>,
    pub direct_packet: bool,
    pub tcp: Vec<RangeInclusive<u16>>,
    pub udp: Vec<RangeInclusive<u16>>,
    pub args: Vec<(String, String)>,
    /// Namespaces of the shared block device, if the app has any.
    pub block: Option<AppBlockSpec>,
}

pub fn parse_ip(s: &str) -> Option<u32> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut ip = 0u32;
    for p in parts {
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u32 = p.parse().ok()?;
        if n > 255 {
            return None;
        }
        ip = (ip << 8) | n;
    }
    Some(ip)
}

pub fn ip_string(ip: u32) -> String {
    let b = ip.to_be_bytes();
    format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])
}

fn parse_cidr(s: &str) -> Option<(u32, u8)> {
    let (ip, len) = s.split_once('/')?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    Some((parse_ip(ip)?, len))
}

fn parse_port_item(v: &serde_json::Value) -> Option<RangeInclusive<u16>> {
    match v {
        serde_json::Value::Number(n) => {
            let p = n.as_u64().filter(|p| (1..=65535).contains(p))? as u16;
            Some(p..=p)
        }
        serde_json::Value::String(s) => {
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            let a: u16 = a.trim().parse().ok().filter(|p| *p >= 1)?;
            let b: u16 = b.trim().parse().ok()?;
            (a <= b).then_some(a..=b)
        }
        _ => None,
    }
}

fn default_control() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        return PathBuf::from(d).join("libretto.sock");
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("libretto-{uid}.sock"))
}

/// Read and check a manifest. Errors name the file and the field.
pub fn load(path: &Path) -> Result<Manifest, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{shown}: no such file"),
        _ => format!("{shown}: cannot read: {e}"),
    })?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    let raw: Raw = serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        // serde's message ends with " at line L column C"; keep it, it helps.
        if at == "." || at == "?" || at.is_empty() {
            format!("{shown}: {msg}")
        } else {
            format!("{shown}: {at}: {msg}")
        }
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let resolve = |p: &str| {
        let p = PathBuf::from(p);
        if p.is_absolute() { p } else { base.join(p) }
    };
    let err = |field: &str, why: String| format!("{shown}: {field}: {why}");

    let (shared_ip, prefix_len) = parse_cidr(&raw.shared_ip).ok_or_else(|| err("shared_ip", format!("`{}` is not an address with a prefix length, like 10.0.0.2/24", raw.shared_ip)))?;
    let gateway = match &raw.gateway {
        Some(g) => Some(parse_ip(g).ok_or_else(|| err("gateway", format!("`{g}` is not an IPv4 address")))?),
        None => None,
    };
    let nic = match (&raw.nic.tap, &raw.nic.gateway) {
        (None, None) if raw.nic.packet.is_some() => {
            let d = raw.nic.packet.clone().unwrap_or_default();
            if d.is_empty() || d.len() > 32 {
                return Err(err("nic.packet", format!("`{d}` is not a network device name, PCI address or MAC")));
            }
            NicBackend::Packet(d)
        }
        (Some(t), None) if raw.nic.packet.is_none() => {
            if t.is_empty() || t.len() > 15 {
                return Err(err("nic.tap", format!("`{t}` is not a network device name (1 to 15 characters)")));
            }
            NicBackend::Tap(t.clone())
        }
        (None, Some(g)) if raw.nic.packet.is_none() => {
            let ip = match &g.address {
                Some(a) => parse_ip(a).ok_or_else(|| err("nic.gateway.address", format!("`{a}` is not an IPv4 address")))?,
                None => (shared_ip & !(u32::MAX >> prefix_len.min(31))) | 1,
            };
            if ip == shared_ip {
                return Err(err("nic.gateway.address", "is the shared IP".into()));
            }
            if g.forwards.is_empty() {
                return Err(err("nic.gateway.forwards", "publishes nothing; give at least one {\"listen\": \"127.0.0.1:PORT\", \"to\": \"IP:PORT\"}".into()));
            }
            let mut forwards = Vec::new();
            for (i, f) in g.forwards.iter().enumerate() {
                let listen: std::net::SocketAddr = f.listen.parse().map_err(|_| err(&format!("nic.gateway.forwards[{i}].listen"), format!("`{}` is not an address:port like 127.0.0.1:8080", f.listen)))?;
                let (ip, port) = f
                    .to
                    .rsplit_once(':')
                    .and_then(|(ip, port)| Some((parse_ip(ip)?, port.parse::<u16>().ok().filter(|p| *p > 0)?)))
                    .ok_or_else(|| err(&format!("nic.gateway.forwards[{i}].to"), format!("`{}` is not IP:PORT on the virtual network", f.to)))?;
                forwards.push(crate::gateway::Forward { listen, to_ip: ip, to_port: port });
            }
            NicBackend::Gateway { ip, forwards }
        }
        _ => return Err(err("nic", "give exactly one of \"tap\" (a TAP device), \"packet\" (a network device: name, PCI address or MAC) or \"gateway\" (ports on this machine, no root)".into())),
    };
    let nic_mac = match &raw.nic.mac {
        Some(m) => crate::apprun::parse_mac(m).map_err(|e| err("nic.mac", e))?,
        None => 0x0200_0000_0001,
    };
    if nic_mac >> 40 & 1 == 1 {
        return Err(err("nic.mac", "a group (multicast) address cannot be a NIC's".into()));
    }
    let mtu = raw.nic.mtu.unwrap_or(1500);
    if !(576..=9000).contains(&mtu) {
        return Err(err("nic.mtu", format!("{mtu}: from 576 to 9000")));
    }
    let network_server = resolve(&raw.network_server);
    if !network_server.exists() {
        return Err(err("network_server", format!("{}: no such file", network_server.display())));
    }
    let mut apps = Vec::new();
    let mut names = std::collections::HashSet::new();
    let mut ips = std::collections::HashSet::new();
    for (i, a) in raw.apps.iter().enumerate() {
        let field = |f: &str| format!("apps[{i}].{f}");
        if a.name.is_empty() || !a.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(err(&field("name"), format!("`{}`: letters, digits, - and _ only", a.name)));
        }
        if !names.insert(a.name.clone()) {
            return Err(err(&field("name"), format!("`{}` is used by another app", a.name)));
        }
        let image = resolve(&a.image);
        if !image.exists() {
            return Err(err(&field("image"), format!("{}: no such file", image.display())));
        }
        let ip = if a.ip == "shared" {
            None
        } else {
            let (ip, len) = parse_cidr(&a.ip).ok_or_else(|| err(&field("ip"), format!("`{}` is not \"shared\" or an address with a prefix length", a.ip)))?;
            if ip == shared_ip {
                return Err(err(&field("ip"), "is the shared IP; write \"shared\" to share it".into()));
            }
            if !ips.insert(ip) {
                return Err(err(&field("ip"), format!("{} is given to another app", ip_string(ip))));
            }
            Some((ip, len))
        };
        let mac = match (&a.mac, ip) {
            (Some(_), None) => return Err(err(&field("mac"), "only an app with its own IP has its own MAC (apps on the shared IP use the NIC's)".into())),
            (Some(m), Some(_)) => crate::apprun::parse_mac(m).map_err(|e| err(&field("mac"), e))?,
            (None, Some(_)) => nic_mac + 0x100 + i as u64 + 1,
            (None, None) => nic_mac,
        };
        let direct = match a.mode.as_str() {
            "server" => false,
            "direct" => true,
            other => return Err(err(&field("mode"), format!("`{other}`: \"server\" or \"direct\""))),
        };
        let direct_packet = a.direct.as_ref().is_some_and(|d| d.packet.is_some());
        let direct_tap = match &a.direct {
            Some(d) if ip.is_none() => {
                let _ = d;
                return Err(err(&field("direct"), "only an app with its own IP and MAC can go direct (apps on the shared IP share the NIC's MAC)".into()));
            }
            Some(RawDirect { tap: Some(t), packet: None }) if t.is_empty() || t.len() > 15 => return Err(err(&field("direct.tap"), format!("`{t}` is not a network device name"))),
            Some(RawDirect { tap: Some(t), packet: None }) => Some(t.clone()),
            Some(RawDirect { tap: None, packet: Some(d) }) if d.is_empty() || d.len() > 32 => return Err(err(&field("direct.packet"), format!("`{d}` is not a network device name, PCI address or MAC"))),
            Some(RawDirect { tap: None, packet: Some(d) }) => Some(d.clone()),
            Some(_) => return Err(err(&field("direct"), "give exactly one of \"tap\" or \"packet\"".into())),
            None => None,
        };
        if direct && direct_tap.is_none() {
            return Err(err(&field("mode"), "\"direct\" needs a NIC of the app's own: \"direct\": {\"tap\": \"NAME\"}".into()));
        }
        let ranges = |list: &[serde_json::Value], proto: &str| -> Result<Vec<RangeInclusive<u16>>, String> {
            list.iter()
                .enumerate()
                .map(|(j, v)| parse_port_item(v).ok_or_else(|| err(&field(&format!("ports.{proto}[{j}]")), format!("{v} is not a port (1-65535) or a range \"A-B\""))))
                .collect()
        };
        let tcp = ranges(&a.ports.tcp, "tcp")?;
        let udp = ranges(&a.ports.udp, "udp")?;
        if ip.is_some() && (!tcp.is_empty() || !udp.is_empty()) {
            return Err(err(&field("ports"), "ports are for apps on the shared IP; an app with its own IP may bind any".into()));
        }
        let mut args = Vec::new();
        for (k, v) in &a.args {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                other => return Err(err(&field(&format!("args.{k}")), format!("{other} is not a string, number or boolean"))),
            };
            if k == "ip" || k == "gateway" {
                return Err(err(&field(&format!("args.{k}")), "is set by the host from the manifest".into()));
            }
            args.push((k.clone(), v));
        }
        let block = match &a.block {
            None => None,
            Some(b) => {
                if raw.block.is_none() {
                    return Err(err(&field("block"), "the manifest has no \"block\" device to give namespaces of".into()));
                }
                let direct = match b.mode.as_str() {
                    "server" => false,
                    "direct" => true,
                    other => return Err(err(&field("block.mode"), format!("`{other}`: \"server\" or \"direct\""))),
                };
                if b.namespaces.is_empty() {
                    return Err(err(&field("block.namespaces"), "is empty; give at least one {\"size\": \"64M\"}".into()));
                }
                let queue_depth = b.queue_depth.unwrap_or(128);
                if !(1..=4096).contains(&queue_depth) {
                    return Err(err(&field("block.queue_depth"), format!("{queue_depth}: from 1 to 4096")));
                }
                let mut nss: Vec<NamespaceSpec> = Vec::new();
                for (j, n) in b.namespaces.iter().enumerate() {
                    let nf = |f: &str| field(&format!("block.namespaces[{j}].{f}"));
                    let nsid = n.nsid.unwrap_or(j as u32 + 1);
                    if nsid == 0 || nsid == u32::MAX || nss.iter().any(|x| x.nsid == nsid) {
                        return Err(err(&nf("nsid"), format!("{nsid}: namespace ids are unique, from 1")));
                    }
                    let block_size = n.block_size.unwrap_or(512);
                    if block_size != 512 && block_size != 4096 {
                        return Err(err(&nf("block_size"), format!("{block_size}: 512 or 4096")));
                    }
                    let size = parse_size(&n.size).ok_or_else(|| err(&nf("size"), format!("{} is not a size like \"64M\"", n.size)))?;
                    let offset = match &n.offset {
                        Some(o) => parse_size(o).ok_or_else(|| err(&nf("offset"), format!("{o} is not a size like \"64M\"")))?,
                        None => 0,
                    };
                    if size == 0 || size % block_size as u64 != 0 {
                        return Err(err(&nf("size"), format!("{size} bytes is not a positive multiple of the block size {block_size}")));
                    }
                    if offset % 4096 != 0 {
                        return Err(err(&nf("offset"), format!("{offset} is not a multiple of 4096")));
                    }
                    nss.push(NamespaceSpec { nsid, offset, size, block_size, read_only: n.read_only });
                }
                Some(AppBlockSpec { namespaces: nss, direct, queue_depth })
            }
        };
        apps.push(App { name: a.name.clone(), image, ip, mac, direct, direct_tap, direct_packet, tcp, udp, args, block });
    }
    // Grants may overlap (two apps allowed the ephemeral range, say): the
    // portmap gives a port to the first that binds it and refuses the next.
    let policy = match &raw.policy {
        None => None,
        Some(p) => {
            if p.server_below_pps >= p.direct_above_pps {
                return Err(err("policy.server_below_pps", format!("{} must be below direct_above_pps ({}), or apps would flap", p.server_below_pps, p.direct_above_pps)));
            }
            let interval_ms = p.interval_ms.unwrap_or(500);
            if !(50..=60_000).contains(&interval_ms) {
                return Err(err("policy.interval_ms", format!("{interval_ms}: from 50 to 60000")));
            }
            if !apps.iter().any(|a| a.direct_tap.is_some()) {
                return Err(err("policy", "no app has a NIC of its own (\"direct\": {\"tap\": ...}), so there is nothing to switch".into()));
            }
            Some(Policy { direct_above_pps: p.direct_above_pps, server_below_pps: p.server_below_pps, max_direct: p.max_direct.unwrap_or(u32::MAX), interval_ms, min_dwell_ms: p.min_dwell_ms.unwrap_or(2000) })
        }
    };
    let block = match &raw.block {
        None => None,
        Some(b) => {
            if b.device.is_empty() {
                return Err(err("block.device", "is empty; give a file or a block device".into()));
            }
            // A PCI address names a drive (an NVMe controller in a guest);
            // it is found when the device opens, after drivers probe it.
            let by_pci = crate::packet::is_pci_address(&crate::packet::normalize_pci(&b.device));
            let device = if by_pci { PathBuf::from(crate::packet::normalize_pci(&b.device)) } else { resolve(&b.device) };
            let create_size = match &b.size {
                Some(v) => Some(parse_size(v).filter(|n| *n > 0 && n % 4096 == 0).ok_or_else(|| err("block.size", format!("{v} is not a size like \"256M\" (a multiple of 4096)")))?),
                None => None,
            };
            if create_size.is_none() && !by_pci && !device.exists() {
                return Err(err("block.device", format!("{}: no such file (give \"size\" to have it made)", device.display())));
            }
            let server = match &b.server {
                Some(p) => {
                    let p = resolve(p);
                    if !p.exists() {
                        return Err(err("block.server", format!("{}: no such file", p.display())));
                    }
                    Some(p)
                }
                None => None,
            };
            let queue_depth = b.queue_depth.unwrap_or(64);
            if !(1..=4096).contains(&queue_depth) {
                return Err(err("block.queue_depth", format!("{queue_depth}: from 1 to 4096")));
            }
            if server.is_none() {
                if let Some((i, _)) = apps.iter().enumerate().find(|(_, a)| a.block.as_ref().is_some_and(|b| !b.direct)) {
                    return Err(err(&format!("apps[{i}].block.mode"), "\"server\" needs a block server: give \"block\": {\"server\": \"…/block-server.wasm\"}".into()));
                }
            }
            // Writable namespaces of different apps must not overlap.
            let all: Vec<(usize, &NamespaceSpec)> = apps.iter().enumerate().flat_map(|(i, a)| a.block.iter().flat_map(move |b| b.namespaces.iter().map(move |n| (i, n)))).collect();
            for (x, (i, a)) in all.iter().enumerate() {
                for (j, b) in all.iter().skip(x + 1) {
                    let overlap = a.offset < b.offset + b.size && b.offset < a.offset + a.size;
                    if overlap && (!a.read_only || !b.read_only) {
                        return Err(err(&format!("apps[{j}].block.namespaces"), format!("nsid {} overlaps nsid {} of app `{}` and one of them is writable", b.nsid, a.nsid, apps[*i].name)));
                    }
                }
            }
            Some(Block { device, create_size, server, direct_io: b.direct_io.unwrap_or(true), queue_depth })
        }
    };
    let watchdog_ms = raw.watchdog_ms.unwrap_or(500);
    if !(50..=600_000).contains(&watchdog_ms) {
        return Err(err("watchdog_ms", format!("{watchdog_ms}: from 50 to 600000")));
    }
    Ok(Manifest {
        watchdog: std::time::Duration::from_millis(watchdog_ms),
        path: path.to_path_buf(),
        name: raw.name.unwrap_or_else(|| "libretto".into()),
        control: raw.control.map(|c| resolve(&c)).unwrap_or_else(default_control),
        nic,
        nic_mac,
        mtu,
        shared_ip,
        prefix_len,
        gateway,
        network_server,
        apps,
        policy,
        block,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("libretto-manifest-{}-{:?}", std::process::id(), std::thread::current().id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("ns.wasm"), b"x").unwrap();
        std::fs::write(d.join("app.wasm"), b"x").unwrap();
        d
    }

    const GOOD: &str = r#"{
      "nic": { "tap": "tap0" },
      "shared_ip": "10.0.0.2/24",
      "network_server": "ns.wasm",
      "apps": [
        { "name": "web", "image": "app.wasm", "ports": { "tcp": [80, "8000-8010"] }, "args": { "echo": 80 } },
        { "name": "own", "image": "app.wasm", "ip": "10.0.0.3/24" }
      ]
    }"#;

    #[test]
    fn a_good_manifest_parses_with_defaults() {
        let d = dir();
        let m = load(&write(&d, "m.json", GOOD)).unwrap();
        assert_eq!(m.shared_ip, 0x0a00_0002);
        assert_eq!(m.apps[0].tcp, vec![80..=80, 8000..=8010]);
        assert_eq!(m.apps[0].ip, None);
        assert_eq!(m.apps[0].mac, m.nic_mac);
        assert_eq!(m.apps[1].ip, Some((0x0a00_0003, 24)));
        assert_ne!(m.apps[1].mac, m.nic_mac);
        assert_eq!(m.apps[0].args, vec![("echo".to_string(), "80".to_string())]);
        assert_eq!(m.network_server, d.join("ns.wasm"));
    }

    fn bad(text: &str) -> String {
        let d = dir();
        load(&write(&d, "bad.json", text)).unwrap_err()
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(&str, &str)> = vec![
            (r#"{"nic":{"tap":"t"},"shared_ip":"10.0.0.2","network_server":"ns.wasm"}"#, "shared_ip: `10.0.0.2` is not an address"),
            (r#"{"nic":{"tap":"t"},"shared_ip":"10.0.0.2/24","network_server":"nope.wasm"}"#, "network_server: "),
            (r#"{"nic":{"tap":"t","speed":1},"shared_ip":"10.0.0.2/24","network_server":"ns.wasm"}"#, "nic.speed: unknown field `speed`"),
            (r#"{"nic":{},"shared_ip":"10.0.0.2/24","network_server":"ns.wasm"}"#, "nic: give exactly one of"),
            (r#"{"nic":{"gateway":{"forwards":[{"listen":"127.0.0.1","to":"10.0.0.2:80"}]}},"shared_ip":"10.0.0.2/24","network_server":"ns.wasm"}"#, "nic.gateway.forwards[0].listen: `127.0.0.1` is not"),
            (r#"{"nic":{"gateway":{"forwards":[{"listen":"127.0.0.1:1","to":"10.0.0.2"}]}},"shared_ip":"10.0.0.2/24","network_server":"ns.wasm"}"#, "nic.gateway.forwards[0].to: `10.0.0.2` is not IP:PORT"),
            (r#"{"nic":{"tap":"t"},"shared_ip":"10.0.0.2/24","network_server":"ns.wasm","apps":[{"name":"a","image":"app.wasm","ports":{"tcp":[80,"90-80"]}}]}"#, "apps[0].ports.tcp[1]: \"90-80\" is not a port"),
            (r#"{"nic":{"tap":"t"},"shared_ip":"10.0.0.2/24","network_server":"ns.wasm","apps":[{"name":"a","image":"app.wasm","mode":"fast"}]}"#, "apps[0].mode: `fast`"),
            (r#"{"nic":{"tap":"t"},"shared_ip":"10.0.0.2/24","network_server":"ns.wasm","apps":[{"name":"a","image":"app.wasm","ip":"10.0.0.2/24"}]}"#, "apps[0].ip: is the shared IP"),
            (r#"{"nic":{"tap":"t"},"shared_ip":"10.0.0.2/24","network_server":"ns.wasm","apps":[{"name":"a","image":"app.wasm","args":{"ip":"1.2.3.4"}}]}"#, "apps[0].args.ip: is set by the host"),
            (r#"{"nic":{"tap":"t"},"shared_ip":"10.0.0.2/24","network_server":"ns.wasm","apps":[{"name":"a b","image":"app.wasm"}]}"#, "apps[0].name: `a b`"),
            (r#"{"nic":{"tap":"t"},"shared_ip":"10.0.0.2/24","network_server":"ns.wasm","apps":[{"name":"a","image":"app.wasm"},{"name":"a","image":"app.wasm"}]}"#, "apps[1].name: `a` is used by another app"),
            (r#"{"nic":{"tap":"t"},"shared_ip":"10.0.0.2/24","network_server":"ns.wasm","apps":[{"name":"a"}]}"#, "apps[0]: missing field `image`"),
            (r#"{"nic":{"tap":"t"},"shared_ip":"10.0.0.2/24","network_server":"ns.wasm","apps":[{"name":"a","image":"app.wasm","ports":{"tcp":[0]}}]}"#, "apps[0].ports.tcp[0]: 0 is not a port"),
            ("{ not json", "bad.json: key must be a string"),
        ];
        for (text, want) in cases {
            let got = bad(text);
            assert!(got.contains(want), "for {text}\n got: {got}\nwant: {want}");
            assert!(got.contains("bad.json"), "names the file: {got}");
            assert!(!got.contains('\n'), "one line: {got}");
        }
    }
}
