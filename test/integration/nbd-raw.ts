/**
 * A hand-driven NBD client for nbd.test.ts: it sends what Debian's clients
 * never would (bad magics, unknown commands and options, requests out of
 * range, misaligned or above 32 MiB, writes to a read-only export) and
 * checks each gets an error reply or a clean disconnect, while a second
 * connection keeps reading and must be served throughout.
 *
 * Run inside the test's network namespace:
 *   node --import tsx test/integration/nbd-raw.ts HOST PORT SIZE RO_EXPORT
 * Prints one JSON line: { results: [{ name, ok, detail }], keeper: { reads, failures } }.
 */
import { randomBytes } from 'node:crypto';
import { CMD, CMD_FLAG, ERR, OPT, REP } from '../../components/apps/nbd/src/proto.ts';
import { Client as Base } from './nbd-client.ts';

const [host, portText, sizeText, roExport] = process.argv.slice(2);
const port = Number(portText);
const SIZE = Number(sizeText);
const MiB = 1 << 20;

/** The client on this run's server. */
const Client = {
  open: () => Base.open(host, port),
  ready: (name = '') => Base.ready(host, port, name),
};

type Result = { name: string; ok: boolean; detail: string };
const results: Result[] = [];

async function scenario(name: string, f: () => Promise<string | true>): Promise<void> {
  try {
    const r = await f();
    results.push({ name, ok: r === true, detail: r === true ? '' : r });
  } catch (e) {
    results.push({ name, ok: false, detail: String((e as Error).stack ?? e) });
  }
}

function expect(cond: boolean, what: string): void {
  if (!cond) throw new Error(what);
}

// A second client that keeps reading (and checking) the whole time.
const keeper = { reads: 0, failures: 0, last: '' };
let stop = false;
async function keep(): Promise<void> {
  const c = await Client.ready();
  const ref = await c.readBlock(0, 65536, 7);
  while (!stop) {
    try {
      const got = await c.readBlock(0, 65536, 7);
      if (!got.equals(ref)) throw new Error('data changed');
      keeper.reads++;
    } catch (e) {
      keeper.failures++;
      keeper.last = String(e);
      break;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  c.close();
}

async function main(): Promise<void> {
  const keeping = keep();
  await new Promise((r) => setTimeout(r, 100));

  await scenario('unknown option: NBD_REP_ERR_UNSUP, negotiation goes on (LIST, then GO)', async () => {
    const c = await Client.open();
    await c.hello();
    c.option(4242, Buffer.from('hello'));
    const r = await c.optionReply();
    expect(r?.type === REP.ERR_UNSUP && r.option === 4242, `reply ${JSON.stringify(r)}`);
    c.option(OPT.STRUCTURED_REPLY);
    expect((await c.optionReply())?.type === REP.ERR_UNSUP, 'structured replies refused');
    c.option(OPT.LIST);
    const names = [];
    for (;;) {
      const x = await c.optionReply();
      if (!x || x.type === REP.ACK) break;
      expect(x.type === REP.SERVER, `LIST reply 0x${x.type.toString(16)}`);
      names.push(x.data.toString('latin1', 4, 4 + x.data.readUInt32BE(0)));
    }
    expect(names.join(',') === `ns1,${roExport}`, `exports ${names}`);
    const info = await c.go('ns1');
    expect(info.size === SIZE, `size ${info.size}`);
    await c.readBlock(0, 4096);
    c.close();
    return true;
  });

  await scenario('NBD_OPT_ABORT is acked, then the server closes', async () => {
    const c = await Client.open();
    await c.hello();
    c.option(OPT.ABORT);
    const r = await c.optionReply();
    expect(r?.type === REP.ACK && r.option === OPT.ABORT, `reply ${JSON.stringify(r)}`);
    expect(await c.closedBy(), 'still open');
    return true;
  });

  await scenario('unknown client flags: the server closes', async () => {
    const c = await Client.open();
    await c.hello(0x10);
    expect(await c.closedBy(), 'still open');
    return true;
  });

  await scenario('unknown export: NBD_REP_ERR_UNKNOWN', async () => {
    const c = await Client.open();
    await c.hello();
    const d = Buffer.alloc(4 + 4 + 2);
    d.writeUInt32BE(4, 0);
    d.write('nope', 4);
    c.option(OPT.GO, d);
    const r = await c.optionReply();
    expect(r?.type === REP.ERR_UNKNOWN, `reply ${JSON.stringify(r)}`);
    c.close();
    return true;
  });

  await scenario('bad request magic: the server closes', async () => {
    const c = await Client.ready();
    c.request(CMD.READ, 0, 1, 0, 4096, undefined, 0x12345678);
    expect(await c.closedBy(), 'still open');
    return true;
  });

  await scenario('unknown command: EINVAL with its cookie, the connection goes on', async () => {
    const c = await Client.ready();
    c.request(42, 0, 99, 0, 4096);
    const r = await c.reply();
    expect(r?.error === ERR.EINVAL && r.cookie === 99, `reply ${JSON.stringify(r)}`);
    c.request(CMD.CACHE, 0, 98, 0, 4096);
    expect((await c.reply())?.error === ERR.EINVAL, 'NBD_CMD_CACHE refused');
    await c.readBlock(0, 4096);
    c.close();
    return true;
  });

  await scenario('reads out of range: EINVAL', async () => {
    const c = await Client.ready();
    c.request(CMD.READ, 0, 1, SIZE, 512);
    expect((await c.reply())?.error === ERR.EINVAL, 'at the end');
    c.request(CMD.READ, 0, 2, SIZE - 512, 1024);
    expect((await c.reply())?.error === ERR.EINVAL, 'across the end');
    c.request(CMD.READ, 0, 3, 2 ** 62, 512);
    expect((await c.reply())?.error === ERR.EINVAL, 'far past the end');
    await c.readBlock(SIZE - 512, 512);
    c.close();
    return true;
  });

  await scenario('write past the end: its payload is read, then ENOSPC; the stream stays in step', async () => {
    const c = await Client.ready();
    c.request(CMD.WRITE, 0, 5, SIZE - 512, 8192, randomBytes(8192));
    const r = await c.reply();
    expect(r?.error === ERR.ENOSPC && r.cookie === 5, `reply ${JSON.stringify(r)}`);
    await c.readBlock(0, 4096);
    c.close();
    return true;
  });

  await scenario('misaligned requests: EINVAL (a misaligned write\'s payload is read first)', async () => {
    const c = await Client.ready();
    c.request(CMD.READ, 0, 1, 1, 512);
    expect((await c.reply())?.error === ERR.EINVAL, 'read at offset 1');
    c.request(CMD.READ, 0, 2, 0, 100);
    expect((await c.reply())?.error === ERR.EINVAL, 'read of 100 bytes');
    c.request(CMD.WRITE, 0, 3, 100, 1000, randomBytes(1000));
    expect((await c.reply())?.error === ERR.EINVAL, 'write at 100');
    c.request(CMD.READ, 0, 4, 0, 0);
    expect((await c.reply())?.error === ERR.EINVAL, 'zero length');
    await c.readBlock(0, 4096);
    c.close();
    return true;
  });

  await scenario('a READ above 32 MiB: an error reply, then the server closes', async () => {
    const c = await Client.ready();
    c.request(CMD.READ, 0, 8, 0, 64 * MiB);
    const r = await c.reply();
    expect(r !== null && r.error !== 0 && r.cookie === 8, `reply ${JSON.stringify(r)}`);
    expect(await c.closedBy(), 'still open');
    return true;
  });

  await scenario('a WRITE above 32 MiB: an error reply, then the server closes without reading the payload', async () => {
    const c = await Client.ready();
    c.request(CMD.WRITE, 0, 9, 0, 0xfffffe00);
    const r = await c.reply();
    expect(r?.error === ERR.EINVAL && r.cookie === 9, `reply ${JSON.stringify(r)}`);
    expect(await c.closedBy(), 'still open');
    return true;
  });

  await scenario('read-only export: writes, trims and zeroes get EPERM; reads work', async () => {
    const c = await Client.open();
    await c.hello();
    const info = await c.go(roExport);
    expect((info.flags & 2) !== 0, `flags ${info.flags} without READ_ONLY`);
    expect(info.min === 4096, `minimum block size ${info.min}`);
    c.request(CMD.WRITE, 0, 1, 0, 4096, randomBytes(4096));
    expect((await c.reply())?.error === ERR.EPERM, 'write');
    c.request(CMD.TRIM, 0, 2, 0, 4096);
    expect((await c.reply())?.error === ERR.EPERM, 'trim');
    c.request(CMD.WRITE_ZEROES, 0, 3, 0, 4096);
    expect((await c.reply())?.error === ERR.EPERM, 'write zeroes');
    c.request(CMD.READ, 0, 4, 512, 512);
    expect((await c.reply())?.error === ERR.EINVAL, '512-byte read of a 4096-byte export');
    await c.readBlock(4096, 8192);
    c.close();
    return true;
  });

  await scenario('FUA on every command; flush; write zeroes (NO_HOLE) and trim; DISC closes', async () => {
    const c = await Client.ready();
    const at = SIZE - 64 * 1024;
    const data = randomBytes(16384);
    c.request(CMD.WRITE, CMD_FLAG.FUA, 1, at, data.length, data);
    expect((await c.reply())?.error === 0, 'write FUA');
    c.request(CMD.READ, CMD_FLAG.FUA, 2, at, data.length);
    const r = await c.reply();
    expect(r?.error === 0, 'read FUA');
    expect((await c.read(data.length))!.equals(data), 'read back what was written');
    c.request(CMD.FLUSH, CMD_FLAG.FUA, 3, 0, 0);
    expect((await c.reply())?.error === 0, 'flush FUA');
    c.request(CMD.WRITE_ZEROES, CMD_FLAG.FUA | CMD_FLAG.NO_HOLE, 4, at, 8192);
    expect((await c.reply())?.error === 0, 'write zeroes');
    const z = await c.readBlock(at, 16384, 5);
    expect(z.subarray(0, 8192).every((x) => x === 0) && z.subarray(8192).equals(data.subarray(8192)), 'zeroes where asked, data after');
    c.request(CMD.TRIM, CMD_FLAG.FUA, 6, at + 8192, 8192);
    expect((await c.reply())?.error === 0, 'trim FUA');
    c.request(CMD.DISC, 0, 7, 0, 0);
    expect(await c.closedBy(), 'still open after DISC');
    return true;
  });

  await scenario('many requests in flight on one connection, each answered once by its cookie', async () => {
    const c = await Client.ready();
    const N = 96;
    const base = SIZE / 2;
    const blocks = Array.from({ length: N }, () => randomBytes(4096 * (1 + Math.floor(Math.random() * 8))));
    const offs: number[] = [];
    let at = base;
    for (let i = 0; i < N; i++) {
      offs.push(at);
      c.request(CMD.WRITE, 0, 1000 + i, at, blocks[i].length, blocks[i]);
      at += 65536;
    }
    const seen = new Set<number>();
    for (let i = 0; i < N; i++) {
      const r = await c.reply();
      expect(r !== null && r.error === 0, `write reply ${JSON.stringify(r)}`);
      expect(!seen.has(r!.cookie) && r!.cookie >= 1000 && r!.cookie < 1000 + N, `cookie ${r!.cookie}`);
      seen.add(r!.cookie);
    }
    // Reads of different sizes, all sent before any reply is read.
    for (let i = 0; i < N; i++) c.request(CMD.READ, 0, 5000 + i, offs[i], blocks[i].length);
    for (let i = 0; i < N; i++) {
      const r = await c.reply();
      expect(r !== null && r.error === 0, `read reply ${JSON.stringify(r)}`);
      const k = r!.cookie - 5000;
      expect(k >= 0 && k < N && !seen.has(r!.cookie), `cookie ${r!.cookie}`);
      seen.add(r!.cookie);
      const d = await c.read(blocks[k].length);
      expect(d!.equals(blocks[k]), `data of request ${k}`);
    }
    c.close();
    return true;
  });

  await scenario('a client that vanishes with 32 MiB of reads in flight, or inside a write payload, harms no one', async () => {
    for (let round = 0; round < 3; round++) {
      const c = await Client.ready();
      for (let i = 0; i < 32; i++) c.request(CMD.READ, 0, i, i * MiB, MiB);
      await new Promise((r) => setTimeout(r, round * 5));
      c.close();
    }
    const w = await Client.ready();
    w.request(CMD.WRITE, 0, 1, 0, 1 * MiB, randomBytes(100_000));
    await new Promise((r) => setTimeout(r, 20));
    w.close();
    // The server is still whole: a new connection reads.
    const n = await Client.ready();
    await n.readBlock(0, 1 * MiB);
    n.close();
    return true;
  });

  await scenario('a client that half-closes after its requests still gets every reply', async () => {
    const c = await Client.ready();
    for (let i = 0; i < 8; i++) c.request(CMD.READ, 0, 100 + i, i * 4096, 4096);
    c.sock.end();
    for (let i = 0; i < 8; i++) {
      const r = await c.reply();
      expect(r !== null && r.error === 0, `reply ${i}: ${JSON.stringify(r)}`);
      expect((await c.read(4096)) !== null, `data ${i}`);
    }
    expect(await c.closedBy(), 'the server closes once it has answered');
    return true;
  });

  stop = true;
  await keeping;
}

await main();
console.log(JSON.stringify({ results, keeper }));
process.exit(0);
