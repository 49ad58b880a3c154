/**
 * blockgen: a block load generator and crash writer on the POSIX shim's
 * block devices (`libretto:posix/blockdev`), the way fio drives a namespace
 * through io_uring.
 *
 * Arguments:
 *   mode=crash  The crash writer. Cycle after cycle (generation base+1,
 *               base+2, ...) it writes `count` distinct blocks of the
 *               namespace (every fourth with FUA), then FLUSHes. It logs
 *               `blockgen: durable GEN fua LBA,...` when FUA writes
 *               complete and `blockgen: durable GEN all LBA,...` when the
 *               flush completes: from then on those blocks must read back
 *               whole with that generation or a later one, whatever happens
 *               to the host.
 *   mode=load   op=randread|randwrite|read|write, bs=BYTES (a multiple of
 *               the block size), qd=DEPTH, ops=N: N commands kept QD deep;
 *               logs `blockgen: start` and `blockgen: done OPS BYTES
 *               errors=E`, so a benchmark times it from the host's log.
 *               Data stays in host memory (a memfd): none passes through
 *               JavaScript.
 *   mode=probe  Bad commands, each alone, in both of the app's namespaces
 *               (ns=NSID and ro=NSID, a read-only one): past the end, nlb 0,
 *               above the largest transfer, a buffer too small, a write,
 *               deallocate and write-zeroes to the read-only namespace, and
 *               more commands than the queue holds; logs `blockgen: probe
 *               NAME STATUS` for each, then `blockgen: probe done`. Good
 *               commands between them must still succeed.
 * All: ns=NSID (default 1).
 */
import * as blockdev from 'libretto:posix/blockdev@0.1.0';
import * as epoll from 'libretto:posix/epoll@0.1.0';
import * as zerocopy from 'libretto:posix/zerocopy@0.1.0';
import { num, u64 } from '../../lib/abi.ts';
import { EV_IN, errno, host } from '../../apps/lib/posix.ts';
import { cycleBlocks, fillBlock } from './pattern.ts';

type Done = { tag: number; status: string };

class Device {
  readonly fd: number;
  readonly ep = epoll.create();
  readonly blockSize: number;
  readonly blocks: number;
  readonly depth: number;
  readonly maxBlocks: number;
  constructor(nsid: number) {
    const ns = blockdev.namespaces().find((n) => n.nsid >>> 0 === nsid);
    if (!ns) throw new Error(`no namespace ${nsid} (have ${blockdev.namespaces().map((n) => n.nsid).join(', ') || 'none'})`);
    this.blockSize = ns.blockSize >>> 0;
    this.blocks = num(ns.blocks as bigint | number);
    this.depth = ns.queueDepth >>> 0;
    this.maxBlocks = ns.maxTransferBlocks >>> 0;
    this.fd = blockdev.openNamespace(nsid);
    epoll.ctl(this.ep, 'add', this.fd, EV_IN, u64(this.fd));
  }

  submit(ios: { tag: number; opcode: string; slba: number; nlb: number; fua: boolean; memfd: number; offset: number }[]): boolean {
    try {
      blockdev.submit(this.fd, ios.map((io) => ({ ...io, slba: u64(io.slba) })) as never);
      return true;
    } catch (e) {
      if (errno(e) === 'eagain') return false;
      throw e;
    }
  }

  /** Completions, waiting up to `ms` for the first. */
  reap(ms: number): Done[] {
    const got = blockdev.reap(this.fd, 1024) as Done[];
    if (got.length > 0) return got;
    epoll.wait(this.ep, 1, ms);
    return blockdev.reap(this.fd, 1024) as Done[];
  }

  /** Submit and wait for every completion. */
  run(ios: Parameters<Device['submit']>[0]): Map<number, string> {
    const out = new Map<number, string>();
    while (!this.submit(ios)) this.reap(100).forEach((d) => out.set(d.tag, d.status));
    while (out.size < ios.length) {
      for (const d of this.reap(1000)) out.set(d.tag, d.status);
      if (host.stopping()) break;
    }
    return out;
  }
}

function crash(dev: Device, args: Map<string, string>): string | null {
  const base = Number(args.get('base') ?? 0);
  const count = Math.min(Number(args.get('count') ?? 16), dev.depth - 1);
  const bs = dev.blockSize;
  const mem = zerocopy.memfdCreate(count * bs);
  const block = new Uint8Array(bs);
  host.log(`blockgen: crash writer on ${dev.blocks} blocks of ${bs} bytes, ${count} per cycle, from generation ${base + 1}`);
  let errors = 0;
  for (let gen = base + 1; !host.stopping(); gen++) {
    const lbas = cycleBlocks(gen, count, dev.blocks);
    lbas.forEach((lba, i) => {
      fillBlock(block, lba, gen);
      zerocopy.pwrite(mem, i * bs, block);
    });
    const ios = lbas.map((lba, i) => ({ tag: i, opcode: 'write', slba: lba, nlb: 1, fua: i % 4 === 0, memfd: mem, offset: i * bs }));
    const done = dev.run(ios);
    const bad = [...done].filter(([, s]) => s !== 'success');
    if (bad.length > 0) {
      errors += bad.length;
      host.log(`blockgen: error: generation ${gen}: ${bad.map(([t, s]) => `lba ${lbas[t]}: ${s}`).join(', ')}`);
      continue;
    }
    if (done.size < ios.length) break;
    host.log(`blockgen: durable ${gen} fua ${lbas.filter((_, i) => i % 4 === 0).join(',')}`);
    const f = dev.run([{ tag: 0, opcode: 'flush', slba: 0, nlb: 0, fua: false, memfd: mem, offset: 0 }]);
    if (!f.has(0)) break; // stopping
    if (f.get(0) !== 'success') {
      errors++;
      host.log(`blockgen: error: flush of generation ${gen}: ${f.get(0) ?? 'no completion'}`);
      continue;
    }
    host.log(`blockgen: durable ${gen} all ${lbas.join(',')}`);
    counters.cycles++;
    counters.durable += lbas.length;
  }
  host.log(`blockgen: stopped; ${errors} errors`);
  return errors > 0 ? `${errors} commands failed` : null;
}

function load(dev: Device, args: Map<string, string>): string | null {
  const op = args.get('op') ?? 'randread';
  const bytes = Number(args.get('bs') ?? 4096);
  const qd = Math.min(Number(args.get('qd') ?? 16), dev.depth);
  const total = Number(args.get('ops') ?? 100000);
  const nlb = bytes / dev.blockSize;
  if (!Number.isInteger(nlb) || nlb < 1 || nlb > dev.maxBlocks) return `bs=${bytes} is not a multiple of ${dev.blockSize} up to ${dev.maxBlocks * dev.blockSize}`;
  if (!['randread', 'randwrite', 'read', 'write'].includes(op)) return `op=${op}: not randread, randwrite, read or write`;
  const opcode = op.endsWith('read') ? 'read' : 'write';
  const span = Math.floor(dev.blocks / nlb);
  const mem = zerocopy.memfdCreate(qd * bytes);
  let x = 12345;
  let seq = 0;
  const next = () => {
    if (!op.startsWith('rand')) return (seq++ % span) * nlb;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return (x % span) * nlb;
  };
  const free: number[] = [];
  for (let i = qd - 1; i >= 0; i--) free.push(i);
  let started = 0;
  let done = 0;
  let errors = 0;
  host.log(`blockgen: start ${op} bs=${bytes} qd=${qd} ops=${total}`);
  while (done < total && !host.stopping()) {
    const batch = [];
    while (free.length > 0 && started < total) {
      const slot = free.pop()!;
      batch.push({ tag: slot, opcode, slba: next(), nlb, fua: false, memfd: mem, offset: slot * bytes });
      started++;
    }
    if (batch.length > 0 && !dev.submit(batch)) {
      for (const b of batch) free.push(b.tag);
      started -= batch.length;
    }
    for (const d of dev.reap(1000)) {
      done++;
      counters.ops++;
      if (d.status !== 'success') errors++, counters.errors++;
      free.push(d.tag >>> 0);
    }
  }
  host.log(`blockgen: done ${done} ${done * bytes} errors=${errors}`);
  return errors > 0 ? `${errors} commands failed` : null;
}

function probe(dev: Device, args: Map<string, string>): string | null {
  const bs = dev.blockSize;
  const mem = zerocopy.memfdCreate(bs * 4);
  const one = (name: string, d: Device, io: Partial<Parameters<Device['submit']>[0][0]>) => {
    const full = { tag: 7, opcode: 'read', slba: 0, nlb: 1, fua: false, memfd: mem, offset: 0, ...io };
    let status: string;
    try {
      status = d.run([full]).get(7) ?? 'no completion';
    } catch (e) {
      status = `errno ${errno(e) ?? String(e)}`;
    }
    host.log(`blockgen: probe ${name} ${status}`);
  };
  one('good-read', dev, {});
  one('past-end', dev, { slba: dev.blocks });
  one('straddles-end', dev, { slba: dev.blocks - 1, nlb: 2 });
  one('nlb-zero', dev, { nlb: 0 });
  one('above-max-transfer', dev, { nlb: dev.maxBlocks + 1 });
  one('buffer-too-small', dev, { nlb: 4, offset: bs });
  one('good-write', dev, { opcode: 'write', fua: true });
  one('good-flush', dev, { opcode: 'flush' });
  const roId = Number(args.get('ro') ?? 0);
  if (roId) {
    const ro = new Device(roId);
    one('ro-read', ro, {});
    one('ro-write', ro, { opcode: 'write' });
    one('ro-deallocate', ro, { opcode: 'deallocate' });
    one('ro-write-zeroes', ro, { opcode: 'write-zeroes' });
  }
  // More than the queue holds, in one submission: refused whole.
  const many = Array.from({ length: dev.depth + 1 }, (_, i) => ({ tag: i, opcode: 'read', slba: 0, nlb: 1, fua: false, memfd: mem, offset: 0 }));
  host.log(`blockgen: probe queue-overflow ${dev.submit(many) ? 'accepted' : 'eagain'}`);
  one('good-read-after', dev, {});
  host.log('blockgen: probe done');
  return null;
}

export const server = {
  run() {
    const args = new Map(host.args());
    let dev: Device;
    try {
      dev = new Device(Number(args.get('ns') ?? 1));
    } catch (e) {
      const msg = `blockgen: ${errno(e) ?? (e as Error).message ?? String(e)}`;
      host.log(msg);
      return { tag: 'failed' as const, val: msg };
    }
    const mode = args.get('mode') ?? 'crash';
    const why = mode === 'crash' ? crash(dev, args) : mode === 'load' ? load(dev, args) : mode === 'probe' ? probe(dev, args) : `mode=${mode}: not crash, load or probe`;
    if (why) return { tag: 'failed' as const, val: `blockgen: ${why}` };
    while (!host.stopping()) epoll.wait(dev.ep, 1, 1000);
    return { tag: 'stopped' as const };
  },
};

const counters = { cycles: 0, durable: 0, ops: 0, errors: 0 };

export const control = {
  describe() {
    return { name: 'blockgen', version: '0.1.0' };
  },
  stats() {
    return Object.entries(counters).map(([name, value]) => ({ name, value: u64(value) }));
  },
};
