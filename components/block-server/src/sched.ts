/**
 * The block server's logic, free of WIT: check each app's command against
 * its namespace, translate it to device blocks, and schedule the apps
 * fairly onto the device queue (deficit round robin by bytes, so an app
 * issuing 1 MiB commands cannot starve one issuing 4 KiB ones).
 */

export type Opcode = 'read' | 'write' | 'flush' | 'deallocate' | 'write-zeroes';
export type Status =
  | 'success' | 'invalid-opcode' | 'invalid-field' | 'lba-out-of-range' | 'write-to-read-only'
  | 'invalid-namespace' | 'internal-error' | 'aborted';

export interface Grant {
  app: number;
  name: string;
  nsid: number;
  blockSize: number;
  blocks: number;
  readOnly: boolean;
  maxTransferBlocks: number;
  /** Where the namespace starts on the device, in device blocks. */
  firstLba: number;
}

export interface Request {
  app: number;
  tag: number;
  opcode: Opcode;
  nsid: number;
  /** Exact below 2^53; anything larger is past every namespace's end. */
  slba: number;
  nlb: number;
  fua: boolean;
  bufferLen: number;
}

export interface DeviceCommand {
  tag: number;
  slba: number;
  nlb: number;
}

const OPCODES: ReadonlySet<string> = new Set(['read', 'write', 'flush', 'deallocate', 'write-zeroes']);

/** The status a command earns before it reaches the device, or null if it may go. */
export function check(r: Request, g: Grant | undefined): Status | null {
  if (!OPCODES.has(r.opcode)) return 'invalid-opcode';
  if (!g) return 'invalid-namespace';
  if (r.opcode === 'flush') return null;
  if (r.opcode !== 'read' && g.readOnly) return 'write-to-read-only';
  if (r.nlb === 0 || r.nlb > g.maxTransferBlocks) return 'invalid-field';
  if (!(r.slba >= 0) || r.slba + r.nlb > g.blocks) return 'lba-out-of-range';
  if ((r.opcode === 'read' || r.opcode === 'write') && r.bufferLen < r.nlb * g.blockSize) return 'invalid-field';
  return null;
}

/** A checked command in device blocks. */
export function translate(r: Request, g: Grant, deviceBlockSize: number): DeviceCommand {
  if (r.opcode === 'flush') return { tag: r.tag, slba: 0, nlb: 0 };
  const k = g.blockSize / deviceBlockSize;
  return { tag: r.tag, slba: g.firstLba + r.slba * k, nlb: r.nlb * k };
}

/** Per-app counters, for `ctl stats`. */
export class AppStats {
  cmds = 0;
  reads = 0;
  writes = 0;
  flushes = 0;
  other = 0;
  readBytes = 0;
  writeBytes = 0;
  errors = 0;
  refused = 0;
  latencyNsSum = 0;
  latencyNsMax = 0;
  completed = 0;
}

interface Held {
  op: Opcode;
  cmd: DeviceCommand;
  bytes: number;
  /** When the server took the request in (ns). */
  since: number;
}

interface AppQueue {
  app: number;
  items: Held[];
  deficit: number;
}

/** What one scheduling turn decided. */
export interface Turn {
  forward: DeviceCommand[];
  refuse: [number, Status][];
}

export class Scheduler {
  private grants = new Map<string, Grant>();
  private queues = new Map<number, AppQueue>();
  private order: number[] = [];
  private next = 0;
  /** Commands on the device: tag → [app, opcode, bytes, time submitted]. */
  private onDevice = new Map<number, [number, Opcode, number, number]>();
  readonly stats = new Map<number, AppStats>();
  readonly names = new Map<number, string>();
  queued = 0;

  /** @param quantum bytes an app may send per round; @param depth the device's queue depth */
  constructor(private deviceBlockSize: number, private depth: number, private quantum = 128 << 10) {}

  setGrants(gs: Grant[]): void {
    this.grants.clear();
    for (const g of gs) {
      this.grants.set(`${g.app}/${g.nsid}`, g);
      this.names.set(g.app, g.name);
    }
  }

  statsOf(app: number): AppStats {
    let s = this.stats.get(app);
    if (!s) this.stats.set(app, (s = new AppStats()));
    return s;
  }

  get inflight(): number {
    return this.onDevice.size;
  }

  /** Take requests in: refused ones are returned at once; the rest queue per app. */
  admit(reqs: Request[], now: number, refuse: [number, Status][]): void {
    for (const r of reqs) {
      const s = this.statsOf(r.app);
      s.cmds++;
      const g = this.grants.get(`${r.app}/${r.nsid}`);
      const bad = check(r, g);
      if (bad) {
        s.refused++;
        s.errors++;
        refuse.push([r.tag, bad]);
        continue;
      }
      const cmd = translate(r, g!, this.deviceBlockSize);
      const bytes = r.opcode === 'read' || r.opcode === 'write' ? r.nlb * g!.blockSize : 0;
      let q = this.queues.get(r.app);
      if (!q) {
        q = { app: r.app, items: [], deficit: 0 };
        this.queues.set(r.app, q);
        this.order.push(r.app);
      }
      q.items.push({ op: r.opcode, cmd, bytes, since: now });
      this.queued++;
    }
  }

  /**
   * Choose what goes to the device now: deficit round robin across apps
   * with queued commands, up to the device's free depth. A command that
   * moves no data costs one block of quantum.
   */
  dispatch(out: DeviceCommand[]): void {
    let free = this.depth - this.onDevice.size;
    let idle = 0;
    while (free > 0 && this.queued > 0 && idle <= this.order.length) {
      if (this.next >= this.order.length) this.next = 0;
      const q = this.queues.get(this.order[this.next])!;
      if (q.items.length === 0) {
        q.deficit = 0;
        this.next++;
        idle++;
        continue;
      }
      q.deficit += this.quantum;
      let sent = 0;
      while (q.items.length > 0 && free > 0) {
        const h = q.items[0];
        const cost = Math.max(h.bytes, 512);
        if (cost > q.deficit && sent > 0) break;
        q.items.shift();
        q.deficit -= cost;
        this.queued--;
        free--;
        sent++;
        out.push(h.cmd);
        this.onDevice.set(h.cmd.tag, [q.app, h.op, h.bytes, h.since]);
      }
      if (q.items.length === 0) q.deficit = 0;
      idle = sent > 0 ? 0 : idle + 1;
      this.next++;
    }
  }

  /** The device completed these. */
  completed(done: { tag: number; status: Status }[], now: number): void {
    for (const d of done) {
      const on = this.onDevice.get(d.tag);
      if (!on) continue;
      this.onDevice.delete(d.tag);
      const [app, op, bytes, since] = on;
      const s = this.statsOf(app);
      s.completed++;
      if (d.status !== 'success') s.errors++;
      if (op === 'read') {
        s.reads++;
        if (d.status === 'success') s.readBytes += bytes;
      } else if (op === 'write') {
        s.writes++;
        if (d.status === 'success') s.writeBytes += bytes;
      } else if (op === 'flush') s.flushes++;
      else s.other++;
      const lat = Math.max(0, now - since);
      s.latencyNsSum += lat;
      if (lat > s.latencyNsMax) s.latencyNsMax = lat;
    }
  }

  counters(): [string, number][] {
    const out: [string, number][] = [
      ['device.inflight', this.onDevice.size],
      ['queued', this.queued],
    ];
    for (const [app, s] of this.stats) {
      const p = `app.${this.names.get(app) ?? app}`;
      out.push(
        [`${p}.cmds`, s.cmds], [`${p}.reads`, s.reads], [`${p}.writes`, s.writes], [`${p}.flushes`, s.flushes],
        [`${p}.other`, s.other], [`${p}.read.bytes`, s.readBytes], [`${p}.write.bytes`, s.writeBytes],
        [`${p}.errors`, s.errors], [`${p}.refused`, s.refused], [`${p}.completed`, s.completed],
        [`${p}.latency.us.avg`, s.completed ? Math.round(s.latencyNsSum / s.completed / 1000) : 0],
        [`${p}.latency.us.max`, Math.round(s.latencyNsMax / 1000)],
      );
    }
    return out;
  }
}
