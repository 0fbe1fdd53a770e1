// The gateway through the official SDK (not debug mode): control plane and
// the single-port proxy, with real namespace sandboxes. Needs root.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startGateway, gatewaySkipReason, loadSdk, sdkName, sleep, TEST_API_KEY } from './lib/harness.mjs';

const skip = gatewaySkipReason();
const opt = skip ? { skip } : {};
let gw, Sandbox, sdk;
before(async () => {
  if (skip) return;
  gw = await startGateway();
  sdk = await loadSdk();
  Sandbox = sdk.Sandbox;
});
after(async () => { await gw?.stop(); });

const api = (p, init = {}) => fetch(`${gw.url}${p}`, { ...init, headers: { 'X-API-KEY': TEST_API_KEY, 'content-type': 'application/json', ...(init.headers || {}) } });

test(`[${sdkName}] create, run a command, getInfo, kill`, opt, async () => {
  const sbx = await Sandbox.create('base', { ...gw.opts, metadata: { suite: 'gw', n: '1' }, envs: { GREETING: 'hello' } });
  assert.match(sbx.sandboxId, /^[a-z0-9]{20}$/);
  const r = await sbx.commands.run('echo $GREETING from $(hostname); id -un; pwd');
  assert.deepEqual(r.stdout.trim().split('\n'), [`hello from ${sbx.sandboxId}`, 'user', '/home/user']);
  const info = await sbx.getInfo();
  assert.equal(info.sandboxId, sbx.sandboxId);
  assert.equal(info.templateId, 'base');
  assert.deepEqual(info.metadata, { suite: 'gw', n: '1' });
  assert.equal(info.state, 'running');
  assert.ok(info.endAt > info.startedAt);
  assert.equal(await sbx.isRunning(), true);
  const logs = await (await api(`/sandboxes/${sbx.sandboxId}/logs`)).json();
  assert.ok(logs.logs.some((l) => /created/.test(l.line)), JSON.stringify(logs));
  assert.ok(Array.isArray(logs.logEntries));
  assert.equal(await sbx.kill(), true);
  assert.equal(await sbx.isRunning(), false);
  assert.equal(await Sandbox.kill(sbx.sandboxId, gw.opts), false);
  await assert.rejects(sbx.commands.run('true'));
});

test('files through the proxy', opt, async () => {
  const sbx = await Sandbox.create({ ...gw.opts });
  try {
    await sbx.files.write('/home/user/a.txt', 'through the gateway');
    assert.equal(await sbx.files.read('/home/user/a.txt'), 'through the gateway');
    const big = Buffer.alloc(8 << 20, 7);
    await sbx.files.write('/tmp/big.bin', big);
    const back = Buffer.from(await sbx.files.read('/tmp/big.bin', { format: 'bytes' }));
    assert.equal(Buffer.compare(back, big), 0);
    const list = await sbx.files.list('/home/user');
    assert.ok(list.some((e) => e.name === 'a.txt'));
  } finally {
    await sbx.kill();
  }
});

test('list with state and metadata filters, and pages', opt, async () => {
  const tag = `t${Date.now()}`;
  const made = [];
  for (let i = 0; i < 3; i++) made.push(await Sandbox.create({ ...gw.opts, metadata: { tag, i: String(i), sp: 'a b&c=d' } }));
  try {
    const seen = [];
    const pager = Sandbox.list({ ...gw.opts, query: { metadata: { tag, sp: 'a b&c=d' }, state: ['running'] }, limit: 2 });
    let pages = 0;
    while (pager.hasNext) {
      const items = await pager.nextItems();
      pages++;
      seen.push(...items.map((s) => s.sandboxId));
    }
    assert.equal(pages, 2);
    assert.deepEqual(seen.sort(), made.map((s) => s.sandboxId).sort());
    const none = await Sandbox.list({ ...gw.opts, query: { metadata: { tag: 'nope' } } }).nextItems();
    assert.deepEqual(none, []);
  } finally {
    for (const s of made) await s.kill();
  }
});

test(`[${sdkName}] signed file URLs work through the one port (no sandbox id in them)`, opt, async () => {
  const sbx = await Sandbox.create({ ...gw.opts, secure: true });
  const other = await Sandbox.create({ ...gw.opts, secure: true });
  try {
    await sbx.files.write('/home/user/signed.txt', 'via a signed URL');
    const down = await sbx.downloadUrl('/home/user/signed.txt', { useSignatureExpiration: 600 });
    assert.ok(!down.includes(sbx.sandboxId), down);
    let r = await fetch(down);
    assert.equal(r.status, 200);
    assert.equal(await r.text(), 'via a signed URL');
    const up = await sbx.uploadUrl('/home/user/up.txt');
    const form = new FormData();
    form.append('file', new Blob(['uploaded']), '/home/user/up.txt');
    r = await fetch(up, { method: 'POST', body: form });
    assert.equal(r.status, 200, await r.text());
    assert.equal(await sbx.files.read('/home/user/up.txt'), 'uploaded');
    assert.equal(await other.files.exists('/home/user/up.txt'), false, 'it went to the sandbox that signed it');
    // A signature of nobody's token is refused, and so is an expired one.
    r = await fetch(down.replace(/signature=[^&]+/, 'signature=v1_nobody'));
    assert.equal(r.status, 401);
    // (useSignatureExpiration is in seconds; an expiry equal to now still passes.)
    const expired = await sbx.downloadUrl('/home/user/signed.txt', { useSignatureExpiration: 1 });
    await new Promise((res) => setTimeout(res, 2100));
    r = await fetch(expired);
    assert.equal(r.status, 401);
  } finally {
    await sbx.kill();
    await other.kill();
  }
});

test('setTimeout and expiry', opt, async () => {
  const sbx = await Sandbox.create({ ...gw.opts, timeoutMs: 60_000 });
  await sbx.setTimeout(2_000);
  const info = await sbx.getInfo();
  assert.ok(info.endAt.getTime() - Date.now() < 3_000);
  await sleep(3_000);
  assert.equal(await sbx.isRunning(), false);
  await assert.rejects(Sandbox.getInfo(sbx.sandboxId, gw.opts), (e) => e.constructor.name === 'SandboxNotFoundError' || /not found/i.test(e.message));
});

test('connect to a running sandbox, pause and resume', opt, async () => {
  const sbx = await Sandbox.create({ ...gw.opts });
  try {
    await sbx.commands.run('echo kept > /tmp/state');
    const again = await Sandbox.connect(sbx.sandboxId, gw.opts);
    assert.equal((await again.commands.run('cat /tmp/state')).stdout, 'kept\n');
    if (typeof sbx.pause === 'function' || typeof sbx.betaPause === 'function') {
      const paused = await (sbx.pause ? sbx.pause() : sbx.betaPause());
      assert.equal(paused, true);
      assert.equal((await sbx.getInfo()).state, 'paused');
      assert.equal(await sbx.isRunning(), false);
      const resumed = await Sandbox.connect(sbx.sandboxId, gw.opts);
      assert.equal((await resumed.commands.run('cat /tmp/state')).stdout, 'kept\n');
      assert.equal((await sbx.getInfo()).state, 'running');
    }
  } finally {
    await sbx.kill();
  }
});

test('metrics are real cgroup figures', opt, async () => {
  const sbx = await Sandbox.create({ ...gw.opts });
  try {
    await sbx.commands.run('head -c 20000000 /dev/urandom > /home/user/blob; python3 -c "x=bytearray(30<<20); import time; time.sleep(0.3)" || true');
    let m = await sbx.getMetrics();
    // The disk figure (quota accounting) can miss data between its writeback
    // and the next commit of the sandboxes' file system (5 s): ask again.
    for (const until = Date.now() + 15_000; m.at(-1).diskUsed < 20_000_000 && Date.now() < until;) {
      await new Promise((r) => setTimeout(r, 500));
      m = await sbx.getMetrics();
    }
    assert.ok(m.length >= 1);
    const last = m.at(-1);
    assert.ok(last.memUsed > 1 << 20, `memUsed ${last.memUsed}`);
    assert.ok(last.memTotal >= last.memUsed);
    assert.ok(last.cpuCount >= 1);
    assert.ok(last.diskUsed >= 20_000_000, `diskUsed ${last.diskUsed}`);
  } finally {
    await sbx.kill();
  }
});

test('bad input: unknown template, bad JSON, bad timeout, missing key, unknown sandbox', opt, async () => {
  let r = await api('/v2/sandboxes', { method: 'POST', body: JSON.stringify({ templateID: 'nope' }) });
  assert.equal(r.status, 400);
  assert.match((await r.json()).message, /base/);
  r = await api('/v2/sandboxes', { method: 'POST', body: '{"templateID":' });
  assert.equal(r.status, 400);
  r = await api('/v2/sandboxes', { method: 'POST', body: JSON.stringify({ templateID: 'base', timeout: 0 }) });
  assert.equal(r.status, 400);
  r = await api('/v2/sandboxes', { method: 'POST', body: JSON.stringify({ templateID: 5 }) });
  assert.equal(r.status, 400);
  r = await api('/v2/sandboxes', { method: 'POST', body: JSON.stringify({ metadata: { a: 1 } }) });
  assert.equal(r.status, 400);
  r = await fetch(`${gw.url}/v2/sandboxes`, { method: 'POST', body: '{}' });
  assert.equal(r.status, 401);
  r = await fetch(`${gw.url}/v2/sandboxes`, { method: 'POST', body: '{}', headers: { 'X-API-KEY': 'e2b_wrong' } });
  assert.equal(r.status, 401);
  r = await api('/v2/sandboxes', { method: 'POST', body: 'x'.repeat(2 << 20) });
  assert.equal(r.status, 413);
  r = await api('/sandboxes/aaaaaaaaaaaaaaaaaaaa');
  assert.equal(r.status, 404);
  assert.equal((await r.json()).code, 404);
  r = await fetch(`${gw.url}/health`, { headers: { 'E2b-Sandbox-Id': 'aaaaaaaaaaaaaaaaaaaa', 'E2b-Sandbox-Port': '49983' } });
  assert.equal(r.status, 502);
  assert.equal((await r.json()).code, 502);
});

test('envd internal endpoints are refused from outside', opt, async () => {
  const sbx = await Sandbox.create({ ...gw.opts });
  try {
    for (const p of ['/init', '//init', '/./init', '/metrics', '/freeze', '/coppice/held', '//coppice//held']) {
      const r = await fetch(`${gw.url}${p}`, { method: 'POST', headers: { 'E2b-Sandbox-Id': sbx.sandboxId, 'content-type': 'application/json' }, body: '{"accessToken":"mine"}' });
      assert.equal(r.status, 403, p);
    }
    // The token set at create still guards envd.
    const r = await fetch(`${gw.url}/envs`, { headers: { 'E2b-Sandbox-Id': sbx.sandboxId } });
    assert.equal(r.status, 401);
  } finally {
    await sbx.kill();
  }
});

test('a port other than envd reaches the sandbox listener (header and Host routing)', opt, async () => {
  const sbx = await Sandbox.create({ ...gw.opts });
  try {
    await sbx.commands.run('mkdir -p /tmp/www && echo served > /tmp/www/index.html');
    await sbx.commands.run('cd /tmp/www && python3 -m http.server 8000 --bind 127.0.0.1', { background: true, timeoutMs: 0 });
    let body;
    for (let i = 0; i < 100; i++) {
      const r = await fetch(`${gw.url}/index.html`, { headers: { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '8000' } });
      if (r.status === 200) { body = await r.text(); break; }
      await sleep(50);
    }
    assert.equal(body, 'served\n');
    // fetch() will not send a Host of our choosing; node:http will.
    const byHost = await new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: gw.port, path: '/index.html', headers: { Host: `8000-${sbx.sandboxId}.coppice.test` } }, (res) => {
        let data = '';
        res.on('data', (d) => { data += d; });
        res.on('end', () => resolve({ status: res.statusCode, data }));
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(byHost.status, 200);
    assert.equal(byHost.data, 'served\n');
  } finally {
    await sbx.kill();
  }
});

test('100 concurrent creates', opt, async () => {
  const results = await Promise.allSettled(Array.from({ length: 100 }, () => Sandbox.create({ ...gw.opts })));
  const ok = results.filter((r) => r.status === 'fulfilled').map((r) => r.value);
  const failed = results.filter((r) => r.status === 'rejected').map((r) => String(r.reason));
  try {
    assert.deepEqual(failed, []);
    assert.equal(new Set(ok.map((s) => s.sandboxId)).size, 100);
    const outs = await Promise.all(ok.slice(0, 10).map((s) => s.commands.run('hostname')));
    outs.forEach((o, i) => assert.equal(o.stdout.trim(), ok[i].sandboxId));
  } finally {
    await Promise.all(ok.map((s) => s.kill()));
  }
});
