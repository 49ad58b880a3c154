//! Rust bindings for every WIT interface the host offers or calls, from one
//! world (`libretto:system/libretto-host`) that gathers them all.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "libretto:system/libretto-host",
    with: {
        "libretto:io/buffers.buffer": crate::buffers::Buffer,
        "libretto:io/buffers.byte-queue": crate::buffers::ByteQueue,
    },
    imports: { default: trappable },
});

