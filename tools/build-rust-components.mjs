// Build the Rust guest components (components/*/rust-component.json) with
// wit-bindgen, through Debian's rustc-web and -Zbuild-std: rustup has no
// wasm32 targets on these machines and cannot fetch them
// (../shared/TOOLCHAIN.md, "Rust guest components"). The Debian packages
// are in tools/debian-packages.txt; tools/setup.sh installs them as root.
//
// Builds are cached in build/cache/ by a hash of the crate's files, its
// Cargo.lock, every WIT file, the features, the compiler's version and the
// flags, like the TypeScript components. All crates share one target
// directory (build/rust/target), so the standard library is compiled once:
// about 70 s on a cold machine, then a second or two per crate.
//
// usage: node tools/build-rust-components.mjs [NAME...]
//   (also run by tools/build-components.mjs, which `make components` runs)
//   LIBRETTO_SKIP_RUST=1   skip these builds (a machine without the packages)
//
// rust-component.json lists the builds of a crate:
//   { "builds": [ { "name": "network-server-rs" },
//                 { "name": "network-server-rs-mutant", "features": ["mutant"] } ] }
// Each build is written as build/components/NAME.wasm.
import { createHash } from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import { copyFile, mkdir, readdir, readFile, rename, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(fileURLToPath(new URL('..', import.meta.url)));
const outDir = join(root, 'build', 'components');
const cacheDir = join(root, 'build', 'cache');
const targetDir = join(root, 'build', 'rust', 'target');
const TARGET = 'wasm32-wasip2';
const RUSTC = '/usr/bin/rustc';
const CARGO = '/usr/bin/cargo';
const WASM_LD = '/usr/bin/wasm-ld-22';
const RUSTFLAGS = `-L/usr/lib/wasm32-wasi -Clink-arg=--wasm-ld-path=${WASM_LD} -Zunstable-options -Cpanic=immediate-abort`;
export const RUST_PACKAGES = 'rustc-web cargo-web rust-web-src wasi-libc lld-22';

async function filesUnder(dir, skip = () => false) {
  const out = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (skip(entry.name)) continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await filesUnder(path, skip)));
    else out.push(path);
  }
  return out.sort();
}

async function hashFiles(h, dir, skip) {
  for (const file of await filesUnder(dir, skip)) h.update(relative(dir, file)).update('\0').update(await readFile(file)).update('\0');
}

/** Every build of every Rust crate under components/: { name, crate, dir, features, lib }. */
export async function rustBuilds() {
  const dir = join(root, 'components');
  const out = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const spec = join(dir, entry.name, 'rust-component.json');
    if (!entry.isDirectory() || !existsSync(spec)) continue;
    let json;
    try {
      json = JSON.parse(await readFile(spec, 'utf8'));
    } catch (e) {
      throw new Error(`${relative(root, spec)}: not valid JSON (${e.message})`);
    }
    const cargoToml = await readFile(join(dir, entry.name, 'Cargo.toml'), 'utf8');
    const pkg = /^\s*name\s*=\s*"([^"]+)"/m.exec(cargoToml);
    if (!pkg) throw new Error(`${relative(root, join(dir, entry.name, 'Cargo.toml'))}: no package name`);
    for (const b of json.builds ?? []) {
      if (typeof b.name !== 'string') throw new Error(`${relative(root, spec)}: every build needs a "name"`);
      out.push({ name: b.name, crate: entry.name, dir: join(dir, entry.name), features: b.features ?? [], lib: pkg[1].replaceAll('-', '_') });
    }
  }
  return out;
}

function toolchainMissing() {
  const missing = [RUSTC, CARGO, WASM_LD, '/usr/lib/wasm32-wasi/libc.a', '/usr/lib/rustlib/src/rust/library'].filter((p) => !existsSync(p));
  return missing.length ? missing : null;
}

function toolchainVersion() {
  const r = spawnSync(RUSTC, ['-vV'], { encoding: 'utf8' });
  const c = spawnSync(CARGO, ['-V'], { encoding: 'utf8', env: { ...process.env, RUSTC } });
  return `${r.stdout}\n${c.stdout}`;
}

function cargoBuild(b) {
  return new Promise((resolvePromise) => {
    const args = ['build', '--release', '--locked', '-Zbuild-std=std,panic_abort', '--target', TARGET];
    if (b.features.length) args.push('--features', b.features.join(','));
    const child = spawn(CARGO, args, {
      cwd: b.dir,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        RUSTC,
        RUSTDOC: '/usr/bin/rustdoc',
        RUSTC_BOOTSTRAP: '1',
        CARGO_TARGET_DIR: targetDir,
        CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS: RUSTFLAGS,
        CARGO_TERM_COLOR: 'never',
      },
    });
    let output = '';
    let compiled = 0;
    let lastShown = Date.now();
    const onData = (d) => {
      output += d;
      // A progress line every 15 s while the standard library compiles.
      compiled += (String(d).match(/^\s*Compiling /gm) ?? []).length;
      if (Date.now() - lastShown > 15_000) {
        lastShown = Date.now();
        console.log(`    ${b.name}: ${compiled} crates compiled so far ...`);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', (e) => resolvePromise({ code: -1, output: `${output}\ncannot start ${CARGO}: ${e.message}` }));
    child.on('close', (code) => resolvePromise({ code, output }));
  });
}

/** Build (or copy from the cache) the Rust components named, or all. Returns the number that failed. */
export async function buildRust(only = []) {
  if (process.env.LIBRETTO_SKIP_RUST === '1') {
    console.log('rust components: skipped (LIBRETTO_SKIP_RUST=1)');
    return 0;
  }
  let builds = await rustBuilds();
  if (only.length) builds = builds.filter((b) => only.includes(b.name) || only.includes(b.crate));
  if (builds.length === 0) return 0;
  await mkdir(outDir, { recursive: true });
  await mkdir(cacheDir, { recursive: true });
  const started = Date.now();
  let missing = toolchainMissing();
  if (missing && process.getuid?.() === 0 && process.env.LIBRETTO_NO_APT !== '1') {
    // `make components` on a fresh machine: install the toolchain (as tools/setup.sh would).
    console.log(`== Debian packages for Rust guest components: ${RUST_PACKAGES}`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    spawnSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
    spawnSync('apt-get', ['install', '-y', '-qq', ...RUST_PACKAGES.split(' ')], { stdio: ['ignore', 'ignore', 'inherit'], env });
    missing = toolchainMissing();
  }
  const h0 = createHash('sha256');
  await hashFiles(h0, join(root, 'wit'));
  const witHash = h0.digest('hex');
  const tools = missing ? 'missing' : toolchainVersion();
  let failed = 0;
  let done = 0;
  console.log(`building ${builds.length} Rust component build(s) (wit-bindgen, ${TARGET}, -Zbuild-std)`);
  for (const b of builds) {
    const h = createHash('sha256');
    await hashFiles(h, b.dir, (n) => n === 'target' || n.startsWith('.'));
    const key = h.update(witHash).update(JSON.stringify(b.features)).update(tools).update(RUSTFLAGS).update(TARGET).digest('hex').slice(0, 32);
    const cached = join(cacheDir, `rust-${key}.wasm`);
    const target = join(outDir, `${b.name}.wasm`);
    let how;
    const t0 = Date.now();
    if (existsSync(cached)) {
      how = 'cached';
    } else {
      if (missing) {
        done++;
        failed++;
        console.error(`[rust ${done}/${builds.length}] FAILED ${b.name}: the Rust wasm toolchain is missing (${missing.join(', ')}).`);
        console.error(`    apt-get install -y ${RUST_PACKAGES}   (make does it as root; LIBRETTO_SKIP_RUST=1 skips these builds)`);
        continue;
      }
      const cold = !existsSync(join(targetDir, TARGET, 'release', 'deps'));
      console.log(`[rust ${done + 1}/${builds.length}] ${b.name}: building${b.features.length ? ` with ${b.features.join(',')}` : ''}${cold ? ' (cold: compiles the standard library first, about 70 s)' : ''} ...`);
      const { code, output } = await cargoBuild(b);
      const artifact = join(targetDir, TARGET, 'release', `${b.lib}.wasm`);
      if (code !== 0 || !existsSync(artifact)) {
        done++;
        failed++;
        console.error(`[rust ${done}/${builds.length}] FAILED ${b.name} (cargo exited ${code})`);
        console.error(output.trim().split('\n').slice(-60).map((l) => `    ${l}`).join('\n'));
        continue;
      }
      const tmp = `${cached}.${process.pid}.tmp`;
      await copyFile(artifact, tmp);
      await rename(tmp, cached);
      how = `built in ${((Date.now() - t0) / 1000).toFixed(1)} s`;
    }
    await copyFile(cached, target);
    done++;
    console.log(`[rust ${done}/${builds.length}] ${b.name}: ${how}, ${((await stat(target)).size / 1e3).toFixed(0)} kB`);
  }
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  if (failed) console.error(`rust components: ${failed} of ${builds.length} build(s) failed (${secs} s)`);
  else console.log(`rust components ready in ${relative(root, outDir)}/ (${secs} s)`);
  return failed;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    process.exit((await buildRust(process.argv.slice(2))) ? 2 : 0);
  } catch (e) {
    console.error(`build-rust-components: ${e.message}`);
    process.exit(2);
  }
}
