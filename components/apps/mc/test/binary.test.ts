import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { HEADER, OP, STATUS, parseHeader } from '../src/binary.ts';
import { Server, Session } from '../src/session.ts';
import { Sink } from '../src/sink.ts';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const unhex = (s: string) => new Uint8Array(Buffer.from(s.replace(/\s+/g, ''), 'hex'));

function req(opcode: number, o: { key?: string; extras?: Uint8Array; value?: Uint8Array | string; opaque?: number; cas?: bigint; magic?: number } = {}): Uint8Array {
  const key = Buffer.from(o.key ?? '', 'latin1');
  const extras = o.extras ?? new Uint8Array(0);
  const value = typeof o.value === 'string' ? Buffer.from(o.value, 'latin1') : (o.value ?? new Uint8Array(0));
  const b = Buffer.alloc(HEADER + extras.length + key.length + value.length);
  b[0] = o.magic ?? 0x80;
  b[1] = opcode;
  b.writeUInt16BE(key.length, 2);
  b[4] = extras.length;
  b.writeUInt32BE(extras.length + key.length + value.length, 8);
  b.writeUInt32BE(o.opaque ?? 0, 12);
  b.writeBigUInt64BE(o.cas ?? 0n, 16);
  Buffer.from(extras).copy(b, HEADER);
  key.copy(b, HEADER + extras.length);
  Buffer.from(value).copy(b, HEADER + extras.length + key.length);
  return new Uint8Array(b);
}

const setExtras = (flags: number, exptime: number) => {
  const b = Buffer.alloc(8);
  b.writeUInt32BE(flags, 0);
  b.writeUInt32BE(exptime, 4);
  return new Uint8Array(b);
};
const deltaExtras = (delta: bigint, initial: bigint, exptime: number) => {
  const b = Buffer.alloc(20);
  b.writeBigUInt64BE(delta, 0);
  b.writeBigUInt64BE(initial, 8);
  b.writeUInt32BE(exptime, 16);
  return new Uint8Array(b);
};
const u32Extras = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v, 0);
  return new Uint8Array(b);
};

interface Reply {
  magic: number;
  opcode: number;
  keylen: number;
  extlen: number;
  status: number;
  bodylen: number;
  opaque: number;
  cas: bigint;
  extras: Buffer;
  key: string;
  value: Buffer;
}

function replies(b: Uint8Array): Reply[] {
  const buf = Buffer.from(b);
  const out: Reply[] = [];
  let p = 0;
  while (p < buf.length) {
    const keylen = buf.readUInt16BE(p + 2);
    const extlen = buf[p + 4];
    const bodylen = buf.readUInt32BE(p + 8);
    out.push({
      magic: buf[p],
      opcode: buf[p + 1],
      keylen,
      extlen,
      status: buf.readUInt16BE(p + 6),
      bodylen,
      opaque: buf.readUInt32BE(p + 12),
      cas: buf.readBigUInt64BE(p + 16),
      extras: buf.subarray(p + 24, p + 24 + extlen),
      key: buf.subarray(p + 24 + extlen, p + 24 + extlen + keylen).toString('latin1'),
      value: buf.subarray(p + 24 + extlen + keylen, p + 24 + bodylen),
    });
    p += 24 + bodylen;
  }
  assert.is(p, buf.length, 'replies end on a boundary');
  return out;
}

function conn(srv = new Server({ now: 1_000_000 })) {
  const s = new Session(srv);
  const out = new Sink(64);
  return {
    srv,
    s,
    /** Feed bytes; return the replies written (and clear them). */
    send(...reqs: Uint8Array[]): Uint8Array {
      const all = Buffer.concat(reqs.map((r) => Buffer.from(r)));
      const used = s.feed(new Uint8Array(all), 0, all.length, out);
      assert.is(used, all.length, 'every byte used');
      const r = out.view().slice();
      out.consume(out.len);
      return r;
    },
  };
}

// ---- the protocol draft's own examples, byte for byte ------------------------

test('the draft example: Get "Hello" -> flags 0xdeadbeef, "World", CAS 1', () => {
  const c = conn();
  // Add "Hello" = "World", flags 0xdeadbeef, expiry 3600 (the draft's Add example; CAS 1 as the first item).
  const add = c.send(unhex('80 02 0005 08 00 0000 00000012 00000000 0000000000000000 deadbeef 00000e10 48656c6c6f 576f726c64'));
  assert.is(hex(add), hex(unhex('81 02 0000 00 00 0000 00000000 00000000 0000000000000001')));
  const get = c.send(unhex('80 00 0005 00 00 0000 00000005 00000000 0000000000000000 48656c6c6f'));
  assert.is(hex(get), hex(unhex('81 00 0000 04 00 0000 00000009 00000000 0000000000000001 deadbeef 576f726c64')));
  // GetK: the key comes back too.
  const getk = c.send(unhex('80 0c 0005 00 00 0000 00000005 00000000 0000000000000000 48656c6c6f'));
  assert.is(hex(getk), hex(unhex('81 0c 0005 04 00 0000 0000000e 00000000 0000000000000001 deadbeef 48656c6c6f 576f726c64')));
});

test('the draft example: Get of a missing key -> status 1 "Not found"', () => {
  const c = conn();
  const r = c.send(unhex('80 00 0005 00 00 0000 00000005 00000000 0000000000000000 48656c6c6f'));
  assert.is(hex(r), hex(unhex('81 00 0000 00 00 0001 00000009 00000000 0000000000000000 4e6f7420666f756e64')));
});

// ---- opaque, quiet commands, unknown opcodes, bad magic ----------------------

test('every reply echoes the opaque, whatever its bits', () => {
  const c = conn();
  const opaques = [0, 1, 0xdeadbeef, 0x80000000, 0xffffffff];
  for (const opaque of opaques) {
    for (const op of [OP.NOOP, OP.VERSION, OP.GET, OP.SET, OP.DELETE, OP.INCREMENT, 0x55]) {
      const r =
        op === OP.SET
          ? c.send(req(op, { key: 'k', extras: setExtras(0, 0), value: 'v', opaque }))
          : op === OP.GET || op === OP.DELETE
            ? c.send(req(op, { key: 'nope', opaque }))
            : op === OP.INCREMENT
              ? c.send(req(op, { key: 'n', extras: deltaExtras(1n, 0n, 0), opaque }))
              : c.send(req(op, { opaque }));
      const [rep] = replies(r);
      assert.is(rep.opaque, opaque, `opcode ${op} opaque ${opaque.toString(16)}`);
      assert.is(rep.magic, 0x81);
      assert.is(rep.opcode, op);
    }
  }
});

test('quiet gets say nothing on a miss; the NOOP closes the batch (memslap mget)', () => {
  const c = conn();
  c.send(req(OP.SET, { key: 'a', extras: setExtras(7, 0), value: 'AAA' }));
  c.send(req(OP.SET, { key: 'c', extras: setExtras(9, 0), value: 'CC' }));
  const r = replies(
    c.send(
      req(OP.GETKQ, { key: 'a', opaque: 1 }),
      req(OP.GETKQ, { key: 'b', opaque: 2 }),
      req(OP.GETKQ, { key: 'c', opaque: 3 }),
      req(OP.GETQ, { key: 'zz', opaque: 4 }),
      req(OP.NOOP, { opaque: 5 }),
    ),
  );
  assert.equal(
    r.map((x) => [x.opcode, x.opaque, x.status, x.key, x.value.toString()]),
    [
      [OP.GETKQ, 1, 0, 'a', 'AAA'],
      [OP.GETKQ, 3, 0, 'c', 'CC'],
      [OP.NOOP, 5, 0, '', ''],
    ],
  );
  assert.is(r[0].extras.readUInt32BE(0), 7);
  assert.is(r[1].extras.readUInt32BE(0), 9);
});

test('quiet stores say nothing on success and reply their errors', () => {
  const c = conn();
  assert.is(c.send(req(OP.SETQ, { key: 'k', extras: setExtras(0, 0), value: 'v' })).length, 0);
  assert.is(c.send(req(OP.ADDQ, { key: 'new', extras: setExtras(0, 0), value: 'v' })).length, 0);
  const [e] = replies(c.send(req(OP.ADDQ, { key: 'k', extras: setExtras(0, 0), value: 'v', opaque: 9 })));
  assert.equal([e.opcode, e.status, e.opaque, e.value.toString()], [OP.ADDQ, STATUS.KEY_EEXISTS, 9, 'Data exists for key.']);
  assert.is(c.send(req(OP.DELETEQ, { key: 'k' })).length, 0);
  const [d] = replies(c.send(req(OP.DELETEQ, { key: 'k' })));
  assert.is(d.status, STATUS.KEY_ENOENT);
  assert.is(c.send(req(OP.FLUSHQ)).length, 0);
  assert.is(c.send(req(OP.INCREMENTQ, { key: 'n', extras: deltaExtras(1n, 5n, 0) })).length, 0);
});

test('an unknown opcode gets 0x0081 "Unknown command" and the connection goes on', () => {
  const c = conn();
  for (const op of [0x1f, 0x20, 0x21, 0x30, 0x89, 0xff]) {
    const r = c.send(req(op, { key: 'x', value: 'yz', opaque: 0x01020304 }));
    assert.is(hex(r.subarray(0, 24)), hex(unhex(`81 ${op.toString(16).padStart(2, '0')} 0000 00 00 0081 0000000f 01020304 0000000000000000`)));
    assert.is(Buffer.from(r.subarray(24)).toString(), 'Unknown command');
    assert.is(c.s.after, 'go-on');
  }
  assert.is(replies(c.send(req(OP.NOOP, { opaque: 77 })))[0].opaque, 77);
});

test('a bad magic closes the connection (nothing is answered)', () => {
  const c = conn();
  c.send(req(OP.NOOP));
  const out = new Sink();
  const bad = req(OP.GET, { key: 'k', magic: 0x81 });
  c.s.feed(bad, 0, bad.length, out);
  assert.is(c.s.after, 'close-now');
  assert.is(out.len, 0);
  assert.is(c.srv.stats.bad_magic, 1);
});

test('QUIT replies and closes after it; QUITQ closes silently', () => {
  const c = conn();
  const [q] = replies(c.send(req(OP.QUIT, { opaque: 3 })));
  assert.equal([q.opcode, q.status, q.opaque, q.bodylen], [OP.QUIT, 0, 3, 0]);
  assert.is(c.s.after, 'close-after-reply');
  const d = conn();
  assert.is(d.send(req(OP.QUITQ)).length, 0);
  assert.is(d.s.after, 'close-after-reply');
});

test('requests after a QUIT in the same read are not run', () => {
  const c = conn();
  const out = new Sink();
  const all = Buffer.concat([req(OP.QUIT), req(OP.SET, { key: 'k', extras: setExtras(0, 0), value: 'v' })]);
  const used = c.s.feed(new Uint8Array(all), 0, all.length, out);
  assert.is(used, 24);
  assert.is(c.srv.store.currItems, 0);
});

// ---- CAS ---------------------------------------------------------------------

test('CAS: stores return a new CAS; a matching CAS stores, a stale one gets KEY_EEXISTS, a CAS on a missing key KEY_ENOENT', () => {
  const c = conn();
  const [s1] = replies(c.send(req(OP.SET, { key: 'k', extras: setExtras(0, 0), value: 'one' })));
  assert.ok(s1.cas > 0n);
  const [s2] = replies(c.send(req(OP.SET, { key: 'k', extras: setExtras(0, 0), value: 'two', cas: s1.cas })));
  assert.is(s2.status, 0);
  assert.ok(s2.cas > s1.cas);
  const [s3] = replies(c.send(req(OP.SET, { key: 'k', extras: setExtras(0, 0), value: 'three', cas: s1.cas })));
  assert.equal([s3.status, s3.cas, s3.extlen, s3.keylen], [STATUS.KEY_EEXISTS, 0n, 0, 0]);
  const [g] = replies(c.send(req(OP.GET, { key: 'k' })));
  assert.equal([g.value.toString(), g.cas], ['two', s2.cas]);
  const [s4] = replies(c.send(req(OP.REPLACE, { key: 'gone', extras: setExtras(0, 0), value: 'x', cas: 5n })));
  assert.is(s4.status, STATUS.KEY_ENOENT);
  const [d] = replies(c.send(req(OP.DELETE, { key: 'k', cas: s1.cas })));
  assert.is(d.status, STATUS.KEY_EEXISTS);
  const [d2] = replies(c.send(req(OP.DELETE, { key: 'k', cas: s2.cas })));
  assert.equal([d2.status, d2.cas], [0, 0n]);
  // A CAS past 2^53 matches nothing.
  c.send(req(OP.SET, { key: 'k', extras: setExtras(0, 0), value: 'v' }));
  const [big] = replies(c.send(req(OP.SET, { key: 'k', extras: setExtras(0, 0), value: 'w', cas: 0xffffffffffffffffn })));
  assert.is(big.status, STATUS.KEY_EEXISTS);
});

// ---- each command --------------------------------------------------------------

test('ADD only when missing (KEY_EEXISTS), REPLACE only when present (KEY_ENOENT)', () => {
  const c = conn();
  const st = (r: Uint8Array) => replies(r)[0].status;
  assert.is(st(c.send(req(OP.REPLACE, { key: 'k', extras: setExtras(0, 0), value: 'x' }))), STATUS.KEY_ENOENT);
  assert.is(st(c.send(req(OP.ADD, { key: 'k', extras: setExtras(0, 0), value: 'x' }))), 0);
  assert.is(st(c.send(req(OP.ADD, { key: 'k', extras: setExtras(0, 0), value: 'y' }))), STATUS.KEY_EEXISTS);
  assert.is(st(c.send(req(OP.REPLACE, { key: 'k', extras: setExtras(5, 0), value: 'z' }))), 0);
  const [g] = replies(c.send(req(OP.GET, { key: 'k' })));
  assert.equal([g.value.toString(), g.extras.readUInt32BE(0)], ['z', 5]);
});

test('APPEND and PREPEND keep the flags; on a missing key NOT_STORED', () => {
  const c = conn();
  c.send(req(OP.SET, { key: 'k', extras: setExtras(42, 0), value: 'hello' }));
  const [a] = replies(c.send(req(OP.APPEND, { key: 'k', value: ' world' })));
  assert.is(a.status, 0);
  assert.ok(a.cas > 0n);
  c.send(req(OP.PREPEND, { key: 'k', value: '>> ' }));
  const [g] = replies(c.send(req(OP.GET, { key: 'k' })));
  assert.equal([g.value.toString(), g.extras.readUInt32BE(0)], ['>> hello world', 42]);
  const [m] = replies(c.send(req(OP.APPEND, { key: 'missing', value: 'x' })));
  assert.equal([m.status, m.value.toString()], [STATUS.NOT_STORED, 'Not stored.']);
});

test('INCREMENT and DECREMENT: the initial value first, then steps; decr stops at 0; incr wraps at 2^64; 0xffffffff expiry does not create', () => {
  const c = conn();
  const v = (r: Uint8Array) => {
    const [x] = replies(r);
    assert.is(x.status, 0);
    assert.is(x.bodylen, 8);
    assert.ok(x.cas > 0n);
    return x.value.readBigUInt64BE(0);
  };
  assert.is(v(c.send(req(OP.INCREMENT, { key: 'n', extras: deltaExtras(1n, 0n, 0) }))), 0n);
  assert.is(v(c.send(req(OP.INCREMENT, { key: 'n', extras: deltaExtras(1n, 0n, 0) }))), 1n);
  assert.is(v(c.send(req(OP.INCREMENT, { key: 'n', extras: deltaExtras(10n, 0n, 0) }))), 11n);
  assert.is(v(c.send(req(OP.DECREMENT, { key: 'n', extras: deltaExtras(5n, 0n, 0) }))), 6n);
  assert.is(v(c.send(req(OP.DECREMENT, { key: 'n', extras: deltaExtras(100n, 0n, 0) }))), 0n);
  assert.is(v(c.send(req(OP.DECREMENT, { key: 'd', extras: deltaExtras(1n, 9n, 0) }))), 9n);
  assert.is(v(c.send(req(OP.INCREMENT, { key: 'w', extras: deltaExtras(1n, 0xffffffffffffffffn, 0) }))), 0xffffffffffffffffn);
  assert.is(v(c.send(req(OP.INCREMENT, { key: 'w', extras: deltaExtras(2n, 0n, 0) }))), 1n);
  const [nf] = replies(c.send(req(OP.INCREMENT, { key: 'none', extras: deltaExtras(1n, 0n, 0xffffffff) })));
  assert.is(nf.status, STATUS.KEY_ENOENT);
  c.send(req(OP.SET, { key: 's', extras: setExtras(0, 0), value: 'text' }));
  const [bad] = replies(c.send(req(OP.INCREMENT, { key: 's', extras: deltaExtras(1n, 0n, 0) })));
  assert.equal([bad.status, bad.value.toString()], [STATUS.DELTA_BADVAL, 'Non-numeric server-side value for incr or decr']);
  const [g] = replies(c.send(req(OP.GET, { key: 'n' })));
  assert.is(g.value.toString(), '0');
});

test('FLUSH empties the store; NOOP, VERSION, VERBOSITY', () => {
  const c = conn();
  c.send(req(OP.SET, { key: 'k', extras: setExtras(0, 0), value: 'v' }));
  const [f] = replies(c.send(req(OP.FLUSH)));
  assert.equal([f.status, f.cas, f.bodylen], [0, 0n, 0]);
  assert.is(replies(c.send(req(OP.GET, { key: 'k' })))[0].status, STATUS.KEY_ENOENT);
  const [ver] = replies(c.send(req(OP.VERSION)));
  assert.match(ver.value.toString(), /^1\.6\./);
  const [vb] = replies(c.send(req(OP.VERBOSITY, { extras: u32Extras(1) })));
  assert.is(vb.status, 0);
});

test('TOUCH and GAT set a new expiry; GAT returns the value', () => {
  const c = conn();
  c.send(req(OP.SET, { key: 'k', extras: setExtras(3, 10), value: 'v' }));
  const [t] = replies(c.send(req(OP.TOUCH, { key: 'k', extras: u32Extras(100) })));
  assert.is(t.status, 0);
  c.srv.store.setTime(1_000_050);
  const [g] = replies(c.send(req(OP.GAT, { key: 'k', extras: u32Extras(1000) })));
  assert.equal([g.status, g.value.toString(), g.extras.readUInt32BE(0)], [0, 'v', 3]);
  c.srv.store.setTime(1_000_500);
  assert.is(replies(c.send(req(OP.GET, { key: 'k' })))[0].status, 0);
  c.srv.store.setTime(1_001_100);
  assert.is(replies(c.send(req(OP.GET, { key: 'k' })))[0].status, STATUS.KEY_ENOENT);
  assert.is(replies(c.send(req(OP.TOUCH, { key: 'k', extras: u32Extras(1) })))[0].status, STATUS.KEY_ENOENT);
  assert.is(c.send(req(OP.GATQ, { key: 'k', extras: u32Extras(1) })).length, 0);
});

test('STAT: name/value packets, then an empty one; "settings"; an unknown group is not found', () => {
  const c = conn();
  const r = replies(c.send(req(OP.STAT, { opaque: 8 })));
  const last = r[r.length - 1];
  assert.equal([last.keylen, last.bodylen, last.opaque], [0, 0, 8]);
  const names = r.slice(0, -1).map((x) => x.key);
  for (const n of ['pid', 'uptime', 'curr_items', 'cmd_get', 'get_hits', 'get_misses', 'version']) assert.ok(names.includes(n), n);
  for (const x of r) assert.equal([x.status, x.cas, x.extlen], [0, 0n, 0]);
  const s = replies(c.send(req(OP.STAT, { key: 'settings' })));
  assert.ok(s.some((x) => x.key === 'item_size_max'));
  assert.is(replies(c.send(req(OP.STAT, { key: 'bogus' })))[0].status, STATUS.KEY_ENOENT);
});

// ---- bad input -------------------------------------------------------------------

test('lengths that do not fit the opcode get EINVAL and the connection goes on', () => {
  const c = conn();
  const cases = [
    req(OP.GET, {}), // no key
    req(OP.GET, { key: 'k', extras: u32Extras(1) }), // extras on a get
    req(OP.SET, { key: 'k', value: 'v' }), // a set without its 8 bytes of extras
    req(OP.INCREMENT, { key: 'k', extras: u32Extras(1) }),
    req(OP.NOOP, { key: 'k' }),
    req(OP.TOUCH, { key: 'k' }),
  ];
  for (const q of cases) {
    const [e] = replies(c.send(q));
    assert.equal([e.status, e.value.toString()], [STATUS.EINVAL, 'Invalid arguments']);
  }
  // key length longer than the body
  const bad = Buffer.from(req(OP.GET, { key: 'abc' }));
  bad.writeUInt16BE(10, 2);
  const [e] = replies(c.send(new Uint8Array(bad)));
  assert.is(e.status, STATUS.EINVAL);
  // a key over 250 bytes
  assert.is(replies(c.send(req(OP.GET, { key: 'k'.repeat(251) })))[0].status, STATUS.EINVAL);
  assert.is(replies(c.send(req(OP.NOOP, { opaque: 1 })))[0].opaque, 1);
});

test('a value over the item limit: E2BIG, its bytes skipped as they come, the next request answered', () => {
  const srv = new Server({ now: 1_000_000, maxItem: 1024 });
  const c = conn(srv);
  const [e] = replies(c.send(req(OP.SET, { key: 'k', extras: setExtras(0, 0), value: new Uint8Array(2000) })));
  assert.is(e.status, STATUS.E2BIG);
  // A body far past what is buffered: answered at its header, then skipped in pieces.
  const big = req(OP.SET, { key: 'k', extras: setExtras(0, 0), value: new Uint8Array(100_000), opaque: 5 });
  const out = new Sink();
  let used = c.s.feed(big, 0, 24, out);
  assert.is(used, 24);
  const [e2] = replies(out.view());
  assert.equal([e2.status, e2.opaque], [STATUS.E2BIG, 5]);
  out.consume(out.len);
  for (let at = 24; at < big.length; at += 30_000) used += c.s.feed(big, at, Math.min(big.length, at + 30_000), out);
  assert.is(used, big.length);
  assert.is(out.len, 0);
  assert.is(replies(c.send(req(OP.NOOP, { opaque: 6 })))[0].opaque, 6);
  // A get whose body claims 4 GiB: EINVAL, skipped.
  const huge = Buffer.from(req(OP.GET, { key: 'k' }));
  huge.writeUInt32BE(0xffffffff, 8);
  const r = new Sink();
  c.s.feed(new Uint8Array(huge.subarray(0, 24)), 0, 24, r);
  assert.is(replies(r.view())[0].status, STATUS.EINVAL);
  assert.is(c.s.swallow, 0xffffffff);
});

test('requests split anywhere are answered once whole', () => {
  const c = conn();
  const all = Buffer.concat([
    req(OP.SET, { key: 'key1', extras: setExtras(1, 0), value: 'value-one', opaque: 1 }),
    req(OP.GETK, { key: 'key1', opaque: 2 }),
    req(OP.NOOP, { opaque: 3 }),
  ]);
  for (let cut = 1; cut < all.length; cut += 7) {
    const srv = new Server({ now: 1 });
    const s = new Session(srv);
    const out = new Sink();
    const used = s.feed(new Uint8Array(all), 0, cut, out);
    const rest = Buffer.concat([all.subarray(used)]);
    const used2 = s.feed(new Uint8Array(rest), 0, rest.length, out);
    assert.is(used + used2, all.length);
    assert.equal(
      replies(out.view()).map((r) => r.opaque),
      [1, 2, 3],
    );
  }
  void c;
});

test('parseHeader reads the fields; the opaque and CAS in full', () => {
  const h = parseHeader(req(OP.SET, { key: 'ab', extras: setExtras(0, 0), value: 'xyz', opaque: 0xfedcba98, cas: 0x0000123456789abcn }), 0)!;
  assert.equal(h, { opcode: 1, keylen: 2, extlen: 8, datatype: 0, vbucket: 0, bodylen: 13, opaque: 0xfedcba98, cas: 0x123456789abc });
  assert.is(parseHeader(req(OP.SET, { magic: 0x00 }), 0), null);
});

test.run();
