//! libretto as a guest (xen-host/): what runs inside the guest image, and
//! the tools around it.
//!
//!   libretto guest run CONFIG        the guest's supervisor, started by its
//!                                    init: checks the configuration, finds
//!                                    the devices, mounts the drive's state
//!                                    filesystem, runs the system, relays the
//!                                    control channel, stops cleanly
//!   libretto guest precompile OUT IN precompile a component for any x86-64-v2
//!                                    CPU (the guest's CPU is not this one)
//!   libretto guest ctl SOCKET CMD... one command over the side channel
//!
//! The guest configuration (`/etc/libretto/guest.json` in the image):
//!
//! ```json
//! { "manifest": "system.json",
//!   "control_serial": "/dev/ttyS1",
//!   "drive": { "device": "0000:00:05.0", "state_mib": 64,
//!              "namespaces": [ { "name": "nbd", "mib": 256 } ] },
//!   "wait_for_devices_s": 15 }
//! ```
//!
//! The drive (named by PCI address or block device name) holds, from its
//! first byte, an ext2 filesystem of `state_mib` (made on first boot) with
//! the precompile cache and the logs, then each namespace in order: ranges
//! reserved for the block service (issue 9), which will serve them. A drive
//! smaller than all of that is refused.
//!
//! The side channel is a serial port (`control_serial`), so it works under
//! QEMU and Xen alike and never depends on the NIC under test. Each request
//! is one line and each reply one line of JSON, as on the control socket;
//! most lines are passed to it unchanged, so `libretto ctl --socket` works
//! across the serial line. The supervisor itself answers `drive` (the
//! drive's kernel counters and layout), `device` (the NIC devices' kernel
//! counters), `log` (the end of the log on the drive) and `shutdown`, and
//! adds a `guest` section with the drive and device counters to `stats`. A
//! request may start with `@TAG ` to have its reply start with the same tag
//! (`guest ctl` uses that to skip a reply meant for a client that left).

use serde::Deserialize;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    manifest: String,
    control_serial: Option<String>,
    drive: Option<RawDrive>,
    wait_for_devices_s: Option<u64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawDrive {
    device: String,
    state_mib: u64,
    #[serde(default)]
    namespaces: Vec<RawNamespace>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct RawNamespace {
    name: String,
    mib: u64,
}

/// Where the state filesystem is mounted in the guest.
const STATE_DIR: &str = "/var/lib/libretto";

fn say(line: &str) {
    eprintln!("libretto-guest: {line}");
}

/// Seconds since the guest kernel started (for boot-time figures).
fn uptime() -> String {
    std::fs::read_to_string("/proc/uptime").ok().and_then(|s| s.split_whitespace().next().map(str::to_string)).unwrap_or_else(|| "?".into())
}

/// A block device and the drive layout on it.
#[derive(Clone, Debug)]
struct Drive {
    name: String,
    pci: Option<String>,
    bytes: u64,
    state_mib: u64,
    namespaces: Vec<RawNamespace>,
}

fn block_devices() -> Vec<(String, Option<String>, u64)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/sys/block") else { return out };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("loop") || name.starts_with("ram") {
            continue;
        }
        let sectors: u64 = std::fs::read_to_string(e.path().join("size")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        out.push((name, crate::packet::pci_of(&e.path().join("device")), sectors * 512));
    }
    out.sort();
    out
}

pub fn find_drive(spec: &str) -> Result<(String, Option<String>, u64), String> {
    let all = block_devices();
    let want = crate::packet::normalize_pci(spec);
    let found = if crate::packet::is_pci_address(&want) {
        all.iter().find(|d| d.1.as_deref() == Some(want.as_str()))
    } else {
        all.iter().find(|d| d.0 == spec.trim_start_matches("/dev/"))
    };
    found.cloned().ok_or_else(|| {
        let have = if all.is_empty() { "there is none".to_string() } else { all.iter().map(|d| format!("{}{}", d.0, d.1.as_ref().map(|p| format!(" at {p}")).unwrap_or_default())).collect::<Vec<_>>().join(", ") };
        format!("no block device `{spec}` (by name or PCI address; have: {have})")
    })
}

/// Retry `f` until it succeeds or `secs` pass: drivers probe devices while
/// the supervisor starts.
fn wait_for<T>(secs: u64, f: impl Fn() -> Result<T, String>) -> Result<T, String> {
    let t = Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if t.elapsed() >= Duration::from_secs(secs) => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The drive's kernel counters (Documentation/block/stat.rst) and layout.
fn drive_json(d: &Drive) -> Value {
    let stat = std::fs::read_to_string(format!("/sys/block/{}/stat", d.name)).unwrap_or_default();
    let f: Vec<u64> = stat.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let g = |i: usize| f.get(i).copied().unwrap_or(0);
    let mut at = d.state_mib;
    let namespaces: Vec<Value> = d
        .namespaces
        .iter()
        .map(|n| {
            let v = json!({ "name": n.name, "offset_mib": at, "mib": n.mib });
            at += n.mib;
            v
        })
        .collect();
    json!({
        "device": d.name,
        "pci": d.pci,
        "bytes": d.bytes,
        "reads": g(0), "read_sectors": g(2), "read_ms": g(3),
        "writes": g(4), "write_sectors": g(6), "write_ms": g(7),
        "in_flight": g(8), "io_ms": g(9),
        "flushes": g(15), "flush_ms": g(16),
        "state": { "mib": d.state_mib, "mounted_at": STATE_DIR },
        "namespaces": namespaces,
    })
}

/// The kernel's counters of each network device the manifest uses.
fn devices_json(specs: &[String]) -> Value {
    let mut out = Vec::new();
    for spec in specs {
        let Ok(dev) = crate::packet::resolve(spec) else {
            out.push(json!({ "spec": spec, "error": "not found" }));
            continue;
        };
        let base = format!("/sys/class/net/{}/statistics", dev.name);
        let r = |f: &str| std::fs::read_to_string(format!("{base}/{f}")).ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0);
        let driver = std::fs::read_link(format!("/sys/class/net/{}/device/driver", dev.name)).ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()));
        out.push(json!({
            "spec": spec, "name": dev.name, "mac": dev.mac, "pci": dev.pci, "driver": driver,
            "rx_packets": r("rx_packets"), "rx_bytes": r("rx_bytes"), "rx_dropped": r("rx_dropped"), "rx_errors": r("rx_errors"),
            "tx_packets": r("tx_packets"), "tx_bytes": r("tx_bytes"), "tx_dropped": r("tx_dropped"), "tx_errors": r("tx_errors"),
        }));
    }
    Value::Array(out)
}

/// Put a serial port in raw mode: no echo, no line editing, no CR/LF games.
fn raw_tty(f: &std::fs::File) -> Result<(), String> {
    // SAFETY: termios is plain data filled by tcgetattr.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(f.as_raw_fd(), &mut t) != 0 {
            return Err(format!("not a terminal: {}", std::io::Error::last_os_error()));
        }
        libc::cfmakeraw(&mut t);
        libc::cfsetspeed(&mut t, libc::B115200);
        t.c_cflag |= libc::CLOCAL | libc::CREAD;
        if libc::tcsetattr(f.as_raw_fd(), libc::TCSANOW, &t) != 0 {
            return Err(format!("cannot set raw mode: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Ask the system's control socket; one JSON line back.
fn ask_system(control: &Path, line: &str) -> Value {
    let mut conn = match std::os::unix::net::UnixStream::connect(control) {
        Ok(c) => c,
        Err(e) => return json!({ "error": format!("the system is not answering at {}: {e}", control.display()) }),
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    if writeln!(conn, "{line}").is_err() {
        return json!({ "error": "the system closed the control socket" });
    }
    let mut reply = String::new();
    let _ = BufReader::new(&conn).read_line(&mut reply);
    serde_json::from_str(&reply).unwrap_or_else(|e| json!({ "error": format!("unreadable answer from the system: {e}") }))
}

fn tail(path: &Path, lines: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].iter().map(|s| s.to_string()).collect()
}

struct Relay {
    control: PathBuf,
    drive: Option<Drive>,
    devices: Vec<String>,
    log: Option<PathBuf>,
    shutdown: Arc<AtomicBool>,
}

impl Relay {
    fn answer(&self, line: &str) -> Value {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["shutdown"] => {
                self.shutdown.store(true, Ordering::SeqCst);
                json!({ "ok": "shutting down: the system stops, the drive is unmounted, the guest powers off" })
            }
            ["drive"] => match &self.drive {
                Some(d) => drive_json(d),
                None => json!({ "error": "this guest has no drive" }),
            },
            ["device"] => json!({ "devices": devices_json(&self.devices) }),
            ["log"] => match &self.log {
                Some(p) => json!({ "log": tail(p, 200) }),
                None => json!({ "error": "no log on a drive" }),
            },
            ["stats"] => {
                let mut v = ask_system(&self.control, line);
                if let Some(o) = v.as_object_mut() {
                    o.insert("guest".into(), json!({ "drive": self.drive.as_ref().map(drive_json), "devices": devices_json(&self.devices) }));
                }
                v
            }
            _ => ask_system(&self.control, line),
        }
    }

    /// Serve the serial line until the system stops.
    fn serve(self, port: std::fs::File) {
        let mut out = match port.try_clone() {
            Ok(o) => o,
            Err(e) => return say(&format!("control channel: {e}")),
        };
        let mut reader = BufReader::new(port);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) => std::thread::sleep(Duration::from_millis(50)),
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim().to_string();
                    if line.is_empty() {
                        continue;
                    }
                    let (tag, cmd) = match line.strip_prefix('@').and_then(|r| r.split_once(' ')) {
                        Some((tag, cmd)) => (format!("@{tag} "), cmd.trim().to_string()),
                        None => (String::new(), line.clone()),
                    };
                    let reply = self.answer(&cmd);
                    let _ = out.write_all(format!("{tag}{reply}\n").as_bytes());
                    let _ = out.flush();
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// Make the state filesystem on first boot (no ext2 magic at byte 1080)
/// and mount it.
fn mount_state(dev: &str, mib: u64) -> Result<(), String> {
    let path = format!("/dev/{dev}");
    let mut sb = [0u8; 1082];
    std::fs::File::open(&path).and_then(|mut f| f.read_exact(&mut sb)).map_err(|e| format!("{path}: cannot read: {e}"))?;
    if sb[1080..1082] != [0x53, 0xef] {
        say(&format!("{path}: no state filesystem yet; making one of {mib} MiB"));
        let out = std::process::Command::new("mke2fs")
            .args(["-F", "-b", "4096", "-L", "libretto-state", &path, &(mib * 1024).to_string()])
            .output()
            .map_err(|e| format!("cannot run mke2fs: {e}"))?;
        if !out.status.success() {
            return Err(format!("mke2fs {path}: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
    }
    std::fs::create_dir_all(STATE_DIR).map_err(|e| format!("{STATE_DIR}: {e}"))?;
    let src = std::ffi::CString::new(path.clone()).unwrap();
    let dst = std::ffi::CString::new(STATE_DIR).unwrap();
    for fs in [c"ext4", c"ext2"] {
        // SAFETY: NUL-terminated strings; no mount data.
        if unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) } == 0 {
            return Ok(());
        }
    }
    Err(format!("cannot mount {path} on {STATE_DIR}: {}", std::io::Error::last_os_error()))
}

fn unmount_state() {
    let dst = std::ffi::CString::new(STATE_DIR).unwrap();
    // SAFETY: sync and umount have no memory preconditions.
    unsafe {
        libc::sync();
        libc::umount(dst.as_ptr());
    }
}

/// The supervisor: returns 0 after a clean shutdown, 2 for a bad
/// configuration (one line said why), 1 if the system stopped by itself.
fn run_guest(config_path: &Path) -> i32 {
    let shown = config_path.display();
    macro_rules! fatal {
        ($($t:tt)*) => {{
            eprintln!("libretto guest: {}", format!($($t)*));
            return 2;
        }};
    }
    say(&format!("supervisor up at {} s after the kernel started", uptime()));
    let text = match std::fs::read_to_string(config_path) {
        Ok(t) => t,
        Err(e) => fatal!("{shown}: cannot read: {e}"),
    };
    let de = &mut serde_json::Deserializer::from_str(&text);
    let raw: RawConfig = match serde_path_to_error::deserialize(de) {
        Ok(r) => r,
        Err(e) => fatal!("{shown}: {}: {}", e.path(), e.inner()),
    };
    let base = config_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let manifest_path = base.join(&raw.manifest);
    let m = match crate::manifest::load(&manifest_path) {
        Ok(m) => m,
        Err(e) => fatal!("{e}"),
    };
    let wait_s = raw.wait_for_devices_s.unwrap_or(15);

    // The NICs the manifest names must be there (drivers may still be probing).
    let mut nic_specs = Vec::new();
    if let crate::manifest::NicBackend::Packet(spec) = &m.nic {
        nic_specs.push(("nic.packet".to_string(), spec.clone()));
    }
    for (i, a) in m.apps.iter().enumerate() {
        if let (true, Some(spec)) = (a.direct_packet, &a.direct_tap) {
            nic_specs.push((format!("apps[{i}].direct.packet"), spec.clone()));
        }
    }
    for (field, spec) in &nic_specs {
        if let Err(e) = wait_for(wait_s, || crate::packet::resolve(spec)) {
            fatal!("{}: {field}: {e}", manifest_path.display());
        }
    }

    // The drive: there, big enough for its namespaces, its state mounted.
    let mut drive = None;
    let mut log_path = None;
    if let Some(d) = &raw.drive {
        let (name, pci, bytes) = match wait_for(wait_s, || find_drive(&d.device)) {
            Ok(x) => x,
            Err(e) => fatal!("{shown}: drive.device: {e}"),
        };
        let need = d.state_mib + d.namespaces.iter().map(|n| n.mib).sum::<u64>();
        if bytes < need << 20 {
            let parts: Vec<String> = std::iter::once(format!("state {} MiB", d.state_mib)).chain(d.namespaces.iter().map(|n| format!("{} {} MiB", n.name, n.mib))).collect();
            fatal!("{shown}: drive {name}{}: {} MiB, too small for its namespaces ({} = {need} MiB)", pci.as_ref().map(|p| format!(" at {p}")).unwrap_or_default(), bytes >> 20, parts.join(" + "));
        }
        if d.state_mib < 8 {
            fatal!("{shown}: drive.state_mib: {} MiB is too small for the state filesystem (8 MiB at least)", d.state_mib);
        }
        // The block service may serve this drive, but never the state
        // filesystem at its start.
        if let Some(b) = &m.block {
            let served = b.device.to_string_lossy().to_string();
            let same = find_drive(&served).map(|x| x.0 == name).unwrap_or(false);
            if same {
                for (i, a) in m.apps.iter().enumerate() {
                    for (j, n) in a.block.iter().flat_map(|b| b.namespaces.iter()).enumerate() {
                        if n.offset < d.state_mib << 20 {
                            fatal!("{}: apps[{i}].block.namespaces[{j}].offset: {} MiB is inside the drive's state filesystem (the first {} MiB)", manifest_path.display(), n.offset >> 20, d.state_mib);
                        }
                    }
                }
            }
        }
        if let Err(e) = mount_state(&name, d.state_mib) {
            fatal!("drive {name}: {e}");
        }
        let _ = std::fs::create_dir_all(format!("{STATE_DIR}/cache"));
        let _ = std::fs::create_dir_all(format!("{STATE_DIR}/log"));
        log_path = Some(PathBuf::from(format!("{STATE_DIR}/log/libretto.log")));
        say(&format!("drive {name}{}: {} MiB; state filesystem on {STATE_DIR} ({} MiB), {} namespace(s) reserved for the block service", pci.as_ref().map(|p| format!(" at {p}")).unwrap_or_default(), bytes >> 20, d.state_mib, d.namespaces.len()));
        drive = Some(Drive { name, pci, bytes, state_mib: d.state_mib, namespaces: d.namespaces.clone() });
    }

    // The system, its output to the console and to the log on the drive.
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/bin/libretto"));
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("run").arg(&manifest_path).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    if drive.is_some() {
        cmd.env("LIBRETTO_CACHE_DIR", format!("{STATE_DIR}/cache"));
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => fatal!("cannot start the system: {e}"),
    };
    let last_line = Arc::new(Mutex::new(String::new()));
    let log_file = log_path.as_ref().and_then(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).ok()).map(|f| Arc::new(Mutex::new(f)));
    if let Some(f) = &log_file {
        let _ = writeln!(f.lock().unwrap(), "== boot at {} s", uptime());
    }
    let mut pipes: Vec<Box<dyn Read + Send>> = Vec::new();
    if let Some(o) = child.stdout.take() {
        pipes.push(Box::new(o));
    }
    if let Some(e) = child.stderr.take() {
        pipes.push(Box::new(e));
    }
    let mut copiers = Vec::new();
    for p in pipes {
        let (last, log) = (last_line.clone(), log_file.clone());
        copiers.push(std::thread::spawn(move || {
            for line in BufReader::new(p).lines().map_while(Result::ok) {
                eprintln!("{line}");
                if let Some(f) = &log {
                    let _ = writeln!(f.lock().unwrap(), "{line}");
                }
                *last.lock().unwrap() = line;
            }
        }));
    }

    let shutdown = Arc::new(AtomicBool::new(false));
    if let Some(port) = &raw.control_serial {
        match std::fs::OpenOptions::new().read(true).write(true).open(port) {
            Ok(f) => {
                if let Err(e) = raw_tty(&f) {
                    say(&format!("control channel {port}: {e}"));
                }
                let relay = Relay { control: m.control.clone(), drive: drive.clone(), devices: nic_specs.iter().map(|x| x.1.clone()).collect(), log: log_path.clone(), shutdown: shutdown.clone() };
                std::thread::Builder::new().name("ctl-serial".into()).spawn(move || relay.serve(f)).ok();
                say(&format!("control channel on {port}"));
            }
            Err(e) => say(&format!("control channel {port}: cannot open: {e} (no side channel)")),
        }
    }

    // Until the system stops by itself or a shutdown is asked for.
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if shutdown.load(Ordering::SeqCst) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let code = match status {
        Some(s) => {
            for c in copiers {
                let _ = c.join();
            }
            let code = s.code().unwrap_or(1);
            say(&format!("the system stopped by itself (exit status {code}); its last line: {}", last_line.lock().unwrap()));
            if code == 2 { 2 } else { 1 }
        }
        None => {
            say("shutdown asked for on the control channel: stopping the system");
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let t = Instant::now();
            let s = loop {
                if let Ok(Some(s)) = child.try_wait() {
                    break Some(s);
                }
                if t.elapsed() > Duration::from_secs(15) {
                    let _ = child.kill();
                    break child.wait().ok();
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            for c in copiers {
                let _ = c.join();
            }
            say(&format!("the system stopped (exit status {})", s.and_then(|s| s.code()).map(|c| c.to_string()).unwrap_or_else(|| "killed".into())));
            0
        }
    };
    if let Some(f) = &log_file {
        let _ = writeln!(f.lock().unwrap(), "== stopped at {} s", uptime());
    }
    drop(log_file);
    if drive.is_some() {
        unmount_state();
        say(&format!("drive state synced and unmounted from {STATE_DIR}"));
    }
    code
}

/// `libretto guest ctl SOCKET COMMAND...`: one command over the side
/// channel (QEMU's Unix socket for the guest's serial port); prints the
/// JSON reply.
fn ctl(socket: &str, cmd: &[String]) -> i32 {
    let tag = format!("{:x}", std::process::id() as u64 * 1_000_003 + Instant::now().elapsed().subsec_nanos() as u64 + std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos() as u64).unwrap_or(0));
    let mut conn = match std::os::unix::net::UnixStream::connect(socket) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("libretto guest ctl: cannot reach the guest's control channel at {socket}: {e}");
            return 2;
        }
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    if writeln!(conn, "@{tag} {}", cmd.join(" ")).is_err() {
        eprintln!("libretto guest ctl: {socket} closed the connection");
        return 2;
    }
    let want = format!("@{tag} ");
    let mut r = BufReader::new(&conn);
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => {
                eprintln!("libretto guest ctl: no answer from the guest at {socket}");
                return 2;
            }
            Ok(_) => {}
        }
        if let Some(reply) = line.strip_prefix(&want) {
            println!("{}", reply.trim_end());
            return if serde_json::from_str::<Value>(reply).map(|v| v.get("error").is_some()).unwrap_or(true) { 1 } else { 0 };
        }
    }
}

const USAGE: &str = "usage: libretto guest run CONFIG | precompile OUT.cwasm IN.wasm | ctl SOCKET COMMAND...";

pub fn main(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("run") if args.len() == 2 => run_guest(Path::new(&args[1])),
        Some("precompile") if args.len() == 3 => {
            crate::engine::use_portable_code();
            let bytes = match std::fs::read(&args[2]) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("libretto guest precompile: {}: {e}", args[2]);
                    return 2;
                }
            };
            match crate::engine::engine().precompile_component(&bytes) {
                Ok(code) => match std::fs::write(&args[1], code) {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("libretto guest precompile: {}: {e}", args[1]);
                        2
                    }
                },
                Err(e) => {
                    eprintln!("libretto guest precompile: {}: {}", args[2], format!("{e:#}").lines().next().unwrap_or(""));
                    2
                }
            }
        }
        Some("ctl") if args.len() >= 3 => ctl(&args[1], &args[2..]),
        _ => {
            eprintln!("libretto guest: {USAGE}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_drive_is_named_with_what_there_is() {
        let e = find_drive("0000:00:1f.6").unwrap_err();
        assert!(e.starts_with("no block device `0000:00:1f.6`"), "{e}");
    }

    #[test]
    fn the_drive_layout_puts_namespaces_after_the_state() {
        let d = Drive { name: "nope".into(), pci: None, bytes: 1 << 30, state_mib: 64, namespaces: vec![RawNamespace { name: "a".into(), mib: 100 }, RawNamespace { name: "b".into(), mib: 10 }] };
        let v = drive_json(&d);
        assert_eq!(v["namespaces"][0]["offset_mib"], 64);
        assert_eq!(v["namespaces"][1]["offset_mib"], 164);
    }
}
