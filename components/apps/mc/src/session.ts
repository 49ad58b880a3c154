/**
 * One client connection of the memcached server, without I/O: bytes in,
 * replies out (into a Sink), and what the connection does next. The first
 * byte picks the protocol, as in memcached: 0x80 binary, anything else
 * text. Pure (test/session.test.ts).
 */
import { execute, HEADER, isStorage, lengthsValid, parseHeader, STATUS, writeError, type After, type Context } from './binary.ts';
import { Sink } from './sink.ts';
import { DEFAULT_MAX_ITEM, Store } from './store.ts';
import { executeText } from './text.ts';

export const VERSION = '1.6.0-libretto';

/** Key (and command line) bytes as a string, one character per byte. */
export function latin1String(b: Uint8Array, start: number, end: number): string {
  if (end - start <= 1024) return String.fromCharCode.apply(null, b.subarray(start, end) as unknown as number[]);
  let s = '';
  for (let i = start; i < end; i += 1024) s += String.fromCharCode.apply(null, b.subarray(i, Math.min(end, i + 1024)) as unknown as number[]);
  return s;
}

/** Command counters, cleared by `stats reset`. */
export function newCounters(): Record<string, number> {
  return { cmd_get: 0, cmd_set: 0, cmd_flush: 0, cmd_touch: 0, bad_magic: 0, protocol_errors: 0 };
}

/** The shared state of every connection: the store and what stats report. */
export class Server implements Context {
  readonly store: Store;
  readonly version = VERSION;
  stats = newCounters();
  verbosity = 0;
  readonly started: number;
  /** Gauges the app keeps (connections, bytes moved); shown in stats. */
  gauges: Record<string, number> = { curr_connections: 0, total_connections: 0, bytes_read: 0, bytes_written: 0 };

  constructor(
    opts: { limitBytes?: number; maxItem?: number; now?: number } = {},
  ) {
    this.store = new Store(opts.limitBytes ?? 64 << 20, opts.maxItem ?? DEFAULT_MAX_ITEM);
    this.started = Math.floor(opts.now ?? 0);
    this.store.setTime(this.started);
  }

  keyString(b: Uint8Array, start: number, end: number): string {
    return latin1String(b, start, end);
  }

  statsReport(group: string): [string, string][] | null {
    const s = this.store;
    if (group === 'settings') {
      return [
        ['maxbytes', String(s.limitBytes)],
        ['item_size_max', String(s.maxItem)],
        ['evictions', 'on'],
        ['cas_enabled', 'yes'],
        ['binding_protocol', 'auto-negotiate'],
      ];
    }
    if (group !== '') return null;
    const rows: [string, string][] = [
      ['pid', '1'],
      ['uptime', String(s.time - this.started)],
      ['time', String(s.time)],
      ['version', this.version],
      ['pointer_size', '32'],
      ['threads', '1'],
      ['limit_maxbytes', String(s.limitBytes)],
      ['curr_items', String(s.currItems)],
      ['bytes', String(s.currBytes)],
    ];
    for (const [k, v] of Object.entries(this.gauges)) rows.push([k, String(v)]);
    for (const [k, v] of Object.entries(this.stats)) rows.push([k, String(v)]);
    for (const [k, v] of Object.entries(s.counters)) rows.push([k, String(v)]);
    return rows;
  }
}

/** Bodies past this are not buffered: the request is answered at its header and its body skipped. */
export function maxBody(maxItem: number): number {
  return maxItem + 8 + 250 + 64;
}

export class Session {
  proto: 'unknown' | 'binary' | 'text' = 'unknown';
  /** Input bytes still to skip (the body of a refused request). */
  swallow = 0;
  /** What the connection does once its replies are out. */
  after: After = 'go-on';

  constructor(readonly server: Server) {}

  /**
   * Run every complete request in b[at, end), writing replies to `out`;
   * returns how many bytes were used. Stops early once the connection is
   * to close.
   */
  feed(b: Uint8Array, at: number, end: number, out: Sink): number {
    const srv = this.server;
    let p = at;
    while (p < end && this.after === 'go-on') {
      if (this.swallow > 0) {
        const n = Math.min(this.swallow, end - p);
        this.swallow -= n;
        p += n;
        continue;
      }
      if (this.proto === 'unknown') this.proto = b[p] === 0x80 ? 'binary' : 'text';
      if (this.proto === 'binary') {
        if (end - p < HEADER) break;
        const h = parseHeader(b, p);
        if (!h) {
          // Not a request's magic: memcached closes the connection.
          srv.stats.bad_magic++;
          this.after = 'close-now';
          break;
        }
        if (h.bodylen > maxBody(srv.store.maxItem)) {
          // Too big to hold: answered now, its body dropped as it comes.
          srv.stats.protocol_errors++;
          const storing = isStorage(h.opcode) && lengthsValid(h);
          writeError(out, h, storing ? STATUS.E2BIG : STATUS.EINVAL);
          p += HEADER;
          this.swallow = h.bodylen;
          continue;
        }
        if (end - p < HEADER + h.bodylen) break;
        this.after = execute(srv, h, b, p, out);
        p += HEADER + h.bodylen;
        continue;
      }
      const r = executeText(srv, b, p, end, out);
      if (r.consumed === 0) break;
      p += r.consumed;
      this.swallow = r.swallow;
      this.after = r.after;
    }
    return p - at;
  }
}
