// Build every TypeScript component under components/ into a WebAssembly
// component: bundle with esbuild, then componentize with StarlingMonkey
// (componentize-js) or QuickJS (componentize-qjs).
//
// Builds are cached by content: the key hashes the bundle, every WIT file,
// the world, the backend and the versions of the tools, so an unchanged
// component is copied from build/cache/ instead of being rebuilt.
//
// usage: node tools/build-components.mjs [NAME...] [--backend B]
//   LIBRETTO_JOBS=N   parallel componentize jobs (default 2)
//
// Each component directory (components/NAME, or components/apps/NAME for
// apps on the POSIX shim) holds a component.json:
//   { "world": "libretto:system/...", "entry": "src/component.ts",
//     "backends": ["starlingmonkey", "quickjs"] }
// The first backend listed is the one that ships: build/components/NAME.wasm.
// Every backend is also written as build/components/NAME.BACKEND.wasm.
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { copyFile, mkdir, readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { buildRust, rustBuilds } from './build-rust-components.mjs';

const root = resolve(fileURLToPath(new URL('..', import.meta.url)));
const witDir = join(root, 'wit');
const outDir = join(root, 'build', 'components');
const cacheDir = join(root, 'build', 'cache');
const bundleDir = join(root, 'build', 'bundles');
const BACKENDS = ['starlingmonkey', 'quickjs'];

function fail(message) {
  console.error(`build-components: ${message}`);
  process.exit(2);
}

async function filesUnder(dir) {
  const out = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await filesUnder(path)));
    else out.push(path);
  }
  return out.sort();
}

async function hashTree(dir) {
  const h = createHash('sha256');
  for (const file of await filesUnder(dir)) {
    h.update(relative(dir, file)).update('\0').update(await readFile(file)).update('\0');
  }
  return h.digest('hex');
}

async function toolVersions() {
  const versions = [];
  for (const pkg of ['@bytecodealliance/componentize-js', 'componentize-qjs', 'esbuild']) {
    const json = JSON.parse(await readFile(join(root, 'node_modules', pkg, 'package.json'), 'utf8'));
    versions.push(`${pkg}@${json.version}`);
  }
  return versions.join(',');
}

async function loadComponents(only) {
  const found = [];
  // Components live in components/NAME; apps on the POSIX shim may also
  // live in components/apps/NAME. Names are unique across both.
  const entries = [];
  for (const dir of [join(root, 'components'), join(root, 'components', 'apps')]) {
    if (!existsSync(dir)) continue;
    for (const entry of await readdir(dir, { withFileTypes: true })) entries.push({ dir, entry });
  }
  for (const { dir, entry } of entries) {
    if (!entry.isDirectory()) continue;
    const specPath = join(dir, entry.name, 'component.json');
    if (!existsSync(specPath)) continue;
    let spec;
    try {
      spec = JSON.parse(await readFile(specPath, 'utf8'));
    } catch (e) {
      fail(`${relative(root, specPath)}: not valid JSON (${e.message})`);
    }
    if (typeof spec.world !== 'string') fail(`${relative(root, specPath)}: "world" must name a WIT world`);
    if (typeof spec.entry !== 'string') fail(`${relative(root, specPath)}: "entry" must name the TypeScript entry file`);
    const backends = spec.backends ?? ['starlingmonkey'];
    for (const b of backends) {
      if (!BACKENDS.includes(b)) fail(`${relative(root, specPath)}: unknown backend "${b}" (expected ${BACKENDS.join(' or ')})`);
    }
    const entryPath = join(dir, entry.name, spec.entry);
    if (!existsSync(entryPath)) fail(`${relative(root, specPath)}: entry ${spec.entry} does not exist`);
    if (found.some((c) => c.name === entry.name)) fail(`${relative(root, specPath)}: a component named "${entry.name}" already exists`);
    found.push({ name: entry.name, world: spec.world, entry: entryPath, backends });
  }
  if (only.length === 0) return found.sort((a, b) => a.name.localeCompare(b.name));
  for (const name of only) {
    if (!found.some((c) => c.name === name)) fail(`no component named "${name}" under components/`);
  }
  return found.filter((c) => only.includes(c.name));
}

async function bundle(component, backend) {
  const out = join(bundleDir, `${component.name}.${backend}.js`);
  await esbuild.build({
    entryPoints: [component.entry],
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    target: 'es2022',
    outfile: out,
    // WIT imports are resolved by the component model, not by the bundler.
    external: ['libretto:*', 'wasi:*'],
    define: { __LIBRETTO_BACKEND__: JSON.stringify(backend) },
    logLevel: 'error',
  });
  return out;
}

function runJob(job) {
  return new Promise((resolvePromise) => {
    const child = spawn(process.execPath, [join(root, 'tools', 'componentize-one.mjs'), job.jobFile], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    child.on('close', (code) => resolvePromise({ code, output }));
  });
}

async function main() {
  const args = process.argv.slice(2);
  let onlyBackend = null;
  const names = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--backend') {
      onlyBackend = args[++i];
      if (!BACKENDS.includes(onlyBackend)) fail(`unknown backend "${onlyBackend}" (expected ${BACKENDS.join(' or ')})`);
    } else names.push(args[i]);
  }
  await mkdir(outDir, { recursive: true });
  await mkdir(cacheDir, { recursive: true });
  await mkdir(bundleDir, { recursive: true });

  // Rust components (components/*/rust-component.json) are built after the
  // TypeScript ones by tools/build-rust-components.mjs; names may pick them.
  const rust = await rustBuilds();
  const isRust = (n) => rust.some((r) => r.name === n || r.crate === n);
  const rustNames = names.filter(isRust);
  const tsNames = names.filter((n) => !isRust(n));
  const components = names.length > 0 && tsNames.length === 0 ? [] : await loadComponents(tsNames);
  const witHash = await hashTree(witDir);
  const versions = await toolVersions();

  const work = [];
  for (const c of components) {
    for (const backend of c.backends) {
      if (onlyBackend && backend !== onlyBackend) continue;
      work.push({ component: c, backend, ships: backend === c.backends[0] });
    }
  }

  let done = 0;
  const total = work.length;
  const jobs = Math.max(1, Number(process.env.LIBRETTO_JOBS ?? 2));
  const started = Date.now();
  let failed = 0;

  async function buildOne(item) {
    const { component, backend } = item;
    const label = `${component.name} (${backend})`;
    const bundlePath = await bundle(component, backend);
    const key = createHash('sha256')
      .update(await readFile(bundlePath))
      .update(witHash)
      .update(component.world)
      .update(backend)
      .update(versions)
      .digest('hex')
      .slice(0, 32);
    const cached = join(cacheDir, `${key}.wasm`);
    const target = join(outDir, `${component.name}.${backend}.wasm`);
    let how;
    const t0 = Date.now();
    if (existsSync(cached)) {
      how = 'cached';
    } else {
      const jobFile = join(bundleDir, `${component.name}.${backend}.job.json`);
      const tmp = `${cached}.${process.pid}.tmp`;
      await writeFile(jobFile, JSON.stringify({ backend, bundle: bundlePath, witPath: witDir, world: component.world, out: tmp }));
      const { code, output } = await runJob({ jobFile });
      if (code !== 0 || !existsSync(tmp)) {
        done++;
        failed++;
        console.error(`[${done}/${total}] FAILED ${label}`);
        console.error(output.trim().split('\n').map((l) => `    ${l}`).join('\n'));
        return;
      }
      await rename(tmp, cached);
      how = `built in ${((Date.now() - t0) / 1000).toFixed(1)} s`;
    }
    await copyFile(cached, target);
    if (item.ships) await copyFile(cached, join(outDir, `${component.name}.wasm`));
    const size = (await stat(target)).size;
    done++;
    console.log(`[${done}/${total}] ${label}: ${how}, ${(size / 1e6).toFixed(1)} MB`);
  }

  const queue = [...work];
  console.log(`building ${total} component build(s), ${jobs} at a time`);
  await Promise.all(
    Array.from({ length: Math.min(jobs, queue.length) }, async () => {
      while (queue.length) await buildOne(queue.shift());
    }),
  );
  const rustFailed = !onlyBackend && (names.length === 0 || rustNames.length > 0) ? await buildRust(rustNames) : 0;
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  if (failed) fail(`${failed} of ${total} build(s) failed (${secs} s)`);
  if (rustFailed) fail(`${rustFailed} Rust build(s) failed (${secs} s)`);
  console.log(`components ready in ${relative(root, outDir)}/ (${secs} s)`);
}

await main();
