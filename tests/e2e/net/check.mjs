// Verifies run.sh's world from inside its "gw" namespace: the routes, the
// fake servers over the link, the fake DNS (asked directly and through the
// bound /etc/resolv.conf), and that the host's cgroups are still visible.
// Sends no packet anywhere but into the fake internet.
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import dns from 'node:dns';
import fs from 'node:fs';
import net from 'node:net';
import { execFileSync } from 'node:child_process';
import { FAKENET, fakeResolver, fakenetSkipReason, linkNames } from '../lib/fakenet.mjs';

const why = fakenetSkipReason();
if (why) { console.error(`SKIP: ${why}`); process.exit(77); }
const ok = (what) => console.log(`ok   ${what}`);
const sh = (...a) => execFileSync(a[0], a.slice(1), { encoding: 'utf8' });

assert.deepEqual(linkNames().sort(), ['lo', 'up0']);
assert.deepEqual(fs.readdirSync('/sys/class/net').sort(), ['lo', 'up0']);
ok('links in gw: lo, up0 (ip -o link and /sys/class/net)');
assert.match(sh('ip', '-4', 'addr', 'show', 'up0'), /inet 198\.18\.0\.1\/30/);
assert.match(sh('ip', 'route', 'get', '192.0.2.1'), /via 198\.18\.0\.2 dev up0/);
assert.equal(sh('ip', '-n', process.env.COPPICE_FAKENET_INET, 'route', 'show', 'default').trim(), '');
ok('gw routes everything via inet (198.18.0.2); inet has no default route');
assert.ok(fs.existsSync('/sys/fs/cgroup') && fs.readdirSync('/sys/fs/cgroup').length > 0);
assert.ok(fs.existsSync('/proc/sys/net/ipv4/conf/up0/forwarding'));
ok('host cgroups visible; /proc/sys/net is this namespace\'s');
assert.equal(fs.readFileSync('/etc/resolv.conf', 'utf8').trim(), `nameserver ${FAKENET.dns}`);
ok('/etc/resolv.conf names only the fake DNS server');

for (const a of [FAKENET.web, FAKENET.web2, FAKENET.metadata, FAKENET.private, FAKENET.inetLinkAddr]) {
  const r = await fetch(`http://${a}/hello`, { signal: AbortSignal.timeout(3000) });
  const j = await r.json();
  assert.deepEqual(j, { host: a, client: FAKENET.gwUplinkAddr, server: a, path: '/hello' });
}
ok('HTTP on 203.0.113.10, 203.0.113.11, 169.254.169.254, 10.99.0.10, 198.18.0.2 answers with the Host and client it saw');
const big = await (await fetch(`http://${FAKENET.web}/bytes/3000000`)).arrayBuffer();
assert.equal(big.byteLength, 3000000);
ok('GET /bytes/3000000 sends 3000000 bytes');

const r = fakeResolver();
for (const [name, addr] of Object.entries(FAKENET.names)) assert.deepEqual(await r.resolve4(name), [addr]);
const ttl = (await r.resolve4('web.fake.test', { ttl: true }))[0].ttl;
assert.equal(ttl, 60);
await assert.rejects(r.resolve4('nothere.fake.test'), { code: 'ENOTFOUND' });
const t0 = Date.now();
await assert.rejects(r.resolve4('example.com'));
assert.ok(Date.now() - t0 < 1500, 'a name outside fake.test fails at once (nothing is forwarded)');
ok(`fake DNS at ${FAKENET.dns}: the 4 test names (TTL 60), NXDOMAIN for others in fake.test, nothing forwarded`);
assert.equal((await dns.promises.lookup('other.fake.test')).address, FAKENET.web);
ok('getaddrinfo (through /etc/resolv.conf) resolves other.fake.test');

const echo = await new Promise((res, rej) => {
  const s = dgram.createSocket('udp4');
  const t = setTimeout(() => { s.close(); rej(new Error('no UDP echo')); }, 2000);
  s.on('message', (m) => { clearTimeout(t); s.close(); res(m.toString()); });
  s.send('ping', FAKENET.udpEchoPort, FAKENET.web);
});
assert.equal(echo, 'ping');
ok('UDP echo on 203.0.113.10:5353');

const count = await new Promise((res, rej) => {
  const s = net.connect(FAKENET.sinkPort, FAKENET.web, () => { s.end(Buffer.alloc(1 << 20)); });
  let out = '';
  s.on('data', (d) => { out += d; });
  s.on('end', () => res(Number(out.trim())));
  s.on('error', rej);
});
assert.equal(count, 1 << 20);
ok('TCP sink on 203.0.113.10:9000 counted 1 MiB');
await new Promise((res, rej) => {
  const s = net.connect(FAKENET.closePort, FAKENET.web);
  s.on('error', rej);
  s.on('close', res);
  s.resume();
});
ok('accept-and-close on 203.0.113.10:9001');
console.log('fakenet world: all checks passed');
