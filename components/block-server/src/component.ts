/**
 * The block server component: one loop that takes the apps' commands in
 * batches, refuses bad ones with a status, schedules the rest fairly onto
 * the shared device, and accounts for completions. Data never passes
 * through it: the host holds each command's buffer, and posts each
 * completion to its app itself. Everything that must survive a restart
 * (requests not yet forwarded, commands on the device) lives in the host.
 */
import * as host from 'libretto:io/host@0.1.0';
import * as req from 'libretto:block/requests@0.1.0';
import { num, u64 } from '../../lib/abi.ts';
import { Scheduler, type Grant, type Request, type Status, type DeviceCommand } from './sched.ts';

let sched: Scheduler | null = null;
let turns = 0;
const REPORT_NS = 250e6;

function counters(): { name: string; value: unknown }[] {
  const out = [{ name: 'turns', value: u64(turns) }];
  if (sched) for (const [name, value] of sched.counters()) out.push({ name, value: u64(value) });
  return out;
}

function loadGrants(s: Scheduler): void {
  const gs: Grant[] = req.grants().map((g) => ({
    app: g.app >>> 0,
    name: g.appName,
    nsid: g.info.nsid >>> 0,
    blockSize: g.info.blockSize >>> 0,
    blocks: num(g.info.blocks),
    readOnly: g.info.readOnly,
    maxTransferBlocks: g.info.maxTransferBlocks >>> 0,
    firstLba: num(g.firstLba),
  }));
  s.setGrants(gs);
}

export const server = {
  run() {
    const dev = req.deviceInfo().info;
    const s = (sched = new Scheduler(dev.blockSize >>> 0, Math.max(1, dev.queueDepth >>> 0)));
    let generation = num(req.grantsGeneration());
    loadGrants(s);
    host.log(`block-server: device of ${num(dev.blocks)} blocks of ${dev.blockSize >>> 0} bytes, depth ${dev.queueDepth >>> 0}`);
    const refuse: [number, Status][] = [];
    const forward: DeviceCommand[] = [];
    let reported = 0;
    for (;;) {
      const g = num(req.grantsGeneration());
      if (g !== generation) {
        generation = g;
        loadGrants(s);
      }
      const now = num(req.now());
      const got = req.recv(256);
      if (got.length > 0) {
        const reqs: Request[] = got.map((r) => ({
          app: r.app >>> 0,
          tag: num(r.tag),
          opcode: r.opcode,
          nsid: r.nsid >>> 0,
          slba: num(r.slba),
          nlb: r.nlb >>> 0,
          fua: r.fua,
          bufferLen: r.bufferLen >>> 0,
        }));
        refuse.length = 0;
        s.admit(reqs, now, refuse);
        if (refuse.length > 0) req.complete(refuse.map(([tag, st]) => [u64(tag), st] as [never, never]));
      }
      const done = req.reap(256);
      if (done.length > 0) s.completed(done.map((d) => ({ tag: num(d.tag), status: d.status })), now);
      forward.length = 0;
      s.dispatch(forward);
      if (forward.length > 0) req.forward(forward.map((c) => ({ tag: u64(c.tag), slba: u64(c.slba), nlb: c.nlb })) as never);
      turns++;
      if (now - reported >= REPORT_NS) {
        reported = now;
        req.report(counters().map((c) => [c.name, c.value] as [string, never]));
      }
      if (got.length === 0 && done.length === 0 && forward.length === 0) {
        if (req.wait(u64(num(req.now()) + 1e9)) === 'stop') return { tag: 'stopped' as const };
      }
    }
  },
};

export const control = {
  describe() {
    return { name: 'block-server', version: `0.1.0+${__LIBRETTO_BACKEND__}` };
  },
  stats() {
    return counters();
  },
};
