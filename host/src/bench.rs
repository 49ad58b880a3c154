//! `libretto bench`: what crossings cost inside wasmtime, per JS engine.
//!
//! For each engine it composes the `bench` component with `bench-callee`
//! (so one component calls another inside a composed component), runs each
//! figure in rounds and reports the median round:
//!
//! - an empty call from the host into the component;
//! - a call from the component into a host import;
//! - a call from one component to another inside the composition;
//! - a batch of 64 frames of 1,500 bytes sent through a host ring (looped
//!   back) and received, with the payload built in JavaScript, and with the
//!   payload gathered by the host from a byte queue.
//!
//! It prints a table and writes one JSON object per figure (name, value,
//! unit) to `OUT/calls.json`.

use crate::bindings::exports::libretto::system::bench::{Guest as Bench, GuestIndices as BenchIndices};
use crate::engine;
use crate::link::{loopback, LinkInfo};
use crate::ring::{Frame, Notify, Offload};
use crate::state::Ctx;
use std::path::{Path, PathBuf};
use crate::ring::Ring;
use std::time::Instant;
use wasmtime::Store;

const ENGINES: [&str; 2] = ["starlingmonkey", "quickjs"];
const ROUNDS: usize = 15;

struct Figure {
    name: String,
    label: &'static str,
    engine: &'static str,
    value: f64,
    unit: &'static str,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Time `f` in rounds; returns the median of (round seconds / per_round).
fn per_op(per_round: u64, mut f: impl FnMut() -> wasmtime::Result<()>) -> wasmtime::Result<f64> {
    f()?; // warm up
    let mut v = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        f()?;
        v.push(t0.elapsed().as_secs_f64() / per_round as f64);
    }
    Ok(median(v))
}

fn engine_figures(dir: &Path, eng: &'static str, out: &mut Vec<Figure>) -> Result<(), String> {
    let guest = dir.join(format!("bench.{eng}.wasm"));
    let callee = dir.join(format!("bench-callee.{eng}.wasm"));
    let composed = crate::compose::compose(&guest, &[callee.as_path()])?;
    let component = engine::load_bytes(&composed, &format!("{} + {}", guest.display(), callee.display())).map_err(|e| e.to_string())?;
    let linker = engine::linker().map_err(|e| format!("{e:#}"))?;
    let pre = linker.instantiate_pre(&component).map_err(|e| format!("{}: {e:#}", guest.display()))?;
    let mut ctx = Ctx::new(format!("bench-{eng}"));
    ctx.link = Some(loopback(LinkInfo::virtual_link(0x0200_0000_0001), 1024));
    let mut store: Store<Ctx> = engine::new_store(ctx);
    let instance = pre.instantiate(&mut store).map_err(|e| format!("{e:#}"))?;
    let b: Bench = BenchIndices::new(&pre).and_then(|i| i.load(&mut store, &instance)).map_err(|e| format!("{e:#}"))?;
    let err = |e: wasmtime::Error| format!("{eng}: {e:#}");
    let us = 1e6;

    let v = per_op(2000, || {
        for _ in 0..2000 {
            b.call_noop(&mut store)?;
        }
        Ok(())
    })
    .map_err(err)?;
    out.push(Figure { name: format!("{eng}.call.host-to-component"), label: "empty call, host into component", engine: eng, value: v * us, unit: "us" });

    let n = 20_000;
    let v = per_op(n as u64, || b.call_call_host(&mut store, n)).map_err(err)?;
    out.push(Figure { name: format!("{eng}.call.component-to-host"), label: "call from component to host import", engine: eng, value: v * us, unit: "us" });

    let v = per_op(n as u64, || b.call_call_peer(&mut store, n)).map_err(err)?;
    out.push(Figure { name: format!("{eng}.call.component-to-component"), label: "call between two composed components", engine: eng, value: v * us, unit: "us" });

    for (gather, key, label) in [
        (false, "ring.64x1500.js-payload", "64 x 1500 B through a host ring, payload from JS, per batch"),
        (true, "ring.64x1500.host-payload", "64 x 1500 B through a host ring, payload gathered by host, per batch"),
    ] {
        let batches = 200;
        let v = per_op(batches as u64, || {
            let got = b.call_ring_batches(&mut store, batches, 64, 1500, gather)?;
            if got != batches as u64 * 64 {
                wasmtime::bail!("ring benchmark received {got} of {} frames", batches * 64);
            }
            Ok(())
        })
        .map_err(err)?;
        out.push(Figure { name: format!("{eng}.{key}"), label, engine: eng, value: v * us, unit: "us" });
    }
    Ok(())
}

/// A TCP/IPv4 frame from Linux to the shared IP's port 80, 60 bytes.
fn tcp_to_shared(seq: u32) -> Frame {
    let mut d = vec![0u8; 60];
    d[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0xdd, 0x01]);
    d[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0xee, 0x01]);
    d[12] = 0x08;
    d[14] = 0x45;
    d[16..18].copy_from_slice(&40u16.to_be_bytes());
    d[22] = 64;
    d[23] = 6;
    d[26..30].copy_from_slice(&[10, 87, 0, 1]);
    d[30..34].copy_from_slice(&[10, 87, 0, 2]);
    d[34..36].copy_from_slice(&40000u16.to_be_bytes());
    d[36..38].copy_from_slice(&80u16.to_be_bytes());
    d[38..42].copy_from_slice(&seq.to_be_bytes());
    d[46] = 5 << 4;
    d[47] = 0x10;
    Frame { data: d, offload: Offload { csum_valid: true, ..Offload::default() } }
}

/// The network server's forwarding cost: frames injected on the NIC's ring
/// as fast as the server takes them, all to one app port through the
/// portmap; frames per second the server moves, and time per frame.
fn forward_cost(dir: &Path, eng: &'static str, out: &mut Vec<Figure>) -> Result<(), String> {
    use crate::switch::{NicInfo, Switch};
    use crate::portmap::{PortPolicy, Portmap, Proto};
    use std::sync::Arc;
    let path = dir.join(format!("network-server.{eng}.wasm"));
    let pre = crate::apprun::prepare(&path)?;
    let portmap = Arc::new(Portmap::new());
    portmap.bind(1, &PortPolicy::any(), Proto::Tcp, 80).map_err(|e| format!("{e:?}"))?;
    let sw = Switch::new(NicInfo { mac: 0x0200_0000_dd01, mtu: 1500, shared_ip: 0x0a57_0002, prefix_len: 24 }, portmap, 4096);
    let nic_in = Ring::new("bench-nic-in", 4096, sw.server_notify());
    let nic_out = Ring::new("bench-nic-out", 4096, Notify::new());
    sw.attach_nic(nic_in.clone(), nic_out);
    let (_port, slot) = sw.attach_app(1, "sink", 0x0200_0000_dd01, None, Notify::new());
    let app_rx = slot.get().rx.clone();
    let server = {
        let sw = sw.clone();
        std::thread::spawn(move || {
            let mut ctx = Ctx::new("network-server");
            ctx.switch = Some(sw);
            let mut store = engine::new_store(ctx);
            let r = pre.instantiate(&mut store).and_then(|i| crate::bindings::exports::libretto::net::server::GuestIndices::new(&pre)?.load(&mut store, &i)).and_then(|s| s.call_run(&mut store));
            r.map(|_| ()).map_err(|e| format!("{e:#}"))
        })
    };
    let total: u64 = if eng == "quickjs" { 200_000 } else { 50_000 };
    let template: Vec<Frame> = (0..64).map(tcp_to_shared).collect();
    let mut got = 0u64;
    let mut sent = 0u64;
    let mut sink = Vec::new();
    // Warm up, then measure.
    let mut measure = |count: u64| -> f64 {
        let t0 = Instant::now();
        let goal = got + count;
        while got < goal {
            if sent - got < 1024 {
                sent += nic_in.push_batch(template.iter().cloned()) as u64;
            }
            sink.clear();
            got += app_rx.pop_batch(4096, &mut sink) as u64;
            if sink.is_empty() {
                std::thread::yield_now();
            }
        }
        t0.elapsed().as_secs_f64()
    };
    measure(total / 10);
    let secs = measure(total);
    sw.server_notify().stop();
    let _ = server.join();
    out.push(Figure { name: format!("{eng}.server.forward-per-frame"), label: "network server: forwarding cost per frame (batches of up to 256)", engine: eng, value: secs / total as f64 * 1e6, unit: "us" });
    out.push(Figure { name: format!("{eng}.server.forward-rate"), label: "network server: frames forwarded per second", engine: eng, value: total as f64 / secs / 1e3, unit: "k/s" });
    Ok(())
}

/// The same ring batch with no component: the host's own cost.
fn native_ring(out: &mut Vec<Figure>) {
    let ring = Ring::new("bench", 1024, Notify::new());
    let template: Vec<Frame> = (0..64).map(|_| Frame { data: vec![0xa5; 1500], offload: Offload::default() }).collect();
    let mut got = Vec::with_capacity(64);
    let v = per_op(2000, || {
        for _ in 0..2000 {
            ring.push_batch(template.iter().cloned());
            got.clear();
            ring.pop_batch(64, &mut got);
        }
        Ok(())
    })
    .unwrap();
    out.push(Figure { name: "native.ring.64x1500".into(), label: "64 x 1500 B through a host ring, payload from JS, per batch", engine: "native", value: v * 1e6, unit: "us" });
}

pub fn main(args: &[String]) -> i32 {
    let mut dir = PathBuf::from("build/components");
    let mut out_dir = PathBuf::from("bench/results");
    let mut i = 0;
    while i < args.len() {
        match (args[i].as_str(), args.get(i + 1)) {
            ("--components", Some(d)) => dir = PathBuf::from(d),
            ("--out", Some(d)) => out_dir = PathBuf::from(d),
            (other, _) => {
                eprintln!("libretto bench: unknown or incomplete argument `{other}`");
                return 2;
            }
        }
        i += 2;
    }
    let mut figures = Vec::new();
    for eng in ENGINES {
        eprintln!("bench: {eng} ...");
        if let Err(e) = engine_figures(&dir, eng, &mut figures) {
            eprintln!("libretto bench: {e}");
            return 2;
        }
        if let Err(e) = forward_cost(&dir, eng, &mut figures) {
            eprintln!("libretto bench: forwarding: {e}");
            return 2;
        }
    }
    native_ring(&mut figures);

    let mut labels: Vec<&str> = Vec::new();
    for f in &figures {
        if !labels.contains(&f.label) {
            labels.push(f.label);
        }
    }
    let cell = |label: &str, eng: &str| {
        figures
            .iter()
            .find(|f| f.label == label && f.engine == eng)
            .map(|f| format!("{:.2} {}", f.value, f.unit))
            .unwrap_or_else(|| "-".into())
    };
    println!("{:<72} {:>16} {:>12} {:>12}", "figure (median of 15 rounds; forwarding: one run)", "starlingmonkey", "quickjs", "native");
    for l in &labels {
        println!("{l:<72} {:>16} {:>12} {:>12}", cell(l, "starlingmonkey"), cell(l, "quickjs"), cell(l, "native"));
    }
    let json: Vec<serde_json::Value> = figures
        .iter()
        .map(|f| serde_json::json!({ "name": f.name, "value": (f.value * 1000.0).round() / 1000.0, "unit": f.unit }))
        .collect();
    if let Err(e) = std::fs::create_dir_all(&out_dir) {
        eprintln!("libretto bench: cannot create {}: {e}", out_dir.display());
        return 2;
    }
    let path = out_dir.join("calls.json");
    if let Err(e) = std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap() + "\n") {
        eprintln!("libretto bench: cannot write {}: {e}", path.display());
        return 2;
    }
    println!("wrote {}", path.display());
    0
}
