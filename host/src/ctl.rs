//! The control socket and `libretto ctl`.
//!
//! A running system listens on a Unix socket (the manifest's `control`,
//! by default `$XDG_RUNTIME_DIR/libretto.sock` or `/tmp/libretto-UID.sock`).
//! A client writes one command line and reads one JSON document:
//!
//!   apps      every app: port, addresses, mode, status
//!   stats     per-port ring counters, drops by reason, per-app host counters
//!   portmap   every bound port: protocol, port, app
//!
//! `libretto ctl COMMAND` prints it as a table; `--json` prints the JSON.

use crate::manifest::ip_string;
use crate::portmap::Proto;
use crate::switch::DROP_REASONS;
use crate::system::System;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub fn mac_string(mac: u64) -> String {
    let b = mac.to_be_bytes();
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[2], b[3], b[4], b[5], b[6], b[7])
}

fn load(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn drops(arr: &[std::sync::atomic::AtomicU64; 9]) -> Value {
    let mut m = serde_json::Map::new();
    for (i, r) in DROP_REASONS.iter().enumerate() {
        let v = load(&arr[i]);
        if v > 0 {
            m.insert(r.to_string(), json!(v));
        }
    }
    Value::Object(m)
}

pub fn answer(sys: &System, line: &str) -> Value {
    let words: Vec<&str> = line.split_whitespace().collect();
    let cmd = words.first().copied().unwrap_or("");
    let result = |r: Result<String, String>| match r {
        Ok(s) => json!({ "ok": s }),
        Err(e) => json!({ "error": e }),
    };
    match (cmd, &words[1..]) {
        ("switch", [app, mode]) => {
            let to = match *mode {
                "direct" => crate::switch::Mode::Direct,
                "server" => crate::switch::Mode::Server,
                other => return json!({ "error": format!("mode `{other}`: direct or server") }),
            };
            return result(sys.switch_app(app, to));
        }
        ("switch", [app, mode, "block"]) => {
            let to = match *mode {
                "direct" => crate::block::service::Mode::Direct,
                "server" => crate::block::service::Mode::Server,
                other => return json!({ "error": format!("mode `{other}`: direct or server") }),
            };
            return result(sys.switch_block(app, to));
        }
        ("switch", [app, mode, "net"]) => return answer(sys, &format!("switch {app} {mode}")),
        ("kill", ["block-server"]) => {
            return match sys.block_server() {
                Ok(k) => {
                    crate::supervise::kill(k.as_ref(), &sys.events, sys.started);
                    json!({ "ok": "block server killed; the supervisor restarts it" })
                }
                Err(e) => json!({ "error": e }),
            };
        }
        ("fault", ["block-server", f]) => {
            let fault = match *f {
                "crash" => crate::supervise::Fault::Crash,
                "hang" => crate::supervise::Fault::Hang,
                other => return json!({ "error": format!("fault `{other}`: crash or hang") }),
            };
            return match sys.block_server() {
                Ok(k) => {
                    k.control().inject(fault);
                    crate::system::record(&sys.events, sys.started, format!("fault injected into the block server: {f}"));
                    json!({ "ok": format!("the block server will {f} when it next takes requests") })
                }
                Err(e) => json!({ "error": e }),
            };
        }
        ("swap", ["block-server", path]) => {
            return result(sys.block.as_ref().and_then(|b| b.server.as_ref()).ok_or_else(|| "this system has no block server".to_string()).and_then(|(st, k)| crate::supervise::swap(k.as_ref(), st, std::path::Path::new(path))));
        }
        ("kill", ["network-server"]) => {
            sys.kill_server();
            return json!({ "ok": "network server killed; the supervisor restarts it" });
        }
        ("fault", ["network-server", f]) => {
            let fault = match *f {
                "crash" => crate::switch::Fault::Crash,
                "hang" => crate::switch::Fault::Hang,
                other => return json!({ "error": format!("fault `{other}`: crash or hang") }),
            };
            sys.switch.control.inject(fault);
            crate::system::record(&sys.events, sys.started, format!("fault injected into the network server: {f}"));
            return json!({ "ok": format!("the network server will {f} on its next call") });
        }
        ("swap", ["network-server", path]) => return result(sys.swap_server(std::path::Path::new(path))),
        ("events", []) => {
            return json!({ "events": sys.events.lock().unwrap().iter().map(|e| json!({ "at_s": e.at_s, "what": e.what })).collect::<Vec<_>>() });
        }
        (_, []) => {}
        _ => return json!({ "error": format!("`{line}`: unknown command or wrong arguments") }),
    }
    match cmd {
        "apps" => json!({
            "apps": sys.apps.iter().map(|a| json!({
                "name": a.name,
                "port": a.port.id,
                "ip": ip_string(a.ip.unwrap_or(sys.manifest.shared_ip)),
                "shared_ip": a.ip.is_none(),
                "mac": mac_string(a.port.mac),
                "mode": if *a.mode.lock().unwrap() == crate::switch::Mode::Direct { "direct" } else { "server" },
                "direct_nic": a.direct.as_ref().map(|d| d.tap.name.clone()),
                "switches": load(&a.switches),
                "status": a.status.lock().unwrap().text(),
            })).collect::<Vec<_>>(),
            "network_server": {
                "status": sys.server.status.lock().unwrap().text(),
                "restarts": load(&sys.server.restarts),
                "build": sys.server.current.lock().unwrap().1.clone(),
            },
            "block_server": sys.block.as_ref().and_then(|b| b.server.as_ref()).map(|(st, _)| json!({
                "status": st.status.lock().unwrap().text(),
                "restarts": load(&st.restarts),
                "build": st.current.lock().unwrap().1.clone(),
            })),
        }),
        "stats" => {
            let sw = &sys.switch;
            json!({
                "uptime_s": sys.started.elapsed().as_secs_f64(),
                "ports": sw.ports().iter().map(|p| json!({
                    "port": p.id,
                    "name": p.name,
                    "in_frames": load(&p.stats.in_frames),
                    "in_bytes": load(&p.stats.in_bytes),
                    "out_frames": load(&p.stats.out_frames),
                    "out_bytes": load(&p.stats.out_bytes),
                    "out_ring_full": load(&p.stats.out_full),
                    "in_ring_full": load(&p.to_server.stats.dropped_full),
                    "drops": drops(&p.stats.drops),
                    "queued_in": p.to_server.len(),
                    "queued_out": p.from_server.len(),
                })).collect::<Vec<_>>(),
                "server": {
                    "drops": drops(&sw.drops),
                    "consumed": load(&sw.consumed),
                    "built": load(&sw.built),
                    "flooded": load(&sw.flooded),
                    "leaked": load(&sw.leaked),
                    "invalid": load(&sw.invalid),
                },
                "apps": sys.apps.iter().map(|a| json!({
                    "name": a.name,
                    "tx_frames": load(&a.counters.tx_frames),
                    "rx_frames": load(&a.counters.rx_frames),
                    "tx_invalid": load(&a.counters.tx_invalid),
                    "tx_ring_full": load(&a.counters.tx_full),
                })).collect::<Vec<_>>(),
                "block": sys.block.as_ref().map(block_stats),
                "nic": {
                    "rx_frames": load(&sys.tap.rx_frames),
                    "rx_bytes": load(&sys.tap.rx_bytes),
                    "rx_bad_checksum": load(&sys.tap.rx_bad_checksum),
                    "tx_frames": load(&sys.tap.tx_frames),
                    "tx_bytes": load(&sys.tap.tx_bytes),
                    "tx_errors": load(&sys.tap.tx_errors),
                },
            })
        }
        "portmap" => {
            let shared = sys.switch.portmap.entries();
            json!({
                "shared_ip": ip_string(sys.manifest.shared_ip),
                "entries": shared.iter().map(|(proto, port, app)| json!({
                    "proto": if *proto == Proto::Tcp { "tcp" } else { "udp" },
                    "port": port,
                    "app": sys.apps.iter().find(|a| a.port.id == *app).map(|a| a.name.clone()).unwrap_or_else(|| format!("#{app}")),
                })).collect::<Vec<_>>(),
            })
        }
        other => json!({ "error": format!("unknown command `{other}` (apps, stats, portmap)") }),
    }
}

/// The block service: the device, each app's queue, and the block
/// server's own counters as it last reported them.
fn block_stats(b: &crate::system::BlockSystem) -> Value {
    let svc = &b.service;
    let (inbox, at_server, on_device) = svc.census();
    let mut server = serde_json::Map::new();
    for (k, v) in svc.server_report.lock().unwrap().iter() {
        server.insert(k.clone(), json!(v));
    }
    json!({
        "device": {
            "block_size": svc.info.block_size,
            "blocks": svc.info.blocks,
            "queue_depth": svc.info.queue_depth,
            "volatile_write_cache": svc.info.volatile_write_cache,
            "counters": svc.device.stats().into_iter().map(|(k, v)| (k, json!(v))).collect::<serde_json::Map<String, Value>>(),
        },
        "commands": { "inbox": inbox, "at_server": at_server, "on_device": on_device },
        "requeued": load(&svc.stats.requeued),
        "bad_forward": load(&svc.stats.bad_forward),
        "apps": b.apps.iter().map(|(name, q)| json!({
            "name": name,
            "mode": if q.mode() == crate::block::service::Mode::Direct { "direct" } else { "server" },
            "inflight": q.inflight(),
            "submitted": load(&q.stats.submitted),
            "completed": load(&q.stats.completed),
            "errors": load(&q.stats.errors),
            "queue_full": load(&q.stats.queue_full),
            "via_server": load(&q.stats.via_server),
            "direct": load(&q.stats.direct),
            "latency_us_avg": load(&q.stats.latency_us_total) / load(&q.stats.completed).max(1),
            "latency_us_max": load(&q.stats.latency_us_max),
        })).collect::<Vec<_>>(),
        "server": server,
    })
}

pub struct CtlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CtlServer {
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

pub fn serve(sys: Arc<System>) -> Result<CtlServer, String> {
    let path = sys.manifest.control.clone();
    if UnixStream::connect(&path).is_ok() {
        return Err(format!("control socket {}: another system is running there", path.display()));
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|e| format!("control socket {}: {e}", path.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("ctl".into())
        .spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                // A swap takes seconds: answer each client on its own thread.
                let sys = sys.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut line = String::new();
                    if BufReader::new(&conn).read_line(&mut line).is_err() {
                        return;
                    }
                    let reply = answer(&sys, line.trim());
                    let _ = writeln!(conn, "{reply}");
                });
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(CtlServer { path, stop, thread: Some(thread) })
}

/// A JSON value as plain text (strings without quotes), for padding.
fn t(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn table(cmd: &str, v: &Value) -> String {
    let mut out = String::new();
    match cmd {
        "apps" => {
            out.push_str(&format!("{:<16} {:>4} {:<20} {:<18} {:<7} {}\n", "app", "port", "ip", "mac", "mode", "status"));
            for a in v["apps"].as_array().into_iter().flatten() {
                let ip = format!("{}{}", a["ip"].as_str().unwrap_or(""), if a["shared_ip"] == true { " (shared)" } else { "" });
                out.push_str(&format!("{:<16} {:>4} {:<20} {:<18} {:<7} {}\n", t(&a["name"]), t(&a["port"]), ip, t(&a["mac"]), t(&a["mode"]), t(&a["status"])));
            }
            out.push_str(&format!("network server: {} ({} restarts)\n", v["network_server"]["status"].as_str().unwrap_or(""), v["network_server"]["restarts"]));
            if v["block_server"].is_object() {
                out.push_str(&format!("block server: {} ({} restarts)\n", v["block_server"]["status"].as_str().unwrap_or(""), v["block_server"]["restarts"]));
            }
        }
        "stats" => {
            out.push_str(&format!("{:<14} {:>10} {:>14} {:>10} {:>14} {:>6}  {}\n", "port", "in frames", "in bytes", "out frames", "out bytes", "full", "drops by reason"));
            for p in v["ports"].as_array().into_iter().flatten() {
                let full = p["out_ring_full"].as_u64().unwrap_or(0) + p["in_ring_full"].as_u64().unwrap_or(0);
                out.push_str(&format!(
                    "{:<14} {:>10} {:>14} {:>10} {:>14} {:>6}  {}\n",
                    format!("{} {}", p["port"], t(&p["name"])),
                    t(&p["in_frames"]),
                    t(&p["in_bytes"]),
                    t(&p["out_frames"]),
                    t(&p["out_bytes"]),
                    full,
                    t(&p["drops"])
                ));
            }
            let s = &v["server"];
            out.push_str(&format!(
                "server: drops {} consumed {} built {} flooded {} leaked {} invalid {}\n",
                s["drops"], s["consumed"], s["built"], s["flooded"], s["leaked"], s["invalid"]
            ));
            let b = &v["block"];
            if b.is_object() {
                let d = &b["device"];
                out.push_str(&format!("block device: {} blocks of {} bytes, queue depth {}; {}\n", d["blocks"], d["block_size"], d["queue_depth"], d["counters"]));
                let c = &b["commands"];
                out.push_str(&format!("block commands: {} waiting for the server, {} at the server, {} on the device; requeued {}, refused forwards {}\n", c["inbox"], c["at_server"], c["on_device"], b["requeued"], b["bad_forward"]));
                out.push_str(&format!("{:<14} {:<7} {:>8} {:>10} {:>10} {:>7} {:>10} {:>10} {:>10} {:>9} {:>9}\n", "block app", "mode", "inflight", "submitted", "completed", "errors", "queue full", "via server", "direct", "avg us", "max us"));
                for a in b["apps"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "{:<14} {:<7} {:>8} {:>10} {:>10} {:>7} {:>10} {:>10} {:>10} {:>9} {:>9}\n",
                        t(&a["name"]), t(&a["mode"]), t(&a["inflight"]), t(&a["submitted"]), t(&a["completed"]), t(&a["errors"]), t(&a["queue_full"]), t(&a["via_server"]), t(&a["direct"]), t(&a["latency_us_avg"]), t(&a["latency_us_max"])
                    ));
                }
                if let Some(m) = b["server"].as_object().filter(|m| !m.is_empty()) {
                    out.push_str(&format!("block server: {}\n", m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")));
                }
            }
        }
        "events" => {
            for e in v["events"].as_array().into_iter().flatten() {
                out.push_str(&format!("{:>10.3} s  {}\n", e["at_s"].as_f64().unwrap_or(0.0), t(&e["what"])));
            }
        }
        "portmap" => {
            out.push_str(&format!("shared IP {}\n{:<5} {:>5}  {}\n", v["shared_ip"].as_str().unwrap_or(""), "proto", "port", "app"));
            for e in v["entries"].as_array().into_iter().flatten() {
                out.push_str(&format!("{:<5} {:>5}  {}\n", t(&e["proto"]), t(&e["port"]), t(&e["app"])));
            }
        }
        _ => out.push_str(&format!("{v}\n")),
    }
    out
}

/// `libretto ctl [--socket PATH | --manifest FILE] [--json] COMMAND`
pub fn main(args: &[String]) -> i32 {
    let mut socket: Option<PathBuf> = None;
    let mut as_json = false;
    let mut cmd: Vec<String> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--socket" => {
                socket = args.get(i + 1).map(PathBuf::from);
                i += 2;
            }
            "--manifest" => {
                match args.get(i + 1).map(|m| crate::manifest::load(std::path::Path::new(m))) {
                    Some(Ok(m)) => socket = Some(m.control),
                    Some(Err(e)) => {
                        eprintln!("libretto ctl: {e}");
                        return 2;
                    }
                    None => {
                        eprintln!("libretto ctl: --manifest needs a file");
                        return 2;
                    }
                }
                i += 2;
            }
            "--json" => {
                as_json = true;
                i += 1;
            }
            c if !c.starts_with("--") => {
                cmd.push(c.to_string());
                i += 1;
            }
            other => {
                eprintln!("libretto ctl: unknown argument `{other}`");
                return 2;
            }
        }
    }
    const USAGE: &str = "usage: libretto ctl [--socket PATH | --manifest FILE] [--json] COMMAND
  apps | stats | portmap | events
  switch APP direct|server [net|block]   (net unless block is named)
  kill network-server|block-server
  fault network-server|block-server crash|hang
  swap network-server|block-server FILE.wasm";
    let known = matches!(
        cmd.iter().map(String::as_str).collect::<Vec<_>>().as_slice(),
        ["apps"] | ["stats"] | ["portmap"] | ["events"] | ["switch", _, _] | ["switch", _, _, "net" | "block"] | ["kill", "network-server" | "block-server"] | ["fault", "network-server" | "block-server", _] | ["swap", "network-server" | "block-server", _]
    );
    if !known {
        eprintln!("libretto ctl: unknown command `{}`\n{USAGE}", cmd.join(" "));
        return 2;
    }
    // A swap names a file: send its absolute path.
    if cmd[0] == "swap" {
        if let Ok(p) = std::fs::canonicalize(&cmd[2]) {
            cmd[2] = p.display().to_string();
        }
    }
    let cmd = cmd.join(" ");
    let path = socket.unwrap_or_else(|| {
        if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
            PathBuf::from(d).join("libretto.sock")
        } else {
            // SAFETY: getuid has no preconditions.
            std::env::temp_dir().join(format!("libretto-{}.sock", unsafe { libc::getuid() }))
        }
    });
    let mut conn = match UnixStream::connect(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("libretto ctl: cannot reach a running system at {}: {e}", path.display());
            return 2;
        }
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    if writeln!(conn, "{cmd}").is_err() {
        eprintln!("libretto ctl: the system at {} closed the connection", path.display());
        return 2;
    }
    let mut line = String::new();
    if BufReader::new(&conn).read_line(&mut line).is_err() || line.is_empty() {
        eprintln!("libretto ctl: no answer from {}", path.display());
        return 2;
    }
    let v: Value = match serde_json::from_str(&line) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("libretto ctl: unreadable answer: {e}");
            return 2;
        }
    };
    if as_json {
        println!("{v}");
    } else if let Some(e) = v.get("error") {
        eprintln!("libretto ctl: {}", t(e));
        return 1;
    } else if let Some(ok) = v.get("ok") {
        println!("{}", t(ok));
    } else {
        print!("{}", table(&cmd, &v));
    }
    if v.get("error").is_some() { 1 } else { 0 }
}
