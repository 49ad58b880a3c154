/**
 * netapp: the TCP/IP stack's test app, one component with the stack linked
 * in. It serves, on the ports its arguments name:
 *
 *   echo=PORT      TCP echo (bytes spliced from receive to send store in the host)
 *   discard=PORT   TCP discard; logs bytes and SHA-256 of each connection
 *   source=PORT    sends source-bytes (default 1 GiB) of pattern seed, then closes
 *   udp-echo=PORT  UDP echo
 *
 * and, with connect=IP:PORT, runs a client that sends send=BYTES of the
 * host's pattern stream (seed=N), reads whatever comes back into a sink
 * that digests it, and logs both SHA-256s when the peer closes. With
 * exit=done the component's run returns when the client is done; with
 * expect=echo the client checks that what came back equals what it sent
 * (both SHA-256s kept by the host) and fails if not.
 *
 * Addressing: ip=A.B.C.D/LEN (required), gateway=A.B.C.D. For tests,
 * crash-after-ms=N makes the component trap N ms after it starts;
 * profile=1 logs where the link loop spends its time, per frame.
 */
import * as link from '../../lib/link.ts';
import { u64 } from '../../lib/abi.ts';
import { args, HostStore, hostPlatform, log, profile, runLink } from '../../tcp-stack/src/component/platform.ts';
import { defaultConfig, Stack, type TcpListener, type UdpSocket } from '../../tcp-stack/src/stack.ts';
import type { TcpConnection } from '../../tcp-stack/src/socket/tcp.ts';
import { ipToString, parseIp } from '../../tcp-stack/src/wire/ipv4.ts';

interface Served {
  conn: TcpConnection;
  kind: 'echo' | 'discard' | 'source';
  sent: number;
  sink?: HostStore;
  logged: boolean;
}

const stats = { accepted: 0, echoed: 0, discarded: 0, sourced: 0, clientSent: 0, clientReceived: 0 };
let stack: Stack | null = null;

/** Thrown to crash the component on purpose (crash-after-ms): it escapes run() and traps. */
class DeliberateCrash extends Error {}

function fail(message: string): { tag: 'failed'; val: string } {
  log(`netapp: ${message}`);
  return { tag: 'failed', val: message };
}

function port(v: string | undefined, what: string): number {
  const p = Number(v);
  if (!Number.isInteger(p) || p < 1 || p > 65535) throw new Error(`${what}=${v}: not a port number (1-65535)`);
  return p;
}

function run(): { tag: 'stopped' } | { tag: 'failed'; val: string } {
  const a = args();
  const one = (k: string) => a.get(k)?.at(-1);
  const ipArg = one('ip');
  if (!ipArg) return fail('no ip=A.B.C.D/LEN argument');
  const [ipText, lenText] = ipArg.split('/');
  let ip: number;
  let gateway = 0;
  try {
    ip = parseIp(ipText);
    if (one('gateway')) gateway = parseIp(one('gateway')!);
  } catch (e) {
    return fail(String((e as Error).message));
  }
  const prefixLen = lenText === undefined ? 24 : Number(lenText);
  if (!Number.isInteger(prefixLen) || prefixLen < 0 || prefixLen > 32) return fail(`ip=${ipArg}: bad prefix length`);

  const info = link.info();
  const cfg = defaultConfig(info.mac, ip, prefixLen, gateway);
  cfg.mtu = info.mtu;
  cfg.tso = info.offloads.tso;
  cfg.tcp.mss = info.mtu - 40;
  cfg.tcp.maxSegment = info.offloads.tso ? Math.min(65535 - 40 - 40, info.maxFrame - 14 - 40 - 40) : info.mtu - 40;
  if (one('rcvbuf')) cfg.tcp.rcvBuf = Number(one('rcvbuf'));
  if (one('sndbuf')) cfg.tcp.sndBuf = Number(one('sndbuf'));
  const s = (stack = new Stack(cfg, hostPlatform));
  const seed = Number(one('seed') ?? '1');
  profile.on = one('profile') === '1';

  const listeners: [TcpListener, Served['kind']][] = [];
  try {
    for (const kind of ['echo', 'discard', 'source'] as const) {
      for (const v of a.get(kind) ?? []) {
        const l = s.tcpListen(port(v, kind), 128);
        if (typeof l === 'string') return fail(`${kind}=${v}: cannot listen: ${l}`);
        listeners.push([l, kind]);
      }
    }
  } catch (e) {
    return fail((e as Error).message);
  }
  let udp: UdpSocket | null = null;
  if (one('udp-echo')) {
    const u = s.udpBind(port(one('udp-echo'), 'udp-echo'));
    if (typeof u === 'string') return fail(`udp-echo: cannot bind: ${u}`);
    udp = u;
  }
  const sourceBytes = Number(one('source-bytes') ?? 2 ** 30);

  // The client.
  let client: TcpConnection | null = null;
  let clientSink: HostStore | null = null;
  let toSend = 0;
  let clientDone = false;
  let clientFailed = '';
  const connect = one('connect');
  if (connect) {
    const [h, p] = connect.split(':');
    let dst: number;
    try {
      dst = parseIp(h);
    } catch (e) {
      return fail(`connect=${connect}: ${(e as Error).message}`);
    }
    const c = s.tcpConnect(dst, port(p, 'connect port'));
    if (typeof c === 'string') return fail(`connect=${connect}: ${c}`);
    client = c;
    if (one('nodelay')) c.nodelay = true;
    (c.sndStore as HostStore).trackDigest();
    clientSink = new HostStore(1 << 20);
    clientSink.trackDigest();
    toSend = Number(one('send') ?? '0');
  }

  log(`netapp: ${ipToString(ip)}/${prefixLen} on ${macText(info.mac)}, mtu ${info.mtu}, tso ${info.offloads.tso}; ${listeners.map(([l, k]) => `${k}:${l.port}`).join(' ') || 'no servers'}${connect ? `; client to ${connect} sending ${toSend} bytes` : ''}`);
  s.announce();
  const served: Served[] = [];
  const exitWhenDone = one('exit') === 'done';
  const crashAfter = one('crash-after-ms');
  const crashAt = crashAfter ? link.now() + Number(crashAfter) * 1e6 : Infinity;

  const app = (): boolean => {
    if (crashAt !== Infinity && link.now() >= crashAt) throw new DeliberateCrash(`deliberate crash after ${crashAfter} ms (crash-after-ms)`);
    for (const [l, kind] of listeners) {
      for (let c = s.accept(l); c; c = s.accept(l)) {
        stats.accepted++;
        const sv: Served = { conn: c, kind, sent: 0, logged: false };
        if (kind === 'discard') {
          sv.sink = new HostStore(1 << 20);
          sv.sink.trackDigest();
        }
        if (kind === 'source') (c.sndStore as HostStore).trackDigest();
        served.push(sv);
      }
    }
    for (let i = served.length - 1; i >= 0; i--) {
      const sv = served[i];
      const c = sv.conn;
      if (sv.kind === 'echo') {
        stats.echoed += c.spliceTo(c, c.readable());
      } else if (sv.kind === 'discard') {
        for (let n = 1; n > 0 && c.readable() > 0; ) {
          n = c.readInto(sv.sink!, c.readable());
          sv.sink!.releaseAll();
          stats.discarded += n;
        }
      } else {
        while (sv.sent < sourceBytes && c.canSend()) {
          const room = Math.min(c.sendRoom(), sourceBytes - sv.sent, 1 << 20);
          if (room <= 0) break;
          const n = (c.sndStore as HostStore).fill(seed, room);
          c.appended(n);
          sv.sent += n;
          stats.sourced += n;
        }
        if (sv.sent >= sourceBytes && c.state === 'ESTABLISHED') s.close(c);
        c.discard(c.readable());
      }
      const eof = c.readable() === 0 && (c.atEof() || c.state === 'CLOSED' || c.state === 'TIME-WAIT');
      if (eof && !sv.logged) {
        sv.logged = true;
        if (sv.kind === 'discard') {
          const d = sv.sink!.digest();
          log(`netapp: discard ${peer(c)} closed after ${d.bytes} bytes, sha256 ${d.hex}`);
        } else if (sv.kind === 'source') {
          log(`netapp: source ${peer(c)} sent ${sv.sent} bytes of pattern ${seed}`);
        } else {
          log(`netapp: echo ${peer(c)} closed after ${stats.echoed} bytes echoed in all`);
        }
        if (c.state !== 'CLOSED') s.close(c);
      }
      if (c.state === 'CLOSED' || c.state === 'TIME-WAIT') served.splice(i, 1);
    }
    if (udp) {
      for (let d = s.udpRecv(udp); d; d = s.udpRecv(udp)) s.udpSend(udp, d.srcIp, d.srcPort, d.data);
    }
    if (client && !clientDone) {
      const c = client;
      while (stats.clientSent < toSend && c.canSend()) {
        const n = (c.sndStore as HostStore).fill(seed, Math.min(c.sendRoom(), toSend - stats.clientSent, 1 << 20));
        if (n === 0) break;
        c.appended(n);
        stats.clientSent += n;
      }
      if (stats.clientSent >= toSend && (c.state === 'ESTABLISHED' || c.state === 'CLOSE-WAIT') && !c.finQueued) c.shutdownSend(s);
      for (let n = 1; n > 0 && c.readable() > 0; ) {
        n = c.readInto(clientSink!, c.readable());
        clientSink!.releaseAll();
        stats.clientReceived += n;
      }
      if (c.readable() === 0 && (c.atEof() || c.state === 'CLOSED' || c.state === 'TIME-WAIT')) {
        clientDone = true;
        c.releaseAcked();
        const sent = (c.sndStore as HostStore).digest();
        const got = clientSink!.digest();
        if (c.error) log(`netapp: client ${connect} failed: ${c.error}`);
        log(`netapp: client ${connect} done: sent ${stats.clientSent} bytes (acknowledged ${sent.bytes}, sha256 ${sent.hex}), received ${got.bytes} bytes (sha256 ${got.hex})`);
        if (one('expect') === 'echo') {
          const same = sent.hex === got.hex && sent.bytes === toSend && got.bytes === toSend;
          log(`netapp: echo check: ${same ? 'verified' : 'MISMATCH'}: ${got.bytes} of ${toSend} bytes came back ${same ? 'identical' : 'different'}`);
          if (!same) clientFailed = `echo check failed: sent ${sent.bytes} bytes (${sent.hex}), received ${got.bytes} (${got.hex})`;
        }
        if (c.error) clientFailed = `client ${connect}: ${c.error}`;
        if (c.state !== 'CLOSED') s.close(c);
      }
    }
    return exitWhenDone && clientDone;
  };
  runLink(s, app);
  return clientFailed ? fail(clientFailed) : { tag: 'stopped' };
}

function peer(c: TcpConnection): string {
  return `${ipToString(c.ends.remoteIp)}:${c.ends.remotePort}`;
}

function macText(mac: number): string {
  const b = [];
  for (let i = 5; i >= 0; i--) b.push(Math.floor(mac / 2 ** (8 * i)) & 0xff);
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}

export const server = {
  run() {
    try {
      return run();
    } catch (e) {
      if (e instanceof DeliberateCrash) {
        log(`netapp: ${e.message}`);
        throw e;
      }
      const err = e as Error;
      return fail(`${err.message}\n${err.stack ?? ''}`);
    }
  },
};

export const control = {
  describe() {
    return { name: 'netapp', version: `0.1.0+${__LIBRETTO_BACKEND__}` };
  },
  stats() {
    const out = Object.entries(stats).map(([name, value]) => ({ name: `app.${name}`, value: u64(value) }));
    if (stack) for (const [name, value] of stack.counters) out.push({ name, value: u64(value) });
    return out;
  },
};
