import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ITEM_OVERHEAD, Store, parseU64 } from '../src/store.ts';

const v = (s: string) => new Uint8Array(Buffer.from(s));

test('least recently used items go first past the memory limit; a read keeps an item', () => {
  const item = 1 + 100 + ITEM_OVERHEAD;
  const s = new Store(item * 3);
  s.setTime(1000);
  for (const k of ['a', 'b', 'c']) assert.is(s.store('set', k, new Uint8Array(100), 0, 0).status, 'stored');
  // 'a' is read a minute later, so it moves to the back.
  s.setTime(1100);
  assert.ok(s.get('a'));
  s.store('set', 'd', new Uint8Array(100), 0, 0);
  assert.is(s.peek('b'), null, 'b was least recently used');
  assert.ok(s.peek('a'));
  assert.ok(s.peek('c'));
  assert.ok(s.peek('d'));
  assert.is(s.counters.evictions, 1);
  assert.is(s.currItems, 3);
  assert.is(s.currBytes, item * 3);
});

test('an item larger than the limit or the item size is refused', () => {
  const s = new Store(1000, 500);
  assert.is(s.store('set', 'k', new Uint8Array(600), 0, 0).status, 'too-large');
  const t = new Store(100, 500);
  assert.is(t.store('set', 'k', new Uint8Array(400), 0, 0).status, 'no-memory');
  // Appends that grow past the item size are refused too.
  s.store('set', 'k', new Uint8Array(400), 0, 0);
  assert.is(s.store('append', 'k', new Uint8Array(200), 0, 0).status, 'too-large');
});

test('replacing an item frees its old bytes', () => {
  const s = new Store(1 << 20);
  s.store('set', 'k', new Uint8Array(1000), 0, 0);
  s.store('set', 'k', new Uint8Array(10), 0, 0);
  assert.is(s.currBytes, 1 + 10 + ITEM_OVERHEAD);
  s.delete('k');
  assert.is(s.currBytes, 0);
});

test('CAS numbers grow with every change', () => {
  const s = new Store();
  const a = s.store('set', 'k', v('1'), 0, 0);
  const b = s.store('set', 'k', v('2'), 0, 0);
  const c = s.delta('k', true, 1n, null, 0);
  assert.ok(a.status === 'stored' && b.status === 'stored' && c.status === 'ok');
  if (a.status === 'stored' && b.status === 'stored' && c.status === 'ok') {
    assert.ok(b.cas > a.cas);
    assert.ok(c.cas > b.cas);
  }
});

test('parseU64: digits up to 2^64-1, trailing spaces, nothing else', () => {
  assert.is(parseU64(v('0')), 0n);
  assert.is(parseU64(v('18446744073709551615')), 18446744073709551615n);
  assert.is(parseU64(v('18446744073709551616')), null);
  assert.is(parseU64(v('12  ')), 12n);
  assert.is(parseU64(v('')), null);
  assert.is(parseU64(v('-1')), null);
  assert.is(parseU64(v('1a')), null);
});

test.run();
