/**
 * nbd: a Network Block Device server on the POSIX shim, serving the app's
 * block namespaces (`libretto:posix/blockdev`) to Linux's NBD clients
 * (qemu-img, nbdcopy, nbdinfo, fio's nbd engine, nbd-client).
 *
 * One epoll loop, non-blocking sockets, as nbdkit or a C server would run
 * it:
 *
 * - the fixed newstyle handshake on port 10809 (NBD_OPT_GO, _INFO, _LIST,
 *   _ABORT, _EXPORT_NAME; everything else NBD_REP_ERR_UNSUP);
 * - in transmission, many requests in flight per connection, each turned
 *   into block commands (split at the namespace's transfer limit) that
 *   are submitted in one batch per turn of the loop and reaped when the
 *   namespace descriptor turns readable; replies (simple replies) go out
 *   as their commands complete, so possibly out of order, matched by the
 *   request's cookie;
 * - payload bytes never pass through JavaScript: a WRITE's data is
 *   spliced from the socket into an in-memory file (`splice-to-file`),
 *   which the block write takes it from; a READ's data is read by the
 *   block command into an in-memory file and sent from it (`sendfile`).
 *   JavaScript reads the 28-byte request headers and writes the 16-byte
 *   reply headers, nothing else.
 *
 * Exports: one per namespace, named `ns<nsid>`; the empty name is the
 * first one. Arguments: port=PORT (default 10809), max-connections=N
 * (default 64), buffer-mb=MB (default 256: the in-memory files for
 * request data).
 */
import * as zerocopy from 'libretto:posix/zerocopy@0.1.0';
import * as blockdev from 'libretto:posix/blockdev@0.1.0';
import { num, u64 } from '../../../lib/abi.ts';
import { errno, EventLoop, host, io, isAgain, listenTcp, socket } from '../../lib/posix.ts';
import * as P from './proto.ts';
import { BufferPool, sizeClass, type Buf } from './pool.ts';

/** Requests one connection may have in flight before its reading pauses. */
const MAX_INFLIGHT_PER_CONN = 128;
/** Bytes of request data one connection may hold in memfds (one request may always go). */
const CONN_BUFFER_BYTES = 64 << 20;
/** The memfd that refused WRITEs' payloads are read into and dropped. */
const SCRATCH_BYTES = 1 << 20;
/** Header reads per connection per wake, so one busy client cannot starve the rest. */
const READS_PER_WAKE = 256;
/** Reply headers written in one call at most. */
const COALESCE_BYTES = 64 * 1024;

interface Export extends P.ExportInfo {
  nsid: number;
  /** The namespace descriptor (`open-namespace`). */
  fd: number;
  /** The most bytes one block command moves. */
  maxBytes: number;
  /** Whether trim frees anything (then a FUA trim is followed by a flush). */
  deallocate: boolean;
}

type State = 'flags' | 'option' | 'option-data' | 'option-skip' | 'request' | 'payload';

interface Req {
  c: Conn;
  exp: Export;
  op: P.Op;
  cookieHi: number;
  cookieLo: number;
  offset: number;
  length: number;
  fua: boolean;
  buf: Buf | null;
  /** The next byte (export offset) to make a block command of; `end` when all are made. */
  cursor: number;
  end: number;
  /** Block commands submitted and not yet completed. */
  outstanding: number;
  /** The first error (NBD errno) any of its commands got. */
  errno: number;
  /** In `toSubmit`. */
  queued: boolean;
  /** A FUA trim of a namespace that deallocates: a flush follows it. */
  flushAfter: boolean;
  flushing: boolean;
}

/** Output waiting for the socket: header bytes, or a region of a memfd. */
interface Out {
  bytes?: Uint8Array;
  file?: Buf;
  len: number;
  off: number;
}

interface Payload {
  /** The request whose buffer the data goes to; null: read and drop it, then reply `errno`. */
  req: Req | null;
  errno: number;
  cookieHi: number;
  cookieLo: number;
  remaining: number;
  got: number;
}

interface Conn {
  fd: number;
  peer: string;
  state: State;
  /** Bytes of the current header (client flags, option header, request) read so far. */
  rbuf: Uint8Array;
  have: number;
  need: number;
  option: number;
  skip: number;
  neg: P.Negotiation;
  exp: Export | null;
  payload: Payload | null;
  /** A request waiting for a memfd (the connection reads nothing meanwhile). */
  blocked: Req | null;
  /** Requests taken and not yet answered. */
  inflight: number;
  bufBytes: number;
  out: Out[];
  /** Close once everything taken is answered (DISC, ABORT, end of stream, a fatal error). */
  ending: boolean;
  closed: boolean;
  requests: number;
}

const stats = {
  accepted: 0,
  refused: 0,
  closed: 0,
  'closed.protocol': 0,
  'req.read': 0,
  'req.write': 0,
  'req.flush': 0,
  'req.trim': 0,
  'req.zeroes': 0,
  'req.disc': 0,
  'req.error': 0,
  'bytes.read': 0,
  'bytes.written': 0,
  'block.submitted': 0,
  'block.completed': 0,
  'block.errors': 0,
  'block.queue-full': 0,
  'buffer.waits': 0,
  'buffer.create-failed': 0,
  'bug.caught': 0,
  /** Gauges, as of the last turn of the loop. */
  'now.connections': 0,
  'now.buffer-bytes': 0,
  'now.block-inflight': 0,
};

const OPCODE: Record<P.Op, string> = { read: 'read', write: 'write', flush: 'flush', trim: 'deallocate', zeroes: 'write-zeroes' };

export const server = {
  run() {
    const args = new Map(host.args());
    const port = Number(args.get('port') ?? 10809);
    const maxConns = Number(args.get('max-connections') ?? 64);
    const bufferBytes = Number(args.get('buffer-mb') ?? 256) * (1 << 20);

    // ---- the namespaces -------------------------------------------------
    const infos = blockdev.namespaces();
    if (infos.length === 0) {
      const msg = 'nbd: this app has no block namespaces (give it "block": {"namespaces": [...]} in the manifest)';
      host.log(msg);
      return { tag: 'failed' as const, val: msg };
    }
    const exports: Export[] = [];
    const exportByFd = new Map<number, Export>();
    let depth = Infinity;
    for (const ns of infos) {
      const nsid = ns.nsid >>> 0;
      const blockSize = ns.blockSize >>> 0;
      const size = num(ns.blocks) * blockSize;
      const fd = blockdev.openNamespace(nsid);
      const e: Export = {
        name: `ns${nsid}`,
        description: `libretto block namespace ${nsid}: ${size} bytes in ${blockSize}-byte blocks${ns.readOnly ? ', read-only' : ''}`,
        size,
        blockSize,
        readOnly: ns.readOnly,
        nsid,
        fd,
        maxBytes: P.maxChunkBytes(blockSize, ns.maxTransferBlocks >>> 0),
        deallocate: ns.deallocate,
      };
      exports.push(e);
      exportByFd.set(fd, e);
      depth = Math.min(depth, Math.max(1, ns.queueDepth >>> 0));
    }

    const pool = new BufferPool(bufferBytes, (len) => zerocopy.memfdCreate(len), (fd) => io.close(fd));
    const scratch = zerocopy.memfdCreate(SCRATCH_BYTES);
    const loop = new EventLoop();
    let lfd: number;
    try {
      lfd = listenTcp(port);
    } catch (e) {
      const msg = `nbd: cannot listen on port ${port}: ${errno(e) ?? String(e)}`;
      host.log(msg);
      return { tag: 'failed' as const, val: msg };
    }
    loop.listen(lfd);
    for (const e of exports) loop.watch(e.fd);
    host.log(
      `nbd: listening on port ${port}; exports ${exports.map((e) => `${e.name} (${e.size} bytes, ${e.blockSize}-byte blocks${e.readOnly ? ', read-only' : ''})`).join(', ')}; queue depth ${depth}`,
    );

    const conns = new Map<number, Conn>();
    /** Block commands by tag. */
    const tags = new Map<number, Req>();
    let nextTag = 1;
    /** Block commands made and not yet completed (at most `depth`). */
    let inflightIos = 0;
    /** Requests with block commands still to make, oldest first. */
    let toSubmit: Req[] = [];
    /** Block commands made but not yet taken by `submit`, per namespace descriptor. */
    const ready = new Map<number, { tag: number; opcode: string; slba: unknown; nlb: number; fua: boolean; memfd: number; offset: number }[]>();
    /** Connections waiting for a memfd, first come first served. */
    let waiting: Conn[] = [];
    /** Connections with news (replies to send, reading to resume). */
    const touched = new Set<Conn>();

    // ---- connections ----------------------------------------------------

    const closeNow = (c: Conn, why?: string) => {
      if (c.closed) return;
      c.closed = true;
      conns.delete(c.fd);
      loop.close(c.fd);
      stats.closed++;
      if (why) {
        stats['closed.protocol']++;
        host.log(`nbd: ${c.peer}: closed: ${why}`);
      }
      for (const o of c.out) if (o.file) pool.release(o.file);
      c.out = [];
      // A WRITE whose payload was still arriving was never submitted.
      if (c.payload?.req?.buf) {
        pool.release(c.payload.req.buf);
        c.payload.req.buf = null;
      }
      c.payload = null;
      c.blocked = null;
      // Requests on the device finish on their own; `finish` releases their memfds.
    };

    const canRead = (c: Conn) =>
      !c.closed && !c.ending && c.blocked === null && (c.state !== 'request' || c.inflight < MAX_INFLIGHT_PER_CONN);

    const send = (c: Conn, bytes: Uint8Array) => {
      c.out.push({ bytes, len: bytes.length, off: 0 });
    };

    const reply = (c: Conn, err: number, hi: number, lo: number) => send(c, P.simpleReply(err, hi, lo));

    /** Write what the connection has queued; false if it was closed. */
    const flush = (c: Conn): boolean => {
      while (c.out.length > 0) {
        const o = c.out[0];
        try {
          if (o.bytes) {
            // Consecutive headers go out in one write.
            let data = o.off ? o.bytes.subarray(o.off) : o.bytes;
            let k = 1;
            while (k < c.out.length && c.out[k].bytes && data.length + c.out[k].len <= COALESCE_BYTES) k++;
            if (k > 1) {
              const all = new Uint8Array(c.out.slice(0, k).reduce((n, x) => n + x.len - x.off, 0));
              let at = 0;
              for (let i = 0; i < k; i++) {
                const x = c.out[i];
                all.set(x.off ? x.bytes!.subarray(x.off) : x.bytes!, at);
                at += x.len - x.off;
              }
              data = all;
            }
            let n = io.write(c.fd, data);
            if (n === 0) break;
            while (n > 0) {
              const x = c.out[0];
              const take = Math.min(n, x.len - x.off);
              x.off += take;
              n -= take;
              if (x.off === x.len) c.out.shift();
            }
            if (c.out.length > 0 && c.out[0].bytes && c.out[0].off > 0) break; // the socket is full
          } else {
            const f = o.file!;
            const n = zerocopy.sendfile(c.fd, f.fd, o.off, o.len - o.off);
            if (n === 0) break;
            o.off += n;
            stats['bytes.read'] += n;
            if (o.off < o.len) break;
            c.out.shift();
            pool.release(f);
            c.bufBytes -= f.size;
          }
        } catch (e) {
          if (isAgain(e)) break;
          closeNow(c);
          return false;
        }
      }
      return true;
    };

    /** Close a connection that is ending once it owes nothing more. */
    const maybeEnd = (c: Conn) => {
      if (c.closed || !c.ending || c.inflight > 0 || c.blocked || c.out.length > 0 || c.state === 'payload') return;
      try {
        socket.shutdown(c.fd, 'shut-wr');
      } catch {
        // the peer may be gone
      }
      closeNow(c);
    };

    const updateInterest = (c: Conn) => {
      if (c.closed) return;
      loop.interest(c.fd, canRead(c), c.out.length > 0);
    };

    // ---- requests ---------------------------------------------------------

    const allocFor = (c: Conn, r: Req): boolean => {
      const len = r.length;
      if (c.bufBytes > 0 && c.bufBytes + sizeClass(len) > CONN_BUFFER_BYTES) return false;
      let b: Buf | null;
      try {
        b = pool.alloc(len);
      } catch (e) {
        // The stack has no memory for another in-memory file: wait for
        // others to be released, unless none is held (see serviceWaiting).
        stats['buffer.create-failed']++;
        return false;
      }
      if (!b) return false;
      r.buf = b;
      c.bufBytes += b.size;
      return true;
    };

    const releaseBuf = (r: Req) => {
      if (!r.buf) return;
      pool.release(r.buf);
      r.c.bufBytes -= r.buf.size;
      r.buf = null;
    };

    const enqueue = (r: Req) => {
      r.queued = true;
      toSubmit.push(r);
    };

    /** A request's data is in place (or it needs none): to the block queue, or read its payload first. */
    const begin = (c: Conn, r: Req) => {
      if (r.op === 'write') {
        c.state = 'payload';
        c.payload = { req: r, errno: 0, cookieHi: r.cookieHi, cookieLo: r.cookieLo, remaining: r.length, got: 0 };
      } else enqueue(r);
    };

    /** Every block command of `r` completed: answer it. */
    const finish = (r: Req) => {
      const c = r.c;
      if (r.flushAfter && r.errno === 0 && !r.flushing && !c.closed) {
        r.flushing = true;
        r.cursor = 0;
        r.end = 1;
        enqueue(r);
        return;
      }
      if (r.errno !== 0) stats['req.error']++;
      if (c.closed) {
        releaseBuf(r);
        return;
      }
      c.inflight--;
      reply(c, r.errno, r.cookieHi, r.cookieLo);
      if (r.op === 'read' && r.errno === 0) {
        // The memfd goes with the reply and is released once sent.
        c.out.push({ file: r.buf!, len: r.length, off: 0 });
        r.buf = null;
      } else releaseBuf(r);
      touched.add(c);
    };

    const onRequest = (c: Conn) => {
      const q = P.parseRequest(c.rbuf);
      const e = c.exp!;
      const p = P.plan(q, e);
      switch (p.kind) {
        case 'hangup':
          closeNow(c, p.why);
          return;
        case 'disc':
          stats['req.disc']++;
          c.ending = true;
          return;
        case 'error':
          stats['req.error']++;
          if (p.payload > 0) {
            c.state = 'payload';
            c.payload = { req: null, errno: p.errno, cookieHi: q.cookieHi, cookieLo: q.cookieLo, remaining: p.payload, got: 0 };
            return;
          }
          reply(c, p.errno, q.cookieHi, q.cookieLo);
          if (p.fatal) {
            host.log(`nbd: ${c.peer}: ${p.why}: answered, then the connection closes`);
            stats['closed.protocol']++;
            c.ending = true;
          }
          return;
        case 'io': {
          stats[`req.${p.op}`]++;
          c.requests++;
          c.inflight++;
          const r: Req = {
            c,
            exp: e,
            op: p.op,
            cookieHi: q.cookieHi,
            cookieLo: q.cookieLo,
            offset: p.offset,
            length: p.length,
            fua: p.fua,
            buf: null,
            cursor: p.op === 'flush' ? 0 : p.offset,
            end: p.op === 'flush' ? 1 : p.offset + p.length,
            outstanding: 0,
            errno: 0,
            queued: false,
            flushAfter: p.op === 'trim' && p.fua && e.deallocate,
            flushing: false,
          };
          if ((p.op === 'read' || p.op === 'write') && !allocFor(c, r)) {
            stats['buffer.waits']++;
            c.blocked = r;
            waiting.push(c);
            return;
          }
          begin(c, r);
        }
      }
    };

    const onOption = (c: Conn, res: P.OptionResult) => {
      for (const b of res.send) send(c, b);
      switch (res.next) {
        case 'options':
          c.state = 'option';
          c.need = P.OPTION_HEADER_BYTES;
          break;
        case 'transmission':
          c.exp = exports.find((x) => x.name === res.export!.name)!;
          c.state = 'request';
          c.need = P.REQUEST_BYTES;
          break;
        case 'close-after':
          c.ending = true;
          break;
        case 'close':
          flush(c);
          closeNow(c, res.why ?? 'negotiation ended');
          break;
      }
    };

    /** A complete header (or option data) is in `rbuf`. */
    const onMessage = (c: Conn) => {
      switch (c.state) {
        case 'flags':
          if (!c.neg.clientFlags(c.rbuf)) {
            closeNow(c, 'unknown client flags');
            return;
          }
          c.state = 'option';
          c.need = P.OPTION_HEADER_BYTES;
          return;
        case 'option': {
          const h = P.parseOptionHeader(c.rbuf);
          if (!h.ok) {
            closeNow(c, 'bad option magic');
            return;
          }
          c.option = h.option;
          if (h.length > P.MAX_OPTION_DATA) {
            c.state = 'option-skip';
            c.skip = h.length;
          } else if (h.length === 0) {
            onOption(c, c.neg.option(h.option, new Uint8Array(0)));
          } else {
            c.state = 'option-data';
            c.rbuf = new Uint8Array(h.length);
            c.need = h.length;
          }
          return;
        }
        case 'option-data': {
          const data = c.rbuf;
          c.rbuf = new Uint8Array(P.REQUEST_BYTES);
          onOption(c, c.neg.option(c.option, data));
          return;
        }
        case 'request':
          onRequest(c);
          return;
      }
    };

    /** Move a WRITE's payload from the socket into its memfd; false when nothing more can move now. */
    const pumpPayload = (c: Conn): boolean => {
      const p = c.payload!;
      const fd = p.req ? p.req.buf!.fd : scratch;
      const off = p.req ? p.got : 0;
      const count = p.req ? p.remaining : Math.min(p.remaining, SCRATCH_BYTES);
      let n: number;
      try {
        n = zerocopy.spliceToFile(c.fd, fd, off, count);
      } catch (e) {
        if (isAgain(e)) return false;
        closeNow(c);
        return false;
      }
      if (n === 0) {
        closeNow(c, 'end of stream inside a write payload');
        return false;
      }
      p.got += n;
      p.remaining -= n;
      stats['bytes.written'] += n;
      if (p.remaining > 0) return true;
      c.payload = null;
      c.state = 'request';
      c.need = P.REQUEST_BYTES;
      c.have = 0;
      if (p.req) enqueue(p.req);
      else reply(c, p.errno, p.cookieHi, p.cookieLo);
      return true;
    };

    /** Read and act on what a connection sent, as far as it may go now. */
    const pump = (c: Conn) => {
      for (let i = 0; i < READS_PER_WAKE && canRead(c); i++) {
        if (c.state === 'payload') {
          if (!pumpPayload(c)) break;
          continue;
        }
        let data: Uint8Array;
        try {
          const want = c.state === 'option-skip' ? Math.min(c.skip, P.MAX_OPTION_DATA) : c.need - c.have;
          data = io.read(c.fd, want);
        } catch (e) {
          if (isAgain(e)) break;
          closeNow(c);
          return;
        }
        if (data.length === 0) {
          // The client closed its side: answer what it asked, then close.
          c.ending = true;
          break;
        }
        if (c.state === 'option-skip') {
          c.skip -= data.length;
          if (c.skip === 0) onOption(c, c.neg.tooBig(c.option));
          continue;
        }
        c.rbuf.set(data, c.have);
        c.have += data.length;
        if (c.have < c.need) continue;
        c.have = 0;
        onMessage(c);
      }
      if (c.closed) return;
      if (!flush(c)) return;
      maybeEnd(c);
      updateInterest(c);
    };

    // ---- the block queue --------------------------------------------------

    const onCompletion = (tag: number, status: string) => {
      const r = tags.get(tag);
      if (!r) return;
      tags.delete(tag);
      inflightIos--;
      r.outstanding--;
      stats['block.completed']++;
      if (status !== 'success') {
        stats['block.errors']++;
        if (r.errno === 0) r.errno = P.errnoOf(status, r.flushing ? 'flush' : r.op);
      }
      if (r.outstanding === 0 && !r.queued) finish(r);
    };

    const reapAll = (fd: number) => {
      for (let i = 0; i < 64; i++) {
        const got = blockdev.reap(fd, 256);
        for (const d of got) onCompletion(d.tag >>> 0, d.status);
        if (got.length < 256) return;
      }
    };

    /** Make block commands of queued requests while the queue has room, and submit them, one call per namespace. */
    const submitPending = () => {
      let room = depth - inflightIos;
      let i = 0;
      for (; i < toSubmit.length && room > 0; ) {
        const r = toSubmit[i];
        if (r.c.closed || r.errno !== 0) r.cursor = r.end; // nothing more of it is needed
        if (r.cursor >= r.end) {
          r.queued = false;
          i++;
          if (r.outstanding === 0) finish(r);
          continue;
        }
        const tag = nextTag;
        nextTag = nextTag >= 0x3fffffff ? 1 : nextTag + 1;
        const e = r.exp;
        let io: { tag: number; opcode: string; slba: unknown; nlb: number; fua: boolean; memfd: number; offset: number };
        if (r.op === 'flush' || r.flushing) {
          io = { tag, opcode: 'flush', slba: u64(0), nlb: 0, fua: false, memfd: 0, offset: 0 };
          r.cursor = r.end;
        } else {
          const ch = P.nextChunk(r.offset, r.cursor, r.end, e.blockSize, e.maxBytes);
          r.cursor += ch.bytes;
          const moves = r.op === 'read' || r.op === 'write';
          io = {
            tag,
            opcode: OPCODE[r.op],
            slba: u64(ch.slba),
            nlb: ch.nlb,
            fua: r.fua && (r.op === 'write' || r.op === 'zeroes'),
            memfd: moves ? r.buf!.fd : 0,
            offset: moves ? ch.bufferOffset : 0,
          };
        }
        tags.set(tag, r);
        r.outstanding++;
        inflightIos++;
        room--;
        let list = ready.get(e.fd);
        if (!list) ready.set(e.fd, (list = []));
        list.push(io);
        if (r.cursor >= r.end) {
          r.queued = false;
          i++;
        }
      }
      if (i > 0) toSubmit = toSubmit.slice(i);
      for (const [fd, list] of ready) {
        if (list.length === 0) continue;
        try {
          blockdev.submit(fd, list as never);
          stats['block.submitted'] += list.length;
          ready.set(fd, []);
        } catch (err) {
          if (isAgain(err)) {
            // The queue is fuller than we counted: they go with the next turn.
            stats['block.queue-full']++;
            continue;
          }
          ready.set(fd, []);
          for (const x of list) onCompletion(x.tag, 'internal-error');
        }
      }
    };

    /** Give waiting connections memfds, in order, as far as they go. */
    const serviceWaiting = () => {
      while (waiting.length > 0) {
        const c = waiting[0];
        if (c.closed || !c.blocked) {
          waiting.shift();
          continue;
        }
        const r = c.blocked;
        if (!allocFor(c, r)) {
          if (pool.inUse === 0) {
            // Nothing will be released to wait for: the host refuses memory.
            closeNow(c, `no memory for a ${r.length}-byte request`);
            continue;
          }
          return;
        }
        waiting.shift();
        c.blocked = null;
        begin(c, r);
        touched.add(c);
      }
    };

    /** Send what completed, close what ended, and watch for what each connection can take next. */
    const service = (c: Conn) => {
      if (c.closed || !flush(c)) return;
      maybeEnd(c);
      // Level-triggered: a connection that may read again is reported
      // readable on the next wait if its client sent more meanwhile.
      updateInterest(c);
    };

    /**
     * With no connection and no command left, every memfd must be back in
     * the pool and every queue slot free; say so in the log if not (the
     * integration test looks for it).
     */
    let idleChecked = true;
    const checkIdle = () => {
      if (conns.size > 0) {
        idleChecked = false;
        return;
      }
      if (idleChecked || tags.size > 0 || toSubmit.length > 0) return;
      idleChecked = true;
      if (pool.inUse !== 0 || inflightIos !== 0 || waiting.some((c) => !c.closed)) {
        host.log(`nbd: BUG: idle with ${pool.inUse} bytes of memfds in use, ${inflightIos} block commands counted in flight`);
      }
    };

    const settle = () => {
      // Sending replies frees memfds that waiting connections need: a few rounds.
      for (let round = 0; round < 4; round++) {
        serviceWaiting();
        submitPending();
        if (touched.size === 0) break;
        const list = [...touched];
        touched.clear();
        for (const c of list) service(c);
      }
      checkIdle();
      stats['now.connections'] = conns.size;
      stats['now.buffer-bytes'] = pool.total;
      stats['now.block-inflight'] = inflightIos;
    };

    /**
     * A bug in serving one connection (an exception nothing above
     * expected) closes that connection and is logged; it does not take
     * the server and every other client down.
     */
    const guard = (what: string, c: Conn | undefined, f: () => void) => {
      try {
        f();
      } catch (e) {
        stats['bug.caught']++;
        host.log(`nbd: BUG: ${what}: ${(e as Error)?.stack ?? String(e)}`);
        if (c) closeNow(c, 'internal error');
      }
    };

    loop.run({
      onAccept(fd) {
        for (;;) {
          let cfd: number;
          let peer: { addr: [number, number, number, number]; port: number };
          try {
            [cfd, peer] = socket.accept(fd) as [number, typeof peer];
          } catch {
            return;
          }
          if (conns.size >= maxConns) {
            stats.refused++;
            loop.close(cfd);
            continue;
          }
          stats.accepted++;
          io.setNonblocking(cfd, true);
          socket.setsockopt(cfd, 'tcp-nodelay', 1);
          const c: Conn = {
            fd: cfd,
            peer: `${peer.addr.join('.')}:${peer.port}`,
            state: 'flags',
            rbuf: new Uint8Array(P.REQUEST_BYTES),
            have: 0,
            need: 4,
            option: 0,
            skip: 0,
            neg: new P.Negotiation(exports),
            exp: null,
            payload: null,
            blocked: null,
            inflight: 0,
            bufBytes: 0,
            out: [],
            ending: false,
            closed: false,
            requests: 0,
          };
          conns.set(cfd, c);
          send(c, P.greeting());
          guard('accept', c, () => pump(c));
        }
      },
      onReadable(fd) {
        if (exportByFd.has(fd)) {
          guard('reap', undefined, () => reapAll(fd));
          return;
        }
        const c = conns.get(fd);
        if (c) guard('read', c, () => pump(c));
      },
      onWritable(fd) {
        const c = conns.get(fd);
        if (c) guard('write', c, () => service(c));
      },
      afterEvents: () => guard('settle', undefined, settle),
    });
    for (const c of [...conns.values()]) closeNow(c);
    loop.close(lfd);
    return { tag: 'stopped' as const };
  },
};

export const control = {
  describe() {
    return { name: 'nbd', version: `0.1.0+${__LIBRETTO_BACKEND__}` };
  },
  stats() {
    return Object.entries(stats).map(([name, value]) => ({ name, value: u64(value) }));
  },
};
