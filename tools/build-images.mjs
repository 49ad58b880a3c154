// Build app images: each images/NAME.json names an app component and its
// mode; the image is that app composed with the POSIX shim and the TCP/IP
// stack into one component (wac, through `bin/libretto compose`):
//
//   app (imports libretto:posix/*)  <-  posix-shim (imports libretto:net/sockets, files)  <-  tcp-stack
//
// Images are cached by the content of their three parts.
//
// usage: node tools/build-images.mjs [NAME...]
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(fileURLToPath(new URL('..', import.meta.url)));
const comps = join(root, 'build', 'components');
const out = join(root, 'build', 'images');
const cache = join(root, 'build', 'cache');
const bin = join(root, 'bin', 'libretto');

function fail(msg) {
  console.error(`build-images: ${msg}`);
  process.exit(2);
}

function hash(...files) {
  const h = createHash('sha256');
  for (const f of files) h.update(readFileSync(f));
  return h.digest('hex').slice(0, 32);
}

function compose(outFile, socket, plug) {
  const r = spawnSync(bin, ['compose', '-o', outFile, socket, plug], { encoding: 'utf8' });
  if (r.status !== 0) fail(`composing ${socket} with ${plug}: ${r.stderr.trim()}`);
}

if (!existsSync(bin)) fail('bin/libretto is missing: run make build first');
mkdirSync(out, { recursive: true });
mkdirSync(cache, { recursive: true });
const only = process.argv.slice(2);
const manifests = readdirSync(join(root, 'images')).filter((f) => f.endsWith('.json')).sort();
const t0 = Date.now();
let n = 0;
for (const file of manifests) {
  const path = join(root, 'images', file);
  let m;
  try {
    m = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    fail(`images/${file}: not valid JSON (${e.message})`);
  }
  if (typeof m.name !== 'string' || !/^[a-z0-9-]+$/.test(m.name)) fail(`images/${file}: "name" must be lower-case letters, digits and -`);
  if (typeof m.app !== 'string') fail(`images/${file}: "app" must name a component under components/`);
  if (m.mode !== undefined && m.mode !== 'server' && m.mode !== 'direct') fail(`images/${file}: "mode" is "server" or "direct"`);
  if (only.length && !only.includes(m.name)) continue;
  const app = join(comps, `${m.app}.wasm`);
  const shim = join(comps, 'posix-shim.wasm');
  const stack = join(comps, 'tcp-stack.wasm');
  for (const f of [app, shim, stack]) if (!existsSync(f)) fail(`images/${file}: ${f} is missing: run make components first`);
  n++;
  const base = join(cache, `posix-stack-${hash(shim, stack)}.wasm`);
  if (!existsSync(base)) {
    compose(`${base}.tmp`, shim, stack);
    renameSync(`${base}.tmp`, base);
  }
  const key = join(cache, `image-${m.name}-${hash(app, base)}.wasm`);
  let how = 'cached';
  if (!existsSync(key)) {
    const t = Date.now();
    compose(`${key}.tmp`, app, base);
    renameSync(`${key}.tmp`, key);
    how = `composed in ${((Date.now() - t) / 1000).toFixed(1)} s`;
  }
  copyFileSync(key, join(out, `${m.name}.wasm`));
  console.log(`[image] ${m.name}: ${m.app} + posix-shim + tcp-stack: ${how}`);
}
if (only.length && n === 0) fail(`no image named ${only.join(', ')} under images/`);
console.log(`images ready in build/images/ (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
