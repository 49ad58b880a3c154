//! The host's side of `libretto:block`: an app's `queue`, and the block
//! server's `requests`.

use super::service::{AppBlock, AppCommand, BlockService, Opcode, Status};
use crate::bindings::libretto::block::{queue as wit_queue, requests as wit_req, types as wit_types};
use crate::state::{deadline_instant, now_ns, Ctx};
use crate::supervise::ServerControl;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use wasmtime::Result;

/// An app's block queue, as its Store holds it.
#[derive(Clone)]
pub struct BlockGrant {
    pub service: Arc<BlockService>,
    pub app: Arc<AppBlock>,
}

/// The block server's reach, as its Store holds it.
#[derive(Clone)]
pub struct BlockServerGrant {
    pub service: Arc<BlockService>,
    pub control: Arc<ServerControl>,
}

fn opcode_in(o: wit_types::Opcode) -> Opcode {
    match o {
        wit_types::Opcode::Read => Opcode::Read,
        wit_types::Opcode::Write => Opcode::Write,
        wit_types::Opcode::Flush => Opcode::Flush,
        wit_types::Opcode::Deallocate => Opcode::Deallocate,
        wit_types::Opcode::WriteZeroes => Opcode::WriteZeroes,
    }
}

fn opcode_out(o: Opcode) -> wit_types::Opcode {
    match o {
        Opcode::Read => wit_types::Opcode::Read,
        Opcode::Write => wit_types::Opcode::Write,
        Opcode::Flush => wit_types::Opcode::Flush,
        Opcode::Deallocate => wit_types::Opcode::Deallocate,
        Opcode::WriteZeroes => wit_types::Opcode::WriteZeroes,
    }
}

pub fn status_out(s: Status) -> wit_types::Status {
    match s {
        Status::Success => wit_types::Status::Success,
        Status::InvalidOpcode => wit_types::Status::InvalidOpcode,
        Status::InvalidField => wit_types::Status::InvalidField,
        Status::LbaOutOfRange => wit_types::Status::LbaOutOfRange,
        Status::WriteToReadOnly => wit_types::Status::WriteToReadOnly,
        Status::InvalidNamespace => wit_types::Status::InvalidNamespace,
        Status::InternalError => wit_types::Status::InternalError,
        Status::Aborted => wit_types::Status::Aborted,
    }
}

fn status_in(s: wit_types::Status) -> Status {
    match s {
        wit_types::Status::Success => Status::Success,
        wit_types::Status::InvalidOpcode => Status::InvalidOpcode,
        wit_types::Status::InvalidField => Status::InvalidField,
        wit_types::Status::LbaOutOfRange => Status::LbaOutOfRange,
        wit_types::Status::WriteToReadOnly => Status::WriteToReadOnly,
        wit_types::Status::InvalidNamespace => Status::InvalidNamespace,
        wit_types::Status::InternalError => Status::InternalError,
        wit_types::Status::Aborted => Status::Aborted,
    }
}

fn wake_out(w: crate::ring::Wake) -> wit_types::Wake {
    match w {
        crate::ring::Wake::Ready => wit_types::Wake::Ready,
        crate::ring::Wake::Timeout => wit_types::Wake::Timeout,
        crate::ring::Wake::Stop => wit_types::Wake::Stop,
    }
}

/// What an app sees of its namespaces.
pub fn namespace_infos(g: &BlockGrant) -> Vec<wit_types::NamespaceInfo> {
    let dev = &g.service.info;
    g.app
        .namespaces
        .iter()
        .map(|n| wit_types::NamespaceInfo {
            nsid: n.nsid,
            block_size: n.block_size,
            blocks: n.blocks,
            read_only: n.read_only,
            max_transfer_blocks: n.max_transfer_blocks,
            queue_depth: g.app.depth,
            deallocate: dev.deallocate,
            volatile_write_cache: dev.volatile_write_cache,
        })
        .collect()
}

impl wit_types::Host for Ctx {}

impl wit_queue::Host for Ctx {
    fn namespaces(&mut self) -> Result<Vec<wit_types::NamespaceInfo>> {
        Ok(self.block.as_ref().map(namespace_infos).unwrap_or_default())
    }

    fn submit(&mut self, commands: Vec<wit_queue::Command>) -> Result<Result<(), wit_types::SubmitError>> {
        let Some(g) = self.block.clone() else {
            // An app without namespaces: every command names no namespace.
            return Ok(if commands.is_empty() { Ok(()) } else { Err(wit_types::SubmitError::QueueFull) });
        };
        let mut cmds = Vec::with_capacity(commands.len());
        for c in commands {
            let buffer = match c.buffer {
                Some(b) => Some((self.table.get(&b)?.clone(), c.buffer_offset)),
                None => None,
            };
            cmds.push(AppCommand { cid: c.cid, opcode: opcode_in(c.opcode), nsid: c.nsid, slba: c.slba, nlb: c.nlb, fua: c.fua, buffer });
        }
        Ok(g.service.submit(&g.app, cmds).map_err(|()| wit_types::SubmitError::QueueFull))
    }

    fn reap(&mut self, max: u32) -> Result<Vec<wit_queue::Completion>> {
        let Some(g) = &self.block else { return Ok(Vec::new()) };
        Ok(g.app.reap(max).into_iter().map(|(cid, s)| wit_queue::Completion { cid, status: status_out(s) }).collect())
    }

    fn pending(&mut self) -> Result<u32> {
        Ok(self.block.as_ref().map(|g| g.app.pending()).unwrap_or(0))
    }

    fn wait(&mut self, deadline_ns: u64) -> Result<wit_types::Wake> {
        let deadline = deadline_instant(deadline_ns);
        let Some(g) = self.block.clone() else {
            if let Some(d) = deadline {
                std::thread::sleep(d.saturating_duration_since(std::time::Instant::now()));
            }
            return Ok(wit_types::Wake::Timeout);
        };
        let n = g.app.notify();
        Ok(wake_out(n.wait_until(deadline, || g.app.pending() > 0)))
    }
}

impl Ctx {
    fn block_server(&self) -> Result<BlockServerGrant> {
        let g = self.block_server.clone().ok_or_else(|| wasmtime::format_err!("component `{}` is not the block server", self.name))?;
        g.control.beat("block server")?;
        Ok(g)
    }
}

impl wit_req::Host for Ctx {
    fn device_info(&mut self) -> Result<wit_req::Device> {
        let g = self.block_server()?;
        let d = &g.service.info;
        Ok(wit_req::Device {
            info: wit_types::NamespaceInfo {
                nsid: 0,
                block_size: d.block_size,
                blocks: d.blocks,
                read_only: false,
                max_transfer_blocks: d.max_transfer_bytes / d.block_size,
                queue_depth: d.queue_depth,
                deallocate: d.deallocate,
                volatile_write_cache: d.volatile_write_cache,
            },
        })
    }

    fn grants(&mut self) -> Result<Vec<wit_req::Grant>> {
        let g = self.block_server()?;
        let mut out = Vec::new();
        for app in g.service.apps() {
            let view = BlockGrant { service: g.service.clone(), app: app.clone() };
            for (info, ns) in namespace_infos(&view).into_iter().zip(app.namespaces.iter()) {
                out.push(wit_req::Grant { app: app.id, app_name: app.name.clone(), info, first_lba: ns.first_lba });
            }
        }
        Ok(out)
    }

    fn grants_generation(&mut self) -> Result<u64> {
        Ok(self.block_server()?.service.generation())
    }

    fn recv(&mut self, max: u32) -> Result<Vec<wit_req::Request>> {
        let g = self.block_server()?;
        g.control.fault("block server")?;
        Ok(g.service
            .recv(max.min(1024))
            .into_iter()
            .map(|r| wit_req::Request { app: r.app, tag: r.tag, opcode: opcode_out(r.opcode), nsid: r.nsid, slba: r.slba, nlb: r.nlb, fua: r.fua, buffer_len: r.buffer_len })
            .collect())
    }

    fn forward(&mut self, commands: Vec<wit_req::DeviceCommand>) -> Result<()> {
        let g = self.block_server()?;
        g.service.forward(commands.into_iter().map(|c| (c.tag, c.slba, c.nlb)).collect());
        Ok(())
    }

    fn complete(&mut self, results: Vec<(u64, wit_types::Status)>) -> Result<()> {
        let g = self.block_server()?;
        g.service.complete(results.into_iter().map(|(t, s)| (t, status_in(s))).collect());
        Ok(())
    }

    fn reap(&mut self, max: u32) -> Result<Vec<wit_req::DeviceCompletion>> {
        let g = self.block_server()?;
        Ok(g.service.server_reap(max).into_iter().map(|(tag, s)| wit_req::DeviceCompletion { tag, status: status_out(s) }).collect())
    }

    fn wait(&mut self, deadline_ns: u64) -> Result<wit_types::Wake> {
        let g = self.block_server()?;
        let c = &g.control;
        if c.stop.load(Ordering::SeqCst) {
            return Ok(wit_types::Wake::Stop);
        }
        let n = g.service.server_notify();
        c.in_wait.store(true, Ordering::SeqCst);
        let w = n.wait_until(deadline_instant(deadline_ns), || c.stop.load(Ordering::SeqCst) || c.kill.load(Ordering::SeqCst) || g.service.server_ready());
        c.in_wait.store(false, Ordering::SeqCst);
        c.beat("block server")?;
        if c.stop.load(Ordering::SeqCst) {
            return Ok(wit_types::Wake::Stop);
        }
        Ok(wake_out(w))
    }

    fn now(&mut self) -> Result<u64> {
        Ok(now_ns())
    }

    fn report(&mut self, counters: Vec<(String, u64)>) -> Result<()> {
        let g = self.block_server()?;
        *g.service.server_report.lock().unwrap() = counters.into_iter().take(4096).collect();
        Ok(())
    }
}
