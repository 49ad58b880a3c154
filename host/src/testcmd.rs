//! `libretto test COMPONENT.wasm...`: run each component's tests inside
//! wasmtime.
//!
//! A component under test exports `libretto:test/runner`. Each test runs in
//! a fresh instance (a trap in one test cannot hide or cause another's
//! failure) with a looped-back link, MAC fe:ff:ff:ff:ff:fe, and a portmap
//! grant for ports 1024-65535. If the component also exports
//! `libretto:system/probe` or `libretto:net/control`, the host checks those
//! boundaries from its side with values at their edges.

use crate::bindings::exports::libretto::net::control::GuestIndices as ControlIndices;
use crate::bindings::exports::libretto::system::probe::{self, GuestIndices as ProbeIndices};
use crate::bindings::exports::libretto::test::runner::{GuestIndices as RunnerIndices, Outcome};
use crate::engine::{self, LoadError};
use crate::link::{loopback, LinkInfo};
use crate::portmap::{PortPolicy, Portmap};
use crate::state::{Ctx, PortmapGrant};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::{Component, InstancePre};
use wasmtime::Store;

pub const RUNNER: &str = "libretto:test/runner@0.1.0";
pub const PROBE: &str = "libretto:system/probe@0.1.0";
pub const CONTROL: &str = "libretto:net/control@0.1.0";

/// The MAC a component under test sees on its link.
pub const TEST_MAC: u64 = 0xfeff_ffff_fffe;

/// Seconds of computation one test may take before it is stopped.
const TEST_SECONDS: u64 = 120;

#[derive(Default)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

fn test_ctx(name: &str) -> Ctx {
    let mut ctx = Ctx::new(name);
    ctx.link = Some(loopback(LinkInfo::virtual_link(TEST_MAC), 1024));
    ctx.portmap = Some(PortmapGrant {
        map: Arc::new(Portmap::new()),
        app: 1,
        policy: PortPolicy { tcp: vec![1024..=65535], udp: vec![1024..=65535] },
    });
    ctx
}

fn fresh(pre: &InstancePre<Ctx>, name: &str) -> wasmtime::Result<(Store<Ctx>, wasmtime::component::Instance)> {
    let mut store = engine::new_store(test_ctx(name));
    store.epoch_deadline_trap();
    engine::set_deadline(&mut store, TEST_SECONDS);
    let instance = pre.instantiate(&mut store)?;
    Ok((store, instance))
}

fn short(e: &wasmtime::Error) -> String {
    let s = format!("{e:#}");
    let mut lines = s.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().unwrap_or("").to_string();
    if s.contains("epoch deadline") || s.contains("interrupt") {
        return format!("ran longer than {TEST_SECONDS} s and was stopped");
    }
    first
}

fn report(tally: &mut Tally, file: &str, name: &str, outcome: Result<Outcome, String>, elapsed: f64) {
    match outcome {
        Ok(Outcome::Pass) => {
            tally.passed += 1;
            println!("  ok    {file} :: {name} ({elapsed:.1} ms)");
        }
        Ok(Outcome::Skip(why)) => {
            tally.skipped += 1;
            println!("  skip  {file} :: {name}: {why}");
        }
        Ok(Outcome::Fail(why)) => {
            tally.failed += 1;
            println!("  FAIL  {file} :: {name}: {why}");
        }
        Err(trap) => {
            tally.failed += 1;
            println!("  FAIL  {file} :: {name}: trapped: {trap}");
        }
    }
}

/// Check a file can be tested at all: loads, links, exports the runner.
pub fn prepare(path: &Path) -> Result<(Component, InstancePre<Ctx>), LoadError> {
    let shown = path.display();
    let component = engine::load(path)?;
    if !engine::exports_instance(&component, RUNNER) {
        return Err(LoadError(format!(
            "{shown}: does not export {RUNNER} (the test world); nothing to run"
        )));
    }
    let linker = engine::linker().map_err(|e| LoadError(format!("host linker: {e:#}")))?;
    let pre = linker.instantiate_pre(&component).map_err(|e| {
        LoadError(format!("{shown}: needs an import this host does not provide: {}", short(&e)))
    })?;
    Ok((component, pre))
}

/// Run every test of one prepared component.
pub fn run_file(path: &Path, component: &Component, pre: &InstancePre<Ctx>, tally: &mut Tally) {
    let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    println!("{}", path.display());
    let runner = match RunnerIndices::new(pre) {
        Ok(r) => r,
        Err(e) => {
            tally.failed += 1;
            println!("  FAIL  {file} :: (runner): {}", short(&e));
            return;
        }
    };
    let names = match fresh(pre, &file).and_then(|(mut s, i)| {
        let r = runner.load(&mut s, &i)?;
        r.call_list_tests(&mut s)
    }) {
        Ok(n) => n,
        Err(e) => {
            tally.failed += 1;
            println!("  FAIL  {file} :: (list-tests): trapped: {}", short(&e));
            return;
        }
    };
    if names.is_empty() {
        tally.failed += 1;
        println!("  FAIL  {file} :: (list-tests): the component lists no tests");
    }
    for name in &names {
        let t0 = Instant::now();
        let outcome = fresh(pre, &file)
            .and_then(|(mut s, i)| {
                let r = runner.load(&mut s, &i)?;
                r.call_run_test(&mut s, name)
            })
            .map_err(|e| short(&e));
        report(tally, &file, name, outcome, t0.elapsed().as_secs_f64() * 1e3);
    }
    if engine::exports_instance(component, PROBE) {
        let wide = engine_is_wide(pre, component, &file);
        for (name, check) in probe_checks() {
            let t0 = Instant::now();
            let outcome = fresh(pre, &file)
                .and_then(|(mut s, i)| {
                    let p = ProbeIndices::new(pre)?.load(&mut s, &i)?;
                    Ok(match check(&p, &mut s, wide) {
                        Ok(()) => Outcome::Pass,
                        Err(why) => Outcome::Fail(why),
                    })
                })
                .map_err(|e| short(&e));
            report(tally, &file, &format!("host: probe: {name}"), outcome, t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    if engine::exports_instance(component, CONTROL) {
        let t0 = Instant::now();
        let outcome = fresh(pre, &file)
            .and_then(|(mut s, i)| {
                let c = ControlIndices::new(pre)?.load(&mut s, &i)?;
                Ok(match check_control(&c, &mut s) {
                    Ok(()) => Outcome::Pass,
                    Err(why) => Outcome::Fail(why),
                })
            })
            .map_err(|e| short(&e));
        report(tally, &file, "host: control: describe and stats cross intact", outcome, t0.elapsed().as_secs_f64() * 1e3);
    }
}

/// A host-side check of the probe export; `wide` says the component's
/// engine returns u64 values above 2^53 exactly (StarlingMonkey).
/// Whether the component reports (through `control.describe`) that it runs
/// on StarlingMonkey, whose u64 results are exact above 2^53.
fn engine_is_wide(pre: &InstancePre<Ctx>, component: &Component, file: &str) -> bool {
    if !engine::exports_instance(component, CONTROL) {
        return false;
    }
    fresh(pre, file)
        .and_then(|(mut s, i)| ControlIndices::new(pre)?.load(&mut s, &i)?.call_describe(&mut s))
        .map(|id| id.version.ends_with("+starlingmonkey"))
        .unwrap_or(false)
}

type Check = fn(&probe::Guest, &mut Store<Ctx>, bool) -> Result<(), String>;

fn eq<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want { Ok(()) } else { Err(format!("{what}: sent {want:?}, got back {got:?}")) }
}

fn trap(e: wasmtime::Error) -> String {
    format!("trapped: {}", short(&e))
}

fn probe_checks() -> Vec<(&'static str, Check)> {
    vec![
        ("u32 at 2^31 and 2^32-1, u64 above 2^53, inside a record", |p, s, wide| {
            // QuickJS rounds u64 results above 2^53 (TOOLCHAIN.md).
            let above53 = if wide { (1u64 << 53) + 1 } else { 1 << 53 };
            let top = if wide { u64::MAX } else { 1 << 53 };
            for (a32, b64, ip, mac) in [
                (0u32, 0u64, (0u8, 0u8, 0u8, 0u8), 0u64),
                (1 << 31, above53, (192, 168, 1, 1), 0xffff_ffff_ffff),
                ((1 << 31) - 1, top, (0, 0, 0, 1), 0),
                (u32::MAX, (1u64 << 53) - 1, (255, 255, 255, 255), 0x0200_0000_0001),
                (3_000_000_000, 1 << 40, (128, 0, 0, 0), 0xfeff_ffff_fffe),
            ] {
                let w = probe::Wide { a32, b64, ip, mac };
                let got = p.call_echo_wide(&mut *s, w).map_err(trap)?;
                eq("wide", (got.a32, got.b64, got.ip, got.mac), (a32, b64, ip, mac))?;
            }
            Ok(())
        }),
        ("u32 edges in a list, and an empty list", |p, s, _wide| {
            let v = vec![0, 1, (1 << 31) - 1, 1 << 31, 3_000_000_000, u32::MAX];
            eq("list", p.call_echo_u32s(&mut *s, &v).map_err(trap)?, v)?;
            eq("empty list", p.call_echo_u32s(&mut *s, &[]).map_err(trap)?, vec![])
        }),
        ("bytes: empty, every byte value, and 4 MiB", |p, s, _wide| {
            eq("empty", p.call_echo_bytes(&mut *s, &[]).map_err(trap)?, vec![])?;
            let all: Vec<u8> = (0..=255).collect();
            eq("0..=255", p.call_echo_bytes(&mut *s, &all).map_err(trap)?, all)?;
            let big: Vec<u8> = (0..4 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
            let got = p.call_echo_bytes(&mut *s, &big).map_err(trap)?;
            if got != big {
                return Err(format!("4 MiB came back different ({} bytes)", got.len()));
            }
            Ok(())
        }),
        ("bare u64 result at 0, 2^53 and (StarlingMonkey) 2^53+1 and 2^64-1", |p, s, wide| {
            let mut values = vec![0u64, 1, 1 << 53];
            if wide {
                values.extend([(1 << 53) + 1, u64::MAX]);
            }
            for v in values {
                eq("u64", p.call_echo_u64(&mut *s, v).map_err(trap)?, v)?;
            }
            Ok(())
        }),
    ]
}

fn check_control(c: &crate::bindings::exports::libretto::net::control::Guest, s: &mut Store<Ctx>) -> Result<(), String> {
    let id = c.call_describe(&mut *s).map_err(trap)?;
    if id.name.is_empty() || id.version.is_empty() {
        return Err(format!("describe gave an empty name or version: {id:?}"));
    }
    let stats = c.call_stats(&mut *s).map_err(trap)?;
    let mut names = std::collections::HashSet::new();
    for counter in &stats {
        if counter.name.is_empty() || !names.insert(counter.name.clone()) {
            return Err(format!("counter name empty or repeated: {:?}", counter.name));
        }
    }
    // The boundary-test component reports known values; check them exactly.
    if id.name == "boundary-tests" {
        let wide = id.version.ends_with("+starlingmonkey");
        let want: Vec<(&str, u64)> = vec![
            ("zero", 0),
            ("two-pow-53", 1 << 53),
            ("edge", if wide { u64::MAX } else { (1 << 53) - 1 }),
            ("above-53", if wide { (1 << 53) + 1 } else { (1 << 52) + 1 }),
        ];
        let got: Vec<(&str, u64)> = stats.iter().map(|c| (c.name.as_str(), c.value)).collect();
        eq("stats", got, want)?;
    }
    Ok(())
}

/// The `test` command: returns the process exit status.
pub fn main(files: &[String]) -> i32 {
    if files.is_empty() {
        eprintln!("libretto test: give one or more component files (.wasm or .cwasm)");
        return 2;
    }
    // Check every file before running anything, so bad input is reported
    // at once and by name.
    let mut prepared = Vec::new();
    let mut bad = false;
    for f in files {
        let path = Path::new(f);
        match prepare(path) {
            Ok(p) => prepared.push((path, p)),
            Err(e) => {
                eprintln!("libretto test: {e}");
                bad = true;
            }
        }
    }
    if bad {
        return 2;
    }
    let mut tally = Tally::default();
    for (path, (component, pre)) in &prepared {
        run_file(path, component, pre, &mut tally);
    }
    if tally.skipped > 0 {
        println!("{} skipped", tally.skipped);
    }
    println!("{} passed, {} failed", tally.passed, tally.failed);
    if tally.failed > 0 { 1 } else { 0 }
}
