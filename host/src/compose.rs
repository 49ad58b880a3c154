//! Composition: plug components' exports into another component's imports
//! (wac-graph), giving one component. Used for the benchmark's
//! component-to-component call and, later, for app images.

use std::path::Path;
use wac_graph::types::Package;
use wac_graph::{plug, CompositionGraph, EncodeOptions};

/// Compose `socket` with `plugs`: every import of the socket that a plug
/// exports is satisfied by that plug. Errors are one line naming the file.
pub fn compose(socket: &Path, plugs: &[&Path]) -> Result<Vec<u8>, String> {
    let mut graph = CompositionGraph::new();
    let load = |graph: &mut CompositionGraph, name: &str, path: &Path| {
        let pkg = Package::from_file(name, None, path, graph.types_mut())
            .map_err(|e| format!("{}: {e:#}", path.display()))?;
        graph.register_package(pkg).map_err(|e| format!("{}: {e}", path.display()))
    };
    let socket_id = load(&mut graph, "libretto:socket", socket)?;
    let mut plug_ids = Vec::new();
    for (i, p) in plugs.iter().enumerate() {
        plug_ids.push(load(&mut graph, &format!("libretto:plug{i}"), p)?);
    }
    plug(&mut graph, plug_ids, socket_id).map_err(|e| {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        format!("{}: {msg}", socket.display())
    })?;
    graph.encode(EncodeOptions::default()).map_err(|e| format!("{}: encoding the composition: {e}", socket.display()))
}
