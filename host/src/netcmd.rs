//! `libretto app` and `libretto wire`: run app components on a TAP device
//! or on an in-memory wire.
//!
//!   libretto app COMPONENT --tap NAME [--mac MAC] [--seconds N] [key=value...]
//!   libretto wire [--seed N] [--loss P] [--dup P] [--reorder P] [--delay-us N]
//!                 [--seconds N] --app COMPONENT [key=value...] --app ...

use crate::apprun::{parse_kv, parse_mac, prepare, spawn, Outcome};
use crate::link::LinkInfo;
use crate::tap::Tap;
use crate::wire::{Impairments, Wire};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn num<T: std::str::FromStr>(flag: &str, v: Option<&String>) -> Result<T, String> {
    let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
    v.parse().map_err(|_| format!("{flag} {v}: not a number"))
}

fn print_outcome(name: &str, o: &Outcome) {
    let wanted = ["app.", "tcp.retransmit-timeout", "tcp.fast-retransmit", "tcp.retransmitted-bytes", "tcp.out-of-order", "drop."];
    let stats: Vec<String> = o.stats.iter().filter(|(k, _)| wanted.iter().any(|w| k.starts_with(w))).map(|(k, v)| format!("{k}={v}")).collect();
    println!("  {name:<12} {:<22} {}", o.describe(), stats.join(" "));
}

type Running = (String, std::thread::JoinHandle<Outcome>, crate::link::LinkSlot);

fn joined(h: std::thread::JoinHandle<Outcome>) -> Outcome {
    h.join().unwrap_or_else(|_| Outcome { exit: Err("the thread panicked".into()), stats: vec![], version: String::new() })
}

/// Wait for the apps. Once one has finished by itself (`first_ends_all`),
/// or `limit` passed, ask the rest to stop and wait for them.
fn join_all(handles: Vec<Running>, limit: Option<Duration>, first_ends_all: bool) -> Vec<(String, Outcome)> {
    let started = Instant::now();
    let mut running: Vec<Option<Running>> = handles.into_iter().map(Some).collect();
    let mut done: Vec<Option<(String, Outcome)>> = running.iter().map(|_| None).collect();
    loop {
        for i in 0..running.len() {
            if running[i].as_ref().is_some_and(|h| h.1.is_finished()) {
                let (name, h, _) = running[i].take().unwrap();
                done[i] = Some((name, joined(h)));
            }
        }
        let left = running.iter().filter(|h| h.is_some()).count();
        if left == 0 {
            break;
        }
        let timed_out = limit.is_some_and(|l| started.elapsed() >= l);
        if timed_out || (first_ends_all && left < running.len()) {
            if timed_out {
                eprintln!("libretto: time limit of {} s reached, stopping the apps", limit.unwrap().as_secs());
            }
            for h in running.iter().flatten() {
                h.2.notify.stop();
            }
            for i in 0..running.len() {
                if let Some((name, h, _)) = running[i].take() {
                    done[i] = Some((name, joined(h)));
                }
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done.into_iter().flatten().collect()
}

pub fn app_main(args: &[String]) -> i32 {
    match app(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("libretto app: {e}");
            2
        }
    }
}

fn app(args: &[String]) -> Result<i32, String> {
    let mut component: Option<PathBuf> = None;
    let mut tap: Option<String> = None;
    let mut mac = 0x0200_0000_0000u64 | (std::process::id() as u64 & 0xffff) << 8 | 0x01;
    let mut seconds: Option<u64> = None;
    let mut kv = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--tap" => {
                tap = Some(args.get(i + 1).ok_or("--tap needs a device name")?.clone());
                i += 2;
            }
            "--mac" => {
                mac = parse_mac(args.get(i + 1).ok_or("--mac needs a MAC address")?)?;
                i += 2;
            }
            "--seconds" => {
                seconds = Some(num("--seconds", args.get(i + 1))?);
                i += 2;
            }
            a if a.starts_with("--") => return Err(format!("unknown option `{a}`")),
            a if component.is_none() => {
                component = Some(PathBuf::from(a));
                i += 1;
            }
            _ => {
                kv.push(args[i].clone());
                i += 1;
            }
        }
    }
    let component = component.ok_or("give the app component to run")?;
    let tap = tap.ok_or("give a TAP device with --tap NAME (the app needs a NIC)")?;
    let kv = parse_kv(&kv)?;
    let pre = prepare(&component)?;
    let (mut dev, slot) = Tap::open(&tap, LinkInfo::virtual_link(mac), 4096)?;
    eprintln!("libretto: {} on TAP {tap}", component.display());
    let h = spawn("app", pre, slot.clone(), kv, None)?;
    let results = join_all(vec![("app".into(), h, slot)], seconds.map(Duration::from_secs), false);
    dev.close();
    let s = &dev.stats;
    println!(
        "TAP {tap}: rx {} frames {} bytes ({} bad checksum, {} ring full), tx {} frames {} bytes ({} errors)",
        s.rx_frames.load(Ordering::Relaxed),
        s.rx_bytes.load(Ordering::Relaxed),
        s.rx_bad_checksum.load(Ordering::Relaxed),
        s.rx_ring_full.load(Ordering::Relaxed),
        s.tx_frames.load(Ordering::Relaxed),
        s.tx_bytes.load(Ordering::Relaxed),
        s.tx_errors.load(Ordering::Relaxed)
    );
    for (name, o) in &results {
        print_outcome(name, o);
    }
    Ok(if results.iter().all(|(_, o)| o.ok()) { 0 } else { 1 })
}

pub fn wire_main(args: &[String]) -> i32 {
    match wire(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("libretto wire: {e}");
            2
        }
    }
}

fn wire(args: &[String]) -> Result<i32, String> {
    let mut imp = Impairments { seed: 1, reorder_delay: Duration::from_micros(300), delay: Duration::from_micros(50), ..Default::default() };
    let mut seconds = 300u64;
    let mut apps: Vec<(PathBuf, Vec<String>)> = Vec::new();
    let mut i = 0;
    let prob = |flag: &str, v: Option<&String>| -> Result<f64, String> {
        let p: f64 = num(flag, v)?;
        if !(0.0..=1.0).contains(&p) {
            return Err(format!("{flag} {p}: a probability from 0 to 1"));
        }
        Ok(p)
    };
    while i < args.len() {
        let v = args.get(i + 1);
        match args[i].as_str() {
            "--seed" => imp.seed = num("--seed", v)?,
            "--loss" => imp.loss = prob("--loss", v)?,
            "--dup" => imp.duplicate = prob("--dup", v)?,
            "--reorder" => imp.reorder = prob("--reorder", v)?,
            "--delay-us" => imp.delay = Duration::from_micros(num("--delay-us", v)?),
            "--seconds" => seconds = num("--seconds", v)?,
            "--app" => {
                apps.push((PathBuf::from(v.ok_or("--app needs a component")?), Vec::new()));
            }
            a if a.starts_with("--") => return Err(format!("unknown option `{a}`")),
            a => {
                let Some(last) = apps.last_mut() else {
                    return Err(format!("`{a}`: arguments follow the --app they belong to"));
                };
                last.1.push(a.to_string());
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    if apps.len() < 2 {
        return Err("give two or more apps, each with --app COMPONENT [key=value...]".into());
    }
    println!(
        "libretto wire: seed {} loss {} duplicate {} reorder {} delay {} us (replay with --seed {})",
        imp.seed,
        imp.loss,
        imp.duplicate,
        imp.reorder,
        imp.delay.as_micros(),
        imp.seed
    );
    let mut prepared = Vec::new();
    for (path, kv) in &apps {
        prepared.push((prepare(path)?, parse_kv(kv)?));
    }
    let mut w = Wire::new(imp);
    let mut handles = Vec::new();
    let mut slots = Vec::new();
    for (i, _) in prepared.iter().enumerate() {
        slots.push(w.attach(LinkInfo::virtual_link(0x0200_0000_0100 + i as u64 + 1), 4096));
    }
    let mut wire = w.start();
    let t0 = Instant::now();
    for (i, ((pre, kv), slot)) in prepared.into_iter().zip(slots).enumerate() {
        let name = format!("app{}", i + 1);
        handles.push((name.clone(), spawn(&name, pre, slot.clone(), kv, None)?, slot));
    }
    let results = join_all(handles, Some(Duration::from_secs(seconds)), true);
    let elapsed = t0.elapsed();
    wire.stop();
    let st = &wire.stats;
    println!(
        "wire: {} frames {} bytes delivered, {} lost, {} duplicated, {} reordered, {} cut from large segments, {} dropped at full rings, in {:.2} s",
        st.frames.load(Ordering::Relaxed),
        st.bytes.load(Ordering::Relaxed),
        st.lost.load(Ordering::Relaxed),
        st.duplicated.load(Ordering::Relaxed),
        st.reordered.load(Ordering::Relaxed),
        st.segmented.load(Ordering::Relaxed),
        st.full.load(Ordering::Relaxed),
        elapsed.as_secs_f64()
    );
    for (name, o) in &results {
        print_outcome(name, o);
    }
    Ok(if results.iter().all(|(_, o)| o.ok()) { 0 } else { 1 })
}
