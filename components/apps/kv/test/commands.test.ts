import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { globMatch, Kv, parseInt64, type Session } from '../src/commands.ts';
import { Writer } from '../src/resp.ts';

const bytes = (s: string) => Uint8Array.from([...s].map((c) => c.charCodeAt(0)));
const str = (b: Uint8Array) => String.fromCharCode(...b);

/** A store with a clock the test moves, and a way to run commands on it. */
function setup(config: Partial<{ maxmemory: number; maxBulk: number }> = {}) {
  const clock = { ms: 1_000_000 };
  const kv = new Kv({ port: 6379, maxmemory: 0, maxBulk: 512 << 20, ...config }, () => clock.ms);
  const session: Session = { id: 7, quit: false, name: null };
  const r = (...args: string[]) => {
    const w = new Writer();
    kv.exec(args.map(bytes), w, session);
    return str(w.view());
  };
  return { kv, clock, r, session };
}

test('PING, ECHO, SELECT, COMMAND, QUIT', () => {
  const { r, session } = setup();
  assert.is(r('PING'), '+PONG\r\n');
  assert.is(r('ping', 'hi'), '$2\r\nhi\r\n');
  assert.is(r('PING', 'a', 'b'), "-ERR wrong number of arguments for 'ping' command\r\n");
  assert.is(r('ECHO', 'x y'), '$3\r\nx y\r\n');
  assert.is(r('SELECT', '0'), '+OK\r\n');
  assert.is(r('SELECT', '1'), '-ERR DB index is out of range\r\n');
  assert.is(r('SELECT', 'x'), '-ERR value is not an integer or out of range\r\n');
  assert.is(r('COMMAND'), '*0\r\n');
  assert.is(r('COMMAND', 'DOCS'), '*0\r\n');
  assert.match(r('COMMAND', 'COUNT'), /^:\d+\r\n$/);
  assert.not.ok(session.quit);
  assert.is(r('QUIT'), '+OK\r\n');
  assert.ok(session.quit);
});

test('unknown commands and arity errors are replies, as Redis words them', () => {
  const { r, kv } = setup();
  assert.is(r('NOPE', 'a', 'b'), "-ERR unknown command 'NOPE', with args beginning with: 'a' 'b' \r\n");
  assert.is(r('nope'), "-ERR unknown command 'nope', with args beginning with: \r\n");
  assert.is(r('GET'), "-ERR wrong number of arguments for 'get' command\r\n");
  assert.is(r('get', 'a', 'b'), "-ERR wrong number of arguments for 'get' command\r\n");
  assert.is(r('MSET', 'a', '1', 'b'), "-ERR wrong number of arguments for 'mset' command\r\n");
  assert.is(kv.stats.errors, 5);
});

test('SET and GET, with NX, XX, GET, KEEPTTL and bad options', () => {
  const { r } = setup();
  assert.is(r('GET', 'k'), '$-1\r\n');
  assert.is(r('SET', 'k', 'v1'), '+OK\r\n');
  assert.is(r('GET', 'k'), '$2\r\nv1\r\n');
  assert.is(r('SET', 'k', 'v2', 'NX'), '$-1\r\n');
  assert.is(r('GET', 'k'), '$2\r\nv1\r\n');
  assert.is(r('SET', 'k', 'v2', 'XX'), '+OK\r\n');
  assert.is(r('SET', 'other', 'x', 'XX'), '$-1\r\n');
  assert.is(r('EXISTS', 'other'), ':0\r\n');
  assert.is(r('SET', 'k', 'v3', 'GET'), '$2\r\nv2\r\n');
  assert.is(r('SET', 'new', 'n', 'nx', 'get'), '$-1\r\n');
  assert.is(r('GET', 'new'), '$1\r\nn\r\n');
  assert.is(r('SET', 'k', 'v', 'NX', 'XX'), '-ERR syntax error\r\n');
  assert.is(r('SET', 'k', 'v', 'BOGUS'), '-ERR syntax error\r\n');
  assert.is(r('SET', 'k', 'v', 'EX'), '-ERR syntax error\r\n');
  assert.is(r('SET', 'k', 'v', 'EX', '10', 'PX', '100'), '-ERR syntax error\r\n');
  assert.is(r('SET', 'k', 'v', 'EX', 'ten'), '-ERR value is not an integer or out of range\r\n');
  assert.is(r('SET', 'k', 'v', 'EX', '0'), "-ERR invalid expire time in 'set' command\r\n");
  assert.is(r('SET', 'k', 'v', 'PX', '-5'), "-ERR invalid expire time in 'set' command\r\n");
  assert.is(r('SET', 'k', 'v', 'EX', '9223372036854775807'), "-ERR invalid expire time in 'set' command\r\n");
  assert.is(r('GET', 'k'), '$2\r\nv3\r\n', 'a refused SET changes nothing');
  assert.is(r('SET', 'bin', '\x00\r\n\xff'), '+OK\r\n');
  assert.is(r('GET', 'bin'), '$4\r\n\x00\r\n\xff\r\n');
  assert.is(r('SET', '', ''), '+OK\r\n');
  assert.is(r('GET', ''), '$0\r\n\r\n');
});

test('expiry: SET EX/PX/EXAT/PXAT, KEEPTTL, EXPIRE, PEXPIRE, TTL, PTTL, PERSIST on an injected clock', () => {
  const { r, clock, kv } = setup();
  r('SET', 'a', '1', 'EX', '10');
  assert.is(r('TTL', 'a'), ':10\r\n');
  assert.is(r('PTTL', 'a'), ':10000\r\n');
  clock.ms += 2400;
  assert.is(r('TTL', 'a'), ':8\r\n');
  clock.ms += 100;
  assert.is(r('TTL', 'a'), ':8\r\n', '7.5 s rounds to 8, as Redis rounds');
  clock.ms += 7499;
  assert.is(r('GET', 'a'), '$1\r\n1\r\n');
  clock.ms += 1;
  assert.is(r('GET', 'a'), '$-1\r\n');
  assert.is(r('TTL', 'a'), ':-2\r\n');
  assert.is(kv.store.expiredKeys, 1);

  r('SET', 'b', '1', 'PX', '50');
  assert.is(r('PTTL', 'b'), ':50\r\n');
  r('SET', 'b', '2', 'KEEPTTL');
  assert.is(r('PTTL', 'b'), ':50\r\n');
  r('SET', 'b', '3');
  assert.is(r('TTL', 'b'), ':-1\r\n', 'a plain SET clears the TTL');
  r('SET', 'c', '1', 'EXAT', String(Math.floor(clock.ms / 1000) + 5));
  assert.ok(Number(r('PTTL', 'c').slice(1)) <= 5000);
  r('SET', 'd', '1', 'PXAT', String(clock.ms + 300));
  assert.is(r('PTTL', 'd'), ':300\r\n');

  assert.is(r('EXPIRE', 'nokey', '10'), ':0\r\n');
  assert.is(r('EXPIRE', 'b', '100'), ':1\r\n');
  assert.is(r('TTL', 'b'), ':100\r\n');
  assert.is(r('EXPIRE', 'b', '50', 'GT'), ':0\r\n');
  assert.is(r('EXPIRE', 'b', '50', 'LT'), ':1\r\n');
  assert.is(r('EXPIRE', 'b', '70', 'NX'), ':0\r\n');
  assert.is(r('EXPIRE', 'b', '70', 'XX'), ':1\r\n');
  assert.is(r('EXPIRE', 'b', '70', 'NX', 'XX'), '-ERR NX and XX, GT or LT options at the same time are not compatible\r\n');
  assert.is(r('EXPIRE', 'b', 'x'), '-ERR value is not an integer or out of range\r\n');
  assert.is(r('EXPIRE', 'b', '9223372036854775807'), "-ERR invalid expire time in 'expire' command\r\n");
  assert.is(r('PEXPIRE', 'b', '1500'), ':1\r\n');
  assert.is(r('TTL', 'b'), ':2\r\n');
  assert.is(r('PERSIST', 'b'), ':1\r\n');
  assert.is(r('PERSIST', 'b'), ':0\r\n');
  assert.is(r('TTL', 'b'), ':-1\r\n');
  assert.is(r('EXPIRE', 'b', '0'), ':1\r\n', 'an expire in the past deletes');
  assert.is(r('EXISTS', 'b'), ':0\r\n');
  assert.is(r('EXPIRE', 'b', '-1'), ':0\r\n');
});

test('the active sweep deletes expired keys nobody touches', () => {
  const { r, clock, kv } = setup();
  for (let i = 0; i < 1000; i++) r('SET', `k${i}`, 'v', 'PX', String(100 + (i % 2) * 100_000));
  r('SET', 'forever', 'v');
  assert.is(r('DBSIZE'), ':1001\r\n');
  clock.ms += 101;
  let n = 0;
  for (let i = 0; i < 20; i++) n += kv.store.expireSome(200);
  assert.is(n, 500);
  assert.is(r('DBSIZE'), ':501\r\n');
  assert.is(kv.store.expires, 500);
});

test('INCR, INCRBY, DECR, DECRBY: 64-bit range, overflow, non-integers, TTL kept', () => {
  const { r } = setup();
  assert.is(r('INCR', 'n'), ':1\r\n');
  assert.is(r('INCRBY', 'n', '41'), ':42\r\n');
  assert.is(r('DECR', 'n'), ':41\r\n');
  assert.is(r('DECRBY', 'n', '50'), ':-9\r\n');
  assert.is(r('GET', 'n'), '$2\r\n-9\r\n');
  r('SET', 'big', '9223372036854775806');
  assert.is(r('INCR', 'big'), ':9223372036854775807\r\n');
  assert.is(r('INCR', 'big'), '-ERR increment or decrement would overflow\r\n');
  r('SET', 'small', '-9223372036854775808');
  assert.is(r('DECR', 'small'), '-ERR increment or decrement would overflow\r\n');
  assert.is(r('DECRBY', 'x', '-9223372036854775808'), '-ERR decrement would overflow\r\n');
  r('SET', 'safe', '9007199254740991');
  assert.is(r('INCR', 'safe'), ':9007199254740992\r\n');
  assert.is(r('INCR', 'safe'), ':9007199254740993\r\n', 'exact past 2^53');
  for (const bad of ['abc', '', ' 1', '1 ', '+1', '01', '1.5', '9223372036854775808', '-0x1']) {
    r('SET', 's', bad);
    assert.is(r('INCR', 's'), '-ERR value is not an integer or out of range\r\n', JSON.stringify(bad));
  }
  assert.is(r('INCRBY', 'n', 'x'), '-ERR value is not an integer or out of range\r\n');
  r('SET', 't', '5', 'EX', '100');
  r('INCR', 't');
  assert.is(r('TTL', 't'), ':100\r\n');
  r('RPUSH', 'l', 'a');
  assert.is(r('INCR', 'l'), '-WRONGTYPE Operation against a key holding the wrong kind of value\r\n');
});

test('parseInt64 is string2ll', () => {
  assert.is(parseInt64(bytes('0')), 0);
  assert.is(parseInt64(bytes('-0')), null);
  assert.is(parseInt64(bytes('-123')), -123);
  assert.is(parseInt64(bytes('-9223372036854775808')), -(2n ** 63n));
  assert.is(parseInt64(bytes('-9223372036854775809')), null);
});

test('MSET, MGET, DEL, EXISTS, DBSIZE, TYPE, KEYS, FLUSHALL', () => {
  const { r } = setup();
  assert.is(r('MSET', 'a', '1', 'b', '2', 'c', '3'), '+OK\r\n');
  assert.is(r('MGET', 'a', 'nokey', 'c'), '*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n3\r\n');
  r('LPUSH', 'list', 'x');
  assert.is(r('MGET', 'list'), '*1\r\n$-1\r\n', 'MGET gives nil for a list, as Redis');
  assert.is(r('EXISTS', 'a', 'a', 'nokey', 'list'), ':3\r\n');
  assert.is(r('DBSIZE'), ':4\r\n');
  assert.is(r('TYPE', 'a'), '+string\r\n');
  assert.is(r('TYPE', 'list'), '+list\r\n');
  assert.is(r('TYPE', 'nokey'), '+none\r\n');
  assert.is(r('KEYS', '[ab]'), '*2\r\n$1\r\na\r\n$1\r\nb\r\n');
  assert.is(r('DEL', 'a', 'b', 'nokey'), ':2\r\n');
  assert.is(r('DBSIZE'), ':2\r\n');
  assert.is(r('FLUSHALL', 'bogus'), '-ERR syntax error\r\n');
  assert.is(r('FLUSHALL'), '+OK\r\n');
  assert.is(r('DBSIZE'), ':0\r\n');
  r('SET', 'x', '1');
  assert.is(r('FLUSHDB', 'ASYNC'), '+OK\r\n');
  assert.is(r('DBSIZE'), ':0\r\n');
});

test('lists: LPUSH, RPUSH, LPOP, RPOP (with count), LLEN, LRANGE, LINDEX', () => {
  const { r } = setup();
  assert.is(r('LPUSH', 'l', 'b', 'a'), ':2\r\n');
  assert.is(r('RPUSH', 'l', 'c', 'd'), ':4\r\n');
  assert.is(r('LRANGE', 'l', '0', '-1'), '*4\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n');
  assert.is(r('LRANGE', 'l', '1', '2'), '*2\r\n$1\r\nb\r\n$1\r\nc\r\n');
  assert.is(r('LRANGE', 'l', '-2', '100'), '*2\r\n$1\r\nc\r\n$1\r\nd\r\n');
  assert.is(r('LRANGE', 'l', '3', '1'), '*0\r\n');
  assert.is(r('LRANGE', 'l', '10', '20'), '*0\r\n');
  assert.is(r('LRANGE', 'l', '-100', '0'), '*1\r\n$1\r\na\r\n');
  assert.is(r('LRANGE', 'nokey', '0', '-1'), '*0\r\n');
  assert.is(r('LRANGE', 'l', 'x', '1'), '-ERR value is not an integer or out of range\r\n');
  assert.is(r('LINDEX', 'l', '-1'), '$1\r\nd\r\n');
  assert.is(r('LINDEX', 'l', '9'), '$-1\r\n');
  assert.is(r('LLEN', 'l'), ':4\r\n');
  assert.is(r('LLEN', 'nokey'), ':0\r\n');
  assert.is(r('LPOP', 'l'), '$1\r\na\r\n');
  assert.is(r('RPOP', 'l'), '$1\r\nd\r\n');
  assert.is(r('LPOP', 'l', '5'), '*2\r\n$1\r\nb\r\n$1\r\nc\r\n');
  assert.is(r('EXISTS', 'l'), ':0\r\n', 'an emptied list is deleted');
  assert.is(r('LPOP', 'l'), '$-1\r\n');
  assert.is(r('LPOP', 'l', '2'), '*-1\r\n');
  assert.is(r('LPOP', 'l', '-1'), '-ERR value is out of range, must be positive\r\n');
  // Many elements: the ring grows and shrinks, order kept.
  for (let i = 0; i < 1000; i++) r('RPUSH', 'm', String(i));
  for (let i = 0; i < 500; i++) r('LPUSH', 'm', `-${i}`);
  assert.is(r('LLEN', 'm'), ':1500\r\n');
  assert.is(r('LINDEX', 'm', '0'), '$4\r\n-499\r\n');
  assert.is(r('LINDEX', 'm', '500'), '$1\r\n0\r\n');
  for (let i = 0; i < 1400; i++) r('LPOP', 'm');
  assert.is(r('LRANGE', 'm', '0', '1'), '*2\r\n$3\r\n900\r\n$3\r\n901\r\n');
  assert.is(r('RPOP', 'm'), '$3\r\n999\r\n');
});

test('WRONGTYPE for every command that meets the other type', () => {
  const { r } = setup();
  const WT = '-WRONGTYPE Operation against a key holding the wrong kind of value\r\n';
  r('SET', 's', 'v');
  r('RPUSH', 'l', 'v');
  for (const cmd of [['LPUSH', 's', 'x'], ['RPUSH', 's', 'x'], ['LPOP', 's'], ['RPOP', 's'], ['LLEN', 's'], ['LRANGE', 's', '0', '1'], ['LINDEX', 's', '0']]) {
    assert.is(r(...cmd), WT, cmd.join(' '));
  }
  for (const cmd of [['GET', 'l'], ['INCR', 'l'], ['INCRBY', 'l', '2'], ['DECR', 'l'], ['APPEND', 'l', 'x'], ['STRLEN', 'l'], ['SET', 'l', 'x', 'GET']]) {
    assert.is(r(...cmd), WT, cmd.join(' '));
  }
  assert.is(r('SET', 'l', 'x'), '+OK\r\n', 'a plain SET replaces a list');
  assert.is(r('GET', 'l'), '$1\r\nx\r\n');
});

test('APPEND, STRLEN, SETNX, SETEX, GETSET', () => {
  const { r, clock } = setup();
  assert.is(r('APPEND', 'a', 'hello'), ':5\r\n');
  assert.is(r('APPEND', 'a', ' world'), ':11\r\n');
  assert.is(r('STRLEN', 'a'), ':11\r\n');
  assert.is(r('SETNX', 'a', 'x'), ':0\r\n');
  assert.is(r('SETNX', 'b', 'x'), ':1\r\n');
  assert.is(r('SETEX', 'c', '5', 'v'), '+OK\r\n');
  assert.is(r('TTL', 'c'), ':5\r\n');
  clock.ms += 5000;
  assert.is(r('GET', 'c'), '$-1\r\n');
  assert.is(r('GETSET', 'b', 'y'), '$1\r\nx\r\n');
});

test('CONFIG GET answers what redis-benchmark asks; CONFIG SET and others are errors', () => {
  const { r } = setup({ maxmemory: 1000 });
  assert.is(r('CONFIG', 'GET', 'save'), '*2\r\n$4\r\nsave\r\n$0\r\n\r\n');
  assert.is(r('CONFIG', 'GET', 'appendonly'), '*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n');
  assert.is(r('config', 'get', 'maxmemory'), '*2\r\n$9\r\nmaxmemory\r\n$4\r\n1000\r\n');
  assert.match(r('CONFIG', 'GET', 'max*'), /^\*4\r\n/);
  assert.is(r('CONFIG', 'GET', 'nothing'), '*0\r\n');
  assert.is(r('CONFIG', 'GET'), "-ERR wrong number of arguments for 'config|get' command\r\n");
  assert.match(r('CONFIG', 'SET', 'save', ''), /^-ERR/);
  assert.match(r('CONFIG', 'BOGUS'), /^-ERR unknown subcommand 'BOGUS'/);
  assert.is(r('CONFIG', 'RESETSTAT'), '+OK\r\n');
  assert.match(r('INFO'), /redis_version:7\.0\.0/);
});

test('maxmemory: writes are refused with -OOM above it, reads and deletes go on', () => {
  const { r, kv } = setup({ maxmemory: 2000 });
  for (let i = 0; i < 10; i++) r('SET', `k${i}`, 'x'.repeat(200));
  assert.ok(kv.store.used > 2000);
  assert.is(r('SET', 'more', 'x'), "-OOM command not allowed when used memory > 'maxmemory'.\r\n");
  assert.match(r('LPUSH', 'l', 'x'), /^-OOM/);
  assert.match(r('GET', 'k1'), /^\$200/);
  assert.is(r('FLUSHALL'), '+OK\r\n');
  assert.is(kv.store.used, 0);
  assert.is(r('SET', 'more', 'x'), '+OK\r\n');
});

test('memory accounting returns to zero after every kind of change', () => {
  const { r, kv, clock } = setup();
  r('SET', 'a', 'xxxx');
  r('SET', 'a', 'yy');
  r('APPEND', 'a', 'zzz');
  r('INCR', 'n');
  r('INCRBY', 'n', '1000000');
  r('RPUSH', 'l', 'a', 'bb', 'ccc');
  r('LPOP', 'l');
  r('RPOP', 'l', '5');
  r('MSET', 'x', '1', 'y', '2');
  r('SET', 'e', 'v', 'PX', '10');
  r('SET', 'l2', 'str');
  r('LPUSH', 'l3', 'q');
  r('SET', 'l3', 'replaced');
  r('DEL', 'a', 'n', 'x', 'y', 'l2', 'l3');
  assert.ok(kv.store.used > 0);
  clock.ms += 20;
  kv.store.expireSome();
  assert.is(kv.store.used, 0);
  assert.is(kv.store.size, 0);
});

test('CLIENT SETNAME/GETNAME/ID', () => {
  const { r } = setup();
  assert.is(r('CLIENT', 'GETNAME'), '$-1\r\n');
  assert.is(r('CLIENT', 'SETNAME', 'me'), '+OK\r\n');
  assert.is(r('CLIENT', 'GETNAME'), '$2\r\nme\r\n');
  assert.is(r('CLIENT', 'ID'), ':7\r\n');
  assert.match(r('CLIENT', 'NOPE'), /^-ERR unknown subcommand/);
});

test('glob patterns as Redis matches them', () => {
  assert.ok(globMatch('*', 'anything'));
  assert.ok(globMatch('h?llo', 'hallo'));
  assert.ok(globMatch('h[^e]llo', 'hallo'));
  assert.not.ok(globMatch('h[^e]llo', 'hello'));
  assert.ok(globMatch('h[a-b]llo', 'hbllo'));
  assert.ok(globMatch('a\\*b', 'a*b'));
  assert.not.ok(globMatch('a\\*b', 'axb'));
  assert.ok(globMatch('*:__rand_int__', 'key:__rand_int__'));
  assert.ok(globMatch('SAVE', 'save', true));
});

test.run();
