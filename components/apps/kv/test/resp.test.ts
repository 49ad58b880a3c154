import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ARG_OVERHEAD, BIG_ARG, encodeCommand, Parser, ProtocolError, splitArgs, Writer, type Command } from '../src/resp.ts';

const bytes = (s: string) => Uint8Array.from([...s].map((c) => c.charCodeAt(0)));
const str = (b: Uint8Array) => String.fromCharCode(...b);
const words = (cmd: Command | null) => (cmd === null ? null : cmd.map(str));

/** Feed `input` in the given pieces; every command that comes out. */
function parseAll(input: Uint8Array, cuts: number[], maxBulk?: number): string[][] {
  const p = new Parser(maxBulk, 16);
  const out: string[][] = [];
  let at = 0;
  for (const cut of [...cuts, input.length]) {
    p.feed(input.subarray(at, cut));
    at = cut;
    for (let c = p.next(); c; c = p.next()) out.push(words(c)!);
  }
  return out;
}

const pipeline = () => {
  const parts = [
    encodeCommand('SET', 'key:1', 'value'),
    bytes('PING\r\n'),
    encodeCommand('GET', 'key:1'),
    bytes('ECHO "hello world"\n'),
    encodeCommand('MSET', 'a', '1', 'b', ''),
  ];
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return all;
};
const expected = [['SET', 'key:1', 'value'], ['PING'], ['GET', 'key:1'], ['ECHO', 'hello world'], ['MSET', 'a', '1', 'b', '']];

test('multibulk and inline commands, pipelined in one chunk', () => {
  assert.equal(parseAll(pipeline(), []), expected);
});

test('the same commands split at every byte boundary, and byte by byte', () => {
  const input = pipeline();
  for (let cut = 1; cut < input.length; cut++) assert.equal(parseAll(input, [cut]), expected, `cut at ${cut}`);
  const every = Array.from({ length: input.length - 1 }, (_, i) => i + 1);
  assert.equal(parseAll(input, every), expected);
});

test('a command split into two writes, in the middle of \\r\\n', () => {
  const input = bytes('*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n');
  const cr = input.indexOf(13, 6);
  assert.equal(parseAll(input, [cr + 1]), [['ECHO', 'hi']]);
});

test('a big argument is read into its own buffer, whatever the splits', () => {
  const value = new Uint8Array(BIG_ARG * 3 + 7);
  for (let i = 0; i < value.length; i++) value[i] = (i * 7) & 0xff;
  const cmd = encodeCommand('SET', 'big', value);
  for (const cuts of [[], [10], [30], [40, 5000, 70000], Array.from({ length: 20 }, (_, i) => 17 + i * 5000)]) {
    const p = new Parser(undefined, 64);
    let at = 0;
    let got: Command | null = null;
    for (const cut of [...cuts, cmd.length]) {
      p.feed(cmd.subarray(at, cut));
      at = cut;
      got = p.next() ?? got;
    }
    assert.ok(got, `cuts ${cuts}`);
    assert.is(str(got![1]), 'big');
    assert.is(got![2].length, value.length);
    assert.ok(got![2].every((b, i) => b === value[i]));
  }
  // A command following the big one in the same chunk.
  const two = new Uint8Array(cmd.length + 14);
  two.set(cmd);
  two.set(bytes('*1\r\n$4\r\nPING\r\n'), cmd.length);
  assert.equal(
    parseAll(two, [100]).map((c) => c[0]),
    ['SET', 'PING'],
  );
});

test('empty lines and *0 are skipped; bulk trailers are not checked (as Redis)', () => {
  assert.equal(parseAll(bytes('\r\n\n*0\r\n*-1\r\nPING\r\n'), []), [['PING']]);
  assert.equal(parseAll(bytes('*1\r\n$4\r\nPINGxx'), []), [['PING']]);
});

test('inline quoting as redis-cli does it', () => {
  const s = (line: string) => {
    const b = bytes(line);
    const r = splitArgs(b, 0, b.length);
    return r && r.map(str);
  };
  assert.equal(s('set  k   v'), ['set', 'k', 'v']);
  assert.equal(s('set "a b" \'c d\''), ['set', 'a b', 'c d']);
  assert.equal(s('echo "\\x41\\n\\"q"'), ['echo', 'A\n"q']);
  assert.equal(s("echo 'it\\'s'"), ['echo', "it's"]);
  assert.equal(s('echo ""'), ['echo', '']);
  assert.is(s('echo "open'), null);
  assert.is(s('echo "a"b'), null);
});

function protocolError(input: string | Uint8Array, maxBulk?: number): string {
  const p = new Parser(maxBulk);
  p.feed(typeof input === 'string' ? bytes(input) : input);
  try {
    while (p.next()) {
      // commands before the error come out
    }
  } catch (e) {
    assert.instance(e, ProtocolError);
    assert.ok(p.failed);
    assert.is(p.next(), null, 'nothing is parsed after a protocol error');
    return (e as Error).message;
  }
  return 'no error';
}

test('protocol errors, with Redis messages', () => {
  assert.is(protocolError('*x\r\n'), 'invalid multibulk length');
  assert.is(protocolError('*2000000\r\n'), 'invalid multibulk length');
  assert.is(protocolError('*1\r\n$-5\r\n'), 'invalid bulk length');
  assert.is(protocolError('*1\r\n$abc\r\n'), 'invalid bulk length');
  assert.is(protocolError('*1\r\n$600000000\r\n'), 'invalid bulk length');
  assert.is(protocolError('*1\r\n$11\r\n', 10), 'invalid bulk length');
  assert.is(protocolError('*1\r\n+PING\r\n'), "expected '$', got '+'");
  assert.is(protocolError('ECHO "x\r\n'), 'unbalanced quotes in request');
  assert.is(protocolError(new Uint8Array(70 * 1024).fill(65)), 'too big inline request');
  assert.is(protocolError('*' + '1'.repeat(70 * 1024)), 'too big mbulk count string');
  assert.is(protocolError('*1\r\n$' + '1'.repeat(70 * 1024)), 'too big bulk count string');
});

test('a refused big argument is a protocol error before its buffer is made', () => {
  const p = new Parser(undefined, 16, (len) => len < 100_000);
  p.feed(bytes(`*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$200000\r\nabc`));
  assert.throws(() => p.next(), /does not fit/);
  const ok = new Parser(undefined, 16, (len) => len < 100_000);
  ok.feed(bytes(`*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$50000\r\nabc`));
  assert.is(ok.next(), null);
  assert.is(ok.pending, 50002 + (3 + ARG_OVERHEAD) + (1 + ARG_OVERHEAD), 'the big buffer and the arguments held');
});

test('writer: every reply type, coalesced in one buffer', () => {
  const w = new Writer(4);
  w.simple('OK');
  w.error('ERR bad\r\nthing');
  w.integer(-42);
  w.integer(2n ** 63n - 1n);
  w.bulk(bytes('hi'));
  w.bulk(null);
  w.array(2);
  w.bulkString('');
  w.nullArray();
  assert.is(str(w.view()), '+OK\r\n-ERR bad thing\r\n:-42\r\n:9223372036854775807\r\n$2\r\nhi\r\n$-1\r\n*2\r\n$0\r\n\r\n*-1\r\n');
  w.consume(5);
  assert.is(str(w.view()).slice(0, 8), '-ERR bad');
  w.consume(1000);
  assert.is(w.len, 0);
});

test.run();
