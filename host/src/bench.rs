//! `libretto bench`: call and ring costs inside wasmtime, per JS engine.
pub fn main(_args: &[String]) -> i32 {
    eprintln!("libretto bench: not built yet");
    2
}
