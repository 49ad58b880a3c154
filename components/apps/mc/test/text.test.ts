import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Server, Session } from '../src/session.ts';
import { Sink } from '../src/sink.ts';

function conn(srv = new Server({ now: 1_000_000 })) {
  const s = new Session(srv);
  const out = new Sink(64);
  return {
    srv,
    s,
    /** Send text; return what came back. */
    say(text: string): string {
      const b = new Uint8Array(Buffer.from(text, 'latin1'));
      const used = s.feed(b, 0, b.length, out);
      assert.is(used, b.length, `all of ${JSON.stringify(text)} used`);
      const r = Buffer.from(out.view()).toString('latin1');
      out.consume(out.len);
      return r;
    },
  };
}

test('set, get, gets (with the CAS unique), a miss, several keys at once', () => {
  const c = conn();
  assert.is(c.say('set foo 5 0 3\r\nbar\r\n'), 'STORED\r\n');
  assert.is(c.say('get foo\r\n'), 'VALUE foo 5 3\r\nbar\r\nEND\r\n');
  assert.match(c.say('gets foo\r\n'), /^VALUE foo 5 3 \d+\r\nbar\r\nEND\r\n$/);
  assert.is(c.say('get nope\r\n'), 'END\r\n');
  c.say('set b 0 0 2\r\nBB\r\n');
  assert.is(c.say('get foo nope b\r\n'), 'VALUE foo 5 3\r\nbar\r\nVALUE b 0 2\r\nBB\r\nEND\r\n');
  // Bare newlines work too, as in memcached.
  assert.is(c.say('get b\n'), 'VALUE b 0 2\r\nBB\r\nEND\r\n');
});

test('add, replace, append, prepend', () => {
  const c = conn();
  assert.is(c.say('add k 0 0 1\r\na\r\n'), 'STORED\r\n');
  assert.is(c.say('add k 0 0 1\r\nb\r\n'), 'NOT_STORED\r\n');
  assert.is(c.say('replace x 0 0 1\r\nb\r\n'), 'NOT_STORED\r\n');
  assert.is(c.say('replace k 0 0 1\r\nc\r\n'), 'STORED\r\n');
  assert.is(c.say('append k 0 0 2\r\nde\r\n'), 'STORED\r\n');
  assert.is(c.say('prepend k 0 0 2\r\nab\r\n'), 'STORED\r\n');
  assert.is(c.say('get k\r\n'), 'VALUE k 0 5\r\nabcde\r\nEND\r\n');
  assert.is(c.say('append none 0 0 1\r\nx\r\n'), 'NOT_STORED\r\n');
});

test('cas: the unique from gets stores once; again EXISTS; a missing key NOT_FOUND', () => {
  const c = conn();
  c.say('set k 0 0 5\r\nvalue\r\n');
  const cas = /VALUE k 0 5 (\d+)/.exec(c.say('gets k\r\n'))![1];
  assert.is(c.say(`cas k 0 0 6 ${cas}\r\nvalue2\r\n`), 'STORED\r\n');
  assert.is(c.say(`cas k 0 0 6 ${cas}\r\nvalue2\r\n`), 'EXISTS\r\n');
  assert.is(c.say(`cas nope 0 0 1 ${cas}\r\nx\r\n`), 'NOT_FOUND\r\n');
  assert.is(c.say(`cas k 0 0 1 0\r\nx\r\n`), 'EXISTS\r\n');
});

test('delete, incr, decr, touch', () => {
  const c = conn();
  c.say('set n 0 0 2\r\n10\r\n');
  assert.is(c.say('incr n 5\r\n'), '15\r\n');
  assert.is(c.say('decr n 100\r\n'), '0\r\n');
  assert.is(c.say('incr n 18446744073709551615\r\n'), '18446744073709551615\r\n');
  assert.is(c.say('incr n 2\r\n'), '1\r\n');
  assert.is(c.say('incr missing 1\r\n'), 'NOT_FOUND\r\n');
  assert.is(c.say('incr n x\r\n'), 'CLIENT_ERROR invalid numeric delta argument\r\n');
  c.say('set s 0 0 3\r\nabc\r\n');
  assert.is(c.say('incr s 1\r\n'), 'CLIENT_ERROR cannot increment or decrement non-numeric value\r\n');
  assert.is(c.say('touch n 10\r\n'), 'TOUCHED\r\n');
  assert.is(c.say('touch none 10\r\n'), 'NOT_FOUND\r\n');
  assert.is(c.say('delete n\r\n'), 'DELETED\r\n');
  assert.is(c.say('delete n\r\n'), 'NOT_FOUND\r\n');
  assert.is(c.say('delete s 0\r\n'), 'DELETED\r\n');
  assert.match(c.say('delete\r\n'), /^ERROR\r\n$/);
  assert.match(c.say('delete a b c d e\r\n'), /^CLIENT_ERROR /);
});

test('noreply: nothing comes back for stores, deletes, incr, touch, flush_all', () => {
  const c = conn();
  assert.is(c.say('set k 0 0 1 noreply\r\na\r\n'), '');
  assert.is(c.say('add k 0 0 1 noreply\r\nb\r\n'), '');
  assert.is(c.say('set n 0 0 1 noreply\r\n1\r\n'), '');
  assert.is(c.say('incr n 1 noreply\r\n'), '');
  assert.is(c.say('touch n 1 noreply\r\n'), '');
  assert.is(c.say('delete k noreply\r\n'), '');
  assert.is(c.say('flush_all noreply\r\n'), '');
  assert.is(c.say('verbosity 1 noreply\r\n'), '');
  assert.is(c.say('verbosity noreply\r\n'), '');
  assert.is(c.say('get n\r\n'), 'END\r\n');
});

test('flush_all (now and with a delay), version, verbosity, stats, quit', () => {
  const c = conn();
  c.say('set k 0 0 1\r\na\r\n');
  assert.is(c.say('flush_all\r\n'), 'OK\r\n');
  assert.is(c.say('get k\r\n'), 'END\r\n');
  c.say('set k 0 0 1\r\na\r\n');
  assert.is(c.say('flush_all 10\r\n'), 'OK\r\n');
  assert.is(c.say('get k\r\n'), 'VALUE k 0 1\r\na\r\nEND\r\n');
  c.srv.store.setTime(1_000_011);
  assert.is(c.say('get k\r\n'), 'END\r\n');
  assert.is(c.say('flush_all foo bar\r\n'), 'ERROR\r\n');
  assert.match(c.say('version\r\n'), /^VERSION 1\.6\.\S+\r\n$/);
  assert.match(c.say('version foo bar\r\n'), /^VERSION /);
  assert.is(c.say('verbosity 1\r\n'), 'OK\r\n');
  assert.is(c.say('verbosity\r\n'), 'ERROR\r\n');
  assert.is(c.say('verbosity foo bar my\r\n'), 'ERROR\r\n');
  const st = c.say('stats\r\n');
  assert.match(st, /^STAT pid \d+\r\n/);
  assert.match(st, /STAT curr_items \d+\r\n/);
  assert.match(st, /END\r\n$/);
  assert.is(c.say('stats noreply\r\n'), 'ERROR\r\n');
  assert.is(c.say('stats reset\r\n'), 'RESET\r\n');
  assert.is(c.say('quit\r\n'), '');
  assert.is(c.s.after, 'close-now');
});

test('expiry: relative seconds, a Unix time, negative is gone at once', () => {
  const T = 1_700_000_000;
  const c = conn(new Server({ now: T }));
  c.say('set a 0 10 1\r\na\r\n');
  c.say(`set b 0 ${T + 20} 1\r\nb\r\n`);
  c.say('set c 0 -1 1\r\nc\r\n');
  assert.is(c.say('get a b c\r\n'), 'VALUE a 0 1\r\na\r\nVALUE b 0 1\r\nb\r\nEND\r\n');
  c.srv.store.setTime(T + 10);
  assert.is(c.say('get a b\r\n'), 'VALUE b 0 1\r\nb\r\nEND\r\n');
  c.srv.store.setTime(T + 20);
  assert.is(c.say('get a b\r\n'), 'END\r\n');
});

test('bad input: unknown commands, bad numbers, bad data chunks, too-large values, long lines', () => {
  const c = conn();
  assert.is(c.say('bogus\r\n'), 'ERROR\r\n');
  assert.is(c.say('\r\n'), 'ERROR\r\n');
  assert.is(c.say('set k x 0 1\r\na\r\n'), 'CLIENT_ERROR bad command line format\r\n');
  assert.is(c.say('set k 0 0\r\n'), 'ERROR\r\n');
  assert.is(c.say('set k 0 0 3\r\nabcde\r\n'), 'CLIENT_ERROR bad data chunk\r\nERROR\r\n');
  assert.is(c.say(`get ${'k'.repeat(251)}\r\n`), 'CLIENT_ERROR bad command line format\r\n');
  // Over the item limit: refused, the data skipped, the next command answered.
  const small = conn(new Server({ now: 1, maxItem: 1024 }));
  assert.is(small.say(`set k 0 0 2000\r\n${'x'.repeat(2000)}\r\nget k\r\n`), 'SERVER_ERROR object too large for cache\r\nEND\r\n');
  // A line that never ends.
  const l = conn();
  const out = new Sink();
  const junk = new Uint8Array(9000).fill(0x61);
  l.s.feed(junk, 0, junk.length, out);
  assert.is(Buffer.from(out.view()).toString(), 'CLIENT_ERROR line too long\r\n');
  assert.is(l.s.after, 'close-after-reply');
});

test('a store whose data has not all arrived waits for it', () => {
  const c = conn();
  const out = new Sink();
  const all = new Uint8Array(Buffer.from('set k 0 0 10\r\n0123456789\r\nget k\r\n'));
  assert.is(c.s.feed(all, 0, 20, out), 0);
  assert.is(out.len, 0);
  const used = c.s.feed(all, 0, all.length, out);
  assert.is(used, all.length);
  assert.is(Buffer.from(out.view()).toString(), 'STORED\r\nVALUE k 0 10\r\n0123456789\r\nEND\r\n');
});

test.run();
