import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  CMD,
  CMD_FLAG,
  ERR,
  INFO,
  MAX_PAYLOAD,
  Negotiation,
  OPT,
  REP,
  TFLAG,
  blockSizes,
  encodeRequest,
  errnoOf,
  greeting,
  maxChunkBytes,
  nextChunk,
  optionReply,
  parseOptionHeader,
  parseRequest,
  plan,
  simpleReply,
  transmissionFlags,
  type ExportInfo,
  type Request,
} from '../src/proto.ts';

const MiB = 1 << 20;
const ns1: ExportInfo = { name: 'ns1', description: 'one', size: 256 * MiB, blockSize: 512, readOnly: false };
const ns2: ExportInfo = { name: 'ns2', description: 'two', size: 64 * MiB, blockSize: 4096, readOnly: true };

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

function be32(b: Uint8Array, at: number): number {
  return Buffer.from(b).readUInt32BE(at);
}

function be16(b: Uint8Array, at: number): number {
  return Buffer.from(b).readUInt16BE(at);
}

/** Option reply fields. */
function rep(b: Uint8Array) {
  return { magic: hex(b.subarray(0, 8)), option: be32(b, 8), type: be32(b, 12), length: be32(b, 16), data: b.subarray(20) };
}

function infoData(name: string, infos: number[]): Uint8Array {
  const b = Buffer.alloc(4 + name.length + 2 + 2 * infos.length);
  b.writeUInt32BE(name.length, 0);
  b.write(name, 4, 'latin1');
  b.writeUInt16BE(infos.length, 4 + name.length);
  infos.forEach((x, i) => b.writeUInt16BE(x, 6 + name.length + 2 * i));
  return new Uint8Array(b);
}

function fixed(): Negotiation {
  const n = new Negotiation([ns1, ns2]);
  assert.ok(n.clientFlags(new Uint8Array([0, 0, 0, 3])));
  return n;
}

test('greeting: NBDMAGIC, IHAVEOPT, FIXED_NEWSTYLE | NO_ZEROES', () => {
  assert.is(hex(greeting()), '4e42444d41474943' + '49484156454f5054' + '0003');
});

test('client flags: known ones accepted, an unknown one ends the negotiation', () => {
  const n = new Negotiation([ns1]);
  assert.ok(n.clientFlags(new Uint8Array([0, 0, 0, 1])));
  assert.ok(n.fixed);
  assert.not.ok(n.noZeroes);
  assert.ok(n.clientFlags(new Uint8Array([0, 0, 0, 3])));
  assert.ok(n.noZeroes);
  assert.not.ok(new Negotiation([ns1]).clientFlags(new Uint8Array([0, 0, 0, 4])));
  assert.not.ok(new Negotiation([ns1]).clientFlags(new Uint8Array([0x80, 0, 0, 1])));
});

test('option header: magic checked, option and length read', () => {
  const b = new Uint8Array(16);
  b.set([0x49, 0x48, 0x41, 0x56, 0x45, 0x4f, 0x50, 0x54, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff]);
  assert.equal(parseOptionHeader(b), { ok: true, option: 7, length: 0xffffffff });
  b[0] = 0;
  assert.is(parseOptionHeader(b).ok, false);
});

test('option reply: magic 0x3e889045565a9, error types keep bit 31', () => {
  const r = rep(optionReply(OPT.GO, REP.ERR_UNSUP, new Uint8Array([1, 2])));
  assert.is(r.magic, '0003e889045565a9');
  assert.is(r.option, 7);
  assert.is(r.type, 0x80000001);
  assert.is(r.length, 2);
  assert.equal([...r.data], [1, 2]);
});

test('NBD_OPT_GO: export info, block sizes, ack, then transmission', () => {
  const n = fixed();
  const res = n.option(OPT.GO, infoData('', [INFO.BLOCK_SIZE]));
  assert.is(res.next, 'transmission');
  assert.is(res.export, ns1);
  const [exp, bs, ack] = res.send.map(rep);
  assert.is(res.send.length, 3);
  assert.is(exp.type, REP.INFO);
  assert.is(be16(exp.data, 0), INFO.EXPORT);
  assert.is(Buffer.from(exp.data).readBigUInt64BE(2), 256n * BigInt(MiB));
  const flags = be16(exp.data, 10);
  assert.is(flags, transmissionFlags(ns1));
  for (const f of [TFLAG.HAS_FLAGS, TFLAG.SEND_FLUSH, TFLAG.SEND_FUA, TFLAG.SEND_TRIM, TFLAG.SEND_WRITE_ZEROES, TFLAG.CAN_MULTI_CONN]) assert.ok(flags & f);
  assert.not.ok(flags & TFLAG.READ_ONLY);
  assert.not.ok(flags & TFLAG.SEND_DF);
  assert.is(bs.type, REP.INFO);
  assert.equal([be16(bs.data, 0), be32(bs.data, 2), be32(bs.data, 6), be32(bs.data, 10)], [INFO.BLOCK_SIZE, 512, 4096, 32 * MiB]);
  assert.is(ack.type, REP.ACK);
  assert.is(ack.length, 0);
});

test('NBD_OPT_INFO by name: name and description on request; negotiation goes on', () => {
  const n = fixed();
  const res = n.option(OPT.INFO, infoData('ns2', [INFO.NAME, INFO.DESCRIPTION]));
  assert.is(res.next, 'options');
  const reps = res.send.map(rep);
  assert.equal(reps.map((r) => r.type), [REP.INFO, REP.INFO, REP.INFO, REP.INFO, REP.ACK]);
  const flags = be16(reps[0].data, 10);
  assert.ok(flags & TFLAG.READ_ONLY);
  assert.not.ok(flags & TFLAG.SEND_TRIM);
  assert.is(Buffer.from(reps[1].data.subarray(2)).toString('latin1'), 'ns2');
  assert.is(be16(reps[2].data, 0), INFO.DESCRIPTION);
  assert.is(Buffer.from(reps[2].data.subarray(2)).toString('latin1'), 'two');
  // Block size always sent; the minimum is the namespace's.
  assert.equal([be32(reps[3].data, 2), be32(reps[3].data, 6), be32(reps[3].data, 10)], [4096, 4096, MAX_PAYLOAD]);
});

test('NBD_OPT_GO: unknown export is NBD_REP_ERR_UNKNOWN; malformed data is NBD_REP_ERR_INVALID', () => {
  const n = fixed();
  let r = n.option(OPT.GO, infoData('nope', []));
  assert.is(r.next, 'options');
  assert.is(rep(r.send[0]).type, REP.ERR_UNKNOWN);
  r = n.option(OPT.GO, new Uint8Array([0, 0, 0]));
  assert.is(rep(r.send[0]).type, REP.ERR_INVALID);
  // The name runs past the data.
  r = n.option(OPT.GO, new Uint8Array([0, 0, 0, 9, 0, 0]));
  assert.is(rep(r.send[0]).type, REP.ERR_INVALID);
  // Says 2 information requests, carries 1.
  const d = infoData('', [1, 2]).subarray(0, 8);
  r = n.option(OPT.GO, d);
  assert.is(rep(r.send[0]).type, REP.ERR_INVALID);
  assert.is(r.next, 'options');
});

test('NBD_OPT_LIST: one NBD_REP_SERVER per export, then ack; data is refused', () => {
  const n = fixed();
  const r = n.option(OPT.LIST, new Uint8Array(0));
  const reps = r.send.map(rep);
  assert.equal(reps.map((x) => x.type), [REP.SERVER, REP.SERVER, REP.ACK]);
  assert.is(be32(reps[0].data, 0), 3);
  assert.is(Buffer.from(reps[0].data.subarray(4)).toString('latin1'), 'ns1');
  assert.is(rep(n.option(OPT.LIST, new Uint8Array(1)).send[0]).type, REP.ERR_INVALID);
});

test('NBD_OPT_ABORT is acked, then the connection closes', () => {
  const r = fixed().option(OPT.ABORT, new Uint8Array(0));
  assert.is(r.next, 'close-after');
  assert.is(rep(r.send[0]).type, REP.ACK);
  assert.is(rep(r.send[0]).option, OPT.ABORT);
});

test('unknown and unsupported options: NBD_REP_ERR_UNSUP, negotiation goes on', () => {
  const n = fixed();
  for (const o of [OPT.STARTTLS, OPT.STRUCTURED_REPLY, OPT.LIST_META_CONTEXT, OPT.SET_META_CONTEXT, OPT.EXTENDED_HEADERS, OPT.PEEK_EXPORT, 999, 0x7fffffff]) {
    const r = n.option(o, new Uint8Array(3));
    assert.is(r.next, 'options');
    assert.is(rep(r.send[0]).type, REP.ERR_UNSUP, `option ${o}`);
    assert.is(rep(r.send[0]).option, o);
  }
  assert.is(n.option(OPT.GO, infoData('', [])).next, 'transmission');
});

test('too-long option data: NBD_REP_ERR_TOO_BIG; endless options: cut off', () => {
  const n = fixed();
  assert.is(rep(n.tooBig(OPT.GO).send[0]).type, REP.ERR_TOO_BIG);
  let last;
  for (let i = 0; i < 300; i++) last = n.option(1000, new Uint8Array(0));
  assert.is(last!.next, 'close');
});

test('NBD_OPT_EXPORT_NAME: size, flags and 124 zeroes (or none with NO_ZEROES); unknown name closes', () => {
  const n = new Negotiation([ns1, ns2]);
  n.clientFlags(new Uint8Array([0, 0, 0, 1]));
  let r = n.option(OPT.EXPORT_NAME, new TextEncoder().encode('ns2'));
  assert.is(r.next, 'transmission');
  assert.is(r.send[0].length, 134);
  assert.is(Buffer.from(r.send[0]).readBigUInt64BE(0), 64n * BigInt(MiB));
  assert.is(be16(r.send[0], 8), transmissionFlags(ns2));
  assert.ok(r.send[0].subarray(10).every((x) => x === 0));
  const m = fixed();
  r = m.option(OPT.EXPORT_NAME, new Uint8Array(0));
  assert.is(r.export, ns1);
  assert.is(r.send[0].length, 10);
  assert.is(m.option(OPT.EXPORT_NAME, new TextEncoder().encode('zz')).next, 'close');
});

test('a client without fixed newstyle: only NBD_OPT_EXPORT_NAME, anything else closes', () => {
  const n = new Negotiation([ns1]);
  n.clientFlags(new Uint8Array(4));
  assert.is(n.option(OPT.LIST, new Uint8Array(0)).next, 'close');
});

// ---- transmission ----------------------------------------------------------

function req(over: Partial<Request>): Request {
  return { magicOk: true, flags: 0, type: CMD.READ, cookieHi: 0xdeadbeef, cookieLo: 0xfeedface, offset: 0, length: 4096, ...over };
}

test('request header: round trip, big-endian, cookie opaque, 64-bit offset', () => {
  const b = encodeRequest({ flags: CMD_FLAG.FUA, type: CMD.WRITE, cookieHi: 0x80000001, cookieLo: 0xffffffff, offset: 2 ** 40 + 512, length: 0x10000 });
  assert.is(hex(b), '25609513' + '0001' + '0001' + '80000001ffffffff' + '0000010000000200' + '00010000');
  assert.equal(parseRequest(b), { magicOk: true, flags: 1, type: 1, cookieHi: 0x80000001, cookieLo: 0xffffffff, offset: 2 ** 40 + 512, length: 0x10000 });
  assert.is(parseRequest(encodeRequest({ magic: 0x25609514, flags: 0, type: 0, cookieHi: 0, cookieLo: 0, offset: 0, length: 0 })).magicOk, false);
  // An offset near 2^64 parses as a huge number: out of range, never wrapped.
  const huge = new Uint8Array(b);
  huge.set([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0x00], 16);
  assert.ok(parseRequest(huge).offset > 2 ** 63);
});

test('simple reply: magic, error, the cookie as sent', () => {
  assert.is(hex(simpleReply(22, 0xdeadbeef, 0x00000001)), '67446698' + '00000016' + 'deadbeef00000001');
});

test('plan: valid commands become block work', () => {
  assert.equal(plan(req({}), ns1), { kind: 'io', op: 'read', offset: 0, length: 4096, fua: false });
  assert.equal(plan(req({ type: CMD.WRITE, flags: CMD_FLAG.FUA, offset: 512, length: 512 }), ns1), { kind: 'io', op: 'write', offset: 512, length: 512, fua: true });
  assert.equal(plan(req({ type: CMD.FLUSH, offset: 0, length: 0 }), ns1), { kind: 'io', op: 'flush', offset: 0, length: 0, fua: false });
  assert.equal(plan(req({ type: CMD.TRIM, length: MAX_PAYLOAD * 4 }), ns1), { kind: 'io', op: 'trim', offset: 0, length: MAX_PAYLOAD * 4, fua: false });
  assert.equal(plan(req({ type: CMD.WRITE_ZEROES, flags: CMD_FLAG.NO_HOLE | CMD_FLAG.FUA }), ns1), { kind: 'io', op: 'zeroes', offset: 0, length: 4096, fua: true });
  // The last block, and a READ of the whole maximum.
  assert.is(plan(req({ offset: ns1.size - 512, length: 512 }), ns1).kind, 'io');
  assert.is(plan(req({ length: MAX_PAYLOAD }), ns1).kind, 'io');
  assert.equal(plan(req({ type: CMD.DISC }), ns1), { kind: 'disc' });
});

test('plan: FUA is accepted on every command, reads and flushes included', () => {
  for (const type of [CMD.READ, CMD.WRITE, CMD.FLUSH, CMD.TRIM, CMD.WRITE_ZEROES]) {
    const p = plan(req({ type, flags: CMD_FLAG.FUA }), ns1);
    assert.is(p.kind, 'io', `command ${type}`);
  }
});

function error(p: ReturnType<typeof plan>) {
  if (p.kind !== 'error') throw new Error(`expected an error, got ${JSON.stringify(p)}`);
  return { errno: p.errno, payload: p.payload, fatal: p.fatal };
}

test('plan: errors per the spec; a refused WRITE still has its payload read', () => {
  // Unknown commands and ones not offered.
  for (const type of [CMD.CACHE, CMD.BLOCK_STATUS, CMD.RESIZE, 9, 0xffff]) assert.equal(error(plan(req({ type }), ns1)), { errno: ERR.EINVAL, payload: 0, fatal: false });
  // Flags not valid for the command.
  assert.equal(error(plan(req({ flags: CMD_FLAG.DF }), ns1)), { errno: ERR.EINVAL, payload: 0, fatal: false });
  assert.equal(error(plan(req({ type: CMD.WRITE, flags: CMD_FLAG.NO_HOLE, length: 512 }), ns1)), { errno: ERR.EINVAL, payload: 512, fatal: false });
  assert.equal(error(plan(req({ type: CMD.WRITE_ZEROES, flags: CMD_FLAG.FAST_ZERO }), ns1)), { errno: ERR.EINVAL, payload: 0, fatal: false });
  // Misaligned.
  assert.equal(error(plan(req({ offset: 1 }), ns1)), { errno: ERR.EINVAL, payload: 0, fatal: false });
  assert.equal(error(plan(req({ length: 4095 }), ns1)), { errno: ERR.EINVAL, payload: 0, fatal: false });
  assert.equal(error(plan(req({ offset: 512 }), ns2)), { errno: ERR.EINVAL, payload: 0, fatal: false });
  assert.equal(error(plan(req({ type: CMD.WRITE, offset: 100, length: 1000 }), ns1)), { errno: ERR.EINVAL, payload: 1000, fatal: false });
  // Zero length.
  assert.equal(error(plan(req({ length: 0 }), ns1)), { errno: ERR.EINVAL, payload: 0, fatal: false });
  // Past the end: EINVAL for reads, ENOSPC for writes (payload still read).
  assert.equal(error(plan(req({ offset: ns1.size, length: 512 }), ns1)), { errno: ERR.EINVAL, payload: 0, fatal: false });
  assert.equal(error(plan(req({ offset: 2 ** 63, length: 512 }), ns1)), { errno: ERR.EINVAL, payload: 0, fatal: false });
  assert.equal(error(plan(req({ type: CMD.WRITE, offset: ns1.size - 512, length: 1024 }), ns1)), { errno: ERR.ENOSPC, payload: 1024, fatal: false });
  assert.equal(error(plan(req({ type: CMD.WRITE_ZEROES, offset: ns1.size, length: 512 }), ns1)), { errno: ERR.ENOSPC, payload: 0, fatal: false });
  assert.equal(error(plan(req({ type: CMD.TRIM, offset: ns1.size, length: 512 }), ns1)), { errno: ERR.ENOSPC, payload: 0, fatal: false });
  // Read-only: EPERM for anything that writes, payload still read.
  assert.equal(error(plan(req({ type: CMD.WRITE, length: 4096 }), ns2)), { errno: ERR.EPERM, payload: 4096, fatal: false });
  assert.equal(error(plan(req({ type: CMD.TRIM }), ns2)), { errno: ERR.EPERM, payload: 0, fatal: false });
  assert.equal(error(plan(req({ type: CMD.WRITE_ZEROES }), ns2)), { errno: ERR.EPERM, payload: 0, fatal: false });
  assert.is(plan(req({}), ns2).kind, 'io');
  assert.is(plan(req({ type: CMD.FLUSH }), ns2).kind, 'io');
});

test('plan: above 32 MiB a READ or WRITE is answered and the connection closes, the payload unread', () => {
  assert.equal(error(plan(req({ length: MAX_PAYLOAD + 512 }), ns1)), { errno: ERR.EOVERFLOW, payload: 0, fatal: true });
  assert.equal(error(plan(req({ type: CMD.WRITE, length: 0xffffffff }), ns1)), { errno: ERR.EINVAL, payload: 0, fatal: true });
});

test('plan: a bad magic cannot be answered', () => {
  assert.is(plan(req({ magicOk: false }), ns1).kind, 'hangup');
});

test('block statuses become NBD errors', () => {
  assert.is(errnoOf('success', 'read'), 0);
  assert.is(errnoOf('write-to-read-only', 'write'), ERR.EPERM);
  assert.is(errnoOf('lba-out-of-range', 'read'), ERR.EINVAL);
  assert.is(errnoOf('lba-out-of-range', 'write'), ERR.ENOSPC);
  assert.is(errnoOf('invalid-field', 'read'), ERR.EINVAL);
  assert.is(errnoOf('internal-error', 'write'), ERR.EIO);
  assert.is(errnoOf('aborted', 'flush'), ERR.EIO);
});

test('chunks: a request split at the transfer limit, blocks and buffer offsets', () => {
  const max = maxChunkBytes(512, 2048); // 1 MiB
  assert.is(max, MiB);
  const start = 3 * MiB;
  const end = start + 2 * MiB + 4096;
  const got = [];
  for (let cur = start; cur < end; ) {
    const c = nextChunk(start, cur, end, 512, max);
    got.push(c);
    cur += c.bytes;
  }
  assert.equal(got, [
    { slba: 6144, nlb: 2048, bufferOffset: 0, bytes: MiB },
    { slba: 8192, nlb: 2048, bufferOffset: MiB, bytes: MiB },
    { slba: 10240, nlb: 8, bufferOffset: 2 * MiB, bytes: 4096 },
  ]);
  // A device without a limit still moves at most 32 MiB per command.
  assert.is(maxChunkBytes(4096, 0xffffffff), MAX_PAYLOAD);
  assert.is(maxChunkBytes(4096, 0), 4096);
});

test('block sizes: minimum is the namespace block, preferred 4096, maximum 32 MiB', () => {
  assert.equal(blockSizes(ns1), [512, 4096, 32 * MiB]);
  assert.equal(blockSizes(ns2), [4096, 4096, 32 * MiB]);
});

test.run();
