/**
 * The receiver side of NetPIPE's TCP module (NPtcp 3.7.x, Debian's
 * netpipe-tcp), as a pure state machine: no imports, no I/O, so unit tests
 * run it in Node (test/proto.test.ts) and the app (netpipe.ts) only moves
 * bytes for it.
 *
 * What the transmitter (`NPtcp -h HOST`) does, read from netpipe.c and
 * tcp.c, and what the receiver must do to keep in step:
 *
 * - Sync: each side writes "SyncMe" (6 bytes) and reads the other's. The
 *   transmitter always writes first, so the receiver here reads the six
 *   bytes and then answers them; nothing is timed across a sync.
 * - Warm-up: a sync, 100 ping-pongs of `start` bytes, a sync, a Reset.
 * - The main loop, one point per message size: a sync, the repeat count
 *   (4 bytes, big-endian), then TRIALS (3; 1 with -i) trials of: a sync,
 *   `nrepeat` messages of the point's size, each sent back unless
 *   streaming (-s), then a Reset. After the trials of a streaming point
 *   the receiver sends the best trial's time per message (4 bytes,
 *   big-endian, in units of 10 ns), since the transmitter cannot see when
 *   the data arrived.
 * - Sizes: `Schedule` below; both sides compute them, the repeat count is
 *   the only number that crosses.
 * - Reset: a no-op, except with -s (which forces it) or -r: the
 *   transmitter writes "QUIT\0", reads 5 bytes, closes and connects
 *   again; the receiver reads the 5 bytes, answers "QUIT\0", closes and
 *   accepts the next connection, where the run goes on.
 * - The end: the transmitter writes "QUIT\0" where the next point's sync
 *   would be, reads 5 bytes and closes (CleanUp). Its -u bound never
 *   crosses: the receiver learns the end from the QUIT.
 *
 * Which of these a run uses is told apart from the bytes, so one receiver
 * serves every mode without flags: Reset mode shows as a QUIT right after
 * the warm-up's closing sync instead of the first point's sync; with
 * Reset, streaming shows as the second message arriving before the first
 * is answered (a ping-pong transmitter waits for the answer; a streaming
 * one sends at least TRIALS messages at once); if nothing more arrives
 * within a short wait, it is a ping-pong with -r. Bi-directional mode (-2)
 * is served as a ping-pong (the transmitter sends its whole message and
 * then reads ours), or with both directions at once when `bidir` is set.
 * Options that change the schedule (-l, -p, -i) must be given to the
 * receiver as to NPtcp's own receiver.
 */

export const SYNC = bytes('SyncMe');
export const QUIT = bytes('QUIT\0');
/** Trials per point (netpipe.h, not Apple). */
export const TRIALS = 3;
/** Ping-pongs of the warm-up that estimates the first latency. */
export const WARMUP = 100;
/** NetPIPE's default perturbation (-p). */
export const DEFAULT_PERTURBATION = 3;
/** NetPIPE's default upper bound on message sizes (MAXINT in netpipe.h, -u). */
export const DEFAULT_END = 10_000_000;

function bytes(s: string): Uint8Array {
  const b = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i);
  return b;
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function show(b: Uint8Array): string {
  let s = '';
  for (const c of b) s += c >= 32 && c < 127 ? String.fromCharCode(c) : `\\x${c.toString(16).padStart(2, '0')}`;
  return JSON.stringify(s);
}

/**
 * The message sizes of a run, in order, as netpipe.c's main loop makes
 * them: `len` starts at `start` and grows by `inc`, which starts at 1 (or
 * start/2) and doubles at every other point from the fourth; each `len` is
 * also tried at len-p and len+p once `inc` exceeds p+1.
 */
export class Schedule {
  private len: number;
  private inc: number;
  private nq: number;
  private pert = 0;
  /** Whether the current `len` has perturbations left to give. */
  private inPoint = false;

  constructor(
    readonly start = 1,
    readonly perturbation = DEFAULT_PERTURBATION,
  ) {
    if (!(start >= 1)) throw new Error('start must be 1 or more');
    this.len = start;
    this.inc = start > 1 ? Math.floor(start / 2) : 1;
    this.nq = start > 1 ? 1 : 0;
  }

  private perturbs(): boolean {
    return this.perturbation > 0 && this.inc > this.perturbation + 1;
  }

  /** The next message size. */
  next(): number {
    if (!this.inPoint) {
      // Top of the outer loop: exponentially increase the increment.
      if (this.nq > 2) this.inc = this.nq % 2 ? this.inc + this.inc : this.inc;
      this.pert = this.perturbs() ? -this.perturbation : 0;
      this.inPoint = true;
    }
    const size = this.len + this.pert;
    this.pert += this.perturbs() ? this.perturbation : this.perturbation + 1;
    if (this.pert > this.perturbation) {
      // End of the perturbation loop: the outer loop's increment step.
      this.inPoint = false;
      this.len += this.inc;
      this.nq++;
    }
    return size;
  }

  /** Every size up to `end` (the transmitter's -u), for tests and tools. */
  static sizes(end = DEFAULT_END, start = 1, perturbation = DEFAULT_PERTURBATION): number[] {
    const s = new Schedule(start, perturbation);
    const out: number[] = [];
    // The transmitter stops when `len` passes `end`; perturbed sizes of
    // the last `len` may pass it.
    while (s.inPoint || s.len <= end) {
      out.push(s.next());
      if (out.length > 100_000) throw new Error('schedule does not end');
    }
    return out;
  }
}

export interface Options {
  /** -l: the first size (default 1; 5 with integrity). */
  start?: number;
  /** -p: the perturbation (default 3; 0 with integrity). */
  perturbation?: number;
  /** -i: one trial per point. */
  integrity?: boolean;
  /** -s: 'auto' tells streaming from ping-pong by the bytes (with Reset). */
  stream?: 'auto' | 'yes' | 'no';
  /** -2 served with both directions at once (else as a ping-pong). */
  bidir?: boolean;
  /** The clock, in seconds (streaming mode times the trials). */
  now: () => number;
}

/** What the receiver must do next; the driver does it and resumes the machine. */
export type Op =
  /** Read exactly `len` bytes and resume with them. */
  | { kind: 'read'; len: number }
  /** Write these bytes (all of them), then resume. */
  | { kind: 'write'; bytes: Uint8Array }
  /** Receive a `len`-byte message into the buffer, then resume. */
  | { kind: 'recv'; len: number }
  /** Send the first `len` bytes of the buffer, then resume. */
  | { kind: 'send'; len: number }
  /** Send `len` bytes and receive `len` bytes at once (-2 with `bidir`). */
  | { kind: 'exchange'; len: number }
  /**
   * Receive up to `len` more bytes if they arrive within a short wait
   * (without overwriting the first `len` bytes of the buffer), and resume
   * with how many came (0: none did).
   */
  | { kind: 'probe'; len: number }
  /** Close this connection; the run goes on on the next one accepted. */
  | { kind: 'reconnect' }
  /** The run is over: close the connection. */
  | { kind: 'done' }
  /** The peer broke the protocol: close the connection and forget the run. */
  | { kind: 'fail'; why: string };

/** Progress of a run, for logs and counters. */
export interface Progress {
  points: number;
  lastSize: number;
  maxSize: number;
  messages: number;
  bytes: number;
  resets: number;
  streaming: boolean | null;
  reset: boolean | null;
}

type Resume = Uint8Array | number | undefined;

/**
 * A run of the receiver. `op` is what to do now; call `resume(result)`
 * once it is done: the bytes for 'read', the count for 'probe', nothing
 * for the rest.
 */
export class Receiver {
  op: Op;
  readonly progress: Progress = { points: 0, lastSize: 0, maxSize: 0, messages: 0, bytes: 0, resets: 0, streaming: null, reset: null };
  private readonly gen: Generator<Op, void, Resume>;
  private readonly opts: Required<Omit<Options, 'now'>> & { now: () => number };

  constructor(options: Options) {
    const integrity = options.integrity ?? false;
    this.opts = {
      start: options.start ?? (integrity ? 5 : 1),
      perturbation: options.perturbation ?? (integrity ? 0 : DEFAULT_PERTURBATION),
      integrity,
      stream: options.stream ?? 'auto',
      bidir: options.bidir ?? false,
      now: options.now,
    };
    if (this.opts.stream === 'yes') {
      this.progress.streaming = true;
      this.progress.reset = true;
    }
    this.gen = this.run();
    this.op = this.step(undefined);
  }

  resume(result?: Resume): Op {
    this.op = this.step(result);
    return this.op;
  }

  private step(result: Resume): Op {
    const r = this.gen.next(result);
    return r.done ? { kind: 'done' } : r.value;
  }

  /** The receiver's side of netpipe.c's main(), one yield per I/O. */
  private *run(): Generator<Op, void, Resume> {
    const o = this.opts;
    const p = this.progress;

    // Warm-up: a sync, 100 ping-pongs of `start` bytes, a sync.
    if (!(yield* this.sync())) return;
    for (let n = 0; n < WARMUP; n++) {
      yield { kind: 'recv', len: o.start };
      yield { kind: 'send', len: o.start };
    }
    if (!(yield* this.sync())) return;

    // Reset: with -s or -r the transmitter quits and connects again;
    // otherwise the first point's sync follows.
    let head = (yield { kind: 'read', len: 5 }) as Uint8Array;
    if (equal(head, QUIT)) {
      if (p.reset === false) return yield* this.fail(`a QUIT where a sync was due (Reset mode is off)`);
      p.reset = true;
      yield* this.answerQuit();
      head = (yield { kind: 'read', len: 5 }) as Uint8Array;
    } else {
      if (p.reset === true) return yield* this.fail(`${show(head)} where the warm-up's Reset was due`);
      if (o.stream === 'yes') return yield* this.fail(`a sync where the warm-up's Reset was due (-s resets the connection)`);
      p.reset = false;
      p.streaming = false;
    }
    if (p.streaming === null && o.stream === 'no') p.streaming = false;

    const schedule = new Schedule(o.start, o.perturbation);
    const trials = o.integrity ? 1 : TRIALS;
    for (;;) {
      // A point: its sync, or the transmitter's final QUIT.
      if (equal(head, QUIT)) {
        yield { kind: 'write', bytes: QUIT };
        return;
      }
      if (!(yield* this.syncAfter(head))) return;
      const rep = (yield { kind: 'read', len: 4 }) as Uint8Array;
      const nrepeat = ((rep[0] << 24) | (rep[1] << 16) | (rep[2] << 8) | rep[3]) >>> 0;
      if (nrepeat === 0 || nrepeat > 0x7fffffff) return yield* this.fail(`repeat count ${nrepeat}`);
      const size = schedule.next();
      p.points++;
      p.lastSize = size;
      p.maxSize = Math.max(p.maxSize, size);

      let best = Infinity;
      for (let trial = 0; trial < trials; trial++) {
        if (!(yield* this.sync())) return;
        const t0 = o.now();
        for (let j = 0; j < nrepeat; j++) {
          if (o.bidir) {
            yield { kind: 'exchange', len: size };
          } else {
            yield { kind: 'recv', len: size };
            if (p.streaming === null && nrepeat > 1) {
              // Reset mode, first message: streaming or ping-pong with -r?
              const more = (yield { kind: 'probe', len: size }) as number;
              p.streaming = more > 0;
              if (more > 0) {
                // Part of the next message is in: take the rest of it.
                p.messages++;
                p.bytes += size;
                j++;
                if (more < size) yield { kind: 'recv', len: size - more };
              }
            } else if (p.streaming === null) {
              // One message per trial (-n 1) cannot be told apart: a ping-pong.
              p.streaming = false;
            }
            if (!p.streaming) yield { kind: 'send', len: size };
          }
          p.messages++;
          p.bytes += size;
        }
        best = Math.min(best, (o.now() - t0) / nrepeat);
        if (p.reset) {
          const q = (yield { kind: 'read', len: 5 }) as Uint8Array;
          if (!equal(q, QUIT)) return yield* this.fail(`${show(q)} where a Reset's QUIT was due`);
          yield* this.answerQuit();
        }
      }
      if (p.streaming) {
        // SendTime: the best trial's time per message, in 10 ns units.
        const t = Math.max(0, Math.min(0xffffffff, Math.floor(best * 1e8)));
        yield { kind: 'write', bytes: new Uint8Array([t >>> 24, (t >>> 16) & 255, (t >>> 8) & 255, t & 255]) };
      }
      head = (yield { kind: 'read', len: 5 }) as Uint8Array;
    }
  }

  /** Read the transmitter's "SyncMe" and answer it; false if it was not one. */
  private *sync(): Generator<Op, boolean, Resume> {
    const got = (yield { kind: 'read', len: 6 }) as Uint8Array;
    if (!equal(got, SYNC)) {
      yield* this.fail(`${show(got)} where a sync was due`);
      return false;
    }
    yield { kind: 'write', bytes: SYNC };
    return true;
  }

  /** The same, when its first five bytes are already read. */
  private *syncAfter(head: Uint8Array): Generator<Op, boolean, Resume> {
    if (!equal(head, SYNC.subarray(0, 5))) {
      yield* this.fail(`${show(head)} where a sync or the final QUIT was due`);
      return false;
    }
    const last = (yield { kind: 'read', len: 1 }) as Uint8Array;
    if (last[0] !== SYNC[5]) {
      yield* this.fail(`"SyncM" then ${show(last)}`);
      return false;
    }
    yield { kind: 'write', bytes: SYNC };
    return true;
  }

  /** Tcp.c's CleanUp on the receiver: answer the QUIT, close, accept again. */
  private *answerQuit(): Generator<Op, void, Resume> {
    this.progress.resets++;
    yield { kind: 'write', bytes: QUIT };
    yield { kind: 'reconnect' };
  }

  private *fail(why: string): Generator<Op, void, Resume> {
    yield { kind: 'fail', why };
  }
}
