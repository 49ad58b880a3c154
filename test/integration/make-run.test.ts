/**
 * `make run`, the main job, as a new user would try it: no root, the
 * gateway NIC, and the printed URL answers from this machine (served by the
 * httpd image behind the network server; with APP=nbd, by the nbd image
 * over a namespace of a file the host makes under build/run/).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from './helpers.ts';
import { Client } from './nbd-client.ts';

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

async function get(url: string): Promise<{ status: number; body: Buffer }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
}

test('the demo boots without root and the URL it prints answers', async () => {
  const port = await freePort();
  const proc = spawn(join(ROOT, 'tools', 'run.sh'), [], { env: { ...process.env, PORT: String(port), NIC: 'gateway' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (out += d));
  try {
    const t0 = Date.now();
    while (!/httpd: listening on port 80/.test(out)) {
      if (Date.now() - t0 > 60_000) throw new Error(`the demo did not come up:\n${out}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const url = /open (http:\/\/127\.0\.0\.1:\d+\/)/.exec(out)?.[1];
    assert.is(url, `http://127.0.0.1:${port}/`, out);
    const index = await get(url!);
    assert.is(index.status, 200);
    assert.match(index.body.toString(), /libretto httpd/);
    const big = await get(`${url}128k`);
    assert.is(big.status, 200);
    assert.is(big.body.length, 128 * 1024);
    assert.is(big.body[0], 97);
    assert.is(big.body[128 * 1024 - 1], 97 + ((128 * 1024 - 1) % 26));
    const missing = await get(`${url}no-such-file`);
    assert.is(missing.status, 404);
  } finally {
    proc.kill('SIGTERM');
    await new Promise((r) => proc.on('close', r));
  }
  assert.match(out, /SIGTERM: stopping/);
});

test('make run APP=nbd: the nbd:// address it prints answers (the handshake, a write and a read; nbdinfo if installed)', async () => {
  const port = await freePort();
  const proc = spawn(join(ROOT, 'tools', 'run.sh'), [], { env: { ...process.env, APP: 'nbd', PORT: String(port), NIC: 'gateway' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (out += d));
  try {
    const t0 = Date.now();
    while (!/nbd: listening on port 10809/.test(out)) {
      if (Date.now() - t0 > 60_000) throw new Error(`the demo did not come up:\n${out}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const url = /serving (nbd:\/\/127\.0\.0\.1:\d+)/.exec(out)?.[1];
    assert.is(url, `nbd://127.0.0.1:${port}`, out);
    const c = await Client.open('127.0.0.1', port);
    await c.hello();
    const info = await c.go('');
    assert.is(info.size, 256 << 20);
    const data = Buffer.alloc(8192, 0x5a);
    c.request(1 /* NBD_CMD_WRITE */, 0, 1, (256 << 20) - 8192, 8192, data);
    assert.equal(await c.reply(), { error: 0, cookie: 1 });
    assert.ok((await c.readBlock((256 << 20) - 8192, 8192, 2)).equals(data));
    c.close();
    if (spawnSync('sh', ['-c', 'command -v nbdinfo']).status === 0) {
      const r = spawnSync('nbdinfo', [url!], { encoding: 'utf8', timeout: 20_000 });
      assert.is(r.status, 0, r.stderr);
      assert.match(r.stdout, /export-size: 268435456/);
    }
  } finally {
    proc.kill('SIGTERM');
    await new Promise((r) => proc.on('close', r));
  }
  assert.match(out, /SIGTERM: stopping/);
});

test.run();
