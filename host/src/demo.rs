//! `libretto run` with no manifest: the frame demo. Two components, each on
//! its own thread in its own Store, exchange frames over a pair of
//! host-owned rings; the host prints what flowed.

use crate::apprun::{prepare, spawn, Outcome};
use crate::bindings::exports::libretto::net::server::Exit;
use crate::link::{pair, LinkInfo, LinkPort};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

fn ring_line(port: &LinkPort, label: &str) -> String {
    let s = &port.tx.stats;
    format!(
        "  ring {label:<20} {:>7} frames in, {:>7} out {:>8.2} MB  {} dropped (ring of {})",
        s.frames_in.load(Ordering::Relaxed),
        s.frames_out.load(Ordering::Relaxed),
        s.bytes_in.load(Ordering::Relaxed) as f64 / 1e6,
        s.dropped_full.load(Ordering::Relaxed),
        port.tx.capacity()
    )
}

/// Run the demo with the components in `dir`; returns the exit status.
pub fn main(dir: &Path) -> i32 {
    let sender = dir.join("demo-sender.wasm");
    let reflector = dir.join("demo-reflector.wasm");
    let (a, b) = pair(LinkInfo::virtual_link(0x0200_0000_0001), LinkInfo::virtual_link(0x0200_0000_0002), 1024);
    let (a_port, b_port) = (a.get(), b.get());
    let b_notify = Arc::clone(&b.notify);
    println!("libretto: two components exchanging frames over host-owned rings");
    println!("  sender     {}", sender.display());
    println!("  reflector  {}", reflector.display());
    let handles = (|| {
        let (ps, pr) = (prepare(&sender)?, prepare(&reflector)?);
        Ok::<_, String>((spawn("demo-sender", ps, a, vec![], None)?, spawn("demo-reflector", pr, b, vec![], None)?))
    })();
    let t0 = Instant::now();
    let (hs, hr) = match handles {
        Ok(h) => h,
        Err(e) => {
            eprintln!("libretto run: {e}");
            return 2;
        }
    };
    let s = hs.join().unwrap_or_else(|_| Outcome { exit: Err("the thread panicked".into()), stats: vec![], version: String::new() });
    let elapsed = t0.elapsed();
    b_notify.stop();
    let r = hr.join().unwrap_or_else(|_| Outcome { exit: Err("the thread panicked".into()), stats: vec![], version: String::new() });
    println!("{}", ring_line(&a_port, "sender -> reflector"));
    println!("{}", ring_line(&b_port, "reflector -> sender"));
    for (name, o) in [("sender", &s), ("reflector", &r)] {
        let stats: Vec<String> = o.stats.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("  {name:<10} {:<24} {}", o.version, stats.join(" "));
    }
    let frames = s.stats.iter().find(|(k, _)| k == "rx.frames").map(|(_, v)| *v).unwrap_or(0);
    let ok = matches!(s.exit, Ok(Exit::Stopped)) && matches!(r.exit, Ok(Exit::Stopped));
    for (name, o) in [("sender", &s), ("reflector", &r)] {
        match &o.exit {
            Ok(Exit::Stopped) => {}
            Ok(Exit::Failed(why)) => eprintln!("libretto run: {name} failed: {why}"),
            Err(why) => eprintln!("libretto run: {name}: {why}"),
        }
    }
    if ok {
        println!(
            "{frames} frames went out and came back, each header and its first body bytes checked, in {:.2} s ({:.0} frames/s each way)",
            elapsed.as_secs_f64(),
            frames as f64 / elapsed.as_secs_f64()
        );
        0
    } else {
        1
    }
}
