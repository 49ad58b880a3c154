//! The wasmtime engine, the linker with every host interface, and loading
//! components through a cache of precompiled code.
//!
//! Precompiled components (`.cwasm`) are cached under
//! `$LIBRETTO_CACHE_DIR` (default `$XDG_CACHE_HOME/libretto` or
//! `~/.cache/libretto`), keyed by the component's SHA-256 and the engine's
//! compatibility hash, so a new wasmtime or new settings never load stale
//! code.

use crate::bindings;
use crate::state::Ctx;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

/// Epoch ticks per second; a Store's deadline counts in these.
pub const EPOCH_HZ: u64 = 100;

/// Compile for a baseline x86-64 CPU (x86-64-v2: SSE4.2, POPCNT,
/// CMPXCHG16B) instead of this machine's: `.cwasm` files for a guest image,
/// whose CPU (QEMU's, Xen's) may lack what this one has. A guest loads such
/// code on any CPU with at least those features. Set before the engine is
/// first used (`libretto guest precompile`).
static PORTABLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn use_portable_code() {
    PORTABLE.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// The host's engine: component model on, epoch interruption for hung
/// components, one per process.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        if PORTABLE.load(std::sync::atomic::Ordering::SeqCst) {
            config.target("x86_64-unknown-linux-gnu").expect("x86-64 is a known target");
            for flag in ["has_sse3", "has_ssse3", "has_sse41", "has_sse42", "has_popcnt", "has_cmpxchg16b"] {
                // SAFETY: code compiled here runs only where these features
                // are present (checked again when a guest loads it).
                unsafe { config.cranelift_flag_enable(flag) };
            }
        }
        let engine = Engine::new(&config).expect("the engine configuration is valid");
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("epoch".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(1000 / EPOCH_HZ));
                match weak.upgrade() {
                    Some(e) => e.increment_epoch(),
                    None => return,
                }
            })
            .expect("spawn the epoch thread");
        engine
    })
}

/// A linker with WASI (for the JavaScript engines' own needs) and every
/// libretto host interface.
pub fn linker() -> wasmtime::Result<Linker<Ctx>> {
    let mut linker = Linker::new(engine());
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    bindings::libretto::io::buffers::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |c| c)?;
    bindings::libretto::io::host::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |c| c)?;
    bindings::libretto::net::types::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |c| c)?;
    bindings::libretto::net::link::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |c| c)?;
    bindings::libretto::net::portmap::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |c| c)?;
    bindings::libretto::net::nic::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |c| c)?;
    bindings::libretto::net::rings::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |c| c)?;
    bindings::libretto::net::portmap_lookup::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |c| c)?;
    bindings::libretto::block::types::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |c| c)?;
    bindings::libretto::block::queue::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |c| c)?;
    bindings::libretto::block::requests::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |c| c)?;
    bindings::libretto::system::bench_host::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |c| c)?;
    bindings::libretto::system::probe_types::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |c| c)?;
    bindings::libretto::system::probe_host::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |c| c)?;
    Ok(linker)
}

/// Why a file could not be loaded as a component: one line for the user.
#[derive(Debug)]
pub struct LoadError(pub String);

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LIBRETTO_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("libretto");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache").join("libretto"),
        None => std::env::temp_dir().join("libretto-cache"),
    }
}

fn engine_key() -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine().precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}

/// The first line of an error chain, without wasmtime's backtrace noise.
fn first_line(e: &wasmtime::Error) -> String {
    let s = format!("{e:#}");
    s.lines().next().unwrap_or("").to_string()
}

/// Load a component from `path`: a `.wasm` component (compiled through the
/// cache) or a `.cwasm` precompiled by this host. Every failure is one clear
/// line naming the file.
pub fn load(path: &Path) -> Result<Component, LoadError> {
    let shown = path.display();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(LoadError(format!("{shown}: no such file")));
        }
        Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => {
            return Err(LoadError(format!("{shown}: is a directory, not a component file")));
        }
        Err(e) => return Err(LoadError(format!("{shown}: cannot read: {e}"))),
    };
    load_bytes(&bytes, &shown.to_string())
}

/// Load a component from bytes; `shown` names it in errors.
pub fn load_bytes(bytes: &[u8], shown: &str) -> Result<Component, LoadError> {
    if let Some(kind) = Engine::detect_precompiled(bytes) {
        return match kind {
            wasmtime::Precompiled::Component => {
                // SAFETY: only files this host wrote are trusted as precompiled
                // code; the user asked for this file by name.
                unsafe { Component::deserialize(engine(), bytes) }
                    .map_err(|e| LoadError(format!("{shown}: precompiled for another engine or corrupt: {}", first_line(&e))))
            }
            wasmtime::Precompiled::Module => Err(LoadError(format!("{shown}: a precompiled core module, not a component"))),
        };
    }
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(LoadError(format!("{shown}: not a WebAssembly file (no \\0asm header)")));
    }
    match bytes[4..8] {
        [0x01, 0x00, 0x00, 0x00] => {
            return Err(LoadError(format!(
                "{shown}: a core WebAssembly module, not a component (componentize it first)"
            )));
        }
        [0x0d, 0x00, 0x01, 0x00] => {}
        _ => return Err(LoadError(format!("{shown}: unknown WebAssembly version or layer {:02x?}", &bytes[4..8]))),
    }
    let digest = Sha256::digest(bytes);
    let dir = cache_dir().join("cwasm");
    let cached = dir.join(format!("{}-{}.cwasm", hex(&digest[..16]), engine_key()));
    if cached.exists() {
        // SAFETY: the cache holds only what `precompile_component` wrote,
        // keyed by content and engine compatibility.
        if let Ok(c) = unsafe { Component::deserialize_file(engine(), &cached) } {
            return Ok(c);
        }
    }
    let code = engine()
        .precompile_component(bytes)
        .map_err(|e| LoadError(format!("{shown}: not a valid component: {}", first_line(&e))))?;
    // The cache is an optimisation: if it cannot be written, go on.
    if std::fs::create_dir_all(&dir).is_ok() {
        let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), hex(&digest[..8])));
        if std::fs::write(&tmp, &code).is_ok() {
            let _ = std::fs::rename(&tmp, &cached);
        }
    }
    // SAFETY: `code` was produced by this engine just now.
    unsafe { Component::deserialize(engine(), &code) }.map_err(|e| LoadError(format!("{shown}: {}", first_line(&e))))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Whether a component exports the named interface instance.
pub fn exports_instance(component: &Component, name: &str) -> bool {
    component.get_export_index(None, name).is_some()
}

/// Set a Store's deadline `secs` seconds of epoch ticks ahead: a component
/// that computes (not waits) longer than that traps.
pub fn set_deadline(store: &mut wasmtime::Store<Ctx>, secs: u64) {
    store.set_epoch_deadline(secs.saturating_mul(EPOCH_HZ));
}

/// A Store for one component instance. By default its epoch deadline only
/// renews itself (a long-running server is not a hung one); callers that
/// need a hard limit call `store.epoch_deadline_trap()` and `set_deadline`.
pub fn new_store(ctx: Ctx) -> wasmtime::Store<Ctx> {
    let mut store = wasmtime::Store::new(engine(), ctx);
    store.limiter(|c| &mut c.limits);
    set_deadline(&mut store, 60);
    store.epoch_deadline_callback(|_| Ok(wasmtime::UpdateDeadline::Continue(60 * EPOCH_HZ)));
    store
}

/// Instantiate, retrying a few times when the failure is the operating
/// system's and not the component's: the first instantiation of a module
/// builds its memory images (a sealed memfd), and sealing can fail for a
/// moment with EBUSY while the kernel still counts a transient reference to
/// a page. Such a failure is not a reason to roll back a swap or fail an app.
pub fn instantiate(pre: &wasmtime::component::InstancePre<Ctx>, store: &mut wasmtime::Store<Ctx>) -> wasmtime::Result<wasmtime::component::Instance> {
    let mut tries = 0;
    loop {
        match pre.instantiate(&mut *store) {
            Err(e) if tries < 4 && e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some()) => {
                tries += 1;
                eprintln!("libretto: instantiation failed ({}); trying again", e.root_cause());
                std::thread::sleep(Duration::from_millis(20 << tries));
            }
            r => return r,
        }
    }
}
