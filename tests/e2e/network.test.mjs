// Sandboxes on the network (issue 12) through the real SDK, against the fake
// internet of tests/e2e/net/run.sh: this file runs only inside it (CTest does
// that; `tests/e2e/net/run.sh tests/e2e/network.test.mjs` by hand), so every
// packet stays in namespaces the run made. Egress by default (HTTP and DNS),
// allowInternetAccess:false, allowOut/denyOut with domains and addresses,
// updateNetwork at run time, what is never reachable, the info shape, bad
// input, a kill -9 restart, the byte counters and a 1,000-cycle leak check.
// Needs root.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { removeCgroupParents, removeStateDir, startGateway, gatewaySkipReason, loadSdk, sdkName, sleep,
  TEST_API_KEY } from './lib/harness.mjs';
import { FAKENET, gatewayNetArgs, fakenetSkipReason, linkNames, linksOfType, conntrackAvailable, conntrackFrom,
  sandboxElements, inCidr } from './lib/fakenet.mjs';

const skip = gatewaySkipReason() || fakenetSkipReason();
const opt = skip ? { skip } : {};
const SUBNET = '10.213.0.0/16';   // the default --subnet, given explicitly (the main gateway's)
const BRIDGE_ADDR = '10.213.0.1'; // every sandbox's gateway and DNS server
const { web, web2, metadata } = FAKENET;

let gw, Sandbox;
const made = new Set();   // every sandbox this file creates, killed in after()
const gateways = [];      // extra gateways, stopped in after()
const stateDirs = [];

before(async () => {
  if (skip) return;
  Sandbox = (await loadSdk()).Sandbox;
  // On 0.0.0.0 so that the "gateway port is unreachable" check means it.
  gw = await startGateway({ listenHost: '0.0.0.0', extraArgs: [...gatewayNetArgs(), '--bridge', 'coppice0', '--subnet', SUBNET,
    '--metrics-interval', '1'] });
});

after(async () => {
  for (const s of made) { try { await s.kill(); } catch {} }
  for (const g of gateways) { try { await g.stop(); } catch {} }
  await gw?.stop();
  for (const d of stateDirs) { removeCgroupParents(d); removeStateDir(d); }
});

async function create(opts = {}, g = gw) {
  const s = await Sandbox.create({ ...g.opts, ...opts });
  made.add(s);
  return s;
}
async function kill(s) { made.delete(s); await s.kill(); }

// Runs a shell command in the sandbox; a non-zero exit is a result, not a throw.
async function sh(sbx, cmd, opts = {}) {
  try {
    const r = await sbx.commands.run(cmd, { timeoutMs: 30_000, ...opts });
    return { code: 0, out: r.stdout, err: r.stderr };
  } catch (e) {
    if (typeof e.exitCode === 'number') return { code: e.exitCode, out: e.stdout ?? '', err: e.stderr ?? '' };
    throw e;
  }
}

// GET url from inside the sandbox (3 s at most): { ok, json, code, err }.
async function curl(sbx, url, extra = '') {
  const r = await sh(sbx, `curl -sS --connect-timeout 2 -m 3 ${extra} ${url}`);
  let json = null;
  try { json = JSON.parse(r.out); } catch {}
  return { ok: r.code === 0 && json !== null, json, code: r.code, err: r.err };
}
const reaches = async (sbx, url, extra) => (await curl(sbx, url, extra)).ok;

// A DNS lookup from inside the sandbox through its resolv.conf, bounded by 3 s:
// { code (0 found, 2 not found, 124 timed out), addrs, ms }.
async function lookup(sbx, name) {
  const t = Date.now();
  const r = await sh(sbx, `timeout 3 getent ahostsv4 ${name}`);
  const addrs = [...new Set(r.out.split('\n').filter(Boolean).map((l) => l.split(/\s+/)[0]))];
  return { code: r.code, addrs, ms: Date.now() - t };
}

// One DNS query (A, over UDP, 2 s) straight to the sandbox's nameserver:
// { rcode (0 ok, 3 NXDOMAIN, 5 REFUSED, -1 no answer), answers: [{ addr, ttl }] }.
const DNS_PY = `import json, socket, struct, sys
name = sys.argv[1]
server = [l.split()[1] for l in open('/etc/resolv.conf') if l.startswith('nameserver')][0]
q = struct.pack('>HHHHHH', 0x2b2b, 0x0100, 1, 0, 0, 0)
q += b''.join(bytes([len(p)]) + p.encode() for p in name.split('.')) + b'\\0' + struct.pack('>HH', 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(q, (server, 53))
try:
    r = s.recv(4096)
except OSError:
    print(json.dumps({'rcode': -1, 'answers': [], 'server': server}))
    sys.exit(0)
def skip_name(i):
    while True:
        n = r[i]
        if n == 0:
            return i + 1
        if n & 0xc0 == 0xc0:
            return i + 2
        i += n + 1
i = skip_name(12) + 4
out = []
for _ in range(struct.unpack('>H', r[6:8])[0]):
    i = skip_name(i)
    typ, _cls, ttl, ln = struct.unpack('>HHIH', r[i:i + 10])
    i += 10
    if typ == 1:
        out.append({'addr': socket.inet_ntoa(r[i:i + 4]), 'ttl': ttl})
    i += ln
print(json.dumps({'rcode': r[3] & 15, 'answers': out, 'server': server}))`;
async function dnsQuery(sbx, name) {
  await sbx.files.write('/tmp/dnsq.py', DNS_PY);
  const r = await sh(sbx, `python3 /tmp/dnsq.py ${name}`);
  assert.equal(r.code, 0, r.err);
  return JSON.parse(r.out);
}

const UDP_PY = `import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(b'ping-udp', ('${web}', ${FAKENET.udpEchoPort}))
print(s.recvfrom(100)[0].decode())`;
async function udpEcho(sbx) {
  await sbx.files.write('/tmp/udp.py', UDP_PY);
  const r = await sh(sbx, 'python3 /tmp/udp.py');
  return r.code === 0 && r.out.trim() === 'ping-udp';
}

async function eth0Addr(sbx) {
  const r = await sh(sbx, 'ip -4 -o addr show eth0');
  const m = /inet (\d+\.\d+\.\d+\.\d+)\/(\d+)/.exec(r.out);
  assert.ok(m, `eth0 has an IPv4 address: ${r.out} ${r.err}`);
  return m[1];
}

const api = (g, p, init = {}) => fetch(`${g.url}${p}`, { ...init,
  headers: { 'X-API-KEY': TEST_API_KEY, 'content-type': 'application/json', ...(init.headers || {}) } });

test(`[${sdkName}] internet by default: an address in the subnet, HTTP by name, UDP, DNS through the bridge`, opt, async () => {
  const sbx = await create();
  const addr = await eth0Addr(sbx);
  assert.ok(inCidr(addr, SUBNET) && addr !== BRIDGE_ADDR, addr);
  assert.match((await sh(sbx, 'ip -4 route show default')).out, new RegExp(`default via ${BRIDGE_ADDR.replace(/\./g, '\\.')} dev eth0`));
  assert.match((await sh(sbx, 'cat /etc/resolv.conf')).out, new RegExp(`^nameserver ${BRIDGE_ADDR.replace(/\./g, '\\.')}$`, 'm'));
  const l = await lookup(sbx, 'web.fake.test');
  assert.deepEqual([l.code, l.addrs], [0, [web]]);
  const q = await dnsQuery(sbx, 'web.fake.test');
  assert.equal(q.server, BRIDGE_ADDR);
  assert.equal(q.rcode, 0);
  assert.deepEqual(q.answers.map((a) => a.addr), [web]);
  assert.ok(q.answers[0].ttl > 0 && q.answers[0].ttl <= 60, `the upstream's TTL (60 s) or less: ${q.answers[0].ttl}`);
  assert.equal((await dnsQuery(sbx, 'nothere.fake.test')).rcode, 3, "the upstream's NXDOMAIN comes through");
  const r = await curl(sbx, 'http://web.fake.test/');
  assert.ok(r.ok, `curl failed: ${r.code} ${r.err}`);
  // Masqueraded to the uplink's address; the Host is what the sandbox sent.
  assert.deepEqual(r.json, { host: 'web.fake.test', client: FAKENET.gwUplinkAddr, server: web, path: '/' });
  assert.ok(await reaches(sbx, `http://${web2}/`));
  assert.ok(await udpEcho(sbx), 'UDP echo answered');
  // The sandbox's root cannot change its own network.
  const ch = await sh(sbx, 'ip addr add 10.213.77.77/16 dev eth0 && ip route replace default via 10.213.0.2', { user: 'root' });
  assert.notEqual(ch.code, 0, 'the sandbox has no CAP_NET_ADMIN over its netns');
  assert.equal(await eth0Addr(sbx), addr);
  await kill(sbx);
});

test('allowInternetAccess: false blocks TCP, UDP and DNS', opt, async () => {
  const sbx = await create({ allowInternetAccess: false });
  assert.equal(await reaches(sbx, `http://${web}/`), false, 'TCP by address is blocked');
  assert.equal(await udpEcho(sbx), false, 'UDP is blocked');
  const l = await lookup(sbx, 'web.fake.test');
  assert.notEqual(l.code, 0, 'no DNS answer');
  const q = await dnsQuery(sbx, 'web.fake.test');
  assert.ok(q.rcode === -1 || q.rcode === 5, `no answer, or REFUSED: ${JSON.stringify(q)}`);
  assert.deepEqual(l.addrs, []);
  assert.ok(l.ms < 5000, `the lookup gave up within the 3 s bound (${l.ms} ms)`);
  assert.equal(await reaches(sbx, 'http://web.fake.test/'), false);
  assert.equal((await sbx.getInfo()).allowInternetAccess, false);
  await kill(sbx);
});

test('allowOut a name with denyOut 0.0.0.0/0: that name only', opt, async () => {
  const sbx = await create({ network: { allowOut: ['web.fake.test'], denyOut: ['0.0.0.0/0'] } });
  // Nothing is open before the name is resolved.
  assert.equal(await reaches(sbx, `http://${web}/`), false, 'the address is closed until its name is resolved');
  const l = await lookup(sbx, 'web.fake.test');
  assert.deepEqual([l.code, l.addrs], [0, [web]]);
  const r = await curl(sbx, 'http://web.fake.test/');
  assert.ok(r.ok, `allowed name: ${r.code} ${r.err}`);
  assert.equal(r.json.host, 'web.fake.test');
  // Another name on the same server: the resolver refuses the name.
  assert.deepEqual(await dnsQuery(sbx, 'other.fake.test'), { rcode: 5, answers: [], server: BRIDGE_ADDR }, 'REFUSED');
  assert.equal((await dnsQuery(sbx, 'nothere.fake.test')).rcode, 5, 'a name that does not exist is refused too');
  const other = await lookup(sbx, 'other.fake.test');
  assert.equal(other.code, 2, `other.fake.test is refused (${JSON.stringify(other)})`);
  assert.ok(other.ms < 2500, `refused at once, not timed out (${other.ms} ms)`);
  assert.equal(await reaches(sbx, 'http://other.fake.test/'), false);
  // A name elsewhere: refused, and its address stays closed even when known.
  assert.equal((await lookup(sbx, 'web2.fake.test')).code, 2);
  assert.equal(await reaches(sbx, 'http://web2.fake.test/'), false);
  assert.equal(await reaches(sbx, 'http://web2.fake.test/', `--resolve web2.fake.test:80:${web2}`), false);
  assert.equal(await udpEcho(sbx), true, 'the opened address is open for UDP too (the rule is by address)');
  await kill(sbx);
});

test('allowOut *.name matches the names below it, not the name itself', opt, async () => {
  const sbx = await create({ network: { allowOut: ['*.sub.fake.test'], denyOut: ['0.0.0.0/0'] } });
  const l = await lookup(sbx, 'a.sub.fake.test');
  assert.deepEqual([l.code, l.addrs], [0, [web2]]);
  assert.ok(await reaches(sbx, 'http://a.sub.fake.test/'));
  assert.equal((await lookup(sbx, 'web.fake.test')).code, 2);
  assert.equal(await reaches(sbx, `http://${web}/`), false);
  await kill(sbx);
});

test('denyOut an address blocks it; the rest still works', opt, async () => {
  const sbx = await create({ network: { denyOut: [web] } });
  assert.equal(await reaches(sbx, `http://${web}/`), false);
  assert.equal(await reaches(sbx, 'http://web.fake.test/'), false, 'by name too');
  assert.equal(await udpEcho(sbx), false, 'UDP to it too');
  assert.ok(await reaches(sbx, `http://${web2}/`));
  assert.ok(await reaches(sbx, 'http://web2.fake.test/'), 'names still resolve: the sandbox is not default-deny');
  await kill(sbx);
});

test('allow beats deny', opt, async () => {
  const sbx = await create({ network: { denyOut: ['203.0.113.0/24'], allowOut: [`${web2}`] } });
  assert.ok(await reaches(sbx, `http://${web2}/`), 'the allowed address inside the denied range');
  assert.equal(await reaches(sbx, `http://${web}/`), false, 'the rest of the denied range');
  await kill(sbx);
});

// Started in the background in the sandbox before a rule change: tries a new
// connection every few ms and writes the unix time (s) of the first attempt
// whose outcome is the one wanted.
const WATCH_PY = `import socket, sys, time
want_open = sys.argv[1] == 'open'
out = sys.argv[2]
open(out + '.started', 'w').close()
end = time.time() + 20
while time.time() < end:
    t = time.time()
    s = socket.socket()
    s.settimeout(0.05)
    try:
        s.connect(('${web}', ${FAKENET.closePort}))
        ok = True
    except OSError:
        ok = False
    s.close()
    if ok == want_open:
        open(out + '.tmp', 'w').write(repr(t))
        import os; os.rename(out + '.tmp', out)
        break
    time.sleep(0.002)`;

async function timeUntil(sbx, want, change) {
  const out = `/tmp/watch-${want}-${Date.now()}`;
  await sh(sbx, `rm -f ${out}*`);
  await sbx.commands.run(`python3 /tmp/watch.py ${want} ${out}`, { background: true, timeoutMs: 30_000 });
  for (let i = 0; (await sh(sbx, `test -e ${out}.started`)).code !== 0; i++) {
    assert.ok(i < 200, 'the watcher started');
    await sleep(10);
  }
  const t0 = Date.now() / 1000;
  await change();
  const putMs = Date.now() - t0 * 1000;
  let seen = null;
  for (let i = 0; i < 300 && seen === null; i++) {
    const r = await sh(sbx, `cat ${out} 2>/dev/null`);
    if (r.code === 0 && r.out) seen = Number(r.out);
    else await sleep(20);
  }
  assert.ok(seen !== null, `a new connection saw the change to ${want}`);
  return { visibleMs: Math.max(0, (seen - t0) * 1000), putMs };
}

test(`[${sdkName}] updateNetwork at run time closes an address and opens it again`, opt, async () => {
  const sbx = await create();
  await sbx.files.write('/tmp/watch.py', WATCH_PY);
  assert.ok(await reaches(sbx, `http://${web}/`));
  const closed = await timeUntil(sbx, 'closed', () => sbx.updateNetwork({ denyOut: [web] }));
  assert.equal(await reaches(sbx, `http://${web}/`), false);
  assert.ok(await reaches(sbx, `http://${web2}/`));
  const info = await sbx.getInfo();
  assert.deepEqual(info.network?.denyOut, [web]);
  const opened = await timeUntil(sbx, 'open', () => sbx.updateNetwork({}));
  assert.ok(await reaches(sbx, `http://${web}/`));
  // Internet off and on again at run time.
  await sbx.updateNetwork({ allowInternetAccess: false });
  assert.equal(await reaches(sbx, `http://${web2}/`), false);
  assert.notEqual((await lookup(sbx, 'web2.fake.test')).code, 0, 'no DNS once internet access is off');
  await sbx.updateNetwork({ allowInternetAccess: true });
  assert.ok(await reaches(sbx, 'http://web2.fake.test/'));
  console.log(`# updateNetwork: deny visible to a new connection ${closed.visibleMs.toFixed(1)} ms after the PUT was sent ` +
    `(PUT answered in ${closed.putMs} ms); open again ${opened.visibleMs.toFixed(1)} ms (PUT ${opened.putMs} ms)`);
  await kill(sbx);
});

test('never reachable: the host, the gateway port, another sandbox, metadata', opt, async () => {
  // Controls from the gateway's host itself: these listen and answer.
  assert.equal((await fetch(`http://${FAKENET.gwUplinkAddr}:${gw.port}/health`)).ok, true, 'the gateway listens on 0.0.0.0');
  for (const a of [metadata, FAKENET.inetLinkAddr, FAKENET.private]) {
    assert.equal((await (await fetch(`http://${a}/`)).json()).server, a, `${a} answers the host itself`);
  }

  const a = await create();
  const b = await create();
  const bAddr = await eth0Addr(b);
  await b.commands.run('python3 -m http.server 8000 --bind 0.0.0.0', { background: true, timeoutMs: 0 });
  let up = false;
  for (let i = 0; i < 100 && !up; i++) {
    up = (await sh(b, `curl -s -o /dev/null -m 1 http://${bAddr}:8000/`)).code === 0;
    if (!up) await sleep(50);
  }
  assert.ok(up, 'sandbox b serves on its own address');

  for (const [what, url] of [
    ['the bridge address, gateway port', `http://${BRIDGE_ADDR}:${gw.port}/health`],
    ['the uplink address, gateway port', `http://${FAKENET.gwUplinkAddr}:${gw.port}/health`],
    ['another sandbox', `http://${bAddr}:8000/`],
    ['cloud metadata', `http://${metadata}/`],
    ['the far end of the uplink (a host interface subnet)', `http://${FAKENET.inetLinkAddr}/`],
    ['a private range (10/8)', `http://${FAKENET.private}/`],
  ]) {
    const r = await sh(a, `curl -s -o /dev/null --connect-timeout 2 -m 3 ${url}`);
    assert.notEqual(r.code, 0, `${what} (${url}) is unreachable from a sandbox`);
  }
  // Only DNS of the bridge address is open.
  assert.deepEqual((await lookup(a, 'web.fake.test')).addrs, [web]);
  assert.ok(await reaches(a, `http://${web}/`), 'the sandbox is online all along');
  await kill(a);
  await kill(b);
});

test('--open-range opens a normally refused range, and only that', opt, async () => {
  const g = await startGateway({ extraArgs: [...gatewayNetArgs(), '--bridge', 'cpt-or0', '--subnet', '10.216.0.0/24',
    '--open-range', '10.99.0.0/24'] });
  gateways.push(g);
  const sbx = await create({}, g);
  assert.ok(await reaches(sbx, `http://${FAKENET.private}/`), 'the opened private range');
  assert.equal(await reaches(sbx, `http://${metadata}/`), false, 'metadata stays closed');
  assert.equal(await reaches(sbx, `http://${FAKENET.inetLinkAddr}/`), false, 'the host interface subnet stays closed');
  const denied = await create({ network: { denyOut: ['10.99.0.0/16'] } }, g);
  assert.equal(await reaches(denied, `http://${FAKENET.private}/`), false, "a sandbox's denyOut still applies inside it");
  await kill(sbx);
  await kill(denied);
  gateways.splice(gateways.indexOf(g), 1);
  await g.stop();
});

test(`[${sdkName}] info shape: allowInternetAccess and network in E2B's shape`, opt, async () => {
  const network = { allowOut: ['web.fake.test', web2], denyOut: ['0.0.0.0/0'] };
  const sbx = await create({ network });
  const info = await sbx.getInfo();
  assert.equal(info.allowInternetAccess, true);
  assert.deepEqual(info.network.allowOut, network.allowOut);
  assert.deepEqual(info.network.denyOut, network.denyOut);
  const raw = await (await api(gw, `/sandboxes/${sbx.sandboxId}`)).json();
  assert.equal(raw.allowInternetAccess, true);
  assert.deepEqual(raw.network.allowOut, network.allowOut);
  assert.deepEqual(raw.network.denyOut, network.denyOut);
  await kill(sbx);

  const off = await create({ allowInternetAccess: false });
  const rawOff = await (await api(gw, `/sandboxes/${off.sandboxId}`)).json();
  assert.equal(rawOff.allowInternetAccess, false);
  await kill(off);
});

test('bad rules get a 400 that names the bad entry, and no sandbox', opt, async () => {
  const many = Array.from({ length: 10_000 }, (_, i) => `10.${(i >> 8) & 255}.${i & 255}.0/24`);
  const cases = [
    [{ allowOut: ['10.0.0.0/33'] }, '10.0.0.0/33'],
    [{ denyOut: ['10.0.0.0/33'] }, '10.0.0.0/33'],
    [{ allowOut: ['1.2.3'] }, '1.2.3'],
    [{ allowOut: ['bad name.fake.test'] }, 'bad name.fake.test'],
    [{ allowOut: ['1.2.3.4:80'] }, '1.2.3.4:80'],
    [{ denyOut: ['1.2.3.4:80'] }, '1.2.3.4:80'],
    [{ allowOut: ['*'] }, '*'],
    [{ denyOut: ['web.fake.test'] }, 'web.fake.test'],
    [{ allowOut: many }, 'allowOut'],
    [{ denyOut: many }, 'denyOut'],
  ];
  const before = (await (await api(gw, '/sandboxes')).json()).length;
  for (const [network, named] of cases) {
    const label = JSON.stringify(network).slice(0, 80);
    const r = await api(gw, '/sandboxes', { method: 'POST', body: JSON.stringify({ templateID: 'base', network }) });
    const text = await r.text();
    assert.equal(r.status, 400, `${label}: ${r.status} ${text.slice(0, 200)}`);
    const body = JSON.parse(text);
    assert.ok(typeof body.message === 'string' && body.message.includes(named), `${label}: message names ${named}: ${body.message}`);
  }
  // The same table on a running sandbox's PUT /network; the rules stay as they were.
  const sbx = await create({ network: { denyOut: [web] } });
  for (const [network, named] of cases) {
    const r = await api(gw, `/sandboxes/${sbx.sandboxId}/network`, { method: 'PUT', body: JSON.stringify(network) });
    const text = await r.text();
    assert.equal(r.status, 400, `PUT ${JSON.stringify(network).slice(0, 80)}: ${r.status} ${text.slice(0, 200)}`);
    assert.ok(JSON.parse(text).message.includes(named), `PUT names ${named}: ${text.slice(0, 200)}`);
  }
  // Not supported yet: said so, never ignored.
  const rules = await api(gw, '/sandboxes', { method: 'POST',
    body: JSON.stringify({ templateID: 'base', network: { rules: { 'web.fake.test': [{ transform: { headers: { a: 'b' } } }] } } }) });
  assert.equal(rules.status, 400);
  assert.match((await rules.json()).message, /rules/);
  assert.deepEqual((await sbx.getInfo()).network?.denyOut, [web]);
  assert.equal(await reaches(sbx, `http://${web}/`), false, 'the old rules still hold');
  await kill(sbx);
  assert.equal((await (await api(gw, '/sandboxes')).json()).length, before);
});

test('the byte and packet counters grow with a download', opt, async () => {
  const total = async () => {
    const text = await (await fetch(`${gw.url}/metrics`)).text();
    const v = (name, dir) => {
      const m = new RegExp(`^${name}\\{[^}]*direction="${dir}"[^}]*\\} (\\S+)$`, 'm').exec(text);
      assert.ok(m, `${name}{direction="${dir}"} in /metrics`);
      return Number(m[1]);
    };
    return { inB: v('coppice_sandbox_network_bytes_total', 'ingress'), outB: v('coppice_sandbox_network_bytes_total', 'egress'),
      inP: v('coppice_sandbox_network_packets_total', 'ingress'), outP: v('coppice_sandbox_network_packets_total', 'egress') };
  };
  const sbx = await create();
  const t0 = await total();
  const size = 5_000_000;
  const r = await sh(sbx, `curl -sS -m 10 -o /dev/null -w '%{size_download}' http://${web}/bytes/${size}`);
  assert.equal(r.out, String(size));
  let last = null;
  for (let i = 0; i < 50; i++) {
    const samples = await (await api(gw, `/sandboxes/${sbx.sandboxId}/metrics`)).json();
    last = samples.at(-1);
    if (last && last.netRxBytes >= size) break;
    await sleep(200);
  }
  assert.ok(last && last.netRxBytes >= size, `netRxBytes counts the download: ${JSON.stringify(last)}`);
  assert.ok(last.netTxBytes > 0 && last.netRxPackets >= 10 && last.netTxPackets > 0, JSON.stringify(last));
  assert.ok(last.netTxBytes < last.netRxBytes, 'tx is what the sandbox sent (the request and ACKs)');
  let t1 = await total();
  for (let i = 0; i < 25 && t1.inB - t0.inB < size; i++) { await sleep(200); t1 = await total(); }
  assert.ok(t1.inB - t0.inB >= size, `ingress bytes total grew by the download: ${t0.inB} -> ${t1.inB}`);
  assert.ok(t1.outB > t0.outB && t1.inP > t0.inP && t1.outP > t0.outP);
  await kill(sbx);
});

test(`[${sdkName}] a sandbox's root cannot change its network: addresses, routes, qdiscs, raw sockets, nftables, sysctls`, opt, async () => {
  const sbx = await create({ network: { denyOut: [web] } });
  const before = await eth0Addr(sbx);
  const attempts = {
    'address': 'sudo ip addr add 10.213.99.99/16 dev eth0',
    'link down': 'sudo ip link set eth0 down',
    'route': 'sudo ip route replace default via 10.213.0.1 dev eth0 metric 5',
    'qdisc': 'sudo tc qdisc add dev eth0 root tbf rate 1mbit burst 10k latency 50ms',
    'raw socket (spoofing)': `sudo python3 -c "import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)"`,
    'nftables': 'sudo nft flush ruleset',
    'forwarding sysctl': 'sudo sh -c "echo 1 > /proc/sys/net/ipv4/conf/all/forwarding"',
  };
  for (const [what, cmd] of Object.entries(attempts)) {
    const r = await sh(sbx, cmd);
    assert.notEqual(r.code, 0, `${what}: ${cmd} succeeded: ${r.out} ${r.err}`);
  }
  assert.equal(await eth0Addr(sbx), before, 'its address is unchanged');
  assert.equal(await reaches(sbx, `http://${web}/`), false, 'its deny rule still holds');
  assert.ok(await reaches(sbx, `http://${web2}/`), 'and its network still works');
  await kill(sbx);
});

test(`[${sdkName}] network.maxEgressMbps caps what a sandbox sends, in the kernel`, opt, async () => {
  // An extension: the SDK sends only E2B's fields, so through the raw API.
  const r = await api(gw, '/sandboxes', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ templateID: 'base', network: { maxEgressMbps: 8 } }),
  });
  const body = await r.json();
  assert.equal(r.status, 201, JSON.stringify(body));
  const sbx = await Sandbox.connect(body.sandboxID, gw.opts);
  made.add(sbx);
  const info = await (await api(gw, `/sandboxes/${sbx.sandboxId}`)).json();
  assert.equal(info.network.maxEgressMbps, 8);
  const q = await sh(sbx, '/usr/sbin/tc qdisc show dev eth0');
  assert.match(q.out, /tbf/, q.out + q.err);
  // 3 MB at 1 MB/s: at least ~2 s whatever the machine (a lower bound only).
  const send = `python3 -c "
import socket, time
s = socket.create_connection(('${FAKENET.web}', ${FAKENET.sinkPort}), timeout=30)
t = time.time(); s.sendall(b'x' * 3000000); s.shutdown(socket.SHUT_WR); s.recv(64)
print(time.time() - t)"`;
  const t = await sh(sbx, send, { timeoutMs: 60_000 });
  assert.equal(t.code, 0, t.err);
  const secs = Number(t.out.trim());
  assert.ok(secs >= 2, `3 MB went out in ${secs} s at an 8 Mbit/s cap`);
  const bad = await api(gw, '/sandboxes', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ templateID: 'base', network: { maxEgressMbps: -1 } }),
  });
  assert.equal(bad.status, 400);
  await kill(sbx);
});

test(`[${sdkName}] kill -9 and restart: the sandbox keeps its address and its rules`, opt, async () => {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-net-restart-'));
  stateDirs.push(stateDir);
  const args = [...gatewayNetArgs(), '--bridge', 'cpt-rs0', '--subnet', '10.214.0.0/24'];
  let g = await startGateway({ stateDir, extraArgs: args });
  gateways.push(g);
  const sbx = await create({ network: { denyOut: [web], allowOut: [] } }, g);
  const dom = await create({ network: { allowOut: ['web2.fake.test'], denyOut: ['0.0.0.0/0'] } }, g);
  const addr = await eth0Addr(sbx);
  const domAddr = await eth0Addr(dom);
  assert.ok(inCidr(addr, '10.214.0.0/24'), addr);
  assert.equal(await reaches(sbx, `http://${web}/`), false);

  await g.kill9();
  g = await startGateway({ stateDir, extraArgs: args });
  gateways.push(g);
  const again = await Sandbox.connect(sbx.sandboxId, g.opts);
  const domAgain = await Sandbox.connect(dom.sandboxId, g.opts);
  made.delete(sbx); made.delete(dom); made.add(again); made.add(domAgain);
  assert.equal(await eth0Addr(again), addr);
  assert.equal(await eth0Addr(domAgain), domAddr);
  assert.equal(await reaches(again, `http://${web}/`), false, 'the deny rule holds after the restart');
  assert.ok(await reaches(again, 'http://web2.fake.test/'), 'and the rest is open');
  assert.equal((await lookup(domAgain, 'web.fake.test')).code, 2, 'default deny: other names still refused');
  assert.ok(await reaches(domAgain, 'http://web2.fake.test/'), 'the allowed name still works');
  assert.deepEqual((await again.getInfo()).network?.denyOut, [web]);
  // A new sandbox after the restart gets another address.
  const fresh = await create({}, g);
  const freshAddr = await eth0Addr(fresh);
  assert.ok(![addr, domAddr].includes(freshAddr), `no address handed out twice (${freshAddr})`);
  await kill(fresh);
  await kill(again);
  await kill(domAgain);
});

test(`[${sdkName}] 1,000 create/kill cycles leave no veth, nft element or conntrack entry`, opt, async () => {
  // Alone on the namespace: the other gateways (and their spares) go first.
  for (const g of gateways.splice(0)) await g.stop();
  await gw.stop();
  // A /24: 253 addresses for 1,000 cycles, so an address never freed makes creates fail.
  const cidr = '10.215.0.0/24';
  const bridge = 'cpt-lk0';
  const g = await startGateway({ extraArgs: [...gatewayNetArgs(), '--bridge', bridge, '--subnet', cidr, '--spares', '0'] });
  gateways.push(g);
  const cycles = Number(process.env.COPPICE_NET_LEAK_CYCLES || 1000);
  let next = 0, failures = 0;
  const t0 = Date.now();
  const worker = async () => {
    while (next < cycles) {
      const i = next++;
      try {
        // Every tenth makes traffic (conntrack entries, resolver-opened elements).
        const opts = i % 10 === 0 ? { network: { allowOut: ['web.fake.test'], denyOut: ['0.0.0.0/0'] } }
          : i % 10 === 5 ? { network: { denyOut: [web2] } } : {};
        const s = await create(opts, g);
        if (i % 10 === 0 || i % 10 === 5) {
          await sh(s, `curl -s -o /dev/null -m 2 http://web.fake.test/; curl -s -o /dev/null -m 1 http://${web2}/`);
        }
        await kill(s);
      } catch (e) {
        if (failures++ < 3) console.log(`# cycle ${i}: ${e.message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  console.log(`# ${cycles} cycles in ${((Date.now() - t0) / 1000).toFixed(1)} s, ${failures} failed`);
  assert.equal(failures, 0);

  // Teardown is asynchronous (the kernel drops a netns in the background):
  // wait for it, then every check at once.
  const leftovers = () => {
    const bridges = new Set(linksOfType('bridge'));
    const veths = linksOfType('veth').filter((n) => n !== FAKENET.uplink);
    const others = linkNames().filter((n) => n !== 'lo' && n !== FAKENET.uplink && !bridges.has(n) && !veths.includes(n));
    const elems = sandboxElements(cidr);
    const ct = conntrackAvailable() ? conntrackFrom(cidr) : [];
    return { veths: [...veths, ...others], elems, ct };
  };
  let left;
  for (let i = 0; i < 100; i++) {
    left = leftovers();
    if (!left.veths.length && !left.elems.length && !left.ct.length) break;
    await sleep(100);
  }
  assert.deepEqual(left.veths, [], 'no veth (or any link but lo, up0 and bridges) left');
  assert.deepEqual(left.elems.slice(0, 10), [], 'no nft element for a sandbox address left');
  if (conntrackAvailable()) assert.deepEqual(left.ct.slice(0, 10), [], 'no conntrack entry from the subnet left');
  else console.log('# SKIP conntrack check: the conntrack CLI is not installed (scripts/deps.sh installs it)');
  const list = await (await api(g, '/sandboxes')).json();
  assert.equal(list.length, 0);
});
