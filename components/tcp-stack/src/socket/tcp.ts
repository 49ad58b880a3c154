/**
 * A TCP connection: the state machine of RFC 9293, with
 *
 * - RFC 5961 (blind RST, SYN and data injection: challenge ACKs),
 * - RFC 7323 (window scaling, timestamps, PAWS),
 * - RFC 2018 (SACK: blocks sent for out-of-order data, a scoreboard that
 *   retransmission skips),
 * - RFC 6298 (retransmission timer, Karn's rule, exponential backoff),
 * - RFC 5681 and RFC 6582 (slow start, congestion avoidance, fast
 *   retransmit, NewReno fast recovery), RFC 6928 (initial window of ten),
 * - delayed ACKs, Nagle's algorithm, zero-window probes, keepalive,
 *   TIME-WAIT, and ISNs per RFC 6528 (from the environment).
 *
 * Reading list: RFC 9293 section 3.10 (event processing) is followed step
 * by step in `segmentArrives`; comments name the step.
 *
 * The core does no I/O. Time comes in as `env.now` (nanoseconds); segments
 * go out through `env.emit`; payload moves by reference (a received
 * segment's bytes are placed into the receive store by `env.place`, an
 * outgoing segment names a range of the send store). `nextDeadline` tells
 * when the connection next needs `poll`.
 *
 * Positions are kept as offsets, not sequence numbers: send offset 0 is our
 * SYN, data byte k is offset k + 1, our FIN follows the data; receive
 * offsets likewise from the peer's SYN. Sequence numbers appear only at the
 * wire (`seqOf`, `offsetOfSeq`), so no comparison here wraps.
 */
import type { ByteStore } from '../storage.ts';
import { ACK, FIN, PSH, RST, SYN, seqDiff, type SackBlock, type TcpHeader, type TcpOptions } from '../wire/tcp.ts';

export type State =
  | 'CLOSED'
  | 'LISTEN'
  | 'SYN-SENT'
  | 'SYN-RECEIVED'
  | 'ESTABLISHED'
  | 'FIN-WAIT-1'
  | 'FIN-WAIT-2'
  | 'CLOSE-WAIT'
  | 'CLOSING'
  | 'LAST-ACK'
  | 'TIME-WAIT';

export type TcpError = 'connection-refused' | 'connection-reset' | 'timed-out' | 'host-unreachable' | 'connection-aborted';

export interface TcpConfig {
  /** MSS we advertise (MTU - 40). */
  mss: number;
  rcvBuf: number;
  sndBuf: number;
  initialRtoMs: number;
  minRtoMs: number;
  maxRtoMs: number;
  delackMs: number;
  timeWaitMs: number;
  synRetries: number;
  dataRetries: number;
  finWait2Ms: number;
  keepaliveIdleMs: number;
  keepaliveIntervalMs: number;
  keepaliveProbes: number;
  /** Largest segment handed to the link (TSO); the MSS if no TSO. */
  maxSegment: number;
  timestamps: boolean;
  sack: boolean;
  windowScaling: boolean;
  /** Challenge ACKs per second, stack-wide (RFC 5961 7). */
  challengeAckLimit: number;
}

export const DEFAULT_CONFIG: TcpConfig = {
  mss: 1460,
  rcvBuf: 4 << 20,
  sndBuf: 4 << 20,
  initialRtoMs: 1000,
  minRtoMs: 200,
  maxRtoMs: 60_000,
  delackMs: 40,
  timeWaitMs: 60_000,
  synRetries: 6,
  dataRetries: 15,
  finWait2Ms: 60_000,
  keepaliveIdleMs: 7_200_000,
  keepaliveIntervalMs: 75_000,
  keepaliveProbes: 9,
  maxSegment: 1460,
  timestamps: true,
  sack: true,
  windowScaling: true,
  challengeAckLimit: 1000,
};

/** A segment as the interface layer hands it in. */
export interface InSegment {
  hdr: TcpHeader;
  payloadLen: number;
  /** Where the payload lies: a held frame and an offset in it. */
  frameId: number;
  payloadAt: number;
}

/** A segment to send. `payload` names a range of the send store. */
export interface OutSegment {
  flags: number;
  seq: number;
  ack: number;
  window: number;
  options: TcpOptions;
  payload: { store: ByteStore; offset: number; len: number } | null;
  /** Payload bytes per wire segment when the link should cut it (TSO); 0 if not. */
  gsoSize: number;
}

/** What a connection needs from the stack around it. */
export interface TcpEnv {
  now: number;
  config: TcpConfig;
  /** Send a segment; false if it cannot go now (next hop unresolved). */
  emit(conn: TcpConnection, seg: OutSegment): boolean;
  /** Copy `len` bytes at `offset` of received frame `frameId` into `store` at stream offset `at`. */
  place(frameId: number, offset: number, len: number, store: ByteStore, at: number): void;
  /** Rate limit for challenge ACKs; true if one may be sent now. */
  allowChallengeAck(): boolean;
  count(what: string, n?: number): void;
}

const MS = 1_000_000;
const NEVER = Number.POSITIVE_INFINITY;
/** Most out-of-order ranges kept; a segment that would make more is dropped. */
const MAX_OOO_RANGES = 64;
/** Dup ACKs that trigger fast retransmit (RFC 5681 3.2). */
const DUPACK_THRESHOLD = 3;

interface Range {
  start: number;
  end: number;
}

/** Insert [start, end) into sorted, disjoint ranges, merging neighbours. Returns false if it would exceed `max`. */
export function insertRange(ranges: Range[], start: number, end: number, max: number): boolean {
  let i = 0;
  while (i < ranges.length && ranges[i].end < start) i++;
  let j = i;
  let s = start;
  let e = end;
  while (j < ranges.length && ranges[j].start <= end) {
    s = Math.min(s, ranges[j].start);
    e = Math.max(e, ranges[j].end);
    j++;
  }
  if (j === i && ranges.length >= max) return false;
  ranges.splice(i, j - i, { start: s, end: e });
  return true;
}

export interface Endpoints {
  localIp: number;
  localPort: number;
  remoteIp: number;
  remotePort: number;
}

export class TcpConnection {
  state: State = 'CLOSED';
  /** Set once the connection failed; read by the socket API. */
  error: TcpError | null = null;
  /** Whether the application has closed its handle (then nobody reads). */
  detached = false;
  /** The listener this connection came from, until accepted. */
  listener: unknown = null;
  nodelay = false;
  keepalive = false;
  /** The stack's set of connections with work this turn (see Stack.poll). */
  touched: Set<TcpConnection> | null = null;

  /** Ask the stack to run this connection at the end of the turn. */
  touch(): void {
    this.touched?.add(this);
  }

  // ---- send side (offsets: 0 = our SYN) ----
  iss: number;
  sndUna = 0;
  sndNxt = 0;
  /** Highest offset sent so far (sndNxt rewinds on a timeout). */
  sndMax = 0;
  /** The peer's window, scaled, and the segment that last updated it. */
  sndWnd = 0;
  sndWl1 = 0;
  sndWl2 = 0;
  maxSndWnd = 0;
  /** Stream offset one past the last byte the application queued. */
  sndBufTail = 0;
  /** Set when the application shut down its sending side: our FIN follows the data. */
  finQueued = false;
  /** Stream offset up to which the send store has been released. */
  private sndReleased = 0;

  // ---- receive side (offsets: 0 = the peer's SYN) ----
  irs = 0;
  rcvNxt = 0;
  /** Right edge of the window we last advertised (never moved left). */
  rcvAdv = 0;
  /** Stream offset of the receive store's tail as last set in the host. */
  rcvTailSet = 0;
  /** Stream offset up to which the application has read. */
  rcvRead = 0;
  /** Out-of-order data held beyond rcvNxt, in receive offsets. */
  ooo: Range[] = [];
  /** Receive offset of the peer's FIN, once seen. */
  finAt = -1;
  /** The most recent out-of-order range touched (reported first in SACK). */
  private lastOoo: Range | null = null;

  // ---- options ----
  sndMss = 536;
  sndWscale = 0;
  rcvWscale = 0;
  tsOk = false;
  tsRecent = 0;
  private tsOffset: number;
  sackOk = false;
  /** Our SYN's options, kept for retransmission. */
  private synOptions: TcpOptions = {};

  // ---- SACK scoreboard (send offsets) ----
  sacked: Range[] = [];

  // ---- timers and RTT ----
  srtt = 0;
  rttvar = 0;
  rto: number;
  private rtxDeadline = NEVER;
  private retries = 0;
  private backoff = 0;
  /** RTT timing without timestamps: the offset timed and when it was sent. */
  private rttOffset = -1;
  private rttSentAt = 0;
  private delackDeadline = NEVER;
  private ackNow = false;
  /** Segments received since our last ACK (delayed ACK every second one). */
  private unackedSegs = 0;
  private persistDeadline = NEVER;
  private keepaliveDeadline = NEVER;
  private keepaliveSent = 0;
  private timeWaitDeadline = NEVER;
  private finWait2Deadline = NEVER;
  private lastActivity = 0;

  // ---- congestion control ----
  cwnd = 0;
  ssthresh = Number.MAX_SAFE_INTEGER;
  dupAcks = 0;
  inRecovery = false;
  /** NewReno's "recover": the highest offset sent when recovery began. */
  recover = 0;
  /** Next offset to retransmit in recovery. */
  private rtxNext = 0;

  /** Whether our window opened enough since the last ACK to tell the peer. */
  private windowUpdatePending = false;

  constructor(
    readonly ends: Endpoints,
    readonly sndStore: ByteStore,
    readonly rcvStore: ByteStore,
    isn: number,
    tsOffset: number,
    config: TcpConfig,
  ) {
    this.iss = isn >>> 0;
    this.tsOffset = tsOffset >>> 0;
    this.rto = config.initialRtoMs * MS;
  }

  // ---------------------------------------------------------------------
  // Offsets and the wire

  seqOf(offset: number): number {
    return (this.iss + offset) >>> 0;
  }

  ackSeq(): number {
    return (this.irs + this.rcvNxt) >>> 0;
  }

  /** The send offset a sequence number names, near sndUna. */
  sndOffsetOfSeq(seq: number): number {
    return this.sndUna + seqDiff(seq, this.seqOf(this.sndUna));
  }

  /** The receive offset a sequence number names, near rcvNxt. */
  rcvOffsetOfSeq(seq: number): number {
    return this.rcvNxt + seqDiff(seq, (this.irs + this.rcvNxt) >>> 0);
  }

  /** Offset of our FIN (valid once queued). */
  private finOffset(): number {
    return this.sndBufTail + 1;
  }

  private dataEnd(): number {
    return this.sndBufTail + 1;
  }

  // ---------------------------------------------------------------------
  // Opening

  /** Active open (RFC 9293 3.10.1): send a SYN. */
  connect(env: TcpEnv): void {
    this.state = 'SYN-SENT';
    this.synOptions = this.ourSynOptions(env);
    this.sndUna = 0;
    this.sndNxt = 0;
    this.lastActivity = env.now;
    this.output(env);
  }

  /** Passive open: a SYN arrived on a listener (RFC 9293 3.10.7.2). */
  acceptSyn(seg: InSegment, env: TcpEnv): void {
    const h = seg.hdr;
    this.irs = h.seq;
    this.rcvNxt = 1;
    this.rcvAdv = 1;
    this.takeSynOptions(h.options, env);
    this.synOptions = this.ourSynOptions(env, h.options);
    this.sndWnd = h.window; // a SYN's window is never scaled (RFC 7323 2.2)
    this.maxSndWnd = this.sndWnd;
    this.sndWl1 = 0;
    this.sndWl2 = 0;
    if (this.tsOk && h.options.timestamp) this.tsRecent = h.options.timestamp.value;
    this.state = 'SYN-RECEIVED';
    this.lastActivity = env.now;
    this.output(env);
  }

  private ourSynOptions(env: TcpEnv, peer?: TcpOptions): TcpOptions {
    const c = env.config;
    const o: TcpOptions = { mss: c.mss };
    const offer = (ours: boolean, theirs: boolean | undefined) => ours && (peer === undefined || !!theirs);
    if (offer(c.windowScaling, peer?.wscale !== undefined)) {
      let shift = 0;
      while (shift < 14 && c.rcvBuf >> shift > 0xffff) shift++;
      o.wscale = shift;
      this.rcvWscale = shift;
    }
    if (offer(c.sack, peer?.sackPermitted)) o.sackPermitted = true;
    if (offer(c.timestamps, peer?.timestamp !== undefined)) o.timestamp = { value: 0, echo: 0 };
    return o;
  }

  /** Options from the peer's SYN (RFC 9293 3.7.1, RFC 7323, RFC 2018). */
  private takeSynOptions(o: TcpOptions, env: TcpEnv): void {
    const c = env.config;
    // RFC 9293 3.7.1: without an MSS option assume 536 (MUST-15).
    this.sndMss = Math.max(64, Math.min(o.mss ?? 536, c.mss));
    if (c.windowScaling && o.wscale !== undefined) {
      this.sndWscale = o.wscale;
    } else {
      this.sndWscale = 0;
      this.rcvWscale = 0;
    }
    this.sackOk = c.sack && !!o.sackPermitted;
    this.tsOk = c.timestamps && o.timestamp !== undefined;
  }

  /** Payload bytes per segment: the MSS less options carried on every segment. */
  effectiveMss(): number {
    return this.sndMss - (this.tsOk ? 12 : 0);
  }

  // ---------------------------------------------------------------------
  // The application's side

  /**
   * Release acknowledged data from the send store. Called by the stack's
   * owner after the step's transmit batch went out: a segment queued
   * earlier in the step may still name bytes that a later ACK covered.
   */
  releaseAcked(): void {
    const dataAcked = Math.min(this.sndUna - 1, this.sndBufTail);
    if (dataAcked > this.sndReleased) {
      this.sndStore.release(dataAcked);
      this.sndReleased = dataAcked;
    }
  }

  /** Bytes the application may still queue. */
  sendRoom(): number {
    return this.sndStore.capacity - (this.sndBufTail - this.sndReleased);
  }

  /** Queue bytes to send; returns how many were taken. */
  write(data: Uint8Array): number {
    this.touch();
    if (this.finQueued || !this.canSend()) return 0;
    const n = this.sndStore.append(data);
    this.sndBufTail += n;
    return n;
  }

  /** Queue bytes spliced from another store (zero copy); returns how many. */
  writeFrom(src: ByteStore, len: number): number {
    this.touch();
    if (this.finQueued || !this.canSend()) return 0;
    const n = this.sndStore.splice(src, Math.min(len, this.sendRoom()));
    this.sndBufTail += n;
    return n;
  }

  /**
   * The owner appended `n` bytes to the send store itself (a host-side
   * fill): count them as queued. `n` must not exceed `sendRoom()`.
   */
  appended(n: number): void {
    this.touch();
    if (this.finQueued) throw new Error('appended after the sending side was shut down');
    this.sndBufTail += n;
  }

  /** Move up to `max` received bytes into `dst`'s send store (an echo, zero copy). */
  spliceTo(dst: TcpConnection, max: number): number {
    this.touch();
    dst.touch();
    if (dst.finQueued || !dst.canSend()) return 0;
    const n = Math.min(max, this.readable(), dst.sendRoom());
    if (n <= 0) return 0;
    const moved = dst.sndStore.splice(this.rcvStore, n);
    this.rcvRead += moved;
    dst.sndBufTail += moved;
    this.noteRead();
    return moved;
  }

  canSend(): boolean {
    return this.state === 'ESTABLISHED' || this.state === 'CLOSE-WAIT' || this.state === 'SYN-SENT' || this.state === 'SYN-RECEIVED';
  }

  /** Readable bytes waiting for the application. */
  readable(): number {
    return this.rcvTailSet - this.rcvRead;
  }

  /** Whether the peer has closed and every byte before its FIN was read. */
  atEof(): boolean {
    return this.finAt >= 0 && this.rcvNxt > this.finAt && this.readable() === 0;
  }

  /** Take up to `max` received bytes. */
  read(max: number): Uint8Array {
    this.touch();
    const n = Math.min(max, this.readable());
    if (n === 0) return new Uint8Array(0);
    const out = this.rcvStore.read(n);
    this.rcvRead += out.length;
    this.noteRead();
    return out;
  }

  /** Move up to `max` received bytes into another store (zero copy). */
  readInto(dst: ByteStore, max: number): number {
    this.touch();
    const n = Math.min(max, this.readable());
    if (n === 0) return 0;
    const moved = dst.splice(this.rcvStore, n);
    this.rcvRead += moved;
    this.noteRead();
    return moved;
  }

  /** The owner moved `n` received bytes out of the receive store itself (a host splice). */
  consumed(n: number): void {
    this.touch();
    if (n > this.readable()) throw new Error(`consumed ${n} of ${this.readable()} readable bytes`);
    this.rcvRead += n;
    if (n > 0) this.noteRead();
  }

  /** Drop up to `max` received bytes unread (a discard server). */
  discard(max: number): number {
    this.touch();
    const n = Math.min(max, this.readable());
    if (n === 0) return 0;
    this.rcvRead += n;
    this.rcvStore.release(this.rcvRead);
    this.noteRead();
    return n;
  }

  /** After a read: RFC 9293 3.8.6.2.2 receiver SWS avoidance. */
  private noteRead(): void {
    const wnd = this.rcvWindow();
    const advertised = this.rcvAdv - this.rcvNxt;
    const growth = wnd - advertised;
    if (growth >= Math.min(this.rcvStore.capacity / 2, 2 * this.sndMss) || (advertised === 0 && wnd > 0)) {
      this.windowUpdatePending = true;
    }
  }

  /** Shut down the sending side: queue a FIN after the data (RFC 9293 3.10.4). */
  shutdownSend(env: TcpEnv): void {
    this.touch();
    switch (this.state) {
      case 'SYN-SENT':
        this.enterClosed(null);
        return;
      case 'SYN-RECEIVED':
      case 'ESTABLISHED':
        this.finQueued = true;
        this.state = 'FIN-WAIT-1';
        break;
      case 'CLOSE-WAIT':
        this.finQueued = true;
        this.state = 'LAST-ACK';
        break;
      default:
        return;
    }
    this.output(env);
  }

  /** Abort: send RST and forget the connection (RFC 9293 3.10.5). */
  abort(env: TcpEnv): void {
    if (this.state === 'SYN-RECEIVED' || this.state === 'ESTABLISHED' || this.state === 'FIN-WAIT-1' || this.state === 'FIN-WAIT-2' || this.state === 'CLOSE-WAIT') {
      env.emit(this, { flags: RST | ACK, seq: this.seqOf(this.sndNxt), ack: this.ackSeq(), window: 0, options: {}, payload: null, gsoSize: 0 });
      env.count('tcp.rst-sent');
    }
    this.enterClosed('connection-aborted');
  }

  // ---------------------------------------------------------------------
  // Receive window

  /** Free room in the receive store beyond rcvNxt. */
  rcvWindow(): number {
    const inStore = this.rcvNxt - 1 - this.rcvRead; // readable and unread bytes
    return Math.max(0, this.rcvStore.capacity - Math.max(0, inStore));
  }

  /** The window field to send, keeping the right edge from moving left (RFC 9293 3.8.6.2.1). */
  private windowField(): number {
    let wnd = this.rcvWindow();
    const edge = this.rcvAdv - this.rcvNxt;
    if (wnd < edge) wnd = edge;
    // Receiver SWS avoidance: don't advertise a sliver (RFC 9293 3.8.6.2.2).
    if (wnd - edge < Math.min(this.rcvStore.capacity / 2, this.sndMss) && wnd > edge) wnd = Math.max(edge, 0);
    const field = Math.min(0xffff, Math.floor(wnd / 2 ** this.rcvWscale));
    this.rcvAdv = Math.max(this.rcvAdv, this.rcvNxt + field * 2 ** this.rcvWscale);
    return field;
  }

  // ---------------------------------------------------------------------
  // SEGMENT ARRIVES (RFC 9293 3.10.7)

  segmentArrives(seg: InSegment, env: TcpEnv): void {
    const h = seg.hdr;
    this.lastActivity = env.now;
    if (this.keepaliveSent) this.keepaliveSent = 0;

    if (this.state === 'SYN-SENT') {
      this.synSentArrives(seg, env);
      return;
    }
    if (this.state === 'CLOSED' || this.state === 'LISTEN') return;

    const segLen = seg.payloadLen + (h.flags & SYN ? 1 : 0) + (h.flags & FIN ? 1 : 0);
    const segStart = this.rcvOffsetOfSeq(h.seq);

    // RFC 7323 5.3: PAWS. A segment whose timestamp is older than
    // TS.Recent is a duplicate from an earlier incarnation: ACK and drop
    // (not for RST).
    if (this.tsOk && h.options.timestamp && !(h.flags & RST)) {
      if (seqDiff(h.options.timestamp.value, this.tsRecent) < 0) {
        env.count('tcp.paws-drop');
        this.ackNow = true;
        this.output(env);
        return;
      }
    }

    // SYN-RECEIVED: a retransmitted SYN means our SYN-ACK was lost.
    if (this.state === 'SYN-RECEIVED' && h.flags & SYN && !(h.flags & ACK) && h.seq === this.irs) {
      this.sndNxt = 0;
      this.output(env);
      return;
    }

    // First: the sequence number check (RFC 9293 3.10.7.4, table of four cases).
    const wnd = Math.max(this.rcvAdv - this.rcvNxt, 0);
    let acceptable: boolean;
    if (segLen === 0) {
      acceptable = wnd === 0 ? segStart === this.rcvNxt : segStart >= this.rcvNxt && segStart < this.rcvNxt + wnd;
      // Linux and RFC 9293 accept a zero-length segment at rcvNxt even
      // with a zero window; also accept an ACK one below (keepalive probe
      // handled by replying below).
    } else {
      acceptable =
        wnd > 0 &&
        ((segStart >= this.rcvNxt && segStart < this.rcvNxt + wnd) ||
          (segStart + segLen - 1 >= this.rcvNxt && segStart + segLen - 1 < this.rcvNxt + wnd));
    }
    if (!acceptable) {
      if (!(h.flags & RST)) {
        // An unacceptable segment gets an ACK (MUST), then is dropped.
        env.count(segLen === 0 && segStart === this.rcvNxt - 1 ? 'tcp.keepalive-probe-received' : 'tcp.out-of-window');
        // TIME-WAIT: a retransmission of the peer's FIN (old, so it lands
        // here) is ACKed and restarts the 2 MSL wait (RFC 9293 3.10.7.4, eighth).
        if (this.state === 'TIME-WAIT' && h.flags & FIN && segStart + seg.payloadLen === this.finAt) this.enterTimeWait(env);
        this.ackNow = true;
        this.output(env);
      } else {
        env.count('tcp.rst-out-of-window');
      }
      return;
    }

    // Second: the RST bit (RFC 5961 3.2): reset only on an exact match.
    if (h.flags & RST) {
      if (segStart !== this.rcvNxt) {
        env.count('tcp.rst-challenged');
        this.challengeAck(env);
        return;
      }
      env.count('tcp.rst-received');
      if (this.state === 'SYN-RECEIVED' && this.listener) {
        // From a passive open: back to LISTEN, i.e. forget this attempt.
        this.enterClosed(null);
        return;
      }
      const quiet = this.state === 'CLOSING' || this.state === 'LAST-ACK' || this.state === 'TIME-WAIT';
      this.enterClosed(quiet ? null : this.state === 'SYN-RECEIVED' ? 'connection-refused' : 'connection-reset');
      return;
    }

    // Fourth: the SYN bit (RFC 5961 4.2): a SYN in a synchronized state
    // gets a challenge ACK, never a reset.
    if (h.flags & SYN) {
      if (this.state === 'SYN-RECEIVED' && this.listener) {
        this.enterClosed(null);
        return;
      }
      env.count('tcp.syn-challenged');
      this.challengeAck(env);
      return;
    }

    // Fifth: the ACK field. Without ACK, drop.
    if (!(h.flags & ACK)) {
      env.count('tcp.no-ack');
      return;
    }
    const ackOff = this.sndOffsetOfSeq(h.ack);

    if (this.state === 'SYN-RECEIVED') {
      if (ackOff > this.sndUna && ackOff <= this.sndMax) {
        this.state = 'ESTABLISHED';
        this.sndWnd = h.window * 2 ** this.sndWscale;
        this.maxSndWnd = Math.max(this.maxSndWnd, this.sndWnd);
        this.sndWl1 = segStart;
        this.sndWl2 = ackOff;
        this.initCongestion();
        env.count('tcp.established-passive');
      } else {
        // <SEQ=SEG.ACK><CTL=RST>
        env.emit(this, { flags: RST, seq: h.ack, ack: 0, window: 0, options: {}, payload: null, gsoSize: 0 });
        env.count('tcp.rst-sent');
        return;
      }
    }

    // RFC 5961 5.2: an ACK outside [SND.UNA - MAX.SND.WND, SND.MAX] gets
    // a (challenge) ACK and is dropped.
    if (ackOff > this.sndMax) {
      env.count('tcp.ack-ahead');
      this.challengeAck(env);
      return;
    }
    if (ackOff < this.sndUna - Math.max(this.maxSndWnd, 1)) {
      env.count('tcp.ack-too-old');
      this.challengeAck(env);
      return;
    }

    if (this.tsOk && h.options.timestamp) {
      // RFC 7323 4.3: update TS.Recent when the segment covers the last ACK sent.
      if (segStart <= this.rcvNxt) this.tsRecent = h.options.timestamp.value;
    }

    this.processAck(seg, ackOff, segStart, env);
    if (this.state === 'CLOSED') return;

    // Seventh: segment text.
    if (seg.payloadLen > 0) {
      if (this.state === 'ESTABLISHED' || this.state === 'FIN-WAIT-1' || this.state === 'FIN-WAIT-2') {
        this.receiveData(seg, segStart, env);
      } else {
        env.count('tcp.data-after-fin');
      }
    }

    // Eighth: the FIN bit.
    if (h.flags & FIN) {
      const finOff = segStart + seg.payloadLen;
      if (this.finAt < 0 && finOff < this.rcvAdv + 1) this.finAt = finOff;
      this.ackNow = true;
    }
    this.maybeConsumeFin(env);
    this.output(env);
  }

  /** SYN-SENT (RFC 9293 3.10.7.3). */
  private synSentArrives(seg: InSegment, env: TcpEnv): void {
    const h = seg.hdr;
    let ackOk = false;
    if (h.flags & ACK) {
      const ackOff = this.sndOffsetOfSeq(h.ack);
      // SEG.ACK =< ISS or SEG.ACK > SND.NXT: not acceptable.
      if (ackOff <= 0 || ackOff > this.sndMax) {
        if (!(h.flags & RST)) {
          env.emit(this, { flags: RST, seq: h.ack, ack: 0, window: 0, options: {}, payload: null, gsoSize: 0 });
          env.count('tcp.rst-sent');
        }
        return;
      }
      ackOk = true;
    }
    if (h.flags & RST) {
      if (ackOk) {
        env.count('tcp.connection-refused');
        this.enterClosed('connection-refused');
      }
      return;
    }
    if (!(h.flags & SYN)) return;
    this.irs = h.seq;
    this.rcvNxt = 1;
    this.rcvAdv = 1;
    this.takeSynOptions(h.options, env);
    if (this.tsOk && h.options.timestamp) this.tsRecent = h.options.timestamp.value;
    if (ackOk) {
      this.sndUna = this.sndOffsetOfSeq(h.ack);
      if (this.sndNxt < this.sndUna) this.sndNxt = this.sndUna;
    }
    if (this.sndUna > 0) {
      // Our SYN is acknowledged: ESTABLISHED.
      this.state = 'ESTABLISHED';
      this.sndWnd = h.window; // a SYN-ACK's window is never scaled (RFC 7323 2.2)
      this.maxSndWnd = this.sndWnd;
      this.sndWl1 = 1;
      this.sndWl2 = this.sndUna;
      this.rtxDeadline = NEVER;
      // Before `retries` is cleared: both look at whether the SYN was retransmitted.
      this.sampleRttFromSyn(seg, env);
      this.initCongestion();
      this.retries = 0;
      this.backoff = 0;
      env.count('tcp.established-active');
      this.ackNow = true;
      this.output(env);
    } else {
      // Simultaneous open: SYN-RECEIVED, send SYN-ACK (seq = ISS).
      this.state = 'SYN-RECEIVED';
      this.sndWnd = h.window;
      this.maxSndWnd = this.sndWnd;
      this.sndNxt = 0;
      env.count('tcp.simultaneous-open');
      this.output(env);
    }
  }

  private sampleRttFromSyn(seg: InSegment, env: TcpEnv): void {
    const ts = seg.hdr.options.timestamp;
    if (this.tsOk && ts && ts.echo !== 0) this.rttSample(this.tsNowMs(env) - ts.echo, env);
    else if (this.retries === 0 && this.rttOffset === 0) this.rttSample((env.now - this.rttSentAt) / MS, env);
    this.rttOffset = -1;
  }

  private initCongestion(): void {
    // RFC 6928: IW = min(10 * MSS, max(2 * MSS, 14600)).
    const mss = this.effectiveMss();
    this.cwnd = Math.min(10 * mss, Math.max(2 * mss, 14600));
    if (this.retries > 0) this.cwnd = mss; // RFC 5681 3.1: SYN was lost
  }

  /** Fifth step, for synchronized states: the ACK advances things. */
  private processAck(seg: InSegment, ackOff: number, segStart: number, env: TcpEnv): void {
    const h = seg.hdr;
    const wndRaw = h.window * 2 ** this.sndWscale;
    const mss = this.effectiveMss();

    if (this.sackOk && h.options.sack) this.takeSack(h.options.sack);

    if (ackOff > this.sndUna) {
      const acked = ackOff - this.sndUna;
      // RTT: timestamps give a sample per ACK (RFC 7323 4.1); otherwise
      // time one segment, never a retransmitted one (Karn).
      const ts = h.options.timestamp;
      if (this.tsOk && ts && ts.echo !== 0) {
        this.rttSample(this.tsNowMs(env) - ts.echo, env);
      } else if (this.rttOffset >= 0 && ackOff >= this.rttOffset) {
        this.rttSample((env.now - this.rttSentAt) / MS, env);
        this.rttOffset = -1;
      }
      this.sndUna = ackOff;
      if (this.sndNxt < this.sndUna) this.sndNxt = this.sndUna;
      this.tlpSent = false;
      if (this.sndUna > this.rackHole) this.rackDeadline = NEVER;
      this.tlpDeadline = this.sndUna < this.sndMax && this.tlpDeadline !== NEVER ? this.tlpDeadline : NEVER;
      if (this.sndUna < this.sndMax) this.armTlp(env);
      this.retries = 0;
      this.backoff = 0;
      this.dropSackedBelow(this.sndUna);

      // Congestion control (RFC 5681, 6582).
      if (this.inRecovery) {
        if (ackOff >= this.recover) {
          // Full acknowledgment: leave recovery, deflate the window.
          this.inRecovery = false;
          this.cwnd = Math.min(this.ssthresh, Math.max(this.flight(), mss) + mss);
          env.count('tcp.recovery-done');
        } else {
          // Partial acknowledgment: retransmit the next hole, deflate by the amount acked.
          this.rtxNext = Math.max(this.rtxNext, this.sndUna);
          this.retransmitOne(env);
          this.cwnd = Math.max(this.cwnd - acked + mss, mss);
        }
      } else if (this.cwnd < this.ssthresh) {
        this.cwnd += Math.min(acked, 2 * mss); // slow start with ABC, L = 2 (RFC 3465)
      } else {
        this.cwnd += Math.max(1, Math.floor((mss * mss) / this.cwnd));
      }
      this.dupAcks = 0;

      // Retransmission timer (RFC 6298 5.2, 5.3).
      this.rtxDeadline = this.sndUna < this.sndMax ? env.now + this.rto : NEVER;

      // Our FIN acknowledged?
      if (this.finQueued && this.sndUna > this.finOffset()) {
        if (this.state === 'FIN-WAIT-1') {
          this.state = 'FIN-WAIT-2';
          this.finWait2Deadline = this.detached ? env.now + env.config.finWait2Ms * MS : NEVER;
        } else if (this.state === 'CLOSING') {
          this.enterTimeWait(env);
        } else if (this.state === 'LAST-ACK') {
          this.enterClosed(null);
          return;
        }
      }
    } else if (
      ackOff === this.sndUna &&
      seg.payloadLen === 0 &&
      !(h.flags & (SYN | FIN)) &&
      wndRaw === this.sndWnd &&
      wndRaw > 0 && // answers to zero-window probes are not loss signals
      this.sndUna < this.sndMax
    ) {
      // A duplicate ACK (RFC 5681 2): count it.
      this.dupAcks++;
      env.count('tcp.dupack');
      if (!this.inRecovery && this.dupAcks === DUPACK_THRESHOLD && this.sndUna >= this.recover) {
        env.count('tcp.fast-retransmit');
        this.enterRecovery(env);
      } else if (this.inRecovery) {
        this.cwnd += mss; // inflate for each segment that left the network
      }
    }
    // SACK-based loss detection (RFC 6675): with or without duplicate
    // ACKs (an ACK that carries data, or a changed window, is not a
    // duplicate, yet its SACK blocks say what was lost).
    if (this.sackOk && this.sacked.length) this.detectLoss(env);

    // Window update (RFC 9293 3.10.7.4 fifth, SND.WL1/WL2 rule).
    if (this.sndWl1 < segStart || (this.sndWl1 === segStart && this.sndWl2 <= ackOff)) {
      if (wndRaw > this.sndWnd && this.sndWnd === 0) this.persistDeadline = NEVER;
      this.sndWnd = wndRaw;
      this.maxSndWnd = Math.max(this.maxSndWnd, wndRaw);
      this.sndWl1 = segStart;
      this.sndWl2 = ackOff;
    }


    if (this.state === 'TIME-WAIT' && h.flags & FIN) {
      // A retransmitted FIN: ACK it and restart the 2 MSL wait.
      this.enterTimeWait(env);
      this.ackNow = true;
    }
  }

  /** Bytes SACKed above `off`. */
  private sackedAbove(off: number): number {
    let n = 0;
    for (const r of this.sacked) if (r.end > off) n += r.end - Math.max(r.start, off);
    return n;
  }

  /** Fast retransmit, then fast recovery (RFC 5681 3.2, RFC 6582, RFC 6675 5). */
  private enterRecovery(env: TcpEnv): void {
    const mss = this.effectiveMss();
    this.ssthresh = Math.max(Math.floor(this.flight() / 2), 2 * mss);
    this.cwnd = this.ssthresh + DUPACK_THRESHOLD * mss;
    this.inRecovery = true;
    this.recover = this.sndMax;
    this.rtxNext = this.sndUna;
    this.retransmitOne(env);
  }

  /**
   * RFC 6675 IsLost: a hole with DupThresh segments' worth of SACKed data
   * above it is lost. Outside recovery this starts recovery; inside it,
   * it retransmits lost holes, two per ACK at most. A hole whose
   * retransmission is older than an RTT and a quarter while later data
   * keeps being SACKed was lost again (the idea of RACK, RFC 8985), and is
   * sent once more rather than waiting for the timer.
   */
  private detectLoss(env: TcpEnv): void {
    const mss = this.effectiveMss();
    // Early retransmit (RFC 5827): with fewer than four segments in
    // flight there cannot be three above a hole; count what there is.
    const thresh = Math.max(mss, Math.min(DUPACK_THRESHOLD * mss, this.flight() - mss));
    if (!this.inRecovery) {
      if (this.sndUna >= this.recover && this.sackedAbove(this.sndUna) >= thresh) {
        env.count('tcp.sack-recovery');
        this.enterRecovery(env);
      }
      return;
    }
    const again = Math.max(this.srtt * 1.25, 1 * MS);
    if (this.lastRtxAt > 0 && this.rtxNext > this.sndUna && env.now - this.lastRtxAt > again && this.sackedAbove(this.sndUna) >= thresh) {
      env.count('tcp.retransmission-lost');
      this.rtxNext = this.sndUna;
    }
    for (let i = 0; i < 2; i++) {
      const u = this.unsackedFrom(Math.max(this.rtxNext, this.sndUna));
      if (u.start >= this.sndMax || this.sackedAbove(u.start) < thresh) break;
      const before = this.rtxNext;
      this.retransmitOne(env);
      if (this.rtxNext === before) break;
    }
  }

  private lastRtxAt = 0;
  /**
   * RACK's reordering timer (RFC 8985 6.2), for the oldest hole only: once
   * the hole at sndUna has been retransmitted, if it is still not
   * acknowledged an RTT and a quarter later, that retransmission was lost
   * too; send it again then rather than after a full RTO. Doubles each
   * time for the same hole.
   */
  private rackDeadline = NEVER;
  private rackHole = -1;
  private rackBackoff = 0;

  private armRack(env: TcpEnv, hole: number): void {
    if (this.srtt === 0) return;
    if (hole !== this.rackHole) {
      this.rackHole = hole;
      this.rackBackoff = 0;
    }
    const wait = Math.max(this.srtt * 1.25, MS) * 2 ** this.rackBackoff;
    if (wait >= this.rto) return; // the timer will do
    this.rackDeadline = env.now + wait;
  }

  private rackFires(env: TcpEnv): void {
    this.rackDeadline = NEVER;
    if (this.sndUna !== this.rackHole || this.sndUna >= this.sndMax) return;
    this.rackBackoff++;
    env.count('tcp.rack-retransmit');
    this.rtxNext = this.sndUna;
    this.retransmitOne(env, true);
  }
  /** Tail loss probe (RFC 8985 7): when the next probe is due, and whether one was sent for this flight. */
  private tlpDeadline = NEVER;
  private tlpSent = false;

  /** Arm the tail loss probe after sending, if an RTT is known. */
  private armTlp(env: TcpEnv): void {
    if (this.srtt === 0 || this.tlpSent || this.inRecovery || this.state !== 'ESTABLISHED' && this.state !== 'CLOSE-WAIT') return;
    const oneSegment = this.flight() <= this.effectiveMss();
    const pto = Math.max(2 * this.srtt + (oneSegment ? env.config.delackMs * MS : 0), 2 * MS);
    this.tlpDeadline = env.now + pto;
  }

  /** Send the probe: the last segment again, so a SACK tells what was lost. */
  private sendTlp(env: TcpEnv): void {
    this.tlpDeadline = NEVER;
    if (this.sndUna >= this.sndMax || this.tlpSent) return;
    const mss = this.effectiveMss();
    const dataEnd = Math.min(this.sndMax, this.dataEnd());
    const start = Math.max(this.sndUna, dataEnd - mss);
    if (dataEnd <= start) return;
    const ok = env.emit(this, {
      flags: ACK,
      seq: this.seqOf(start),
      ack: this.ackSeq(),
      window: this.windowField(),
      options: this.tsOptions(env),
      payload: { store: this.sndStore, offset: start - 1, len: dataEnd - start },
      gsoSize: 0,
    });
    if (ok) {
      this.tlpSent = true;
      env.count('tcp.tail-loss-probe');
      if (this.rttOffset >= 0) this.rttOffset = -1;
    }
  }

  private flight(): number {
    return this.sndMax - this.sndUna;
  }

  /** RFC 6298 2.2-2.4. */
  private rttSample(ms: number, env: TcpEnv): void {
    if (!(ms >= 0) || ms > 60_000) return;
    const r = Math.max(ms, 0.05) * MS;
    if (this.srtt === 0) {
      this.srtt = r;
      this.rttvar = r / 2;
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - r);
      this.srtt = 0.875 * this.srtt + 0.125 * r;
    }
    const c = env.config;
    this.rto = Math.min(Math.max(this.srtt + Math.max(4 * this.rttvar, MS), c.minRtoMs * MS), c.maxRtoMs * MS);
  }

  private tsNowMs(env: TcpEnv): number {
    return (Math.floor(env.now / MS) + this.tsOffset) >>> 0;
  }

  /** RFC 5961 7: a rate-limited ACK that tells a blind attacker nothing. */
  private challengeAck(env: TcpEnv): void {
    if (env.allowChallengeAck()) {
      this.ackNow = true;
      this.output(env);
    } else {
      env.count('tcp.challenge-ack-limited');
    }
  }

  // ---------------------------------------------------------------------
  // SACK scoreboard (send side)

  private takeSack(blocks: SackBlock[]): void {
    for (const b of blocks) {
      const s = this.sndOffsetOfSeq(b.left);
      const e = this.sndOffsetOfSeq(b.right);
      // Ignore blocks outside what we sent (RFC 2018 and D-SACK below una).
      if (e <= s || s < this.sndUna || e > this.sndMax) continue;
      insertRange(this.sacked, s, e, MAX_OOO_RANGES);
    }
  }

  private dropSackedBelow(off: number): void {
    while (this.sacked.length && this.sacked[0].end <= off) this.sacked.shift();
    if (this.sacked.length && this.sacked[0].start < off) this.sacked[0].start = off;
  }

  /** The first offset at or after `from` that is not SACKed, and where the next SACKed range starts. */
  private unsackedFrom(from: number): { start: number; limit: number } {
    let start = from;
    for (const r of this.sacked) {
      if (r.end <= start) continue;
      if (r.start <= start) {
        start = r.end;
        continue;
      }
      return { start, limit: r.start };
    }
    return { start, limit: Number.POSITIVE_INFINITY };
  }

  // ---------------------------------------------------------------------
  // Receiving data (seventh step)

  private receiveData(seg: InSegment, segStart: number, env: TcpEnv): void {
    const h = seg.hdr;
    const start = segStart + (h.flags & SYN ? 1 : 0);
    const end = start + seg.payloadLen;
    const winEnd = this.rcvNxt + Math.max(this.rcvAdv - this.rcvNxt, this.rcvWindow());
    // Nothing is taken beyond a FIN already seen (RFC 9293 3.10.7.4, eighth):
    // it may have arrived out of order, ahead of this data.
    const finEnd = this.finAt >= 0 ? this.finAt : Number.POSITIVE_INFINITY;
    const s = Math.max(start, this.rcvNxt);
    const e = Math.min(end, winEnd, finEnd);
    if (e <= s) {
      // All duplicate (or beyond the window): ACK at once (RFC 5681 4.2).
      env.count('tcp.duplicate-data');
      this.ackNow = true;
      return;
    }
    if (s > this.rcvNxt) {
      // Out of order: keep it, ACK at once with SACK (RFC 5681 4.2, RFC 2018 4).
      if (!insertRange(this.ooo, s, e, MAX_OOO_RANGES)) {
        env.count('tcp.ooo-full');
        this.ackNow = true;
        return;
      }
      this.lastOoo = this.ooo.find((r) => r.start <= s && r.end >= e) ?? null;
      env.place(seg.frameId, seg.payloadAt + (s - start), e - s, this.rcvStore, s - 1);
      env.count('tcp.out-of-order');
      this.ackNow = true;
      return;
    }
    env.place(seg.frameId, seg.payloadAt + (s - start), e - s, this.rcvStore, s - 1);
    this.rcvNxt = e;
    // Fill from the out-of-order ranges that now touch.
    const hadOoo = this.ooo.length > 0;
    while (this.ooo.length && this.ooo[0].start <= this.rcvNxt) {
      this.rcvNxt = Math.min(Math.max(this.rcvNxt, this.ooo[0].end), finEnd);
      this.ooo.shift();
    }
    if (hadOoo) this.ackNow = true; // a filled hole is ACKed at once
    // Delayed ACK: at least every second full-sized segment (RFC 9293 3.8.6.3).
    this.unackedSegs += Math.max(1, Math.round(seg.payloadLen / this.effectiveMss()));
    if (this.unackedSegs >= 2) this.ackNow = true;
    else if (this.delackDeadline === NEVER) this.delackDeadline = env.now + env.config.delackMs * MS;
    env.count('tcp.rx-bytes', e - s);
  }

  /** The peer's FIN is consumed once every byte before it arrived. */
  private maybeConsumeFin(env: TcpEnv): void {
    if (this.finAt < 0 || this.rcvNxt !== this.finAt) return;
    this.rcvNxt = this.finAt + 1;
    this.ackNow = true;
    switch (this.state) {
      case 'SYN-RECEIVED':
      case 'ESTABLISHED':
        this.state = 'CLOSE-WAIT';
        break;
      case 'FIN-WAIT-1':
        // Our FIN not yet acknowledged (else we would be in FIN-WAIT-2).
        this.state = 'CLOSING';
        break;
      case 'FIN-WAIT-2':
        this.enterTimeWait(env);
        break;
      default:
        break;
    }
  }

  /** After the application's reads: the receive store's readable tail follows rcvNxt. */
  pendingTail(): number {
    const dataEnd = (this.finAt >= 0 && this.rcvNxt > this.finAt ? this.finAt : this.rcvNxt) - 1;
    return Math.max(dataEnd, 0);
  }

  /** Make the host's tail match what arrived in order; call after placements are flushed. */
  commitTail(): boolean {
    const t = this.pendingTail();
    if (t > this.rcvTailSet) {
      this.rcvStore.advanceTail(t);
      this.rcvTailSet = t;
      return true;
    }
    return false;
  }

  // ---------------------------------------------------------------------
  // Output

  /** Send whatever the state, windows and timers allow. */
  output(env: TcpEnv): void {
    if (this.state === 'CLOSED' || this.state === 'LISTEN') return;
    let sentSomething = false;

    // SYN or SYN-ACK.
    if ((this.state === 'SYN-SENT' || this.state === 'SYN-RECEIVED') && this.sndNxt === 0) {
      const flags = this.state === 'SYN-SENT' ? SYN : SYN | ACK;
      const o: TcpOptions = { ...this.synOptions };
      if (o.timestamp) o.timestamp = { value: this.tsNowMs(env), echo: this.state === 'SYN-RECEIVED' ? this.tsRecent : 0 };
      const ok = env.emit(this, {
        flags,
        seq: this.seqOf(0),
        ack: flags & ACK ? this.ackSeq() : 0,
        window: Math.min(this.rcvWindow(), 0xffff),
        options: o,
        payload: null,
        gsoSize: 0,
      });
      if (!ok) {
        if (this.rtxDeadline === NEVER) this.rtxDeadline = env.now + this.rto;
        return;
      }
      if (flags & ACK) this.rcvAdv = this.rcvNxt + Math.min(this.rcvWindow(), 0xffff);
      if (this.retries === 0 && this.rttOffset < 0) {
        this.rttOffset = 0;
        this.rttSentAt = env.now;
      }
      this.sndNxt = 1;
      this.sndMax = Math.max(this.sndMax, 1);
      if (this.rtxDeadline === NEVER) this.rtxDeadline = env.now + this.rto;
      this.ackNow = false;
      return;
    }
    if (this.state === 'SYN-SENT' || this.state === 'TIME-WAIT') {
      if (this.ackNow && this.state === 'TIME-WAIT') this.sendAck(env);
      return;
    }

    // Data and FIN (RFC 9293 3.8.6.2.1 sender SWS avoidance, Nagle 3.7.4).
    const mss = this.effectiveMss();
    const dataEnd = this.dataEnd();
    for (let guard = 0; guard < 4096; guard++) {
      if (this.state === 'SYN-RECEIVED') break;
      let from = this.sndNxt;
      let limit = Number.POSITIVE_INFINITY;
      if (this.sackOk && this.sacked.length && from < this.sndMax) {
        const u = this.unsackedFrom(from);
        from = u.start;
        limit = u.limit;
        this.sndNxt = from;
      }
      const window = Math.min(this.sndWnd, this.cwnd);
      const inFlight = from - this.sndUna;
      const usable = window - inFlight;
      const available = Math.max(0, dataEnd - from);
      const finPending = this.finQueued && from <= this.finOffset() && this.sndUna <= this.finOffset();
      let len = Math.min(available, Math.max(usable, 0), env.config.maxSegment, limit - from);
      if (len > mss) len -= len % mss; // whole segments when cutting (TSO)
      const sendFin = finPending && from + len === this.finOffset() && (usable > len || len === 0);
      if (len <= 0 && !sendFin) break;
      if (len > 0 && len < mss && !sendFin) {
        // Nagle: hold a small segment while data is unacknowledged,
        // unless the window allows no more anyway (SWS: send if it is at
        // least half the largest window seen).
        const more = available > len;
        if (more && usable < mss && len < this.maxSndWnd / 2) break;
        if (!this.nodelay && this.sndUna < this.sndMax && !more && from >= this.sndMax) break;
      }
      if (!this.sendSegment(env, from, len, sendFin, mss)) break;
      sentSomething = true;
      if (sendFin) break;
    }

    // Zero window: probe (RFC 9293 3.8.6.1). A window too small to use
    // (sender SWS avoidance above) with nothing in flight needs a timer too,
    // the override timeout of RFC 9293 3.8.6.2.1: without one, a lost
    // window update would stall the connection for good.
    if (this.dataEnd() > this.sndNxt && this.sndUna === this.sndNxt && this.persistDeadline === NEVER && this.state !== 'SYN-RECEIVED') {
      this.persistDeadline = env.now + Math.max(this.rto, env.config.minRtoMs * MS);
    }

    if (!sentSomething && (this.ackNow || this.windowUpdatePending)) this.sendAck(env);
  }

  /** Send [from, from + len) of the stream (and FIN); false if it could not go. */
  private sendSegment(env: TcpEnv, from: number, len: number, fin: boolean, mss: number): boolean {
    const flags = ACK | (len > 0 && from + len === this.dataEnd() ? PSH : 0) | (fin ? FIN : 0);
    const ok = env.emit(this, {
      flags,
      seq: this.seqOf(from),
      ack: this.ackSeq(),
      window: this.windowField(),
      options: this.tsOptions(env),
      payload: len > 0 ? { store: this.sndStore, offset: from - 1, len } : null,
      gsoSize: len > mss ? mss : 0,
    });
    if (!ok) {
      if (this.rtxDeadline === NEVER) this.rtxDeadline = env.now + this.rto;
      return false;
    }
    const end = from + len + (fin ? 1 : 0);
    if (end > this.sndMax) {
      // New data: time it if nothing is being timed (Karn: not a retransmission).
      if (this.rttOffset < 0 && from >= this.sndMax) {
        this.rttOffset = end;
        this.rttSentAt = env.now;
      }
      this.sndMax = end;
    } else {
      env.count('tcp.retransmitted-bytes', len);
      if (this.rttOffset >= 0 && this.rttOffset <= end) this.rttOffset = -1;
      if (from === this.sndUna) this.armRack(env, from);
    }
    this.sndNxt = Math.max(this.sndNxt, end);
    if (this.rtxDeadline === NEVER) this.rtxDeadline = env.now + this.rto;
    if (len > 0) this.armTlp(env);
    this.afterAckSent();
    env.count('tcp.tx-segments');
    return true;
  }

  /** Retransmit one segment at the first unSACKed hole from rtxNext (fast retransmit and recovery). */
  private retransmitOne(env: TcpEnv, anyHole = false): void {
    const mss = this.effectiveMss();
    const u = this.unsackedFrom(Math.max(this.rtxNext, this.sndUna));
    if (u.start >= this.sndMax || (!anyHole && u.start >= this.recover)) return;
    const dataEnd = this.dataEnd();
    let len = Math.min(mss, u.limit - u.start, Math.max(0, dataEnd - u.start));
    const fin = this.finQueued && u.start + len === this.finOffset() && u.start + len < this.sndMax;
    if (len <= 0 && !fin) return;
    if (len < 0) len = 0;
    const flags = ACK | (fin ? FIN : 0);
    const ok = env.emit(this, {
      flags,
      seq: this.seqOf(u.start),
      ack: this.ackSeq(),
      window: this.windowField(),
      options: this.tsOptions(env),
      payload: len > 0 ? { store: this.sndStore, offset: u.start - 1, len } : null,
      gsoSize: 0,
    });
    if (ok) {
      this.rtxNext = u.start + len + (fin ? 1 : 0);
      this.lastRtxAt = env.now;
      if (u.start === this.sndUna) this.armRack(env, u.start);
      if (this.rttOffset >= 0) this.rttOffset = -1;
      env.count('tcp.retransmitted-bytes', len);
      this.afterAckSent();
      this.rtxDeadline = env.now + this.rto;
    }
  }

  private tsOptions(env: TcpEnv): TcpOptions {
    const o: TcpOptions = {};
    if (this.tsOk) o.timestamp = { value: this.tsNowMs(env), echo: this.tsRecent };
    if (this.sackOk && this.ooo.length) o.sack = this.sackBlocks();
    return o;
  }

  /** Up to three SACK blocks (four without timestamps), most recent first (RFC 2018 4). */
  private sackBlocks(): SackBlock[] {
    const max = this.tsOk ? 3 : 4;
    const ranges: Range[] = [];
    if (this.lastOoo && this.ooo.includes(this.lastOoo)) ranges.push(this.lastOoo);
    for (let i = this.ooo.length - 1; i >= 0 && ranges.length < max; i--) {
      if (!ranges.includes(this.ooo[i])) ranges.push(this.ooo[i]);
    }
    return ranges.map((r) => ({ left: (this.irs + r.start) >>> 0, right: (this.irs + r.end) >>> 0 }));
  }

  private sendAck(env: TcpEnv): void {
    const ok = env.emit(this, {
      flags: ACK,
      seq: this.seqOf(this.sndNxt),
      ack: this.ackSeq(),
      window: this.windowField(),
      options: this.tsOptions(env),
      payload: null,
      gsoSize: 0,
    });
    if (ok) {
      this.afterAckSent();
      env.count('tcp.acks-sent');
    }
  }

  private afterAckSent(): void {
    this.ackNow = false;
    this.unackedSegs = 0;
    this.delackDeadline = NEVER;
    this.windowUpdatePending = false;
  }

  // ---------------------------------------------------------------------
  // Timers

  /** When this connection next needs `poll`, in host nanoseconds (Infinity: never). */
  nextDeadline(): number {
    return Math.min(this.rtxDeadline, this.tlpDeadline, this.rackDeadline, this.delackDeadline, this.persistDeadline, this.keepaliveTimer(), this.timeWaitDeadline, this.finWait2Deadline);
  }

  private keepaliveTimer(): number {
    // Only with no sent data outstanding (RFC 9293 3.8.4, MUST-26): else
    // the retransmission or persist timer is in charge.
    if (!this.keepalive || this.state !== 'ESTABLISHED' || this.sndMax > this.sndUna) return NEVER;
    return this.keepaliveSent === 0 ? this.lastActivity + this.keepaliveIdle : this.keepaliveDeadline;
  }

  private keepaliveIdle = DEFAULT_CONFIG.keepaliveIdleMs * MS;

  setKeepalive(on: boolean, env: TcpEnv): void {
    this.touch();
    this.keepalive = on;
    this.keepaliveIdle = env.config.keepaliveIdleMs * MS;
    this.keepaliveSent = 0;
  }

  /** Run due timers, then send what is allowed. */
  poll(env: TcpEnv): void {
    const now = env.now;
    const c = env.config;
    if (this.timeWaitDeadline <= now) {
      this.enterClosed(null);
      return;
    }
    if (this.finWait2Deadline <= now) {
      env.count('tcp.fin-wait-2-timeout');
      this.enterClosed(null);
      return;
    }
    if (this.tlpDeadline <= now && this.rtxDeadline > now) this.sendTlp(env);
    if (this.rackDeadline <= now && this.rtxDeadline > now) this.rackFires(env);
    if (this.rtxDeadline <= now) {
      this.tlpDeadline = NEVER;
      this.onRetransmitTimeout(env);
      if (this.state === 'CLOSED') return;
    }
    if (this.persistDeadline <= now) {
      this.persistDeadline = NEVER;
      if (this.sndWnd === 0 && this.dataEnd() > this.sndUna) {
        // A zero-window probe: one byte beyond the window.
        env.count('tcp.zero-window-probe');
        this.backoff = Math.min(this.backoff + 1, 12);
        const from = this.sndUna;
        env.emit(this, {
          flags: ACK,
          seq: this.seqOf(from),
          ack: this.ackSeq(),
          window: this.windowField(),
          options: this.tsOptions(env),
          payload: { store: this.sndStore, offset: from - 1, len: 1 },
          gsoSize: 0,
        });
        this.sndMax = Math.max(this.sndMax, from + 1);
        this.persistDeadline = now + Math.min(this.rto * 2 ** this.backoff, c.maxRtoMs * MS);
      } else if (this.sndUna === this.sndNxt && this.dataEnd() > this.sndNxt) {
        // The sender SWS override: send what the (small) window allows.
        const mss = this.effectiveMss();
        const len = Math.min(this.sndWnd, this.cwnd, mss, this.dataEnd() - this.sndNxt);
        if (len > 0) this.sendSegment(env, this.sndNxt, len, false, mss);
      }
    }
    const ka = this.keepaliveTimer();
    if (ka <= now) {
      if (this.keepaliveSent >= c.keepaliveProbes) {
        env.count('tcp.keepalive-timeout');
        this.enterClosed('timed-out');
        return;
      }
      // A keepalive probe: SEG.SEQ = SND.NXT - 1, no data (RFC 9293 3.8.4).
      env.emit(this, {
        flags: ACK,
        seq: this.seqOf(this.sndNxt - 1),
        ack: this.ackSeq(),
        window: this.windowField(),
        options: this.tsOptions(env),
        payload: null,
        gsoSize: 0,
      });
      this.keepaliveSent++;
      this.keepaliveDeadline = now + c.keepaliveIntervalMs * MS;
      env.count('tcp.keepalive-probe');
    }
    if (this.delackDeadline <= now) {
      this.ackNow = true;
      this.delackDeadline = NEVER;
    }
    this.output(env);
  }

  /** RFC 6298 5.4-5.7 and RFC 5681 3.1 on a retransmission timeout. */
  private onRetransmitTimeout(env: TcpEnv): void {
    const c = env.config;
    // A zero window that the peer keeps advertising is no failure (RFC 9293
    // 3.8.6.1, MUST-37): these timeouts only probe, and count toward giving
    // up only once the peer has been silent for the longest RTO.
    const synchronized = this.state !== 'SYN-SENT' && this.state !== 'SYN-RECEIVED';
    if (!(synchronized && this.sndWnd === 0 && env.now - this.lastActivity < c.maxRtoMs * MS)) this.retries++;
    const limit = synchronized ? c.dataRetries : c.synRetries;
    if (this.retries > limit) {
      env.count('tcp.retransmit-timeout-give-up');
      if (this.state === 'SYN-RECEIVED' && this.listener) this.enterClosed(null);
      else this.enterClosed(this.state === 'SYN-SENT' && this.unresolvedHop ? 'host-unreachable' : 'timed-out');
      return;
    }
    env.count('tcp.retransmit-timeout');
    if ((globalThis as { TCP_DEBUG?: number }).TCP_DEBUG && !this.inRecovery && this.sacked.length) console.log('RTO', Math.round(env.now / 1e6), 'una', this.sndUna, 'nxt', this.sndNxt, 'max', this.sndMax, 'recover', this.recover, 'sacked', JSON.stringify(this.sacked), 'above', this.sackedAbove(this.sndUna), 'cwnd', this.cwnd, 'wnd', this.sndWnd, 'dataEnd', this.dataEnd(), 'rtxNext', this.rtxNext, 'dup', this.dupAcks);
    env.count(this.inRecovery ? 'tcp.rto-in-recovery' : this.sacked.length ? 'tcp.rto-with-sack' : this.dupAcks > 0 ? 'tcp.rto-after-dupacks' : 'tcp.rto-no-feedback');
    const mss = this.effectiveMss();
    if (this.state === 'ESTABLISHED' || this.state === 'FIN-WAIT-1' || this.state === 'CLOSE-WAIT' || this.state === 'CLOSING' || this.state === 'LAST-ACK') {
      if (this.backoff === 0) this.ssthresh = Math.max(Math.floor(this.flight() / 2), 2 * mss);
      this.cwnd = mss;
      this.inRecovery = false;
      this.dupAcks = 0;
      // RFC 6582 and 2018: forget what the scoreboard says the peer holds
      // (it may renege) only after repeated timeouts.
      if (this.backoff > 0) this.sacked = [];
    }
    this.recover = this.sndMax;
    this.backoff = Math.min(this.backoff + 1, 16);
    this.rto = Math.min(this.rto * 2, c.maxRtoMs * MS);
    this.rttOffset = -1; // Karn
    this.sndNxt = this.sndUna; // go back and resend from the oldest unacknowledged
    this.rtxDeadline = env.now + this.rto;
  }

  /** Set by the stack when a SYN could not leave for want of the next hop's MAC. */
  unresolvedHop = false;

  private enterTimeWait(env: TcpEnv): void {
    this.state = 'TIME-WAIT';
    this.rtxDeadline = NEVER;
    this.tlpDeadline = NEVER;
    this.persistDeadline = NEVER;
    this.finWait2Deadline = NEVER;
    this.timeWaitDeadline = env.now + env.config.timeWaitMs * MS;
  }

  /** The connection is over; `error` says why if it failed. */
  enterClosed(error: TcpError | null): void {
    this.state = 'CLOSED';
    // The stack forgets it at the end of the turn.
    this.touch();
    if (error && !this.error) this.error = error;
    this.rtxDeadline = NEVER;
    this.tlpDeadline = NEVER;
    this.rackDeadline = NEVER;
    this.delackDeadline = NEVER;
    this.persistDeadline = NEVER;
    this.timeWaitDeadline = NEVER;
    this.finWait2Deadline = NEVER;
    this.keepalive = false;
  }

  /** The application closed its handle: a FIN-WAIT-2 wait is now bounded. */
  detach(env: TcpEnv): void {
    this.touch();
    this.detached = true;
    if (this.state === 'FIN-WAIT-2') this.finWait2Deadline = env.now + env.config.finWait2Ms * MS;
  }

  /** For tests and `ctl`: a one-line summary. */
  describe(): string {
    return `${this.state} una=${this.sndUna} nxt=${this.sndNxt} max=${this.sndMax} wnd=${this.sndWnd} cwnd=${this.cwnd} rcvNxt=${this.rcvNxt} ooo=${this.ooo.length} rto=${(this.rto / MS).toFixed(0)}ms`;
  }
}
