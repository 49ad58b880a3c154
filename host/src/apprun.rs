//! Running a component that exports `libretto:net/server` on a link of its
//! own: its own thread, its own Store, its arguments, a portmap grant.
//! Used by the frame demo, `libretto app` (one app on a TAP device) and
//! `libretto wire` (apps on an in-memory wire).

use crate::bindings::exports::libretto::net::control::GuestIndices as ControlIndices;
use crate::bindings::exports::libretto::net::server::{Exit, GuestIndices as ServerIndices};
use crate::engine;
use crate::link::LinkSlot;
use crate::portmap::{PortPolicy, Portmap};
use crate::state::{Ctx, HostCounters, PortmapGrant};
use std::path::Path;
use std::sync::Arc;
use wasmtime::component::InstancePre;

pub const SERVER: &str = "libretto:net/server@0.1.0";

/// What one component's thread reports when it ends.
pub struct Outcome {
    pub exit: Result<Exit, String>,
    pub stats: Vec<(String, u64)>,
    pub version: String,
}

impl Outcome {
    fn failed(why: String) -> Outcome {
        Outcome { exit: Err(why), stats: vec![], version: String::new() }
    }

    pub fn ok(&self) -> bool {
        matches!(self.exit, Ok(Exit::Stopped))
    }

    pub fn stat(&self, name: &str) -> Option<u64> {
        self.stats.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }

    /// One line: how it ended.
    pub fn describe(&self) -> String {
        match &self.exit {
            Ok(Exit::Stopped) => "stopped".into(),
            Ok(Exit::Failed(why)) => format!("failed: {why}"),
            Err(why) => why.clone(),
        }
    }
}

/// Load and link a component (compiling it if the cache misses) without
/// starting it, so that every component is ready before any runs.
pub fn prepare(path: &Path) -> Result<InstancePre<Ctx>, String> {
    let component = engine::load(path).map_err(|e| e.to_string())?;
    if !engine::exports_instance(&component, SERVER) {
        return Err(format!("{}: does not export {SERVER}, so it cannot run as an app", path.display()));
    }
    let linker = engine::linker().map_err(|e| format!("{e:#}"))?;
    linker
        .instantiate_pre(&component)
        .map_err(|e| format!("{}: needs an import this host does not provide: {e}", path.display()))
}

/// Start a prepared component on its own thread.
pub fn spawn(
    name: &str,
    pre: InstancePre<Ctx>,
    link: LinkSlot,
    args: Vec<(String, String)>,
    portmap: Option<PortmapGrant>,
) -> Result<std::thread::JoinHandle<Outcome>, String> {
    spawn_counted(name, pre, link, args, portmap, Arc::new(HostCounters::default()), None)
}

/// As `spawn`, with the host's counters for the app kept where the caller
/// can read them while it runs.
pub fn spawn_counted(
    name: &str,
    pre: InstancePre<Ctx>,
    link: LinkSlot,
    args: Vec<(String, String)>,
    portmap: Option<PortmapGrant>,
    counters: Arc<HostCounters>,
    block: Option<crate::block::wit::BlockGrant>,
) -> Result<std::thread::JoinHandle<Outcome>, String> {
    let name = name.to_string();
    let portmap = portmap.unwrap_or_else(|| PortmapGrant { map: Arc::new(Portmap::new()), app: 1, policy: PortPolicy::any() });
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let mut ctx = Ctx::new(name);
            ctx.link = Some(link);
            ctx.args = args;
            ctx.portmap = Some(portmap);
            ctx.counters = counters;
            ctx.block = block;
            let mut store = engine::new_store(ctx);
            let instance = match engine::instantiate(&pre, &mut store) {
                Ok(i) => i,
                Err(e) => return Outcome::failed(format!("cannot instantiate: {e:#}")),
            };
            let server = match ServerIndices::new(&pre).and_then(|s| s.load(&mut store, &instance)) {
                Ok(s) => s,
                Err(e) => return Outcome::failed(format!("{e:#}")),
            };
            let exit = server.call_run(&mut store).map_err(|e| format!("trapped: {e:#}"));
            let (stats, version) = ControlIndices::new(&pre)
                .and_then(|c| c.load(&mut store, &instance))
                .and_then(|c| {
                    let id = c.call_describe(&mut store)?;
                    let stats = c.call_stats(&mut store)?;
                    Ok((stats.into_iter().map(|c| (c.name, c.value)).collect(), id.version))
                })
                .unwrap_or_default();
            Outcome { exit, stats, version }
        })
        .map_err(|e| format!("cannot start a thread: {e}"))
}

/// Parse `key=value` arguments.
pub fn parse_kv(items: &[String]) -> Result<Vec<(String, String)>, String> {
    items
        .iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("`{s}`: app arguments are key=value")),
        })
        .collect()
}

/// Parse a MAC written as aa:bb:cc:dd:ee:ff.
pub fn parse_mac(s: &str) -> Result<u64, String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!("`{s}` is not a MAC address (aa:bb:cc:dd:ee:ff)"));
    }
    let mut mac = 0u64;
    for p in parts {
        let b = u8::from_str_radix(p, 16).map_err(|_| format!("`{s}` is not a MAC address (aa:bb:cc:dd:ee:ff)"))?;
        mac = (mac << 8) | b as u64;
    }
    Ok(mac)
}
