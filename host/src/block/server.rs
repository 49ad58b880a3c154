//! The block server under the host's supervision, and the boot of the
//! block service from the manifest.

use super::backend::{Device, DeviceConfig};
use super::service::{BlockService, Mode, Namespace};
use super::wit::BlockServerGrant;
use crate::manifest::{AppBlockSpec, Block};
use crate::state::Ctx;
use crate::supervise::{self, ServerControl, Supervised};
use std::sync::Arc;

pub struct BlockServer {
    pub service: Arc<BlockService>,
    pub control: Arc<ServerControl>,
}

impl Supervised for BlockServer {
    fn what(&self) -> &'static str {
        "block server"
    }
    fn control(&self) -> &ServerControl {
        &self.control
    }
    fn wake(&self) {
        self.service.server_notify().notify();
    }
    fn ctx(&self) -> Ctx {
        let mut ctx = Ctx::new("block-server");
        ctx.block_server = Some(BlockServerGrant { service: self.service.clone(), control: self.control.clone() });
        ctx
    }
    fn recover(&self, _ctx: &mut Ctx) -> String {
        format!("{} requests it held requeued", self.service.requeue_at_server())
    }
    fn check_swap(&self, component: &wasmtime::component::Component, path: &std::path::Path) -> Result<(), String> {
        if !crate::engine::exports_instance(component, "libretto:net/control@0.1.0") {
            return Err(format!("{}: not a block server (no libretto:net/control export)", path.display()));
        }
        if !supervise::imports(component, "libretto:block/requests") {
            return Err(format!("{}: not a block server (it does not import libretto:block/requests)", path.display()));
        }
        for (name, _) in component.component_type().imports(crate::engine::engine()) {
            if name.starts_with("libretto:net/") || name.starts_with("libretto:block/queue") {
                return Err(format!("{}: not a block server (it imports {name})", path.display()));
            }
        }
        Ok(())
    }
}

/// Open (or make) the manifest's device.
pub fn open_device(b: &Block) -> Result<Arc<Device>, String> {
    let shown = b.device.display().to_string();
    if crate::packet::is_pci_address(&shown) {
        // A drive by PCI address: its block device.
        let (name, _, _) = crate::guest::find_drive(&shown).map_err(|e| format!("block.device: {e}"))?;
        let path = std::path::PathBuf::from(format!("/dev/{name}"));
        return Device::open(DeviceConfig { path, read_only: false, direct: b.direct_io, queue_depth: b.queue_depth }).map_err(|e| format!("block.device {shown}: {e}"));
    }
    if let Some(size) = b.create_size {
        if !b.device.exists() {
            let f = std::fs::File::create(&b.device).map_err(|e| format!("block.device {}: cannot create: {e}", b.device.display()))?;
            f.set_len(size).map_err(|e| format!("block.device {}: cannot size to {size} bytes: {e}", b.device.display()))?;
        }
    }
    Device::open(DeviceConfig { path: b.device.clone(), read_only: false, direct: b.direct_io, queue_depth: b.queue_depth }).map_err(|e| format!("block.device: {e}"))
}

/// An app's namespaces on the device, checked against its geometry.
pub fn namespaces(app: &str, spec: &AppBlockSpec, svc: &BlockService) -> Result<Vec<Namespace>, String> {
    let dev = &svc.info;
    let dev_bytes = dev.blocks * dev.block_size as u64;
    let mut out = Vec::new();
    for n in &spec.namespaces {
        let at = format!("app `{app}`: namespace {}", n.nsid);
        if n.block_size % dev.block_size != 0 {
            return Err(format!("{at}: block size {} is below the device's {}", n.block_size, dev.block_size));
        }
        if n.offset % dev.block_size as u64 != 0 {
            return Err(format!("{at}: offset {} is not a multiple of the device's block size {}", n.offset, dev.block_size));
        }
        if n.offset + n.size > dev_bytes {
            return Err(format!("{at}: {} bytes from {} run past the device's end ({dev_bytes} bytes)", n.size, n.offset));
        }
        out.push(Namespace {
            nsid: n.nsid,
            block_size: n.block_size,
            blocks: n.size / n.block_size as u64,
            read_only: n.read_only,
            first_lba: n.offset / dev.block_size as u64,
            max_transfer_blocks: (dev.max_transfer_bytes / n.block_size).max(1),
        });
    }
    Ok(out)
}

pub fn mode_of(spec: &AppBlockSpec) -> Mode {
    if spec.direct { Mode::Direct } else { Mode::Server }
}
