//! Block storage: the device backend (io_uring over a file or a block
//! device), the service that routes every app's queue through the block
//! server or to a device queue of its own, and the WIT glue.

pub mod backend;
pub mod server;
pub mod service;
pub mod wit;
