/**
 * Unit tests for the TCP state machine (socket/tcp.ts), driven one segment
 * at a time, in the style of smoltcp's socket tests.
 *
 * A `T` holds one TcpConnection and a fake TcpEnv that records what the
 * connection emits (with the payload bytes copied out at emit time), what it
 * places into its receive store (the fake really copies the bytes, so reads
 * can be checked), its counters, and the clock. Builders make a connection
 * already in a given state (`synSent`, `synReceived`, `established`, ...);
 * `t.recv({...})` feeds a segment from the peer; `t.next()` takes the next
 * segment we sent and `t.none()` checks that nothing more was sent.
 *
 * Sequence numbers: `t.us(k)` is the wire sequence number of our send
 * offset k (offset 0 = our SYN, data byte n = offset n + 1), `t.them(k)` the
 * peer's. ISS is just below 2^32 so that our data crosses the wrap.
 *
 * The last part drives a Stack (stack.ts) with raw frames through the Node
 * harness, for what lives there: listeners and their backlog, and ISNs.
 *
 * The RFC 9293 requirements these tests cover are listed in
 * docs/TCP-CHECKLIST.md.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DEFAULT_CONFIG, TcpConnection, type InSegment, type OutSegment, type State, type TcpConfig, type TcpEnv } from '../src/socket/tcp.ts';
import { MemoryStore, type ByteStore } from '../src/storage.ts';
import { ACK, FIN, PSH, RST, SYN, emitTcp, flagsToString, optionsLength, parseTcp, type TcpHeader, type TcpOptions } from '../src/wire/tcp.ts';
import { emitEthernet, ETHERTYPE, parseEthernet } from '../src/wire/ethernet.ts';
import { emitIpv4, parseIpv4, PROTO } from '../src/wire/ipv4.ts';
import { ARP_LEN, ARP_REQUEST, emitArp } from '../src/wire/arp.ts';
import { defaultConfig, type TcpListener } from '../src/stack.ts';
import { FakePortmap, Node } from './harness.ts';

const MS = 1_000_000;
const S = 1000 * MS;
/** Our ISS: data byte 4080 is sequence number 0 (the wrap). */
const ISS = 0xffff_f000;
/** The peer's ISS. */
const IRS = 0x1234_5678;
const TS_OFFSET = 5000;
const EMPTY = new Uint8Array(0);
/** Bytes in front of the payload in a fake received frame (exercises payloadAt). */
const FRAME_HEAD = 54;

/** Our stream's byte at stream offset k, and the peer's. */
const ourByte = (k: number): number => (k * 13 + 5) & 0xff;
const peerByte = (k: number): number => (k * 31 + 7) & 0xff;
function bytes(from: number, len: number, f: (k: number) => number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = f(from + i);
  return b;
}

// ---------------------------------------------------------------------------
// The fake environment

/** A segment as emitted, with its payload bytes copied out when it was sent. */
interface Sent extends OutSegment {
  data: Uint8Array;
}

class FakeEnv implements TcpEnv {
  now = 0;
  readonly sent: Sent[] = [];
  readonly placed: { at: number; len: number }[] = [];
  readonly counters = new Map<string, number>();
  readonly frames = new Map<number, Uint8Array>();
  /** Challenge ACKs still allowed (the stack's rate limit). */
  challengeBudget = Number.POSITIVE_INFINITY;
  /** Whether emit succeeds (false: next hop unresolved). */
  emitOk = true;

  constructor(readonly config: TcpConfig) {}

  emit(_conn: TcpConnection, seg: OutSegment): boolean {
    if (!this.emitOk) return false;
    const data = seg.payload ? seg.payload.store.peek(seg.payload.offset, seg.payload.len) : EMPTY;
    this.sent.push({ ...seg, options: structuredClone(seg.options), data });
    return true;
  }

  place(frameId: number, offset: number, len: number, store: ByteStore, at: number): void {
    const f = this.frames.get(frameId);
    if (!f) throw new Error(`placement names frame ${frameId}, not held`);
    if (offset < FRAME_HEAD || offset + len > f.length) throw new Error(`placement [${offset}, ${offset + len}) outside the payload of a ${f.length}-byte frame`);
    store.writeAt(at, f.subarray(offset, offset + len));
    this.placed.push({ at, len });
  }

  allowChallengeAck(): boolean {
    if (this.challengeBudget <= 0) return false;
    this.challengeBudget--;
    return true;
  }

  count(what: string, n = 1): void {
    this.counters.set(what, (this.counters.get(what) ?? 0) + n);
  }
}

interface SegIn {
  flags: number;
  seq?: number;
  ack?: number;
  window?: number;
  options?: TcpOptions;
  /** Bytes, or a length (the peer's pattern at the segment's stream offset). */
  payload?: Uint8Array | number;
}

interface Opts {
  config?: Partial<TcpConfig>;
  /** Options of the peer's SYN or SYN-ACK (default: MSS 1460 only). */
  peer?: TcpOptions;
  /** Window field of the peer's SYN or SYN-ACK. */
  peerWindow?: number;
  /** Round-trip time of the handshake. */
  rttMs?: number;
}

/** One connection under test and its environment. */
class T {
  readonly env: FakeEnv;
  readonly c: TcpConnection;
  /** The peer's TSval, sent on every segment when the peer uses timestamps. */
  peerTs: number | null = null;
  private nextFrame = 1;

  constructor(config: Partial<TcpConfig> = {}) {
    const cfg = { ...DEFAULT_CONFIG, ...config };
    this.env = new FakeEnv(cfg);
    const ends = { localIp: 0x0a000001, localPort: 49152, remoteIp: 0x0a000002, remotePort: 80 };
    this.c = new TcpConnection(ends, new MemoryStore(cfg.sndBuf), new MemoryStore(cfg.rcvBuf), ISS, TS_OFFSET, cfg);
  }

  /** Wire sequence number of our send offset k. */
  us(k: number): number {
    return (ISS + k) >>> 0;
  }

  /** Wire sequence number of the peer's send offset k. */
  them(k: number): number {
    return (IRS + k) >>> 0;
  }

  /** Our timestamp clock now. */
  tsNow(): number {
    return (Math.floor(this.env.now / MS) + TS_OFFSET) >>> 0;
  }

  /** Feed a segment from the peer. Defaults: seq = RCV.NXT, ack = SND.UNA (acknowledges nothing new), window 65535. */
  recv(s: SegIn): void {
    const c = this.c;
    const seq = s.seq ?? c.ackSeq();
    let payload: Uint8Array = EMPTY;
    if (typeof s.payload === 'number') {
      const firstData = ((seq - IRS) >>> 0) + (s.flags & SYN ? 1 : 0);
      payload = bytes(firstData - 1, s.payload, peerByte);
    } else if (s.payload) {
      payload = s.payload;
    }
    const options: TcpOptions = { ...(s.options ?? {}) };
    if (this.peerTs !== null && !options.timestamp) options.timestamp = { value: this.peerTs, echo: this.lastTsVal() };
    const frame = new Uint8Array(FRAME_HEAD + payload.length);
    frame.set(payload, FRAME_HEAD);
    const id = this.nextFrame++;
    this.env.frames.set(id, frame);
    const hdr: TcpHeader = {
      srcPort: c.ends.remotePort,
      dstPort: c.ends.localPort,
      seq,
      ack: s.ack ?? (s.flags & ACK ? c.seqOf(c.sndUna) : 0),
      flags: s.flags,
      window: s.window ?? 65535,
      headerLen: 20 + optionsLength(options),
      urgent: 0,
      options,
    };
    const seg: InSegment = { hdr, payloadLen: payload.length, frameId: id, payloadAt: FRAME_HEAD };
    c.segmentArrives(seg, this.env);
  }

  private lastTsVal(): number {
    for (let i = this.env.sent.length - 1; i >= 0; i--) {
      const ts = this.env.sent[i].options.timestamp;
      if (ts) return ts.value;
    }
    return this.tsNow();
  }

  /** The next segment we sent (fails if there is none). */
  next(what = 'a segment'): Sent {
    const s = this.env.sent.shift();
    if (!s) assert.unreachable(`expected ${what}, nothing was sent (${this.c.describe()})`);
    return s!;
  }

  /** Nothing (more) was sent. */
  none(why = ''): void {
    const s = this.env.sent;
    if (s.length) assert.unreachable(`expected nothing sent${why ? ` (${why})` : ''}, got ${s.map(show).join(', ')}`);
  }

  /** Take everything sent so far. */
  drain(): Sent[] {
    return this.env.sent.splice(0);
  }

  count(what: string): number {
    return this.env.counters.get(what) ?? 0;
  }

  advance(ms: number): void {
    this.env.now += ms * MS;
  }

  poll(): void {
    this.c.poll(this.env);
  }

  /** Poll at the connection's next deadline. */
  pollAtDeadline(): void {
    const d = this.c.nextDeadline();
    if (!Number.isFinite(d)) assert.unreachable(`no deadline (${this.c.describe()})`);
    this.env.now = Math.max(this.env.now, d);
    this.c.poll(this.env);
  }

  /** Queue n bytes of our pattern and let the connection send. */
  write(n: number): void {
    const at = this.c.sndBufTail;
    assert.is(this.c.write(bytes(at, n, ourByte)), n, 'write took every byte');
    this.c.output(this.env);
  }

  /** Make what arrived in order readable and read it all. */
  readAll(): Uint8Array {
    this.c.commitTail();
    return this.c.read(1 << 30);
  }
}

function show(s: OutSegment): string {
  return `[${flagsToString(s.flags)} seq=${s.seq} ack=${s.ack} win=${s.window} len=${s.payload?.len ?? 0}]`;
}

/** Check the fields given. */
function expectSeg(s: Sent, e: { flags?: number; seq?: number; ack?: number; window?: number; len?: number }, what = ''): void {
  const p = what ? `${what}: ` : '';
  if (e.flags !== undefined) assert.is(flagsToString(s.flags), flagsToString(e.flags), `${p}flags of ${show(s)}`);
  if (e.seq !== undefined) assert.is(s.seq, e.seq >>> 0, `${p}seq of ${show(s)}`);
  if (e.ack !== undefined) assert.is(s.ack, e.ack >>> 0, `${p}ack of ${show(s)}`);
  if (e.window !== undefined) assert.is(s.window, e.window, `${p}window of ${show(s)}`);
  if (e.len !== undefined) assert.is(s.payload?.len ?? 0, e.len, `${p}length of ${show(s)}`);
}

function state(t: T, st: State): void {
  assert.is(t.c.state, st, t.c.describe());
}

// ---------------------------------------------------------------------------
// Builders

/** A connection in SYN-SENT; the SYN is taken. */
function synSent(o: Opts = {}): T {
  const t = new T(o.config);
  t.c.connect(t.env);
  expectSeg(t.next('our SYN'), { flags: SYN, seq: ISS });
  t.none();
  return t;
}

/** A connection in ESTABLISHED after an active open; the handshake's segments are taken. */
function established(o: Opts = {}): T {
  const t = synSent(o);
  const peer = o.peer ?? { mss: 1460 };
  t.advance(o.rttMs ?? 10);
  if (peer.timestamp) t.peerTs = peer.timestamp.value;
  t.recv({ flags: SYN | ACK, seq: IRS, ack: t.us(1), window: o.peerWindow ?? 65535, options: peer });
  state(t, 'ESTABLISHED');
  expectSeg(t.next('the ACK of the SYN-ACK'), { flags: ACK, seq: t.us(1), ack: t.them(1) });
  t.none();
  return t;
}

/** A connection in SYN-RECEIVED after a passive open (from a listener); the SYN-ACK is taken. */
function synReceived(o: Opts = {}): T {
  const t = new T(o.config);
  t.c.listener = {};
  const peer = o.peer ?? { mss: 1460 };
  if (peer.timestamp) t.peerTs = peer.timestamp.value;
  t.c.acceptSyn(synSeg(t, peer, o.peerWindow ?? 65535), t.env);
  state(t, 'SYN-RECEIVED');
  expectSeg(t.next('our SYN-ACK'), { flags: SYN | ACK, seq: ISS, ack: t.them(1) });
  t.none();
  return t;
}

function synSeg(t: T, options: TcpOptions, window: number): InSegment {
  const hdr: TcpHeader = { srcPort: 80, dstPort: 49152, seq: IRS, ack: 0, flags: SYN, window, headerLen: 20 + optionsLength(options), urgent: 0, options };
  void t;
  return { hdr, payloadLen: 0, frameId: 0, payloadAt: 0 };
}

/** ESTABLISHED, then our FIN sent: FIN-WAIT-1. */
function finWait1(o: Opts = {}): T {
  const t = established(o);
  t.c.shutdownSend(t.env);
  state(t, 'FIN-WAIT-1');
  expectSeg(t.next('our FIN'), { flags: FIN | ACK, seq: t.us(1), ack: t.them(1), len: 0 });
  return t;
}

/** FIN-WAIT-1, then our FIN acknowledged: FIN-WAIT-2. */
function finWait2(o: Opts = {}): T {
  const t = finWait1(o);
  t.recv({ flags: ACK, ack: t.us(2) });
  state(t, 'FIN-WAIT-2');
  t.none();
  return t;
}

/** FIN-WAIT-2, then the peer's FIN: TIME-WAIT. */
function timeWait(o: Opts = {}): T {
  const t = finWait2(o);
  t.recv({ flags: FIN | ACK, seq: t.them(1), ack: t.us(2) });
  state(t, 'TIME-WAIT');
  expectSeg(t.next('the ACK of the peer FIN'), { flags: ACK, seq: t.us(2), ack: t.them(2) });
  return t;
}

/** ESTABLISHED, then the peer's FIN: CLOSE-WAIT. */
function closeWait(o: Opts = {}): T {
  const t = established(o);
  t.recv({ flags: FIN | ACK, seq: t.them(1), ack: t.us(1) });
  state(t, 'CLOSE-WAIT');
  expectSeg(t.next('the ACK of the peer FIN'), { flags: ACK, seq: t.us(1), ack: t.them(2) });
  return t;
}

// ===========================================================================
// Opening: CLOSED -> SYN-SENT -> ESTABLISHED

test('CLOSED -> SYN-SENT: connect sends one SYN <SEQ=ISS> with MSS, window scale, SACK-permitted and timestamps, and arms the 1 s timer', () => {
  const t = new T();
  state(t, 'CLOSED');
  t.env.now = 3 * MS;
  t.c.connect(t.env);
  state(t, 'SYN-SENT');
  const s = t.next('SYN');
  expectSeg(s, { flags: SYN, seq: ISS, ack: 0, len: 0 });
  assert.is(s.options.mss, 1460, 'MSS = MTU 1500 - 40 (MUST-14, MUST-67)');
  assert.is(s.options.wscale, 7, 'a 4 MiB buffer needs shift 7 to fit 16 bits');
  assert.ok(s.options.sackPermitted);
  assert.equal(s.options.timestamp, { value: 3 + TS_OFFSET, echo: 0 });
  assert.is(s.window, 65535, "a SYN's window is never scaled");
  t.none();
  assert.is(t.c.nextDeadline(), 3 * MS + DEFAULT_CONFIG.initialRtoMs * MS);
});

test('SYN-SENT -> ESTABLISHED: the SYN-ACK is ACKed <SEQ=ISS+1><ACK=IRS+1>; options from it are taken; our window is scaled', () => {
  const t = synSent();
  const synTs = t.tsNow();
  t.advance(25);
  t.peerTs = 777;
  t.recv({ flags: SYN | ACK, seq: IRS, ack: t.us(1), window: 30000, options: { mss: 1200, wscale: 2, sackPermitted: true, timestamp: { value: 777, echo: synTs } } });
  state(t, 'ESTABLISHED');
  assert.is(t.count('tcp.established-active'), 1);
  const a = t.next('ACK');
  expectSeg(a, { flags: ACK, seq: t.us(1), ack: t.them(1), len: 0 });
  assert.is(a.window, (4 << 20) >> 7, 'our window field is scaled by our shift (7)');
  assert.equal(a.options.timestamp, { value: t.tsNow(), echo: 777 });
  assert.is(a.options.mss, undefined, 'no MSS option on a non-SYN segment (MUST-65)');
  t.none();
  assert.is(t.c.sndMss, 1200);
  assert.is(t.c.effectiveMss(), 1188, 'the timestamp option takes 12 bytes of every segment');
  assert.is(t.c.sndWscale, 2);
  assert.ok(t.c.sackOk && t.c.tsOk);
  assert.is(Math.round(t.c.srtt / MS), 25, 'RTT sample from the echoed timestamp');
  assert.is(t.c.cwnd, 10 * 1188, 'initial window of ten segments (RFC 6928)');
});

test("SYN-SENT -> ESTABLISHED: the SYN-ACK's window is not scaled (RFC 7323 2.2): a 1000-byte window lets 1000 bytes go", () => {
  const t = synSent();
  t.recv({ flags: SYN | ACK, seq: IRS, ack: t.us(1), window: 1000, options: { mss: 1460, wscale: 4 } });
  state(t, 'ESTABLISHED');
  t.drain();
  assert.is(t.c.sndWnd, 1000);
  t.write(5000);
  const s = t.next('data');
  expectSeg(s, { flags: ACK, seq: t.us(1), len: 1000 });
  t.none('the window is full');
  // The next ACK's window is scaled: 100 << 4.
  t.recv({ flags: ACK, ack: t.us(1001), window: 100 });
  assert.is(t.c.sndWnd, 1600);
});

test('SYN-SENT: a SYN-ACK whose ACK is unacceptable gets <SEQ=SEG.ACK><CTL=RST> and the connection stays in SYN-SENT', () => {
  const t = synSent();
  t.recv({ flags: SYN | ACK, seq: IRS, ack: t.us(2) });
  expectSeg(t.next('RST'), { flags: RST, seq: t.us(2), len: 0 });
  t.none();
  state(t, 'SYN-SENT');
  // SEG.ACK =< ISS is unacceptable too.
  t.recv({ flags: ACK, seq: IRS, ack: t.us(0) });
  expectSeg(t.next('RST'), { flags: RST, seq: t.us(0) });
  state(t, 'SYN-SENT');
  // And the right SYN-ACK still completes the handshake.
  t.recv({ flags: SYN | ACK, seq: IRS, ack: t.us(1) });
  state(t, 'ESTABLISHED');
});

test('SYN-SENT -> CLOSED: a RST with an acceptable ACK is connection-refused; a RST without ACK or with a bad ACK is ignored', () => {
  const t = synSent();
  t.recv({ flags: RST, seq: 0 });
  state(t, 'SYN-SENT');
  t.recv({ flags: RST | ACK, seq: 0, ack: t.us(5) });
  state(t, 'SYN-SENT');
  t.none('never a RST to a RST');
  t.recv({ flags: ACK, seq: IRS, ack: t.us(1) });
  state(t, 'SYN-SENT');
  t.none('an ACK without SYN in SYN-SENT is dropped');
  t.recv({ flags: RST | ACK, seq: 0, ack: t.us(1) });
  state(t, 'CLOSED');
  assert.is(t.c.error, 'connection-refused');
  assert.is(t.count('tcp.connection-refused'), 1);
  t.none();
  assert.is(t.c.nextDeadline(), Number.POSITIVE_INFINITY, 'no timers left');
});

test('SYN-SENT -> SYN-RECEIVED (simultaneous open): a SYN gets SYN-ACK <SEQ=ISS><ACK=IRS+1>; the ACK of our SYN makes it ESTABLISHED', () => {
  const t = synSent();
  t.recv({ flags: SYN, seq: IRS, window: 20000, options: { mss: 1000 } });
  state(t, 'SYN-RECEIVED');
  assert.is(t.count('tcp.simultaneous-open'), 1);
  const sa = t.next('SYN-ACK');
  expectSeg(sa, { flags: SYN | ACK, seq: ISS, ack: t.them(1), len: 0 });
  assert.is(sa.options.mss, 1460);
  t.none();
  assert.is(t.c.sndMss, 1000);
  // The peer's own SYN-ACK (figure 7, line 6): its SYN is one we have; we answer with an ACK.
  t.recv({ flags: SYN | ACK, seq: IRS, ack: t.us(1), window: 20000 });
  const states: State[] = ['SYN-RECEIVED', 'ESTABLISHED'];
  assert.ok(states.includes(t.c.state), t.c.describe());
  if (t.c.state === 'SYN-RECEIVED') expectSeg(t.next('ACK'), { flags: ACK, seq: t.us(1), ack: t.them(1) });
  t.drain();
  // The peer's ACK of our SYN-ACK.
  t.recv({ flags: ACK, seq: t.them(1), ack: t.us(1), window: 20000 });
  state(t, 'ESTABLISHED');
  assert.is(t.c.sndWnd, 20000);
  assert.is(t.c.error, null);
});

test('SYN-RECEIVED from an active open (MUST-11): an exact RST is connection-refused', () => {
  const t = synSent();
  t.recv({ flags: SYN, seq: IRS });
  state(t, 'SYN-RECEIVED');
  t.drain();
  t.recv({ flags: RST, seq: t.them(1) });
  state(t, 'CLOSED');
  assert.is(t.c.error, 'connection-refused');
  t.none();
});

test('SYN-SENT: a SYN is retransmitted with the same ISS at 1 s, 3 s (backoff), and the connection gives up as timed-out after synRetries', () => {
  const t = new T({ synRetries: 2 });
  t.c.connect(t.env);
  expectSeg(t.next('SYN'), { flags: SYN, seq: ISS });
  t.env.now = 999 * MS;
  t.poll();
  t.none('not yet');
  t.env.now = 1 * S;
  t.poll();
  const r1 = t.next('first retransmission');
  expectSeg(r1, { flags: SYN, seq: ISS });
  assert.is(r1.options.mss, 1460, 'the retransmitted SYN carries the same options');
  assert.is(t.c.rto, 2 * S, 'backoff doubles the RTO');
  t.env.now = 2999 * MS;
  t.poll();
  t.none();
  t.env.now = 3 * S;
  t.poll();
  expectSeg(t.next('second retransmission'), { flags: SYN, seq: ISS });
  assert.is(t.c.rto, 4 * S);
  t.env.now = 6999 * MS;
  t.poll();
  t.none();
  state(t, 'SYN-SENT');
  t.env.now = 7 * S;
  t.poll();
  t.none('giving up sends nothing');
  state(t, 'CLOSED');
  assert.is(t.c.error, 'timed-out');
  assert.is(t.count('tcp.retransmit-timeout'), 2);
  assert.is(t.count('tcp.retransmit-timeout-give-up'), 1);
});

test('after a retransmitted SYN: the initial window is one segment (RFC 5681 3.1) and no RTT sample is taken from it (Karn)', () => {
  const t = new T({ timestamps: false });
  t.c.connect(t.env);
  t.drain();
  t.env.now = 1 * S;
  t.poll();
  expectSeg(t.next('retransmitted SYN'), { flags: SYN, seq: ISS });
  t.env.now = 1 * S + 30 * MS;
  t.recv({ flags: SYN | ACK, seq: IRS, ack: t.us(1), options: { mss: 1460 } });
  state(t, 'ESTABLISHED');
  t.drain();
  assert.is(t.c.srtt, 0, 'the SYN-ACK may answer either SYN: no sample');
  assert.is(t.c.cwnd, 1460);
  t.write(10 * 1460);
  expectSeg(t.next('one segment'), { seq: t.us(1), len: 1460 });
  t.none('the window is one segment');
});

// ===========================================================================
// Opening: LISTEN -> SYN-RECEIVED -> ESTABLISHED

test('LISTEN -> SYN-RECEIVED -> ESTABLISHED: the SYN-ACK answers the options offered; the ACK of our SYN establishes, its window scaled', () => {
  const t = new T();
  t.c.listener = {};
  t.env.now = 50 * MS;
  t.peerTs = 4242;
  t.c.acceptSyn(synSeg(t, { mss: 1400, wscale: 3, sackPermitted: true, timestamp: { value: 4242, echo: 0 } }, 5000), t.env);
  state(t, 'SYN-RECEIVED');
  const sa = t.next('SYN-ACK');
  expectSeg(sa, { flags: SYN | ACK, seq: ISS, ack: t.them(1), len: 0, window: 65535 });
  assert.is(sa.options.mss, 1460);
  assert.is(sa.options.wscale, 7);
  assert.ok(sa.options.sackPermitted);
  assert.equal(sa.options.timestamp, { value: 50 + TS_OFFSET, echo: 4242 });
  t.none();
  assert.is(t.c.sndWnd, 5000, "the SYN's window is not scaled");
  t.advance(20);
  t.peerTs = 4262;
  t.recv({ flags: ACK, seq: t.them(1), ack: t.us(1), window: 100, options: { timestamp: { value: 4262, echo: 50 + TS_OFFSET } } });
  state(t, 'ESTABLISHED');
  assert.is(t.count('tcp.established-passive'), 1);
  assert.is(t.c.sndWnd, 800, 'window 100 << 3');
  assert.is(t.c.sndMss, 1400);
  assert.is(Math.round(t.c.srtt / MS), 20);
  t.none('nothing to send');
});

test('LISTEN -> SYN-RECEIVED: options the SYN did not offer are not in the SYN-ACK; without an MSS option the send MSS is 536 (MUST-15)', () => {
  const t = synReceived({ peer: {} });
  // synReceived took the SYN-ACK; look at the connection's choices.
  assert.is(t.c.sndMss, 536);
  assert.is(t.c.rcvWscale, 0, 'no scaling unless both sides offer it');
  assert.is(t.c.sndWscale, 0);
  assert.not.ok(t.c.sackOk);
  assert.not.ok(t.c.tsOk);
  const u = new T();
  u.c.listener = {};
  u.c.acceptSyn(synSeg(u, {}, 5000), u.env);
  const sa = u.next('SYN-ACK');
  assert.is(sa.options.mss, 1460, 'we always send our MSS (MAY-3)');
  assert.is(sa.options.wscale, undefined);
  assert.is(sa.options.sackPermitted, undefined);
  assert.is(sa.options.timestamp, undefined);
});

test('SYN-RECEIVED: a retransmitted SYN gets the SYN-ACK again; the SYN-ACK is retransmitted on timeout', () => {
  const t = synReceived();
  t.recv({ flags: SYN, seq: IRS });
  expectSeg(t.next('SYN-ACK again'), { flags: SYN | ACK, seq: ISS, ack: t.them(1) });
  state(t, 'SYN-RECEIVED');
  t.pollAtDeadline();
  expectSeg(t.next('SYN-ACK on timeout'), { flags: SYN | ACK, seq: ISS, ack: t.them(1) });
  assert.is(t.count('tcp.retransmit-timeout'), 1);
  state(t, 'SYN-RECEIVED');
});

test('SYN-RECEIVED: an ACK that does not acknowledge our SYN gets <SEQ=SEG.ACK><CTL=RST>', () => {
  const t = synReceived();
  t.recv({ flags: ACK, seq: t.them(1), ack: t.us(7) });
  expectSeg(t.next('RST'), { flags: RST, seq: t.us(7), len: 0 });
  state(t, 'SYN-RECEIVED');
});

test('SYN-RECEIVED -> CLOSED on an exact RST from a passive open: back to LISTEN quietly (no error, MUST-11); an inexact one is challenged', () => {
  const t = synReceived();
  t.recv({ flags: RST, seq: t.them(100) });
  state(t, 'SYN-RECEIVED');
  assert.is(t.count('tcp.rst-challenged'), 1);
  expectSeg(t.next('challenge ACK'), { flags: ACK, ack: t.them(1) });
  t.recv({ flags: RST, seq: t.them(1) });
  state(t, 'CLOSED');
  assert.is(t.c.error, null, 'a passive open that is reset goes back to LISTEN, no error for anybody');
  t.none();
});

// ===========================================================================
// Closing

test('ESTABLISHED -> FIN-WAIT-1 -> FIN-WAIT-2 -> TIME-WAIT -> CLOSED after 2 MSL', () => {
  const t = established({ config: { timeWaitMs: 4000 } });
  t.write(100);
  expectSeg(t.next('data'), { flags: ACK | PSH, seq: t.us(1), len: 100 });
  t.c.shutdownSend(t.env);
  state(t, 'FIN-WAIT-1');
  expectSeg(t.next('FIN after the data'), { flags: FIN | ACK, seq: t.us(101), ack: t.them(1), len: 0 });
  t.recv({ flags: ACK, ack: t.us(101) });
  state(t, 'FIN-WAIT-1');
  t.recv({ flags: ACK, ack: t.us(102) });
  state(t, 'FIN-WAIT-2');
  t.none();
  assert.is(t.c.nextDeadline(), Number.POSITIVE_INFINITY, 'FIN-WAIT-2 of a connection still held by the application has no timer');
  t.advance(1000);
  t.recv({ flags: FIN | ACK, seq: t.them(1), ack: t.us(102) });
  state(t, 'TIME-WAIT');
  expectSeg(t.next('ACK of FIN'), { flags: ACK, seq: t.us(102), ack: t.them(2) });
  assert.ok(t.c.atEof());
  const entered = t.env.now;
  assert.is(t.c.nextDeadline(), entered + 4000 * MS);
  t.env.now = entered + 3999 * MS;
  t.poll();
  state(t, 'TIME-WAIT');
  t.env.now = entered + 4000 * MS;
  t.poll();
  state(t, 'CLOSED');
  assert.is(t.c.error, null);
  t.none();
});

test('ESTABLISHED -> FIN-WAIT-1: the FIN rides on the last data segment when the window allows', () => {
  const t = established();
  t.c.write(bytes(0, 300, ourByte));
  t.c.shutdownSend(t.env);
  const s = t.next('data + FIN');
  expectSeg(s, { flags: FIN | PSH | ACK, seq: t.us(1), len: 300 });
  assert.equal(s.data, bytes(0, 300, ourByte));
  t.none();
  assert.is(t.c.write(new Uint8Array(1)), 0, 'nothing can be written after shutdown');
});

test('FIN-WAIT-1 -> CLOSING -> TIME-WAIT (simultaneous close)', () => {
  const t = finWait1();
  t.recv({ flags: FIN | ACK, seq: t.them(1), ack: t.us(1) });
  state(t, 'CLOSING');
  expectSeg(t.next('ACK of their FIN'), { flags: ACK, seq: t.us(2), ack: t.them(2) });
  t.none();
  t.recv({ flags: ACK, seq: t.them(2), ack: t.us(2) });
  state(t, 'TIME-WAIT');
  t.none();
  assert.is(t.c.nextDeadline(), t.env.now + DEFAULT_CONFIG.timeWaitMs * MS);
});

test('FIN-WAIT-1 -> TIME-WAIT: a FIN that also acknowledges our FIN', () => {
  const t = finWait1();
  t.recv({ flags: FIN | ACK, seq: t.them(1), ack: t.us(2) });
  state(t, 'TIME-WAIT');
  expectSeg(t.next('ACK of FIN'), { flags: ACK, seq: t.us(2), ack: t.them(2) });
  t.none();
});

test('FIN-WAIT-1: our FIN is retransmitted on timeout', () => {
  const t = finWait1();
  t.pollAtDeadline();
  expectSeg(t.next('FIN again'), { flags: FIN | ACK, seq: t.us(1), ack: t.them(1) });
  state(t, 'FIN-WAIT-1');
});

test('FIN-WAIT-2: data from the peer is still received', () => {
  const t = finWait2();
  t.recv({ flags: ACK | PSH, seq: t.them(1), ack: t.us(2), payload: 10 });
  assert.equal(t.readAll(), bytes(0, 10, peerByte));
  state(t, 'FIN-WAIT-2');
});

test('TIME-WAIT: a retransmitted FIN is ACKed and restarts the 2 MSL timer', () => {
  const t = timeWait({ config: { timeWaitMs: 60_000 } });
  const entered = t.env.now;
  t.env.now = entered + 30 * S;
  t.recv({ flags: FIN | ACK, seq: t.them(1), ack: t.us(2) });
  expectSeg(t.next('ACK'), { flags: ACK, seq: t.us(2), ack: t.them(2) });
  t.none();
  state(t, 'TIME-WAIT');
  assert.is(t.c.nextDeadline(), t.env.now + 60 * S, 'the wait starts again');
  t.env.now = entered + 60 * S;
  t.poll();
  state(t, 'TIME-WAIT');
  t.env.now = entered + 90 * S;
  t.poll();
  state(t, 'CLOSED');
});

test('FIN-WAIT-2 of a detached connection times out (finWait2Ms)', () => {
  const t = finWait2({ config: { finWait2Ms: 5000 } });
  const at = t.env.now;
  t.c.detach(t.env);
  assert.is(t.c.nextDeadline(), at + 5 * S);
  t.env.now = at + 4999 * MS;
  t.poll();
  state(t, 'FIN-WAIT-2');
  t.env.now = at + 5 * S;
  t.poll();
  state(t, 'CLOSED');
  assert.is(t.count('tcp.fin-wait-2-timeout'), 1);
  t.none();
  // Detached before the ACK of our FIN: the timer starts when FIN-WAIT-2 is entered.
  const u = finWait1({ config: { finWait2Ms: 5000 } });
  u.c.detach(u.env);
  u.advance(1000);
  u.recv({ flags: ACK, ack: u.us(2) });
  state(u, 'FIN-WAIT-2');
  assert.is(u.c.nextDeadline(), u.env.now + 5 * S);
});

test('ESTABLISHED -> CLOSE-WAIT -> LAST-ACK -> CLOSED; data can still be sent in CLOSE-WAIT', () => {
  const t = closeWait();
  assert.ok(t.c.atEof(), 'the application sees the end of the stream');
  assert.is(t.c.error, null, 'a FIN is a normal close (MUST-12)');
  t.write(50);
  expectSeg(t.next('data in CLOSE-WAIT'), { flags: ACK | PSH, seq: t.us(1), ack: t.them(2), len: 50 });
  t.recv({ flags: ACK, seq: t.them(2), ack: t.us(51) });
  t.c.shutdownSend(t.env);
  state(t, 'LAST-ACK');
  expectSeg(t.next('our FIN'), { flags: FIN | ACK, seq: t.us(51), ack: t.them(2) });
  t.none();
  t.recv({ flags: ACK, seq: t.them(2), ack: t.us(51) });
  state(t, 'LAST-ACK');
  t.recv({ flags: ACK, seq: t.them(2), ack: t.us(52) });
  state(t, 'CLOSED');
  assert.is(t.c.error, null);
  t.none();
});

test('ESTABLISHED -> CLOSED on an exact RST: connection-reset (MUST-12); a RST may carry data (SHLD-2)', () => {
  const t = established();
  t.recv({ flags: RST | ACK, seq: t.them(1), ack: t.us(1) });
  state(t, 'CLOSED');
  assert.is(t.c.error, 'connection-reset');
  assert.is(t.count('tcp.rst-received'), 1);
  t.none('never a reply to a RST');
  const u = established();
  u.recv({ flags: RST, seq: u.them(1), payload: 20 });
  state(u, 'CLOSED');
  assert.is(u.c.error, 'connection-reset');
  assert.is(u.env.placed.length, 0, "a RST's data is not delivered");
});

test('a RST in LAST-ACK closes without an error; in CLOSE-WAIT it is a reset', () => {
  const t = closeWait();
  t.c.shutdownSend(t.env);
  t.drain();
  t.recv({ flags: RST, seq: t.them(2) });
  state(t, 'CLOSED');
  assert.is(t.c.error, null);
  const u = closeWait();
  u.recv({ flags: RST, seq: u.them(2) });
  state(u, 'CLOSED');
  assert.is(u.c.error, 'connection-reset');
});

test('ABORT: RST <SEQ=SND.NXT> and CLOSED with connection-aborted; in SYN-SENT nothing is sent; CLOSE in SYN-SENT just closes', () => {
  const t = established();
  t.write(10);
  t.drain();
  t.c.abort(t.env);
  state(t, 'CLOSED');
  expectSeg(t.next('RST'), { flags: RST | ACK, seq: t.us(11), ack: t.them(1), len: 0 });
  assert.is(t.c.error, 'connection-aborted');
  const u = synSent();
  u.c.abort(u.env);
  state(u, 'CLOSED');
  u.none();
  const v = synSent();
  v.c.shutdownSend(v.env);
  state(v, 'CLOSED');
  v.none();
  assert.is(v.c.nextDeadline(), Number.POSITIVE_INFINITY);
});

// ===========================================================================
// RFC 5961 and unacceptable segments

test('RFC 5961 3: a RST in the window but not at RCV.NXT gets a challenge ACK and does not reset', () => {
  const t = established();
  t.recv({ flags: RST, seq: t.them(1000) });
  state(t, 'ESTABLISHED');
  assert.is(t.c.error, null);
  assert.is(t.count('tcp.rst-challenged'), 1);
  expectSeg(t.next('challenge ACK'), { flags: ACK, seq: t.us(1), ack: t.them(1), len: 0 });
  t.none();
  // The peer (if it is really the peer) answers the challenge with an exact RST.
  t.recv({ flags: RST, seq: t.them(1) });
  state(t, 'CLOSED');
});

test('RFC 5961 3: a RST outside the window is dropped silently', () => {
  const t = established();
  t.recv({ flags: RST, seq: t.them(100_000) });
  t.recv({ flags: RST, seq: t.them(0) });
  state(t, 'ESTABLISHED');
  t.none();
  assert.is(t.count('tcp.rst-out-of-window'), 2);
});

test('RFC 5961 4: a SYN in a synchronized state gets a challenge ACK, never a reset', () => {
  const t = established();
  t.recv({ flags: SYN, seq: t.them(50) });
  state(t, 'ESTABLISHED');
  assert.is(t.count('tcp.syn-challenged'), 1);
  expectSeg(t.next('challenge ACK'), { flags: ACK, seq: t.us(1), ack: t.them(1) });
  t.none();
  // Outside the window it is an unacceptable segment: still an ACK.
  t.recv({ flags: SYN, seq: t.them(-5) });
  expectSeg(t.next('ACK'), { flags: ACK, ack: t.them(1) });
  state(t, 'ESTABLISHED');
});

test('RFC 5961 5: an ACK above SND.MAX gets an ACK and the segment (with its data) is dropped', () => {
  const t = established();
  t.write(100);
  t.drain();
  t.recv({ flags: ACK | PSH, seq: t.them(1), ack: t.us(5000), payload: 10 });
  assert.is(t.count('tcp.ack-ahead'), 1);
  expectSeg(t.next('ACK'), { flags: ACK, seq: t.us(101), ack: t.them(1) });
  t.none();
  assert.is(t.c.sndUna, 1, 'nothing acknowledged');
  assert.is(t.c.rcvNxt, 1, 'the data was not taken');
  assert.is(t.env.placed.length, 0);
});

test('RFC 5961 5: an ACK below SND.UNA - MAX.SND.WND gets an ACK and the segment is dropped', () => {
  const t = established();
  t.recv({ flags: ACK | PSH, seq: t.them(1), ack: t.us(1 - 70_000), payload: 10 });
  assert.is(t.count('tcp.ack-too-old'), 1);
  expectSeg(t.next('ACK'), { flags: ACK, ack: t.them(1) });
  assert.is(t.c.rcvNxt, 1);
  // An old ACK inside that range is fine: the data is taken.
  t.recv({ flags: ACK | PSH, seq: t.them(1), ack: t.us(1 - 1000), payload: 10 });
  assert.is(t.c.rcvNxt, 11);
});

test('RFC 5961 7: challenge ACKs are rate limited through env.allowChallengeAck', () => {
  const t = established();
  t.env.challengeBudget = 2;
  for (let i = 0; i < 5; i++) t.recv({ flags: RST, seq: t.them(1000 + i) });
  t.recv({ flags: SYN, seq: t.them(2000) });
  assert.is(t.drain().length, 2, 'two challenge ACKs, then none');
  assert.is(t.count('tcp.challenge-ack-limited'), 4);
  state(t, 'ESTABLISHED');
});

test('an unacceptable segment (data beyond the window, or all old) gets an ACK <SEQ=SND.NXT><ACK=RCV.NXT> and is dropped', () => {
  const t = established();
  t.recv({ flags: ACK, seq: t.them(70_000), payload: 100 });
  assert.is(t.count('tcp.out-of-window'), 1);
  expectSeg(t.next('ACK'), { flags: ACK, seq: t.us(1), ack: t.them(1), len: 0 });
  assert.is(t.env.placed.length, 0);
  t.recv({ flags: ACK, seq: t.them(1), payload: 100 });
  t.env.sent.length = 0;
  t.recv({ flags: ACK, seq: t.them(1), payload: 100 });
  expectSeg(t.next('ACK of a duplicate, at once'), { flags: ACK, ack: t.them(101) });
  assert.is(t.count('tcp.out-of-window'), 2);
  assert.is(t.env.placed.length, 1);
  assert.equal(t.readAll(), bytes(0, 100, peerByte));
});

test('a segment that straddles RCV.NXT: only the new part is placed', () => {
  const t = established();
  t.recv({ flags: ACK, seq: t.them(1), payload: 100 });
  t.recv({ flags: ACK, seq: t.them(51), payload: 100 });
  assert.equal(t.env.placed[1], { at: 100, len: 50 });
  assert.is(t.c.rcvNxt, 151);
  assert.equal(t.readAll(), bytes(0, 150, peerByte));
});

test('a FIN that arrives ahead of a hole is taken once the hole fills; in-order data beyond the FIN is not taken', () => {
  const t = established();
  t.recv({ flags: ACK | FIN, seq: t.them(101), payload: 100 });
  state(t, 'ESTABLISHED');
  expectSeg(t.next('duplicate ACK'), { flags: ACK, ack: t.them(1) });
  t.recv({ flags: ACK, seq: t.them(1), payload: 300 });
  state(t, 'CLOSE-WAIT');
  expectSeg(t.next('ACK of the FIN'), { flags: ACK, ack: t.them(202) });
  t.none();
  assert.equal(t.readAll(), bytes(0, 200, peerByte));
  assert.ok(t.c.atEof());
});

test('a segment without ACK in a synchronized state is dropped', () => {
  const t = established();
  t.recv({ flags: PSH, seq: t.them(1), payload: 10 });
  assert.is(t.count('tcp.no-ack'), 1);
  assert.is(t.c.rcvNxt, 1);
  t.none();
});

test('zero receive window: data is not accepted but ACKed with window 0; an ACK and an exact RST are still processed (MUST-66)', () => {
  const t = established({ config: { rcvBuf: 2920 } });
  t.write(10);
  t.drain();
  t.recv({ flags: ACK, seq: t.them(1), payload: 1460 });
  t.recv({ flags: ACK, seq: t.them(1461), payload: 1460 });
  expectSeg(t.next('ACK of two segments'), { flags: ACK, ack: t.them(2921), window: 0 });
  t.recv({ flags: ACK, seq: t.them(2921), payload: 10 });
  expectSeg(t.next('ACK with window 0'), { flags: ACK, ack: t.them(2921), window: 0 });
  assert.is(t.count('tcp.out-of-window'), 1);
  assert.is(t.env.placed.length, 2);
  t.recv({ flags: ACK, seq: t.them(2921), ack: t.us(11) });
  assert.is(t.c.sndUna, 11, 'a bare ACK at RCV.NXT is acceptable with a zero window');
  t.recv({ flags: RST, seq: t.them(2921) });
  state(t, 'CLOSED');
  assert.is(t.c.error, 'connection-reset');
});

test('PAWS (RFC 7323 5): a segment with an older timestamp is ACKed and dropped; a RST is not subject to PAWS', () => {
  const t = established({ peer: { mss: 1460, timestamp: { value: 1000, echo: 0 } } });
  assert.is(t.c.tsRecent, 1000);
  t.peerTs = 1001;
  t.recv({ flags: ACK, seq: t.them(1), payload: 10 });
  assert.is(t.c.tsRecent, 1001);
  t.drain();
  t.peerTs = 999;
  t.recv({ flags: ACK, seq: t.them(11), payload: 10 });
  assert.is(t.count('tcp.paws-drop'), 1);
  const a = t.next('ACK');
  expectSeg(a, { flags: ACK, ack: t.them(11) });
  assert.is(a.options.timestamp?.echo, 1001, 'echoes TS.Recent');
  assert.is(t.c.rcvNxt, 11, 'dropped');
  assert.is(t.c.tsRecent, 1001, 'TS.Recent unchanged');
  // Timestamps compare modulo 2^32: a value just past the wrap is newer.
  t.c.tsRecent = 0xffff_fff0;
  t.peerTs = 5;
  t.recv({ flags: ACK, seq: t.them(11), payload: 10 });
  assert.is(t.c.rcvNxt, 21);
  assert.is(t.c.tsRecent, 5);
  t.peerTs = 3;
  t.recv({ flags: RST, seq: t.them(21) });
  state(t, 'CLOSED');
});

// ===========================================================================
// Options: window scale, MSS

test('window scaling: the peer window is shifted by its scale; the window is treated as unsigned up to 2^30 (MUST-1)', () => {
  const t = established({ peer: { mss: 1460, wscale: 3 } });
  t.recv({ flags: ACK, window: 1000 });
  assert.is(t.c.sndWnd, 8000);
  const u = established({ peer: { mss: 1460, wscale: 14 } });
  u.recv({ flags: ACK, window: 0xffff });
  assert.is(u.c.sndWnd, 0xffff * 2 ** 14);
  assert.ok(u.c.sndWnd > 2 ** 29);
});

test('window scaling: our window is scaled by 7 when the peer offers scaling, so data 1 MB ahead is in the window; without it, 64 KiB', () => {
  const t = established({ peer: { mss: 1460, wscale: 0 } });
  assert.is(t.c.rcvWscale, 7);
  t.recv({ flags: ACK, seq: t.them(1_000_001), payload: 100 });
  assert.equal(t.env.placed, [{ at: 1_000_000, len: 100 }], 'kept out of order');
  const u = established();
  assert.is(u.c.rcvWscale, 0, 'the peer did not offer scaling: neither side scales');
  u.write(1);
  assert.is(u.next().window, 65535);
  u.recv({ flags: ACK, seq: u.them(1_000_001), payload: 100 });
  assert.is(u.env.placed.length, 0);
  assert.is(u.count('tcp.out-of-window'), 1);
});

test('MSS: segments are cut to the peer MSS (1000), PSH only on the last; MSS 9000 is capped at ours (MUST-16); no option means 536', () => {
  const t = established({ peer: { mss: 1000 } });
  t.c.nodelay = true;
  t.write(2500);
  const segs = t.drain();
  assert.equal(segs.map((s) => s.payload?.len), [1000, 1000, 500]);
  assert.equal(segs.map((s) => flagsToString(s.flags)), ['.', '.', 'P.'], 'PSH on the last segment of what is queued (MUST-61)');
  assert.equal(segs.map((s) => s.seq), [t.us(1), t.us(1001), t.us(2001)]);
  assert.ok(segs.every((s) => s.options.mss === undefined), 'no MSS option on data (MUST-65)');
  assert.equal(Uint8Array.from(segs.flatMap((s) => [...s.data])), bytes(0, 2500, ourByte));
  const u = established({ peer: { mss: 9000 } });
  assert.is(u.c.sndMss, 1460);
  const v = established({ peer: {} });
  assert.is(v.c.sndMss, 536);
  v.c.nodelay = true;
  v.write(1200);
  // Two 536-byte segments leave as one TSO segment the link cuts (gsoSize 536).
  assert.equal(v.drain().map((s) => [s.payload?.len, s.gsoSize]), [[1072, 536], [128, 0]]);
});

test('sequence numbers wrap: our data crosses 2^32 with the segments numbered modulo 2^32, and ACKs across the wrap work', () => {
  const t = established();
  t.c.nodelay = true;
  t.write(6000);
  const segs = t.drain();
  assert.equal(segs.map((s) => s.seq), [t.us(1), t.us(1461), t.us(2921), t.us(4381), t.us(5841)]);
  assert.ok(segs[3].seq < segs[2].seq, 'the fourth segment starts past the wrap');
  t.recv({ flags: ACK, ack: t.us(6001) });
  assert.is(t.c.sndUna, 6001);
  assert.ok(t.c.seqOf(6001) < 0x1000);
});

// ===========================================================================
// Receiving: SACK, delayed ACK, receiver SWS

test('SACK (RFC 2018): out-of-order data is placed and ACKed at once with SACK blocks, the most recent first; filling the hole delivers it all', () => {
  const t = established({ peer: { mss: 1460, sackPermitted: true } });
  assert.ok(t.c.sackOk);
  t.recv({ flags: ACK, seq: t.them(1001), payload: 100 });
  let a = t.next('ACK with SACK');
  expectSeg(a, { flags: ACK, ack: t.them(1) });
  assert.equal(a.options.sack, [{ left: t.them(1001), right: t.them(1101) }]);
  assert.equal(t.env.placed, [{ at: 1000, len: 100 }]);
  t.recv({ flags: ACK, seq: t.them(3001), payload: 100 });
  a = t.next();
  assert.equal(a.options.sack, [
    { left: t.them(3001), right: t.them(3101) },
    { left: t.them(1001), right: t.them(1101) },
  ]);
  t.recv({ flags: ACK, seq: t.them(2001), payload: 100 });
  a = t.next();
  assert.equal(a.options.sack?.[0], { left: t.them(2001), right: t.them(2101) }, 'the block of the latest segment first');
  assert.is(a.options.sack?.length, 3);
  t.recv({ flags: ACK, seq: t.them(1101), payload: 100 });
  a = t.next();
  assert.equal(a.options.sack?.[0], { left: t.them(1001), right: t.them(1201) }, 'a block that grew is reported merged, first');
  assert.is(t.count('tcp.out-of-order'), 4);
  // Fill [1, 1001): RCV.NXT jumps to 1201, ACKed at once.
  t.recv({ flags: ACK, seq: t.them(1), payload: 1000 });
  a = t.next('ACK of the filled hole');
  expectSeg(a, { flags: ACK, ack: t.them(1201) });
  assert.equal(
    [...(a.options.sack ?? [])].sort((x, y) => x.left - y.left),
    [
      { left: t.them(2001), right: t.them(2101) },
      { left: t.them(3001), right: t.them(3101) },
    ],
  );
  t.none();
  assert.equal(t.readAll(), bytes(0, 1200, peerByte));
});

test('SACK: no SACK option without SACK-permitted; out-of-order data is still kept (SHLD-31)', () => {
  const t = established();
  t.recv({ flags: ACK, seq: t.them(1461), payload: 1460 });
  const a = t.next('duplicate ACK');
  expectSeg(a, { flags: ACK, ack: t.them(1) });
  assert.is(a.options.sack, undefined);
  t.recv({ flags: ACK, seq: t.them(1), payload: 1460 });
  expectSeg(t.next(), { ack: t.them(2921) });
  assert.equal(t.readAll(), bytes(0, 2920, peerByte));
});

test('delayed ACK: one full segment is not ACKed at once, the second is; a lone segment is ACKed after 40 ms (MUST-40)', () => {
  const t = established();
  const t0 = t.env.now;
  const acks0 = t.count('tcp.acks-sent');
  t.recv({ flags: ACK, seq: t.them(1), payload: 1460 });
  t.none('the first segment waits');
  assert.is(t.c.nextDeadline(), t0 + 40 * MS);
  t.recv({ flags: ACK, seq: t.them(1461), payload: 1460 });
  expectSeg(t.next('ACK of two'), { flags: ACK, ack: t.them(2921) });
  t.none();
  assert.is(t.c.nextDeadline(), Number.POSITIVE_INFINITY);
  t.advance(5);
  const t1 = t.env.now;
  t.recv({ flags: ACK, seq: t.them(2921), payload: 1460 });
  t.none();
  t.env.now = t1 + 39 * MS;
  t.poll();
  t.none();
  t.env.now = t1 + 40 * MS;
  t.poll();
  expectSeg(t.next('delayed ACK'), { flags: ACK, ack: t.them(4381) });
  assert.is(t.count('tcp.acks-sent') - acks0, 2);
});

test('delayed ACK: an ACK goes out with data we send (piggybacked), not separately', () => {
  const t = established();
  t.recv({ flags: ACK, seq: t.them(1), payload: 100 });
  t.none();
  t.write(10);
  expectSeg(t.next('data carrying the ACK'), { flags: ACK | PSH, ack: t.them(101), len: 10 });
  t.env.now += 40 * MS;
  t.poll();
  t.none('nothing left to ACK');
});

test('receiver SWS avoidance (MUST-39): a small read does not open the window; the right edge never moves left (SHLD-14)', () => {
  const t = established({ config: { rcvBuf: 8192 } });
  let lastEdge = t.c.rcvNxt + 8192;
  const edgeOf = (s: Sent): number => ((s.ack - IRS) >>> 0) + s.window;
  // Fill the buffer: 5 full segments and a 892-byte one.
  for (let off = 0; off < 8192; off += 1460) t.recv({ flags: ACK, seq: t.them(1 + off), payload: Math.min(1460, 8192 - off) });
  t.env.now += 40 * MS;
  t.poll();
  const acks = t.drain();
  assert.ok(acks.length >= 3);
  for (const a of acks) {
    assert.ok(edgeOf(a) >= lastEdge, `right edge ${edgeOf(a)} moved left of ${lastEdge}`);
    lastEdge = edgeOf(a);
  }
  assert.is(acks[acks.length - 1].window, 0, 'the buffer is full');
  // The application reads 100 bytes: whatever goes out still says window 0.
  t.c.commitTail();
  assert.is(t.c.read(100).length, 100);
  t.c.output(t.env);
  for (const a of t.drain()) assert.is(a.window, 0, 'no 100-byte window');
  // Reading 2000 more opens the window by at least an MSS.
  t.c.read(2000);
  t.c.output(t.env);
  const u = t.next('window update');
  expectSeg(u, { flags: ACK, ack: t.them(8193) });
  assert.is(u.window, 2100);
});

// ===========================================================================
// Sending: Nagle, sender SWS, zero window, slow start

test('Nagle (SHLD-7): a small segment waits while data is unacknowledged; the ACK releases it; nodelay sends at once (MUST-17)', () => {
  const t = established();
  t.write(100);
  expectSeg(t.next('first small segment goes'), { flags: ACK | PSH, seq: t.us(1), len: 100 });
  t.write(100);
  t.write(100);
  t.none('held while 100 bytes are unacknowledged');
  t.recv({ flags: ACK, ack: t.us(101) });
  const s = t.next('released by the ACK, coalesced');
  expectSeg(s, { flags: ACK | PSH, seq: t.us(101), len: 200 });
  assert.equal(s.data, bytes(100, 200, ourByte));
  const u = established();
  u.c.nodelay = true;
  u.write(100);
  u.write(100);
  assert.equal(u.drain().map((x) => x.payload?.len), [100, 100]);
});

test('Nagle: a full-sized segment is never held', () => {
  const t = established();
  t.write(100);
  t.drain();
  t.write(1460 + 10);
  const segs = t.drain();
  assert.equal(segs.map((s) => s.payload?.len), [1460], 'the full segment goes, the 10-byte tail waits');
});

test('sender SWS avoidance (MUST-38): a window below an MSS and half the largest window is not used at once; the override timer sends into it', () => {
  const t = established();
  t.recv({ flags: ACK, window: 100 });
  t.write(5000);
  t.none('a 100-byte window of a 65535-byte maximum is a sliver');
  assert.ok(Number.isFinite(t.c.nextDeadline()), 'a timer must be running, or a lost window update deadlocks the connection');
  t.pollAtDeadline();
  const s = t.next('override');
  expectSeg(s, { flags: ACK, seq: t.us(1), len: 100 });
  t.recv({ flags: ACK, ack: t.us(101), window: 65535 });
  assert.ok(t.drain().length > 0, 'the window opened: data flows');
});

test('a shrinking window (MUST-34, SHLD-15): no new data beyond it, no failure; the RTO retransmits from SND.UNA (SHLD-16)', () => {
  const t = established();
  t.write(10 * 1460);
  assert.is(t.drain().length, 10);
  t.recv({ flags: ACK, ack: t.us(1), window: 2000 });
  t.write(1460);
  t.none('the window is below what is in flight');
  state(t, 'ESTABLISHED');
  t.env.now += t.c.rto;
  t.poll();
  expectSeg(t.next('retransmission'), { seq: t.us(1), len: 1460 });
});

test('zero window: a probe of one byte after the RTO (SHLD-29), then at doubling intervals (SHLD-30); the open window resumes sending', () => {
  const t = established();
  t.recv({ flags: ACK, window: 0 });
  assert.is(t.c.sndWnd, 0);
  const t0 = t.env.now;
  t.write(3000);
  t.none('the window is zero');
  assert.is(t.c.nextDeadline(), t0 + t.c.rto);
  t.env.now = t0 + t.c.rto;
  t.poll();
  const p = t.next('probe');
  expectSeg(p, { flags: ACK, seq: t.us(1), len: 1 });
  assert.equal(p.data, bytes(0, 1, ourByte));
  assert.is(t.count('tcp.zero-window-probe'), 1);
  t.recv({ flags: ACK, ack: t.us(1), window: 0 });
  t.none();
  const t1 = t.env.now;
  assert.is(t.c.nextDeadline(), t1 + 2 * t.c.rto, 'the second probe after twice the interval');
  t.pollAtDeadline();
  expectSeg(t.next('second probe'), { seq: t.us(1), len: 1 });
  t.recv({ flags: ACK, ack: t.us(1), window: 0 });
  assert.is(t.c.nextDeadline(), t.env.now + 4 * t.c.rto);
  t.recv({ flags: ACK, ack: t.us(1), window: 65535 });
  const segs = t.drain();
  assert.ok(segs.length >= 2);
  expectSeg(segs[0], { seq: t.us(1), len: 1460 });
});

test('zero window held for 30 minutes (MUST-37): probes answered with window 0 keep the connection open and never send more than the probe byte', () => {
  const t = established();
  t.recv({ flags: ACK, window: 0 });
  t.write(3000);
  const end = t.env.now + 30 * 60 * S;
  let probes = 0;
  while (t.env.now < end) {
    t.pollAtDeadline();
    for (const s of t.drain()) {
      assert.ok((s.payload?.len ?? 0) <= 1, `sent ${show(s)} into a zero window`);
      assert.is(s.seq, t.us(1));
      probes++;
    }
    state(t, 'ESTABLISHED');
    t.recv({ flags: ACK, ack: t.us(1), window: 0 });
  }
  assert.ok(probes >= 20, `${probes} probes`);
  t.none();
  assert.is(t.count('tcp.fast-retransmit'), 0, 'answers to probes are not duplicate ACKs');
  t.recv({ flags: ACK, ack: t.us(1), window: 65535 });
  expectSeg(t.next('data once the window opens'), { seq: t.us(1), len: 1460 });
});

test('zero window with data in flight (MUST-37): while the peer keeps answering, retransmission timeouts do not time the connection out', () => {
  const t = established({ config: { dataRetries: 5 } });
  t.write(4 * 1460);
  t.drain();
  // The peer takes two segments and closes its window.
  t.recv({ flags: ACK, ack: t.us(2921), window: 0 });
  const end = t.env.now + 30 * 60 * S;
  while (t.env.now < end && t.c.state === 'ESTABLISHED') {
    t.pollAtDeadline();
    if (t.drain().length) t.recv({ flags: ACK, ack: t.us(2921), window: 0 });
  }
  state(t, 'ESTABLISHED');
  t.recv({ flags: ACK, ack: t.us(2921), window: 65535 });
  expectSeg(t.next('data once the window opens'), { seq: t.us(2921) });
});

test('slow start (RFC 5681): the window grows by the bytes ACKed, at most two MSS an ACK; after ssthresh, congestion avoidance adds about one MSS an RTT', () => {
  const t = established();
  const mss = 1460;
  assert.is(t.c.cwnd, 10 * mss);
  t.write(100 * mss);
  assert.is(t.drain().length, 10, 'the initial window');
  t.recv({ flags: ACK, ack: t.us(1 + 2 * mss) });
  assert.is(t.c.cwnd, 12 * mss);
  assert.is(t.drain().length, 4, 'two segments for those ACKed and two for the growth');
  t.recv({ flags: ACK, ack: t.us(1 + 6 * mss) });
  assert.is(t.c.cwnd, 14 * mss, 'at most 2 MSS per ACK (RFC 3465 L = 2)');
  t.drain();
  t.c.ssthresh = t.c.cwnd;
  const before = t.c.cwnd;
  t.recv({ flags: ACK, ack: t.us(1 + 7 * mss) });
  assert.is(t.c.cwnd, before + Math.floor((mss * mss) / before), 'congestion avoidance: MSS*MSS/cwnd per ACK');
});

// ===========================================================================
// Retransmission: RTO, Karn, fast retransmit, NewReno

test('RTO (RFC 6298): fires at the RTO, retransmits one segment from SND.UNA with cwnd one MSS and ssthresh half the flight; doubles each time', () => {
  const t = established({ config: { timestamps: false } });
  const mss = 1460;
  assert.is(t.c.rto, 200 * MS, 'srtt 10 ms: the 200 ms floor');
  const t0 = t.env.now;
  t.write(10 * mss);
  assert.is(t.drain().length, 10);
  t.env.now = t0 + 200 * MS;
  t.poll();
  assert.is(t.count('tcp.retransmit-timeout'), 1);
  const r = t.drain();
  assert.is(r.length, 1, 'one segment: cwnd is one MSS');
  expectSeg(r[0], { seq: t.us(1), len: mss });
  assert.equal(r[0].data, bytes(0, mss, ourByte));
  assert.is(t.c.cwnd, mss);
  assert.is(t.c.ssthresh, 5 * mss);
  assert.is(t.c.rto, 400 * MS);
  t.env.now = t0 + 600 * MS;
  t.poll();
  assert.is(t.count('tcp.retransmit-timeout'), 2);
  assert.is(t.c.rto, 800 * MS);
  assert.is(t.c.ssthresh, 5 * mss, 'ssthresh is not halved again on a repeated timeout');
  t.drain();
  // (Polling between deadlines would let the RACK timer resend the hole,
  // which restarts the RTO timer as Linux does; jump from deadline to deadline.)
  t.env.now = t0 + 1400 * MS;
  t.poll();
  assert.is(t.count('tcp.retransmit-timeout'), 3);
  assert.is(t.c.rto, 1600 * MS);
  // An ACK of new data ends the backoff: the next RTO is again the computed one.
  t.recv({ flags: ACK, ack: t.us(1 + mss) });
  assert.is(t.c.cwnd, 2 * mss);
});

test('RTO: the connection gives up as timed-out after dataRetries timeouts', () => {
  const t = established({ config: { dataRetries: 3 } });
  t.write(100);
  t.drain();
  for (let i = 0; i < 50 && t.c.state !== 'CLOSED'; i++) t.pollAtDeadline();
  state(t, 'CLOSED');
  assert.is(t.c.error, 'timed-out');
  assert.is(t.count('tcp.retransmit-timeout'), 3);
  assert.is(t.count('tcp.retransmit-timeout-give-up'), 1);
});

test('RTT without timestamps: a segment ACKed after 30 ms gives a sample (RFC 6298 2)', () => {
  const t = established({ config: { timestamps: false } });
  assert.is(t.c.srtt, 10 * MS);
  t.write(1000);
  t.drain();
  t.advance(30);
  t.recv({ flags: ACK, ack: t.us(1001) });
  assert.is(t.c.srtt, 0.875 * 10 * MS + 0.125 * 30 * MS);
  assert.is(t.c.rttvar, 0.75 * 5 * MS + 0.25 * 20 * MS);
});

test("Karn's algorithm (MUST-18): no RTT sample from a retransmitted segment without timestamps; the backed-off RTO stays until a new sample", () => {
  const t = established({ config: { timestamps: false } });
  const srtt = t.c.srtt;
  const t0 = t.env.now;
  t.write(1000);
  t.drain();
  t.env.now = t0 + 200 * MS;
  t.poll();
  expectSeg(t.next('retransmission'), { seq: t.us(1), len: 1000 });
  t.env.now = t0 + 250 * MS;
  t.recv({ flags: ACK, ack: t.us(1001) });
  assert.is(t.c.srtt, srtt, 'the ACK could be for either transmission');
  assert.is(t.c.rto, 400 * MS, 'the backed-off RTO is kept');
  // New data, not retransmitted: a sample, and the RTO is computed again.
  t.write(1000);
  t.drain();
  t.advance(20);
  t.recv({ flags: ACK, ack: t.us(2001) });
  assert.ok(t.c.srtt !== srtt, 'sampled');
  assert.is(t.c.rto, 200 * MS);
});

test('timestamps (RFC 7323 4): an RTT sample from the echo even for a retransmitted segment', () => {
  const t = established({ peer: { mss: 1460, timestamp: { value: 1, echo: 0 } } });
  const t0 = t.env.now;
  t.write(1000);
  const first = t.next('data');
  t.env.now = t0 + 200 * MS;
  t.poll();
  const rtx = t.next('retransmission');
  assert.ok(rtx.options.timestamp!.value > first.options.timestamp!.value);
  t.env.now = t0 + 230 * MS;
  t.recv({ flags: ACK, ack: t.us(1001), options: { timestamp: { value: 2, echo: rtx.options.timestamp!.value } } });
  assert.is(Math.round(t.c.srtt / MS), Math.round(0.875 * 10 + 0.125 * 30), 'the echo names the retransmission: 30 ms');
});

test('fast retransmit (RFC 5681 3.2): the third duplicate ACK retransmits the first unacknowledged segment; ssthresh = flight / 2', () => {
  const t = established({ config: { timestamps: false, sack: false } });
  const mss = 1460;
  t.write(10 * mss);
  t.drain();
  t.recv({ flags: ACK, ack: t.us(1 + mss) });
  t.drain();
  t.recv({ flags: ACK, ack: t.us(1 + mss) });
  t.recv({ flags: ACK, ack: t.us(1 + mss) });
  t.none('two duplicate ACKs: not yet');
  assert.is(t.c.dupAcks, 2);
  t.recv({ flags: ACK, ack: t.us(1 + mss) });
  assert.is(t.count('tcp.fast-retransmit'), 1);
  const r = t.next('fast retransmission');
  expectSeg(r, { seq: t.us(1 + mss), len: mss });
  assert.equal(r.data, bytes(mss, mss, ourByte));
  assert.ok(t.c.inRecovery);
  const flight = 9 * mss; // 10 sent, 1 acknowledged
  assert.is(t.c.ssthresh, Math.floor(flight / 2));
  assert.is(t.c.cwnd, t.c.ssthresh + 3 * mss);
  // A duplicate ACK with a different window, or with data, is not counted.
  t.recv({ flags: ACK, ack: t.us(1 + mss), window: 60000 });
  assert.is(t.c.dupAcks, 3);
});

test('NewReno (RFC 6582): a partial ACK retransmits the next hole and stays in recovery; a full ACK ends recovery with cwnd <= ssthresh', () => {
  const t = established({ config: { timestamps: false, sack: false } });
  const mss = 1460;
  t.write(10 * mss);
  t.drain();
  for (let i = 0; i < 3; i++) t.recv({ flags: ACK, ack: t.us(1) });
  expectSeg(t.next('fast retransmission'), { seq: t.us(1), len: mss });
  assert.is(t.c.recover, 1 + 10 * mss);
  // Segments 1-3 and 5-10 arrived, 4 was lost too: the ACK covers 3 segments.
  t.recv({ flags: ACK, ack: t.us(1 + 3 * mss) });
  assert.ok(t.c.inRecovery, 'a partial ACK does not end recovery');
  expectSeg(t.next('the next hole'), { seq: t.us(1 + 3 * mss), len: mss });
  t.none();
  t.recv({ flags: ACK, ack: t.us(1 + 10 * mss) });
  assert.not.ok(t.c.inRecovery);
  assert.is(t.count('tcp.recovery-done'), 1);
  assert.ok(t.c.cwnd <= t.c.ssthresh);
  assert.is(t.c.cwnd, 2 * mss, 'min(ssthresh, max(flight, MSS) + MSS) with nothing in flight');
});

test('SACK scoreboard (RFC 6675): SACKed segments above a hole make it lost at once; only the hole is retransmitted', () => {
  const t = established({ config: { timestamps: false }, peer: { mss: 1460, sackPermitted: true } });
  const mss = 1460;
  t.write(10 * mss);
  t.drain();
  // Segment 2 lost; the peer has 1 and 3..6.
  t.recv({ flags: ACK, ack: t.us(1 + mss), options: { sack: [{ left: t.us(1 + 2 * mss), right: t.us(1 + 6 * mss) }] } });
  assert.is(t.count('tcp.sack-recovery'), 1);
  const segs = t.drain();
  assert.ok(segs.length >= 1);
  expectSeg(segs[0], { seq: t.us(1 + mss), len: mss }, 'the hole');
  for (const s of segs) {
    const off = (s.seq - ISS) >>> 0;
    assert.ok(off < 1 + 2 * mss || off >= 1 + 6 * mss, `SACKed data resent: ${show(s)}`);
  }
});

test('tail loss probe: with an RTT known, the last segment is sent again after about two RTTs if nothing is ACKed', () => {
  const t = established();
  t.write(3 * 1460);
  t.drain();
  const d = t.c.nextDeadline();
  assert.ok(d < t.env.now + t.c.rto, 'the probe comes before the RTO');
  t.pollAtDeadline();
  assert.is(t.count('tcp.tail-loss-probe'), 1);
  expectSeg(t.next('probe'), { seq: t.us(1 + 2 * 1460), len: 1460 });
});

// ===========================================================================
// Keepalive

test('keepalive is off by default (MUST-25): an idle connection sends nothing for three hours', () => {
  const t = established();
  assert.not.ok(t.c.keepalive);
  assert.is(t.c.nextDeadline(), Number.POSITIVE_INFINITY);
  t.env.now += 3 * 3600 * S;
  t.poll();
  t.none();
  assert.ok(DEFAULT_CONFIG.keepaliveIdleMs >= 2 * 3600 * 1000, 'the default interval is at least two hours (MUST-28)');
});

test('keepalive (MUST-24, MUST-27): after the idle time a probe <SEQ=SND.NXT-1> without data; an answer resets it', () => {
  const t = established({ config: { keepaliveIdleMs: 10_000, keepaliveIntervalMs: 1000, keepaliveProbes: 3 } });
  const t0 = t.env.now;
  t.c.setKeepalive(true, t.env);
  assert.is(t.c.nextDeadline(), t0 + 10 * S);
  t.env.now = t0 + 10 * S;
  t.poll();
  const p = t.next('probe');
  expectSeg(p, { flags: ACK, seq: t.us(0), ack: t.them(1), len: 0 });
  assert.is(t.count('tcp.keepalive-probe'), 1);
  t.recv({ flags: ACK, ack: t.us(1) });
  assert.is(t.c.nextDeadline(), t.env.now + 10 * S, 'answered: idle again');
  t.c.setKeepalive(false, t.env);
  assert.is(t.c.nextDeadline(), Number.POSITIVE_INFINITY, 'turned off per connection');
});

test('keepalive timeout (MUST-29): only after keepaliveProbes unanswered probes is the connection timed-out', () => {
  const t = established({ config: { keepaliveIdleMs: 10_000, keepaliveIntervalMs: 1000, keepaliveProbes: 3 } });
  const t0 = t.env.now;
  t.c.setKeepalive(true, t.env);
  const times: number[] = [];
  for (let i = 0; i < 10 && t.c.state !== 'CLOSED'; i++) {
    t.pollAtDeadline();
    for (const s of t.drain()) {
      expectSeg(s, { flags: ACK, seq: t.us(0), len: 0 });
      times.push((t.env.now - t0) / S);
    }
  }
  assert.equal(times, [10, 11, 12]);
  state(t, 'CLOSED');
  assert.is(t.env.now - t0, 13 * S);
  assert.is(t.c.error, 'timed-out');
  assert.is(t.count('tcp.keepalive-timeout'), 1);
});

test('keepalive (MUST-26): no probe while sent data is outstanding; the retransmission timer is in charge', () => {
  const t = established({ config: { keepaliveIdleMs: 1000, keepaliveIntervalMs: 100, keepaliveProbes: 2 } });
  t.c.setKeepalive(true, t.env);
  t.write(100);
  t.drain();
  const end = t.env.now + 5 * S;
  while (t.env.now < end && t.c.state === 'ESTABLISHED') {
    t.pollAtDeadline();
    for (const s of t.drain()) assert.ok((s.payload?.len ?? 0) > 0, `a keepalive probe ${show(s)} with data outstanding`);
  }
  assert.is(t.count('tcp.keepalive-probe'), 0);
  state(t, 'ESTABLISHED');
});

// ===========================================================================
// The Stack: listeners, backlog, ISNs

const B_MAC = 0x0200_0000_000b;
const B_IP = 0x0a00_0002;
const P_MAC = 0x0200_0000_00cc;
const P_IP = 0x0a00_0063; // 10.0.0.99
const F_CSUM_VALID = 2;

function stackNode(): Node {
  return new Node('b', defaultConfig(B_MAC, B_IP), new FakePortmap(), 7);
}

function arpRequestFrame(): Uint8Array {
  const b = new Uint8Array(14 + ARP_LEN);
  emitEthernet(b, { dst: 0xffff_ffff_ffff, src: P_MAC, ethertype: ETHERTYPE.ARP });
  emitArp(b, 14, { operation: ARP_REQUEST, senderMac: P_MAC, senderIp: P_IP, targetMac: 0, targetIp: B_IP });
  return b;
}

function tcpFrame(o: { srcPort: number; dstPort: number; seq: number; ack?: number; flags: number; window?: number; options?: TcpOptions; payload?: Uint8Array; dstIp?: number; dstMac?: number }): Uint8Array {
  const options = o.options ?? {};
  const payload = o.payload ?? EMPTY;
  const tcpLen = 20 + optionsLength(options);
  const b = new Uint8Array(14 + 20 + tcpLen + payload.length);
  emitEthernet(b, { dst: o.dstMac ?? B_MAC, src: P_MAC, ethertype: ETHERTYPE.IPV4 });
  emitIpv4(b, 14, { src: P_IP, dst: o.dstIp ?? B_IP, protocol: PROTO.TCP, ttl: 64, ident: 1, dontFragment: true, payloadLen: tcpLen + payload.length });
  emitTcp(b, 34, { srcPort: o.srcPort, dstPort: o.dstPort, seq: o.seq >>> 0, ack: (o.ack ?? 0) >>> 0, flags: o.flags, window: o.window ?? 65535, options, checksum: 0 });
  b.set(payload, 34 + tcpLen);
  return b;
}

/** Deliver frames to the node at `now` and return the TCP segments it sent. */
function deliver(n: Node, now: number, ...frames: Uint8Array[]): TcpHeader[] {
  for (const f of frames) n.inbox.push({ bytes: f, flags: F_CSUM_VALID });
  const out: TcpHeader[] = [];
  for (const f of n.step(now)) {
    const e = parseEthernet(f);
    if (!e || e.ethertype !== ETHERTYPE.IPV4) continue;
    const ip = parseIpv4(f, 14, f.length - 14);
    if (typeof ip === 'string' || ip.protocol !== PROTO.TCP) continue;
    const h = parseTcp(f, 14 + ip.headerLen, ip.totalLen - ip.headerLen);
    if (typeof h !== 'string') out.push(h);
  }
  return out;
}

test('Stack: LISTEN -> SYN-RECEIVED -> ESTABLISHED through a listener; accept() hands over the connection', () => {
  const n = stackNode();
  const l = n.stack.tcpListen(80, 8) as TcpListener;
  assert.type(l, 'object');
  deliver(n, 0, arpRequestFrame());
  const peerIsn = 0x7000_0000;
  const out = deliver(n, 1 * MS, tcpFrame({ srcPort: 40000, dstPort: 80, seq: peerIsn, flags: SYN, options: { mss: 1460 } }));
  assert.is(out.length, 1);
  const sa = out[0];
  assert.is(flagsToString(sa.flags), 'S.');
  assert.is(sa.ack, (peerIsn + 1) >>> 0);
  assert.is(sa.srcPort, 80);
  assert.is(sa.dstPort, 40000);
  assert.is(l.synReceived.size, 1);
  assert.is(n.stack.accept(l), null, 'nothing to accept before the handshake completes');
  deliver(n, 2 * MS, tcpFrame({ srcPort: 40000, dstPort: 80, seq: peerIsn + 1, ack: sa.seq + 1, flags: ACK }));
  assert.is(l.synReceived.size, 0);
  const c = n.stack.accept(l);
  assert.ok(c);
  assert.is(c!.state, 'ESTABLISHED');
  assert.is(c!.ends.remotePort, 40000);
});

test('Stack: a RST for a half-open connection of a listener: the listener forgets it and takes the next SYN', () => {
  const n = stackNode();
  const l = n.stack.tcpListen(80, 1) as TcpListener;
  deliver(n, 0, arpRequestFrame());
  const isn = 0x100;
  deliver(n, 1 * MS, tcpFrame({ srcPort: 40001, dstPort: 80, seq: isn, flags: SYN }));
  assert.is(l.synReceived.size, 1);
  deliver(n, 2 * MS, tcpFrame({ srcPort: 40001, dstPort: 80, seq: isn + 1, flags: RST }));
  assert.is(l.synReceived.size, 0);
  assert.is(n.stack.connections.size, 0);
  const out = deliver(n, 3 * MS, tcpFrame({ srcPort: 40002, dstPort: 80, seq: 0x200, flags: SYN }));
  assert.is(l.synReceived.size, 1, 'the backlog of one has room again');
  assert.is(flagsToString(out[0].flags), 'S.');
});

test('Stack: the listen backlog bounds a SYN flood: SYNs beyond it are dropped and counted as tcp.backlog-full', () => {
  const n = stackNode();
  const l = n.stack.tcpListen(80, 3) as TcpListener;
  deliver(n, 0, arpRequestFrame());
  const syns = Array.from({ length: 10 }, (_, i) => tcpFrame({ srcPort: 30000 + i, dstPort: 80, seq: 1000 * i, flags: SYN }));
  const out = deliver(n, 1 * MS, ...syns);
  assert.is(l.synReceived.size, 3);
  assert.is(out.filter((h) => h.flags === (SYN | ACK)).length, 3, 'SYN-ACKs only for those taken');
  assert.is(n.stack.counters.get('tcp.backlog-full'), 7);
  assert.is(n.stack.connections.size, 3);
  // One completes; not yet accepted, it still takes a place in the backlog.
  const sa = out.find((h) => h.dstPort === 30000)!;
  deliver(n, 2 * MS, tcpFrame({ srcPort: 30000, dstPort: 80, seq: 1, ack: sa.seq + 1, flags: ACK }));
  assert.is(l.ready.length, 1);
  deliver(n, 3 * MS, tcpFrame({ srcPort: 31000, dstPort: 80, seq: 5, flags: SYN }));
  assert.is(n.stack.counters.get('tcp.backlog-full'), 8);
  // Accepting frees the place.
  assert.ok(n.stack.accept(l));
  deliver(n, 4 * MS, tcpFrame({ srcPort: 31001, dstPort: 80, seq: 5, flags: SYN }));
  assert.is(l.synReceived.size, 3);
});

test('Stack: CLOSED port (RFC 9293 3.10.7.1): a SYN gets <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, an ACK gets <SEQ=SEG.ACK><CTL=RST>, a RST nothing', () => {
  const n = stackNode();
  deliver(n, 0, arpRequestFrame());
  let out = deliver(n, 1 * MS, tcpFrame({ srcPort: 40000, dstPort: 81, seq: 0x5000, flags: SYN }));
  assert.is(out.length, 1);
  assert.is(flagsToString(out[0].flags), 'R.');
  assert.is(out[0].seq, 0);
  assert.is(out[0].ack, 0x5001);
  out = deliver(n, 2 * MS, tcpFrame({ srcPort: 40000, dstPort: 81, seq: 0x5001, ack: 0x9999, flags: ACK | PSH, payload: new Uint8Array(10) }));
  assert.is(out.length, 1);
  assert.is(flagsToString(out[0].flags), 'R');
  assert.is(out[0].seq, 0x9999);
  out = deliver(n, 3 * MS, tcpFrame({ srcPort: 40000, dstPort: 81, seq: 0x5001, flags: RST }));
  assert.is(out.length, 0);
});

test('Stack: a SYN to a broadcast address is dropped silently (MUST-57), even for a listening port', () => {
  const n = stackNode();
  const l = n.stack.tcpListen(80, 8) as TcpListener;
  deliver(n, 0, arpRequestFrame());
  for (const [ip, mac] of [
    [0xffff_ffff, 0xffff_ffff_ffff],
    [0x0a00_00ff, 0xffff_ffff_ffff],
    [0x0a00_00ff, B_MAC],
  ]) {
    const out = deliver(n, 1 * MS, tcpFrame({ srcPort: 40000, dstPort: 80, seq: 1, flags: SYN, dstIp: ip, dstMac: mac }));
    assert.is(out.length, 0);
  }
  assert.is(l.synReceived.size, 0);
  assert.is(n.stack.counters.get('drop.tcp-broadcast'), 3);
});

test('Stack: ISNs (RFC 6528, MUST-8, SHLD-1) differ per 4-tuple, advance with a 4 us clock, and differ between stacks (a secret key)', () => {
  const n = stackNode();
  const s = n.stack;
  const e1 = { localIp: B_IP, localPort: 80, remoteIp: P_IP, remotePort: 40000 };
  const e2 = { ...e1, remotePort: 40001 };
  const e3 = { ...e1, remoteIp: P_IP + 1 };
  s.setTime(1 * S);
  const a = s.isn(e1);
  assert.is.not(a, s.isn(e2));
  assert.is.not(a, s.isn(e3));
  assert.is(s.isn(e1), a, 'the same tuple at the same time gives the same ISN');
  s.setTime(1 * S + 4 * MS);
  assert.is((s.isn(e1) - a) >>> 0, 1000, '4 ms = 1000 ticks of 4 us');
  s.setTime(1 * S + 4 * MS + 3999);
  assert.is((s.isn(e1) - a) >>> 0, 1000);
  const other = new Node('x', defaultConfig(B_MAC, B_IP), new FakePortmap(), 8).stack;
  other.setTime(1 * S);
  assert.is.not(other.isn(e1), a, 'another secret, another ISN');
  // A connection's ISS is the ISN of its tuple at the time it opens.
  s.setTime(2 * S);
  const c = s.tcpConnect(P_IP, 5555);
  assert.type(c, 'object');
  const conn = c as TcpConnection;
  assert.is(conn.iss, s.isn(conn.ends));
});

test.run();
