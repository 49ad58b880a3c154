/**
 * The interface layer: one Ethernet link with one IPv4 address. It parses
 * received frames (Ethernet, ARP, IPv4, ICMP, UDP, TCP), answers ARP and
 * ping, demultiplexes to sockets, resolves next hops, builds outgoing
 * frames with checksum and segmentation offloads, and runs timers.
 *
 * The core does no I/O: frames come in through `receive`, time through
 * `setTime`; frames, placements and releases go out through the `Output`
 * it fills, which the component (or a test harness) flushes to the link.
 */
import { readU16, readU32 } from '../../lib/ether.ts';
import { NO_OFFLOAD, type Offload, Placements, TxBatch } from '../../lib/linkcodec.ts';
import { ARP_LEN, ARP_REPLY, ARP_REQUEST, emitArp, parseArp } from './wire/arp.ts';
import { checksum, fold, pseudoHeaderSum, sumWords } from './wire/checksum.ts';
import { BROADCAST, emitEthernet, ETH_HEADER_LEN, ETHERTYPE, isUnicast, parseEthernet } from './wire/ethernet.ts';
import { echoReplyChecksum, emitIcmp, ICMP, ICMP_DEST_UNREACHABLE, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_HEADER_LEN, parseIcmp, UNREACH_PORT } from './wire/icmp.ts';
import { emitIpv4, IPV4_MIN_HEADER, parseIpv4, PROTO } from './wire/ipv4.ts';
import { ACK, emitTcp, parseTcp, RST, SYN, TCP_MAX_HEADER, type TcpHeader, type TcpOptions } from './wire/tcp.ts';
import { emitUdp, parseUdp, UDP_HEADER_LEN } from './wire/udp.ts';
import { DEFAULT_CONFIG, TcpConnection, type InSegment, type OutSegment, type TcpConfig, type TcpEnv } from './socket/tcp.ts';
import type { ByteStore } from './storage.ts';

const MS = 1_000_000;
const NEVER = Number.POSITIVE_INFINITY;
/**
 * Most addresses being resolved at once. Every datagram from a new source
 * (spoofed ones too) may start a resolution; past this the oldest is
 * forgotten (a connection still waiting asks again when it retransmits).
 */
const MAX_ARP_PENDING = 256;

/** virtio-net flags of a received frame. */
const F_NEEDS_CSUM = 1;
const F_CSUM_VALID = 2;

export interface StackConfig {
  mac: number;
  ip: number;
  prefixLen: number;
  /** The default gateway, if any (0: none). */
  gateway: number;
  mtu: number;
  /** The link segments TCP (TSO) and fills in checksums. */
  tso: boolean;
  tcp: TcpConfig;
  arpTimeoutMs: number;
  arpRetryMs: number;
  arpRetries: number;
  /** Most entries in the ARP cache. */
  arpCacheSize: number;
  /** Bytes of a UDP socket's receive store. */
  udpBuf: number;
  /** Datagrams a UDP socket keeps before dropping. */
  udpQueue: number;
  /** Take the receive fast path for common segments (`receiveFast`); off only to compare against the general path in tests. */
  fastPath: boolean;
}

export function defaultConfig(mac: number, ip: number, prefixLen = 24, gateway = 0): StackConfig {
  return {
    mac,
    ip,
    prefixLen,
    gateway,
    mtu: 1500,
    tso: true,
    tcp: { ...DEFAULT_CONFIG, maxSegment: 65535 - 40 - 40 },
    arpTimeoutMs: 300_000,
    arpRetryMs: 1000,
    arpRetries: 3,
    arpCacheSize: 1024,
    udpBuf: 256 << 10,
    udpQueue: 256,
    fastPath: true,
  };
}

/** A frame as the link hands it in (a view over a receive batch). */
export interface Frame {
  id: number;
  len: number;
  flags: number;
  gso: number;
  head: Uint8Array;
}

/** Where the stack's output goes, flushed by its owner after each step. */
export class Output {
  readonly tx = new TxBatch();
  readonly placements = new Placements();
  /** Stores whose tail may have moved, to commit after the placements. */
  readonly dirty = new Set<TcpConnection>();

  reset(): void {
    this.tx.reset();
    this.placements.reset();
    this.dirty.clear();
  }
}

/** What the host's portmap said about a bind. */
export type BindResult = 'ok' | 'in-use' | 'forbidden' | 'exhausted' | 'invalid';

/** The stack's ties to the world outside: stores, the portmap, randomness. */
export interface Platform {
  newStore(capacity: number): ByteStore;
  bind(proto: 'tcp' | 'udp', port: number): BindResult;
  /** Bind any free ephemeral port; a number, or the reason none was had. */
  bindEphemeral(proto: 'tcp' | 'udp'): number | BindResult;
  unbind(proto: 'tcp' | 'udp', port: number): void;
  /** A uniformly random u32. */
  random32(): number;
}

export class TcpListener {
  readonly synReceived = new Set<TcpConnection>();
  readonly ready: TcpConnection[] = [];
  closed = false;
  constructor(
    readonly port: number,
    public backlog: number,
  ) {}
}

export interface Datagram {
  srcIp: number;
  srcPort: number;
  /** Stream offset of the payload in the socket's store, and its length. */
  at: number;
  len: number;
}

export class UdpSocket {
  readonly queue: Datagram[] = [];
  /** Stream offset where the next datagram goes in the store. */
  end = 0;
  /** Stream offset up to which the store's tail was advanced (after the placements). */
  pendingTail = 0;
  /**
   * How many datagrams at the front of `queue` are readable: those whose
   * placements were flushed. Counted, not derived from offsets, so an
   * empty datagram is readable too.
   */
  readable = 0;
  constructor(
    readonly port: number,
    readonly store: ByteStore,
  ) {}
}

interface ArpEntry {
  mac: number;
  expires: number;
}

interface ArpPending {
  nextTry: number;
  tries: number;
}

function connKey(remoteIp: number, remotePort: number, localPort: number): string {
  return `${remoteIp}:${remotePort}:${localPort}`;
}

export class Stack implements TcpEnv {
  now = 0;
  readonly config: TcpConfig;
  readonly out = new Output();
  readonly counters = new Map<string, number>();
  readonly connections = new Map<string, TcpConnection>();
  readonly listeners = new Map<number, TcpListener>();
  readonly udp = new Map<number, UdpSocket>();
  private readonly arp = new Map<number, ArpEntry>();
  private readonly arpPending = new Map<number, ArpPending>();
  private ipIdent: number;
  private readonly secret: Uint32Array;
  /**
   * Connections with something to do this turn: a segment arrived, the
   * application read or wrote, or they were just made. `poll` runs these,
   * and every connection only when the earliest timer (`horizon`) is due,
   * so a turn costs what is active, not what is open.
   */
  private readonly touched = new Set<TcpConnection>();
  /** No connection's timer is due before this (host ns). */
  private horizon = 0;
  private challengeWindowStart = 0;
  private challengeCount = 0;
  /** Segments that took the receive fast path. */
  rxFast = 0;
  /** The connection the last segment on the fast path was for (the next is most likely for it too). */
  private lastConn: TcpConnection | null = null;
  /** Our MAC's first two bytes and last four, for the fast path's check. */
  private readonly macHi: number;
  private readonly macLo: number;
  /** Scratch space for headers (Ethernet + IPv4 + TCP with options). */
  private readonly scratch = new Uint8Array(ETH_HEADER_LEN + IPV4_MIN_HEADER + TCP_MAX_HEADER + 64);

  constructor(
    readonly cfg: StackConfig,
    readonly platform: Platform,
  ) {
    this.config = cfg.tcp;
    this.ipIdent = platform.random32() & 0xffff;
    this.secret = new Uint32Array([platform.random32(), platform.random32(), platform.random32(), platform.random32()]);
    this.macHi = Math.floor(cfg.mac / 0x1_0000_0000);
    this.macLo = cfg.mac % 0x1_0000_0000;
  }

  setTime(nowNs: number): void {
    this.now = nowNs;
  }

  count(what: string, n = 1): void {
    this.counters.set(what, (this.counters.get(what) ?? 0) + n);
  }

  // ---------------------------------------------------------------------
  // Receive

  /** Process one received frame. Every frame is released by the owner after the step. */
  receive(f: Frame): void {
    if (this.cfg.fastPath && this.receiveFast(f)) return;
    this.count('rx.frames');
    const eth = parseEthernet(f.head);
    if (!eth) return this.count('drop.malformed');
    if (eth.dst !== this.cfg.mac && eth.dst !== BROADCAST) return this.count('drop.not-ours');
    switch (eth.ethertype) {
      case ETHERTYPE.ARP:
        return this.receiveArp(f);
      case ETHERTYPE.IPV4:
        return this.receiveIpv4(f, eth.src);
      default:
        return this.count('drop.unsupported');
    }
  }

  /**
   * The common case, without the general parsers' objects (in an
   * interpreter each costs microseconds): an IPv4 TCP segment to our MAC
   * and address, no IP options, not a fragment, checksum vouched for by
   * the link, header checksum right, no SYN, RST or FIN, no TCP options or
   * only a timestamp laid out as Linux sends it (NOP NOP TS), for an
   * ESTABLISHED connection. It does what the general path does for such
   * a segment; anything else returns false and takes the general path,
   * which checks and counts it.
   */
  private receiveFast(f: Frame): boolean {
    const b = f.head;
    if (b.length < 54 || b[12] !== 0x08 || b[13] !== 0x00 || b[14] !== 0x45 || b[23] !== PROTO.TCP) return false;
    if ((f.flags & (F_CSUM_VALID | F_NEEDS_CSUM)) === 0) return false;
    if (((b[0] << 8) | b[1]) !== this.macHi || (((b[2] << 24) | (b[3] << 16) | (b[4] << 8) | b[5]) >>> 0) !== this.macLo) return false;
    // Flags and fragment offset: DF alone (no reserved bit, MF or offset).
    if ((b[20] & 0xbf) !== 0 || b[21] !== 0) return false;
    const totalLen = (b[16] << 8) | b[17];
    if (totalLen < 40 || totalLen > f.len - ETH_HEADER_LEN) return false;
    if (readU32(b, 30) !== this.cfg.ip) return false;
    if (b[47] & (SYN | RST | 0x01)) return false;
    const hl = (b[46] >> 4) * 4;
    let options: TcpOptions;
    if (hl === 20) options = {};
    else if (hl === 32 && b.length >= 66 && b[54] === 1 && b[55] === 1 && b[56] === 8 && b[57] === 10) options = { timestamp: { value: readU32(b, 58), echo: readU32(b, 62) } };
    else return false;
    if (hl > totalLen - IPV4_MIN_HEADER) return false;
    const src = readU32(b, 26);
    const srcPort = (b[34] << 8) | b[35];
    const dstPort = (b[36] << 8) | b[37];
    let conn = this.lastConn;
    if (conn === null || conn.ends.remoteIp !== src || conn.ends.remotePort !== srcPort || conn.ends.localPort !== dstPort) {
      conn = this.connections.get(connKey(src, srcPort, dstPort)) ?? null;
      if (conn === null) return false;
      this.lastConn = conn;
    }
    if (conn.state !== 'ESTABLISHED') return false;
    if (checksum(b, ETH_HEADER_LEN, ETH_HEADER_LEN + IPV4_MIN_HEADER) !== 0) return false;
    this.count('rx.frames');
    this.count('tcp.rx-segments');
    const at = ETH_HEADER_LEN + IPV4_MIN_HEADER;
    const hdr: TcpHeader = {
      srcPort,
      dstPort,
      seq: readU32(b, at + 4),
      ack: readU32(b, at + 8),
      flags: b[at + 13],
      window: (b[at + 14] << 8) | b[at + 15],
      headerLen: hl,
      urgent: (b[at + 18] << 8) | b[at + 19],
      options,
    };
    conn.segmentArrives({ hdr, payloadLen: totalLen - IPV4_MIN_HEADER - hl, frameId: f.id, payloadAt: at + hl }, this);
    this.afterSegment(conn, '', 'ESTABLISHED');
    this.rxFast++;
    return true;
  }

  private receiveArp(f: Frame): void {
    const a = parseArp(f.head, ETH_HEADER_LEN);
    if (a === 'truncated') return this.count('drop.malformed');
    if (a === 'unsupported') return this.count('drop.unsupported');
    // The sender's hardware address must be an individual one: learning a
    // group (broadcast, multicast) or zero address would have us unicast IP
    // to every host on the link, or to none.
    if (!isUnicast(a.senderMac) || a.senderMac === 0) return this.count('drop.arp-bad-sender');
    this.count('arp.rx');
    const forUs = a.targetIp === this.cfg.ip;
    // RFC 826: update an existing entry from any ARP; add one only if for us.
    if (a.senderIp !== 0 && (forUs || this.arp.has(a.senderIp))) this.learn(a.senderIp, a.senderMac);
    if (a.operation === ARP_REQUEST && forUs) {
      const b = new Uint8Array(ETH_HEADER_LEN + ARP_LEN);
      emitEthernet(b, { dst: a.senderMac, src: this.cfg.mac, ethertype: ETHERTYPE.ARP });
      emitArp(b, ETH_HEADER_LEN, { operation: ARP_REPLY, senderMac: this.cfg.mac, senderIp: this.cfg.ip, targetMac: a.senderMac, targetIp: a.senderIp });
      this.out.tx.frame(b, NO_OFFLOAD);
      this.count('arp.reply-sent');
    }
  }

  private learn(ip: number, mac: number): void {
    if (!this.arp.has(ip) && this.arp.size >= this.cfg.arpCacheSize) {
      // Forget the oldest entry (Map keeps insertion order).
      const first = this.arp.keys().next().value as number;
      this.arp.delete(first);
    }
    this.arp.delete(ip);
    this.arp.set(ip, { mac, expires: this.now + this.cfg.arpTimeoutMs * MS });
    if (this.arpPending.delete(ip)) {
      // Connections waiting for this hop can go now: run them this turn.
      const viaGateway = ip === this.cfg.gateway;
      for (const c of this.connections.values()) {
        if (c.unresolvedHop) c.unresolvedHop = false;
        if (viaGateway || c.ends.remoteIp === ip) this.touched.add(c);
      }
      this.count('arp.resolved');
    }
  }

  private receiveIpv4(f: Frame, srcMac: number): void {
    const at = ETH_HEADER_LEN;
    const ip = parseIpv4(f.head, at, f.len - at);
    if (typeof ip === 'string') {
      this.count(ip === 'bad-checksum' ? 'drop.bad-checksum' : 'drop.malformed');
      return;
    }
    if (ip.dst !== this.cfg.ip) {
      const bcast = this.cfg.ip | (0xffffffff >>> this.cfg.prefixLen);
      if (ip.dst !== 0xffffffff && ip.dst >>> 0 !== bcast >>> 0) return this.count('drop.not-ours');
    }
    if (this.martianSource(ip.src)) return this.count('drop.martian-source');
    if (ip.moreFragments || ip.fragmentOffset > 0) return this.count('drop.fragment');
    // The L4 checksum is the link's to verify (or the frame never left this machine).
    const l4ok = (f.flags & (F_CSUM_VALID | F_NEEDS_CSUM)) !== 0;
    const l4 = at + ip.headerLen;
    const l4len = ip.totalLen - ip.headerLen;
    switch (ip.protocol) {
      case PROTO.ICMP:
        return this.receiveIcmp(f, ip.src, l4, l4len, l4ok);
      case PROTO.UDP:
        if (!l4ok) return this.count('drop.unverified-checksum');
        return this.receiveUdp(f, ip.src, l4, l4len, ip.dst);
      case PROTO.TCP:
        if (!l4ok) return this.count('drop.unverified-checksum');
        return this.receiveTcp(f, ip.src, l4, l4len, ip.dst === this.cfg.ip);
      default:
        return this.count('drop.unsupported');
    }
    void srcMac;
  }

  /**
   * A source address no datagram from the link may carry (RFC 1122
   * 3.2.1.3: this network, loopback, multicast and reserved, limited and
   * directed broadcast), or our own. Answering one would send to a
   * broadcast address, or to ourselves.
   */
  private martianSource(src: number): boolean {
    const top = src >>> 24;
    if (top === 0 || top === 127 || top >= 224 || src === this.cfg.ip) return true;
    const p = this.cfg.prefixLen;
    if (p > 0 && p < 31) {
      const host = 0xffffffff >>> p;
      if ((src & host) >>> 0 === host && ((src ^ this.cfg.ip) >>> 0) >>> (32 - p) === 0) return true;
    }
    return false;
  }

  private receiveIcmp(f: Frame, src: number, at: number, len: number, l4ok: boolean): void {
    const inHead = f.head.length - at >= len;
    if (!inHead && !l4ok) return this.count('drop.unverified-checksum');
    // The IP length bounds the message even when the link vouches for its
    // checksum (the frame may carry Ethernet padding after it).
    if (len < ICMP_HEADER_LEN) return this.count('drop.malformed');
    const h = parseIcmp(f.head, at, l4ok ? Number.MAX_SAFE_INTEGER : len);
    if (h === 'truncated') return this.count('drop.malformed');
    if (h === 'bad-checksum') return this.count('drop.bad-checksum');
    if (h.type !== ICMP_ECHO_REQUEST) return this.count('icmp.rx-other');
    this.count('icmp.echo-request');
    // Echo reply: new headers, the request's ICMP body gathered from its frame.
    const hdr = new Uint8Array(ETH_HEADER_LEN + IPV4_MIN_HEADER + ICMP_HEADER_LEN);
    const mac = this.nextHopMac(src);
    if (mac === null) return this.count('icmp.reply-unresolved');
    emitEthernet(hdr, { dst: mac, src: this.cfg.mac, ethertype: ETHERTYPE.IPV4 });
    emitIpv4(hdr, ETH_HEADER_LEN, { src: this.cfg.ip, dst: src, protocol: PROTO.ICMP, ttl: 64, ident: this.nextIdent(), dontFragment: false, payloadLen: len });
    const icmpAt = ETH_HEADER_LEN + IPV4_MIN_HEADER;
    hdr[icmpAt] = ICMP_ECHO_REPLY;
    // The code as the request had it (as Linux does): the checksum below
    // is updated for the type alone (RFC 1624).
    hdr[icmpAt + 1] = f.head[at + 1];
    const reqCsum = readU16(f.head, at + ICMP.CHECKSUM);
    // RFC 1624's update can give 0x0000 where summing gives 0xffff (a
    // message of zeros after the type); both are zero in one's complement,
    // but only 0xffff verifies over zeros, so send that.
    const csum = echoReplyChecksum(reqCsum) || 0xffff;
    hdr[icmpAt + 2] = csum >>> 8;
    hdr[icmpAt + 3] = csum & 0xff;
    hdr.set(f.head.subarray(at + 4, at + 8), icmpAt + 4);
    const body = len - ICMP_HEADER_LEN;
    this.out.tx.frame(hdr, NO_OFFLOAD, body > 0 ? [{ frame: f.id, offset: at + ICMP_HEADER_LEN, len: body }] : []);
    this.count('icmp.echo-reply');
  }

  private receiveUdp(f: Frame, src: number, at: number, len: number, dst: number): void {
    const u = parseUdp(f.head, at, len);
    if (typeof u === 'string') return this.count('drop.malformed');
    const sock = this.udp.get(u.dstPort);
    if (!sock) {
      this.count('udp.no-listener');
      if (dst === this.cfg.ip) this.sendUnreachable(f, src, UNREACH_PORT);
      return;
    }
    const payload = u.length - UDP_HEADER_LEN;
    const used = sock.end - (sock.queue.length ? sock.queue[0].at : sock.end);
    if (sock.queue.length >= this.cfg.udpQueue || used + payload > sock.store.capacity) return this.count('udp.rx-full');
    this.out.placements.add(f.id, at + UDP_HEADER_LEN, payload, sock.store.handle, sock.end);
    sock.queue.push({ srcIp: src, srcPort: u.srcPort, at: sock.end, len: payload });
    sock.end += payload;
    this.count('udp.rx');
  }

  /** ICMP destination unreachable with the offending header and 8 bytes (RFC 792, 1122 3.2.2). */
  private sendUnreachable(f: Frame, dst: number, code: number): void {
    const ipAt = ETH_HEADER_LEN;
    const quoteLen = Math.min(f.head.length - ipAt, (f.head[ipAt] & 0xf) * 4 + 8);
    const mac = this.nextHopMac(dst);
    if (mac === null) return;
    const b = new Uint8Array(ETH_HEADER_LEN + IPV4_MIN_HEADER + ICMP_HEADER_LEN + quoteLen);
    emitEthernet(b, { dst: mac, src: this.cfg.mac, ethertype: ETHERTYPE.IPV4 });
    emitIpv4(b, ETH_HEADER_LEN, { src: this.cfg.ip, dst, protocol: PROTO.ICMP, ttl: 64, ident: this.nextIdent(), dontFragment: false, payloadLen: ICMP_HEADER_LEN + quoteLen });
    const icmpAt = ETH_HEADER_LEN + IPV4_MIN_HEADER;
    b.set(f.head.subarray(ipAt, ipAt + quoteLen), icmpAt + ICMP_HEADER_LEN);
    emitIcmp(b, icmpAt, { type: ICMP_DEST_UNREACHABLE, code, ident: 0, seq: 0 }, sumWords(b, icmpAt + ICMP_HEADER_LEN, b.length));
    this.out.tx.frame(b, NO_OFFLOAD);
    this.count('icmp.unreachable-sent');
  }

  private receiveTcp(f: Frame, src: number, at: number, len: number, unicast: boolean): void {
    if (!unicast) return this.count('drop.tcp-broadcast');
    const h = parseTcp(f.head, at, len);
    if (typeof h === 'string') return this.count(`drop.tcp-${h}`);
    this.count('tcp.rx-segments');
    const seg: InSegment = { hdr: h, payloadLen: len - h.headerLen, frameId: f.id, payloadAt: at + h.headerLen };
    const key = connKey(src, h.srcPort, h.dstPort);
    const conn = this.connections.get(key);
    if (conn && conn.state !== 'CLOSED') {
      const before = conn.state;
      conn.segmentArrives(seg, this);
      this.afterSegment(conn, key, before);
      return;
    }
    const listener = this.listeners.get(h.dstPort);
    if (listener && !listener.closed) return this.listen(listener, seg, src);
    // CLOSED (RFC 9293 3.10.7.1): answer with a reset, never to a reset.
    this.count('tcp.no-listener');
    if (h.flags & RST) return;
    this.sendReset(src, h, seg.payloadLen);
  }

  /** LISTEN (RFC 9293 3.10.7.2). */
  private listen(l: TcpListener, seg: InSegment, src: number): void {
    const h = seg.hdr;
    if (h.flags & RST) return;
    if (h.flags & ACK) {
      this.sendReset(src, h, seg.payloadLen);
      return;
    }
    if (!(h.flags & SYN)) return this.count('tcp.listen-no-syn');
    // The backlog bounds both half-open and not-yet-accepted connections:
    // a SYN flood fills it and the rest are dropped and counted.
    if (l.synReceived.size + l.ready.length >= l.backlog) return this.count('tcp.backlog-full');
    const ends = { localIp: this.cfg.ip, localPort: l.port, remoteIp: src, remotePort: h.srcPort };
    const conn = this.newConnection(ends);
    conn.listener = l;
    l.synReceived.add(conn);
    this.connections.set(connKey(src, h.srcPort, l.port), conn);
    this.lastConn = null;
    conn.acceptSyn(seg, this);
    this.noteTimers(conn);
    this.count('tcp.syn-received');
  }

  private afterSegment(conn: TcpConnection, key: string, before: string): void {
    const l = conn.listener as TcpListener | null;
    if (l && before === 'SYN-RECEIVED' && conn.state !== 'SYN-RECEIVED') {
      l.synReceived.delete(conn);
      if (conn.state !== 'CLOSED') l.ready.push(conn);
      if (conn.state === 'CLOSED') conn.listener = null;
    }
    this.out.dirty.add(conn);
    this.touched.add(conn);
    this.noteTimers(conn);
    if (conn.state === 'CLOSED') this.forget(conn, key || connKey(conn.ends.remoteIp, conn.ends.remotePort, conn.ends.localPort));
  }

  /** Keep the timer horizon no later than `conn`'s next deadline. */
  private noteTimers(conn: TcpConnection): void {
    const d = conn.nextDeadline();
    if (d < this.horizon) this.horizon = d;
  }

  /** <SEQ=SEG.ACK><CTL=RST>, or <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>. */
  private sendReset(dst: number, h: TcpHeader, payloadLen: number): void {
    const segLen = payloadLen + (h.flags & SYN ? 1 : 0) + (h.flags & 0x01 ? 1 : 0);
    const seg: OutSegment =
      h.flags & ACK
        ? { flags: RST, seq: h.ack, ack: 0, window: 0, options: {}, payload: null, gsoSize: 0 }
        : { flags: RST | ACK, seq: 0, ack: (h.seq + segLen) >>> 0, window: 0, options: {}, payload: null, gsoSize: 0 };
    if (this.emitTo(dst, h.dstPort, h.srcPort, seg)) this.count('tcp.rst-sent');
  }

  // ---------------------------------------------------------------------
  // TcpEnv

  emit(conn: TcpConnection, seg: OutSegment): boolean {
    const ok = this.emitTo(conn.ends.remoteIp, conn.ends.localPort, conn.ends.remotePort, seg);
    if (!ok && (conn.state === 'SYN-SENT' || conn.state === 'SYN-RECEIVED')) conn.unresolvedHop = true;
    return ok;
  }

  private emitTo(dst: number, srcPort: number, dstPort: number, seg: OutSegment): boolean {
    const mac = this.nextHopMac(dst);
    if (mac === null) return false;
    const b = this.scratch;
    const tcpAt = ETH_HEADER_LEN + IPV4_MIN_HEADER;
    const payloadLen = seg.payload ? seg.payload.len : 0;
    // The TCP header first (its length decides the IP length).
    const tcpLen = emitTcp(b, tcpAt, { srcPort, dstPort, seq: seg.seq, ack: seg.ack, flags: seg.flags, window: seg.window, options: seg.options, checksum: 0 });
    const l4len = tcpLen + payloadLen;
    emitEthernet(b, { dst: mac, src: this.cfg.mac, ethertype: ETHERTYPE.IPV4 });
    emitIpv4(b, ETH_HEADER_LEN, { src: this.cfg.ip, dst, protocol: PROTO.TCP, ttl: 64, ident: this.nextIdent(), dontFragment: true, payloadLen: l4len });
    // Checksum offload: the field carries the pseudo-header sum, the link
    // sums the rest (virtio-net NEEDS_CSUM).
    const pseudo = fold(pseudoHeaderSum(this.cfg.ip, dst, PROTO.TCP, l4len));
    b[tcpAt + 16] = pseudo >>> 8;
    b[tcpAt + 17] = pseudo & 0xff;
    const headerLen = tcpAt + tcpLen;
    const offload: Offload = {
      needsCsum: true,
      csumValid: false,
      gso: seg.gsoSize > 0 && payloadLen > seg.gsoSize ? 'tcpv4' : 'none',
      hdrLen: headerLen,
      gsoSize: seg.gsoSize > 0 && payloadLen > seg.gsoSize ? seg.gsoSize : 0,
      csumStart: tcpAt,
      csumOffset: 16,
    };
    const head = b.slice(0, headerLen);
    this.out.tx.frame(head, offload, seg.payload ? [{ queue: seg.payload.store.handle, offset: seg.payload.offset, len: payloadLen }] : []);
    return true;
  }

  place(frameId: number, offset: number, len: number, store: ByteStore, at: number): void {
    this.out.placements.add(frameId, offset, len, store.handle, at);
  }

  allowChallengeAck(): boolean {
    if (this.now - this.challengeWindowStart >= 1000 * MS) {
      this.challengeWindowStart = this.now;
      this.challengeCount = 0;
    }
    return this.challengeCount++ < this.config.challengeAckLimit;
  }

  private nextIdent(): number {
    this.ipIdent = (this.ipIdent + 1) & 0xffff;
    return this.ipIdent;
  }

  // ---------------------------------------------------------------------
  // ARP resolution

  /** The MAC to send to for `dst`, or null after asking ARP for it. */
  nextHopMac(dst: number): number | null {
    if (dst === 0xffffffff) return BROADCAST;
    const mask = this.cfg.prefixLen === 0 ? 0 : (0xffffffff << (32 - this.cfg.prefixLen)) >>> 0;
    const hop = ((dst & mask) >>> 0) === ((this.cfg.ip & mask) >>> 0) || this.cfg.gateway === 0 ? dst : this.cfg.gateway;
    const e = this.arp.get(hop);
    if (e && e.expires > this.now) return e.mac;
    this.requestArp(hop);
    return null;
  }

  private requestArp(ip: number): void {
    const p = this.arpPending.get(ip);
    if (p && p.nextTry > this.now) return;
    if (p && p.tries >= this.cfg.arpRetries) {
      // Give up for now; start again after a quiet period.
      if (p.nextTry + this.cfg.arpRetryMs * MS * 4 > this.now) return;
      p.tries = 0;
    }
    const b = new Uint8Array(ETH_HEADER_LEN + ARP_LEN);
    emitEthernet(b, { dst: BROADCAST, src: this.cfg.mac, ethertype: ETHERTYPE.ARP });
    emitArp(b, ETH_HEADER_LEN, { operation: ARP_REQUEST, senderMac: this.cfg.mac, senderIp: this.cfg.ip, targetMac: 0, targetIp: ip });
    this.out.tx.frame(b, NO_OFFLOAD);
    const tries = (p?.tries ?? 0) + 1;
    if (!p && this.arpPending.size >= MAX_ARP_PENDING) {
      this.arpPending.delete(this.arpPending.keys().next().value as number);
      this.count('arp.pending-evicted');
    }
    this.arpPending.set(ip, { nextTry: this.now + this.cfg.arpRetryMs * MS, tries });
    this.count('arp.request-sent');
  }

  /** Gratuitous ARP: announce our address (at start, and after a move). */
  announce(): void {
    const b = new Uint8Array(ETH_HEADER_LEN + ARP_LEN);
    emitEthernet(b, { dst: BROADCAST, src: this.cfg.mac, ethertype: ETHERTYPE.ARP });
    emitArp(b, ETH_HEADER_LEN, { operation: ARP_REQUEST, senderMac: this.cfg.mac, senderIp: this.cfg.ip, targetMac: 0, targetIp: this.cfg.ip });
    this.out.tx.frame(b, NO_OFFLOAD);
    this.count('arp.gratuitous-sent');
  }

  /** For tests: the ARP cache's entry for `ip`. */
  arpEntry(ip: number): number | undefined {
    const e = this.arp.get(ip);
    return e && e.expires > this.now ? e.mac : undefined;
  }

  // ---------------------------------------------------------------------
  // Sockets

  private newConnection(ends: TcpConnection['ends']): TcpConnection {
    const c = this.config;
    const conn = new TcpConnection(ends, this.platform.newStore(c.sndBuf), this.platform.newStore(c.rcvBuf), this.isn(ends), this.platform.random32(), c);
    conn.touched = this.touched;
    this.touched.add(conn);
    return conn;
  }

  /** RFC 6528: ISN = M + F(localip, localport, remoteip, remoteport, secretkey). */
  isn(e: TcpConnection['ends']): number {
    const m = Math.floor(this.now / 4000); // a 4-microsecond clock
    return (m + this.keyedHash(e.localIp, e.localPort, e.remoteIp, e.remotePort)) >>> 0;
  }

  /** A keyed mix of the 4-tuple (SipHash-like rounds over 32-bit words). */
  private keyedHash(a: number, b: number, c: number, d: number): number {
    let v0 = this.secret[0] ^ 0x736f6d65;
    let v1 = this.secret[1] ^ 0x646f7261;
    let v2 = this.secret[2] ^ 0x6c796765;
    let v3 = this.secret[3] ^ 0x74656462;
    const round = () => {
      v0 = (v0 + v1) | 0; v1 = (v1 << 5) | (v1 >>> 27); v1 ^= v0; v0 = (v0 << 16) | (v0 >>> 16);
      v2 = (v2 + v3) | 0; v3 = (v3 << 8) | (v3 >>> 24); v3 ^= v2;
      v0 = (v0 + v3) | 0; v3 = (v3 << 7) | (v3 >>> 25); v3 ^= v0;
      v2 = (v2 + v1) | 0; v1 = (v1 << 13) | (v1 >>> 19); v1 ^= v2; v2 = (v2 << 16) | (v2 >>> 16);
    };
    for (const m of [a, (b << 16) | d, c]) {
      v3 ^= m;
      round();
      round();
      v0 ^= m;
    }
    v2 ^= 0xff;
    round();
    round();
    round();
    round();
    return (v0 ^ v1 ^ v2 ^ v3) >>> 0;
  }

  /** Listen on a port (bound in the host's portmap first). */
  tcpListen(port: number, backlog: number): TcpListener | BindResult {
    if (this.listeners.has(port)) return 'in-use';
    const r = this.platform.bind('tcp', port);
    if (r !== 'ok') return r;
    const l = new TcpListener(port, Math.max(1, Math.min(backlog, 4096)));
    this.listeners.set(port, l);
    return l;
  }

  accept(l: TcpListener): TcpConnection | null {
    const c = l.ready.shift() ?? null;
    if (c) c.listener = null;
    return c;
  }

  closeListener(l: TcpListener): void {
    l.closed = true;
    this.listeners.delete(l.port);
    for (const c of [...l.synReceived, ...l.ready]) {
      c.abort(this);
      this.forget(c, connKey(c.ends.remoteIp, c.ends.remotePort, c.ends.localPort));
    }
    this.platform.unbind('tcp', l.port);
  }

  /** Open a connection from an ephemeral port (or `localPort`). */
  tcpConnect(remoteIp: number, remotePort: number, localPort = 0): TcpConnection | BindResult {
    // RFC 9293 MUST-46: no connection to a broadcast or multicast address.
    const top = remoteIp >>> 24;
    const host = this.cfg.prefixLen >= 31 ? 0 : 0xffffffff >>> this.cfg.prefixLen;
    const directed = host !== 0 && ((remoteIp & host) >>> 0) === host && ((remoteIp ^ this.cfg.ip) >>> 0) >>> (32 - this.cfg.prefixLen) === 0;
    if (remoteIp === 0xffffffff || top >= 224 || directed || remoteIp === 0 || remotePort === 0) return 'invalid';
    let port = localPort;
    if (port === 0) {
      const r = this.platform.bindEphemeral('tcp');
      if (typeof r === 'string') return r;
      port = r;
    } else {
      const r = this.platform.bind('tcp', port);
      if (r !== 'ok') return r;
    }
    const key = connKey(remoteIp, remotePort, port);
    if (this.connections.has(key)) return 'in-use';
    const conn = this.newConnection({ localIp: this.cfg.ip, localPort: port, remoteIp, remotePort });
    this.connections.set(key, conn);
    this.lastConn = null;
    conn.connect(this);
    this.out.dirty.add(conn);
    this.noteTimers(conn);
    return conn;
  }

  /** The application is done with a connection: close gracefully, or reset if data was left unread (RFC 9293 3.10.4, as Linux). */
  close(conn: TcpConnection): void {
    if (conn.readable() > 0 && conn.state !== 'CLOSED') {
      conn.abort(this);
      this.count('tcp.close-with-unread-data');
    } else {
      conn.shutdownSend(this);
      conn.detach(this);
    }
    if (conn.state === 'CLOSED') this.forget(conn, connKey(conn.ends.remoteIp, conn.ends.remotePort, conn.ends.localPort));
  }

  private forget(conn: TcpConnection, key: string): void {
    if (this.lastConn === conn) this.lastConn = null;
    if (this.connections.get(key) === conn) {
      this.connections.delete(key);
      // The port goes back to the host unless a listener or another connection still uses it.
      const port = conn.ends.localPort;
      if (!this.listeners.has(port) && ![...this.connections.values()].some((c) => c.ends.localPort === port)) {
        this.platform.unbind('tcp', port);
      }
    }
  }

  udpBind(port: number): UdpSocket | BindResult {
    let p = port;
    if (p === 0) {
      const r = this.platform.bindEphemeral('udp');
      if (typeof r === 'string') return r;
      p = r;
    } else {
      if (this.udp.has(p)) return 'in-use';
      const r = this.platform.bind('udp', p);
      if (r !== 'ok') return r;
    }
    const s = new UdpSocket(p, this.platform.newStore(this.cfg.udpBuf));
    this.udp.set(p, s);
    return s;
  }

  udpClose(s: UdpSocket): void {
    if (this.udp.get(s.port) === s) {
      this.udp.delete(s.port);
      this.platform.unbind('udp', s.port);
    }
  }

  /** Send a datagram whose payload is `data` (built in JavaScript: datagrams here are small). */
  udpSend(s: UdpSocket, dst: number, dstPort: number, data: Uint8Array): 'ok' | 'unresolved' | 'too-big' {
    if (data.length > this.cfg.mtu - IPV4_MIN_HEADER - UDP_HEADER_LEN) return 'too-big';
    const mac = this.nextHopMac(dst);
    if (mac === null) return 'unresolved';
    const b = new Uint8Array(ETH_HEADER_LEN + IPV4_MIN_HEADER + UDP_HEADER_LEN + data.length);
    emitEthernet(b, { dst: mac, src: this.cfg.mac, ethertype: ETHERTYPE.IPV4 });
    const l4len = UDP_HEADER_LEN + data.length;
    emitIpv4(b, ETH_HEADER_LEN, { src: this.cfg.ip, dst, protocol: PROTO.UDP, ttl: 64, ident: this.nextIdent(), dontFragment: false, payloadLen: l4len });
    const at = ETH_HEADER_LEN + IPV4_MIN_HEADER;
    emitUdp(b, at, { srcPort: s.port, dstPort, length: l4len, checksum: fold(pseudoHeaderSum(this.cfg.ip, dst, PROTO.UDP, l4len)) });
    b.set(data, at + UDP_HEADER_LEN);
    this.out.tx.frame(b, { needsCsum: true, csumValid: false, gso: 'none', hdrLen: at + UDP_HEADER_LEN, gsoSize: 0, csumStart: at, csumOffset: 6 });
    this.count('udp.tx');
    return 'ok';
  }

  /** Take the next datagram, reading its payload from the store. */
  udpRecv(s: UdpSocket): { data: Uint8Array; srcIp: number; srcPort: number } | null {
    if (s.readable === 0) return null;
    s.readable--;
    const d = s.queue.shift()!;
    const data = s.store.read(d.len);
    return { data, srcIp: d.srcIp, srcPort: d.srcPort };
  }

  // ---------------------------------------------------------------------
  // Flushing and timers

  /** After the placements reached the host: make newly in-order bytes readable. */
  commitTails(): void {
    for (const c of this.out.dirty) c.commitTail();
    this.out.dirty.clear();
    for (const s of this.udp.values()) {
      if (s.end > s.pendingTail) {
        s.store.advanceTail(s.end);
        s.pendingTail = s.end;
      }
      s.readable = s.queue.length;
    }
  }

  /** After the transmit batch went out: free acknowledged send data (of the connections touched this turn). */
  releaseAcked(): void {
    for (const c of this.touched) c.releaseAcked();
    this.touched.clear();
  }

  /**
   * Run due timers and let connections send what they may: the touched
   * ones, or all of them when the earliest timer is due.
   */
  poll(): void {
    const all = this.now >= this.horizon;
    if (all) this.horizon = NEVER;
    const list = all ? [...this.connections.values()] : [...this.touched];
    for (const c of list) {
      const before = c.state;
      c.poll(this);
      if (all) this.touched.add(c);
      if (c.state === 'CLOSED') {
        const l = c.listener as TcpListener | null;
        if (l && before === 'SYN-RECEIVED') l.synReceived.delete(c);
        this.forget(c, connKey(c.ends.remoteIp, c.ends.remotePort, c.ends.localPort));
      } else {
        this.noteTimers(c);
      }
    }
    // ARP retries for hops that connections still wait on.
    for (const [ip, p] of this.arpPending) {
      if (p.nextTry <= this.now && p.tries < this.cfg.arpRetries) this.requestArp(ip);
    }
  }

  /** When `poll` is next due (host ns; Infinity if nothing is scheduled). */
  nextDeadline(): number {
    let d = this.touched.size > 0 ? this.now : this.horizon;
    for (const p of this.arpPending.values()) if (p.tries < this.cfg.arpRetries) d = Math.min(d, p.nextTry);
    return d;
  }
}
