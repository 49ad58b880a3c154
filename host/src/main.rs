//! libretto's host: runs libretto's WebAssembly components on wasmtime.
//!
//! Commands:
//!   libretto run [--components DIR]     the frame demo (two components, one ring pair)
//!   libretto test COMPONENT...           run components' tests inside wasmtime
//!   libretto compile COMPONENT...        precompile components into the cache
//!   libretto bench [--components DIR] [--out DIR]
//!                                        measure call and ring costs per JS engine
//!   libretto compose -o OUT SOCKET PLUG...
//!                                        plug components' exports into a component

mod apprun;
mod bench;
mod bindings;
mod block;
mod buffers;
mod codec;
mod compose;
mod conform;
mod ctl;
mod demo;
mod engine;
mod gateway;
mod guest;
mod link;
mod manifest;
mod netcmd;
mod packet;
mod portmap;
mod ring;
mod state;
mod supervise;
mod switch;
mod system;
mod tap;
mod testcmd;
mod wire;

use std::path::PathBuf;

const USAGE: &str = "usage: libretto <command> [args]

commands:
  run MANIFEST                    boot a system: the network server, the apps,
                                  the NIC (docs/MANIFEST.md)
  run [--components DIR]          boot the frame demo: two components exchange
                                  frames over host-owned rings (default DIR:
                                  build/components)
  ctl [--socket P | --manifest M] [--json] apps|stats|portmap
                                  ask a running system
  test COMPONENT...               run each component's tests inside wasmtime
  compile COMPONENT...            precompile components into the cache
  bench [--components DIR] [--out DIR]
                                  measure call and ring costs on both JS engines
  app COMPONENT --tap NAME [--mac MAC] [--seconds N] [key=value...]
                                  run an app component on a TAP device
  wire [--seed N] [--loss P] [--dup P] [--reorder P] [--delay-us N] [--seconds N]
       --app COMPONENT [key=value...] --app COMPONENT [key=value...] ...
                                  run apps on an in-memory wire with seeded
                                  loss, duplication, reordering and delay
  guest run CONFIG | precompile OUT IN | ctl SOCKET COMMAND...
                                  libretto as a guest image (xen-host/README.md)
  conform A.wasm B.wasm [--frames N] [--seed S]
                                  feed two network servers the same seeded
                                  frame mix; their decisions, replies and
                                  counters must be the same
  netbench [--components DIR] [--out DIR] [--quick] [--server NAME]
                                  network servers (TypeScript, Rust) under the
                                  Rust load generator: cost per frame, rates
  compose -o OUT SOCKET PLUG...   plug the PLUG components' exports into the
                                  SOCKET component's imports, write OUT
  help                            show this";

fn components_dir(args: &[String]) -> Result<PathBuf, String> {
    let mut dir = PathBuf::from("build/components");
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--components" => {
                dir = PathBuf::from(args.get(i + 1).ok_or("--components needs a directory")?);
                i += 2;
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(dir)
}

fn compose_cmd(args: &[String]) -> i32 {
    let (out, rest) = match args {
        [flag, out, rest @ ..] if flag == "-o" && rest.len() >= 2 => (out, rest),
        _ => {
            eprintln!("libretto compose: usage: libretto compose -o OUT SOCKET PLUG...");
            return 2;
        }
    };
    let plugs: Vec<&std::path::Path> = rest[1..].iter().map(std::path::Path::new).collect();
    match compose::compose(std::path::Path::new(&rest[0]), &plugs) {
        Ok(bytes) => match std::fs::write(out, bytes) {
            Ok(()) => {
                println!("wrote {out}");
                0
            }
            Err(e) => {
                eprintln!("libretto compose: cannot write {out}: {e}");
                2
            }
        },
        Err(e) => {
            eprintln!("libretto compose: {e}");
            2
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = state::clock_offset() {
        eprintln!("libretto: {e}");
        std::process::exit(2);
    }
    if state::clock_offset() != Ok(0) {
        eprintln!("libretto: components' clocks start at {} ns (LIBRETTO_CLOCK_OFFSET_NS)", state::clock_offset().unwrap_or(0));
    }
    let code = match args.first().map(String::as_str) {
        Some("run") if args.len() == 2 && !args[1].starts_with("--") => system::main(&args[1..]),
        Some("run") => match components_dir(&args[1..]) {
            Ok(dir) => demo::main(&dir),
            Err(e) => {
                eprintln!("libretto run: {e}\n{USAGE}");
                2
            }
        },
        Some("ctl") => ctl::main(&args[1..]),
        Some("guest") => guest::main(&args[1..]),
        Some("test") => testcmd::main(&args[1..]),
        Some("compile") => {
            let mut code = 0;
            if args.len() < 2 {
                eprintln!("libretto compile: give one or more component files");
                code = 2;
            }
            for f in &args[1..] {
                match engine::load(std::path::Path::new(f)) {
                    Ok(_) => println!("compiled {f}"),
                    Err(e) => {
                        eprintln!("libretto compile: {e}");
                        code = 2;
                    }
                }
            }
            code
        }
        Some("bench") => bench::main(&args[1..]),
        Some("compose") => compose_cmd(&args[1..]),
        Some("conform") => conform::main(&args[1..]),
        Some("netbench") => conform::bench_main(&args[1..]),
        Some("app") => netcmd::app_main(&args[1..]),
        Some("wire") => netcmd::wire_main(&args[1..]),
        Some("help") | Some("--help") | Some("-h") => {
            println!("{USAGE}");
            0
        }
        Some(other) => {
            eprintln!("libretto: unknown command `{other}`\n{USAGE}");
            2
        }
        None => {
            eprintln!("{USAGE}");
            2
        }
    };
    std::process::exit(code);
}
